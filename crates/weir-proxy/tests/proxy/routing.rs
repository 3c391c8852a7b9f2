//! Routing, filters, header handling and protocols.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::Full;
use weir_proxy::ProxyConfig;
use weir_snapshot::{
    AppProtocol, Filter, HeaderModifier, PathModifier, Redirect, RedirectScheme, Timeouts,
    UrlRewrite,
};

use crate::support::*;

#[tokio::test]
async fn routes_by_host_and_path_and_answers_404_otherwise() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let (ua, ub) = (
        upstream("ns/a:80", &[a.addr]),
        upstream("ns/b:80", &[b.addr]),
    );
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![
            (
                Some("app.example.com"),
                prefix("/b", forward_to("ns/route-b", &ub)),
            ),
            (
                Some("app.example.com"),
                prefix("/", forward_to("ns/route-a", &ua)),
            ),
            (
                Some("*.wild.example"),
                prefix("/", forward_to("ns/route-w", &ub)),
            ),
        ],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);

    let r = get(addr, "app.example.com", "/b/x?q=1").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "b");
    assert_eq!(r.json()["path"], "/b/x");
    assert_eq!(r.json()["query"], "q=1");
    let r = get(addr, "APP.example.com:1234", "/bee").await.unwrap();
    assert_eq!(
        r.backend(),
        "a",
        "prefix /b must not match /bee; host is case-insensitive"
    );
    assert_eq!(
        r.json()["host"],
        "APP.example.com:1234",
        "Host is forwarded as received"
    );
    let r = get(addr, "x.wild.example", "/").await.unwrap();
    assert_eq!(r.backend(), "b");

    // Absolute form: the URI authority wins over the Host header, for routing and upstream.
    let out = raw(
        addr,
        b"GET http://app.example.com/b HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""host":"app.example.com""#), "{out}");

    let r = get(addr, "other.example.com", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, "route not found\n");
    let r = get(addr, "wild.example", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a wildcard needs a label");

    assert_eq!(
        p.metric(
            "weir_requests_total",
            &[
                ("route", "ns/route-b"),
                ("backend", "ns/b:80"),
                ("code", "200"),
                ("gateway", "ns/gw")
            ]
        ),
        2.0
    );
    assert_eq!(
        p.metric(
            "weir_requests_total",
            &[("route", ""), ("backend", ""), ("code", "404")]
        ),
        2.0
    );
}

#[tokio::test]
async fn listener_is_chosen_by_host() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let port = free_port();
    let one = listener(
        "ns/one",
        Some("*.one.example"),
        vec![(
            None,
            prefix("/", forward_to("ns/r1", &upstream("ns/a:80", &[a.addr]))),
        )],
    );
    let two = listener(
        "ns/two",
        Some("two.example"),
        vec![(
            None,
            prefix("/", forward_to("ns/r2", &upstream("ns/b:80", &[b.addr]))),
        )],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![one, two])])).await;
    let addr = p.addr(port);
    assert_eq!(
        get(addr, "x.one.example", "/").await.unwrap().backend(),
        "a"
    );
    assert_eq!(get(addr, "two.example", "/").await.unwrap().backend(), "b");
    let r = get(addr, "three.example", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        p.metric(
            "weir_requests_total",
            &[("gateway", "ns/two"), ("code", "200")]
        ),
        1.0
    );
}

