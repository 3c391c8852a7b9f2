//! Test external authorization services, HTTP and gRPC (Envoy's
//! `envoy.service.auth.v3.Authorization/Check`, served with tonic and envoy-types), with
//! the same decisions so one test can run against either:
//!
//! - `Authorization: Bearer allow` (or any token in [`AuthRules::tokens`]): allowed. The
//!   answer names headers for the upstream request: `x-current-user: <token's user>`,
//!   `x-auth-path: <path the service saw>`, `x-auth-body: <body length it received>`, and
//!   (HTTP only) `x-auth-unlisted: yes`, which a route's allowed response headers may leave
//!   out; the gRPC answer also asks to remove `x-remove-me`.
//! - `Authorization: Bearer forbidden`: 403 with `x-auth-reason: forbidden` and the body
//!   `forbidden by ext auth`.
//! - anything else: 401 with `www-authenticate: Bearer realm="weir-test"` and the body
//!   `denied by ext auth`.
//! - `x-auth-delay-ms: N` on the request: the answer waits N ms first (timeouts).
//!
//! Every check is recorded ([`AuthServer::seen`]): method, path, host, headers and body as
//! the service received them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One check as the auth service received it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub host: String,
    /// Lowercase names; repeated headers joined with `,`.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Who is allowed: bearer token → user name.
#[derive(Debug, Clone)]
pub struct AuthRules {
    pub tokens: BTreeMap<String, String>,
}

impl Default for AuthRules {
    fn default() -> Self {
        Self {
            tokens: [("allow".to_string(), "alice".to_string())].into(),
        }
    }
}

/// A decision, the same for both protocols.
enum Decision {
    Allow {
        user: String,
    },
    Deny {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    },
}

impl AuthRules {
    fn decide(&self, seen: &Seen) -> Decision {
        let token = seen
            .headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if let Some(user) = self.tokens.get(token) {
            return Decision::Allow { user: user.clone() };
        }
        if token == "forbidden" {
            return Decision::Deny {
                status: 403,
                headers: vec![("x-auth-reason", "forbidden".into())],
                body: "forbidden by ext auth",
            };
        }
        Decision::Deny {
            status: 401,
            headers: vec![("www-authenticate", "Bearer realm=\"weir-test\"".into())],
            body: "denied by ext auth",
        }
    }

    fn delay(seen: &Seen) -> Option<Duration> {
        seen.headers
            .get("x-auth-delay-ms")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    }
}

/// A running auth service; stops when dropped.
pub struct AuthServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthServer {
    /// Every check received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The last check received.
    pub fn last(&self) -> Option<Seen> {
        self.seen().pop()
    }

    /// How many checks arrived.
    pub fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The HTTP service on `listener` (HTTP/1.1 and h2c).
    pub fn http(listener: TcpListener, rules: AuthRules) -> Self {
        let addr = listener.local_addr().expect("listener address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let rules = Arc::new(rules);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                let rules = rules.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        let rules = rules.clone();
                        async move { Ok::<_, Infallible>(http_check(req, &rules, &record).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// The gRPC service (`envoy.service.auth.v3.Authorization`) on `listener`, over h2c.
    pub fn grpc(listener: TcpListener, rules: AuthRules) -> Self {
        let addr = listener.local_addr().expect("listener address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = AuthorizationServer::new(GrpcAuth {
            rules,
            seen: seen.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let mut server = server.clone();
                        async move { tower_service::Service::call(&mut server, req).await }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// [`AuthServer::http`] on a new port of 127.0.0.1.
    pub async fn start_http() -> Self {
        Self::http(local().await, AuthRules::default())
    }

    /// [`AuthServer::grpc`] on a new port of 127.0.0.1.
    pub async fn start_grpc() -> Self {
        Self::grpc(local().await, AuthRules::default())
    }
}

async fn local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1")
}

async fn http_check(
    req: Request<Incoming>,
    rules: &AuthRules,
    record: &Mutex<Vec<Seen>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let mut headers = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|old: &mut String| {
                old.push(',');
                old.push_str(&v);
            })
            .or_insert(v);
    }
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        host: parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default(),
        headers,
        body,
    };
    if let Ok(mut s) = record.lock() {
        s.push(seen.clone());
    }
    if let Some(d) = AuthRules::delay(&seen) {
        tokio::time::sleep(d).await;
    }
    let mut b = Response::builder();
    let (status, body) = match rules.decide(&seen) {
        Decision::Allow { user } => {
            b = b
                .header("x-current-user", user)
                .header("x-auth-path", seen.path.as_str())
                .header("x-auth-body", seen.body.len().to_string())
                .header("x-auth-unlisted", "yes");
            (StatusCode::OK, "")
        }
        Decision::Deny {
            status,
            headers,
            body,
        } => {
            for (n, v) in headers {
                b = b.header(n, v);
            }
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                body,
            )
        }
    };
    b.status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

struct GrpcAuth {
    rules: AuthRules,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for GrpcAuth {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let body = if http.raw_body.is_empty() {
            http.body.into_bytes()
        } else {
            http.raw_body
        };
        let seen = Seen {
            method: http.method,
            path: http.path,
            host: http.host,
            headers: http.headers.into_iter().collect(),
            body,
        };
        if let Ok(mut s) = self.seen.lock() {
            s.push(seen.clone());
        }
        if let Some(d) = AuthRules::delay(&seen) {
            tokio::time::sleep(d).await;
        }
        let (code, response) = match self.rules.decide(&seen) {
            Decision::Allow { user } => (
                0,
                HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![
                        header("x-current-user", &user),
                        header("x-auth-path", &seen.path),
                        header("x-auth-body", &seen.body.len().to_string()),
                    ],
                    headers_to_remove: vec!["x-remove-me".into()],
                    ..Default::default()
                }),
            ),
            Decision::Deny {
                status,
                headers,
                body,
            } => (
                if status == 401 { 16 } else { 7 },
                HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(status),
                    }),
                    headers: headers.iter().map(|(n, v)| header(n, v)).collect(),
                    body: body.into(),
                }),
            ),
        };
        Ok(tonic::Response::new(CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status {
                code,
                ..Default::default()
            }),
            http_response: Some(response),
            ..Default::default()
        }))
    }
}
