//! OpenTelemetry tracing: one SERVER span per proxied request, W3C trace context
//! (`traceparent`, `tracestate`) propagated to the backend, spans exported over OTLP (gRPC or
//! HTTP/protobuf) off the request path. Off unless `--otlp-endpoint` is given: then
//! `Shared::tracing` is `None` and a request pays one branch on it.
//!
//! The span starts when the request arrives ([`Tracing::start_span`], before routing): its
//! parent is the client's `traceparent` if it sent a valid one (same trace id, parent-based
//! sampling honours the client's sampled flag), else it is a new root sampled at
//! `--trace-sample`. The client's `traceparent` and `tracestate` are replaced by ours, so the
//! backend's spans are children of Weir's. The span ends when the response body has been
//! sent or dropped ([`Traced`]); its name (`METHOD route`), status and response attributes
//! are set when the response headers are known ([`finish`]).
//!
//! Spans are made by the OpenTelemetry SDK (`opentelemetry_sdk`) and exported by
//! `opentelemetry-otlp`. Between them sits [`Queue`], a span processor of our own instead of
//! the SDK's `BatchSpanProcessor`, because that one keeps the count of spans it drops to
//! itself: ours hands a finished span to a bounded channel (`try_send`, never blocking a
//! request), counts what does not fit in `weir_trace_spans_dropped_total`, and one tokio task
//! batches and exports.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span as SdkSpan, SpanData, SpanExporter as _,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use pin_project_lite::pin_project;
use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};

use crate::body::{BoxError, ProxyBody};
use crate::conn::ConnCtx;

/// Finished spans waiting for the exporter; beyond this they are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans sent in one export request at most.
const BATCH: usize = 512;
/// How long the exporter gathers spans after the first of a batch before sending.
const DELAY: Duration = Duration::from_millis(500);
/// One export request may take this long; then its spans count as dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`TraceService/Export`), the collector's port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, `POST {endpoint}/v1/traces`, the collector's port 4318.
    Http,
}

/// Tracing settings (from `--otlp-endpoint`, `--otlp-protocol`, `--trace-sample`).
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The collector: `http://host:4317` (gRPC) or `http://host:4318` (HTTP; `/v1/traces`
    /// is appended unless the URL already ends with it).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// The fraction of new traces (requests without a `traceparent`) that are sampled,
    /// 0..=1. A request with a `traceparent` follows its sampled flag.
    pub sample: f64,
}

/// The tracer of one proxy and its export task.
pub(crate) struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Tracing {
    /// Build the exporter and start the export task (needs a tokio runtime).
    pub(crate) fn start(config: &TraceConfig, dropped: IntCounter) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "tracing needs a tokio runtime".to_string())?;
        let resource = Resource::builder().with_service_name("weir").build();
        let mut exporter = exporter(config)?;
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let task = runtime.spawn(export_loop(rx, stop_rx, exporter, dropped.clone()));
        let root = if config.sample >= 1.0 {
            Sampler::AlwaysOn
        } else if config.sample > 0.0 {
            Sampler::TraceIdRatioBased(config.sample)
        } else {
            Sampler::AlwaysOff
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(root)))
            .with_span_processor(Queue { tx, dropped })
            .build();
        Ok(Self {
            tracer: provider.tracer("weir"),
            provider,
            propagator: TraceContextPropagator::new(),
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Start the request's span (child of the client's `traceparent`, if valid) and put our
    /// trace context into the request in place of the client's.
    pub(crate) fn start_span<B>(&self, conn: &ConnCtx, req: &mut Request<B>) -> Box<RequestSpan> {
        let parent = self.propagator.extract(&Headers(req.headers()));
        let mut span = self
            .tracer
            .span_builder(Cow::Borrowed("HTTP"))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            span.set_attributes(request_attributes(conn, req));
        }
        // Ours replaces the client's (the propagator's `inject` formats through core::fmt:
        // about 1,000 instructions a request more than this).
        let context = span.span_context();
        let headers = req.headers_mut();
        headers.insert(TRACEPARENT.clone(), traceparent(context));
        let state = context.trace_state().header();
        match HeaderValue::from_str(&state) {
            Ok(value) if !state.is_empty() => {
                headers.insert(TRACESTATE.clone(), value);
            }
            _ => {
                headers.remove(&TRACESTATE);
            }
        }
        Box::new(RequestSpan { span })
    }

    /// Export what is queued (within `timeout`) and stop the export task.
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
            }
        }
        // Spans ended from now on go nowhere (the SDK drops them after shutdown).
        let _ = self.provider.shutdown();
    }
}