fn hv(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

fn hn(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

#[tokio::test]
async fn header_modifiers_change_request_and_response() {
    let a = Echo::start("a").await;
    let ua = upstream("ns/a:80", &[a.addr]);
    let filters = vec![
        Filter::RequestHeader(HeaderModifier {
            set: Arc::new([(hn("x-set"), hv("set"))]),
            add: Arc::new([(hn("x-add"), hv("added"))]),
            remove: Arc::new([hn("x-remove")]),
        }),
        Filter::ResponseHeader(HeaderModifier {
            set: Arc::new([(hn("x-resp-set"), hv("yes"))]),
            add: Arc::new([]),
            remove: Arc::new([hn("x-backend")]),
        }),
    ];
    let mut b = backend(1, &ua);
    b.filters = Arc::new([Filter::RequestHeader(HeaderModifier {
        set: Arc::new([(hn("x-from-backend"), hv("1"))]),
        ..HeaderModifier::default()
    })]);
    let act = action("ns/r", filters, vec![b], Timeouts::default());
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![socket(
                port,
                vec![listener("ns/gw", None, vec![(None, prefix("/", act))])],
            )],
        ),
    )
    .await;
    let req = request("h.example", "/")
        .header("x-set", "original")
        .header("x-add", "original")
        .header("x-remove", "gone")
        .body(Full::default())
        .unwrap();
    let r = send(p.addr(port), req).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["headers"]["x-set"], serde_json::json!(["set"]));
    assert_eq!(
        j["headers"]["x-add"],
        serde_json::json!(["original", "added"])
    );
    assert!(j["headers"]["x-remove"].is_null());
    assert_eq!(j["headers"]["x-from-backend"], serde_json::json!(["1"]));
    assert_eq!(r.headers.get("x-resp-set").unwrap(), "yes");
    assert!(r.headers.get("x-backend").is_none());
}

fn redirect_route(redirect: Redirect) -> Arc<weir_snapshot::RouteAction> {
    action(
        "ns/redirect",
        vec![Filter::Redirect(redirect)],
        vec![],
        Timeouts::default(),
    )
}

fn redirect(status: StatusCode) -> Redirect {
    Redirect {
        scheme: None,
        hostname: None,
        path: None,
        port: None,
        status,
    }
}

