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
    .compiled()
}

/// `/p` goes to `up` under `policy`; `/` goes to `up` without one.
pub(crate) async fn start(up: &Arc<Upstream>, policy: BackendPolicy) -> (TestProxy, SocketAddr) {
    start_with_client(up, policy, None).await
}

/// [`start`], with a ClientTrafficPolicy on the socket.
pub(crate) async fn start_with_client(
    up: &Arc<Upstream>,
    policy: BackendPolicy,
    client: Option<weir_snapshot::ClientPolicy>,
) -> (TestProxy, SocketAddr) {
    let port = free_port();
    let proxy = TestProxy::start(config(), policy_snapshot(1, port, up, policy, client)).await;
    let addr = proxy.addr(port);
    (proxy, addr)
}

/// The snapshot [`start`] serves (as generation `generation`, on `port`): `/p` to `up`
/// under `policy`, `/` to `up` without one, `client` on the socket.
pub(crate) fn policy_snapshot(
    generation: u64,
    port: u16,
    up: &Arc<Upstream>,
    policy: BackendPolicy,
    client: Option<weir_snapshot::ClientPolicy>,
) -> Arc<weir_snapshot::Snapshot> {
    let plain = forward_to("ns/plain", up);
    let a = forward_to("ns/r", up);
    let with_policy = Arc::new(RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: a.timeouts,
        policy: Some(Arc::new(policy)),
        ext_auth: None,
        security: None,
        ext_proc: None,
    });
    let mut sock = socket(
        port,
        vec![listener(
            "ns/gw",
            None,
            vec![
                (None, prefix("/p", with_policy)),
                (None, prefix("/", plain)),
            ],
        )],
    );
    sock.client_policy = client.map(Arc::new);
    snapshot(generation, vec![sock])
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

// ---------------------------------------------------------------------------------------
// requestBuffer.limit

fn with_buffer(limit: u64, retry: Option<weir_snapshot::RetryPolicy>) -> BackendPolicy {
    BackendPolicy {
        name: "ns/p".into(),
        id: 12,
        request_buffer: Some(limit),
        retry,
        ..BackendPolicy::default()
    }
    .compiled()
}

#[tokio::test]
async fn a_body_over_the_limit_by_its_content_length_gets_413() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (proxy, addr) = start(&up, with_buffer(1024, None)).await;
    let post = |path: &str, n: usize| {
        request("a.example", path)
            .method("POST")
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    let resp = send(addr, post("/p", 1025)).await.unwrap();
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.body);
    assert_eq!(echo.received.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        proxy.metric("weir_request_errors_total", &[("reason", "body_too_large")]),
        1.0
    );
    // At the limit it passes; without the policy any size passes.
    let resp = send(addr, post("/p", 1024)).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    let resp = send(addr, post("/", 4096)).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
}

fn chunked(n: usize) -> Vec<u8> {
    let mut out = b"POST /p HTTP/1.1\r\nhost: a.example\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    let mut left = n;
    while left > 0 {
        let size = left.min(300);
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'y', size));
        out.extend_from_slice(b"\r\n");
        left -= size;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413_before_anything_is_sent() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (_proxy, addr) = start(&up, with_buffer(1000, None)).await;
    let answer = raw(addr, &chunked(1001)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(echo.received.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        echo.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Under the limit the whole body arrives (sent with its length).
    let answer = raw(addr, &chunked(1000)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let bodies = echo.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0].ends_with(&"y".repeat(1000)), "{}", bodies[0]);
}

#[tokio::test]
async fn a_body_beyond_64k_is_retried_when_the_limit_allows_it() {
    use crate::backend_policy::{retry, Scripted};
    let backend = Scripted::start("b", |n| (if n == 0 { 503 } else { 200 }, 0)).await;
    let up = upstream("svc", &[backend.addr]);
    let pol = with_buffer(
        256 * 1024,
        Some(retry(2, weir_snapshot::RetryTriggers::FIVE_XX, &[])),
    );
    let (_proxy, addr) = start(&up, pol).await;
    let big = Bytes::from(vec![b'x'; 100 * 1024]);
    let req = request("a.example", "/p")
        .method("PUT")
        .body(Full::new(big))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(backend.received(), 2);
    let bodies = backend.bodies.lock().unwrap().clone();
    assert_eq!(bodies[0].len(), 100 * 1024);
    assert_eq!(
        bodies[1].len(),
        100 * 1024,
        "the retry replays the whole body"
    );
}

// ---------------------------------------------------------------------------------------
// Upstream connection settings

