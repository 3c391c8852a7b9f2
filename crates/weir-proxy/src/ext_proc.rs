//! ExtensionPolicy `extProc`: external processors (Envoy ext_proc gRPC services) on a
//! route's requests and responses, over the endpoint picker's client
//! ([`crate::inference::Stream`]: one stream per request and processor, one HTTP/2
//! connection per processor address shared by every request, kept across snapshot swaps).
//!
//! Request side (phase 3, after ext auth), each processor in order, when its
//! `processingMode.request` is set: the request headers, and with `body: Buffered` the body
//! read whole (413 above the limit) in one message; the processor's answers in the order it
//! sends them: a headers response (its header mutation goes onto the upstream request), a
//! body response (a body mutation replaces the body), or an `ImmediateResponse`, answered to
//! the client as is. Response side (after the upstream answered, processors in reverse
//! order), when `processingMode.response` is set: the response headers (on the request's
//! stream, or a new one), the processor's header mutation onto the response (framing headers
//! stay as the proxy set them), or an `ImmediateResponse` instead of the response.
//!
//! Every answer waits at most `messageTimeout`. A processor that cannot be reached, fails,
//! times out or answers out of turn: with `failOpen` the request goes on without it; without,
//! the client gets 500 ([`ProxyError::ExtProcFailed`]), as from Envoy's ext_proc filter.
//! Routes without an ExtensionPolicy never come here.
//!
//! Metrics: `weir_ext_proc_seconds{phase,result}` times every exchange (`ok`, `immediate`,
//! `error`), `weir_ext_proc_fail_open_total{phase}` counts failures passed over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, HttpHeaders, ProcessingRequest,
};
use http::Response;
use hyper::body::Body as _;
use weir_snapshot::{BackendTarget, BodyMode, ExtProc, ExtProcessor};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::inference::{
    apply_mutation, apply_response_mutation, header_map, immediate, request_messages, Stream,
};
use crate::request::RequestBody;
use crate::Shared;

/// The `phase` label of the ext_proc metrics.
const REQUEST: &str = "request";
const RESPONSE: &str = "response";

/// The processor addresses a policy may open streams to (kept open across swaps).
pub(crate) fn addresses(x: &ExtProc) -> impl Iterator<Item = SocketAddr> + '_ {
    x.processors.iter().flat_map(|p| match &p.service {
        BackendTarget::Upstream(u) => u.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>(),
        BackendTarget::Invalid(_) => Vec::new(),
    })
}

/// The streams the response side goes on with: (processor index, its request's stream).
#[derive(Default)]
pub(crate) struct Pending {
    streams: Vec<(usize, Stream)>,
}

/// What the request side decided.
pub(crate) enum Step {
    Continue(Option<Box<Pending>>),
    Answer(Response<ProxyBody>),
}

fn address(p: &ExtProcessor) -> Result<SocketAddr, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    match &p.service {
        BackendTarget::Invalid(why) => Err(why.to_string()),
        BackendTarget::Upstream(u) => {
            let n = u.endpoints.len();
            if n == 0 {
                return Err(format!("{} has no ready endpoints", u.name));
            }
            u.endpoints
                .get(NEXT.fetch_add(1, Ordering::Relaxed) % n)
                .map(|e| e.addr)
                .ok_or_else(|| format!("{} has no ready endpoints", u.name))
        }
    }
}

/// A processor's failure: on without it (`failOpen`), or the 500.
fn failed(
    shared: &Shared,
    phase: &str,
    x: &ExtProc,
    p: &ExtProcessor,
    detail: String,
) -> Result<(), ProxyError> {
    if p.fail_open {
        shared.metrics.ext_proc_fail_open(phase);
        tracing::debug!(policy = %x.name, error = %detail, "external processor failed; failing open");
        Ok(())
    } else {
        Err(ProxyError::ExtProcFailed(
            format!("{}: {detail}", x.name).into(),
        ))
    }
}

/// The request side: every processor with a request mode, in order.
pub(crate) async fn request(
    shared: &Shared,
    x: &ExtProc,
    parts: &mut http::request::Parts,
    body: &mut RequestBody,
) -> Result<Step, ProxyError> {
    if let Some(why) = &x.deny {
        return Err(ProxyError::ExtProcFailed(why.clone()));
    }
    let mut pending = Pending::default();
    for (i, p) in x.processors.iter().enumerate() {
        let Some(mode) = p.request else {
            continue;
        };
        let sent = match mode {
            BodyMode::Buffered if body.has_body() => {
                Some(body.buffer(&mut parts.headers, p.body_max).await?)
            }
            _ => None,
        };
        let started = Instant::now();
        let outcome = exchange_request(shared, p, parts, sent.as_ref()).await;
        let result = match &outcome {
            Ok(Outcome::Immediate(_)) => "immediate",
            Ok(Outcome::Go { .. }) => "ok",
            Err(_) => "error",
        };
        shared
            .metrics
            .ext_proc_observe(REQUEST, started.elapsed(), result);
        match outcome {
            Ok(Outcome::Immediate(answer)) => return Ok(Step::Answer(answer)),
            Ok(Outcome::Go { stream, new_body }) => {
                if let Some(b) = new_body {
                    parts.headers.insert(
                        http::header::CONTENT_LENGTH,
                        http::HeaderValue::from(b.len()),
                    );
                    *body = RequestBody::Buffered(b);
                }
                if p.response {
                    pending.streams.push((i, stream));
                }
            }
            Err(detail) => failed(shared, REQUEST, x, p, detail)?,
        }
    }
    Ok(Step::Continue(
        (!pending.streams.is_empty()).then(|| Box::new(pending)),
    ))
}

