//! The HTTPS listener: server certificate from PEM env vars, client certificates checked
//! against TLS_CLIENT_CACERTS, and the `tls` object of the echo JSON.

// Test-only helpers (certificate generation, clients): failures should panic the test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{get, http1_over, EchoProcess};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_cert_der: CertificateDer<'static>,
    client_key_der: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client_cert.pem(),
        client_cert_der: client_cert.der().clone(),
        client_key_der: client_key.serialize_der(),
    }
}

fn client_config(pki: &Pki, with_client_cert: bool, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = if with_client_cert {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.client_key_der.clone()));
        builder
            .with_client_auth_cert(vec![pki.client_cert_der.clone()], key)
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn https_get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<common::Answer, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    http1_over(tls, get(path, &[("host", "localhost")]))
        .await
        .map_err(|e| e.to_string())
}

fn normalize(pem: &str) -> String {
    pem.split_whitespace().collect()
}

#[tokio::test]
async fn https_with_client_certificates() {
    let pki = pki();
    let echo = EchoProcess::start(
        &["--no-h2c", "--pod-name", "tls-pod-1"],
        &[
            ("TLS_SERVER_CERT", pki.server_cert_pem.as_str()),
            ("TLS_SERVER_PRIVKEY", pki.server_key_pem.as_str()),
            ("TLS_CLIENT_CACERTS", pki.ca_pem.as_str()),
        ],
        2,
    );
    let addr = echo.https.expect("https listener");

    let config = client_config(&pki, true, &[b"http/1.1"]);
    let answer = https_get(addr, config, "/tls?x=1").await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v = answer.json();
    assert_eq!(v["path"], "/tls?x=1");
    assert_eq!(v["pod"], "tls-pod-1");
    assert_eq!(v["httpPort"], addr.port().to_string());
    let tls = &v["tls"];
    assert_eq!(tls["version"], "TLSv1.3");
    assert_eq!(tls["serverName"], "localhost");
    assert_eq!(tls["negotiatedProtocol"], "http/1.1");
    let suite = tls["cipherSuite"].as_str().unwrap();
    assert!(
        suite.starts_with("TLS_") && !suite.starts_with("TLS13_"),
        "{suite}"
    );
    let peers = tls["peerCertificates"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    let peer = peers[0].as_str().unwrap();
    assert!(peer.starts_with("-----BEGIN CERTIFICATE-----\n"), "{peer}");
    assert_eq!(normalize(peer), normalize(&pki.client_cert_pem));

    // Without a client certificate the exchange must fail.
    let config = client_config(&pki, false, &[b"http/1.1"]);
    let result = https_get(addr, config, "/tls").await;
    assert!(result.is_err(), "a client without a certificate was served");
}

#[tokio::test]
async fn https_without_client_cas() {
    let pki = pki();
    let echo = EchoProcess::start(
        &["--no-h2c"],
        &[
            ("TLS_SERVER_CERT", pki.server_cert_pem.as_str()),
            ("TLS_SERVER_PRIVKEY", pki.server_key_pem.as_str()),
        ],
        2,
    );
    let addr = echo.https.expect("https listener");
    let config = client_config(&pki, false, &[]);
    let answer = https_get(addr, config, "/plain").await.unwrap();
    let v = answer.json();
    assert_eq!(v["tls"]["serverName"], "localhost");
    assert!(v["tls"].get("peerCertificates").is_none());
    assert!(v["tls"].get("negotiatedProtocol").is_none());
}
