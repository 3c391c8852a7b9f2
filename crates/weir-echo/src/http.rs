//! Request routing and the HTTP handlers (`/health`, `/status/NNN`, `/version`, `/retry/…`,
//! echo).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};

use crate::duration::parse_go_duration;
use crate::echo::{apply_echo_set_headers, request_uri, Context, EchoResponse};
use crate::retry::Verdict;
use crate::tls::TlsInfo;

pub use crate::body::Body;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain HTTP/1.1 (HTTP/2 prior knowledge is accepted too).
    Http,
    /// Cleartext HTTP/2: anything that is not HTTP/2 or an `Upgrade: h2c` request gets 400.
    H2c,
    /// TLS, HTTP/1.1 or HTTP/2 by ALPN.
    Https,
}

impl ListenerKind {
    /// The name used in the `listening <name> <addr>` line.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Http => "http",
            ListenerKind::H2c => "h2c",
            ListenerKind::Https => "https",
        }
    }
}

/// What a handler knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub kind: ListenerKind,
    /// The port the serving listener is bound to, reported as `httpPort`.
    pub port: String,
    pub remote: SocketAddr,
    pub tls: Option<TlsInfo>,
}

/// Collapses every `//` in a path to `/` (non-overlapping, like Go's `strings.Replace`).
pub fn collapse_slashes(path: &str) -> String {
    path.replace("//", "/")
}

/// Decodes `%XX` escapes and `+` in a query component; invalid escapes are kept as is.
fn query_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of query parameter `key`, decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (query_unescape(k) == key).then(|| query_unescape(v))
    })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// `/status/NNN`: an empty answer with that status; 400 unless NNN is three digits naming
/// a final (non-1xx) status.
fn status_handler(code: &str) -> Response<Body> {
    let status = (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.parse::<u16>().ok())
        .flatten()
        .filter(|c| *c >= 200)
        .and_then(|c| StatusCode::from_u16(c).ok());
    match status {
        Some(status) => empty(status),
        None => text(
            StatusCode::BAD_REQUEST,
            format!("invalid status code {code:?}\n"),
        ),
    }
}

/// Whether a request on the h2c listener is acceptable.
fn is_h2c_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        || req
            .headers()
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"h2c"))
}

/// The request is answered by dropping its connection (HTTP/1.1) or stream (HTTP/2):
/// `/retry/…`'s failure without a `responseCode`.
#[derive(Debug)]
pub struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose (/retry/ without responseCode)")
    }
}

impl std::error::Error for Dropped {}

/// Serves one request. Errors become HTTP answers; only `/retry/…` asked to fail without
/// a `responseCode` gives [`Dropped`].
pub async fn handle<B: Send + 'static>(
    req: Request<B>,
    ctx: Arc<Context>,
    conn: Arc<ConnInfo>,
) -> Result<Response<Body>, Dropped> {
    eprintln!(
        "Echoing back request made to {} to client ({})",
        request_uri(&req),
        conn.remote
    );
    if ctx.grpc && crate::grpc::is_grpc(&req) {
        return Ok(crate::grpc::handle(&req, &ctx, &conn));
    }
    if conn.kind == ListenerKind::H2c && !is_h2c_request(&req) {
        return Ok(text(StatusCode::BAD_REQUEST, "Expected h2c request"));
    }
    let path = collapse_slashes(req.uri().path());
    if path == "/ws" && crate::ws::is_upgrade(&req) {
        return Ok(crate::ws::handshake(req));
    }
    let resp = match path.as_str() {
        "/health" => text(StatusCode::OK, "OK"),
        "/version" => text(
            StatusCode::OK,
            format!("version: v1\nhostname: {}\n", ctx.pod),
        ),
        p if p.starts_with("/status/") => status_handler(&p["/status/".len()..]),
        p if p.starts_with("/retry/") => match ctx.retries.attempt(req.uri().query()) {
            Verdict::BadRequest(why) => text(StatusCode::BAD_REQUEST, why),
            Verdict::Fail { status, delay } => {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                match status {
                    Some(status) => empty(status),
                    None => return Err(Dropped),
                }
            }
            Verdict::Succeed => echo(&req, &ctx, &conn).await,
        },
        _ => echo(&req, &ctx, &conn).await,
    };
    Ok(resp)
}

