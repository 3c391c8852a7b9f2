//! TCPRoutes on a socket of TCP listeners: connections are spliced as they come (nothing is
//! read first, so the backend speaks first), to a weighted backend of the listener's route,
//! falling over to the next endpoint on connect errors; a socket without a route or with an
//! unusable backend closes connections; a swapped snapshot routes new connections while open
//! ones keep their backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use weir_snapshot::{Backend, HostIndex, Passthrough, SocketConfig, TlsRouteEntry};

use crate::support::*;

/// The conformance echo server's first line (weir-echo `tcp::WELCOME`).
const WELCOME: &str = "Gateway API Test TCP Server\n";

/// A line-protocol backend in the manner of the conformance TCP echo server: the welcome
/// line on connect, then `PING` → `PONG` and `WHO` → its name.
async fn line_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                if write.write_all(WELCOME.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match line.as_str() {
                        "PING" => "PONG".to_string(),
                        "WHO" => name.to_string(),
                        _ => continue,
                    };
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TCP socket whose one listener has `route` (if any) with these backends.
fn tcp_socket(port: u16, backends: Option<Vec<Backend>>) -> SocketConfig {
    let mut s = socket(port, vec![listener("ns/gw", None, vec![])]);
    let routes = match backends {
        Some(backends) => HostIndex::build([(
            None,
            Arc::new(TlsRouteEntry {
                route: "ns/tcp".into(),
                backends: backends.into(),
            }),
        )]),
        None => HostIndex::default(),
    };
    s.passthrough = Some(Passthrough {
        routes: vec![routes].into(),
        terminate: vec![false].into(),
        tcp: true,
        udp: false,
    });
    s
}

/// A client speaking the line protocol.
struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    /// Connect and read the welcome line (the backend speaks first: the proxy must not wait
    /// for the client).
    async fn connect(addr: SocketAddr) -> Result<Client, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (read, write) = tcp.into_split();
        let mut c = Client {
            lines: BufReader::new(read).lines(),
            write,
        };
        let welcome = c.line().await?;
        if format!("{welcome}\n") != WELCOME {
            return Err(format!("welcome {welcome:?}"));
        }
        Ok(c)
    }

    async fn line(&mut self) -> Result<String, String> {
        match tokio::time::timeout(Duration::from_secs(5), self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err("closed".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn ask(&mut self, cmd: &str) -> Result<String, String> {
        self.write
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.line().await
    }
}

#[tokio::test]
async fn connections_are_spliced_to_the_routes_backend() {
    let a = line_backend("a").await;
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![tcp_socket(
                port,
                Some(vec![backend(1, &upstream("a", &[a]))]),
            )],
        ),
    )
    .await;
    let mut c = Client::connect(p.addr(port)).await.unwrap();
    assert_eq!(c.ask("PING").await.unwrap(), "PONG");
    assert_eq!(c.ask("WHO").await.unwrap(), "a");
    // Several exchanges on one connection, and several connections.
    assert_eq!(c.ask("PING").await.unwrap(), "PONG");
    let mut c2 = Client::connect(p.addr(port)).await.unwrap();
    assert_eq!(c2.ask("WHO").await.unwrap(), "a");
    // Both count as open TCP connections, not as HTTP ones.
    let active = |protocol| p.metric("weir_active_connections", &[("protocol", protocol)]);
    assert_eq!(active("tcp"), 2.0);
    assert_eq!(active("http"), 0.0);
    drop(c2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while active("tcp") != 1.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(active("tcp"), 1.0, "a closed connection leaves the gauge");
}

#[tokio::test]
async fn backends_are_picked_by_weight_and_fall_over_on_connect_errors() {
    let a = line_backend("a").await;
    let b = line_backend("b").await;
    // A port nothing listens on, listed first: connects fail over to the next endpoint.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![tcp_socket(
                port,
                Some(vec![
                    backend(0, &upstream("a", &[a])),
                    backend(1, &upstream("b", &[dead, b])),
                ]),
            )],
        ),
    )
    .await;
    for _ in 0..10 {
        let mut c = Client::connect(p.addr(port)).await.unwrap();
        assert_eq!(c.ask("WHO").await.unwrap(), "b", "weight 0 never picked");
    }

    // Both weighted: both are reached.
    p.swap(snapshot(
        2,
        vec![tcp_socket(
            port,
            Some(vec![
                backend(1, &upstream("a", &[a])),
                backend(1, &upstream("b", &[b])),
            ]),
        )],
    ));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let mut c = Client::connect(p.addr(port)).await.unwrap();
        seen.insert(c.ask("WHO").await.unwrap());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[tokio::test]
async fn no_route_or_an_unusable_backend_closes_the_connection() {
    let port = free_port();
    let p = TestProxy::start(config(), snapshot(1, vec![tcp_socket(port, None)])).await;
    assert_eq!(
        Client::connect(p.addr(port)).await.err().as_deref(),
        Some("closed")
    );
    p.swap(snapshot(
        2,
        vec![tcp_socket(port, Some(vec![invalid_backend(1)]))],
    ));
    assert_eq!(
        Client::connect(p.addr(port)).await.err().as_deref(),
        Some("closed")
    );
}

#[tokio::test]
async fn a_new_snapshot_routes_new_connections_and_open_ones_keep_their_backend() {
    let a = line_backend("a").await;
    let b = line_backend("b").await;
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![tcp_socket(
                port,
                Some(vec![backend(1, &upstream("a", &[a]))]),
            )],
        ),
    )
    .await;
    let mut open = Client::connect(p.addr(port)).await.unwrap();
    assert_eq!(open.ask("WHO").await.unwrap(), "a");
    p.swap(snapshot(
        2,
        vec![tcp_socket(
            port,
            Some(vec![backend(1, &upstream("b", &[b]))]),
        )],
    ));
    let mut fresh = Client::connect(p.addr(port)).await.unwrap();
    assert_eq!(fresh.ask("WHO").await.unwrap(), "b");
    assert_eq!(open.ask("WHO").await.unwrap(), "a");
}
