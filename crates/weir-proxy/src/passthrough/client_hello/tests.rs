use std::sync::Arc;

use super::*;

/// The first flight a real rustls client sends for `server_name` (`None`: an IP address, so
/// no SNI).
fn real_client_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

#[test]
fn reads_the_sni_of_a_real_client_hello() {
    let hello = real_client_hello("ABC.example.com");
    assert_eq!(
        parse(&hello),
        Hello::Complete(Some("abc.example.com".into()))
    );
}

#[test]
fn an_ip_address_sends_no_sni() {
    let hello = real_client_hello("127.0.0.1");
    assert_eq!(parse(&hello), Hello::Complete(None));
}

#[test]
fn every_prefix_is_incomplete() {
    let hello = real_client_hello("abc.example.com");
    for n in 0..hello.len() {
        assert_eq!(parse(&hello[..n]), Hello::Incomplete, "prefix {n}");
    }
}

#[test]
fn a_hello_split_over_two_records_is_joined() {
    let hello = real_client_hello("abc.example.com");
    let fragment = &hello[5..];
    let (a, b) = fragment.split_at(40);
    let mut split = Vec::new();
    for part in [a, b] {
        split.extend_from_slice(&[22, 3, 1]);
        split.extend_from_slice(&u16::try_from(part.len()).unwrap_or(0).to_be_bytes());
        split.extend_from_slice(part);
    }
    assert_eq!(
        parse(&split),
        Hello::Complete(Some("abc.example.com".into()))
    );
}

#[test]
fn plain_text_and_garbage_are_invalid() {
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\n\r\n"),
        Hello::Invalid(_)
    ));
    // A handshake record holding a ServerHello (type 2).
    assert!(matches!(
        parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
        Hello::Invalid(_)
    ));
    // A ClientHello whose body is cut short inside its declared length.
    assert!(matches!(
        parse(&[22, 3, 3, 0, 6, 1, 0, 0, 2, 3, 3]),
        Hello::Invalid(_)
    ));
}
