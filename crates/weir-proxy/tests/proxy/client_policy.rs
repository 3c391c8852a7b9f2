//! ClientTrafficPolicy on real sockets: each field of a socket's `ClientPolicy` changes what
//! the proxy does on that socket, and a socket without one keeps the process defaults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_snapshot::{
    Cidr, ClientIpDetection, ClientPolicy, Http2Settings, ProxyProtocol, RequestIdMode,
    SocketConfig, TlsSettings, TlsVersion,
};

use crate::support::*;

/// A catch-all socket on `port` forwarding to `echo`, under `policy`.
fn with_policy(port: u16, echo: &Echo, policy: ClientPolicy) -> SocketConfig {
    let mut s = routed(port, &upstream("ns/echo:80", &[echo.addr]));
    s.client_policy = Some(Arc::new(policy));
    s
}

fn policy(id: u64) -> ClientPolicy {
    ClientPolicy {
        name: "ns/ctp".into(),
        id,
        ..ClientPolicy::default()
    }
}

/// Read until the server closes (or `within`); returns what came back, or `None` when the
/// connection was still open at the end.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, tcp.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

fn v2_header(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    let mut body = src.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    // A TLV (PP2_TYPE_AUTHORITY) the proxy skips.
    body.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'.', b'b']);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&body);
    h
}

// ---------------------------------------------------------------------------------------
// clientIPDetection

#[tokio::test]
async fn forwarded_for_is_trusted_only_from_trusted_hops() {
    let echo = Echo::start("e").await;
    let (untrusted, trusted, hops, plain) = (free_port(), free_port(), free_port(), free_port());
    let cidrs = |c: &str| ClientPolicy {
        client_ip: Some(ClientIpDetection::TrustedCidrs(vec![
            Cidr::parse(c).unwrap()
        ])),
        ..policy(1)
    };
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                // The test client (127.0.0.1) is not in 10.0.0.0/8: its X-Forwarded-For is a
                // spoof.
                with_policy(untrusted, &echo, cidrs("10.0.0.0/8")),
                with_policy(trusted, &echo, cidrs("127.0.0.0/8")),
                with_policy(
                    hops,
                    &echo,
                    ClientPolicy {
                        client_ip: Some(ClientIpDetection::NumTrustedHops(2)),
                        ..policy(2)
                    },
                ),
                routed(plain, &upstream("ns/echo:80", &[echo.addr])),
            ],
        ),
    )
    .await;
    let send_xff = |port: u16, xff: &'static str| {
        let addr = p.addr(port);
        async move {
            send(
                addr,
                request("a.example", "/")
                    .header("x-forwarded-for", xff)
                    .header("x-envoy-external-address", "6.6.6.6")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap()
        }
    };

    let r = send_xff(untrusted, "6.6.6.6, 203.0.113.5").await;
    assert_eq!(
        r.seen_header("x-envoy-external-address").as_deref(),
        Some("127.0.0.1"),
        "an untrusted peer's X-Forwarded-For is ignored"
    );
    // Weir appends the connection's address, as Envoy does.
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 203.0.113.5, 127.0.0.1")
    );

    let r = send_xff(trusted, "6.6.6.6, 203.0.113.5, 127.0.0.9").await;
    assert_eq!(
        r.seen_header("x-envoy-external-address").as_deref(),
        Some("203.0.113.5"),
        "trusted hops are skipped from the right"
    );

    let r = send_xff(hops, "6.6.6.6, 198.51.100.7, 10.0.0.1").await;
    assert_eq!(
        r.seen_header("x-envoy-external-address").as_deref(),
        Some("198.51.100.7"),
        "numTrustedHops 2: the second address from the right"
    );
    let r = send_xff(hops, "10.0.0.1").await;
    assert_eq!(
        r.seen_header("x-envoy-external-address").as_deref(),
        Some("127.0.0.1"),
        "fewer addresses than trusted hops: the peer"
    );

    // Without a policy nothing is detected and the client's header passes as it came.
    let r = send_xff(plain, "6.6.6.6").await;
    assert_eq!(
        r.seen_header("x-envoy-external-address").as_deref(),
        Some("6.6.6.6")
    );
}

