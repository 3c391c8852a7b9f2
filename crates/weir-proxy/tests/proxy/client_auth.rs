//! Frontend client-certificate validation: the listener the SNI picks decides whether the
//! handshake asks for a client certificate and how it is checked (AllowValidOnly rejects a
//! missing or foreign certificate, AllowInsecureFallback lets both through), and a
//! connection cannot be reused for a Host whose listener validates differently.

use std::sync::Arc;

use http::StatusCode;
use http_body_util::Full;
use rustls::sign::CertifiedKey;
use weir_snapshot::{ClientAuth, ClientAuthMode};

use crate::support::*;

fn client_auth(mode: ClientAuthMode, ca: &Ca) -> Option<Arc<ClientAuth>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Some(Arc::new(
        ClientAuth::new(mode, vec![ca.der()], provider).unwrap(),
    ))
}

/// One GET over a fresh TLS connection with SNI `sni` and Host `host`.
async fn get_as(
    addr: std::net::SocketAddr,
    server_ca: &Ca,
    sni: &str,
    host: &str,
    client: Option<&CertifiedKey>,
) -> anyhow::Result<Resp> {
    let tls = tls_connect_as(addr, sni, server_ca, client).await?;
    let mut h1 = H1::over(tls).await?;
    h1.send(request(host, "/").body(Full::default()).unwrap())
        .await
}

#[tokio::test]
async fn listeners_validate_client_certificates_by_sni() {
    let echo = Echo::start("a").await;
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let other_ca = Ca::new();
    let good = client_ca.leaf(&["client.example"]);
    let foreign = other_ca.leaf(&["client.example"]);
    let server_cert =
        server_ca.leaf(&["strict.example", "lax.example", "open.example", "127.0.0.1"]);
    let port = free_port();
    let up = upstream("ns/a:80", &[echo.addr]);
    let route = || vec![(None, prefix("/", forward_to("ns/r", &up)))];
    let mut strict = listener("ns/gw", Some("strict.example"), route());
    strict.client_auth = client_auth(ClientAuthMode::AllowValidOnly, &client_ca);
    let mut lax = listener("ns/gw", Some("lax.example"), route());
    lax.client_auth = client_auth(ClientAuthMode::AllowInsecureFallback, &client_ca);
    let open = listener("ns/gw", Some("open.example"), route());
    let s = tls_socket(
        port,
        true,
        vec![strict, lax, open],
        vec![
            ("strict.example", server_cert.clone()),
            ("lax.example", server_cert.clone()),
            ("open.example", server_cert.clone()),
        ],
        Some(server_cert.clone()),
    );
    let p = TestProxy::start(config(), snapshot(1, vec![s])).await;
    let addr = p.addr(port);
    let get = |sni: &'static str, host: &'static str, client: Option<Arc<CertifiedKey>>| {
        let server_ca = &server_ca;
        async move { get_as(addr, server_ca, sni, host, client.as_deref()).await }
    };

    // AllowValidOnly: a certificate from the listener's CA passes; none, or one from another
    // CA, ends the connection before any answer.
    let r = get("strict.example", "strict.example", Some(good.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(get("strict.example", "strict.example", None).await.is_err());
    assert!(
        get("strict.example", "strict.example", Some(foreign.clone()))
            .await
            .is_err()
    );

    // AllowInsecureFallback: all three get through.
    for client in [Some(good.clone()), Some(foreign.clone()), None] {
        let r = get("lax.example", "lax.example", client).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }

    // No validation on this listener.
    let r = get("open.example", "open.example", None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // A connection that passed a weaker validation (or none) cannot serve a Host whose
    // listener validates strictly: 421, not the strict listener's routes.
    let r = get("lax.example", "strict.example", Some(foreign.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    let r = get("open.example", "strict.example", None).await.unwrap();
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);

    // Without SNI (an IP as server name) the handshake gets the strictest validation on the
    // socket, and the connection serves only Hosts validated the same way.
    assert!(get("127.0.0.1", "strict.example", None).await.is_err());
    let r = get("127.0.0.1", "strict.example", Some(good.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let r = get("127.0.0.1", "open.example", Some(good.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
}
