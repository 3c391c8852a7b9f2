//! Requests (method, Host, path and query, headers) routed through a fixed snapshot the way
//! the proxy routes them (`weir-proxy/src/request.rs`: `*` only for OPTIONS, the path
//! normalised or refused, the lowercased Host → listener by the socket's host index →
//! `Listener::find_route`). Nothing may panic, and each route a request reaches must be one
//! whose conditions a plain reference implementation, written here from the Gateway API
//! text, says the request meets — and the more specific routes must win:
//!
//! | route | hostnames | match |
//! | --- | --- | --- |
//! | `exact` | `exact.test` | Exact `/exact/a.b` |
//! | `prefix` | `exact.test` | PathPrefix `/prefix/` |
//! | `methods` | `exact.test` | PathPrefix `/m`, POST, header `X-Env: prod`, query `q=v` |
//! | `regex` | `*.wild.test` | RegularExpression `/re/[a-z]+/[0-9]{1,3}`, header `X-Id` ~ `[0-9]+` |
//! | `fallback` | (any) | PathPrefix `/` |
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use weir_fuzz::Bounded;
use weir_snapshot::{path, RequestView, Snapshot};

#[global_allocator]
static ALLOC: Bounded = Bounded;

const MANIFEST: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact}
spec:
  parentRefs: [{name: gw}]
  hostnames: [exact.test]
  rules:
  - matches: [{path: {type: Exact, value: /exact/a.b}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: prefix}
spec:
  parentRefs: [{name: gw}]
  hostnames: [exact.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /prefix/}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: methods}
spec:
  parentRefs: [{name: gw}]
  hostnames: [exact.test]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /m}
      method: POST
      headers: [{name: X-Env, value: prod}]
      queryParams: [{name: q, value: v}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: regex}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["*.wild.test"]
  rules:
  - matches:
    - path: {type: RegularExpression, value: "/re/[a-z]+/[0-9]{1,3}"}
      headers: [{type: RegularExpression, name: X-Id, value: "[0-9]+"}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fallback}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: svc, port: 80}]
"#;

/// The snapshot, built once from [`MANIFEST`] through file mode and the translator.
fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let dir = weir_fuzz::scratch_dir();
        if let Err(err) = std::fs::write(dir.join("routes.yaml"), MANIFEST) {
            panic!("cannot write the manifest: {err}");
        }
        let report = weir_sources::file::load_dir(dir, weir_fuzz::now());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let out = weir_fuzz::translate(&report.store, weir_translate::Memo::default());
        for s in &out.statuses {
            let problems = s.problems();
            assert!(problems.is_empty(), "{} {}: {problems:?}", s.kind, s.key);
        }
        out.snapshot
    })
}

