//! Forwarding to upstreams: pooled keep-alive clients (HTTP/1.1, and HTTP/2 prior knowledge
//! for `kubernetes.io/h2c`), endpoint fallbacks on connect errors, per-attempt timeouts,
//! hop-by-hop header cleanup, X-Forwarded-For/Proto, and HTTP/1.1 upgrades (WebSocket)
//! tunnelled after a 101.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use weir_snapshot::{AppProtocol, Upstream};

use crate::error::ProxyError;
use crate::request::{BoxError, ProxyBody};
use crate::Shared;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The upstream clients, one per wire protocol; each pools connections per endpoint.
pub(crate) struct Clients {
    http1: Client<HttpConnector, UpstreamBody>,
    h2c: Client<HttpConnector, UpstreamBody>,
}

impl Clients {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(true)
            .build(connector);
        Self { http1, h2c }
    }
}

/// Stage 4: send the request to one endpoint of `upstream` (the round-robin pick, then the
/// others while connecting fails) and return its response, cleaned of hop-by-hop headers.
/// `attempt_timeout` bounds each attempt up to the response headers.
pub(crate) async fn forward(
    shared: &Shared,
    upstream: &Upstream,
    parts: http::request::Parts,
    body: Incoming,
    client_ip: &HeaderValue,
    tls: bool,
    attempt_timeout: Option<Duration>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let body = UpstreamBody::new(body);
    forward_body(
        shared,
        upstream,
        parts,
        body,
        client_ip,
        tls,
        attempt_timeout,
    )
    .await
}

/// [`forward`] with the body already wrapped (mirrors send [`UpstreamBody::empty`]).
pub(crate) async fn forward_body(
    shared: &Shared,
    upstream: &Upstream,
    mut parts: http::request::Parts,
    body: UpstreamBody,
    client_ip: &HeaderValue,
    tls: bool,
    attempt_timeout: Option<Duration>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let attempts = upstream.endpoints.len();
    if attempts == 0 {
        return Err(ProxyError::NoHealthyUpstream(upstream.name.clone()));
    }
    let (client, version) = match upstream.protocol {
        AppProtocol::H2c => (&shared.clients.h2c, Version::HTTP_2),
        AppProtocol::Http1 | AppProtocol::WebSocket => (&shared.clients.http1, Version::HTTP_11),
    };
    let upgrade = if version == Version::HTTP_11 {
        take_upgrade(&mut parts)
    } else {
        None
    };
    prepare_headers(&mut parts.headers, upgrade.as_ref().map(|u| &u.protocol));
    forwarded_headers(&mut parts.headers, client_ip, tls);

    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut headers = Some(parts.headers);
    let mut last_connect_error = None;
    for (attempt, (endpoint, authority)) in upstream.attempts().enumerate() {
        // Built from parts: the authority was formatted when the snapshot was built.
        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTP);
        uri_parts.authority = Some(authority.clone());
        uri_parts.path_and_query = Some(path.clone());
        let uri = Uri::from_parts(uri_parts).map_err(|err| ProxyError::InvalidFilterResult {
            what: "upstream URI",
            value: err.to_string(),
        })?;
        let attempt_headers = if attempt + 1 >= attempts {
            headers.take().unwrap_or_default()
        } else {
            headers.clone().unwrap_or_default()
        };
        let mut req = Request::new(body.share());
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = attempt_headers;

        let sent = client.request(req);
        let result =
            match attempt_timeout {
                Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| {
                    ProxyError::BackendTimeout {
                        upstream: upstream.name.clone(),
                        limit,
                    }
                })?,
                None => sent.await,
            };
        match result {
            Ok(response) => return Ok(into_downstream(response, upgrade)),
            Err(err) if err.is_connect() => {
                shared.metrics.record_connect_error(&upstream.name);
                tracing::warn!(
                    upstream = %upstream.name,
                    endpoint = %endpoint.addr,
                    error = %err,
                    "upstream connect failed"
                );
                last_connect_error = Some(err);
            }
            Err(source) => {
                return Err(ProxyError::UpstreamRequest {
                    upstream: upstream.name.clone(),
                    source,
                })
            }
        }
    }
    match last_connect_error {
        Some(source) => Err(ProxyError::UpstreamConnect {
            upstream: upstream.name.clone(),
            source,
        }),
        None => Err(ProxyError::NoHealthyUpstream(upstream.name.clone())),
    }
}

