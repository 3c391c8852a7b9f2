//! The request pipeline: the phases every request moves through, in this order (the one
//! place that lists them; the design is in docs/ARCHITECTURE.md, "Request phases"):
//!
//! 1. **route** ([`phase1`], `request/phase1.rs`): header-size check, Host, socket config →
//!    listener by Host → first matching route entry ([`route`]);
//! 2. **request, synchronous** ([`phase2`], `request/phase2.rs`, run in order from
//!    [`handle_action`]): phases that may answer or deny without waiting, in this fixed
//!    order: the client address (ClientTrafficPolicy, already found before phase 1) → the
//!    route's SecurityPolicy ([`crate::security`]): a policy that cannot be applied refuses
//!    (500, fail closed), CORS preflight (answered without credentials), authentication
//!    (JWT with cached keys, basic auth, API keys: 401), authorization (403) → the rule's
//!    request filters (a redirect or the HTTPRoute CORS filter's preflight answers here) →
//!    a BackendTrafficPolicy's local rate limit ([`crate::rate_limit`], 429; after
//!    authorization, so a refused request is never counted) → fault abort → the coding a
//!    route with `compression` answers in (kept for phase 7);
//! 4. **backend choice** ([`choose_backend`], the first half of phase 4): the session's
//!    backend, else the weighted choice ([`pick_backend`]). It comes before phase 3 so an
//!    asynchronous step knows the backend (the endpoint picker runs only for an
//!    InferencePool); the backend label of a request a phase-3 step answers names the
//!    backend chosen for it;
//! 3. **request, asynchronous** ([`phase3`], `request/phase3.rs`): only for routes whose
//!    compiled action says so ([`RouteAction::needs_async`]), inside one boxed future;
//!    other routes skip it and pay nothing. In order: external auth, an ExtensionPolicy's
//!    external processors (`crate::ext_proc`; their response side runs on the upstream's
//!    response at the end of the boxed future), global rate limit
//!    (`rate_limit/global.rs`, one Redis round trip), fault delay, cache lookup, (the
//!    endpoint picker of an InferencePool runs at the start of phase 5 instead,
//!    `crate::inference`: one boxed future, only for pool backends). A step may read the
//!    body whole ([`phase3::RequestBody::buffer`]);
//! 4. **backend** ([`onward`], the second half): that backend's request filters, mirrors;
//! 5. **attempt loop** ([`crate::upstream::forward_body`], `upstream/attempt.rs`):
//!    hop-by-hop cleanup, X-Forwarded-*, the per-attempt timeout, pooled connections under
//!    the endpoint's cap, the next endpoint on a connect error;
//! 6. **response headers** ([`Exchange::response_headers`], `request/exchange.rs`): the
//!    rule's and backend's response filters, CORS and the rate limit's `x-ratelimit-*`
//!    headers, on upstream responses *and* on the answers phases 2–4 made;
//! 7. **response body** ([`Exchange::response_body`], `request/exchange.rs`): compression
//!    ([`crate::compress`]) wraps the body of upstream responses (and cache hits) on routes
//!    whose policy has `compression`; before phase 6, the response cache's fill
//!    ([`crate::cache::fill`]) tees a storable upstream response into the cache (or
//!    refreshes an entry on a 304);
//! 8. **log**: metrics and a debug line ([`finish`]), the trace span's outcome
//!    ([`crate::trace::finish`]; the span started as the request arrived, before phase 1),
//!    the access log line.
//!
//! Phases 1, 2 and 4 run as plain functions when the request arrives; the future returned
//! waits only for phase 3 where the route has it, the exchange and the response phases
//! ([`crate::stage`]), so a route pays only for the phases it has. The state the response
//! side needs travels in one [`Exchange`] (`request/exchange.rs`). Any phase may fail with a
//! [`ProxyError`] (a denial), which becomes the response in [`error_response`] through the
//! one error table ([`ProxyError::classify`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use weir_snapshot::{Backend, BackendTarget, ClientCert, RouteAction, Snapshot, Upstream};

