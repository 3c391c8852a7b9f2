use super::*;
use crate::conn::client_ip_value;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn hop_by_hop_headers_are_removed_but_te_trailers_kept() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-private, TE, host"),
        ("host", "h"),
        ("x-private", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "trailers, deflate"),
        ("x-kept", "yes"),
        ("proxy-authorization", "Basic x"),
    ]);
    prepare_headers(&mut h, None);
    let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["host", "proxy-authorization", "te", "x-kept"]);
    assert_eq!(h.get(TE).unwrap(), "trailers");
}

#[test]
fn upgrade_keeps_connection_upgrade() {
    let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    let protocol = h.get(UPGRADE).cloned();
    prepare_headers(&mut h, protocol.as_ref());
    assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
    assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
}

#[test]
fn forwarded_for_appends_client_ip() {
    let mut h = headers(&[
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
    ]);
    forwarded_headers(&mut h, &client_ip_value("10.0.0.1".parse().unwrap()), true);
    assert_eq!(
        h.get(&X_FORWARDED_FOR).unwrap(),
        "1.1.1.1, 2.2.2.2, 10.0.0.1"
    );
    assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "https");
    let mut h = HeaderMap::new();
    forwarded_headers(
        &mut h,
        &client_ip_value("::ffff:10.0.0.2".parse().unwrap()),
        false,
    );
    assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.2");
    assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
}

#[test]
fn connection_keep_alive_alone_is_removed() {
    let mut h = headers(&[
        ("connection", "keep-alive"),
        ("content-length", "2"),
        ("server", "nginx"),
    ]);
    prepare_headers(&mut h, None);
    let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["content-length", "server"]);

    // A Connection header naming another header still removes that one.
    let mut h = headers(&[
        ("connection", "x-private"),
        ("x-private", "1"),
        ("x-kept", "1"),
    ]);
    prepare_headers(&mut h, None);
    let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
}

#[test]
fn websocket_accept_matches_rfc_6455_example() {
    assert_eq!(
        websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

/// Issue 22's "wrong depth": a BackendTrafficPolicy with only a rate limit, compression, a
/// response cache or a fault keeps the plain send of a route without a policy; a policy
/// with a block of the exchange (here each one in turn) goes through [`with_policy`]. Both
/// are sent to a real upstream and answered.
#[tokio::test]
async fn only_a_policy_with_an_exchange_block_takes_the_boxed_exchange() {
    use std::sync::Arc;
    use weir_snapshot::rate_limit::{Limit, RateLimit, RateLimitRule};
    use weir_snapshot::{CircuitBreaker, Endpoint, RetryPolicy};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(tcp),
                hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                }),
            ));
        }
    });
    let registry = prometheus::Registry::new();
    let config = crate::ProxyConfig {
        access_log_sample: 0.0,
        ..Default::default()
    };
    let handle = Arc::new(arc_swap::ArcSwap::from_pointee(
        weir_snapshot::Snapshot::default(),
    ));
    let proxy = crate::Proxy::new(config, handle, &registry).unwrap();
    let shared = &proxy.shared;
    let upstream = Upstream::new("ns/svc:80", AppProtocol::Http1, vec![Endpoint { addr }]);
    let client_ip = crate::conn::client_ip_value("10.0.0.1".parse().unwrap());
    let downstream = Downstream {
        client_ip: &client_ip,
        tls: false,
        client_cert: None,
    };
    let rule = RateLimitRule {
        selectors: Vec::new(),
        limit: Limit {
            requests: 1_000_000,
            unit: Duration::from_secs(1),
        },
        shared: false,
        id: 1,
    };
    let rate_limit = BackendPolicy {
        name: "ns/rate-limit-only".into(),
        id: 1,
        rate_limit: Some(RateLimit {
            scope: 1,
            local: Arc::new([rule]),
            global: Arc::new([]),
        }),
        ..BackendPolicy::default()
    }
    .compiled();
    let plain = [
        rate_limit.clone(),
        BackendPolicy {
            name: "ns/compression-fault-cache".into(),
            compression: Some(Arc::new(weir_snapshot::Compression {
                compressors: Arc::new([]),
            })),
            fault: Some(weir_snapshot::FaultInjection {
                delay: None,
                abort: None,
            }),
            response_cache: Some(weir_snapshot::ResponseCache {
                max_size: 1 << 20,
                max_entry_size: 1 << 10,
                max_entries: 10,
            }),
            ..rate_limit.clone()
        }
        .compiled(),
    ];
    let with_block = |name: &str, f: &dyn Fn(&mut BackendPolicy)| {
        let mut p = BackendPolicy {
            name: name.into(),
            ..rate_limit.clone()
        };
        f(&mut p);
        p.compiled()
    };
    let exchange = [
        with_block("retry", &|p| {
            p.retry = Some(RetryPolicy {
                num_retries: 1,
                triggers: weir_snapshot::RetryTriggers(
                    weir_snapshot::RetryTriggers::CONNECT_FAILURE,
                ),
                status_codes: Arc::new([]),
                per_try_timeout: None,
                base_interval: Duration::from_millis(1),
                max_interval: Duration::from_millis(1),
                min_backoff: Duration::ZERO,
            })
        }),
        with_block("breaker", &|p| {
            p.circuit_breaker = Some(CircuitBreaker::default())
        }),
        with_block("connect timeout", &|p| {
            p.connect_timeout = Some(Duration::from_secs(1))
        }),
        with_block("request buffer", &|p| p.request_buffer = Some(1024)),
    ];
    for (policy, expected) in plain
        .iter()
        .map(|p| (p, 0))
        .chain(exchange.iter().map(|p| (p, 1)))
    {
        assert_eq!(policy.needs_exchange(), expected == 1, "{}", policy.name);
        let before = EXCHANGES.with(|n| n.get());
        let parts = Request::get("http://a.example/x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let response = forward_body(
            shared,
            &upstream,
            parts,
            UpstreamBody::empty(),
            None,
            &downstream,
            Some(Duration::from_secs(5)),
            Some((policy, "ns/route")),
            None,
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", policy.name);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert_eq!(
            EXCHANGES.with(|n| n.get()) - before,
            expected,
            "{}: through the exchange",
            policy.name
        );
    }
    server.abort();
}
