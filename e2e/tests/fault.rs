//! BackendTrafficPolicy fault injection as users write it: YAML in the
//! config directory of a running weir, their answers over real sockets and their access-log
//! flags on stdout (and the breaker overflow's). (Each block in detail: crates/weir-proxy/tests/proxy/fault.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;

use serde_json::Value;
use weir_e2e::{policy_accepted, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir, Weir};

fn write_policy(dir: &Path, spec: &str) {
    std::fs::write(
        dir.join("backend-policy.yaml"),
        format!(
            "apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: chaos, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: demo-route}}]
{spec}"
        ),
    )
    .unwrap();
}

async fn accepted(weir: &Weir) {
    policy_accepted(weir, "BackendTrafficPolicy", "chaos").await;
}

/// The access log lines on stdout so far.
fn lines(weir: &Weir) -> Vec<Value> {
    weir.proc
        .stdout
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn faults_answer_and_are_flagged_in_the_access_log() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let weir = weir(dir.path(), &[80], &["--log-level", "info"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);

    write_policy(
        dir.path(),
        "  faultInjection: {abort: {httpStatus: 418, percentage: 100}}\n",
    );
    accepted(&weir).await;
    assert_eventually("the abort", WAIT, || async {
        let r = http1(http, &Req::get("demo.ingress.top", "/get/abort")).await?;
        if r.status == 418 {
            Ok(())
        } else {
            Err(format!("status {}", r.status))
        }
    })
    .await;
    assert_eventually("the fault_abort flag", WAIT, || async {
        let found = lines(&weir).into_iter().any(|l| {
            l["path"] == "/get/abort" && l["status"] == 418 && l["flags"] == "fault_abort"
        });
        found
            .then_some(())
            .ok_or_else(|| "no flagged line".to_string())
    })
    .await;

    // A delay (with a body limit beside it, accepted from YAML): the backend answers, the
    // line is flagged and keeps its upstream time.
    write_policy(
        dir.path(),
        "  faultInjection: {delay: {fixedDelay: 1ms}}\n  requestBuffer: {limit: 1Ki}\n",
    );
    assert_eventually("the delay", WAIT, || async {
        let r = http1(http, &Req::get("demo.ingress.top", "/get/delayed")).await?;
        if r.status != 200 {
            return Err(format!("status {}", r.status));
        }
        let found = lines(&weir).into_iter().any(|l| {
            l["path"] == "/get/delayed"
                && l["status"] == 200
                && l["flags"] == "fault_delay"
                && l["upstream_ms"].is_number()
        });
        found
            .then_some(())
            .ok_or_else(|| "no flagged line".to_string())
    })
    .await;

    // Breaker overflow (`maxParallelRequests`): 503 with Envoy's UO as `upstream_overflow`.
    write_policy(dir.path(), "  circuitBreaker: {maxParallelRequests: 1}\n");
    let slow = tokio::spawn(async move {
        // Until the new policy applies, this may pass quickly: keep one request in flight.
        for _ in 0..20 {
            let _ = http1(http, &Req::get("demo.ingress.top", "/get/slow?delay=2s")).await;
        }
    });
    assert_eventually("the overflow flagged", WAIT, || async {
        let r = http1(http, &Req::get("demo.ingress.top", "/get/over")).await?;
        let found = lines(&weir).into_iter().any(|l| {
            l["path"] == "/get/over" && l["status"] == 503 && l["flags"] == "upstream_overflow"
        });
        if r.status == 503 && found {
            Ok(())
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Err(format!("status {}", r.status))
        }
    })
    .await;
    slow.abort();
}
