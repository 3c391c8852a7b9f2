//! Gateway API's XBackendTrafficPolicy as users write it: a config directory on a running
//! weir, three weir-echo pods behind one Service, and a Service-level `sessionPersistence`
//! that keeps a client on one pod on every rule that routes to that Service (and only
//! there), with a cookie that carries no `Path` (GEP-1619).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeSet;
use std::net::SocketAddr;

use weir_e2e::{service_yaml, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Reply, Req};
use weir_testkit::process::{echo_at, weir, Echo};

const ROUTE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: weir}]
  hostnames: [app.ingress.top]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: pods, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: pods, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /other}}]
    backendRefs: [{name: others, port: 80}]
";

const POLICY: &str = "
apiVersion: gateway.networking.x-k8s.io/v1alpha1
kind: XBackendTrafficPolicy
metadata: {name: sticky-pods, namespace: default}
spec:
  targetRefs: [{group: '', kind: Service, name: pods}]
  sessionPersistence: {sessionName: svc-sid}
";

/// Three echo pods on 127.0.0.1-3, one port number (an EndpointSlice has one port list).
fn pods() -> Vec<Echo> {
    for _ in 0..20 {
        let first = echo_at("pod-1", "default", SocketAddr::from(([127, 0, 0, 1], 0)));
        let port = first.addr.port();
        let rest: Vec<_> = (2..=3)
            .map(|i| {
                std::panic::catch_unwind(|| {
                    echo_at(
                        &format!("pod-{i}"),
                        "default",
                        SocketAddr::from(([127, 0, 0, i], port)),
                    )
                })
            })
            .collect();
        if rest.iter().all(Result::is_ok) {
            let mut all = vec![first];
            all.extend(rest.into_iter().map(Result::unwrap));
            return all;
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

async fn get(http: SocketAddr, path: &str, cookie: Option<&str>) -> Reply {
    let mut req = Req::get("app.ingress.top", path);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    http1(http, &req).await.unwrap()
}

fn pod(r: &Reply) -> String {
    r.json()["pod"].as_str().unwrap_or_default().to_string()
}

async fn pods_answering(http: SocketAddr, path: &str, cookie: Option<&str>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        seen.insert(pod(&get(http, path, cookie).await));
    }
    seen
}

#[tokio::test]
async fn a_service_level_session_keeps_a_client_on_one_pod() {
    let pods = pods();
    let other = echo_at("other-1", "default", SocketAddr::from(([127, 0, 0, 1], 0)));
    let dir = tempfile::tempdir().unwrap();
    let gateway = std::fs::read_to_string(weir_e2e::example_dir().join("gateway.yaml")).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        gateway.split("    - name: https").next().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("route.yaml"), ROUTE).unwrap();
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    std::fs::write(
        dir.path().join("backends.yaml"),
        format!(
            "{}\n---\n{}",
            service_yaml("default", "pods", 80, &addrs),
            service_yaml("default", "others", 80, &[other.addr])
        ),
    )
    .unwrap();
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    assert_eventually("the route served", WAIT, || async {
        let r = get(http, "/a", None).await;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("status {}", r.status))
        }
    })
    .await;

    // No policy yet: no session, requests spread.
    let first = get(http, "/a", None).await;
    assert!(first.header("set-cookie").is_none());
    let spread = pods_answering(http, "/a", None).await;
    assert!(
        spread.len() >= 2,
        "no session: requests spread, got {spread:?}"
    );

    // The Service's policy: the first answer starts a session.
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let (whole, home) = assert_eventually("a session cookie for the Service", WAIT, || async {
        let r = get(http, "/a/x", None).await;
        match r.header("set-cookie") {
            Some(c) if c.starts_with("svc-sid=") => Ok((c.to_string(), pod(&r))),
            other => Err(format!("set-cookie {other:?}")),
        }
    })
    .await;
    assert!(
        !whole.contains("Path="),
        "a Service-level session leaves Path unset: {whole}"
    );
    assert!(whole.contains("HttpOnly"), "{whole}");
    let cookie = whole.split(';').next().unwrap().trim().to_string();

    // The cookie keeps every request on its pod, on both rules routing to the Service.
    for path in ["/a/x", "/b", "/a"] {
        for _ in 0..10 {
            let r = get(http, path, Some(&cookie)).await;
            assert_eq!(r.status, 200);
            assert_eq!(pod(&r), home, "{path}: the session's pod");
        }
    }
    // Without it, still spread: persistence is the cookie's doing.
    let spread = pods_answering(http, "/b", None).await;
    assert!(spread.len() >= 2, "{spread:?}");
    // A Service without a policy gets no session.
    let r = get(http, "/other", None).await;
    assert_eq!(pod(&r), "other-1");
    assert!(r.header("set-cookie").is_none());
}