/// The upstream response as the client gets it: hop-by-hop headers removed, body streamed.
fn into_downstream(
    mut response: Response<Incoming>,
    upgrade: Option<PendingUpgrade>,
) -> Response<ProxyBody> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match upgrade {
        Some(upgrade) if switching => {
            let protocol = response.headers().get(UPGRADE).cloned();
            prepare_headers(response.headers_mut(), protocol.as_ref());
            tunnel(upgrade.downstream, hyper::upgrade::on(&mut response));
        }
        _ => prepare_headers(response.headers_mut(), None),
    }
    response.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

/// A client asked to switch protocols (HTTP/1.1 `Upgrade`, e.g. WebSocket).
struct PendingUpgrade {
    protocol: HeaderValue,
    downstream: OnUpgrade,
}

fn take_upgrade(parts: &mut http::request::Parts) -> Option<PendingUpgrade> {
    if parts.version != Version::HTTP_11 || !connection_has(&parts.headers, "upgrade") {
        return None;
    }
    let protocol = parts.headers.get(UPGRADE)?.clone();
    let downstream = parts.extensions.remove::<OnUpgrade>()?;
    Some(PendingUpgrade {
        protocol,
        downstream,
    })
}

/// Copy bytes both ways once both sides have switched protocols.
fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        if let Err(err) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %err, "upgraded connection ended with an error");
        }
    });
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers: Connection and the headers it names, Keep-Alive,
/// Proxy-Connection, Transfer-Encoding, Upgrade and TE (but `TE: trailers` is kept). With
/// `upgrade`, `Connection: upgrade` and that `Upgrade` are kept for the next hop.
pub(crate) fn prepare_headers(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // Fast path, the common case: one pass over the (few) names finds no hop-by-hop header,
    // instead of a hash lookup per hop-by-hop name.
    if upgrade.is_none() && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    // `Connection: keep-alive` / `close` (what most peers send) names no header to strip
    // beyond the fixed list below: skip collecting the names it lists.
    let names_other_headers = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            !(t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("close"))
        });
    if names_other_headers {
        let listed: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            // A client must not be able to strip the Host the route was chosen by.
            .filter(|name| name != HOST)
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &TE,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
}

/// The X-Forwarded-For value for a client address (IPv4-mapped IPv6 shown as IPv4). Computed
/// once per connection, not per request.
pub(crate) fn client_ip_value(client_ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(client_ip.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Append the client IP to X-Forwarded-For and set X-Forwarded-Proto.
pub(crate) fn forwarded_headers(headers: &mut HeaderMap, client_ip: &HeaderValue, tls: bool) {
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // Fast path, the common case: no X-Forwarded-For from the client yet.
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
        return;
    }
    let mut combined = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if value.to_str().is_ok() {
            combined.extend_from_slice(value.as_bytes());
            combined.extend_from_slice(b", ");
        }
    }
    combined.extend_from_slice(client_ip.as_bytes());
    match HeaderValue::from_maybe_shared(Bytes::from(combined)) {
        Ok(value) => {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        Err(_) => {
            headers.append(X_FORWARDED_FOR.clone(), client_ip.clone());
        }
    }
}

/// The downstream request body, handed to successive attempts: an attempt that fails to
/// connect never polled it, so the next attempt can still send it. The slot is touched once
/// per attempt, by that request only.
pub(crate) struct UpstreamBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    body: Option<Incoming>,
    size_hint: SizeHint,
    end_stream: bool,
}

impl UpstreamBody {
    fn new(body: Incoming) -> Self {
        Self {
            size_hint: body.size_hint(),
            end_stream: body.is_end_stream(),
            slot: Arc::new(Mutex::new(Some(body))),
            body: None,
        }
    }

    /// No body at all.
    pub(crate) fn empty() -> Self {
        Self {
            slot: Arc::new(Mutex::new(None)),
            body: None,
            size_hint: SizeHint::with_exact(0),
            end_stream: true,
        }
    }

    /// A handle for one attempt; the body moves to whichever handle polls it first.
    fn share(&self) -> Self {
        Self {
            slot: self.slot.clone(),
            body: None,
            size_hint: self.size_hint,
            end_stream: self.end_stream,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if this.body.is_none() {
            if this.end_stream {
                return Poll::Ready(None);
            }
            this.body = this
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        match this.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.size_hint,
        }
    }
}

#[cfg(test)]
mod tests;
