//! Route boundaries (docs/SECURITY.md): what a client can put in a request must not get it
//! past the route it matched — path normalisation, hop-by-hop headers, requests the RFCs
//! forbid, and upgrades.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_snapshot::{
    AppProtocol, Filter, HeaderModifier, PathModifier, Redirect, Timeouts, UrlRewrite,
};

use crate::support::*;

/// `/public` → backend "public", `/admin` → backend "admin", on one plain socket.
struct TwoRoutes {
    public: Echo,
    admin: Echo,
    proxy: TestProxy,
    port: u16,
}

impl TwoRoutes {
    async fn start(public_filters: Vec<Filter>) -> TwoRoutes {
        let public = Echo::start("public").await;
        let admin = Echo::start("admin").await;
        let public_action = action(
            "ns/public",
            public_filters,
            vec![backend(1, &upstream("ns/public:80", &[public.addr]))],
            Timeouts::default(),
        );
        let l = listener(
            "ns/gw",
            None,
            vec![
                (None, prefix("/public", public_action)),
                (
                    None,
                    prefix(
                        "/admin",
                        forward_to("ns/admin", &upstream("ns/admin:80", &[admin.addr])),
                    ),
                ),
            ],
        );
        let port = free_port();
        let proxy = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
        TwoRoutes {
            public,
            admin,
            proxy,
            port,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr(self.port)
    }

    fn received(&self) -> usize {
        self.public.received.load(Ordering::SeqCst) + self.admin.received.load(Ordering::SeqCst)
    }
}

/// One request written as raw bytes (so nothing on the client side touches the target);
/// returns the status line and the body.
async fn raw_status(addr: SocketAddr, request: &str) -> String {
    let out = raw(addr, request.as_bytes()).await.unwrap();
    out.lines().next().unwrap_or("").to_string()
}

fn raw_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n")
}

