//! Errors: who is at fault decides the status; nothing panics on bad input.

use std::time::Duration;

use http::StatusCode;
use http_body_util::Full;
use weir_proxy::ProxyConfig;
use weir_snapshot::Timeouts;

use crate::support::*;

/// A port nothing listens on.
fn closed_port_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[tokio::test]
async fn upstream_failures_map_to_502_503_504() {
    let a = Echo::start("a").await;
    let refused = closed_port_addr();
    let timeouts = |request: Option<u64>, backend: Option<u64>| Timeouts {
        request: request.map(Duration::from_millis),
        backend_request: backend.map(Duration::from_millis),
    };
    let l = listener(
        "ns/gw",
        None,
        vec![
            (
                None,
                prefix(
                    "/empty",
                    forward_to("ns/empty", &upstream("ns/empty:80", &[])),
                ),
            ),
            (
                None,
                prefix(
                    "/refused",
                    forward_to("ns/refused", &upstream("ns/refused:80", &[refused])),
                ),
            ),
            (
                None,
                prefix(
                    "/fallback",
                    forward_to(
                        "ns/fallback",
                        &upstream("ns/fallback:80", &[refused, a.addr]),
                    ),
                ),
            ),
            (
                None,
                prefix(
                    "/slow-backend",
                    action(
                        "ns/slow-b",
                        vec![],
                        vec![backend(1, &upstream("ns/a:80", &[a.addr]))],
                        timeouts(None, Some(200)),
                    ),
                ),
            ),
            (
                None,
                prefix(
                    "/slow-request",
                    action(
                        "ns/slow-r",
                        vec![],
                        vec![backend(1, &upstream("ns/a:80", &[a.addr]))],
                        timeouts(Some(200), None),
                    ),
                ),
            ),
            (
                None,
                prefix(
                    "/none",
                    action("ns/none", vec![], vec![], Timeouts::default()),
                ),
            ),
        ],
    );
    let port = free_port();
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);

    let r = get(addr, "h", "/empty").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, "no healthy upstream\n");

    let r = get(addr, "h", "/refused").await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body, "upstream connect error\n");
    assert!(
        p.metric(
            "weir_upstream_connect_errors_total",
            &[("backend", "ns/refused:80")]
        ) >= 1.0
    );

    // Round robin starts at each endpoint in turn; every request must reach the live one.
    for _ in 0..4 {
        let r = get(addr, "h", "/fallback").await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert!(
        p.metric(
            "weir_upstream_connect_errors_total",
            &[("backend", "ns/fallback:80")]
        ) >= 1.0
    );

    let slow = |path: &str| {
        request("h", path)
            .header("x-delay-ms", "3000")
            .body(Full::default())
            .unwrap()
    };
    let started = std::time::Instant::now();
    let r = send(addr, slow("/slow-backend")).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.body, "upstream request timeout\n");
    let r = send(addr, slow("/slow-request")).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.body, "request timeout\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeouts did not fire early"
    );

    let r = get(addr, "h", "/none").await.unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    assert_eq!(
        p.metric(
            "weir_requests_total",
            &[
                ("route", "ns/refused"),
                ("backend", "ns/refused:80"),
                ("code", "502")
            ]
        ),
        1.0
    );
    assert_eq!(
        p.metric(
            "weir_request_errors_total",
            &[("reason", "backend_timeout")]
        ),
        1.0
    );
    assert_eq!(
        p.metric(
            "weir_request_errors_total",
            &[("reason", "request_timeout")]
        ),
        1.0
    );
    assert_eq!(
        p.metric(
            "weir_request_errors_total",
            &[("reason", "no_healthy_upstream")]
        ),
        1.0
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let a = Echo::start("a").await;
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![(
            None,
            prefix("/", forward_to("ns/r", &upstream("ns/a:80", &[a.addr]))),
        )],
    );
    // A limit below hyper's 8 KiB buffer floor: the request stage enforces it.
    let cfg = ProxyConfig {
        max_header_bytes: 4096,
        ..config()
    };
    let p = TestProxy::start(cfg, snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);
    let with_header = |len: usize| {
        request("h", "/")
            .header("x-big", "a".repeat(len))
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(
        send(addr, with_header(3000)).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        send(addr, with_header(6000)).await.unwrap().status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // Far above the limit: hyper's own read buffer limit answers.
    let raw_request = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let out = raw(addr, raw_request.as_bytes()).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 431"), "{out:.80}");
    // HTTP/2 too.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut h2 = H2::over(tcp).await.unwrap();
    let req = http::Request::builder()
        .uri(format!("http://h:{port}/"))
        .header("x-big", "a".repeat(6000))
        .body(Full::default())
        .unwrap();
    match h2.send(req).await {
        Ok(r) => assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => panic!("h2 oversized header: {e:#}"),
    }
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let a = Echo::start("a").await;
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![(
            None,
            prefix("/", forward_to("ns/r", &upstream("ns/a:80", &[a.addr]))),
        )],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);
    let out = raw(addr, b"\x16\x03\x01garbage\x00\xff\r\n\r\n")
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let out = raw(addr, b"GET / HTTP/1.1\r\nX: y\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "missing Host: {out:?}");
    let out = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        out.starts_with("HTTP/1.1 400"),
        "bad content-length: {out:?}"
    );
    // The proxy still serves afterwards.
    assert_eq!(get(addr, "h", "/").await.unwrap().status, StatusCode::OK);
}

/// A gRPC request (content-type application/grpc…) that no route matches gets the answer a
/// gRPC server gives an unknown method: HTTP 200, trailers-only, grpc-status 12
/// UNIMPLEMENTED. Other requests keep the plain 404.
#[tokio::test]
async fn unmatched_grpc_requests_get_grpc_status_unimplemented() {
    let echo = Echo::start("v1").await;
    let up = upstream("ns/echo", &[echo.addr]);
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![socket(
                port,
                vec![listener(
                    "ns/gw",
                    Some("grpc.example.com"),
                    vec![(None, prefix("/known.Service/", forward_to("ns/r", &up)))],
                )],
            )],
        ),
    )
    .await;
    let addr = p.addr(port);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut h2 = H2::over(tcp).await.unwrap();
    let call = |host: &str, content_type: &str| {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{host}:{port}/unknown.Service/Method"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(Full::default())
            .unwrap()
    };
    for (host, content_type) in [
        ("grpc.example.com", "application/grpc"),
        ("grpc.example.com", "application/grpc+proto"),
        // No listener for the host either: not routed, answered the same way.
        ("other.example.com", "application/grpc"),
    ] {
        let r = h2.send(call(host, content_type)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{host} {content_type}");
        assert_eq!(r.headers["grpc-status"], "12", "{host} {content_type}");
        assert_eq!(r.headers["content-type"], "application/grpc");
        assert!(r.body.is_empty());
    }
    for content_type in ["application/grpcx", "application/json"] {
        let r = h2
            .send(call("grpc.example.com", content_type))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{content_type}");
        assert!(!r.headers.contains_key("grpc-status"));
    }
}
