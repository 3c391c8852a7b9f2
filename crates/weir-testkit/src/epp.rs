//! A test endpoint picker (Gateway API Inference Extension EPP): an Envoy ext_proc gRPC
//! server (`envoy.service.ext_proc.v3.ExternalProcessor/Process`) that behaves as the
//! conformance suite's lightweight picker (`lwepp`, tag `conformance/v1.6.0`) does:
//!
//! - round robin over the pool's endpoints (given at start, or replaced with
//!   [`TestPicker::set_endpoints`]);
//! - the request header `test-epp-endpoint-selection: ip[:port][,...]` restricts the
//!   candidates to those (an IP alone allows all its ports);
//! - the headers response sets `x-gateway-destination-endpoint: ip:port` (header and
//!   `envoy.lb` dynamic metadata) and `X-Echo-Set-Header:
//!   x-conformance-test-served-endpoint:ip:port` (the echo backend then reports it); for a
//!   request with a body it is sent after the whole body arrived, before the body response;
//! - on the response headers it sets `x-conformance-test-served-endpoint` to the gateway's
//!   `envoy.lb` / `x-gateway-destination-endpoint-served` metadata (or `fail: ...`) and
//!   `x-went-into-resp-headers: true`.
//!
//! Beyond lwepp, fault modes for the gateway's error paths, chosen per request by the
//! `x-test-epp-fault` header or for every request by [`TestPicker::set_fault`]:
//! `hang` (never answers), `error` (gRPC `Internal`), `immediate-429` (an
//! ImmediateResponse 429 with body `slow down`), `wrong-order` (the body response before
//! the headers response). `x-test-epp-destination: VALUE` makes it answer VALUE verbatim as
//! the destination (fallback lists, addresses outside the pool, malformed addresses).
//! Everything it received is recorded ([`TestPicker::seen`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, processing_response, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, ImmediateResponse, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub const DESTINATION: &str = "x-gateway-destination-endpoint";
pub const SERVED: &str = "x-gateway-destination-endpoint-served";
pub const RESULT_HEADER: &str = "x-conformance-test-served-endpoint";
pub const SELECTION_HEADER: &str = "test-epp-endpoint-selection";
pub const FAULT_HEADER: &str = "x-test-epp-fault";
pub const DESTINATION_OVERRIDE: &str = "x-test-epp-destination";

/// What one stream brought the picker.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Request headers (pseudo-headers included), lowercase names.
    pub headers: Vec<(String, String)>,
    /// The request body as received (all chunks).
    pub body: Vec<u8>,
    /// The order of messages received: `request_headers`, `request_body`,
    /// `response_headers`.
    pub messages: Vec<&'static str>,
    /// The destination it answered.
    pub chose: Option<String>,
    /// The served endpoint the gateway reported with the response headers.
    pub served: Option<String>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    endpoints: Mutex<Vec<SocketAddr>>,
    next: AtomicUsize,
    fault: Mutex<Option<String>>,
    seen: Mutex<Vec<Arc<Mutex<Seen>>>>,
    streams: AtomicUsize,
    /// A generic ext_proc processor ([`TestPicker::start_processor`]) instead of a picker.
    processor: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running test picker on a loopback port.
pub struct TestPicker {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestPicker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestPicker {
    /// Start on `127.0.0.1:0` picking among `endpoints`.
    pub async fn start(endpoints: Vec<SocketAddr>) -> std::io::Result<Self> {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            endpoints,
        )
        .await
    }

    /// Start on `127.0.0.1:0` as a generic external processor (ExtensionPolicy `extProc`)
    /// rather than a picker: it answers every message in turn; request headers get
    /// `x-ext-proc-request: added` set and `x-ext-proc-remove` removed; a request with
    /// `x-ext-proc-deny` gets an ImmediateResponse 403 (body `denied by processor`, header
    /// `x-ext-proc: immediate`); a request body is replaced with `processed:` + the body;
    /// response headers get `x-ext-proc-response: added` (and `x-ext-proc-status` = the
    /// `:status` it saw). The fault modes (`hang`, `error`) work as for the picker.
    pub async fn start_processor() -> std::io::Result<Self> {
        Self::start_with(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            Vec::new(),
            true,
        )
        .await
    }

