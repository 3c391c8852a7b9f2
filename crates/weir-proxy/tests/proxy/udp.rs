//! UDPRoutes on a UDP socket: datagrams go to a weighted backend of the listener's route and
//! replies come back from the listener's address; one client address keeps its endpoint
//! while its flow is active; new flows split by weight (weight 0 gets none); flows are
//! bounded (`udp_max_flows`, counted in `weir_udp_flows_rejected_total`) and end after
//! `udp_flow_idle_timeout`; a UDP and a TCP socket share a port number.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use weir_snapshot::{Backend, HostIndex, Passthrough, SocketConfig, TlsRouteEntry};

use crate::support::*;

/// A UDP backend answering each datagram with `name:payload`.
async fn udp_backend(name: &'static str) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    addr
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A UDP socket whose one listener has a route with these backends.
fn udp_socket(port: u16, backends: Vec<Backend>) -> SocketConfig {
    let mut s = socket(port, vec![listener("ns/gw", None, vec![])]);
    s.passthrough = Some(Passthrough {
        routes: vec![HostIndex::build([(
            None,
            Arc::new(TlsRouteEntry {
                route: "ns/udp".into(),
                backends: backends.into(),
            }),
        )])]
        .into(),
        terminate: vec![false].into(),
        tcp: false,
        udp: true,
    });
    s
}

fn udp_addr(p: &TestProxy, port: u16) -> SocketAddr {
    p.proxy
        .bound_udp()
        .into_iter()
        .find(|(_, p, _)| *p == port)
        .map(|(_, _, a)| a)
        .unwrap_or_else(|| panic!("no UDP socket for port {port}"))
}

/// A client socket connected to the proxy's UDP socket: it receives only datagrams sent
/// from that address.
async fn client(to: SocketAddr) -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(to).await.unwrap();
    c
}

/// Send `payload`, wait up to `wait` for the reply.
async fn ask(c: &UdpSocket, payload: &str, wait: Duration) -> Option<String> {
    c.send(payload.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(wait, c.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn datagrams_go_through_and_a_flow_keeps_its_endpoint() {
    let a = udp_backend("a").await;
    let b = udp_backend("b").await;
    let port = free_udp_port();
    // One backend with two endpoints (round robin per flow) and a second backend.
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![udp_socket(
                port,
                vec![
                    backend(1, &upstream("ab", &[a, b])),
                    backend(1, &upstream("b", &[b])),
                ],
            )],
        ),
    )
    .await;
    let to = udp_addr(&p, port);
    let mut firsts = BTreeMap::new();
    for i in 0..8 {
        let c = client(to).await;
        let first = ask(&c, "hello", Duration::from_secs(5))
            .await
            .expect("a reply, from the listener's address");
        let (who, echoed) = first.split_once(':').unwrap();
        assert_eq!(echoed, "hello");
        *firsts.entry(who.to_string()).or_insert(0) += 1;
        // Every later datagram of this flow reaches the same endpoint.
        for n in 0..10 {
            let reply = ask(&c, &format!("{i}-{n}"), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(reply, format!("{who}:{i}-{n}"), "flow {i} moved");
        }
    }
    assert_eq!(p.metric("weir_udp_flows", &[]), 8.0);
    // Both endpoints served some flow (a is reachable only through the first backend's
    // round robin, which alternates per flow).
    assert!(firsts.contains_key("a"), "{firsts:?}");
    assert!(firsts.contains_key("b"), "{firsts:?}");
    p.proxy.shutdown().await;
}

#[tokio::test]
async fn new_flows_split_by_weight_and_weight_zero_gets_none() {
    let a = udp_backend("a").await;
    let b = udp_backend("b").await;
    let z = udp_backend("z").await;
    let port = free_udp_port();
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![udp_socket(
                port,
                vec![
                    backend(3, &upstream("a", &[a])),
                    backend(1, &upstream("b", &[b])),
                    backend(0, &upstream("z", &[z])),
                ],
            )],
        ),
    )
    .await;
    let to = udp_addr(&p, port);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    const FLOWS: u32 = 400;
    for _ in 0..FLOWS {
        let c = client(to).await;
        let reply = ask(&c, "w", Duration::from_secs(5)).await.unwrap();
        let who = reply.split_once(':').unwrap().0.to_string();
        *counts.entry(who).or_insert(0) += 1;
    }
    assert!(!counts.contains_key("z"), "{counts:?}");
    let share = f64::from(counts.get("a").copied().unwrap_or(0)) / f64::from(FLOWS);
    // 3:1 → 0.75; 4 standard deviations of a binomial(400, 0.75) ≈ 0.087.
    assert!(
        (share - 0.75).abs() < 0.087,
        "a got {share} of new flows: {counts:?}"
    );
    p.proxy.shutdown().await;
}

