//! The endpoint picker client (Gateway API Inference Extension): a request whose picked
//! backend is an InferencePool asks the pool's endpoint picker (EPP), an Envoy ext_proc
//! gRPC service (`envoy.service.ext_proc.v3.ExternalProcessor/Process`), which pool
//! endpoint serves it, and goes to exactly that endpoint.
//!
//! One bidirectional stream per request, on one HTTP/2 connection per picker address (kept in
//! [`Pickers`] beside the snapshot, reused by every request):
//! 1. the request headers, then (when there is one) the body, read whole up to the pool's
//!    limit (the model name is in the JSON body; 413 above it), in one message with
//!    `end_of_stream`;
//! 2. the picker's answers, in whatever order it sends them: the headers response (its
//!    header mutation is applied to the upstream request; the chosen endpoints are the
//!    `envoy.lb` / `x-gateway-destination-endpoint` dynamic metadata, else the
//!    `x-gateway-destination-endpoint` header it sets: `ip:port[,ip:port...]`, the first the
//!    choice and the rest fallbacks), the body response when a body was sent (a body
//!    mutation replaces the body), or an `ImmediateResponse`, answered to the client as is;
//! 3. the request goes to the chosen endpoint, then the fallbacks in order when connecting
//!    fails. Only endpoints of the pool are accepted: any other address (or a malformed
//!    one) is an error (503), never a connection;
//! 4. the response headers go to the picker with `envoy.lb` /
//!    `x-gateway-destination-endpoint-served` = the endpoint that served, and the picker's
//!    header mutation is applied to the response; then the stream is closed.
//!
//! Every message waits at most the picker's timeout. When the picker cannot be reached,
//! fails or times out before step 3: `failureMode: FailOpen` sends the request to a pool
//! endpoint of Weir's choosing (round robin); FailClose (the default) answers 503. A
//! failure at step 4 leaves the response as the model server sent it.
//!
//! Only requests whose picked backend is a pool come here, as one boxed future; other
//! routes pay nothing (`request::handle_action`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap as PbHeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, HeaderMutation, HttpBody, HttpHeaders,
    ImmediateResponse, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use http::header::CONTENT_LENGTH;
use http::{HeaderName, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use weir_snapshot::{BackendPolicy, Endpoint, InferencePool, Picker, PickerState, Upstream};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::grpc_stream::{self, GrpcConn};
use crate::state::StateRegistry;
use crate::upstream::{self, PendingUpgrade, UpstreamBody};
use crate::Shared;

/// The request header and `envoy.lb` metadata key naming the chosen endpoint(s).
pub(crate) const DESTINATION: &str = "x-gateway-destination-endpoint";
/// The `envoy.lb` metadata key naming the endpoint that served, sent with the response.
pub(crate) const DESTINATION_SERVED: &str = "x-gateway-destination-endpoint-served";
/// The dynamic metadata namespace of both.
pub(crate) const LB_NAMESPACE: &str = "envoy.lb";

/// One HTTP/2 connection per endpoint picker (or ext_proc processor) address, shared by
/// all requests and kept across snapshot swaps (it reconnects by itself;
/// [`Pickers::retain`] drops those of addresses no snapshot names any more).
#[derive(Default)]
pub(crate) struct Pickers {
    conns: StateRegistry<SocketAddr, GrpcConn>,
}

/// The ext_proc method every stream calls.
const PROCESS: &str = "/envoy.service.ext_proc.v3.ExternalProcessor/Process";

impl Pickers {
    fn conn(&self, addr: SocketAddr) -> Result<Arc<GrpcConn>, String> {
        self.conns.get_or_try_insert(&addr, || {
            GrpcConn::new(addr, PROCESS, Duration::from_secs(2))
        })
    }

    /// Keep the connections of the addresses `live` accepts.
    pub(crate) fn retain(&self, live: impl FnMut(&SocketAddr) -> bool) {
        self.conns.retain(live);
    }
}

fn picker_error(pool: &str, detail: String) -> ProxyError {
    ProxyError::PickerUnavailable {
        pool: pool.into(),
        detail,
    }
}

/// An open ext_proc stream: the one client for endpoint pickers and ExtensionPolicy
/// processors (`crate::ext_proc`). Every answer waits at most `timeout`.
pub(crate) struct Stream {
    inner: grpc_stream::Stream,
}

impl Stream {
    /// Opens a stream to the ext_proc server at `addr` (its connection shared by every
    /// request) and sends `first` on it, in one DATA frame with the stream's HEADERS.
    pub(crate) async fn open(
        shared: &Shared,
        addr: SocketAddr,
        first: impl IntoIterator<Item = ProcessingRequest>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let conn = shared
            .pickers
            .conn(addr)
            .map_err(|e| format!("channel: {e}"))?;
        let mut framed = BytesMut::new();
        for m in first {
            grpc_stream::frame(&m, &mut framed);
        }
        let mut inner = tokio::time::timeout(timeout, conn.open(timeout))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))??;
        inner.send_framed(framed.freeze())?;
        Ok(Self { inner })
    }

    /// Sends one more message (never waits).
    pub(crate) fn send(&mut self, m: ProcessingRequest) -> Result<(), String> {
        self.inner.send(&m)
    }

    /// The next answer; a closed stream is an error.
    pub(crate) async fn next(&mut self) -> Result<ProcessingResponse, String> {
        self.inner.next().await
    }
}