const RETRY_ROUTE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retry-route, namespace: default}
spec:
  parentRefs: [{name: weir}]
  hostnames: [retry.ingress.top]
  rules:
  - matches: [{path: {type: PathPrefix, value: /retry/budgeted}}]
    retry: {attempts: 2, codes: [500, 503], backoff: 1ms}
    backendRefs: [{name: go-httpbin, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/free}}]
    retry: {attempts: 2, codes: [503], backoff: 1ms}
    backendRefs: [{name: unbudgeted, port: 80}]
---
apiVersion: gateway.networking.x-k8s.io/v1alpha1
kind: XBackendTrafficPolicy
metadata: {name: budget, namespace: default}
spec:
  targetRefs: [{group: '', kind: Service, name: go-httpbin}]
  retryConstraint:
    budget: {percent: 0, interval: 10s}
    minRetryRate: {count: 1, interval: 1h}
";

async fn retry_status(http: SocketAddr, path: &str) -> u16 {
    let r = http1(http, &Req::get("retry.ingress.top", path))
        .await
        .unwrap();
    r.status.as_u16()
}

/// `weir_upstream_retries_skipped_total` of retry-route for the budget.
async fn skipped_by_budget(weir: &weir_testkit::process::Weir) -> f64 {
    let metrics = http1(weir.admin, &Req::get("admin", "/metrics"))
        .await
        .unwrap()
        .text();
    metrics
        .lines()
        .filter(|l| l.starts_with("weir_upstream_retries_skipped_total{"))
        .filter(|l| l.contains("reason=\"budget\"") && l.contains("default/retry-route"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_service_retry_constraint_caps_the_retries_of_the_rules_to_it() {
    let backend = echo_at(
        "go-httpbin-1",
        "default",
        SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    std::fs::write(dir.path().join("retry-route.yaml"), RETRY_ROUTE).unwrap();
    std::fs::write(
        dir.path().join("unbudgeted.yaml"),
        service_yaml("default", "unbudgeted", 80, &[backend.addr]),
    )
    .unwrap();
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    assert_eventually("retry-route served", WAIT, || async {
        match retry_status(http, "/retry/free/x?responseCode=503&succeedAfter=0&uuid=w").await {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;

    // A Service without a constraint: every failing first try is retried.
    for uuid in ["f1", "f2", "f3"] {
        let path = format!("/retry/free/x?responseCode=503&succeedAfter=1&uuid={uuid}");
        assert_eq!(retry_status(http, &path).await, 200, "{uuid}");
    }
    // The constrained Service: a 0 % budget leaves only minRetryRate (1 per hour): the
    // first request's retry is made, the next ones are not: the client gets 503 (the
    // spec's answer once the budget is exceeded), not the backend's 500.
    let path = "/retry/budgeted/x?responseCode=500&succeedAfter=1&uuid=b1";
    assert_eq!(retry_status(http, path).await, 200);
    assert_eq!(skipped_by_budget(&weir).await, 0.0);
    for uuid in ["b2", "b3"] {
        let path = format!("/retry/budgeted/x?responseCode=500&succeedAfter=1&uuid={uuid}");
        assert_eq!(retry_status(http, &path).await, 503, "{uuid}");
    }
    assert_eq!(skipped_by_budget(&weir).await, 2.0);
}