#[tokio::test]
async fn flows_are_bounded_counted_and_end_when_idle() {
    let a = udp_backend("a").await;
    let port = free_udp_port();
    let cfg = weir_proxy::ProxyConfig {
        udp_max_flows: 2,
        udp_flow_idle_timeout: Duration::from_millis(400),
        ..config()
    };
    let p = TestProxy::start(
        cfg,
        snapshot(
            1,
            vec![udp_socket(port, vec![backend(1, &upstream("a", &[a]))])],
        ),
    )
    .await;
    let to = udp_addr(&p, port);
    let c1 = client(to).await;
    let c2 = client(to).await;
    let c3 = client(to).await;
    assert!(ask(&c1, "1", Duration::from_secs(5)).await.is_some());
    assert!(ask(&c2, "2", Duration::from_secs(5)).await.is_some());
    // A third flow is over the bound: dropped and counted.
    assert_eq!(ask(&c3, "3", Duration::from_millis(300)).await, None);
    assert_eq!(p.metric("weir_udp_flows", &[]), 2.0);
    assert_eq!(p.metric("weir_udp_flows_rejected_total", &[]), 1.0);
    // Open flows keep working.
    assert_eq!(
        ask(&c1, "again", Duration::from_secs(5)).await.as_deref(),
        Some("a:again")
    );
    // Once idle past the timeout the flows end, and a new one gets through.
    assert_eventually("idle flows end", Duration::from_secs(5), || async {
        let open = p.metric("weir_udp_flows", &[]);
        anyhow::ensure!(open == 0.0, "{open} flows open");
        Ok(())
    })
    .await;
    assert_eq!(
        ask(&c3, "3", Duration::from_secs(5)).await.as_deref(),
        Some("a:3")
    );
    p.proxy.shutdown().await;
}

#[tokio::test]
async fn a_udp_and_a_tcp_socket_share_a_port_number_and_udp_goes_with_its_snapshot() {
    let a = udp_backend("a").await;
    let http = Echo::start("http").await;
    // A port free for both protocols.
    let port = loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                udp_socket(port, vec![backend(1, &upstream("a", &[a]))]),
                routed(port, &upstream("http", &[http.addr])),
            ],
        ),
    )
    .await;
    let to = udp_addr(&p, port);
    assert_eq!(p.addr(port).port(), to.port());
    let c = client(to).await;
    assert_eq!(
        ask(&c, "x", Duration::from_secs(5)).await.as_deref(),
        Some("a:x")
    );
    let r = get(p.addr(port), "any.example", "/").await.unwrap();
    assert_eq!(r.status, 200);
    // Without its UDP socket in the snapshot, the UDP socket closes; TCP stays.
    p.swap(snapshot(
        2,
        vec![routed(port, &upstream("http", &[http.addr]))],
    ));
    p.proxy.sync_listeners().await;
    assert!(p.proxy.bound_udp().is_empty());
    assert_eq!(p.metric("weir_udp_flows", &[]), 0.0);
    assert_eq!(
        get(p.addr(port), "any.example", "/").await.unwrap().status,
        200
    );
    p.proxy.shutdown().await;
}