use crate::access_log;
use crate::body::{empty_body, text_body, ProxyBody};
use crate::conn::ConnCtx;
use crate::error::{Fault, ProxyError};
use crate::filter::{self, RedirectBase};
use crate::log_limit::LogLimit;
use crate::metrics::RequestLabels;
use crate::mirror::{self, MirrorRequest};
use crate::stage::{AndThen, Bounded, Staged};
use crate::trace::{self, RequestSpan};
use crate::upstream;
use http_body_util::BodyExt as _;

/// What the log stage reports; filled in as the request moves through the stages.
struct RequestLog {
    method: Method,
    /// The request target's path and query as received (the whole URI is not kept: 48
    /// bytes less in every request's future, which the trace span's pointer took 8 of).
    target: Option<PathAndQuery>,
    /// HTTP/1.x or HTTP/2 (a 400 closes an HTTP/1.x connection).
    version: Version,
    /// Lowercase, without port; empty until the route stage has read it.
    host: String,
    gateway: Option<Arc<str>>,
    route: Option<Arc<str>>,
    backend: Option<Arc<str>>,
    /// A gRPC request (content-type `application/grpc…`): errors answer as gRPC statuses.
    grpc: bool,
    /// What only the access log needs; `None` for requests it does not log (boxed: a
    /// request the log skips pays one pointer).
    access: Option<Box<Access>>,
    /// The request's trace span; `None` unless tracing is on (`--otlp-endpoint`).
    span: Option<Box<RequestSpan>>,
}

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

impl RequestLog {
    /// The path as received (empty for an authority-form target).
    fn path(&self) -> &str {
        self.target.as_ref().map_or("", PathAndQuery::path)
    }
}

/// The access log's part of a logged request.
struct Access {
    /// The client address: the connection's, or the one `clientIPDetection` found.
    client: std::net::SocketAddr,
    request_id: Option<HeaderValue>,
    /// Request body bytes read (the body counts them as it is forwarded).
    bytes_in: Arc<AtomicU64>,
    /// Why Weir answered itself (an error reason, `local`), else empty.
    flags: &'static str,
    /// The trace the request belongs to, when tracing is on.
    trace_id: Option<opentelemetry::trace::TraceId>,
}

/// hyper's entry point for every request on a connection.
///
/// The request stages are plain functions, run in one go; what the future waits for is the
/// exchange with the upstream and the response stages (see [`crate::stage`]).
// An `async fn` would keep the request twice (argument and local); the block keeps it once.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve(
    conn: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> {
    // The socket's ClientTrafficPolicy: request ID and client address (one check without).
    if let Some(policy) = &conn.policy {
        crate::client_policy::on_request(&policy.policy, conn.peer, &mut req);
    }
    async move {
        let start = Instant::now();
        // The one snapshot load of this request: every stage uses this value.
        let snapshot = conn.shared.handle.load_full();
        let mut log = RequestLog {
            method: req.method().clone(),
            target: req.uri().path_and_query().cloned(),
            version: req.version(),
            host: String::new(),
            gateway: None,
            route: None,
            backend: None,
            grpc: is_grpc(req.headers()),
            access: conn
                .shared
                .access_log
                .as_ref()
                .filter(|l| l.sampled())
                .map(|_| {
                    Box::new(Access {
                        client: req
                            .extensions()
                            .get::<crate::client_policy::ClientAddr>()
                            .map_or(conn.peer, |c| c.0),
                        request_id: req.headers().get(&X_REQUEST_ID).cloned(),
                        bytes_in: Arc::new(AtomicU64::new(0)),
                        flags: "",
                        trace_id: None,
                    })
                }),
            // The span starts before routing, and replaces the client's traceparent.
            span: conn
                .shared
                .tracing
                .as_ref()
                .map(|t| t.start_span(&conn, &mut req)),
        };
        let routed = match crate::model_name::wanted(&conn, &mut req) {
            None => route_and_forward(&conn, &snapshot, req, &mut log).await,
            // Body-Based Routing: the body read before routing ([`crate::model_name`]).
            Some(read) => {
                let (conn, snapshot, log) = (&*conn, &*snapshot, &mut log);
                read.then(req, move |req| route_and_forward(conn, snapshot, req, log))
                    .await
            }
        };
        let response = match routed {
            Ok(response) => response,
            Err(err) => error_response(&conn, &mut log, &err),
        };
        let elapsed = start.elapsed();
        finish(&conn, &log, response.status(), elapsed);
        let response = match log.span.take() {
            None => response,
            Some(span) => traced(&mut log, span, response),
        };
        Ok(match log.access.take() {
            None => response,
            Some(access) => access_logged(&conn, log, *access, start, elapsed, response),
        })
    }
}