enum Outcome {
    Immediate(Response<ProxyBody>),
    Go {
        stream: Stream,
        new_body: Option<Bytes>,
    },
}

async fn exchange_request(
    shared: &Shared,
    p: &ExtProcessor,
    parts: &mut http::request::Parts,
    body: Option<&Bytes>,
) -> Result<Outcome, String> {
    let addr = address(p)?;
    let mut stream = Stream::open(shared, addr, request_messages(parts, body), p.timeout).await?;
    let mut headers_done = false;
    let mut body_done = body.is_none();
    let mut new_body = None;
    while !headers_done || !body_done {
        match stream.next().await?.response {
            Some(processing_response::Response::ImmediateResponse(answer)) => {
                return Ok(Outcome::Immediate(immediate(answer)));
            }
            Some(processing_response::Response::RequestHeaders(h)) if !headers_done => {
                headers_done = true;
                if let Some(m) = h.response.and_then(|r| r.header_mutation) {
                    apply_mutation(&mut parts.headers, &m);
                }
            }
            Some(processing_response::Response::RequestBody(b)) if !body_done => {
                body_done = true;
                let common = b.response.unwrap_or_default();
                if let Some(m) = &common.header_mutation {
                    apply_mutation(&mut parts.headers, m);
                }
                if let Some(body_mutation::Mutation::Body(bytes)) =
                    common.body_mutation.and_then(|m| m.mutation)
                {
                    new_body = Some(Bytes::from(bytes));
                }
            }
            _ => return Err("an answer out of turn on the request side".into()),
        }
    }
    Ok(Outcome::Go { stream, new_body })
}

/// The response side: every processor with a response mode, last first, on the response
/// the upstream (or a later step) made.
pub(crate) async fn response(
    shared: &Shared,
    x: Option<&ExtProc>,
    mut pending: Option<Box<Pending>>,
    mut response: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(x) = x.filter(|x| x.has_response()) else {
        return Ok(response);
    };
    for (i, p) in x.processors.iter().enumerate().rev() {
        if !p.response {
            continue;
        }
        let stream = pending.as_mut().and_then(|pd| {
            let at = pd.streams.iter().position(|(j, _)| *j == i)?;
            Some(pd.streams.swap_remove(at).1)
        });
        // A processor whose request side failed open has no stream and sees no response.
        if stream.is_none() && p.request.is_some() {
            continue;
        }
        let started = Instant::now();
        let outcome = exchange_response(shared, p, stream, &mut response).await;
        let result = match &outcome {
            Ok(Some(_)) => "immediate",
            Ok(None) => "ok",
            Err(_) => "error",
        };
        shared
            .metrics
            .ext_proc_observe(RESPONSE, started.elapsed(), result);
        match outcome {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => {}
            Err(detail) => failed(shared, RESPONSE, x, p, detail)?,
        }
    }
    Ok(response)
}

async fn exchange_response(
    shared: &Shared,
    p: &ExtProcessor,
    stream: Option<Stream>,
    response: &mut Response<ProxyBody>,
) -> Result<Option<Response<ProxyBody>>, String> {
    let status = response.status().as_u16().to_string();
    let message = ProcessingRequest {
        request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(response.headers(), &[(":status", &status)])),
            attributes: Default::default(),
            end_of_stream: response.body().is_end_stream(),
        })),
        ..Default::default()
    };
    let mut stream = match stream {
        Some(mut s) => {
            s.send(message)?;
            s
        }
        None => Stream::open(shared, address(p)?, [message], p.timeout).await?,
    };
    match stream.next().await?.response {
        Some(processing_response::Response::ImmediateResponse(answer)) => {
            Ok(Some(immediate(answer)))
        }
        Some(processing_response::Response::ResponseHeaders(h)) => {
            if let Some(m) = h.response.and_then(|r| r.header_mutation) {
                apply_response_mutation(response.headers_mut(), &m);
            }
            Ok(None)
        }
        _ => Err("an answer out of turn on the response side".into()),
    }
}
