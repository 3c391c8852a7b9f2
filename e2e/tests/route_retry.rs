//! HTTPRoute `rules[].retry` (Gateway API, experimental channel) as users write it: a
//! route in the config directory of a running weir, in front of weir-echo's flaky
//! `/retry/` backend (it fails the first `succeedAfter` requests of each `uuid`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use weir_e2e::{wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir};

const ROUTE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retry-route, namespace: default}
spec:
  parentRefs: [{name: weir}]
  hostnames: [retry.ingress.top]
  rules:
  - matches: [{path: {type: PathPrefix, value: /retry/codes}}]
    retry: {attempts: 2, codes: [503], backoff: 1ms}
    backendRefs: [{name: go-httpbin, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/timeout}}]
    retry: {attempts: 1, backoff: 1ms}
    timeouts: {backendRequest: 300ms}
    backendRefs: [{name: go-httpbin, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/none}}]
    backendRefs: [{name: go-httpbin, port: 80}]
";

/// `weir_upstream_retries_total` of retry-route for `reason`.
async fn retries(weir: &weir_testkit::process::Weir, reason: &str) -> f64 {
    let metrics = http1(weir.admin, &Req::get("admin", "/metrics"))
        .await
        .unwrap()
        .text();
    let wanted = format!(
        "weir_upstream_retries_total{{reason=\"{reason}\",route=\"default/retry-route\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn status(http: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    let mut req = Req::get("retry.ingress.top", path);
    req.method = method;
    http1(http, &req).await.unwrap().status.as_u16()
}

#[tokio::test]
async fn a_route_retry_retries_what_it_names_and_nothing_else() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    std::fs::write(dir.path().join("retry-route.yaml"), ROUTE).unwrap();
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    assert_eventually("retry-route served", WAIT, || async {
        match status(
            http,
            "GET",
            "/retry/none/x?responseCode=503&succeedAfter=0&uuid=w",
        )
        .await
        {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;

    // Two 503s, then the echo: both retries used, the client sees 200.
    let path = "/retry/codes/x?responseCode=503&succeedAfter=2&uuid=a";
    assert_eq!(status(http, "GET", path).await, 200);
    assert_eq!(retries(&weir, "retriable-status-codes").await, 2.0);
    // Three 503s: the retries run out and the last 503 is what the client gets.
    let path = "/retry/codes/x?responseCode=503&succeedAfter=3&uuid=b";
    assert_eq!(status(http, "GET", path).await, 503);
    assert_eq!(retries(&weir, "retriable-status-codes").await, 4.0);
    // A status not in `codes` is not retried.
    let path = "/retry/codes/x?responseCode=500&succeedAfter=1&uuid=c";
    assert_eq!(status(http, "GET", path).await, 500);
    // A POST the backend answered is never sent again.
    let path = "/retry/codes/x?responseCode=503&succeedAfter=1&uuid=d";
    assert_eq!(status(http, "POST", path).await, 503);
    assert_eq!(retries(&weir, "retriable-status-codes").await, 4.0);
    // The backend drops the connection (no responseCode): a connection error, retried.
    let path = "/retry/codes/x?succeedAfter=1&uuid=e";
    assert_eq!(status(http, "GET", path).await, 200);
    assert_eq!(retries(&weir, "reset").await, 1.0);
    // The first attempt outlives timeouts.backendRequest: cut, and retried.
    let path = "/retry/timeout/x?responseCode=500&succeedAfter=1&delayRetry=2s&uuid=f";
    assert_eq!(status(http, "GET", path).await, 200);
    assert_eq!(retries(&weir, "per-try-timeout").await, 1.0);
    // Without `retry` the same failures reach the client.
    let path = "/retry/none/x?responseCode=503&succeedAfter=1&uuid=g";
    assert_eq!(status(http, "GET", path).await, 503);
    let path = "/retry/none/x?succeedAfter=1&uuid=h";
    assert_eq!(status(http, "GET", path).await, 502);
}