/// The JSON the echo backend answered to a raw request.
async fn raw_json(addr: SocketAddr, request: &str) -> serde_json::Value {
    let out = raw(addr, request.as_bytes()).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The echo answers with a Content-Length body; no chunk framing to strip.
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn dot_segments_are_removed_before_matching_and_forwarding() {
    let t = TwoRoutes::start(vec![]).await;
    let addr = t.addr();
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2E/admin",
        "/public/./../admin",
        "/public//../admin",
        "/public/x/../../admin",
        "//admin",
        "/%61dmin",
    ] {
        let j = raw_json(addr, &raw_get(path)).await;
        assert_eq!(j["backend"], "admin", "{path}");
        assert_eq!(j["path"], "/admin", "{path}");
    }
    // Normal paths and the query string are untouched; a `..` in the query is not a segment.
    let j = raw_json(addr, &raw_get("/public/a/./b//c?x=/../y&%2e%2e")).await;
    assert_eq!(j["backend"], "public");
    assert_eq!(j["path"], "/public/a/b/c");
    assert_eq!(j["query"], "x=/../y&%2e%2e");
    let j = raw_json(addr, &raw_get("/public/.well-known/a%20b")).await;
    assert_eq!(j["path"], "/public/.well-known/a%20b");
    // Nothing above the root: `/..` is `/`, which no route here matches.
    assert!(raw_status(addr, &raw_get("/public/../../../etc/passwd"))
        .await
        .contains(" 404"));

    // The absolute form (HTTP/1.1) and HTTP/2 `:path` are normalised the same way.
    let j = raw_json(
        addr,
        "GET http://h.example/public/%2e%2e/admin HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (j["backend"].as_str(), j["path"].as_str()),
        (Some("admin"), Some("/admin"))
    );
    let mut h2 = H2::over(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    for path in ["/public/../admin", "/public/%2e%2E/admin"] {
        let req = Request::builder()
            .uri(format!("http://h.example{path}"))
            .body(Full::default())
            .unwrap();
        let r = h2.send(req).await.unwrap();
        assert_eq!(r.backend(), "admin", "h2 {path}");
        assert_eq!(r.json()["path"], "/admin", "h2 {path}");
    }
}

#[tokio::test]
async fn encoded_slashes_backslashes_and_bad_escapes_get_400_and_reach_no_backend() {
    let t = TwoRoutes::start(vec![]).await;
    let addr = t.addr();
    for path in [
        "/public/..%2Fadmin",
        "/public/..%2fadmin",
        "/public%2F..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public/..%5Cadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public/%",
        "/public/%2",
        "/public/%zz",
        "/public/..;/admin",
        "/public/%2e%2e;jsessionid=x/admin",
    ] {
        let status = raw_status(addr, &raw_get(path)).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{path}: {status}");
    }
    let mut h2 = H2::over(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let req = Request::builder()
        .uri("http://h.example/public/..%2Fadmin")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2.send(req).await.unwrap().status, StatusCode::BAD_REQUEST);
    // A 400 closes the HTTP/1.1 connection: nothing after the bad request is read.
    let (head, rest) = exchange(
        addr,
        b"GET /public/..%2Fadmin HTTP/1.1\r\nHost: h.example\r\n\r\n",
        b"GET /admin HTTP/1.1\r\nHost: h.example\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(rest.is_empty(), "{rest}");
    assert_eq!(t.received(), 0, "a refused path reached a backend");
    assert!(
        t.proxy
            .metric("weir_request_errors_total", &[("reason", "bad_path")])
            > 0.0
    );
}

#[tokio::test]
async fn rewritten_and_redirected_paths_are_normalised() {
    // A ReplacePrefixMatch whose replacement ends in a dot-segment, and a full-path
    // replacement with one in the middle: what the backend (or the Location) gets is
    // normalised like a request path.
    let rewrite = Filter::UrlRewrite(UrlRewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch {
            matched_prefix: "/public".into(),
            replacement: "/static/..".into(),
        }),
    });
    let t = TwoRoutes::start(vec![rewrite]).await;
    let j = raw_json(t.addr(), &raw_get("/public/%2e/x?q=1")).await;
    assert_eq!(j["backend"], "public");
    assert_eq!(j["path"], "/x");
    assert_eq!(j["query"], "q=1");

    let redirect = Filter::Redirect(Redirect {
        scheme: None,
        hostname: None,
        path: Some(PathModifier::ReplaceFullPath("/a/./b/../c".into())),
        port: None,
        status: StatusCode::FOUND,
    });
    let t = TwoRoutes::start(vec![redirect]).await;
    let out = raw(t.addr(), raw_get("/public/x?q=1").as_bytes())
        .await
        .unwrap();
    let location = out
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("location: ")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no Location: {out}"));
    assert_eq!(location, format!("http://h.example:{}/a/c?q=1", t.port));
}

fn hn(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

fn hv(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

#[tokio::test]
async fn client_connection_header_cannot_remove_headers_weir_adds() {
    let added = Filter::RequestHeader(HeaderModifier {
        set: Arc::new([(hn("x-route-auth"), hv("checked"))]),
        add: Arc::new([(hn("x-route-added"), hv("1"))]),
        remove: Arc::new([]),
    });
    let t = TwoRoutes::start(vec![added]).await;
    let j = raw_json(
        t.addr(),
        "GET /public HTTP/1.1\r\nHost: h.example\r\n\
         Connection: close, x-route-auth, x-route-added, x-forwarded-for, x-forwarded-proto, x-client-hop\r\n\
         X-Client-Hop: 1\r\nX-Route-Auth: forged\r\n\r\n",
    )
    .await;
    let h = &j["headers"];
    assert_eq!(h["x-route-auth"], serde_json::json!(["checked"]), "{h}");
    assert_eq!(h["x-route-added"], serde_json::json!(["1"]), "{h}");
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "{h}"
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]), "{h}");
    // The client's own hop-by-hop header is still removed.
    assert!(h["x-client-hop"].is_null(), "{h}");
    assert!(h["connection"].is_null(), "{h}");
}