/// `00-{trace id}-{span id}-{flags}`, version 00 of W3C Trace Context.
fn traceparent(context: &opentelemetry::trace::SpanContext) -> HeaderValue {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    push_hex(&mut s, &context.trace_id().to_bytes());
    s.push('-');
    push_hex(&mut s, &context.span_id().to_bytes());
    s.push_str(if context.is_sampled() { "-01" } else { "-00" });
    // Hex digits and dashes: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The request method as an attribute value, without a copy for the standard ones.
fn method_value(method: &http::Method) -> opentelemetry::Value {
    use http::Method as M;
    let name: &'static str = match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        // Semantic conventions: other methods are reported as _OTHER.
        _ => "_OTHER",
    };
    name.into()
}

/// What the request's span needs at its start: the request as it arrived.
fn request_attributes<B>(conn: &ConnCtx, req: &Request<B>) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new(
        "http.request.method",
        method_value(req.method()),
    ));
    attributes.push(KeyValue::new("url.path", req.uri().path().to_string()));
    attributes.push(KeyValue::new(
        "url.scheme",
        if conn.tls { "https" } else { "http" },
    ));
    attributes.push(KeyValue::new(
        "network.protocol.version",
        match req.version() {
            http::Version::HTTP_09 => "0.9",
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_11 => "1.1",
            http::Version::HTTP_2 => "2",
            _ => "3",
        },
    ));
    // The connection's peer as X-Forwarded-For spells it (IPv4-mapped IPv6 as IPv4), one
    // shared string for both attributes.
    let peer: Arc<str> = Arc::from(String::from_utf8_lossy(conn.client_ip.as_bytes()));
    attributes.push(KeyValue::new("network.peer.address", peer.clone()));
    attributes.push(KeyValue::new(
        "network.peer.port",
        i64::from(conn.peer.port()),
    ));
    // The client: the one a ClientTrafficPolicy's clientIPDetection found, else the peer.
    match req.extensions().get::<crate::client_policy::ClientAddr>() {
        Some(client) => attributes.push(KeyValue::new(
            "client.address",
            client.0.ip().to_canonical().to_string(),
        )),
        None => attributes.push(KeyValue::new("client.address", peer)),
    }
    if let Some(agent) = req.headers().get(http::header::USER_AGENT) {
        attributes.push(KeyValue::new(
            "user_agent.original",
            String::from_utf8_lossy(agent.as_bytes()).into_owned(),
        ));
    }
    attributes
}

/// A request's span, boxed so that a request without one pays a pointer.
pub(crate) struct RequestSpan {
    span: SdkSpan,
}

impl RequestSpan {
    /// The trace id, for the access log.
    pub(crate) fn trace_id(&self) -> TraceId {
        self.span.span_context().trace_id()
    }
}

/// What the log phase knows of a request when its response headers are ready.
pub(crate) struct Outcome<'a> {
    pub(crate) method: &'a http::Method,
    pub(crate) host: &'a str,
    pub(crate) gateway: Option<&'a Arc<str>>,
    pub(crate) route: Option<&'a Arc<str>>,
    pub(crate) backend: Option<&'a Arc<str>>,
}

