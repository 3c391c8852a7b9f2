//! BackendTrafficPolicy in the proxy, over real sockets: retries (on statuses, connect
//! failures, per-try timeouts; never a POST that was sent), the last answer when retries
//! run out, the retry metric, and the circuit breaker's 503 at its cap.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_snapshot::{BackendPolicy, CircuitBreaker, RetryPolicy, RetryTriggers};

use crate::fault::start;
use crate::support::*;

/// A backend whose n-th request (from 0) gets `plan(n)`: a status and a delay. Answers
/// `attempt N` (1-based) and records each request's body.
pub(crate) struct Scripted {
    pub(crate) addr: SocketAddr,
    received: Arc<AtomicUsize>,
    pub(crate) bodies: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    pub(crate) async fn start(name: &'static str, plan: fn(usize) -> (u16, u64)) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (received.clone(), bodies.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (count, seen) = (count.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let seen = seen.clone();
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let body = body.unwrap_or_default();
                            seen.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&body).into_owned());
                            let (status, delay) = plan(n);
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            let mut resp =
                                Response::new(Full::new(Bytes::from(format!("attempt {}", n + 1))));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            resp.headers_mut()
                                .insert("x-backend", http::HeaderValue::from_static(name));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Scripted {
            addr,
            received,
            bodies,
            task,
        }
    }

    pub(crate) fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

pub(crate) fn retry(num_retries: u32, triggers: u16, codes: &[u16]) -> RetryPolicy {
    RetryPolicy {
        num_retries,
        triggers: RetryTriggers(triggers),
        status_codes: codes.into(),
        per_try_timeout: None,
        base_interval: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        min_backoff: Duration::ZERO,
    }
}

fn policy(retry: Option<RetryPolicy>, breaker: Option<CircuitBreaker>) -> BackendPolicy {
    BackendPolicy {
        name: "ns/p".into(),
        id: 7,
        retry,
        connect_timeout: None,
        circuit_breaker: breaker,
        ..BackendPolicy::default()
    }
    .compiled()
}

fn retries(proxy: &TestProxy, reason: &str) -> f64 {
    proxy.metric(
        "weir_upstream_retries_total",
        &[("route", "ns/r"), ("reason", reason)],
    )
}

#[tokio::test]
async fn a_503_is_retried_and_the_client_gets_200() {
    let backend = Scripted::start("b", |n| (if n < 2 { 503 } else { 200 }, 0)).await;
    let up = upstream("svc", &[backend.addr]);
    let pol = policy(Some(retry(3, RetryTriggers::STATUS_CODES, &[503])), None);
    let (proxy, addr) = start(&up, pol).await;
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(resp.body, "attempt 3");
    assert_eq!(backend.received(), 3);
    assert_eq!(retries(&proxy, "retriable-status-codes"), 2.0);
    // The same backend without the policy: its 503 reaches the client.
    let backend = Scripted::start("b", |_| (503, 0)).await;
    let up = upstream("svc", &[backend.addr]);
    let (_proxy, addr) = start(&up, policy(None, None)).await;
    let resp = get(addr, "a.example", "/").await.unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.received(), 1);
}

#[tokio::test]
async fn a_retry_goes_to_another_endpoint() {
    let bad = Scripted::start("bad", |_| (503, 0)).await;
    let good = Scripted::start("good", |_| (200, 0)).await;
    let up = upstream("svc", &[bad.addr, good.addr]);
    let pol = policy(Some(retry(1, RetryTriggers::GATEWAY_ERROR, &[])), None);
    let (proxy, addr) = start(&up, pol).await;
    for _ in 0..6 {
        let resp = get(addr, "a.example", "/p").await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.backend(), "good");
    }
    // Round robin: about half the requests met the bad endpoint first, and each was retried
    // once, on the good one.
    assert!(bad.received() >= 1, "the bad endpoint was tried");
    assert_eq!(retries(&proxy, "gateway-error"), bad.received() as f64);
    assert_eq!(good.received(), 6);
}