/// The echo handler: optional `delay`, then the JSON description of the request.
async fn echo<B>(req: &Request<B>, ctx: &Context, conn: &ConnInfo) -> Response<Body> {
    if let Some(delay) = query_param(req.uri().query(), "delay") {
        match parse_go_duration(&delay) {
            Ok(d) => tokio::time::sleep(d).await,
            Err(err) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
        }
    }
    let body = EchoResponse::new(req, ctx, &conn.port, conn.tls.as_ref());
    let json = match serde_json::to_vec(&body) {
        Ok(json) => json,
        Err(err) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    };
    let mut resp = Response::new(Body::new(Bytes::from(json)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    apply_echo_set_headers(req.headers(), headers);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn conn(kind: ListenerKind) -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            kind,
            port: "3000".to_owned(),
            remote: SocketAddr::from(([127, 0, 0, 1], 5555)),
            tls: None,
        })
    }

    async fn call(kind: ListenerKind, req: Request<()>) -> (StatusCode, http::HeaderMap, String) {
        let ctx = Arc::new(Context {
            namespace: "ns".into(),
            pod: "pod-1".into(),
            ..Context::default()
        });
        let resp = handle(req, ctx, conn(kind)).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn get(uri: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .header("host", "h")
            .body(())
            .unwrap()
    }

    #[test]
    fn slashes_collapse() {
        assert_eq!(collapse_slashes("//a//b/"), "/a/b/");
        assert_eq!(collapse_slashes("/a"), "/a");
        assert_eq!(collapse_slashes("///x"), "//x");
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("a=1&delay=1s"), "delay").as_deref(),
            Some("1s")
        );
        assert_eq!(
            query_param(Some("delay=10%C2%B5s"), "delay").as_deref(),
            Some("10\u{b5}s")
        );
        assert_eq!(query_param(Some("x=%zz+y"), "x").as_deref(), Some("%zz y"));
        assert_eq!(query_param(Some("x=%4"), "x").as_deref(), Some("%4"));
        assert_eq!(query_param(Some("a=1"), "delay"), None);
        assert_eq!(query_param(None, "delay"), None);
    }

    #[tokio::test]
    async fn routes() {
        let (status, _, body) = call(ListenerKind::Http, get("//health")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));
        let (status, _, body) = call(ListenerKind::Http, get("/version")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "version: v1\nhostname: pod-1\n");
        let (status, _, body) = call(ListenerKind::Http, get("/status/418")).await;
        assert_eq!((status.as_u16(), body.as_str()), (418, ""));
        for bad in [
            "/status/41",
            "/status/4180",
            "/status/abc",
            "/status/101",
            "/status/",
        ] {
            let (status, _, _) = call(ListenerKind::Http, get(bad)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let (status, _, _) = call(ListenerKind::Http, get("/x?delay=nope")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn retry_fails_then_echoes_or_drops() {
        let ctx = Arc::new(Context::default());
        let uri = "/retry/x?uuid=u1&succeedAfter=1&responseCode=502";
        let first = handle(get(uri), ctx.clone(), conn(ListenerKind::Http)).await;
        assert_eq!(first.unwrap().status(), StatusCode::BAD_GATEWAY);
        let second = handle(get(uri), ctx.clone(), conn(ListenerKind::Http)).await;
        assert_eq!(second.unwrap().status(), StatusCode::OK);
        let drop = handle(
            get("/retry/x?uuid=u2&succeedAfter=1"),
            ctx.clone(),
            conn(ListenerKind::Http),
        )
        .await;
        assert!(drop.is_err(), "no responseCode: the connection is dropped");
        let bad = handle(get("/retry/x?uuid=u3"), ctx, conn(ListenerKind::Http)).await;
        assert_eq!(bad.unwrap().status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn echo_json() {
        let req = Request::builder()
            .uri("/a//b?c=d")
            .header("host", "example.com")
            .header("x-echo-set-header", "X-Out: yes")
            .header("x-foo-bar", "1")
            .body(())
            .unwrap();
        let (status, headers, body) = call(ListenerKind::Http, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(headers["x-out"], "yes");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["path"], "/a//b?c=d");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["proto"], "HTTP/1.1");
        assert_eq!(v["httpPort"], "3000");
        assert_eq!(v["namespace"], "ns");
        assert_eq!(v["pod"], "pod-1");
        assert_eq!(v["ingress"], "");
        assert_eq!(v["service"], "");
        assert_eq!(v["headers"]["X-Foo-Bar"], serde_json::json!(["1"]));
        assert!(v["headers"].get("Host").is_none());
        assert!(v.get("tls").is_none());
    }

    #[tokio::test]
    async fn h2c_listener_rejects_http1() {
        let (status, _, body) = call(ListenerKind::H2c, get("/")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, "Expected h2c request")
        );
        let req = Request::builder()
            .uri("/")
            .header("upgrade", "h2c")
            .body(())
            .unwrap();
        assert_eq!(call(ListenerKind::H2c, req).await.0, StatusCode::OK);
        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://h/")
            .body(())
            .unwrap();
        assert_eq!(call(ListenerKind::H2c, req).await.0, StatusCode::OK);
    }
}