/// What the picker decided for a request.
enum Decision {
    /// Send to these pool endpoints (indexes into the pool's endpoints), in order, with
    /// the request's header mutation and maybe a new body; report back on `stream`.
    Endpoints {
        order: Vec<usize>,
        mutation: Option<HeaderMutation>,
        body: Option<Bytes>,
        stream: Box<Stream>,
    },
    /// Answer the client with this.
    Immediate(ImmediateResponse),
}

/// What the exchange needs from the request phases (owned: the future outlives them).
pub(crate) struct Exchange<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) upstream: &'a Upstream,
    pub(crate) pool: &'a InferencePool,
    pub(crate) parts: http::request::Parts,
    pub(crate) body: UpstreamBody,
    pub(crate) upgrade: Option<PendingUpgrade>,
    pub(crate) client_ip: &'a http::HeaderValue,
    pub(crate) tls: bool,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) policy: Option<(&'a BackendPolicy, &'a str)>,
}

type Boxed<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a>>;

/// The exchange of a request whose backend is an InferencePool (one boxed future).
pub(crate) fn exchange(ex: Exchange<'_>) -> Boxed<'_> {
    Box::pin(run(ex))
}

async fn run(ex: Exchange<'_>) -> Result<Response<ProxyBody>, ProxyError> {
    let Exchange {
        shared,
        upstream,
        pool,
        mut parts,
        body,
        upgrade,
        client_ip,
        tls,
        attempt_timeout,
        policy,
    } = ex;
    let downstream = upstream::Downstream {
        client_ip,
        tls,
        client_cert: None,
    };
    let picker = match &pool.picker {
        PickerState::Unresolved(why) => return Err(ProxyError::InvalidBackend(why.clone())),
        // No picker: balanced like a Service.
        PickerState::None => {
            return upstream::forward_body(
                shared,
                upstream,
                parts,
                body,
                upgrade,
                &downstream,
                attempt_timeout,
                policy,
                None,
            )
            .await
        }
        PickerState::Ready(picker) => picker,
    };
    let body = read_body(&mut parts, body, picker.max_body).await?;
    let pool_name = upstream.name.clone();
    let started = std::time::Instant::now();
    let decision = ask(shared, picker, upstream, &parts, body.as_ref()).await;
    shared
        .metrics
        .picker_observe(started.elapsed(), decision_label(&decision));
    let (order, stream, body) = match decision {
        Ok(Decision::Immediate(answer)) => return Ok(immediate(answer)),
        Ok(Decision::Endpoints {
            order,
            mutation,
            body: new_body,
            stream,
        }) => {
            if let Some(m) = &mutation {
                apply_mutation(&mut parts.headers, m);
            }
            (order, Some(stream), new_body.or(body))
        }
        Err(err @ ProxyError::PickerEndpoint { .. }) => return Err(err),
        Err(err) if picker.fail_open => {
            shared.metrics.picker_fail_open.inc();
            tracing::debug!(pool = %pool_name, error = %err, "endpoint picker failed; failing open");
            (Vec::new(), None, body)
        }
        Err(err) => return Err(err),
    };
    if let Some(b) = &body {
        parts
            .headers
            .insert(CONTENT_LENGTH, http::HeaderValue::from(b.len()));
    }
    let Some(mut stream) = stream else {
        // Failing open: any ready pool endpoint (round robin, connect fallbacks).
        return upstream::forward_body(
            shared,
            upstream,
            parts,
            UpstreamBody::Bytes(body),
            upgrade,
            &downstream,
            attempt_timeout,
            policy,
            None,
        )
        .await;
    };
    // The chosen endpoint, then the fallbacks on connect errors.
    let mut last = None;
    let mut upgrade = upgrade;
    let mut served = None;
    let mut response = None;
    let count = order.len();
    for (n, i) in order.into_iter().enumerate() {
        let Some(endpoint) = upstream.endpoints.get(i).copied() else {
            continue;
        };
        let one = Upstream::new(pool_name.clone(), upstream.protocol, vec![endpoint]);
        let attempt_parts = if n + 1 < count {
            clone_parts(&parts)
        } else {
            std::mem::replace(&mut parts, http::Request::new(()).into_parts().0)
        };
        let result = upstream::forward_body(
            shared,
            &one,
            attempt_parts,
            UpstreamBody::Bytes(body.clone()),
            upgrade.take(),
            &downstream,
            attempt_timeout,
            policy,
            None,
        )
        .await;
        match result {
            Err(err @ ProxyError::UpstreamConnect { .. }) if n + 1 < count => {
                last = Some(err);
            }
            Err(err) => {
                last = Some(err);
                break;
            }
            Ok(r) => {
                served = Some(endpoint);
                response = Some(r);
                break;
            }
        }
    }
    let (Some(mut response), Some(served)) = (response, served) else {
        return Err(last.unwrap_or_else(|| ProxyError::NoHealthyUpstream(pool_name)));
    };
    // Step 4: the response headers to the picker, its mutation onto the response.
    if let Err(err) = report(&mut stream, served, &mut response).await {
        tracing::debug!(pool = %pool_name, error = %err, "endpoint picker response step failed");
    }
    Ok(response)
}

fn decision_label(d: &Result<Decision, ProxyError>) -> &'static str {
    match d {
        Ok(Decision::Endpoints { .. }) => "picked",
        Ok(Decision::Immediate(_)) => "immediate",
        Err(ProxyError::PickerEndpoint { .. }) => "bad_endpoint",
        Err(_) => "error",
    }
}

