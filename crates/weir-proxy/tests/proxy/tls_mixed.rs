//! TLSRoutes on a socket mixing Passthrough and Terminate listeners (TLSRouteModeMixed): the
//! SNI picks the listener; a Passthrough listener's connection reaches the backend still
//! encrypted (the backend's certificate is what the client sees), a Terminate listener's
//! connection is terminated with the listener's certificate and reaches the backend plain.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_snapshot::{HostIndex, HostPattern, Passthrough, TlsRouteEntry};

use crate::support::*;

#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Answer each connection's first 4 bytes with `tag` and those bytes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, tag: &str) {
    let mut buf = [0u8; 4];
    if s.read_exact(&mut buf).await.is_ok() {
        let mut out = tag.as_bytes().to_vec();
        out.extend_from_slice(&buf);
        let _ = s.write_all(&out).await;
        let _ = s.shutdown().await;
    }
}

/// A backend: plain TCP, or TLS with `cert` when given.
async fn tag_backend(tag: &'static str, cert: Option<Arc<CertifiedKey>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = cert.map(|c| {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(One(c)));
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            answer(s, tag).await;
                        }
                    }
                    None => answer(tcp, tag).await,
                }
            });
        }
    });
    addr
}

fn tls_routes(route: &str, host: &str, addr: SocketAddr) -> HostIndex<Arc<TlsRouteEntry>> {
    let entry = Arc::new(TlsRouteEntry {
        route: route.into(),
        backends: vec![backend(1, &upstream(route, &[addr]))].into(),
    });
    HostIndex::build([(HostPattern::parse(host), entry)])
}

async fn ping<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> String {
    s.write_all(b"ping").await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[tokio::test]
async fn sni_picks_passthrough_or_terminate_on_one_socket() {
    let ca = Ca::new();
    let listener_cert = ca.leaf(&["tls.example.com"]);
    let backend_cert = ca.leaf(&["abc.example.com"]);
    let plain = tag_backend("plain:", None).await;
    let encrypted = tag_backend("tls:", Some(backend_cert.clone())).await;

    let port = free_port();
    let mut s = tls_socket(
        port,
        false,
        vec![
            listener("ns/gw", Some("tls.example.com"), vec![]),
            listener("ns/gw", Some("abc.example.com"), vec![]),
        ],
        vec![("tls.example.com", listener_cert.clone())],
        Some(listener_cert.clone()),
    );
    s.passthrough = Some(Passthrough {
        routes: vec![
            tls_routes("ns/terminate", "tls.example.com", plain),
            tls_routes("ns/passthrough", "abc.example.com", encrypted),
        ]
        .into(),
        terminate: vec![true, false].into(),
        tcp: false,
        udp: false,
    });
    let p = TestProxy::start(config(), snapshot(1, vec![s])).await;
    let addr = p.addr(port);

    // Terminate: the listener's certificate; the backend sees the plain bytes.
    let tls = tls_connect(addr, "tls.example.com", &ca, &[])
        .await
        .unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&listener_cert));
    assert_eq!(ping(tls).await, "plain:ping");

    // Passthrough: the backend's certificate; the backend terminates.
    let tls = tls_connect(addr, "abc.example.com", &ca, &[])
        .await
        .unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&backend_cert));
    // While open, it counts as a TLS connection, not as HTTPS (Weir serves no HTTP on it).
    // (The terminated one above may still be closing on the proxy's side.)
    let active = |protocol| p.metric("weir_active_connections", &[("protocol", protocol)]);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while active("tls") != 1.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(active("tls"), 1.0);
    assert_eq!(active("https"), 0.0);
    assert_eq!(ping(tls).await, "tls:ping");

    // A name no listener serves: closed before any handshake.
    assert!(tls_connect(addr, "other.example.com", &ca, &[])
        .await
        .is_err());
}