    /// Start on `bind` picking among `endpoints`.
    pub async fn start_on(bind: SocketAddr, endpoints: Vec<SocketAddr>) -> std::io::Result<Self> {
        Self::start_with(bind, endpoints, false).await
    }

    async fn start_with(
        bind: SocketAddr,
        endpoints: Vec<SocketAddr>,
        processor: bool,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            processor,
            ..State::default()
        });
        *lock(&state.endpoints) = endpoints;
        let service = ExternalProcessorServer::new(Service(state.clone()));
        // TCP_NODELAY, as a real picker's gRPC server sets it: the stream's answers are small
        // writes, and with Nagle each one after the first waits for the gateway's ACK
        // (milliseconds per request under delayed ACKs).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        });
        Ok(Self { addr, state, task })
    }

    pub fn set_endpoints(&self, endpoints: Vec<SocketAddr>) {
        *lock(&self.state.endpoints) = endpoints;
    }

    /// A fault for every request (`None`: behave).
    pub fn set_fault(&self, fault: Option<&str>) {
        *lock(&self.state.fault) = fault.map(str::to_owned);
    }

    /// What each stream brought, in the order they opened.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen)
            .iter()
            .map(|s| lock(s).clone())
            .collect()
    }

    /// How many streams were opened.
    pub fn streams(&self) -> usize {
        self.state.streams.load(Ordering::Relaxed)
    }
}

struct Service(Arc<State>);

/// The response stream.
pub struct Outbox(mpsc::Receiver<Result<ProcessingResponse, Status>>);

impl tonic::codegen::tokio_stream::Stream for Outbox {
    type Item = Result<ProcessingResponse, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tonic::async_trait]
impl ExternalProcessor for Service {
    type ProcessStream = Outbox;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let state = self.0.clone();
        state.streams.fetch_add(1, Ordering::Relaxed);
        let seen = Arc::new(Mutex::new(Seen::default()));
        lock(&state.seen).push(seen.clone());
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut stream = StreamState::default();
            while let Ok(Some(message)) = inbound.message().await {
                match stream.handle(&state, &seen, message) {
                    Action::Send(responses) => {
                        for r in responses {
                            if tx.send(Ok(r)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Action::Hang => {
                        // Keep the stream open without answering until the client goes.
                        while let Ok(Some(_)) = inbound.message().await {}
                        return;
                    }
                    Action::Fail(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Outbox(rx)))
    }
}

enum Action {
    Send(Vec<ProcessingResponse>),
    Hang,
    Fail(Status),
}

#[derive(Default)]
struct StreamState {
    headers: HashMap<String, String>,
    body_pending: bool,
    fault: Option<String>,
}

fn value_of(h: &HeaderValue) -> String {
    if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8_lossy(&h.raw_value).into_owned()
    }
}

fn set(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: String::new(),
            raw_value: value.as_bytes().to_vec(),
        }),
        ..Default::default()
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    }
}

impl StreamState {
    /// Records the request headers (in `seen`, for the tests, and for this stream's own
    /// decisions), as both the picker and the processor mode do first.
    fn note_request_headers(
        &mut self,
        seen: &Mutex<Seen>,
        h: &envoy_types::pb::envoy::service::ext_proc::v3::HttpHeaders,
    ) {
        lock(seen).messages.push("request_headers");
        for header in h.headers.iter().flat_map(|m| m.headers.iter()) {
            let v = value_of(header);
            lock(seen)
                .headers
                .push((header.key.to_ascii_lowercase(), v.clone()));
            self.headers.insert(header.key.to_ascii_lowercase(), v);
        }
    }