// ---------------------------------------------------------------------------------------
// proxyProtocol

#[tokio::test]
async fn proxy_protocol_header_sets_the_client_address() {
    let echo = Echo::start("e").await;
    let port = free_port();
    let pp = ClientPolicy {
        proxy_protocol: Some(ProxyProtocol { optional: false }),
        ..policy(3)
    };
    let p = TestProxy::start(config(), snapshot(1, vec![with_policy(port, &echo, pp)])).await;
    let addr = p.addr(port);

    // v2 (with a TLV), written in its own segment before the request.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&v2_header([192, 0, 2, 7], 40000))
        .await
        .unwrap();
    let mut h1 = H1::over(tcp).await.unwrap();
    let r = h1
        .send(request("a.example", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("192.0.2.7")
    );
    // Later requests on the connection keep it.
    let r = h1
        .send(request("a.example", "/2").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("192.0.2.7")
    );

    // v1, in the same segment as the request.
    let out = raw(
        addr,
        b"PROXY TCP6 2001:db8::5 2001:db8::1 5555 80\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains(r#""x-forwarded-for":["2001:db8::5"]"#),
        "{out}"
    );

    // v2 LOCAL (a balancer's health check): the connection's own address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    local.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let out = raw(addr, &local).await.unwrap();
    assert!(out.contains(r#""x-forwarded-for":["127.0.0.1"]"#), "{out}");
    assert_eq!(p.metric("weir_proxy_protocol_errors_total", &[]), 0.0);
}

#[tokio::test]
async fn malformed_or_missing_proxy_header_closes_and_counts() {
    let echo = Echo::start("e").await;
    let (required, optional) = (free_port(), free_port());
    let pp = |optional| ClientPolicy {
        proxy_protocol: Some(ProxyProtocol { optional }),
        ..policy(4)
    };
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                with_policy(required, &echo, pp(false)),
                with_policy(optional, &echo, pp(true)),
            ],
        ),
    )
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    for port in [required, optional] {
        let out = raw(
            p.addr(port),
            &[&b"PROXY TCP4 192.0.2.1 nonsense 1 2\r\n"[..], request].concat(),
        )
        .await
        .unwrap();
        assert_eq!(out, "", "a malformed header closes the connection");
    }
    assert_eq!(
        p.metric(
            "weir_proxy_protocol_errors_total",
            &[("reason", "malformed")]
        ),
        2.0
    );

    let out = raw(p.addr(required), request).await.unwrap();
    assert_eq!(
        out, "",
        "a required header that is missing closes the connection"
    );
    assert_eq!(
        p.metric("weir_proxy_protocol_errors_total", &[("reason", "missing")]),
        1.0
    );

    // Optional: a connection without the header is served as it is.
    let out = raw(p.addr(optional), request).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""x-forwarded-for":["127.0.0.1"]"#), "{out}");
}

#[tokio::test]
async fn proxy_protocol_header_comes_before_the_tls_handshake() {
    let echo = Echo::start("e").await;
    let ca = Ca::new();
    let cert = ca.leaf(&["a.example"]);
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![(
            None,
            prefix("/", forward_to("ns/r", &upstream("ns/e:80", &[echo.addr]))),
        )],
    );
    let mut s = tls_socket(port, true, vec![l], vec![("a.example", cert)], None);
    s.client_policy = Some(Arc::new(ClientPolicy {
        proxy_protocol: Some(ProxyProtocol { optional: false }),
        ..policy(5)
    }));
    let p = TestProxy::start(config(), snapshot(1, vec![s])).await;

    let mut tcp = TcpStream::connect(p.addr(port)).await.unwrap();
    tcp.write_all(&v2_header([198, 51, 100, 20], 1234))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    let name = rustls::pki_types::ServerName::try_from("a.example").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut h1 = H1::over(tls).await.unwrap();
    let r = h1
        .send(request("a.example", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("198.51.100.20")
    );
}

