//! The gRPC auth service: `envoy.service.auth.v3.Authorization/Check` (Envoy's pre-generated
//! types from envoy-types) over a tonic channel. One channel per auth configuration
//! ([`ExtAuthClients`], keyed by `ExtAuth::id`, which covers the upstream's endpoints and
//! TLS settings), created on first use, multiplexing every check over one HTTP/2
//! connection, reconnecting (next endpoint first) when it breaks; pruned after a swap that
//! drops the configuration.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HeaderValueOption, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::header::HOST;
use http::{HeaderName, HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};
use weir_snapshot::{ExtAuth, Upstream};

use super::{denial, never_copied, selected_headers, Failure, Verdict};
use crate::client_policy::ClientAddr;
use crate::error::ProxyError;
use crate::outbound::{connect_tcp, TcpConnectError};
use crate::state::StateRegistry;
use crate::Shared;

/// The gRPC channels of the ext auth configurations in use, by `ExtAuth::id`.
#[derive(Default)]
pub(crate) struct ExtAuthClients {
    channels: StateRegistry<u64, Channel>,
}

impl ExtAuthClients {
    /// Keep only the channels of these configuration ids (after a swap).
    pub(crate) fn retain(&self, live: &std::collections::HashSet<u64>) {
        self.channels.retain(|id| live.contains(id));
    }

    fn channel(
        &self,
        shared: &Shared,
        auth: &ExtAuth,
        upstream: &Upstream,
    ) -> Result<Arc<Channel>, ProxyError> {
        self.channels.get_or_try_insert(&auth.id, || {
            let tls = shared.clients.grpc_tls(upstream)?;
            let first = upstream
                .endpoints
                .first()
                .ok_or_else(|| ProxyError::NoHealthyUpstream(upstream.name.clone()))?;
            let origin = match &tls {
                Some((_, name)) => format!("https://{}", name.to_str()),
                None => format!("http://{}", first.addr),
            };
            let endpoint = Endpoint::from_shared(origin)
                .map_err(|e| ProxyError::ExtAuthInvalid(e.to_string().into()))?
                .connect_timeout(auth.timeout)
                .timeout(auth.timeout);
            let connector = Connector {
                endpoints: upstream.endpoints.iter().map(|e| e.addr).collect(),
                next: Arc::new(AtomicUsize::new(0)),
                tls: tls.map(Arc::new),
                timeout: auth.timeout,
            };
            Ok(endpoint.connect_with_connector_lazy(connector))
        })
    }
}

pub(super) async fn check(
    shared: &Shared,
    auth: &ExtAuth,
    upstream: &Upstream,
    parts: &mut http::request::Parts,
    body: Option<&Bytes>,
) -> Result<Verdict, Failure> {
    let channel = match shared.ext_auth.channel(shared, auth, upstream) {
        Ok(c) => c,
        Err(e) => return Err(Failure(e.to_string())),
    };
    let request = check_request(auth, parts, body);
    let mut client = AuthorizationClient::new((*channel).clone());
    let response = client
        .check(request)
        .await
        .map_err(|status| Failure(format!("Check failed: {status}")))?
        .into_inner();
    let ok = response.status.as_ref().is_some_and(|s| s.code == 0);
    match (ok, response.http_response) {
        (true, ok_response) => {
            if let Some(HttpResponse::OkResponse(ok)) = ok_response {
                for name in &ok.headers_to_remove {
                    if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                        // Envoy never lets the service remove Host or pseudo-headers.
                        if name != HOST {
                            parts.headers.remove(&name);
                        }
                    }
                }
                for option in &ok.headers {
                    apply(&mut parts.headers, option);
                }
            }
            Ok(Verdict::Continue)
        }
        (false, Some(HttpResponse::DeniedResponse(denied))) => {
            let status = denied
                .status
                .as_ref()
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|s| s.as_u16() >= 200)
                .unwrap_or(StatusCode::FORBIDDEN);
            let headers = denied.headers.iter().filter_map(|o| {
                let h = o.header.as_ref()?;
                Some((
                    HeaderName::from_bytes(h.key.as_bytes()).ok()?,
                    header_value(h)?,
                ))
            });
            Ok(Verdict::Answer(denial(
                status,
                headers.collect::<Vec<_>>(),
                Bytes::from(denied.body),
            )))
        }
        (false, _) => Ok(Verdict::Answer(denial(
            StatusCode::FORBIDDEN,
            Vec::new(),
            Bytes::new(),
        ))),
    }
}

fn header_value(h: &envoy_types::pb::envoy::config::core::v3::HeaderValue) -> Option<HeaderValue> {
    if h.raw_value.is_empty() {
        HeaderValue::from_str(&h.value).ok()
    } else {
        HeaderValue::from_bytes(&h.raw_value).ok()
    }
}

