//! TLS termination: SNI picks the certificate, ALPN picks the protocol, certificates rotate
//! with a snapshot swap.

use http::StatusCode;
use http_body_util::Full;

use crate::support::*;

#[tokio::test]
async fn sni_chooses_certificate_and_alpn_h2_works() {
    let a = Echo::start("a").await;
    let ca = Ca::new();
    let cert_a = ca.leaf(&["a.example.com"]);
    let cert_b = ca.leaf(&["b.example.com", "*.b.example.com"]);
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![(
            None,
            prefix("/", forward_to("ns/r", &upstream("ns/a:80", &[a.addr]))),
        )],
    );
    let s = tls_socket(
        port,
        true,
        vec![l],
        vec![
            ("a.example.com", cert_a.clone()),
            ("*.b.example.com", cert_b.clone()),
            ("b.example.com", cert_b.clone()),
        ],
        None,
    );
    let p = TestProxy::start(config(), snapshot(1, vec![s])).await;
    let addr = p.addr(port);

    let tls = tls_connect(addr, "a.example.com", &ca, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&cert_a));
    let mut h1 = H1::over(tls).await.unwrap();
    let r = h1
        .send(request("a.example.com", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));

    let tls = tls_connect(addr, "x.b.example.com", &ca, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&cert_b));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = H2::over(tls).await.unwrap();
    let r = h2
        .send(
            http::Request::builder()
                .uri("https://x.b.example.com/")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.json()["host"], "x.b.example.com");

    // No certificate for the name and no default: the handshake fails.
    assert!(tls_connect(addr, "c.example.com", &ca, &[]).await.is_err());
}

#[tokio::test]
async fn certificates_rotate_with_a_swap() {
    let a = Echo::start("a").await;
    let ca = Ca::new();
    let old = ca.leaf(&["a.example.com"]);
    let new = ca.leaf(&["a.example.com"]);
    let port = free_port();
    let build = |generation, cert: &std::sync::Arc<rustls::sign::CertifiedKey>| {
        let l = listener(
            "ns/gw",
            None,
            vec![(
                None,
                prefix("/", forward_to("ns/r", &upstream("ns/a:80", &[a.addr]))),
            )],
        );
        snapshot(
            generation,
            vec![tls_socket(
                port,
                true,
                vec![l],
                vec![("a.example.com", cert.clone())],
                None,
            )],
        )
    };
    let p = TestProxy::start(config(), build(1, &old)).await;
    let addr = p.addr(port);
    let tls = tls_connect(addr, "a.example.com", &ca, &[]).await.unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&old));
    let mut kept = H1::over(tls).await.unwrap();

    p.swap(build(2, &new));
    let tls = tls_connect(addr, "a.example.com", &ca, &[]).await.unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&new));
    // The connection made before the rotation keeps working.
    let r = kept
        .send(request("a.example.com", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
}