// ---------------------------------------------------------------------------------------
// connection.connectionLimit

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_the_limit_survives_a_swap() {
    let echo = Echo::start("e").await;
    let port = free_port();
    let limited = ClientPolicy {
        connection_limit: Some(2),
        ..policy(6)
    };
    let p = TestProxy::start(
        config(),
        snapshot(1, vec![with_policy(port, &echo, limited.clone())]),
    )
    .await;
    let addr = p.addr(port);
    let ok = |r: anyhow::Result<Resp>| r.is_ok_and(|r| r.status == StatusCode::OK);

    let mut first = H1::connect(addr).await.unwrap();
    let mut second = H1::connect(addr).await.unwrap();
    assert!(ok(first
        .send(request("a", "/").body(Full::default()).unwrap())
        .await));
    assert!(ok(second
        .send(request("a", "/").body(Full::default()).unwrap())
        .await));
    assert!(
        get(addr, "a", "/").await.is_err(),
        "a third connection is closed at accept"
    );
    assert_eq!(
        p.metric(
            "weir_client_policy_connections_rejected_total",
            &[("policy", "ns/ctp")]
        ),
        1.0
    );
    // The open ones are unharmed.
    assert!(ok(first
        .send(request("a", "/").body(Full::default()).unwrap())
        .await));

    // A new snapshot with the same policy keeps the count.
    p.swap(snapshot(2, vec![with_policy(port, &echo, limited.clone())]));
    assert!(p.proxy.sync_listeners().await.is_empty());
    assert!(
        get(addr, "a", "/").await.is_err(),
        "the limit survived the swap"
    );
    assert!(ok(second
        .send(request("a", "/").body(Full::default()).unwrap())
        .await));

    // A closed connection gives its slot back.
    drop(first);
    assert_eventually(
        "a slot freed by a closed connection",
        Duration::from_secs(5),
        || async {
            match get(addr, "a", "/").await {
                Ok(r) if r.status == StatusCode::OK => Ok(()),
                other => anyhow::bail!("{other:?}"),
            }
        },
    )
    .await;

    // A policy without the limit: the swap drops the old state.
    p.swap(snapshot(3, vec![with_policy(port, &echo, policy(7))]));
    assert!(p.proxy.sync_listeners().await.is_empty());
    let mut more = Vec::new();
    for _ in 0..3 {
        let mut c = H1::connect(addr).await.unwrap();
        assert!(ok(c
            .send(request("a", "/").body(Full::default()).unwrap())
            .await));
        more.push(c);
    }
}

// ---------------------------------------------------------------------------------------
// timeouts

#[tokio::test]
async fn a_slow_request_header_is_cut_at_the_policy_timeout() {
    let echo = Echo::start("e").await;
    let (slow, plain) = (free_port(), free_port());
    let timed = ClientPolicy {
        request_received_timeout: Some(Duration::from_millis(300)),
        ..policy(8)
    };
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                with_policy(slow, &echo, timed),
                routed(plain, &upstream("ns/echo:80", &[echo.addr])),
            ],
        ),
    )
    .await;
    for (port, cut) in [(slow, true), (plain, false)] {
        let mut tcp = TcpStream::connect(p.addr(port)).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let start = Instant::now();
        let closed = until_closed(&mut tcp, Duration::from_secs(2)).await;
        if cut {
            assert!(closed.is_some(), "the slow header was not cut");
            assert!(start.elapsed() < Duration::from_millis(1500));
        } else {
            assert!(
                closed.is_none(),
                "without a policy the header may take longer"
            );
        }
    }
}