/// Phases 1–7, bounded by the route's request timeout.
fn route_and_forward<'s>(
    conn: &'s ConnCtx,
    snapshot: &'s Snapshot,
    mut req: Request<Incoming>,
    log: &mut RequestLog,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 's {
    if let Err(err) = normalize_target(&mut req) {
        return Staged::done(Err(err));
    }
    let (port, listener, entry) = match route(conn, snapshot, &req, log) {
        Ok(found) => found,
        Err(err) => return Staged::done(Err(err)),
    };
    let action = &entry.action;
    log.route = Some(action.route.route.clone());
    let client_cert = listener.backend_client_cert.as_ref();
    let base = RedirectBase {
        host: &log.host,
        scheme: conn.scheme(),
        port,
    };
    let bytes_in = log.access.as_ref().map(|a| a.bytes_in.clone());
    let forwarded = match handle_action(
        conn,
        action,
        client_cert,
        &base,
        req,
        &mut log.backend,
        bytes_in,
    ) {
        Ok(Forward::Upstream(forwarded)) => forwarded,
        Ok(Forward::Answer(answer)) => {
            if let Some(access) = &mut log.access {
                access.flags = crate::fault::flag(&answer).unwrap_or("local");
            }
            return Staged::done(Ok(answer));
        }
        Err(err) => return Staged::done(Err(err)),
    };
    let limit = action.timeouts.request;
    Staged::waiting(Bounded::new(forwarded, limit, move || {
        // Only called when there is a limit.
        ProxyError::RequestTimeout(limit.unwrap_or_default())
    }))
}

/// What the request phases made of a request: an answer of their own (a redirect, a CORS
/// preflight…) or the exchange with the upstream, with the response phases after it.
enum Forward<F> {
    Answer(Response<ProxyBody>),
    Upstream(F),
}

/// What a request phase decided: go on to the next phase, or answer here.
enum Flow {
    Continue,
    Answer(Response<ProxyBody>),
}

/// Phase 4, backend choice: the session's backend, else the weighted choice. (Made before
/// phase 3, so an asynchronous step knows the backend: the endpoint picker runs only for an
/// InferencePool backend.)
fn choose_backend<'s>(
    ex: &mut Exchange<'s>,
    pinned: Option<u16>,
) -> Result<&'s Upstream, ProxyError> {
    let action = ex.action;
    let backend = match pinned.and_then(|i| action.backends.get(usize::from(i))) {
        // A session keeps its backend whatever the weights say now (GEP-1619).
        Some(backend) => backend,
        None => {
            // One backend (the common case) needs no random number.
            let roll = if action.backends.len() > 1 {
                rand::random::<u64>()
            } else {
                0
            };
            pick_backend(action, roll)?
        }
    };
    let upstream = match &backend.target {
        BackendTarget::Upstream(upstream) => upstream,
        BackendTarget::Invalid(reason) => return Err(ProxyError::InvalidBackend(reason.clone())),
    };
    ex.backend = Some(backend);
    Ok(upstream)
}

/// The exchange the request phases leave to wait for: phases 4–7 on a plain chain of
/// combinators (`Left`), or, for routes with an asynchronous request phase, one boxed
/// future that runs phase 3 first (`Right`; only those routes pay for the box).
type Exchanged<'s, F> = crate::stage::Either<F, BoxedExchange<'s>>;
/// What [`handle_action`] returns: a local answer, or the exchange to wait for.
type Handled<'s, F> = Result<Forward<Exchanged<'s, F>>, ProxyError>;
type BoxedExchange<'s> =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 's>>;

/// What phases 4–7 need from the request phases, besides the request itself.
struct Onward<'s> {
    conn: &'s ConnCtx,
    upstream: &'s Upstream,
    client_cert: Option<&'s Arc<ClientCert>>,
    upgrade: Option<upstream::PendingUpgrade>,
    bytes_in: Option<Arc<AtomicU64>>,
    sticky: Option<crate::session::Sticky>,
}

