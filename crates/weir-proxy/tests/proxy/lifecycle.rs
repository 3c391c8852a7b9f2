//! Snapshot swaps, socket sync and shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::Full;
use weir_proxy::{BindError, ProxyConfig};
use weir_snapshot::{Filter, HeaderModifier, Timeouts, Upstream};

use crate::support::*;

fn slow(host: &str) -> http::Request<Full<bytes::Bytes>> {
    request(host, "/")
        .header("x-delay-ms", "600")
        .body(Full::default())
        .unwrap()
}

/// Wait until the echo backend has received `n` requests.
async fn wait_received(echo: &Echo, n: usize) {
    assert_eventually(
        "backend to receive the request",
        Duration::from_secs(5),
        || async {
            let got = echo.received.load(Ordering::SeqCst);
            anyhow::ensure!(got >= n, "received {got}");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn swap_changes_routing_on_a_kept_alive_connection() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(1, vec![routed(port, &upstream("ns/a:80", &[a.addr]))]),
    )
    .await;
    let mut conn = H1::connect(p.addr(port)).await.unwrap();
    let r = conn
        .send(request("h", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.backend(), "a");

    p.swap(snapshot(
        2,
        vec![routed(port, &upstream("ns/b:80", &[b.addr]))],
    ));
    assert!(p.proxy.sync_listeners().await.is_empty());
    let r = conn
        .send(request("h", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.backend(), "b", "same connection, new snapshot");
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_snapshot() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let port = free_port();
    let tagged = |generation: &'static str, up: &Arc<Upstream>| {
        let tag = Filter::ResponseHeader(HeaderModifier {
            set: Arc::new([(
                HeaderName::from_static("x-generation"),
                HeaderValue::from_static(generation),
            )]),
            ..HeaderModifier::default()
        });
        let act = action("ns/r", vec![tag], vec![backend(1, up)], Timeouts::default());
        socket(
            port,
            vec![listener("ns/gw", None, vec![(None, prefix("/", act))])],
        )
    };
    let p = TestProxy::start(
        config(),
        snapshot(1, vec![tagged("1", &upstream("ns/a:80", &[a.addr]))]),
    )
    .await;
    let addr = p.addr(port);
    let in_flight = tokio::spawn(send(addr, slow("h")));
    wait_received(&a, 1).await;
    p.swap(snapshot(
        2,
        vec![tagged("2", &upstream("ns/b:80", &[b.addr]))],
    ));

    let r = get(addr, "h", "/").await.unwrap();
    assert_eq!(
        (
            r.backend().as_str(),
            r.headers["x-generation"].to_str().unwrap()
        ),
        ("b", "2")
    );
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (
            r.backend().as_str(),
            r.headers["x-generation"].to_str().unwrap()
        ),
        ("a", "1"),
        "response filters come from the snapshot the request started with"
    );
}

#[tokio::test]
async fn sync_listeners_opens_new_sockets_and_drains_removed_ones() {
    let a = Echo::start("a").await;
    let up = upstream("ns/a:80", &[a.addr]);
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let p = TestProxy::start(
        config(),
        snapshot(1, vec![routed(p1, &up), routed(p2, &up)]),
    )
    .await;
    let (addr1, addr2) = (p.addr(p1), p.addr(p2));
    assert_eq!(p.proxy.bound().len(), 2);
    let mut kept = H1::connect(addr2).await.unwrap();
    assert_eq!(
        kept.send(request("h", "/").body(Full::default()).unwrap())
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    // A slow request in flight on the socket about to be removed.
    let in_flight = tokio::spawn(send(addr1, slow("h")));
    wait_received(&a, 2).await;

    p.swap(snapshot(2, vec![routed(p2, &up), routed(p3, &up)]));
    let started = Instant::now();
    assert!(p.proxy.sync_listeners().await.is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "removal must not wait for the drain"
    );
    let bound: Vec<u16> = p.proxy.bound().iter().map(|(_, port, _)| *port).collect();
    let mut want = vec![p2, p3];
    want.sort();
    assert_eq!(bound, want);
    assert_eq!(p.addr(p2), addr2, "unchanged socket untouched");

    assert!(
        tokio::net::TcpStream::connect(addr1).await.is_err(),
        "removed socket refuses connections"
    );
    assert_eq!(
        get(p.addr(p3), "h", "/").await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        kept.send(request("h", "/").body(Full::default()).unwrap())
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    assert_eq!(
        in_flight.await.unwrap().unwrap().status,
        StatusCode::OK,
        "in-flight request drained"
    );

    // Idempotent.
    assert!(p.proxy.sync_listeners().await.is_empty());
    assert_eq!(p.proxy.bound().len(), 2);
}

#[tokio::test]
async fn bind_errors_are_per_socket() {
    let a = Echo::start("a").await;
    let up = upstream("ns/a:80", &[a.addr]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let good = free_port();
    let handle = Arc::new(arc_swap::ArcSwap::new(snapshot(
        1,
        vec![routed(taken_port, &up), routed(good, &up)],
    )));
    let registry = prometheus::Registry::new();
    let proxy = weir_proxy::Proxy::new(config(), handle.clone(), &registry).unwrap();
    let errors = proxy.sync_listeners().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(&errors[0], BindError::Io { port, .. } if *port == taken_port));
    assert_eq!(errors[0].socket(), (None, taken_port));
    let bound = proxy.bound();
    assert_eq!(bound.len(), 1);
    assert_eq!(
        get(bound[0].2, "h", "/").await.unwrap().status,
        StatusCode::OK
    );
    // Retried on the next sync: succeeds once the port is free.
    drop(taken);
    assert!(proxy.sync_listeners().await.is_empty());
    assert_eq!(proxy.bound().len(), 2);
    proxy.shutdown().await;

    // Port + offset above 65535.
    let cfg = ProxyConfig {
        port_offset: 60000,
        ..config()
    };
    let handle = Arc::new(arc_swap::ArcSwap::new(snapshot(1, vec![routed(8000, &up)])));
    let registry = prometheus::Registry::new();
    let proxy = weir_proxy::Proxy::new(cfg, handle, &registry).unwrap();
    let errors = proxy.sync_listeners().await;
    assert!(
        matches!(
            errors.as_slice(),
            [BindError::PortOverflow { port: 8000, .. }]
        ),
        "{errors:?}"
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(text.contains("weir_listener_bind_errors_total 1"), "{text}");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let a = Echo::start("a").await;
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(1, vec![routed(port, &upstream("ns/a:80", &[a.addr]))]),
    )
    .await;
    let addr = p.addr(port);
    let in_flight = tokio::spawn(send(addr, slow("h")));
    wait_received(&a, 1).await;
    p.proxy.shutdown().await;
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(p.proxy.bound().is_empty());
    // After shutdown, sync opens nothing.
    assert!(p.proxy.sync_listeners().await.is_empty());
    assert!(p.proxy.bound().is_empty());
    assert_eq!(p.metric("weir_active_connections", &[]), 0.0);
}

#[tokio::test]
async fn shutdown_gives_up_after_the_drain_timeout() {
    let a = Echo::start("a").await;
    let port = free_port();
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_millis(200),
        ..config()
    };
    let p = TestProxy::start(
        cfg,
        snapshot(1, vec![routed(port, &upstream("ns/a:80", &[a.addr]))]),
    )
    .await;
    let req = request("h", "/")
        .header("x-delay-ms", "10000")
        .body(Full::default())
        .unwrap();
    let in_flight = tokio::spawn(send(p.addr(port), req));
    wait_received(&a, 1).await;
    let started = Instant::now();
    p.proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the slow request was cut off"
    );
}