#[tokio::test]
async fn an_idle_http_connection_is_closed_at_the_policy_idle_timeout() {
    let echo = Echo::start("e").await;
    let port = free_port();
    let idle = ClientPolicy {
        http_idle_timeout: Some(Duration::from_millis(300)),
        ..policy(9)
    };
    let p = TestProxy::start(config(), snapshot(1, vec![with_policy(port, &echo, idle)])).await;
    let mut h1 = H1::connect(p.addr(port)).await.unwrap();
    let r = h1
        .send(request("a", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // config() has a 60 s --idle-timeout; the policy's 300 ms applies.
    assert_eventually(
        "the idle connection closed",
        Duration::from_secs(3),
        || async {
            if h1.is_closed() {
                Ok(())
            } else {
                anyhow::bail!("still open")
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// headers

#[tokio::test]
async fn request_headers_over_the_policy_limit_get_431() {
    let echo = Echo::start("e").await;
    let (limited, plain) = (free_port(), free_port());
    let small = ClientPolicy {
        max_request_header_bytes: Some(2048),
        ..policy(10)
    };
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                with_policy(limited, &echo, small),
                routed(plain, &upstream("ns/echo:80", &[echo.addr])),
            ],
        ),
    )
    .await;
    let big = "x".repeat(4096);
    for (port, status) in [
        (limited, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        (plain, StatusCode::OK),
    ] {
        let r = send(
            p.addr(port),
            request("a", "/")
                .header("x-big", big.as_str())
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, status, "port {port}");
    }
}

#[tokio::test]
async fn request_id_modes() {
    let echo = Echo::start("e").await;
    let modes = [
        RequestIdMode::PreserveOrGenerate,
        RequestIdMode::Preserve,
        RequestIdMode::Generate,
        RequestIdMode::Disable,
    ];
    let ports: Vec<u16> = modes.iter().map(|_| free_port()).collect();
    let sockets = modes
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (mode, port))| {
            with_policy(
                *port,
                &echo,
                ClientPolicy {
                    request_id: Some(*mode),
                    ..policy(20 + i as u64)
                },
            )
        })
        .collect();
    let p = TestProxy::start(config(), snapshot(1, sockets)).await;
    let seen = |port: u16, id: Option<&'static str>| {
        let addr = p.addr(port);
        async move {
            let mut req = request("a", "/");
            if let Some(id) = id {
                req = req.header("x-request-id", id);
            }
            send(addr, req.body(Full::default()).unwrap())
                .await
                .unwrap()
                .seen_header("x-request-id")
        }
    };
    let is_uuid_v4 = |id: &Option<String>| {
        id.as_deref().is_some_and(|id| {
            id.len() == 36 && id.as_bytes()[14] == b'4' && id.split('-').count() == 5
        })
    };
    let [keep_or_gen, keep, gen, off] = [ports[0], ports[1], ports[2], ports[3]];
    assert_eq!(
        seen(keep_or_gen, Some("mine")).await.as_deref(),
        Some("mine")
    );
    assert!(is_uuid_v4(&seen(keep_or_gen, None).await));
    assert_eq!(seen(keep, Some("mine")).await.as_deref(), Some("mine"));
    assert_eq!(seen(keep, None).await, None);
    let generated = seen(gen, Some("mine")).await;
    assert!(is_uuid_v4(&generated), "{generated:?}");
    assert_ne!(generated, seen(gen, Some("mine")).await);
    assert_eq!(seen(off, Some("mine")).await, None);
}

// ---------------------------------------------------------------------------------------
// tls

/// A client speaking only `versions`, offering `alpn`.
async fn tls_handshake(
    addr: std::net::SocketAddr,
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> anyhow::Result<TlsStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("a.example")?;
    Ok(connector.connect(name, tcp).await?)
}

#[tokio::test]
async fn tls_versions_ciphers_and_alpn_follow_the_policy() {
    let echo = Echo::start("e").await;
    let ca = Ca::new();
    let cert = ca.leaf(&["a.example"]);
    let tls_port = |settings: Option<TlsSettings>, id: u64| {
        let port = free_port();
        let l = listener(
            "ns/gw",
            None,
            vec![(
                None,
                prefix("/", forward_to("ns/r", &upstream("ns/e:80", &[echo.addr]))),
            )],
        );
        let mut s = tls_socket(port, true, vec![l], vec![("a.example", cert.clone())], None);
        s.client_policy = settings.map(|tls| {
            Arc::new(ClientPolicy {
                tls: Some(tls),
                ..policy(id)
            })
        });
        (port, s)
    };
    let (only13, s1) = tls_port(
        Some(TlsSettings {
            min_version: Some(TlsVersion::V1_3),
            ..TlsSettings::default()
        }),
        30,
    );
    let (alpn, s2) = tls_port(
        Some(TlsSettings {
            alpn_protocols: vec!["http/1.1".into()],
            // Only one TLS 1.2 suite (and every TLS 1.3 one).
            ciphers: vec!["ECDHE-ECDSA-AES256-GCM-SHA384".into()],
            max_version: Some(TlsVersion::V1_2),
            ..TlsSettings::default()
        }),
        31,
    );
    let (plain, s3) = tls_port(None, 0);
    let p = TestProxy::start(config(), snapshot(1, vec![s1, s2, s3])).await;
    let tls12 = &[&rustls::version::TLS12][..];
    let tls13 = &[&rustls::version::TLS13][..];
    let both = &[b"h2".as_slice(), b"http/1.1"][..];

    assert!(
        tls_handshake(p.addr(only13), &ca, tls12, both)
            .await
            .is_err(),
        "TLS 1.2 is refused when minVersion is 1.3"
    );
    let s = tls_handshake(p.addr(only13), &ca, tls13, both)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Without a policy both versions work.
    assert!(tls_handshake(p.addr(plain), &ca, tls12, both).await.is_ok());

    // maxVersion 1.2, one cipher, ALPN http/1.1 only.
    assert!(tls_handshake(p.addr(alpn), &ca, tls13, both).await.is_err());
    let s = tls_handshake(p.addr(alpn), &ca, tls12, both).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        s.get_ref().1.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    let mut h1 = H1::over(s).await.unwrap();
    let r = h1
        .send(request("a.example", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// http2 and bufferLimit

/// The SETTINGS an h2c server sends first, as (identifier, value).
async fn server_settings(addr: std::net::SocketAddr) -> Vec<(u16, u32)> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
    let len = usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

#[tokio::test]
async fn http2_settings_are_advertised() {
    let echo = Echo::start("e").await;
    let (tuned, buffered, plain) = (free_port(), free_port(), free_port());
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                with_policy(
                    tuned,
                    &echo,
                    ClientPolicy {
                        http2: Some(Http2Settings {
                            max_concurrent_streams: Some(7),
                            initial_stream_window_size: Some(100_000),
                            initial_connection_window_size: None,
                        }),
                        ..policy(40)
                    },
                ),
                with_policy(
                    buffered,
                    &echo,
                    ClientPolicy {
                        buffer_limit: Some(32_768),
                        http2: Some(Http2Settings {
                            initial_stream_window_size: Some(100_000),
                            ..Http2Settings::default()
                        }),
                        ..policy(41)
                    },
                ),
                routed(plain, &upstream("ns/echo:80", &[echo.addr])),
            ],
        ),
    )
    .await;
    const MAX_CONCURRENT_STREAMS: u16 = 3;
    const INITIAL_WINDOW_SIZE: u16 = 4;
    let get = |s: &[(u16, u32)], id| s.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);

    let s = server_settings(p.addr(tuned)).await;
    assert_eq!(get(&s, MAX_CONCURRENT_STREAMS), Some(7), "{s:?}");
    assert_eq!(get(&s, INITIAL_WINDOW_SIZE), Some(100_000), "{s:?}");
    // bufferLimit caps the stream window.
    let s = server_settings(p.addr(buffered)).await;
    assert_eq!(get(&s, INITIAL_WINDOW_SIZE), Some(32_768), "{s:?}");
    let s = server_settings(p.addr(plain)).await;
    assert_ne!(get(&s, MAX_CONCURRENT_STREAMS), Some(7), "{s:?}");

    // And requests still flow over the tuned server.
    let tcp = TcpStream::connect(p.addr(tuned)).await.unwrap();
    let mut h2 = H2::over(tcp).await.unwrap();
    let r = h2
        .send(
            http::Request::builder()
                .uri("http://a/")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_request_body_gets_408_at_the_policy_timeout() {
    let echo = Echo::start("e").await;
    let (timed, plain) = (free_port(), free_port());
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                with_policy(
                    timed,
                    &echo,
                    ClientPolicy {
                        request_received_timeout: Some(Duration::from_millis(500)),
                        ..policy(11)
                    },
                ),
                routed(plain, &upstream("ns/echo:80", &[echo.addr])),
            ],
        ),
    )
    .await;
    for (port, cut) in [(timed, true), (plain, false)] {
        let mut tcp = TcpStream::connect(p.addr(port)).await.unwrap();
        tcp.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx")
            .await
            .unwrap();
        let (mut read, mut write) = tcp.into_split();
        // A byte every 100 ms: never a stall, but not the whole body in time.
        let trickle = tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if write.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
        let start = Instant::now();
        let mut head = [0u8; 12];
        let answered =
            tokio::time::timeout(Duration::from_secs(2), read.read_exact(&mut head)).await;
        trickle.abort();
        if cut {
            answered.unwrap().unwrap();
            assert_eq!(&head, b"HTTP/1.1 408");
            assert!(start.elapsed() < Duration::from_millis(1500));
        } else {
            assert!(
                answered.is_err(),
                "without a policy a trickling body is not cut"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// TCP sockets (TCPRoute): PROXY protocol and timeout.tcp.idleTimeout

/// A TCP backend echoing every byte back.
async fn tcp_echo() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn tcp_socket_with(
    port: u16,
    backend_addr: std::net::SocketAddr,
    policy: ClientPolicy,
) -> SocketConfig {
    let mut s = socket(port, vec![listener("ns/gw", None, vec![])]);
    let up = upstream("ns/tcp-echo:9000", &[backend_addr]);
    s.passthrough = Some(weir_snapshot::Passthrough {
        routes: vec![weir_snapshot::HostIndex::build([(
            None,
            Arc::new(weir_snapshot::TlsRouteEntry {
                route: "ns/tcp".into(),
                backends: vec![backend(1, &up)].into(),
            }),
        )])]
        .into(),
        terminate: vec![false].into(),
        tcp: true,
        udp: false,
    });
    s.client_policy = Some(Arc::new(policy));
    s
}

async fn echo_round(tcp: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    tcp.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    back
}

#[tokio::test]
async fn tcp_sockets_take_a_proxy_header_and_close_idle_connections() {
    let backend_addr = tcp_echo().await;
    let (proxied, idle, plain) = (free_port(), free_port(), free_port());
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![
                tcp_socket_with(
                    proxied,
                    backend_addr,
                    ClientPolicy {
                        proxy_protocol: Some(ProxyProtocol { optional: false }),
                        ..policy(50)
                    },
                ),
                tcp_socket_with(
                    idle,
                    backend_addr,
                    ClientPolicy {
                        tcp_idle_timeout: Some(Duration::from_millis(300)),
                        ..policy(51)
                    },
                ),
                tcp_socket_with(plain, backend_addr, policy(52)),
            ],
        ),
    )
    .await;

    // The header is taken off: the backend gets the client's bytes only.
    let mut tcp = TcpStream::connect(p.addr(proxied)).await.unwrap();
    tcp.write_all(&v2_header([192, 0, 2, 1], 999))
        .await
        .unwrap();
    assert_eq!(echo_round(&mut tcp, b"hello").await, b"hello");
    let mut tcp = TcpStream::connect(p.addr(proxied)).await.unwrap();
    tcp.write_all(b"hello").await.unwrap();
    assert_eq!(
        until_closed(&mut tcp, Duration::from_secs(3)).await,
        Some(vec![])
    );

    // Idle for longer than the policy's timeout: closed; without it: open.
    for (port, closes) in [(idle, true), (plain, false)] {
        let mut tcp = TcpStream::connect(p.addr(port)).await.unwrap();
        assert_eq!(echo_round(&mut tcp, b"ping").await, b"ping");
        let closed = until_closed(&mut tcp, Duration::from_millis(1500)).await;
        assert_eq!(closed.is_some(), closes, "port {port}");
    }
}

#[tokio::test]
async fn tls_settings_apply_on_client_validating_sockets_too() {
    use weir_snapshot::{ClientAuth, ClientAuthMode};
    let echo = Echo::start("e").await;
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let good = client_ca.leaf(&["client.example"]);
    let cert = server_ca.leaf(&["strict.example", "a.example"]);
    let port = free_port();
    let up = upstream("ns/e:80", &[echo.addr]);
    let auth = |mode| {
        Some(Arc::new(
            ClientAuth::new(
                mode,
                vec![client_ca.der()],
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .unwrap(),
        ))
    };
    let mut strict = listener(
        "ns/gw",
        Some("strict.example"),
        vec![(None, prefix("/", forward_to("ns/r", &up)))],
    );
    strict.client_auth = auth(ClientAuthMode::AllowValidOnly);
    let mut lax = listener(
        "ns/gw",
        Some("a.example"),
        vec![(None, prefix("/", forward_to("ns/r", &up)))],
    );
    lax.client_auth = auth(ClientAuthMode::AllowInsecureFallback);
    let mut s = tls_socket(
        port,
        true,
        vec![strict, lax],
        vec![
            ("strict.example", cert.clone()),
            ("a.example", cert.clone()),
        ],
        None,
    );
    s.client_policy = Some(Arc::new(ClientPolicy {
        tls: Some(TlsSettings {
            min_version: Some(TlsVersion::V1_3),
            ..TlsSettings::default()
        }),
        ..policy(60)
    }));
    let p = TestProxy::start(config(), snapshot(1, vec![s])).await;
    let addr = p.addr(port);

    // The listener's validation still applies under the policy's settings.
    assert!(
        tls_connect_as(addr, "strict.example", &server_ca, Some(&good))
            .await
            .is_ok()
    );
    let refused = async {
        let tls = tls_connect_as(addr, "strict.example", &server_ca, None).await?;
        H1::over(tls)
            .await?
            .send(request("strict.example", "/").body(Full::default())?)
            .await
    };
    assert!(refused.await.is_err());
    // And TLS 1.2 is refused on the lax listener, where no certificate is needed.
    let tls12 = &[&rustls::version::TLS12][..];
    let tls13 = &[&rustls::version::TLS13][..];
    assert!(tls_handshake(addr, &server_ca, tls12, &[b"http/1.1"])
        .await
        .is_err());
    assert!(tls_handshake(addr, &server_ca, tls13, &[b"http/1.1"])
        .await
        .is_ok());
}

#[tokio::test]
async fn unusable_tls_settings_close_connections_and_count() {
    let echo = Echo::start("e").await;
    let ca = Ca::new();
    let cert = ca.leaf(&["a.example"]);
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![(
            None,
            prefix("/", forward_to("ns/r", &upstream("ns/e:80", &[echo.addr]))),
        )],
    );
    let mut s = tls_socket(port, true, vec![l], vec![("a.example", cert)], None);
    let settings = TlsSettings {
        min_version: Some(TlsVersion::V1_3),
        max_version: Some(TlsVersion::V1_2),
        ..TlsSettings::default()
    };
    assert!(settings.check().is_err(), "translation would refuse these");
    s.client_policy = Some(Arc::new(ClientPolicy {
        tls: Some(settings),
        ..policy(70)
    }));
    let p = TestProxy::start(config(), snapshot(1, vec![s])).await;
    // Never the defaults instead of what the policy asked for: the connection is closed.
    assert!(tls_connect(p.addr(port), "a.example", &ca, &[b"http/1.1"])
        .await
        .is_err());
    assert_eq!(
        p.metric("weir_client_policy_errors_total", &[("policy", "ns/ctp")]),
        1.0
    );
}