/// Phases 2–7 for a routed request (see [`crate::request`]'s list): request phases, backend
/// choice, the asynchronous phase where the route has one, then [`onward`].
#[inline(always)]
fn handle_action<'s>(
    conn: &'s ConnCtx,
    action: &'s RouteAction,
    client_cert: Option<&'s Arc<ClientCert>>,
    base: &RedirectBase<'_>,
    req: Request<Incoming>,
    backend_label: &mut Option<Arc<str>>,
    bytes_in: Option<Arc<AtomicU64>>,
) -> Handled<'s, impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 's> {
    let (mut parts, body) = req.into_parts();
    ensure_host_header(&mut parts);
    // The client's hop-by-hop headers go before any phase runs, so a client's
    // `Connection: x-name` cannot remove a header a filter (or the forward stage) sets.
    let upgrade = upstream::strip_hop_by_hop(&mut parts);
    let mut ex = Exchange {
        action,
        backend: None,
        kept: (filter::cors::any(&action.filters)
            || action.security.as_ref().is_some_and(|s| s.cors.is_some()))
        .then(|| {
            Box::new(Kept {
                origin: parts.headers.get(http::header::ORIGIN).cloned(),
                ..Kept::default()
            })
        }),
    };
    if let Flow::Answer(answer) = phase2::request_phases(conn, &ex, &mut parts, base)? {
        return Ok(local(&ex, answer));
    }
    // Phase 2 under a BackendTrafficPolicy: its local rate limit (after authorization, so a
    // request refused there is never counted), then its fault abort (`crate::fault`).
    if let Some(rl) = action.policy.as_deref().and_then(|p| p.rate_limit.as_ref()) {
        if let Some(answer) = phase2::local_rate_limit(conn, &mut ex, rl, &parts) {
            return Ok(local(&ex, answer));
        }
    }
    if let Some(fault) = action.policy.as_deref().and_then(|p| p.fault.as_ref()) {
        if let Some(answer) = crate::fault::abort(&conn.shared.metrics, fault, &action.route.route)
        {
            return Ok(local(&ex, answer));
        }
    }
    // Phase 2 under a BackendTrafficPolicy with `compression`: the coding the client takes.
    if let Some(c) = action
        .policy
        .as_deref()
        .and_then(|p| p.compression.as_deref())
    {
        phase2::accept_coding(conn, &mut ex, c, &parts, upgrade.is_some());
    }
    // Phase 4's backend choice. Session persistence: the backend and endpoint the request's
    // session pins.
    let session = action.policy.as_deref().and_then(|p| p.session.as_deref());
    let pinned = session.and_then(|cfg| {
        crate::session::lookup(
            &conn.shared.session_key,
            cfg,
            &action.backends,
            &parts.headers,
            crate::session::now_secs(),
        )
    });
    let upstream = choose_backend(&mut ex, pinned.map(|(b, ..)| b))?;
    let sticky = session.and_then(|_| {
        let picked = ex.backend?;
        let backend = action
            .backends
            .iter()
            .position(|b| std::ptr::eq(b, picked))?;
        Some(crate::session::Sticky {
            backend: u16::try_from(backend).ok()?,
            pin: pinned.map(|(_, endpoint, s)| (endpoint, s)),
            secure: conn.tls,
        })
    });
    *backend_label = Some(upstream.name.clone());
    let onward_state = Onward {
        conn,
        upstream,
        client_cert,
        upgrade,
        bytes_in,
        sticky,
    };
    let stall = body_timer(conn, &parts);
    if !action.needs_async() {
        let body = RequestBody::from_client(conn, &mut parts.extensions, body, stall);
        return onward(onward_state, ex, base, parts, body);
    }
    // Phase 3, request (asynchronous): one boxed future, only for routes that have a step
    // in it ([`phase3`]). The redirect base is kept by value: the future outlives `base`.
    let host = base.host.to_owned();
    let (scheme, port) = (base.scheme, base.port);
    let upgrade = onward_state.upgrade.is_some();
    let fut: BoxedExchange<'s> = Box::pin(async move {
        let mut body = RequestBody::from_client(conn, &mut parts.extensions, body, stall);
        let flow = phase3::run(conn, &mut ex, &mut parts, &mut body, upgrade).await?;
        if let Flow::Answer(mut answer) = flow {
            if ex.kept.as_ref().is_some_and(|k| k.cache_hit) {
                // From the cache: phases 6 and 7 as for an upstream response (so it is
                // compressed for this client).
                ex.response_headers(answer.headers_mut(), false);
                return Ok(ex.response_body(answer));
            }
            // It comes back as the exchange's response: its access-log flag says who answered.
            if crate::fault::flag(&answer).is_none() {
                answer
                    .extensions_mut()
                    .insert(crate::fault::FaultFlag("local"));
            }
            return Ok(local_response(&ex, answer));
        }
        let base = RedirectBase {
            host: &host,
            scheme,
            port,
        };
        let ext_proc = ex.kept.as_mut().and_then(|k| k.ext_proc.take());
        match onward(onward_state, ex, &base, parts, body)? {
            Forward::Answer(answer) => Ok(answer),
            Forward::Upstream(fut) => {
                let x = action.ext_proc.as_deref();
                crate::ext_proc::response(&conn.shared, x, ext_proc, fut.await?).await
            }
        }
    });
    Ok(Forward::Upstream(crate::stage::Either::Right { fut }))
}

