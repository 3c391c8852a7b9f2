//! `weir run --runtime per-core`: two single-threaded runtimes, each accepting on its own
//! SO_REUSEPORT socket. Real `weir` and `weir-echo` processes; every request of these tests
//! opens a connection of its own, so the kernel spreads them over both runtimes, and each
//! test checks (by `weir_worker_connections_accepted_total{worker}`) that both runtimes took
//! part in what it asserts: a snapshot swap, a local rate limit counted once for the
//! process, a circuit breaker shared by both, and a drain on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weir_e2e::{wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir, Weir};

const HOST: &str = "demo.ingress.top";
const PER_CORE: &[&str] = &["--runtime", "per-core", "--worker-threads", "2"];

async fn metric(weir: &Weir, name: &str, labels: &str) -> f64 {
    let text = http1(weir.admin, &Req::get("admin", "/metrics"))
        .await
        .unwrap()
        .text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Connections each worker runtime has accepted so far.
async fn accepted(weir: &Weir) -> [f64; 2] {
    let name = "weir_worker_connections_accepted_total";
    [
        metric(weir, name, "worker=\"0\"").await,
        metric(weir, name, "worker=\"1\"").await,
    ]
}

/// Both runtimes accepted connections since `before`.
async fn both_took_part(weir: &Weir, before: [f64; 2], what: &str) {
    let after = accepted(weir).await;
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "{what}: connections per runtime before {before:?}, after {after:?}"
    );
}

async fn status(addr: SocketAddr, host: &str, path: &str, user: &str) -> u16 {
    http1(addr, &Req::get(host, path).header("x-user", user))
        .await
        .map(|r| r.status.as_u16())
        .unwrap_or(0)
}

/// `n` requests at once, each on a connection of its own.
async fn burst(addr: SocketAddr, host: &str, path: &str, user: &str, n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (host, path, user) = (host.to_string(), path.to_string(), user.to_string());
            tokio::spawn(async move { status(addr, &host, &path, &user).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn write_policy(dir: &Path, spec: &str) {
    std::fs::write(
        dir.join("backend-policy.yaml"),
        format!(
            "apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: per-core, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: demo-route}}]
{spec}"
        ),
    )
    .unwrap();
}

fn start(dir: &Path, extra: &[&str]) -> Weir {
    let mut args = PER_CORE.to_vec();
    args.extend_from_slice(extra);
    weir(dir, &[80], &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_both_runtimes_and_a_swap_reaches_both() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let w = start(dir.path(), &[]);
    wait_ready(&w).await;
    let addr = w.listener(80);

    let before = accepted(&w).await;
    let got = burst(addr, HOST, "/get/x", "a", 64).await;
    assert!(got.iter().all(|&s| s == 200), "{got:?}");
    both_took_part(&w, before, "64 connections").await;

    // A route added while both serve: once one connection sees it, every connection on
    // either runtime does (one snapshot behind one arc-swap).
    let extra = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: extra, namespace: default}
spec:
  parentRefs: [{name: weir}]
  hostnames: [extra.ingress.top]
  rules:
    - backendRefs: [{name: go-httpbin, port: 80}]
";
    assert_eq!(status(addr, "extra.ingress.top", "/", "a").await, 404);
    std::fs::write(dir.path().join("extra.yaml"), extra).unwrap();
    assert_eventually("the new route served", WAIT, || async {
        match status(addr, "extra.ingress.top", "/", "a").await {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
    let before = accepted(&w).await;
    let got = burst(addr, "extra.ingress.top", "/", "a", 64).await;
    assert!(got.iter().all(|&s| s == 200), "after the swap: {got:?}");
    both_took_part(&w, before, "after the swap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_rate_limit_admits_its_limit_once_across_runtimes() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    write_policy(
        dir.path(),
        "  rateLimit:
    local:
      rules:
      - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
        limit: {requests: 20, unit: Hour}
",
    );
    let w = start(dir.path(), &[]);
    wait_ready(&w).await;
    let addr = w.listener(80);
    let mut n = 0u32;
    assert_eventually("the limit applied", WAIT, || {
        n += 1;
        let user = format!("probe-{n}");
        async move {
            let r = http1(addr, &Req::get(HOST, "/get/x").header("x-user", &user))
                .await
                .map_err(|e| e.to_string())?;
            r.header("x-ratelimit-limit")
                .map(|_| ())
                .ok_or_else(|| format!("status {} without the limit", r.status))
        }
    })
    .await;

    let before = accepted(&w).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(burst(addr, HOST, "/get/x", "gina", 20).await);
    }
    both_took_part(&w, before, "60 requests").await;
    let admitted = got.iter().filter(|&&s| s == 200).count();
    let limited = got.iter().filter(|&&s| s == 429).count();
    // Per-runtime buckets would admit up to 40.
    assert_eq!((admitted, limited), (20, 40), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_counts_requests_of_both_runtimes() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    write_policy(dir.path(), "  circuitBreaker: {maxParallelRequests: 1}\n");
    let w = start(dir.path(), &["--access-log", "off"]);
    wait_ready(&w).await;
    let addr = w.listener(80);
    // Applied: two at once, one overflows.
    assert_eventually("the breaker applied", WAIT, || async {
        let got = burst(addr, HOST, "/get/slow?delay=300ms", "a", 2).await;
        if got.contains(&503) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;

    // Eight at once, each held 1 s by the backend: one breaker for the process admits
    // exactly one; a breaker per runtime would admit one on each.
    let before = accepted(&w).await;
    let got = burst(addr, HOST, "/get/slow?delay=1s", "a", 8).await;
    both_took_part(&w, before, "8 parallel requests").await;
    let admitted = got.iter().filter(|&&s| s == 200).count();
    let overflowed = got.iter().filter(|&&s| s == 503).count();
    assert_eq!((admitted, overflowed), (1, 7), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_on_both_runtimes() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let mut w = start(dir.path(), &["--drain-timeout", "10s"]);
    wait_ready(&w).await;
    let addr = w.listener(80);
    let before = accepted(&w).await;
    let slow = tokio::spawn(burst(addr, HOST, "/get/slow?delay=1500ms", "a", 16));
    // Every one of them accepted before the signal.
    assert_eventually("16 connections accepted", WAIT, || async {
        let now = accepted(&w).await;
        let n = now[0] + now[1] - before[0] - before[1];
        if n >= 16.0 {
            Ok(())
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(format!("{n} accepted"))
        }
    })
    .await;
    both_took_part(&w, before, "16 slow requests").await;
    let exited = tokio::task::spawn_blocking(move || {
        let status = w.proc.terminate(Duration::from_secs(15));
        (status, w)
    });
    let got = slow.await.unwrap();
    assert!(
        got.iter().all(|&s| s == 200),
        "in flight at SIGTERM: {got:?}"
    );
    let (status, _w) = exited.await.unwrap();
    let status = status.expect("weir did not exit within 15 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}
