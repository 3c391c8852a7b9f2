//! BackendTrafficPolicy as users write it: YAML in the config directory of a running weir,
//! applied and changed without a restart, checked over real sockets. (Each field's
//! behaviour in detail: crates/weir-proxy/tests/proxy/backend_policy.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;

use weir_e2e::{policy_accepted, policy_accepted_when, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir};

fn write_policy(dir: &Path, spec: &str) {
    std::fs::write(
        dir.join("backend-policy.yaml"),
        format!(
            "apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: resilient, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: demo-route}}]
{spec}"
        ),
    )
    .unwrap();
}

/// `weir_upstream_retries_total` for demo-route and `reason`, from the admin server.
async fn retries(weir: &weir_testkit::process::Weir, reason: &str) -> f64 {
    let metrics = http1(weir.admin, &Req::get("admin", "/metrics"))
        .await
        .unwrap()
        .text();
    let wanted =
        format!("weir_upstream_retries_total{{reason=\"{reason}\",route=\"default/demo-route\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_retry_policy_applies_to_its_route_and_is_counted() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    let status_503 = Req::get("demo.ingress.top", "/status/503");

    // No policy: one attempt, nothing counted.
    assert_eq!(http1(http, &status_503).await.unwrap().status, 503);
    assert_eq!(retries(&weir, "retriable-status-codes").await, 0.0);

    write_policy(
        dir.path(),
        "  retry:\n    numRetries: 2\n    retryOn: {httpStatusCodes: [503]}\n    perRetry: {backOff: {baseInterval: 1ms}}\n",
    );
    policy_accepted(&weir, "BackendTrafficPolicy", "resilient").await;
    // The backend answers 503 every time: two retries, then its last 503.
    assert_eventually("503s retried", WAIT, || async {
        let r = http1(http, &status_503).await?;
        if r.status != 503 {
            return Err(format!("status {}", r.status));
        }
        match retries(&weir, "retriable-status-codes").await {
            n if n >= 2.0 => Ok(()),
            n => Err(format!("{n} retries")),
        }
    })
    .await;
    // Other statuses are not retried, and the echo still answers 200.
    let before = retries(&weir, "retriable-status-codes").await;
    let ok = http1(http, &Req::get("demo.ingress.top", "/get"))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(retries(&weir, "retriable-status-codes").await, before);

    // A field Weir lacks: refused by name, and the policy no longer applies.
    write_policy(
        dir.path(),
        "  retry: {numRetries: 2}\n  loadBalancer: {type: Random, zoneAware: {weightedZones: []}}\n",
    );
    policy_accepted_when(
        &weir,
        "the refused policy reported",
        "BackendTrafficPolicy",
        "resilient",
        |c| {
            c["reason"] == "UnsupportedValue"
                && c["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("spec.loadBalancer.zoneAware.weightedZones")
        },
    )
    .await;
    let before = retries(&weir, "retriable-status-codes").await;
    assert_eq!(http1(http, &status_503).await.unwrap().status, 503);
    assert_eq!(retries(&weir, "retriable-status-codes").await, before);
}