    fn handle(&mut self, state: &State, seen: &Mutex<Seen>, message: ProcessingRequest) -> Action {
        if state.processor {
            return self.process(state, seen, message);
        }
        match message.request {
            Some(processing_request::Request::RequestHeaders(h)) => {
                self.note_request_headers(seen, &h);
                self.fault = self
                    .headers
                    .get(FAULT_HEADER)
                    .cloned()
                    .or_else(|| lock(&state.fault).clone());
                match self.fault.as_deref() {
                    Some("hang") => return Action::Hang,
                    Some("error") => return Action::Fail(Status::internal("test picker error")),
                    Some("immediate-429") => {
                        return Action::Send(vec![ProcessingResponse {
                            response: Some(processing_response::Response::ImmediateResponse(
                                ImmediateResponse {
                                    status: Some(HttpStatus { code: 429 }),
                                    headers: Some(HeaderMutation {
                                        set_headers: vec![set("x-test-epp", "immediate")],
                                        remove_headers: Vec::new(),
                                    }),
                                    body: b"slow down".to_vec(),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }])
                    }
                    _ => {}
                }
                if h.end_of_stream {
                    Action::Send(vec![self.pick(state, seen)])
                } else {
                    self.body_pending = true;
                    Action::Send(Vec::new())
                }
            }
            Some(processing_request::Request::RequestBody(b)) => {
                lock(seen).messages.push("request_body");
                lock(seen).body.extend_from_slice(&b.body);
                if !b.end_of_stream {
                    return Action::Send(Vec::new());
                }
                let body = ProcessingResponse {
                    response: Some(processing_response::Response::RequestBody(BodyResponse {
                        response: Some(CommonResponse::default()),
                    })),
                    ..Default::default()
                };
                if !self.body_pending {
                    return Action::Send(vec![body]);
                }
                self.body_pending = false;
                let headers = self.pick(state, seen);
                if self.fault.as_deref() == Some("wrong-order") {
                    Action::Send(vec![body, headers])
                } else {
                    Action::Send(vec![headers, body])
                }
            }
            Some(processing_request::Request::ResponseHeaders(h)) => {
                lock(seen).messages.push("response_headers");
                let served = message
                    .metadata_context
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("envoy.lb"))
                    .and_then(|s| s.fields.get(SERVED))
                    .and_then(|v| match v.kind.as_ref()? {
                        value::Kind::StringValue(s) => Some(s.clone()),
                        _ => None,
                    });
                lock(seen).served = served.clone();
                let served = served.unwrap_or_else(|| {
                    "fail: missing destination endpoint served metadata".to_owned()
                });
                let mut headers = vec![
                    set(RESULT_HEADER, &served),
                    set("x-went-into-resp-headers", "true"),
                ];
                // lwepp echoes the response's own headers back as set headers too.
                for header in h.headers.iter().flat_map(|m| m.headers.iter()) {
                    headers.push(set(&header.key, &value_of(header)));
                }
                Action::Send(vec![ProcessingResponse {
                    response: Some(processing_response::Response::ResponseHeaders(
                        HeadersResponse {
                            response: Some(CommonResponse {
                                header_mutation: Some(HeaderMutation {
                                    set_headers: headers,
                                    remove_headers: Vec::new(),
                                }),
                                ..Default::default()
                            }),
                        },
                    )),
                    ..Default::default()
                }])
            }
            Some(processing_request::Request::ResponseBody(_)) => {
                Action::Send(vec![ProcessingResponse {
                    response: Some(processing_response::Response::ResponseBody(BodyResponse {
                        response: Some(CommonResponse::default()),
                    })),
                    ..Default::default()
                }])
            }
            _ => Action::Send(Vec::new()),
        }
    }

    /// A generic processor's answer (see [`TestPicker::start_processor`]).
    fn process(&mut self, state: &State, seen: &Mutex<Seen>, message: ProcessingRequest) -> Action {
        let headers_response = |set_headers, remove_headers| HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers,
                    remove_headers,
                }),
                ..Default::default()
            }),
        };
        let answer = |r| {
            Action::Send(vec![ProcessingResponse {
                response: Some(r),
                ..Default::default()
            }])
        };
        match message.request {
            Some(processing_request::Request::RequestHeaders(h)) => {
                self.note_request_headers(seen, &h);
                let fault = self
                    .headers
                    .get(FAULT_HEADER)
                    .cloned()
                    .or_else(|| lock(&state.fault).clone());
                match fault.as_deref() {
                    Some("hang") => return Action::Hang,
                    Some("error") => return Action::Fail(Status::internal("test processor error")),
                    _ => {}
                }
                if self.headers.contains_key("x-ext-proc-deny") {
                    return answer(processing_response::Response::ImmediateResponse(
                        ImmediateResponse {
                            status: Some(HttpStatus { code: 403 }),
                            headers: Some(HeaderMutation {
                                set_headers: vec![set("x-ext-proc", "immediate")],
                                remove_headers: Vec::new(),
                            }),
                            body: b"denied by processor".to_vec(),
                            ..Default::default()
                        },
                    ));
                }
                answer(processing_response::Response::RequestHeaders(
                    headers_response(
                        vec![set("x-ext-proc-request", "added")],
                        vec!["x-ext-proc-remove".to_owned()],
                    ),
                ))
            }
            Some(processing_request::Request::RequestBody(b)) => {
                lock(seen).messages.push("request_body");
                lock(seen).body.extend_from_slice(&b.body);
                let mut replaced = b"processed:".to_vec();
                replaced.extend_from_slice(&b.body);
                answer(processing_response::Response::RequestBody(BodyResponse {
                    response: Some(CommonResponse {
                        body_mutation: Some(
                            envoy_types::pb::envoy::service::ext_proc::v3::BodyMutation {
                                mutation: Some(
                                    envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation::Body(
                                        replaced,
                                    ),
                                ),
                            },
                        ),
                        ..Default::default()
                    }),
                }))
            }
            Some(processing_request::Request::ResponseHeaders(h)) => {
                lock(seen).messages.push("response_headers");
                // A stream that starts here (no request mode) still gets the fault.
                let fault = self
                    .headers
                    .get(FAULT_HEADER)
                    .cloned()
                    .or_else(|| lock(&state.fault).clone());
                match fault.as_deref() {
                    Some("hang") => return Action::Hang,
                    Some("error") => return Action::Fail(Status::internal("test processor error")),
                    _ => {}
                }
                let status = h
                    .headers
                    .iter()
                    .flat_map(|m| m.headers.iter())
                    .find(|x| x.key == ":status")
                    .map(value_of)
                    .unwrap_or_default();
                answer(processing_response::Response::ResponseHeaders(
                    headers_response(
                        vec![
                            set("x-ext-proc-response", "added"),
                            set("x-ext-proc-status", &status),
                        ],
                        Vec::new(),
                    ),
                ))
            }
            _ => Action::Send(Vec::new()),
        }
    }

    /// The headers response naming the chosen endpoint.
    fn pick(&self, state: &State, seen: &Mutex<Seen>) -> ProcessingResponse {
        let chosen = match self.headers.get(DESTINATION_OVERRIDE) {
            Some(verbatim) => verbatim.clone(),
            None => {
                let all = lock(&state.endpoints).clone();
                let filter: Vec<&str> = self
                    .headers
                    .get(SELECTION_HEADER)
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                let mut candidates: Vec<SocketAddr> = all
                    .iter()
                    .copied()
                    .filter(|a| {
                        filter.is_empty()
                            || filter
                                .iter()
                                .any(|f| *f == a.ip().to_string() || *f == a.to_string())
                    })
                    .collect();
                if candidates.is_empty() && filter.is_empty() {
                    candidates = all;
                }
                if candidates.is_empty() {
                    String::new()
                } else {
                    let i = state.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
                    candidates[i].to_string()
                }
            }
        };
        lock(seen).chose = Some(chosen.clone());
        let mut lb = Struct::default();
        lb.fields.insert(DESTINATION.to_owned(), string(&chosen));
        let mut metadata = Struct::default();
        metadata.fields.insert(
            "envoy.lb".to_owned(),
            Value {
                kind: Some(value::Kind::StructValue(lb)),
            },
        );
        ProcessingResponse {
            response: Some(processing_response::Response::RequestHeaders(
                HeadersResponse {
                    response: Some(CommonResponse {
                        clear_route_cache: true,
                        header_mutation: Some(HeaderMutation {
                            set_headers: vec![
                                set(DESTINATION, &chosen),
                                set("X-Echo-Set-Header", &format!("{RESULT_HEADER}:{chosen}")),
                            ],
                            remove_headers: Vec::new(),
                        }),
                        ..Default::default()
                    }),
                },
            )),
            dynamic_metadata: Some(metadata),
            ..Default::default()
        }
    }
}