/// How long the client's request body may take. HTTP/1.x bodies that stall get 408 (nginx's
/// client_body_timeout); HTTP/2 streams are left alone: a gRPC client stream may rightly
/// pause for minutes, and HTTP/2 flow control and the connection cap bound what a stalled
/// stream holds. A ClientTrafficPolicy's `requestReceivedTimeout` bounds the whole body
/// instead (both versions).
fn body_timer(conn: &ConnCtx, parts: &http::request::Parts) -> Option<upstream::BodyTimer> {
    match conn
        .policy
        .as_ref()
        .and_then(|p| p.policy.request_received_timeout)
    {
        Some(limit) => Some(upstream::BodyTimer::Deadline(limit)),
        None => (parts.version < http::Version::HTTP_2)
            .then_some(upstream::BodyTimer::Stall(conn.shared.config.idle_timeout)),
    }
}

/// Phases 4 (the backend's request filters, mirrors) to 7: the attempt loop and the
/// response phases around it. The exchange is built in the shape the caller returns
/// (`Either::Left`), so the future (over a kilobyte) is not moved once more to rewrap it.
#[inline(always)]
fn onward<'s>(
    state: Onward<'s>,
    ex: Exchange<'s>,
    base: &RedirectBase<'_>,
    mut parts: http::request::Parts,
    body: RequestBody,
) -> Handled<'s, impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 's> {
    let Onward {
        conn,
        upstream,
        client_cert,
        upgrade,
        bytes_in,
        sticky,
    } = state;
    let action = ex.action;
    if let Some(backend) = ex.backend {
        if let Some(answer) = filter::apply_request(&backend.filters, &mut parts, base)? {
            return Ok(local(&ex, answer));
        }
    }
    // Mirrors copy the request as every request filter left it, just before it is forwarded.
    let mirror = MirrorRequest {
        parts: &parts,
        has_body: body.has_body(),
        client_ip: &conn.client_ip,
        tls: conn.tls,
        client_cert,
    };
    let mut copies = Vec::new();
    mirror::spawn_all(&conn.shared, &action.filters, &mirror, &mut copies);
    if let Some(backend) = ex.backend {
        mirror::spawn_all(&conn.shared, &backend.filters, &mirror, &mut copies);
    }

    let downstream = upstream::Downstream {
        client_ip: &conn.client_ip,
        tls: conn.tls,
        client_cert: client_cert.map(|c| &**c),
    };
    // Phase 5, the attempt loop (`upstream::attempt`).
    let mut body = body.into_upstream(copies);
    if let Some(bytes) = bytes_in.filter(|_| !body.is_end_stream()) {
        body = upstream::UpstreamBody::Counted(Box::new(upstream::Counted { body, bytes }));
    }
    let timeout = attempt_timeout(&action.timeouts, &conn.shared.config);
    let policy = action.policy.as_deref().map(|p| (p, &*action.route.route));
    // An InferencePool: the endpoint picker chooses the endpoint first (one boxed future,
    // only for pools; `crate::inference`), with phases 6 and 7 in the box too, so routes to
    // Services keep the plain chain below without a wrapper around it (each wrapper was
    // one more copy of the ~1 KB exchange per request).
    if let Some(pool) = upstream.inference.as_deref() {
        let exchange = crate::inference::exchange(crate::inference::Exchange {
            shared: &conn.shared,
            upstream,
            pool,
            parts,
            body,
            upgrade,
            client_ip: &conn.client_ip,
            tls: conn.tls,
            attempt_timeout: timeout,
            policy,
        });
        return Ok(Forward::Upstream(crate::stage::Either::Right {
            fut: Box::pin(AndThen::new(exchange, respond(ex))),
        }));
    }
    // Phases 6 and 7 on the upstream's response. (One expression: the exchange is built
    // where it stays, not in a local moved into the wrapper and the wrapper into the
    // future, a copy of about a kilobyte each.)
    Ok(Forward::Upstream(crate::stage::Either::Left {
        fut: AndThen::new(
            upstream::forward_body(
                &conn.shared,
                upstream,
                parts,
                body,
                upgrade,
                &downstream,
                timeout,
                policy,
                sticky,
            ),
            respond(ex),
        ),
    }))
}