#[tokio::test]
async fn a_connect_failure_is_retried_even_for_a_post() {
    // A port nothing listens on.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let up = upstream("svc", &[dead]);
    let pol = policy(Some(retry(2, RetryTriggers::CONNECT_FAILURE, &[])), None);
    let (proxy, addr) = start(&up, pol).await;
    let req = request("a.example", "/p")
        .method(Method::POST)
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    // Nothing was ever sent: safe to retry a POST, and retried twice.
    assert_eq!(retries(&proxy, "connect-failure"), 2.0);
    // A dead endpoint beside a live one: the attempt itself falls over, no retry needed.
    let live = Scripted::start("live", |_| (200, 0)).await;
    let up = upstream("svc", &[dead, live.addr]);
    let pol = policy(Some(retry(2, RetryTriggers::CONNECT_FAILURE, &[])), None);
    let (_proxy, addr) = start(&up, pol).await;
    for _ in 0..4 {
        let resp = get(addr, "a.example", "/p").await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn when_retries_run_out_the_last_503_is_returned_and_counted() {
    let backend = Scripted::start("b", |_| (503, 0)).await;
    let up = upstream("svc", &[backend.addr]);
    let pol = policy(Some(retry(2, RetryTriggers::FIVE_XX, &[])), None);
    let (proxy, addr) = start(&up, pol).await;
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.body, "attempt 3", "the last answer, not a made-up one");
    assert_eq!(backend.received(), 3);
    assert_eq!(retries(&proxy, "5xx"), 2.0);
}

#[tokio::test]
async fn a_post_with_a_5xx_is_not_retried_but_a_put_replays_its_body() {
    let backend = Scripted::start("b", |_| (503, 0)).await;
    let up = upstream("svc", &[backend.addr]);
    let pol = policy(Some(retry(2, RetryTriggers::FIVE_XX, &[])), None);
    let (proxy, addr) = start(&up, pol).await;
    let req = request("a.example", "/p")
        .method(Method::POST)
        .body(Full::new(Bytes::from_static(b"order")))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        backend.received(),
        1,
        "a POST the backend saw is never repeated"
    );
    assert_eq!(retries(&proxy, "5xx"), 0.0);
    // PUT is idempotent: retried, with its (buffered) body each time.
    let req = request("a.example", "/p")
        .method(Method::PUT)
        .body(Full::new(Bytes::from_static(b"doc")))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.received(), 4);
    let bodies = backend.bodies.lock().unwrap().clone();
    assert_eq!(bodies, ["order", "doc", "doc", "doc"]);
}

#[tokio::test]
async fn a_body_beyond_the_retry_buffer_gets_one_attempt() {
    let backend = Scripted::start("b", |_| (503, 0)).await;
    let up = upstream("svc", &[backend.addr]);
    let pol = policy(Some(retry(2, RetryTriggers::FIVE_XX, &[])), None);
    let (_proxy, addr) = start(&up, pol).await;
    let big = Bytes::from(vec![b'x'; 64 * 1024 + 1]);
    let req = request("a.example", "/p")
        .method(Method::PUT)
        .body(Full::new(big))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.received(), 1);
    assert_eq!(backend.bodies.lock().unwrap()[0].len(), 64 * 1024 + 1);
}