/// A piece of a request path: the parts that matter to normalisation and to the routes,
/// and anything else.
#[derive(Arbitrary, Debug)]
enum Piece {
    Slash,
    Dot,
    DotDot,
    /// `%` and two hex digits of this byte.
    Escape(u8),
    Semicolon,
    Backslash,
    Name(RouteWord),
    Text(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RouteWord {
    Exact,
    AB,
    Prefix,
    M,
    Re,
    Digits,
}

impl RouteWord {
    fn text(self) -> &'static str {
        match self {
            RouteWord::Exact => "exact",
            RouteWord::AB => "a.b",
            RouteWord::Prefix => "prefix",
            RouteWord::M => "m",
            RouteWord::Re => "re",
            RouteWord::Digits => "123",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum HostPick {
    Exact,
    Wild(String),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderPick {
    Env,
    Id,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Request {
    method: Result<u8, String>,
    host: HostPick,
    /// Upper-case letters in the Host (the proxy lowercases it).
    shout: bool,
    /// A target other than a path (`*`) when set.
    asterisk: bool,
    path: Vec<Piece>,
    query: Option<Vec<(String, String)>>,
    headers: Vec<(HeaderPick, String)>,
}

const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
];

impl Request {
    fn method(&self) -> Option<Method> {
        match &self.method {
            Ok(i) => METHODS.get(usize::from(*i) % METHODS.len()).cloned(),
            Err(name) => Method::from_bytes(name.as_bytes()).ok(),
        }
    }

    fn host(&self) -> String {
        let host = match &self.host {
            HostPick::Exact => "exact.test".to_string(),
            HostPick::Wild(labels) => format!("{labels}.wild.test"),
            HostPick::Other(host) => host.clone(),
        };
        if self.shout {
            host.to_ascii_uppercase()
        } else {
            host
        }
    }

    fn target(&self) -> String {
        if self.asterisk {
            return "*".to_string();
        }
        let mut target = String::from("/");
        for piece in &self.path {
            match piece {
                Piece::Slash => target.push('/'),
                Piece::Dot => target.push('.'),
                Piece::DotDot => target.push_str(".."),
                Piece::Escape(b) => target.push_str(&format!("%{b:02X}")),
                Piece::Semicolon => target.push(';'),
                Piece::Backslash => target.push('\\'),
                Piece::Name(word) => target.push_str(word.text()),
                Piece::Text(text) => target.push_str(text),
            }
        }
        if let Some(query) = &self.query {
            target.push('?');
            let pairs: Vec<String> = query.iter().map(|(n, v)| format!("{n}={v}")).collect();
            target.push_str(&pairs.join("&"));
        }
        target
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = match name {
                HeaderPick::Env => HeaderName::from_static("x-env"),
                HeaderPick::Id => HeaderName::from_static("x-id"),
                HeaderPick::Other(name) => match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(name) => name,
                    Err(_) => continue,
                },
            };
            // What hyper would not accept never reaches routing.
            let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) else {
                continue;
            };
            headers.append(name, value);
        }
        headers
    }
}

/// A header's values as routing sees them: one value, or several joined with `,`; `None`
/// when absent or not visible ASCII.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Option<Vec<&str>> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    let values = values?;
    (!values.is_empty()).then(|| values.join(","))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte (a `%`
/// without two hex digits stays), invalid UTF-8 replaced.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of query parameter `name`, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(n) == name).then(|| form_decode(v))
    })
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// Which routes' conditions the request meets, by the Gateway API text.
struct Reference {
    exact: bool,
    prefix: bool,
    methods: bool,
    regex: bool,
}

fn reference(
    method: &Method,
    host: &str,
    path: &str,
    query: Option<&str>,
    h: &HeaderMap,
) -> Reference {
    static PATH_RE: OnceLock<regex::Regex> = OnceLock::new();
    static ID_RE: OnceLock<regex::Regex> = OnceLock::new();
    let path_re = PATH_RE.get_or_init(|| {
        regex::Regex::new("^/re/[a-z]+/[0-9]{1,3}$").unwrap_or_else(|e| panic!("{e}"))
    });
    let id_re =
        ID_RE.get_or_init(|| regex::Regex::new("^[0-9]+$").unwrap_or_else(|e| panic!("{e}")));
    let exact_host = host == "exact.test";
    let wild_host = host.len() > ".wild.test".len() && host.ends_with(".wild.test");
    Reference {
        exact: exact_host && path == "/exact/a.b",
        prefix: exact_host && under(path, "/prefix"),
        methods: exact_host
            && under(path, "/m")
            && *method == Method::POST
            && header(h, "x-env").as_deref() == Some("prod")
            && query_param(query, "q").as_deref() == Some("v"),
        regex: wild_host
            && path_re.is_match(path)
            && header(h, "x-id").is_some_and(|v| id_re.is_match(&v)),
    }
}

fuzz_target!(|req: Request| {
    let snapshot = snapshot();
    let Some(method) = req.method() else { return };
    // What hyper parses as a request target (else 400 before routing).
    let Ok(target) = http::uri::PathAndQuery::try_from(req.target()) else {
        return;
    };
    let raw = target.path();
    if raw == "*" && method != Method::OPTIONS {
        return; // 400
    }
    let Ok(normal) = path::normalize(raw) else {
        return; // 400
    };
    let host = req.host().to_ascii_lowercase();
    let headers = req.headers();
    let Some(socket) = snapshot.socket(None, 80) else {
        panic!("no socket for port 80");
    };
    let Some(listener) = socket.listener_for_host(&host) else {
        panic!("{host:?}: no listener, though the only one takes every host");
    };
    let view = RequestView {
        method: &method,
        path: &normal,
        query: target.query(),
        headers: &headers,
    };
    let Some(entry) = listener.find_route(&host, &view) else {
        panic!("{req:?}: no route, though `fallback` takes every request");
    };
    let r = reference(&method, &host, &normal, target.query(), &headers);
    let route = &*entry.action.route.route;
    let ctx = || {
        format!(
            "{method} {host} {normal:?} {:?} {headers:?}",
            target.query()
        )
    };
    match route {
        "default/exact" => assert!(r.exact, "{}: routed to exact", ctx()),
        "default/prefix" => assert!(r.prefix && !r.exact, "{}: routed to prefix", ctx()),
        "default/methods" => assert!(r.methods && !r.exact, "{}: routed to methods", ctx()),
        "default/regex" => assert!(r.regex, "{}: routed to regex", ctx()),
        "default/fallback" => assert!(
            !(r.exact || r.prefix || r.methods || r.regex),
            "{}: fell back, though a more specific route matches",
            ctx()
        ),
        other => panic!("{}: routed to {other}", ctx()),
    }
});