#[tokio::test]
async fn requests_the_rfcs_forbid_get_400_and_reach_no_backend() {
    let t = TwoRoutes::start(vec![]).await;
    let addr = t.addr();
    let cases = [
        (
            "duplicate Host",
            "GET /public HTTP/1.1\r\nHost: h.example\r\nHost: other.example\r\n\r\n",
        ),
        (
            "Host with userinfo",
            "GET /public HTTP/1.1\r\nHost: user@h.example\r\n\r\n",
        ),
        (
            "Host with a path",
            "GET /public HTTP/1.1\r\nHost: h.example/admin\r\n\r\n",
        ),
        (
            "Host with a space",
            "GET /public HTTP/1.1\r\nHost: h.example other\r\n\r\n",
        ),
        (
            "Host with a bad port",
            "GET /public HTTP/1.1\r\nHost: h.example:80x\r\n\r\n",
        ),
        (
            "absolute form with userinfo",
            "GET http://user:pw@h.example/public HTTP/1.1\r\nHost: h.example\r\n\r\n",
        ),
        ("GET *", "GET * HTTP/1.1\r\nHost: h.example\r\n\r\n"),
        (
            "POST *",
            "POST * HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let request = request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let status = raw_status(addr, &request).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{what}: {status}");
    }
    // OPTIONS * is allowed (no route serves it here: 404, not 400).
    let status = raw_status(
        addr,
        "OPTIONS * HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 404"), "OPTIONS *: {status}");

    // HTTP/2: a Host header that disagrees with :authority (RFC 9113 §8.3.1), or userinfo
    // in :authority.
    let mut h2 = H2::over(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let req = Request::builder()
        .uri("http://h.example/public")
        .header("host", "other.example")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2.send(req).await.unwrap().status, StatusCode::BAD_REQUEST);
    let req = Request::builder()
        .uri("http://h.example/public")
        .header("host", "H.example")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        h2.send(req).await.unwrap().status,
        StatusCode::OK,
        "same host, other case"
    );
    assert_eq!(t.received(), 1, "a forbidden request reached a backend");

    // Absolute form disagreeing with Host: the request target wins (RFC 9112 §3.2.2), and
    // the backend sees the target's authority as Host.
    let j = raw_json(
        addr,
        "GET http://h.example/public HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(j["host"], "h.example");
    // Empty Host (a target without authority, RFC 9112 §3.2) and an IPv6 literal are valid.
    let j = raw_json(
        addr,
        "GET /public HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(j["host"], "[::1]:8080");
}

/// A backend that answers every request with `answer` and records every byte it receives.
struct ScriptedBackend {
    addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedBackend {
    async fn start(answer: &'static [u8]) -> ScriptedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut answered = false;
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if !answered {
                            answered = true;
                            if tcp.write_all(answer).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        ScriptedBackend { addr, seen, task }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}

async fn proxy_to(protocol: AppProtocol, backend: SocketAddr) -> (TestProxy, SocketAddr) {
    let port = free_port();
    let up = upstream_with("ns/b:80", protocol, &[backend]);
    let l = listener(
        "ns/gw",
        None,
        vec![(None, prefix("/ws", forward_to("ns/ws", &up)))],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);
    (p, addr)
}

/// Send `first`, read the answer's head, then send `then` on the same connection and
/// return (first answer, everything that came back after).
async fn exchange(addr: SocketAddr, first: &[u8], then: &[u8]) -> (String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(first).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    let _ = tcp.write_all(then).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest)).await;
    (head, String::from_utf8_lossy(&rest).into_owned())
}

#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    // Any other Upgrade (h2c, TLS/1.0, a made-up one) is dropped: the request is forwarded
    // as a plain request (RFC 9110 §7.8 lets a server ignore Upgrade).
    let echo = Echo::start("a").await;
    for protocol in [AppProtocol::Http1, AppProtocol::WebSocket] {
        let (_p, addr) = proxy_to(protocol, echo.addr).await;
        // A WebSocket upgrade without the handshake's key is not one either.
        let j = raw_json(
            addr,
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n",
        )
        .await;
        assert!(j["headers"]["upgrade"].is_null(), "no key: {j}");
        for upgrade in ["h2c", "TLS/1.0", "x-tunnel"] {
            let request = format!(
                "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
                 Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
            );
            let j = raw_json(addr, &request).await;
            assert!(j["headers"]["upgrade"].is_null(), "{upgrade}: {j}");
            assert!(j["headers"]["http2-settings"].is_null(), "{upgrade}: {j}");
        }
    }
}

/// A WebSocket handshake (RFC 6455 §4.1) with the RFC's sample key.
const WS_HANDSHAKE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn a_backend_101_without_the_requested_protocol_is_a_502_and_tunnels_nothing() {
    // A backend that answers 101 to anything, naming another protocol (or none): the client
    // gets 502, and what it sends next is a new request Weir routes (404 here), never raw
    // bytes to the backend.
    for answer in [
        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"[..],
        &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
        // The right protocol but not the answer to the client's key: a backend made to echo
        // a 101 (a status-reflecting endpoint), still speaking HTTP.
        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
           Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"[..],
    ] {
        let b = ScriptedBackend::start(answer).await;
        let (_p, addr) = proxy_to(AppProtocol::WebSocket, b.addr).await;
        let (head, rest) = exchange(
            addr,
            WS_HANDSHAKE,
            b"GET /admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        assert!(rest.starts_with("HTTP/1.1 404"), "{rest}");
        assert!(!b.seen().contains("/admin"), "{}", b.seen());
    }
}

#[tokio::test]
async fn an_unsolicited_101_is_a_502() {
    let b = ScriptedBackend::start(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let (_p, addr) = proxy_to(AppProtocol::Http1, b.addr).await;
    let (head, rest) = exchange(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(rest.starts_with("HTTP/1.1 404"), "{rest}");
    assert!(!b.seen().contains("/admin"), "{}", b.seen());
}

#[tokio::test]
async fn a_refused_upgrade_leaves_the_next_request_to_routing() {
    // The backend answers the upgrade request without switching: the connection stays
    // HTTP, and the client's next request is routed by Weir like any other.
    let b =
        ScriptedBackend::start(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n").await;
    let (_p, addr) = proxy_to(AppProtocol::WebSocket, b.addr).await;
    let (head, rest) = exchange(
        addr,
        WS_HANDSHAKE,
        b"GET /admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(rest.starts_with("HTTP/1.1 404"), "{rest}");
    assert!(!b.seen().contains("/admin"), "{}", b.seen());
}

// ---- Section 4: framing faults (RFC 9112 §6) ----

#[tokio::test]
async fn an_upstream_response_with_content_length_and_chunked_is_a_502() {
    // RFC 9112 §6.1: such a message "ought to be handled as an error" (a response-splitting
    // attempt); nginx answers 502 too. The connection is not reused.
    let b = ScriptedBackend::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          b\r\nhello world\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
    )
    .await;
    let (_p, addr) = proxy_to(AppProtocol::Http1, b.addr).await;
    let (head, rest) = exchange(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(
        !head.contains("smuggled") && !rest.contains("smuggled"),
        "{head}{rest}"
    );
}

#[tokio::test]
async fn a_malformed_chunked_request_body_is_the_clients_fault() {
    let echo = Echo::start("a").await;
    let (p, addr) = proxy_to(AppProtocol::Http1, echo.addr).await;
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n-1\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
    ] {
        let request = format!(
            "POST /ws HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        );
        let status = raw_status(addr, &request).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{body:?}: {status}");
    }
    assert_eq!(
        p.metric(
            "weir_request_errors_total",
            &[("reason", "upstream_request")]
        ),
        0.0
    );
    // Both framings at once from a client (RFC 9112 §6.3): read by the chunks alone, the
    // Content-Length not forwarded, and the connection closed after the answer, so a
    // request hidden behind it is never read.
    let (head, rest) = exchange(
        addr,
        b"POST /ws HTTP/1.1\r\nHost: h\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n",
        b"GET /ws/hidden HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("\"body\":\"abc\""), "{head}");
    assert!(!head.contains("\"content-length\""), "{head}");
    assert!(rest.is_empty(), "the connection stayed open: {rest}");
    assert!(!echo
        .bodies
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.contains("hidden")));
}
