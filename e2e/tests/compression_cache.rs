//! BackendTrafficPolicy `compression` and `responseCache` as users write them: YAML in the
//! config directory of a running weir, the echo backend behind it. One backend answer,
//! cached, is served again without the backend and compressed for each client. (Each block
//! in detail: crates/weir-proxy/tests/proxy/compression.rs and cache.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use weir_e2e::{policy_accepted, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Reply, Req};
use weir_testkit::process::{echo, weir};

async fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut d = async_compression::tokio::write::GzipDecoder::new(Vec::new());
    d.write_all(bytes).await.unwrap();
    d.shutdown().await.unwrap();
    d.into_inner()
}

/// The request header `x-n` as the backend saw it (the echo's JSON).
fn seen_n(json: &[u8]) -> String {
    let v: Value = serde_json::from_slice(json).unwrap();
    let headers = v["headers"].as_object().cloned().unwrap_or_default();
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-n"))
        .and_then(|(_, v)| v[0].as_str())
        .unwrap_or_default()
        .to_string()
}

fn cache_status(r: &Reply) -> String {
    r.header("cache-status").unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_cached_answer_is_served_again_and_compressed_per_client() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    std::fs::write(
        dir.path().join("backend-policy.yaml"),
        "apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: fast, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: demo-route}]
  responseCache: {maxSize: 8Mi, maxEntrySize: 256Ki}
  compression:
  - type: Gzip
    minContentLength: 30
",
    )
    .unwrap();
    policy_accepted(&weir, "BackendTrafficPolicy", "fast").await;
    // The echo answers with the Cache-Control the request asks it to set.
    let first = assert_eventually("a stored, compressed answer", WAIT, || async {
        let r = http1(
            http,
            &Req::get("demo.ingress.top", "/get/cached")
                .header("x-echo-set-header", "Cache-Control: max-age=60")
                .header("x-n", "1")
                .header("accept-encoding", "gzip"),
        )
        .await?;
        if cache_status(&r).contains("stored") {
            Ok(r)
        } else {
            Err(format!("{} {:?}", r.status, r.headers))
        }
    })
    .await;
    assert_eq!(first.header("content-encoding"), Some("gzip"));
    assert_eq!(first.header("vary"), Some("Accept-Encoding"));
    assert_eq!(seen_n(&gunzip(&first.body).await), "1");
    // Again, as another request: the stored answer (the backend saw x-n 1, never 2).
    let hit = http1(
        http,
        &Req::get("demo.ingress.top", "/get/cached")
            .header("x-n", "2")
            .header("accept-encoding", "gzip"),
    )
    .await
    .unwrap();
    assert!(cache_status(&hit).contains("hit"), "{:?}", hit.headers);
    assert_eq!(hit.header("content-encoding"), Some("gzip"));
    assert!(hit.header("age").is_some());
    assert_eq!(seen_n(&gunzip(&hit.body).await), "1");
    // A client without Accept-Encoding gets the same entry uncompressed.
    let plain = http1(
        http,
        &Req::get("demo.ingress.top", "/get/cached").header("x-n", "3"),
    )
    .await
    .unwrap();
    assert!(cache_status(&plain).contains("hit"));
    assert!(plain.header("content-encoding").is_none());
    assert_eq!(seen_n(&plain.body), "1");
}

/// The pod that answered (the echo's JSON).
fn pod(json: &[u8]) -> String {
    let v: Value = serde_json::from_slice(json).unwrap_or_default();
    v["pod"].as_str().unwrap_or_default().to_string()
}

/// Purge by route: the route's backend changes in the config directory; the policy (and so
/// its cache) stays, but what the route's old version stored is not served any more — the
/// next request is a miss answered by the new backend.
#[tokio::test]
async fn a_changed_route_is_not_answered_from_what_its_old_version_stored() {
    let old = echo("go-httpbin-1", "default");
    let new = echo("other-1", "default");
    let dir = weir_e2e::http_quickstart_dir(old.addr.port());
    std::fs::write(
        dir.path().join("other.yaml"),
        weir_e2e::service_yaml("default", "other", 80, &[new.addr]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("backend-policy.yaml"),
        "apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: cached, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: demo-route}]
  responseCache: {maxSize: 8Mi}
",
    )
    .unwrap();
    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    let get = || {
        Req::get("demo.ingress.top", "/get/cached")
            .header("x-echo-set-header", "Cache-Control: max-age=600")
    };
    let stored = assert_eventually("a stored answer", WAIT, || async {
        let r = http1(http, &get()).await?;
        if cache_status(&r).contains("stored") {
            Ok(r)
        } else {
            Err(format!("{} {:?}", r.status, r.headers))
        }
    })
    .await;
    assert_eq!(pod(&stored.body), "go-httpbin-1");
    let hit = http1(http, &get()).await.unwrap();
    assert_eq!(hit.header("x-cache"), Some("HIT"), "{:?}", hit.headers);
    // The route now sends to `other`.
    let routes = std::fs::read_to_string(dir.path().join("routes.yaml")).unwrap();
    let changed = routes.replacen("- name: go-httpbin", "- name: other", 1);
    assert_ne!(routes, changed);
    std::fs::write(dir.path().join("routes.yaml"), changed).unwrap();
    // Until the new config is live the old entry may answer; after, never again.
    let fresh = assert_eventually("the new backend answers", WAIT, || async {
        let r = http1(http, &get()).await?;
        if pod(&r.body) == "other-1" {
            Ok(r)
        } else {
            Err(format!("{:?} {}", r.headers, pod(&r.body)))
        }
    })
    .await;
    assert_eq!(fresh.header("x-cache"), Some("MISS"), "{:?}", fresh.headers);
    assert!(cache_status(&fresh).contains("fwd=uri-miss; fwd-status=200; stored"));
    let again = http1(http, &get()).await.unwrap();
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(pod(&again.body), "other-1");
}