/// One header mutation of an OK answer. Envoy: `append` unset or false overwrites (in
/// this message), true appends; `append_action` when `append` is unset.
fn apply(headers: &mut http::HeaderMap, option: &HeaderValueOption) {
    let Some(h) = option.header.as_ref() else {
        return;
    };
    let (Ok(name), Some(value)) = (HeaderName::from_bytes(h.key.as_bytes()), header_value(h))
    else {
        return;
    };
    if never_copied(&name) {
        return;
    }
    // `append` is deprecated in favour of `append_action`, and still what ext_authz servers
    // send; Envoy reads it first.
    #[allow(deprecated)]
    let append = option.append.as_ref().map(|b| b.value);
    match append {
        Some(true) => {
            headers.append(name, value);
        }
        Some(false) => {
            headers.insert(name, value);
        }
        None => match HeaderAppendAction::try_from(option.append_action) {
            Ok(HeaderAppendAction::AddIfAbsent) => {
                if !headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
            Ok(HeaderAppendAction::OverwriteIfExists) => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
            _ => {
                headers.insert(name, value);
            }
        },
    }
}

/// The `CheckRequest` for this request: its HTTP attributes (method, path, host, scheme,
/// protocol, size, the selected headers; the body when forwarded) and the client address.
fn check_request(
    auth: &ExtAuth,
    parts: &http::request::Parts,
    body: Option<&Bytes>,
) -> CheckRequest {
    let mut headers = std::collections::HashMap::new();
    for (name, value) in selected_headers(&parts.headers, auth.allowed_headers.as_deref(), &[]) {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    headers
        .entry(":authority".into())
        .or_insert_with(|| host.clone());
    headers.insert(":method".into(), parts.method.to_string());
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.to_string());
    headers.insert(":path".into(), path.clone());
    let size = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(-1);
    let (body_text, raw_body) = match body {
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (s.to_string(), Vec::new()),
            Err(_) => (String::new(), b.to_vec()),
        },
        None => (String::new(), Vec::new()),
    };
    let source = parts.extensions.get::<ClientAddr>().map(|c| Peer {
        address: Some(socket_address_of(c.0)),
        ..Default::default()
    });
    CheckRequest {
        attributes: Some(AttributeContext {
            source,
            request: Some(Request {
                http: Some(HttpRequest {
                    id: parts
                        .headers
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    method: parts.method.to_string(),
                    headers,
                    path,
                    host,
                    scheme: parts.uri.scheme_str().unwrap_or("http").to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    size,
                    protocol: format!("{:?}", parts.version),
                    body: body_text,
                    raw_body,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn socket_address_of(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// A stream to the auth service: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Tls = (
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// Connects the channel to the upstream's endpoints in turn (the next one after a broken
/// connection), with its BackendTLSPolicy's TLS (ALPN h2) when it has one.
#[derive(Clone)]
struct Connector {
    endpoints: Arc<[SocketAddr]>,
    next: Arc<AtomicUsize>,
    tls: Option<Arc<Tls>>,
    timeout: Duration,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<Box<dyn Io>>, std::io::Error>> + Send>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let n = this.endpoints.len();
            let start = this.next.fetch_add(1, Ordering::Relaxed);
            let mut last = std::io::Error::other("the auth service has no endpoints");
            for k in 0..n {
                let addr = this.endpoints[(start + k) % n];
                let tcp = match connect_tcp(addr, this.timeout).await {
                    Ok(tcp) => tcp,
                    Err(TcpConnectError::Io(e)) => {
                        last = e;
                        continue;
                    }
                    Err(TcpConnectError::Timeout(_)) => {
                        last = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("connect to {addr} timed out"),
                        );
                        continue;
                    }
                };
                let io: Box<dyn Io> = match &this.tls {
                    None => Box::new(tcp),
                    Some(tls) => {
                        let connector = tokio_rustls::TlsConnector::from(tls.0.clone());
                        match tokio::time::timeout(
                            this.timeout,
                            connector.connect(tls.1.clone(), tcp),
                        )
                        .await
                        {
                            Ok(Ok(s)) => Box::new(s),
                            Ok(Err(e)) => {
                                last = e;
                                continue;
                            }
                            Err(_) => {
                                last = std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    format!("TLS handshake with {addr} timed out"),
                                );
                                continue;
                            }
                        }
                    }
                };
                this.next.store((start + k) % n, Ordering::Relaxed);
                return Ok(TokioIo::new(io));
            }
            Err(last)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeader;
    use envoy_types::pb::google::protobuf::BoolValue;

    #[allow(deprecated)]
    fn option(
        key: &str,
        value: &str,
        append: Option<bool>,
        action: HeaderAppendAction,
    ) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PbHeader {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append: append.map(|value| BoolValue { value }),
            append_action: action as i32,
            ..Default::default()
        }
    }

    fn get(h: &http::HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn ok_header_mutations_follow_envoy() {
        let mut h = http::HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("client"));
        h.insert("x-b", HeaderValue::from_static("client"));
        // `append` unset and the default action: overwrite (this message's default).
        apply(
            &mut h,
            &option("x-a", "auth", None, HeaderAppendAction::AppendIfExistsOrAdd),
        );
        assert_eq!(get(&h, "x-a"), ["auth"]);
        // `append: true`: appended.
        apply(
            &mut h,
            &option(
                "x-b",
                "auth",
                Some(true),
                HeaderAppendAction::AppendIfExistsOrAdd,
            ),
        );
        assert_eq!(get(&h, "x-b"), ["client", "auth"]);
        // ADD_IF_ABSENT keeps what is there; OVERWRITE_IF_EXISTS adds nothing new.
        apply(
            &mut h,
            &option("x-a", "again", None, HeaderAppendAction::AddIfAbsent),
        );
        assert_eq!(get(&h, "x-a"), ["auth"]);
        apply(
            &mut h,
            &option("x-new", "v", None, HeaderAppendAction::OverwriteIfExists),
        );
        assert!(get(&h, "x-new").is_empty());
        // Never framing headers or Host.
        apply(
            &mut h,
            &option(
                "host",
                "evil",
                None,
                HeaderAppendAction::AppendIfExistsOrAdd,
            ),
        );
        apply(
            &mut h,
            &option(
                "content-length",
                "9",
                None,
                HeaderAppendAction::AppendIfExistsOrAdd,
            ),
        );
        assert!(get(&h, "host").is_empty() && get(&h, "content-length").is_empty());
    }
}