/// A copy of the request head for an attempt that may be followed by another.
fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut req = http::Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// The request body, read whole up to `limit` (413 above it); `None` without a body.
async fn read_body(
    parts: &mut http::request::Parts,
    body: UpstreamBody,
    limit: usize,
) -> Result<Option<Bytes>, ProxyError> {
    if body.is_end_stream() {
        return Ok(None);
    }
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if let Some(n) = upstream::content_length(&parts.headers) {
        if n > limit64 {
            return Err(ProxyError::BodyTooLarge(limit64));
        }
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge(limit64))
        }
        Err(err) => Err(upstream::client_body_error(err)),
    }
}

pub(crate) fn header_map(headers: &http::HeaderMap, extra: &[(&str, &str)]) -> PbHeaderMap {
    let mut out: Vec<HeaderValue> = extra
        .iter()
        .map(|(k, v)| HeaderValue {
            key: (*k).to_owned(),
            value: String::new(),
            raw_value: v.as_bytes().to_vec(),
        })
        .collect();
    out.extend(headers.iter().map(|(k, v)| HeaderValue {
        key: k.as_str().to_owned(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    }));
    PbHeaderMap { headers: out }
}

/// The request's headers message (pseudo-headers first) and, with a body, the body in one
/// message with `end_of_stream`.
pub(crate) fn request_messages(
    parts: &http::request::Parts,
    body: Option<&Bytes>,
) -> Vec<ProcessingRequest> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let headers = header_map(
        &parts.headers,
        &[
            (":method", parts.method.as_str()),
            (":path", path),
            (":authority", &authority),
            (":scheme", "http"),
        ],
    );
    let mut out = vec![ProcessingRequest {
        request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
            headers: Some(headers),
            attributes: HashMap::new(),
            end_of_stream: body.is_none(),
        })),
        ..Default::default()
    }];
    if let Some(body) = body {
        out.push(ProcessingRequest {
            request: Some(processing_request::Request::RequestBody(HttpBody {
                body: body.to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    out
}

/// Steps 1 and 2: open the stream, send the request, read the decision.
async fn ask(
    shared: &Shared,
    picker: &Picker,
    upstream: &Upstream,
    parts: &http::request::Parts,
    body: Option<&Bytes>,
) -> Result<Decision, ProxyError> {
    let pool = &*upstream.name;
    let fail = |detail: String| picker_error(pool, detail);
    // One picker address per request, round robin over the picker Service's endpoints.
    let addr = pick_address(picker)
        .ok_or_else(|| fail("the picker Service has no ready endpoints".into()))?;
    let first = request_messages(parts, body);
    let mut stream = Stream::open(shared, addr, first, picker.timeout)
        .await
        .map_err(fail)?;
    let mut headers_response = None;
    let mut body_done = body.is_none();
    let mut new_body = None;
    let mut metadata_endpoints = None;
    while headers_response.is_none() || !body_done {
        let message = stream.next().await.map_err(fail)?;
        if metadata_endpoints.is_none() {
            metadata_endpoints = message
                .dynamic_metadata
                .as_ref()
                .and_then(metadata_destination);
        }
        match message.response {
            Some(processing_response::Response::ImmediateResponse(answer)) => {
                return Ok(Decision::Immediate(answer));
            }
            Some(processing_response::Response::RequestHeaders(h)) => {
                headers_response = Some(h.response.unwrap_or_default());
            }
            Some(processing_response::Response::RequestBody(b)) => {
                body_done = true;
                if let Some(body_mutation::Mutation::Body(bytes)) = b
                    .response
                    .and_then(|r| r.body_mutation)
                    .and_then(|m| m.mutation)
                {
                    new_body = Some(Bytes::from(bytes));
                }
            }
            other => {
                return Err(fail(format!(
                    "unexpected message before the request headers response: {:?}",
                    other.map(|_| "response-side or trailers message")
                )))
            }
        }
    }
    let common = headers_response.unwrap_or_default();
    let mutation = common.header_mutation;
    let listed = metadata_endpoints.or_else(|| {
        mutation.as_ref().and_then(|m| {
            m.set_headers.iter().find_map(|o| {
                let h = o.header.as_ref()?;
                h.key
                    .eq_ignore_ascii_case(DESTINATION)
                    .then(|| header_value(h))
            })
        })
    });
    let listed = listed.ok_or_else(|| ProxyError::PickerEndpoint {
        pool: pool.into(),
        detail: "the picker named no endpoint".into(),
    })?;
    let order = pool_endpoints(upstream, &listed)?;
    Ok(Decision::Endpoints {
        order,
        mutation,
        body: new_body,
        stream: Box::new(stream),
    })
}

fn pick_address(picker: &Picker) -> Option<SocketAddr> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = picker.endpoints.len();
    if n == 0 {
        return None;
    }
    picker
        .endpoints
        .get(NEXT.fetch_add(1, Ordering::Relaxed) % n)
        .copied()
}

/// `envoy.lb` / `x-gateway-destination-endpoint` of the picker's dynamic metadata (a
/// string, or a list of strings).
fn metadata_destination(metadata: &Struct) -> Option<String> {
    let lb = match metadata.fields.get(LB_NAMESPACE)?.kind.as_ref()? {
        value::Kind::StructValue(s) => s,
        _ => return None,
    };
    match lb.fields.get(DESTINATION)?.kind.as_ref()? {
        value::Kind::StringValue(s) => Some(s.clone()),
        value::Kind::ListValue(l) => Some(
            l.values
                .iter()
                .filter_map(|v| match v.kind.as_ref()? {
                    value::Kind::StringValue(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

/// A header's value as sent: `raw_value`, or `value` when that is empty.
fn value_bytes(h: &HeaderValue) -> &[u8] {
    if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value
    }
}

/// Whether `key` has exactly one value and it is `value` (a replacing set would not change
/// the map).
fn unchanged(headers: &http::HeaderMap, key: &str, value: &[u8]) -> bool {
    let mut all = headers.get_all(key).iter();
    all.next().is_some_and(|v| v.as_bytes() == value) && all.next().is_none()
}

fn header_value(h: &HeaderValue) -> String {
    String::from_utf8_lossy(value_bytes(h)).into_owned()
}

/// The listed `ip:port`s as indexes of pool endpoints, in order, duplicates dropped. Any
/// address that is malformed or not an endpoint of the pool is an error: the picker is
/// never trusted with an arbitrary address.
fn pool_endpoints(upstream: &Upstream, listed: &str) -> Result<Vec<usize>, ProxyError> {
    let mut order = Vec::new();
    for item in listed.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| ProxyError::PickerEndpoint {
            pool: upstream.name.clone(),
            detail: format!("{item:?} {why}"),
        };
        let addr: SocketAddr = item.parse().map_err(|_| bad("is not an ip:port"))?;
        let i = upstream
            .position(addr)
            .ok_or_else(|| bad("is not a ready endpoint of the pool"))?;
        if !order.contains(&i) {
            order.push(i);
        }
    }
    if order.is_empty() {
        return Err(ProxyError::PickerEndpoint {
            pool: upstream.name.clone(),
            detail: "the picker named no endpoint".into(),
        });
    }
    Ok(order)
}

/// A processor's (or the picker's) mutation of response headers. A processor may echo the
/// response's own headers back: the framing headers stay as the proxy set them.
pub(crate) fn apply_response_mutation(headers: &mut http::HeaderMap, m: &HeaderMutation) {
    let framing = [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
    ];
    let kept = framing.map(|n| {
        let value = headers.get(&n).cloned();
        (n, value)
    });
    apply_mutation(headers, m);
    for (name, value) in kept {
        match value {
            Some(v) => {
                headers.insert(name, v);
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

/// A picker's header mutation applied to a header map: removals, then sets (replacing,
/// or appended when `append` is true). Pseudo-headers and invalid names or values are
/// skipped, and so is a replacing set of the value the header already has alone: pickers
/// echo the request's headers back (the suite's does), and building each name and value
/// again only to replace it with itself is skipped (−2k instructions per pooled request,
/// `callgrind.py --case inference`).
pub(crate) fn apply_mutation(headers: &mut http::HeaderMap, m: &HeaderMutation) {
    for name in &m.remove_headers {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    for option in &m.set_headers {
        let Some(h) = option.header.as_ref() else {
            continue;
        };
        if h.key.starts_with(':') {
            continue;
        }
        #[allow(deprecated)]
        let append = option.append.as_ref().is_some_and(|a| a.value);
        if !append && unchanged(headers, &h.key, value_bytes(h)) {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.key.as_bytes()),
            http::HeaderValue::from_str(&header_value(h)),
        ) else {
            continue;
        };
        if append {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

/// An `ImmediateResponse` as the client's answer.
pub(crate) fn immediate(answer: ImmediateResponse) -> Response<ProxyBody> {
    let status = answer
        .status
        .and_then(|s| u16::try_from(s.code).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| !s.is_informational())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(crate::body::full_body(Bytes::from(answer.body)));
    *response.status_mut() = status;
    if let Some(m) = &answer.headers {
        apply_mutation(response.headers_mut(), m);
    }
    response
}

/// Step 4.
async fn report(
    stream: &mut Stream,
    served: Endpoint,
    response: &mut Response<ProxyBody>,
) -> Result<(), String> {
    let mut lb = Struct::default();
    lb.fields.insert(
        DESTINATION_SERVED.to_owned(),
        Value {
            kind: Some(value::Kind::StringValue(served.addr.to_string())),
        },
    );
    let mut metadata = Metadata::default();
    metadata.filter_metadata.insert(LB_NAMESPACE.to_owned(), lb);
    let status = response.status().as_u16().to_string();
    let message = ProcessingRequest {
        request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(response.headers(), &[(":status", &status)])),
            attributes: HashMap::new(),
            end_of_stream: response.body().is_end_stream(),
        })),
        metadata_context: Some(metadata),
        ..Default::default()
    };
    stream.send(message)?;
    loop {
        let message = stream.next().await?;
        if let Some(processing_response::Response::ResponseHeaders(h)) = message.response {
            if let Some(m) = h.response.and_then(|r| r.header_mutation) {
                apply_response_mutation(response.headers_mut(), &m);
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Upstream {
        Upstream::new(
            "ns/pool",
            weir_snapshot::AppProtocol::Http1,
            vec![
                Endpoint {
                    addr: "127.0.0.1:3000".parse().unwrap_or_else(|_| unreachable!()),
                },
                Endpoint {
                    addr: "127.0.0.2:3000".parse().unwrap_or_else(|_| unreachable!()),
                },
            ],
        )
    }

    #[test]
    fn only_pool_endpoints_are_accepted_in_order() {
        let u = pool();
        assert_eq!(
            pool_endpoints(&u, "127.0.0.2:3000, 127.0.0.1:3000").ok(),
            Some(vec![1, 0])
        );
        assert!(pool_endpoints(&u, "127.0.0.3:3000").is_err());
        assert!(pool_endpoints(&u, "127.0.0.1:3000,10.0.0.1:80").is_err());
        assert!(pool_endpoints(&u, "not-an-address").is_err());
        assert!(pool_endpoints(&u, "").is_err());
    }

    #[test]
    fn mutations_set_append_and_remove() {
        let mut headers = http::HeaderMap::new();
        headers.insert("a", http::HeaderValue::from_static("1"));
        headers.insert("gone", http::HeaderValue::from_static("x"));
        let m = HeaderMutation {
            set_headers: vec![
                envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "a".into(),
                        value: String::new(),
                        raw_value: b"2".to_vec(),
                    }),
                    ..Default::default()
                },
                envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
                    header: Some(HeaderValue {
                        key: ":path".into(),
                        value: "/x".into(),
                        raw_value: Vec::new(),
                    }),
                    ..Default::default()
                },
            ],
            remove_headers: vec!["gone".into()],
        };
        apply_mutation(&mut headers, &m);
        assert_eq!(headers.get("a").map(|v| v.as_bytes()), Some(&b"2"[..]));
        assert!(headers.get("gone").is_none());
        assert_eq!(headers.len(), 1);
    }

    /// A set that echoes a header's only value leaves it; one whose header has two values,
    /// one of them the same, still replaces both with the one.
    #[test]
    fn an_echoed_header_is_left_and_a_repeated_one_replaced() {
        let set =
            |key: &str, value: &str| envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
                header: Some(HeaderValue {
                    key: key.into(),
                    value: value.into(),
                    raw_value: Vec::new(),
                }),
                ..Default::default()
            };
        let mut headers = http::HeaderMap::new();
        headers.insert("same", http::HeaderValue::from_static("v"));
        headers.append("twice", http::HeaderValue::from_static("v"));
        headers.append("twice", http::HeaderValue::from_static("w"));
        headers.insert("other", http::HeaderValue::from_static("old"));
        let m = HeaderMutation {
            set_headers: vec![set("same", "v"), set("twice", "v"), set("Other", "new")],
            remove_headers: Vec::new(),
        };
        apply_mutation(&mut headers, &m);
        assert_eq!(headers.get("same").unwrap(), "v");
        let twice: Vec<_> = headers.get_all("twice").iter().collect();
        assert_eq!(twice, ["v"]);
        assert_eq!(headers.get("other").unwrap(), "new");
        assert_eq!(headers.len(), 3);
    }
}
