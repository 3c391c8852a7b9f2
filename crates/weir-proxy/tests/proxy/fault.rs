//! BackendTrafficPolicy blocks beside retries and the breaker's caps, over real sockets:
//! fault injection (abort and delay rates, gRPC aborts, a delay that holds no connection),
//! the request body limit (413, and retries of bodies beyond 64 KiB), the upstream
//! connection settings (idle timeout, requests per connection), `maxParallelRetries` and
//! the retry budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use weir_snapshot::{
    AbortStatus, BackendPolicy, FaultAbort, FaultDelay, FaultInjection, RouteAction, Share,
    Upstream,
};

use crate::support::*;

fn with_fault(abort: Option<FaultAbort>, delay: Option<FaultDelay>) -> BackendPolicy {
    BackendPolicy {
        name: "ns/p".into(),
        id: 11,
        fault: Some(FaultInjection { delay, abort }),
        ..BackendPolicy::default()
    }
}

/// `/p` goes to `up` under `policy`; `/` goes to `up` without one.
pub(crate) async fn start(up: &Arc<Upstream>, policy: BackendPolicy) -> (TestProxy, SocketAddr) {
    let port = free_port();
    let plain = forward_to("ns/plain", up);
    let a = forward_to("ns/r", up);
    let with_policy = Arc::new(RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: a.timeouts,
        policy: Some(Arc::new(policy)),
    });
    let snap = snapshot(
        1,
        vec![socket(
            port,
            vec![listener(
                "ns/gw",
                None,
                vec![
                    (None, prefix("/p", with_policy)),
                    (None, prefix("/", plain)),
                ],
            )],
        )],
    );
    let proxy = TestProxy::start(config(), snap).await;
    let addr = proxy.addr(port);
    (proxy, addr)
}

fn faults(proxy: &TestProxy, kind: &str) -> f64 {
    proxy.metric(
        "weir_fault_injected_total",
        &[("route", "ns/r"), ("kind", kind)],
    )
}

/// 1,000 requests at 30 %: 300 expected, σ ≈ 14.5; 220..=380 is more than 5σ each way.
const N: usize = 1000;
const LOW: usize = 220;
const HIGH: usize = 380;

#[tokio::test]
async fn an_abort_answers_its_share_of_requests_without_the_backend() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let abort = FaultAbort {
        status: AbortStatus::Http(503),
        share: Share::from_percent(30.0).unwrap(),
    };
    let (proxy, addr) = start(&up, with_fault(Some(abort), None)).await;
    let mut client = H1::connect(addr).await.unwrap();
    let mut aborted = 0;
    for _ in 0..N {
        let resp = client
            .send(request("a.example", "/p").body(Full::default()).unwrap())
            .await
            .unwrap();
        match resp.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(resp.body, "fault filter abort\n");
                aborted += 1;
            }
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!((LOW..=HIGH).contains(&aborted), "{aborted} of {N} aborted");
    let reached = echo.received.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        reached,
        N - aborted,
        "aborted requests never reach the backend"
    );
    assert_eq!(faults(&proxy, "abort"), aborted as f64);
    // The route without the policy is never aborted.
    for _ in 0..50 {
        let resp = client
            .send(request("a.example", "/").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_delay_holds_its_share_of_requests() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let delay = FaultDelay {
        fixed_delay: Duration::from_millis(1),
        share: Share::from_percent(30.0).unwrap(),
    };
    let (proxy, addr) = start(&up, with_fault(None, Some(delay))).await;
    let mut client = H1::connect(addr).await.unwrap();
    let mut at_least_the_delay = 0;
    for _ in 0..N {
        let started = Instant::now();
        let resp = client
            .send(request("a.example", "/p").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        if started.elapsed() >= Duration::from_millis(1) {
            at_least_the_delay += 1;
        }
    }
    let delayed = faults(&proxy, "delay") as usize;
    assert!((LOW..=HIGH).contains(&delayed), "{delayed} of {N} delayed");
    // Every delayed request took at least the delay (others may too, on a busy machine).
    assert!(
        at_least_the_delay >= delayed,
        "{at_least_the_delay} < {delayed}"
    );
    assert_eq!(echo.received.load(std::sync::atomic::Ordering::SeqCst), N);
    assert_eq!(faults(&proxy, "abort"), 0.0);
}

#[tokio::test]
async fn a_delay_of_200ms_is_observed_and_holds_no_upstream_connection() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let delay = FaultDelay {
        fixed_delay: Duration::from_millis(200),
        share: Share::ALL,
    };
    let (proxy, addr) = start(&up, with_fault(None, Some(delay))).await;
    let started = Instant::now();
    let pending = tokio::spawn(get(addr, "a.example", "/p"));
    // While it waits, the backend has seen no connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        echo.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a delayed request holds no upstream connection"
    );
    let resp = pending.await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status, StatusCode::OK);
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(faults(&proxy, "delay"), 1.0);
}

#[tokio::test]
async fn a_grpc_abort_is_a_trailers_only_answer_with_its_status() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let abort = FaultAbort {
        status: AbortStatus::Grpc(14),
        share: Share::ALL,
    };
    let (_proxy, addr) = start(&up, with_fault(Some(abort), None)).await;
    let req = request("a.example", "/p/pkg.Svc/Call")
        .method("POST")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.headers["content-type"], "application/grpc");
    assert_eq!(resp.headers["grpc-status"], "14");
    assert!(resp.body.is_empty());
    assert_eq!(echo.received.load(std::sync::atomic::Ordering::SeqCst), 0);
}