#[tokio::test]
async fn redirects_use_configured_port_and_scheme_defaults() {
    // Listener configured on port 80, bound 80 + offset: the Location must say 80 (omitted),
    // never the offset port.
    let free = free_port();
    let cfg = ProxyConfig {
        port_offset: free - 80,
        ..config()
    };
    let mut to_https = redirect(StatusCode::MOVED_PERMANENTLY);
    to_https.scheme = Some(RedirectScheme::Https);
    let mut prefix_swap = redirect(StatusCode::FOUND);
    prefix_swap.hostname = Some("new.example".into());
    prefix_swap.path = Some(PathModifier::ReplacePrefixMatch {
        matched_prefix: "/old".into(),
        replacement: "/new".into(),
    });
    let mut explicit_port = redirect(StatusCode::FOUND);
    explicit_port.port = Some(8080);
    let l = listener(
        "ns/gw",
        None,
        vec![
            (
                None,
                prefix("/plain", redirect_route(redirect(StatusCode::FOUND))),
            ),
            (None, prefix("/secure", redirect_route(to_https))),
            (None, prefix("/old", redirect_route(prefix_swap))),
            (None, prefix("/port", redirect_route(explicit_port))),
        ],
    );
    let p = TestProxy::start(cfg, snapshot(1, vec![socket(80, vec![l])])).await;
    let addr = p.addr(80);
    assert_eq!(addr.port(), free);

    let location = |r: &Resp| {
        r.headers
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let r = get(addr, "Example.com:9999", "/plain?a=b").await.unwrap();
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(location(&r), "http://example.com/plain?a=b");
    let r = get(addr, "example.com", "/secure/x").await.unwrap();
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(location(&r), "https://example.com/secure/x");
    let r = get(addr, "example.com", "/old/page").await.unwrap();
    assert_eq!(location(&r), "http://new.example/new/page");
    let r = get(addr, "example.com", "/port").await.unwrap();
    assert_eq!(location(&r), "http://example.com:8080/port");
}

#[tokio::test]
async fn redirect_keeps_non_default_configured_port() {
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![(
            None,
            prefix("/", redirect_route(redirect(StatusCode::FOUND))),
        )],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let r = get(p.addr(port), "example.com", "/x").await.unwrap();
    assert_eq!(
        r.headers.get("location").unwrap(),
        &format!("http://example.com:{port}/x")
    );
}

#[tokio::test]
async fn url_rewrite_changes_host_and_path() {
    let a = Echo::start("a").await;
    let ua = upstream("ns/a:80", &[a.addr]);
    let rewrite = Filter::UrlRewrite(UrlRewrite {
        hostname: Some(hv("rewritten.example")),
        path: Some(PathModifier::ReplacePrefixMatch {
            matched_prefix: "/api".into(),
            replacement: "/v2".into(),
        }),
    });
    let act = action(
        "ns/r",
        vec![rewrite],
        vec![backend(1, &ua)],
        Timeouts::default(),
    );
    let port = free_port();
    let p = TestProxy::start(
        config(),
        snapshot(
            1,
            vec![socket(
                port,
                vec![listener("ns/gw", None, vec![(None, prefix("/api", act))])],
            )],
        ),
    )
    .await;
    let r = get(p.addr(port), "orig.example", "/api/items?x=1")
        .await
        .unwrap();
    let j = r.json();
    assert_eq!(j["path"], "/v2/items");
    assert_eq!(j["query"], "x=1");
    assert_eq!(j["host"], "rewritten.example");
}

#[tokio::test]
async fn weighted_split_follows_weights_and_invalid_share_gets_500() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let split = action(
        "ns/split",
        vec![],
        vec![
            backend(1, &upstream("ns/a:80", &[a.addr])),
            backend(1, &upstream("ns/b:80", &[b.addr])),
        ],
        Timeouts::default(),
    );
    let broken = action(
        "ns/broken",
        vec![],
        vec![
            backend(1, &upstream("ns/a:80", &[a.addr])),
            invalid_backend(1),
        ],
        Timeouts::default(),
    );
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![
            (None, prefix("/broken", broken)),
            (None, prefix("/", split)),
        ],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let mut conn = H1::connect(p.addr(port)).await.unwrap();
    let (mut na, mut nb, mut n500) = (0, 0, 0);
    for _ in 0..400 {
        let r = conn
            .send(request("h", "/").body(Full::default()).unwrap())
            .await
            .unwrap();
        match r.backend().as_str() {
            "a" => na += 1,
            "b" => nb += 1,
            other => panic!("unexpected backend {other:?}"),
        }
    }
    for _ in 0..400 {
        let r = conn
            .send(request("h", "/broken").body(Full::default()).unwrap())
            .await
            .unwrap();
        if r.status == StatusCode::INTERNAL_SERVER_ERROR {
            n500 += 1;
        } else {
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    // Binomial(400, 0.5): standard deviation 10; allow 6.
    assert!((140..=260).contains(&na), "a={na} b={nb}");
    assert!((140..=260).contains(&n500), "500s={n500}");
    assert_eq!(
        p.metric(
            "weir_request_errors_total",
            &[("reason", "invalid_backend")]
        ),
        f64::from(n500)
    );
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_removed() {
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
    let req = request("h.example", "/")
        .header("connection", "x-private, keep-alive")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("proxy-authorization", "Basic eA==")
        .body(Full::default())
        .unwrap();
    let r = send(p.addr(port), req).await.unwrap();
    let j = r.json();
    let h = &j["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["203.0.113.9, 127.0.0.1"])
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert!(h["x-private"].is_null(), "{h}");
    assert!(h["keep-alive"].is_null(), "{h}");
    assert!(h["proxy-connection"].is_null(), "{h}");
    assert_eq!(h["te"], serde_json::json!(["trailers"]));
    assert_eq!(h["proxy-authorization"], serde_json::json!(["Basic eA=="]));
    assert_eq!(j["host"], "h.example");
    // The echo backend sends `keep-alive: timeout=5`; it must not reach the client.
    assert!(r.headers.get("keep-alive").is_none());
}

#[tokio::test]
async fn http2_prior_knowledge_downstream_and_h2c_upstream() {
    let a = Echo::start("a").await;
    let h1_up = upstream("ns/a:80", &[a.addr]);
    let h2_up = upstream_with("ns/a-h2c:80", AppProtocol::H2c, &[a.addr]);
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![
            (None, prefix("/h2c", forward_to("ns/h2c", &h2_up))),
            (None, prefix("/", forward_to("ns/h1", &h1_up))),
        ],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let tcp = tokio::net::TcpStream::connect(p.addr(port)).await.unwrap();
    let mut h2 = H2::over(tcp).await.unwrap();
    let uri = format!("http://h2.example:{port}/x");
    let r = h2
        .send(
            http::Request::builder()
                .uri(&uri)
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, http::Version::HTTP_2);
    let j = r.json();
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["host"], format!("h2.example:{port}"));
    assert_eq!(j["body"], "hello");

    let r = h2
        .send(
            http::Request::builder()
                .uri(format!("http://h2.example:{port}/h2c"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.json()["version"], "HTTP/2.0");
    // Same for an HTTP/1.1 client.
    let r = get(p.addr(port), "h1.example", "/h2c").await.unwrap();
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["host"], "h1.example");
}

#[tokio::test]
async fn request_body_is_streamed_to_the_backend() {
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
    let body = "x".repeat(256 * 1024);
    let req = request("h", "/upload")
        .method("POST")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let r = send(p.addr(port), req).await.unwrap();
    assert_eq!(r.json()["body"].as_str().unwrap().len(), body.len());
    assert_eq!(r.json()["method"], "POST");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    // appProtocol kubernetes.io/ws and plain HTTP/1.1 backends both tunnel upgrades.
    for protocol in [AppProtocol::WebSocket, AppProtocol::Http1] {
        websocket_upgrade_through(protocol).await;
    }
}

async fn websocket_upgrade_through(protocol: AppProtocol) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Echo::start("a").await;
    let port = free_port();
    let up = upstream_with("ns/ws:80", protocol, &[a.addr]);
    let l = listener(
        "ns/gw",
        None,
        vec![(None, prefix("/", forward_to("ns/ws", &up)))],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let mut tcp = tokio::net::TcpStream::connect(p.addr(port)).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    tcp.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"ping");
}

#[tokio::test]
async fn exact_bind_ports_split_one_configured_port_between_gateways() {
    // Kubernetes mode with one Service per Gateway: two Gateways both listen on port 80, each
    // bound at its own pod port (no offset added); a redirect still names port 80 (omitted),
    // and each socket sees only its own Gateway's listener.
    let (pod_a, pod_b) = (free_port(), free_port());
    let cfg = ProxyConfig {
        port_offset: 1000,
        ..config()
    };
    let mut explicit_scheme = redirect(StatusCode::FOUND);
    explicit_scheme.scheme = Some(RedirectScheme::Http);
    let a = listener(
        "ns/a",
        None,
        vec![(None, prefix("/", redirect_route(explicit_scheme)))],
    );
    let b = listener(
        "ns/b",
        None,
        vec![(
            None,
            prefix("/", redirect_route(redirect(StatusCode::MOVED_PERMANENTLY))),
        )],
    );
    let mut sa = socket(80, vec![a]);
    sa.bind_port = Some(pod_a);
    let mut sb = socket(80, vec![b]);
    sb.bind_port = Some(pod_b);
    let p = TestProxy::start(cfg, snapshot(1, vec![sa, sb])).await;
    assert_eq!(p.addr(pod_a).port(), pod_a);
    assert_eq!(p.addr(pod_b).port(), pod_b);

    let a = get(p.addr(pod_a), "x.example", "/p").await.unwrap();
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(a.headers.get("location").unwrap(), "http://x.example/p");
    let b = get(p.addr(pod_b), "x.example", "/p").await.unwrap();
    assert_eq!(b.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(b.headers.get("location").unwrap(), "http://x.example/p");

    // Dropping one Gateway's socket closes its pod port and leaves the other serving.
    let mut sb = socket(
        80,
        vec![listener(
            "ns/b",
            None,
            vec![(
                None,
                prefix("/", redirect_route(redirect(StatusCode::MOVED_PERMANENTLY))),
            )],
        )],
    );
    sb.bind_port = Some(pod_b);
    p.swap(snapshot(2, vec![sb]));
    assert!(p.proxy.sync_listeners().await.is_empty());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", pod_a))
        .await
        .is_err());
    let b = get(p.addr(pod_b), "x.example", "/p").await.unwrap();
    assert_eq!(b.status, StatusCode::MOVED_PERMANENTLY);
}
