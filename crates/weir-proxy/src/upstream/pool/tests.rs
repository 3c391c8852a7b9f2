//! The pool against scripted TCP backends: reuse, idle expiry, dead connections, safe
//! repeats, connect fallbacks and the shared h2c connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_snapshot::{AppProtocol, Endpoint, Upstream};

use super::Pools;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::upstream::{Clients, UpstreamBody};

#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Answer every request, keep the connection open.
    KeepAlive,
    /// Answer, then close the connection (without saying `Connection: close`).
    CloseAfterResponse,
    /// On the first connection, read the second request and hang up without answering.
    HangUpOnSecondRequest,
    /// Answer, then close the connection once it has been idle for a while.
    CloseWhenIdle,
    /// Answer as soon as the request head is in, then read its body after a pause (as a
    /// server that rejects an upload early does), and keep the connection open.
    AnswerBeforeBody,
}

struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Backend {
    async fn start(script: Script) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, r, c) = (accepted.clone(), requests.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let index = a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, script, index, r.clone(), c.clone()));
            }
        });
        Backend {
            addr,
            accepted,
            requests,
            closed,
        }
    }
}

async fn serve(
    mut tcp: TcpStream,
    script: Script,
    index: usize,
    requests: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    let mut on_conn = 0;
    if script == Script::AnswerBeforeBody {
        while answer_before_body(&mut tcp, &mut buf).await {
            requests.fetch_add(1, Ordering::SeqCst);
        }
        closed.fetch_add(1, Ordering::SeqCst);
        return;
    }
    while read_request(&mut tcp, &mut buf).await {
        requests.fetch_add(1, Ordering::SeqCst);
        on_conn += 1;
        if script == Script::HangUpOnSecondRequest && index == 0 && on_conn == 2 {
            break;
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if tcp.write_all(answer).await.is_err() || script == Script::CloseAfterResponse {
            break;
        }
        if script == Script::CloseWhenIdle {
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
    }
    drop(tcp);
    closed.fetch_add(1, Ordering::SeqCst);
}

/// Where the request head in `buf` ends (before its blank line) and its Content-Length,
/// once the whole head is in.
fn request_head(buf: &[u8]) -> Option<(usize, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    Some((end, length))
}

/// Read one request (head and a Content-Length body) from `tcp`; false at EOF.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some((end, length)) = request_head(buf) {
            if buf.len() >= end + 4 + length {
                buf.drain(..end + 4 + length);
                return true;
            }
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// [`Script::AnswerBeforeBody`] for one request; false at EOF.
async fn answer_before_body(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let (end, length) = loop {
        if let Some(head) = request_head(buf) {
            break head;
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    if tcp.write_all(answer).await.is_err() {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut chunk = vec![0u8; 64 * 1024];
    while buf.len() < end + 4 + length {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..end + 4 + length);
    true
}

fn upstream(protocol: AppProtocol, addrs: &[SocketAddr]) -> Upstream {
    let endpoints = addrs.iter().map(|&addr| Endpoint { addr }).collect();
    Upstream::new("ns/svc:80", protocol, endpoints)
}

fn metrics() -> Metrics {
    Metrics::register(&prometheus::Registry::new()).unwrap()
}

fn get() -> Request<UpstreamBody> {
    Request::builder()
        .uri("/x")
        .header("host", "app.test")
        .body(UpstreamBody::empty())
        .unwrap()
}

fn post() -> Request<UpstreamBody> {
    Request::builder()
        .method(Method::POST)
        .uri("/x")
        .header("host", "app.test")
        .header("content-length", "5")
        .body(UpstreamBody::from(Bytes::from_static(b"hello")))
        .unwrap()
}

async fn send(
    clients: &Clients,
    up: &Upstream,
    req: Request<UpstreamBody>,
) -> Result<String, ProxyError> {
    let response = clients.send(&metrics(), up, req, None, None).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8(body.to_vec()).unwrap())
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn quick_pools(idle: Duration) -> Pools {
    Pools::with_timeouts(Duration::from_millis(20), idle, Duration::from_secs(2))
}

#[tokio::test]
async fn one_connection_serves_consecutive_requests() {
    let backend = Backend::start(Script::KeepAlive).await;
    let pools = Pools::new(Default::default());
    let clients = Clients::with_pools(pools.clone());
    let up = upstream(AppProtocol::Http1, &[backend.addr]);
    for _ in 0..5 {
        assert_eq!(send(&clients, &up, get()).await.unwrap(), "ok");
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 5);
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pools.idle_http1(backend.addr), 1);
}

#[tokio::test]
async fn idle_connections_expire() {
    let backend = Backend::start(Script::KeepAlive).await;
    let pools = quick_pools(Duration::from_millis(60));
    let clients = Clients::with_pools(pools.clone());
    let up = upstream(AppProtocol::Http1, &[backend.addr]);
    send(&clients, &up, get()).await.unwrap();
    assert_eq!(pools.idle_http1(backend.addr), 1);
    wait_for("the reaper to close the idle connection", || {
        backend.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(pools.idle_http1(backend.addr), 0);
    send(&clients, &up, get()).await.unwrap();
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_closed_pooled_connection_is_not_handed_out() {
    let backend = Backend::start(Script::CloseAfterResponse).await;
    let pools = Pools::new(Default::default());
    let clients = Clients::with_pools(pools.clone());
    let up = upstream(AppProtocol::Http1, &[backend.addr]);
    send(&clients, &up, get()).await.unwrap();
    wait_for("the backend to close", || {
        backend.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    // Give the connection task a moment to read the FIN. A POST is not safe to repeat, so
    // it only succeeds if the closed connection is not used.
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(&clients, &up, post()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&clients, &up, get()).await.unwrap();
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(backend.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_leaves_the_pool_without_a_request() {
    // The close is noticed (and our end closed, not left in CLOSE_WAIT) long before the idle
    // timeout, without a request having to trip over it.
    let backend = Backend::start(Script::CloseWhenIdle).await;
    let pools = quick_pools(Duration::from_secs(60));
    let clients = Clients::with_pools(pools.clone());
    let up = upstream(AppProtocol::Http1, &[backend.addr]);
    send(&clients, &up, get()).await.unwrap();
    assert_eq!(pools.idle_http1(backend.addr), 1);
    wait_for("the reaper to drop the closed connection", || {
        pools.idle_http1(backend.addr) == 0
    })
    .await;
}

#[tokio::test]
async fn a_request_lost_on_a_stale_connection_is_repeated_only_when_safe() {
    // GET, no body: repeated on a new connection.
    let backend = Backend::start(Script::HangUpOnSecondRequest).await;
    let clients = Clients::with_pools(quick_pools(Duration::from_secs(30)));
    let up = upstream(AppProtocol::Http1, &[backend.addr]);
    send(&clients, &up, get()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await; // idle for more than a tick
    assert_eq!(send(&clients, &up, get()).await.unwrap(), "ok");
    assert_eq!(backend.requests.load(Ordering::SeqCst), 3);
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);

    // POST with a body: not repeated, the client gets the error.
    let backend = Backend::start(Script::HangUpOnSecondRequest).await;
    let clients = Clients::with_pools(quick_pools(Duration::from_secs(30)));
    let up = upstream(AppProtocol::Http1, &[backend.addr]);
    send(&clients, &up, get()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let err = send(&clients, &up, post()).await.unwrap_err();
    assert!(
        matches!(err, ProxyError::UpstreamRequest { .. }),
        "got {err:?}"
    );
    assert_eq!(backend.requests.load(Ordering::SeqCst), 2);
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connect_failure_falls_over_to_the_next_endpoint() {
    let backend = Backend::start(Script::KeepAlive).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let clients = Clients::new(Default::default(), false, 1);
    let up = upstream(AppProtocol::Http1, &[closed, backend.addr]);
    for _ in 0..4 {
        assert_eq!(send(&clients, &up, get()).await.unwrap(), "ok");
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 4);
    // Only closed endpoints: a connect error.
    let up = upstream(AppProtocol::Http1, &[closed]);
    let err = send(&clients, &up, get()).await.unwrap_err();
    assert!(
        matches!(err, ProxyError::UpstreamConnect { .. }),
        "got {err:?}"
    );
}

#[tokio::test]
async fn h2c_requests_share_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.version(), http::Version::HTTP_2);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
            });
        }
    });
    let clients = Clients::new(Default::default(), false, 1);
    let up = upstream(AppProtocol::H2c, &[addr]);
    let (a, b) = tokio::join!(send(&clients, &up, get()), send(&clients, &up, get()));
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        ("ok".to_string(), "ok".to_string())
    );
    send(&clients, &up, post()).await.unwrap();
    assert!(
        accepted.load(Ordering::SeqCst) <= 2,
        "two racing first requests may each connect"
    );
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..3 {
        send(&clients, &up, get()).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), before);
}

#[test]
fn upstream_connections_have_no_task_of_their_own() {
    // The request that uses a connection drives it (`Http1Conn`): with four connections
    // open and pooled, the client's runtime runs nothing but the pool's reaper. (The backend
    // runs on a runtime of its own, so its tasks are not counted.)
    let backend_runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = backend_runtime.block_on(Backend::start(Script::KeepAlive));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pools = Pools::new(Default::default());
        let clients = Clients::with_pools(pools.clone());
        let up = upstream(AppProtocol::Http1, &[backend.addr]);
        let (a, b, c, d) = tokio::join!(
            send(&clients, &up, get()),
            send(&clients, &up, get()),
            send(&clients, &up, get()),
            send(&clients, &up, get()),
        );
        for answer in [a, b, c, d] {
            assert_eq!(answer.unwrap(), "ok");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 4);
        assert_eq!(pools.idle_http1(backend.addr), 4);
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(tasks, 1, "the reaper and no task per connection");
        // And the pooled connections still serve.
        for _ in 0..4 {
            assert_eq!(send(&clients, &up, get()).await.unwrap(), "ok");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 4);
    });
}

#[tokio::test]
async fn a_response_that_ends_before_its_request_body_returns_the_connection_once_the_body_is_sent()
{
    // The backend answers as soon as it has the head of a large upload and reads the body
    // later: the response is over while the request body is still being written. The
    // connection goes back to the pool once the body is through, not before (the next
    // request would wait behind it) and is not closed (it is still good).
    let backend = Backend::start(Script::AnswerBeforeBody).await;
    let pools = Pools::new(Default::default());
    let clients = Clients::with_pools(pools.clone());
    let up = upstream(AppProtocol::Http1, &[backend.addr]);
    // Larger than what the loopback socket buffers take, so the write is still under way.
    let upload = Bytes::from(vec![b'x'; 32 << 20]);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header("host", "app.test")
        .header("content-length", upload.len().to_string())
        .body(UpstreamBody::from(upload))
        .unwrap();
    assert_eq!(send(&clients, &up, req).await.unwrap(), "ok");
    assert_eq!(
        pools.idle_http1(backend.addr),
        0,
        "not idle while its request body is still being sent"
    );
    wait_for("the connection to come back once the body is sent", || {
        pools.idle_http1(backend.addr) == 1
    })
    .await;
    assert_eq!(send(&clients, &up, get()).await.unwrap(), "ok");
    // (The backend counts a request once it has read its body, after its pause.)
    wait_for("the backend to count both requests", || {
        backend.requests.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
}