/// Phases 6 and 7 on an upstream response: the cache fill on the response as it came
/// (before any filter: an entry serves every client), then the response headers, then the
/// body (compression).
#[inline(always)]
fn respond(
    mut ex: Exchange<'_>,
) -> impl FnOnce(Response<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> + Send + '_ {
    move |response: Response<ProxyBody>| {
        let mut response = match ex.kept.as_mut().and_then(|k| k.cache.take()) {
            Some(pending) => crate::cache::fill(pending, response),
            None => response,
        };
        ex.response_headers(response.headers_mut(), false);
        if let Some(flag) = ex.kept.as_ref().and_then(|k| k.flag) {
            response
                .extensions_mut()
                .insert(crate::fault::FaultFlag(flag));
        }
        Ok(ex.response_body(response))
    }
}

/// Phase 4: weighted random choice of a backend; `roll` is a uniform random number.
pub(crate) fn pick_backend(action: &RouteAction, roll: u64) -> Result<&Backend, ProxyError> {
    if action.total_weight == 0 {
        return Err(ProxyError::NoBackend);
    }
    let mut n = roll % action.total_weight;
    for backend in action.backends.iter() {
        let weight = u64::from(backend.weight);
        if n < weight {
            return Ok(backend);
        }
        n -= weight;
    }
    // total_weight larger than the sum of the weights: a translator bug.
    Err(ProxyError::NoBackend)
}

