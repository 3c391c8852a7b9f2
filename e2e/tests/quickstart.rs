//! The README quickstart, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;

use weir_e2e::{condition, start, status_of};
use weir_testkit::client::{h2c, http1, https, Req};

#[tokio::test]
async fn demo_route_answers_version_from_go_httpbin() {
    let q = start().await;
    let r = http1(
        q.weir.listener(80),
        &Req::get("demo.ingress.top", "/version"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "version: v1\nhostname: go-httpbin-7d8f9c6b5-x2kqp\n"
    );

    // Any path on demo.ingress.top reaches go-httpbin; the Host is forwarded unchanged.
    let r = http1(
        q.weir.listener(80),
        &Req::get("demo.ingress.top:8080", "/anything?x=1"),
    )
    .await
    .unwrap();
    let echo = r.json();
    assert_eq!(echo["pod"], "go-httpbin-7d8f9c6b5-x2kqp");
    assert_eq!(echo["path"], "/anything?x=1");
    assert_eq!(echo["host"], "demo.ingress.top:8080");
    assert_eq!(echo["headers"]["X-Forwarded-Proto"][0], "http");
    assert_eq!(echo["headers"]["X-Forwarded-For"][0], "127.0.0.1");
    // The quickstart's ClientTrafficPolicy: a request ID for every request, a client's kept.
    let id = echo["headers"]["X-Request-Id"][0]
        .as_str()
        .unwrap_or_default();
    assert_eq!(id.len(), 36, "a generated UUID: {echo}");
    let r = http1(
        q.weir.listener(80),
        &Req::get("demo.ingress.top", "/anything").header("x-request-id", "mine"),
    )
    .await
    .unwrap();
    assert_eq!(r.json()["headers"]["X-Request-Id"][0], "mine");
    let policy = status_of(&q.weir, "ClientTrafficPolicy", "edge")
        .await
        .unwrap();
    let accepted = condition(&policy["status"]["ancestors"][0]["conditions"], "Accepted");
    assert_eq!(accepted.unwrap()["status"], "True", "{policy}");

    // HTTP/2 with prior knowledge on the plain port.
    let r = h2c(q.weir.listener(80), &Req::get("demo.ingress.top", "/h2"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["pod"], "go-httpbin-7d8f9c6b5-x2kqp");
}

#[tokio::test]
async fn unknown_hosts_get_404() {
    let q = start().await;
    // Matches the listener (*.ingress.top) but no route.
    let r = http1(q.weir.listener(80), &Req::get("nothing.ingress.top", "/"))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    // Matches no listener hostname at all.
    let r = http1(q.weir.listener(80), &Req::get("example.com", "/"))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn filter_route_adds_my_header() {
    let q = start().await;
    let r = http1(
        q.weir.listener(80),
        &Req::get("filter.ingress.top", "/headers"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["headers"]["My-Header"], serde_json::json!(["foo"]));
    // The demo route does not add it.
    let r = http1(
        q.weir.listener(80),
        &Req::get("demo.ingress.top", "/headers"),
    )
    .await
    .unwrap();
    assert!(r.json()["headers"].get("My-Header").is_none());
}

#[tokio::test]
async fn weight_route_splits_between_old_and_new() {
    let q = start().await;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..200 {
        let r = http1(q.weir.listener(80), &Req::get("weight.ingress.top", "/"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let pod = r.json()["pod"].as_str().unwrap().to_string();
        *seen
            .entry(pod.split('-').take(2).collect::<Vec<_>>().join("-"))
            .or_default() += 1;
    }
    let old = seen.get("old-nginx").copied().unwrap_or(0);
    let new = seen.get("new-nginx").copied().unwrap_or(0);
    assert_eq!(old + new, 200, "unexpected backends: {seen:?}");
    // 1:1 within a generous band (p of falling outside ≈ 1e-6).
    assert!((65..=135).contains(&old), "split {old}:{new}");
}

#[tokio::test]
async fn https_listener_serves_with_the_secret_certificate() {
    let q = start().await;
    let addr = q.weir.listener(443);
    let r = https(
        addr,
        "demo.ingress.top",
        &q.ca.cert_pem,
        &Req::get("demo.ingress.top", "/version"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "version: v1\nhostname: go-httpbin-7d8f9c6b5-x2kqp\n"
    );
    assert_eq!(
        r.alpn.as_deref(),
        Some(&b"h2"[..]),
        "h2 should be negotiated by ALPN"
    );

    let r = https(
        addr,
        "filter.ingress.top",
        &q.ca.cert_pem,
        &Req::get("filter.ingress.top", "/"),
    )
    .await
    .unwrap();
    assert_eq!(r.json()["headers"]["My-Header"][0], "foo");
    assert_eq!(r.json()["headers"]["X-Forwarded-Proto"][0], "https");

    // A client that does not trust the test CA fails the handshake: the certificate really is
    // the Secret's.
    let other = weir_testkit::certs::Ca::new("someone-else");
    let err = https(
        addr,
        "demo.ingress.top",
        &other.cert_pem,
        &Req::get("demo.ingress.top", "/"),
    )
    .await;
    assert!(err.is_err(), "handshake with an untrusted CA must fail");
}

#[tokio::test]
async fn status_reports_accepted_programmed_and_addresses() {
    let q = start().await;
    let class = status_of(&q.weir, "GatewayClass", "weir")
        .await
        .expect("GatewayClass status");
    assert_eq!(
        condition(&class["status"]["conditions"], "Accepted").unwrap()["status"],
        "True"
    );

    let gw = status_of(&q.weir, "Gateway", "weir")
        .await
        .expect("Gateway status");
    assert_eq!(gw["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(gw["metadata"]["namespace"], "default");
    assert_eq!(gw["metadata"]["generation"], 1);
    assert!(gw["metadata"]["creationTimestamp"].is_string());
    let conds = &gw["status"]["conditions"];
    assert_eq!(condition(conds, "Accepted").unwrap()["status"], "True");
    assert_eq!(condition(conds, "Programmed").unwrap()["status"], "True");
    assert_eq!(gw["status"]["addresses"][0]["type"], "IPAddress");
    assert_eq!(gw["status"]["addresses"][0]["value"], "127.0.0.1");
    let listeners = gw["status"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2);
    for l in listeners {
        assert_eq!(l["attachedRoutes"], 3, "listener {}", l["name"]);
        assert_eq!(
            condition(&l["conditions"], "ResolvedRefs").unwrap()["status"],
            "True"
        );
        assert_eq!(
            condition(&l["conditions"], "Programmed").unwrap()["status"],
            "True"
        );
    }

    for route in ["demo-route", "demo-filter", "demo-weight"] {
        let r = status_of(&q.weir, "HTTPRoute", route)
            .await
            .expect("route status");
        let parent = &r["status"]["parents"][0];
        assert_eq!(parent["controllerName"], "weir.dev/gateway-controller");
        assert_eq!(
            condition(&parent["conditions"], "Accepted").unwrap()["status"],
            "True"
        );
        assert_eq!(
            condition(&parent["conditions"], "ResolvedRefs").unwrap()["status"],
            "True"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_backend() {
    let q = start().await;
    for _ in 0..3 {
        http1(q.weir.listener(80), &Req::get("demo.ingress.top", "/"))
            .await
            .unwrap();
    }
    http1(q.weir.listener(80), &Req::get("nothing.ingress.top", "/"))
        .await
        .unwrap();
    let m = http1(q.weir.admin, &Req::get("admin", "/metrics"))
        .await
        .unwrap()
        .text();
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("weir_requests_total{")
                && l.contains("default/demo-route")
                && l.contains("code=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for demo-route in:\n{m}"));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(line.contains("default/go-httpbin:80"), "{line}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("weir_requests_total{") && l.contains("code=\"404\"")),
        "{m}"
    );
    for name in [
        "weir_request_duration_seconds_bucket",
        "weir_config_reloads_total",
        "weir_snapshot_generation",
        "weir_translation_duration_seconds",
        "weir_active_connections",
    ] {
        assert!(m.contains(name), "missing {name} in:\n{m}");
    }
}