/// The log phase: name the span after the route, record the response, and end the span
/// with the response body.
pub(crate) fn finish(
    mut span: Box<RequestSpan>,
    outcome: &Outcome<'_>,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let s = &mut span.span;
    if !s.is_recording() {
        // Not sampled: nothing to record or export; the span is dropped here.
        return response;
    }
    // Low cardinality: the method and the route's name, never the raw path.
    let method = outcome.method.as_str();
    let mut name = String::with_capacity(method.len() + 1 + outcome.route.map_or(0, |r| r.len()));
    name.push_str(method);
    if let Some(route) = outcome.route {
        name.push(' ');
        name.push_str(route);
    }
    s.update_name(name);
    let status = response.status().as_u16();
    let mut attributes = Vec::with_capacity(6);
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if !outcome.host.is_empty() {
        attributes.push(KeyValue::new("server.address", outcome.host.to_string()));
    }
    for (key, value) in [
        ("weir.gateway", outcome.gateway),
        ("weir.route", outcome.route),
        ("weir.backend", outcome.backend),
    ] {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value.clone()));
        }
    }
    if let Some(endpoint) = response
        .extensions()
        .get::<crate::access_log::UpstreamEndpoint>()
    {
        let mut addr = String::with_capacity(24);
        crate::access_log::push_addr(&mut addr, endpoint.0);
        attributes.push(KeyValue::new("weir.upstream", addr));
    }
    if status >= 500 {
        attributes.push(KeyValue::new("error.type", status.to_string()));
        s.set_status(Status::error(""));
    }
    s.set_attributes(attributes);
    response.map(|body| {
        use http_body_util::BodyExt as _;
        Traced {
            inner: body,
            _span: span,
        }
        .boxed_unsync()
    })
}

pin_project! {
    /// The response body, holding the request's span: the span ends (the SDK ends a span
    /// when it is dropped) when hyper drops the body, after its last frame or when the
    /// client went away.
    pub(crate) struct Traced {
        #[pin]
        inner: ProxyBody,
        _span: Box<RequestSpan>,
    }
}

impl Body for Traced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `TraceId` as 32 lowercase hex digits.
pub(crate) fn push_trace_id(out: &mut String, id: TraceId) {
    push_hex(out, &id.to_bytes());
}

/// Bytes as lowercase hex digits.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The OTLP exporter for the configured protocol.
fn exporter(config: &TraceConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    let built = match config.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(http_traces_url(&config.endpoint))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    };
    built.map_err(|e| format!("OTLP exporter for {}: {e}", config.endpoint))
}

/// The OTLP/HTTP traces URL for a collector's base URL.
fn http_traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The span processor: finished, sampled spans into a bounded queue, drops counted.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
    dropped: IntCounter,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut SdkSpan, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: gathers spans into batches (up to [`BATCH`], or what arrived within
/// [`DELAY`] of a batch's first span) and exports one batch at a time; spans of a failed
/// export count as dropped. On stop, exports what is queued and returns.
async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    mut stop: watch::Receiver<bool>,
    exporter: opentelemetry_otlp::SpanExporter,
    dropped: IntCounter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => batch.push(span),
                None => stopping = true,
            },
            _ = stop.wait_for(|stop| *stop) => stopping = true,
        }
        let deadline = tokio::time::Instant::now() + DELAY;
        while !stopping && batch.len() < BATCH {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => stopping = true,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.wait_for(|stop| *stop) => stopping = true,
            }
        }
        if stopping {
            while batch.len() < QUEUE {
                match rx.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let count = spans.len() as u64;
        let failed = match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".to_string()),
        };
        if let Some(error) = failed {
            dropped.inc_by(count);
            static EXPORT_FAILED: crate::LogLimit =
                crate::LogLimit::new(1, Duration::from_secs(60));
            if let Some(suppressed) = EXPORT_FAILED.admit() {
                tracing::warn!(%error, spans = count, suppressed, "span export failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_traces_url_is_the_collector_base_plus_v1_traces() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn traceparent_is_w3c_version_00() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
        let trace =
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID);
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID);
        for (flags, want) in [(TraceFlags::SAMPLED, "01"), (TraceFlags::default(), "00")] {
            let context = SpanContext::new(trace, span, flags, false, TraceState::default());
            assert_eq!(
                traceparent(&context),
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{want}").as_str()
            );
        }
    }

    #[test]
    fn trace_ids_are_32_lowercase_hex_digits() {
        let mut s = String::new();
        push_trace_id(
            &mut s,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
        );
        assert_eq!(s, "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut s = String::new();
        push_trace_id(&mut s, TraceId::from_bytes([0; 16]));
        assert_eq!(s, "0".repeat(32));
    }
}
