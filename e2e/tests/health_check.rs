//! BackendTrafficPolicy `healthCheck` as users write it: YAML in the config directory of a
//! running weir, probes against a real backend process, changed without a restart. (The
//! engine in detail: crates/weir-proxy/tests/proxy/health.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;

use weir_e2e::{policy_accepted, policy_accepted_when, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir};

fn write_policy(dir: &Path, spec: &str) {
    std::fs::write(
        dir.join("health-policy.yaml"),
        format!(
            "apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: healthy, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: demo-route}}]
{spec}"
        ),
    )
    .unwrap();
}

/// The sum of a metric's samples whose label text contains `labels`.
async fn metric(weir: &weir_testkit::process::Weir, name: &str, labels: &str) -> f64 {
    let text = http1(weir.admin, &Req::get("admin", "/metrics"))
        .await
        .unwrap()
        .text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_active_check_keeps_traffic_off_a_failing_backend_until_it_passes() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);
    let get = Req::get("demo.ingress.top", "/get");
    assert_eq!(http1(http, &get).await.unwrap().status, 200);

    // The probe asks for a path the backend answers 503: its only endpoint is unhealthy,
    // and without panic routing the route has no endpoint left.
    write_policy(
        dir.path(),
        "  healthCheck:\n    panicThreshold: 0\n    active:\n      type: HTTP\n      interval: 100ms\n      unhealthyThreshold: 1\n      http: {path: /status/503}\n",
    );
    policy_accepted(&weir, "BackendTrafficPolicy", "healthy").await;
    assert_eventually("no healthy endpoint: 503", WAIT, || async {
        let r = http1(http, &get).await?;
        if r.status != 503 {
            return Err(format!("status {}", r.status));
        }
        match metric(&weir, "weir_health_probes_total", "result=\"failure\"").await {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("{n} failed probes")),
        }
    })
    .await;

    // A path it answers 200: the endpoint passes and gets traffic again.
    write_policy(
        dir.path(),
        "  healthCheck:\n    panicThreshold: 0\n    active:\n      type: HTTP\n      interval: 100ms\n      unhealthyThreshold: 1\n      http: {path: /health}\n",
    );
    assert_eventually("the endpoint healthy again", WAIT, || async {
        let r = http1(http, &get).await?;
        if r.status != 200 {
            return Err(format!("status {}", r.status));
        }
        let healthy = metric(&weir, "weir_endpoint_healthy", "").await;
        if healthy == 1.0 {
            Ok(())
        } else {
            Err(format!("{healthy} healthy"))
        }
    })
    .await;

    // An invalid value is refused by name and applies nowhere.
    write_policy(
        dir.path(),
        "  healthCheck:\n    passive: {maxEjectionPercent: 150}\n",
    );
    policy_accepted_when(
        &weir,
        "the invalid policy reported",
        "BackendTrafficPolicy",
        "healthy",
        |c| {
            c["reason"] == "Invalid"
                && c["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("spec.healthCheck.passive.maxEjectionPercent")
        },
    )
    .await;
    assert_eq!(http1(http, &get).await.unwrap().status, 200);
}