#[tokio::test]
async fn a_per_try_timeout_gives_up_on_a_slow_attempt_and_retries() {
    // The first answer would take 5 s; the others come at once.
    let backend = Scripted::start("b", |n| (200, if n == 0 { 5_000 } else { 0 })).await;
    let up = upstream("svc", &[backend.addr]);
    let mut r = retry(1, RetryTriggers::RESET, &[]);
    r.per_try_timeout = Some(Duration::from_millis(200));
    let (proxy, addr) = start(&up, policy(Some(r), None)).await;
    let started = Instant::now();
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, "attempt 2");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(retries(&proxy, "per-try-timeout"), 1.0);
    // Without retries the per-try timeout is the answer: 504.
    let backend = Scripted::start("b", |_| (200, 5_000)).await;
    let up = upstream("svc", &[backend.addr]);
    let mut r = retry(0, RetryTriggers::RESET, &[]);
    r.per_try_timeout = Some(Duration::from_millis(200));
    let (_proxy, addr) = start(&up, policy(Some(r), None)).await;
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn the_circuit_breaker_answers_503_over_its_cap_while_others_pass() {
    let backend = Scripted::start("b", |n| (200, if n == 0 { 800 } else { 0 })).await;
    let up = upstream("svc", &[backend.addr]);
    let breaker = CircuitBreaker {
        max_parallel_requests: 1,
        ..CircuitBreaker::default()
    };
    let (proxy, addr) = start(&up, policy(None, Some(breaker))).await;
    let slow = tokio::spawn(async move { get(addr, "a.example", "/p").await });
    assert_eventually(
        "the slow request to reach the backend",
        Duration::from_secs(5),
        || async {
            anyhow::ensure!(backend.received() == 1);
            Ok(())
        },
    )
    .await;
    // Over the cap: 503 at once, counted.
    let started = Instant::now();
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        proxy.metric("weir_circuit_breaker_overflows_total", &[("route", "ns/r")]),
        1.0
    );
    assert_eq!(
        proxy.metric(
            "weir_request_errors_total",
            &[("reason", "upstream_overflow")]
        ),
        1.0
    );
    // A route without the policy passes meanwhile.
    let resp = get(addr, "a.example", "/other").await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    // The request in flight finishes; then the policy's route admits again.
    assert_eq!(slow.await.unwrap().unwrap().status, StatusCode::OK);
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
}

#[tokio::test]
async fn the_breaker_connection_cap_queues_then_overflows() {
    // One connection for the policy's requests, one request may wait for it.
    let backend = Scripted::start("b", |n| (200, if n < 1 { 600 } else { 0 })).await;
    let up = upstream("svc", &[backend.addr]);
    let breaker = CircuitBreaker {
        max_connections: 1,
        max_pending_requests: 1,
        max_parallel_requests: 100,
        ..CircuitBreaker::default()
    };
    let (proxy, addr) = start(&up, policy(None, Some(breaker))).await;
    let first = tokio::spawn(async move { get(addr, "a.example", "/p").await });
    assert_eventually(
        "the first request to reach the backend",
        Duration::from_secs(5),
        || async {
            anyhow::ensure!(backend.received() == 1);
            Ok(())
        },
    )
    .await;
    // The second waits for the connection (pending); the third finds the queue full.
    let second = tokio::spawn(async move { get(addr, "a.example", "/p").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.await.unwrap().unwrap().status, StatusCode::OK);
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        proxy.metric(
            "weir_request_errors_total",
            &[("reason", "upstream_overflow")]
        ),
        1.0
    );
}

#[tokio::test]
async fn the_policy_connect_timeout_bounds_each_connect() {
    // A listener that never accepts, its backlog full: further connects hang (the kernel
    // drops their SYNs) instead of failing, as with a backend that is unreachable.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = socket.listen(1).unwrap();
    let addr_stuck = stuck.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr_stuck),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let up = upstream("svc", &[addr_stuck]);
    let p = BackendPolicy {
        connect_timeout: Some(Duration::from_millis(300)),
        ..policy(None, None)
    }
    .compiled();
    let (proxy, addr) = start(&up, p).await;
    let started = Instant::now();
    let resp = get(addr, "a.example", "/p").await.unwrap();
    // Without the policy this waits for the default 5 s.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.body);
    // It did hang, and was cut at the policy's limit (not refused at once).
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        proxy.metric("weir_upstream_connect_errors_total", &[("backend", "svc")]),
        1.0
    );
    drop((fillers, stuck));
}
