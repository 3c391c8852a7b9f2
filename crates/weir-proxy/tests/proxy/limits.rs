//! Client connection limits over real sockets: the idle timeout and the connection cap.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_proxy::ProxyConfig;

use crate::support::*;

/// A proxy with `cfg` forwarding everything on one socket to an echo backend; the backend,
/// the proxy and the socket's address.
async fn routed_proxy(cfg: ProxyConfig) -> (Echo, TestProxy, std::net::SocketAddr) {
    let echo = Echo::start("a").await;
    let up = upstream("ns/a:80", &[echo.addr]);
    let port = free_port();
    let p = TestProxy::start(cfg, snapshot(1, vec![routed(port, &up)])).await;
    let addr = p.addr(port);
    (echo, p, addr)
}

/// Read until the server closes the connection (EOF or reset); how long that took.
async fn closed_after(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_busy_ones_are_not() {
    let (_echo, p, addr) = routed_proxy(ProxyConfig {
        idle_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;

    // A connection that never sends a byte.
    let silent = TcpStream::connect(addr).await.unwrap();
    let took = closed_after(silent, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(400)),
        "silent connection closed after {took:?}"
    );

    // Keep-alive after a request: served, then closed once idle.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let took = closed_after(s, Duration::from_secs(5)).await;
    assert!(took.is_some(), "idle keep-alive connection stays open");

    // A request slower than the idle timeout (the backend waits 1.2 s) is answered.
    let mut h1 = H1::connect(addr).await.unwrap();
    let slow = request("h", "/")
        .header("x-delay-ms", "1200")
        .body(Default::default())
        .unwrap();
    let resp = h1.send(slow).await.unwrap();
    assert_eq!(resp.status, http::StatusCode::OK);
    assert!(p.metric("weir_idle_connections_closed_total", &[]) >= 2.0);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_counted() {
    let (_echo, p, addr) = routed_proxy(ProxyConfig {
        max_connections: 2,
        ..config()
    })
    .await;
    let mut first = H1::connect(addr).await.unwrap();
    let mut second = H1::connect(addr).await.unwrap();
    for h in [&mut first, &mut second] {
        assert_eq!(
            h.send(request("h", "/").body(Default::default()).unwrap())
                .await
                .unwrap()
                .status,
            http::StatusCode::OK
        );
    }
    let third = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_after(third, Duration::from_secs(5)).await.is_some(),
        "the third connection is closed at once"
    );
    assert_eq!(p.metric("weir_connections_rejected_total", &[]), 1.0);
    // One closes: a new one is admitted.
    drop(first);
    assert_eventually(
        "a connection slot frees up",
        Duration::from_secs(5),
        || async {
            let mut h = H1::connect(addr).await?;
            let resp = h.send(request("h", "/").body(Default::default())?).await?;
            anyhow::ensure!(
                resp.status == http::StatusCode::OK,
                "status {}",
                resp.status
            );
            Ok(())
        },
    )
    .await;
}

/// A backend that does not answer gets 504 after `upstream_timeout` when the route sets no
/// timeout; a route's own `timeouts.request` replaces the default.
#[tokio::test]
async fn silent_backends_get_the_default_upstream_timeout() {
    use weir_snapshot::Timeouts;
    let echo = Echo::start("a").await;
    let up = upstream("ns/a:80", &[echo.addr]);
    let port = free_port();
    let own = action(
        "ns/own",
        vec![],
        vec![backend(1, &up)],
        Timeouts {
            request: Some(Duration::from_secs(10)),
            backend_request: None,
        },
    );
    let l = listener(
        "ns/gw",
        None,
        vec![
            (None, prefix("/own", own)),
            (None, prefix("/", forward_to("ns/r", &up))),
        ],
    );
    let cfg = ProxyConfig {
        upstream_timeout: Some(Duration::from_millis(300)),
        ..config()
    };
    let p = TestProxy::start(cfg, snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);
    let slow = |path: &str| {
        request("h", path)
            .header("x-delay-ms", "1000")
            .body(Default::default())
            .unwrap()
    };
    let started = Instant::now();
    let resp = send(addr, slow("/")).await.unwrap();
    assert_eq!(resp.status, http::StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let resp = send(addr, slow("/own")).await.unwrap();
    assert_eq!(
        resp.status,
        http::StatusCode::OK,
        "the route's own timeout applies"
    );
}

/// A client that stops reading a large response: once nothing moves for the idle timeout the
/// connection is closed (its response body and upstream connection with it), instead of
/// being held for as long as the client likes.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let (_echo, p, addr) = routed_proxy(ProxyConfig {
        idle_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;
    const SIZE: usize = 64 << 20;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: h\r\nx-response-bytes: {SIZE}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    // Read nothing while the proxy fills the socket buffers and stalls.
    assert_eventually(
        "the stalled connection is closed as idle",
        Duration::from_secs(10),
        || async {
            let closed = p.metric("weir_idle_connections_closed_total", &[]);
            anyhow::ensure!(closed >= 1.0, "idle closes {closed}");
            Ok(())
        },
    )
    .await;
    // What is left to read ends well before the whole body.
    let mut total = n;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => total += k,
            Err(_) => panic!("the connection stayed open after the idle close"),
        }
    }
    assert!(total < SIZE, "read {total} of {SIZE} bytes");
}

/// A request body that stops arriving gets 408 after the idle timeout (the request is in
/// flight, so the connection's idle rule does not apply to it); one that keeps coming, however
/// slowly, is forwarded whole.
#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let (_echo, _p, addr) = routed_proxy(ProxyConfig {
        idle_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // Ten bytes every 200 ms (under the limit each time, over it in total): forwarded.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"abcdefghij").await.unwrap();
    }
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// Hanging requests beyond an endpoint's connection cap wait in its bounded queue, and
/// beyond the queue get 503 at once: 10 requests to a backend that takes its time open 3
/// upstream connections, not 10. The queued ones are served on the connections that come
/// back, and afterwards the endpoint takes new requests.
#[tokio::test]
async fn upstream_connections_are_capped_and_queued() {
    let (echo, p, addr) = routed_proxy(ProxyConfig {
        upstream_limits: weir_proxy::UpstreamLimits {
            max_connections: 3,
            max_pending: 2,
        },
        ..config()
    })
    .await;
    let slow = || {
        request("h", "/")
            .header("x-delay-ms", "800")
            .body(Default::default())
            .unwrap()
    };
    let started = Instant::now();
    let sends: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { send(addr, slow()).await }))
        .collect();
    let mut statuses = Vec::new();
    for s in sends {
        statuses.push(s.await.unwrap().unwrap().status.as_u16());
    }
    statuses.sort_unstable();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let overflow = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(
        (ok, overflow),
        (5, 5),
        "3 served at once, 2 queued, 5 refused: {statuses:?}"
    );
    assert_eq!(
        echo.connections.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "upstream connections opened"
    );
    // The queued two waited for a connection: two rounds of the backend's delay.
    assert!(started.elapsed() >= Duration::from_millis(1600));
    assert_eq!(
        p.metric(
            "weir_request_errors_total",
            &[("reason", "upstream_overflow")]
        ),
        5.0
    );
    // Afterwards the endpoint serves again, on the pooled connections.
    let resp = get(addr, "h", "/").await.unwrap();
    assert_eq!(resp.status, http::StatusCode::OK);
    assert_eq!(
        echo.connections.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}