/// An HTTP/1.1 backend that counts the connections it accepted and those open now (a
/// connection is closed when the proxy closes it: the backend has no idle timeout).
struct Counting {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counting {
    async fn start() -> Counting {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (a, o) = (accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Counting {
            addr,
            accepted,
            open,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn with_connection(idle: Option<Duration>, max_requests: Option<u32>) -> BackendPolicy {
    BackendPolicy {
        name: "ns/p".into(),
        id: 13,
        connection: Some(weir_snapshot::UpstreamConnection {
            idle_timeout: idle,
            max_requests,
        }),
        ..BackendPolicy::default()
    }
    .compiled()
}

#[tokio::test]
async fn the_connection_idle_timeout_closes_idle_upstream_connections() {
    let backend = Counting::start().await;
    let up = upstream("svc", &[backend.addr]);
    let (_proxy, addr) = start(&up, with_connection(Some(Duration::from_secs(1)), None)).await;
    // One connection for the route without the policy, one for the policy's (pooled apart).
    let resp = get(addr, "a.example", "/").await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        backend.accepted(),
        2,
        "the policy's connections are its own"
    );
    // The policy's connection is closed after its idle timeout (1 s, at most a tick or two
    // more); the other keeps the default (60 s).
    assert_eventually(
        "the idle connection to close",
        Duration::from_secs(10),
        || async {
            match backend.open() {
                1 => Ok(()),
                n => Err(anyhow::anyhow!("{n} open")),
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(backend.open(), 1, "the default pool keeps its connection");
    // The next request of the policy opens a new one.
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(backend.accepted(), 3);
}

#[tokio::test]
async fn max_requests_per_connection_one_opens_a_connection_per_request() {
    let backend = Counting::start().await;
    let up = upstream("svc", &[backend.addr]);
    let (_proxy, addr) = start(&up, with_connection(None, Some(1))).await;
    let mut client = H1::connect(addr).await.unwrap();
    for _ in 0..5 {
        let resp = client
            .send(request("a.example", "/p").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_eq!(backend.accepted(), 5);
    assert_eventually(
        "used connections to close",
        Duration::from_secs(5),
        || async {
            match backend.open() {
                0 => Ok(()),
                n => Err(anyhow::anyhow!("{n} open")),
            }
        },
    )
    .await;
    // Without the policy one connection serves them all.
    for _ in 0..5 {
        let resp = client
            .send(request("a.example", "/").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_eq!(backend.accepted(), 6);
}

#[tokio::test]
async fn max_requests_per_connection_three_reuses_a_connection_three_times() {
    let backend = Counting::start().await;
    let up = upstream("svc", &[backend.addr]);
    let (_proxy, addr) = start(&up, with_connection(None, Some(3))).await;
    let mut client = H1::connect(addr).await.unwrap();
    for _ in 0..7 {
        let resp = client
            .send(request("a.example", "/p").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_eq!(backend.accepted(), 3, "7 requests at 3 per connection");
}

// ---------------------------------------------------------------------------------------
// maxParallelRetries and the retry budget

fn retried(proxy: &TestProxy) -> f64 {
    proxy.metric("weir_upstream_retries_total", &[("route", "ns/r")])
}

fn skipped(proxy: &TestProxy, reason: &str) -> f64 {
    proxy.metric(
        "weir_upstream_retries_skipped_total",
        &[("route", "ns/r"), ("reason", reason)],
    )
}

/// `n` concurrent GETs of `/p`; their statuses.
async fn storm(addr: SocketAddr, n: usize) -> Vec<StatusCode> {
    let all: Vec<_> = (0..n)
        .map(|_| tokio::spawn(get(addr, "a.example", "/p")))
        .collect();
    let mut out = Vec::new();
    for r in all {
        out.push(r.await.unwrap().unwrap().status);
    }
    out
}

#[tokio::test]
async fn max_parallel_retries_caps_the_retries_in_flight() {
    use crate::backend_policy::{retry, Scripted};
    // Every answer is a 503 after 300 ms: the first attempts end together, then want
    // their retries at once.
    let backend = Scripted::start("b", |_| (503, 300)).await;
    let up = upstream("svc", &[backend.addr]);
    let pol = BackendPolicy {
        name: "ns/p".into(),
        id: 14,
        retry: Some(retry(1, weir_snapshot::RetryTriggers::FIVE_XX, &[])),
        circuit_breaker: Some(weir_snapshot::CircuitBreaker {
            max_parallel_retries: 2,
            ..weir_snapshot::CircuitBreaker::default()
        }),
        ..BackendPolicy::default()
    }
    .compiled();
    let (proxy, addr) = start(&up, pol).await;
    let statuses = storm(addr, 10).await;
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
    let made = retried(&proxy);
    // Without the cap all 10 would be retried; with it, 2 at a time (a first attempt that
    // ends after a retry finished may take its place: a few at most, on a slow machine).
    assert!((1.0..=6.0).contains(&made), "{made} retries");
    assert_eq!(made + skipped(&proxy, "max_parallel_retries"), 10.0);
    assert_eq!(backend.received(), 10 + made as usize);
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    use crate::backend_policy::{retry, Scripted};
    let backend = Scripted::start("b", |_| (503, 20)).await;
    let up = upstream("svc", &[backend.addr]);
    let pol = BackendPolicy {
        name: "ns/p".into(),
        id: 15,
        retry: Some(retry(3, weir_snapshot::RetryTriggers::FIVE_XX, &[])),
        retry_budget: Some(weir_snapshot::RetryBudget {
            percent: 20,
            interval: Duration::from_secs(60),
            min_count: 0,
            min_interval: Duration::from_secs(1),
        }),
        ..BackendPolicy::default()
    }
    .compiled();
    let (proxy, addr) = start(&up, pol).await;
    let n = 50;
    let statuses = storm(addr, n).await;
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
    // Without the budget: 50 × (1 + 3) = 200 backend requests. With it: retries are at
    // most 20 % of the requests.
    let made = retried(&proxy);
    assert!(made <= 10.0, "{made} retries");
    assert!(made >= 1.0, "the budget allows some retries");
    assert!(skipped(&proxy, "budget") >= 40.0);
    assert_eq!(backend.received(), n + made as usize);
}
