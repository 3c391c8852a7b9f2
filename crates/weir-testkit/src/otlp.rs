//! A small OTLP trace receiver standing in for an OpenTelemetry Collector: one loopback port
//! serving both transports the OTLP exporter speaks, and recording every span it gets.
//!
//! - gRPC: `POST /opentelemetry.proto.collector.trace.v1.TraceService/Export` over h2c
//!   (length-prefixed protobuf message; answers an empty `ExportTraceServiceResponse` and
//!   `grpc-status: 0` in trailers, as a collector does);
//! - OTLP/HTTP: `POST /v1/traces` with an `application/x-protobuf` body (answers 200 with an
//!   empty protobuf response).
//!
//! Messages are decoded with the `opentelemetry-proto` types, so what the tests check is what
//! a collector would have read.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use tokio::net::TcpListener;

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const HTTP_PATH: &str = "/v1/traces";

/// How a span reached the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// One span as received, ids in lowercase hex (the W3C `traceparent` spelling).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub transport: Transport,
    /// The resource's `service.name`.
    pub service: Option<String>,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub name: String,
    /// OTLP `SpanKind`: 2 is SERVER.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// Attribute values as strings (integers in decimal).
    pub attributes: BTreeMap<String, String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Recorded {
    spans: Vec<ReceivedSpan>,
    /// Requests that were not a well-formed export (path, content-type, framing).
    rejected: Vec<String>,
}

/// The receiver; stops serving when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Bind 127.0.0.1 on a free port and serve (needs a tokio runtime).
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let state = recorded.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpReceiver {
            addr,
            recorded,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, what `--otlp-endpoint` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.recorded.lock().unwrap().spans.clone()
    }

    /// Requests refused as malformed exports (empty when the exporter spoke OTLP).
    pub fn rejected(&self) -> Vec<String> {
        self.recorded.lock().unwrap().rejected.clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

async fn handle(state: &Mutex<Recorded>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return refuse(state, format!("{path}: body: {e}")),
    };
    match (path.as_str(), content_type.as_str()) {
        (GRPC_PATH, ct) if ct.starts_with("application/grpc") => {
            let message = match grpc_message(body) {
                Ok(message) => message,
                Err(e) => return refuse(state, format!("{path}: {e}")),
            };
            match ExportTraceServiceRequest::decode(message) {
                Ok(export) => record(state, Transport::Grpc, export),
                Err(e) => return refuse(state, format!("{path}: protobuf: {e}")),
            }
            grpc_ok()
        }
        (HTTP_PATH, "application/x-protobuf") => {
            match ExportTraceServiceRequest::decode(body) {
                Ok(export) => record(state, Transport::Http, export),
                Err(e) => return refuse(state, format!("{path}: protobuf: {e}")),
            }
            let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            response
        }
        _ => refuse(state, format!("{path} with content-type {content_type:?}")),
    }
}

/// The one message of a unary gRPC request: uncompressed flag, 4-byte length, message.
fn grpc_message(mut body: Bytes) -> Result<Bytes, String> {
    if body.len() < 5 {
        return Err(format!("a {}-byte gRPC body", body.len()));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err("compressed gRPC message".into());
    }
    if body.len() != len {
        return Err(format!("gRPC length {len}, {} bytes follow", body.len()));
    }
    Ok(body)
}

/// An empty `ExportTraceServiceResponse`, then `grpc-status: 0` in trailers.
fn grpc_ok() -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

fn refuse(state: &Mutex<Recorded>, why: String) -> Response<Body> {
    state.lock().unwrap().rejected.push(why.clone());
    let mut response = Response::new(Full::new(Bytes::from(why)).boxed_unsync());
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

fn record(state: &Mutex<Recorded>, transport: Transport, export: ExportTraceServiceRequest) {
    let mut spans = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| value_string(kv.value.as_ref()?.value.as_ref()?))
        });
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    transport,
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    trace_state: span.trace_state,
                    name: span.name,
                    kind: span.kind,
                    status_code: span.status.map_or(0, |s| s.code),
                    attributes: span
                        .attributes
                        .into_iter()
                        .filter_map(|kv| {
                            let value = value_string(kv.value?.value.as_ref()?)?;
                            Some((kv.key, value))
                        })
                        .collect(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                });
            }
        }
    }
    state.lock().unwrap().spans.extend(spans);
}

fn value_string(value: &AnyValue) -> Option<String> {
    Some(match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