/// Turn an error into the response the client gets (and the access log's flag).
fn error_response(conn: &ConnCtx, log: &mut RequestLog, err: &ProxyError) -> Response<ProxyBody> {
    let class = err.classify();
    conn.shared.metrics.record_error(class.label);
    if let Some(access) = &mut log.access {
        access.flags = class.label;
    }
    match class.fault {
        Fault::Upstream | Fault::Internal => {
            // One per failed request: a burst, then a sample with the count left out.
            static REQUEST_FAILED: LogLimit = LogLimit::new(20, Duration::from_secs(10));
            if let Some(suppressed) = REQUEST_FAILED.admit() {
                tracing::warn!(
                    error = %err,
                    method = %log.method,
                    host = %log.host,
                    path = log.path(),
                    route = log.route.as_deref().unwrap_or(""),
                    backend = log.backend.as_deref().unwrap_or(""),
                    status = class.status.as_u16(),
                    suppressed,
                    "request failed"
                )
            }
        }
        Fault::Downstream | Fault::NotRouted => {
            tracing::debug!(error = %err, status = class.status.as_u16(), "request rejected")
        }
    }
    if log.grpc && class.fault == Fault::NotRouted && class.status == StatusCode::NOT_FOUND {
        return grpc_unimplemented(class.body);
    }
    let mut response = Response::new(text_body(class.body));
    *response.status_mut() = class.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(class.body.len()));
    if let Some(challenge) = err.challenge(&log.host) {
        headers.insert(http::header::WWW_AUTHENTICATE, challenge);
    }
    if class.status == StatusCode::BAD_REQUEST && log.version < Version::HTTP_2 {
        // A malformed request may have left unread or misframed bytes behind: close after
        // answering (RFC 9112 §6.3), as nginx does.
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether a request is gRPC (content-type `application/grpc`, with or without a `+codec`
/// or parameters).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

/// A gRPC request no route matches: a trailers-only answer, HTTP 200 with `grpc-status` 12
/// (UNIMPLEMENTED), as gRPC servers answer an unknown method (the gRPC HTTP/2 protocol maps a
/// plain 404 to UNIMPLEMENTED too, but a status of its own says why).
fn grpc_unimplemented(why: &str) -> Response<ProxyBody> {
    let mut response = Response::new(empty_body());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static("12"));
    if let Ok(message) = HeaderValue::from_str(why.trim_end()) {
        headers.insert("grpc-message", message);
    }
    response
}

/// Phase 8, the access log: the response body counts what it sends and writes the line at
/// its end ([`crate::access_log`]).
fn access_logged(
    conn: &Arc<ConnCtx>,
    log: RequestLog,
    access: Access,
    start: Instant,
    elapsed: Duration,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let entry = Box::new(access_log::Entry {
        time: std::time::SystemTime::now() - elapsed,
        started: start,
        client: access.client,
        request_id: access.request_id,
        path: log.path().to_string(),
        method: log.method,
        host: log.host,
        version: log.version,
        status: response.status().as_u16(),
        bytes_in: Some(access.bytes_in),
        upstream_ms: access.flags.is_empty().then_some(elapsed),
        upstream: log.backend,
        endpoint: response
            .extensions()
            .get::<access_log::UpstreamEndpoint>()
            .map(|e| e.0),
        gateway: log.gateway,
        route: log.route,
        // A fault delay flags a response that came from the backend.
        flags: match access.flags {
            "" => crate::fault::flag(&response).unwrap_or(""),
            flags => flags,
        },
        trace_id: access.trace_id,
    });
    let shared = conn.shared.clone();
    response.map(|body| access_log::Logged::new(body, entry, shared).boxed_unsync())
}

/// Phase 8, the trace span: its outcome, and its end with the response body.
fn traced(
    log: &mut RequestLog,
    span: Box<RequestSpan>,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if let Some(access) = &mut log.access {
        access.trace_id = Some(span.trace_id());
    }
    let outcome = trace::Outcome {
        method: &log.method,
        host: &log.host,
        gateway: log.gateway.as_ref(),
        route: log.route.as_ref(),
        backend: log.backend.as_ref(),
    };
    trace::finish(span, &outcome, response)
}

/// Phase 8: metrics and the debug line.
fn finish(conn: &ConnCtx, log: &RequestLog, status: StatusCode, elapsed: Duration) {
    let labels = RequestLabels {
        gateway: log.gateway.as_deref().unwrap_or(""),
        route: log.route.as_deref().unwrap_or(""),
        backend: log.backend.as_deref().unwrap_or(""),
    };
    conn.shared
        .metrics
        .record_request(&conn.metrics_cache, &labels, status, elapsed);
    tracing::debug!(
        method = %log.method,
        host = %log.host,
        path = log.path(),
        status = status.as_u16(),
        route = labels.route,
        backend = labels.backend,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
}

#[cfg(test)]
mod tests;

mod exchange;
mod phase1;
mod phase2;
mod phase3;
use exchange::{local, local_response, Exchange, Kept};
use phase1::{ensure_host_header, normalize_target, route};
pub(crate) use phase3::RequestBody;

/// How long one attempt may wait for the backend's response head: the route's
/// `timeouts.backendRequest`; with no timeout on the route at all, `--upstream-timeout`
/// (nginx's proxy_read_timeout is 60 s, Envoy's route timeout 15 s), so a backend that never
/// answers gets a 504 instead of holding the request and its connection forever. A route
/// with only `timeouts.request` is bounded by that alone.
fn attempt_timeout(
    timeouts: &weir_snapshot::Timeouts,
    config: &crate::ProxyConfig,
) -> Option<std::time::Duration> {
    match (timeouts.backend_request, timeouts.request) {
        (Some(limit), _) => Some(limit),
        (None, Some(_)) => None,
        (None, None) => config.upstream_timeout,
    }
}