/// Round-trip times of [`probe`]'s exchanges, in milliseconds.
#[derive(Debug, Default)]
pub struct ProbeTimes {
    /// The whole exchange (both steps), one per request.
    pub whole: Vec<f64>,
    /// Opening the stream with the request headers until the headers response.
    pub request: Vec<f64>,
    /// The response headers until the picker's answer to them.
    pub response: Vec<f64>,
}

fn pct(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

impl ProbeTimes {
    pub fn whole_pct(&self, q: f64) -> f64 {
        pct(&self.whole, q)
    }
    pub fn request_pct(&self, q: f64) -> f64 {
        pct(&self.request, q)
    }
    pub fn response_pct(&self, q: f64) -> f64 {
        pct(&self.response, q)
    }
}

struct ProbeOutbox(mpsc::Receiver<ProcessingRequest>);

impl tonic::codegen::tokio_stream::Stream for ProbeOutbox {
    type Item = ProcessingRequest;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The picker round trip as Weir makes it for one GET through a pool, `n` times one after
/// another over one gRPC channel (TCP_NODELAY, as Weir's): open the stream with the request
/// headers (`end_of_stream`), wait for the headers response; send the response headers with
/// the served endpoint in `envoy.lb` metadata, wait for the answer; close the stream. The
/// first 10% are a warm-up and not counted.
pub async fn probe(
    addr: SocketAddr,
    n: usize,
    timeout: std::time::Duration,
) -> Result<ProbeTimes, String> {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, Metadata};
    use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
    use envoy_types::pb::envoy::service::ext_proc::v3::HttpHeaders;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let header = |k: &str, v: &str| HeaderValue {
        key: k.to_owned(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    };
    let mut out = ProbeTimes::default();
    let warm = n / 10;
    for i in 0..n + warm {
        let mut client = ExternalProcessorClient::new(channel.clone());
        let started = std::time::Instant::now();
        let (tx, rx) = mpsc::channel(4);
        let first = ProcessingRequest {
            request: Some(processing_request::Request::RequestHeaders(
                envoy_types::pb::envoy::service::ext_proc::v3::HttpHeaders {
                    headers: Some(HeaderMap {
                        headers: vec![
                            header(":method", "GET"),
                            header(":path", "/svc-9/x"),
                            header(":authority", "app-9.bench.test"),
                            header(":scheme", "http"),
                        ],
                    }),
                    attributes: HashMap::new(),
                    end_of_stream: true,
                },
            )),
            ..Default::default()
        };
        tx.try_send(first).map_err(|e| e.to_string())?;
        let opened = tokio::time::timeout(timeout, client.process(ProbeOutbox(rx)))
            .await
            .map_err(|_| "no stream".to_string())?
            .map_err(|s| s.to_string())?;
        let mut inbound = opened.into_inner();
        let first_answer = tokio::time::timeout(timeout, inbound.message())
            .await
            .map_err(|_| "no headers response".to_string())?
            .map_err(|s| s.to_string())?
            .ok_or("stream closed")?;
        let chosen = match first_answer.response {
            Some(processing_response::Response::RequestHeaders(_)) => first_answer
                .dynamic_metadata
                .as_ref()
                .and_then(|m| m.fields.get("envoy.lb"))
                .and_then(|v| match v.kind.as_ref()? {
                    value::Kind::StructValue(s) => s.fields.get(DESTINATION).cloned(),
                    _ => None,
                })
                .and_then(|v| match v.kind? {
                    value::Kind::StringValue(s) => Some(s),
                    _ => None,
                })
                .unwrap_or_default(),
            other => return Err(format!("unexpected first answer {other:?}")),
        };
        let requested = started.elapsed();
        let mut lb = Struct::default();
        lb.fields.insert(SERVED.to_owned(), string(&chosen));
        let mut metadata = Metadata::default();
        metadata.filter_metadata.insert("envoy.lb".to_owned(), lb);
        let second_started = std::time::Instant::now();
        tx.try_send(ProcessingRequest {
            request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![header(":status", "200"), header("content-length", "3")],
                }),
                attributes: HashMap::new(),
                end_of_stream: false,
            })),
            metadata_context: Some(metadata),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        let second = tokio::time::timeout(timeout, inbound.message())
            .await
            .map_err(|_| "no response headers answer".to_string())?
            .map_err(|s| s.to_string())?
            .ok_or("stream closed")?;
        if !matches!(
            second.response,
            Some(processing_response::Response::ResponseHeaders(_))
        ) {
            return Err("unexpected second answer".into());
        }
        let responded = second_started.elapsed();
        let whole = started.elapsed();
        drop(tx);
        drop(inbound);
        if i >= warm {
            out.whole.push(whole.as_secs_f64() * 1000.0);
            out.request.push(requested.as_secs_f64() * 1000.0);
            out.response.push(responded.as_secs_f64() * 1000.0);
        }
    }
    Ok(out)
}
