//! Phase 5 under a BackendTrafficPolicy (`weir_snapshot::BackendPolicy`): breaker admission,
//! retries with jittered exponential back-off, per-try timeouts, the policy's connect
//! timeout. Only routes whose compiled action carries a policy come here, in one boxed
//! future; every other route keeps [`Clients::send`] and pays nothing.
//!
//! Which requests are retried:
//! - the request must be replayable: no body, or a body with a `Content-Length` of at most
//!   [`RETRY_BUFFER`] bytes (the policy's `requestBuffer.limit` when it sets one; then
//!   every body was read whole already, see [`super::request_buffer`]), read whole before
//!   the first attempt (the retry buffer). Other requests get one attempt (still on the next endpoint after a connect error, as always);
//! - a failure where nothing was sent (no endpoint could be connected: `connect-failure`,
//!   and `5xx` / `gateway-error`, which include it) is retried for any method;
//! - a response (5xx, 502–504, 409, a listed status, a gRPC status) or a failure after the
//!   request was sent (reset, per-try timeout) is retried only for idempotent methods
//!   (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE): never a POST or PATCH that a
//!   backend may have acted on.
//!
//! When the retries run out, the last response (or error) is what the client gets.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Body;
use tokio::sync::Semaphore;
use weir_snapshot::{AppProtocol, BackendPolicy, CircuitBreaker, Upstream};

use super::attempt::{is_idempotent, Gate};
use super::balance::{Balancer, Outstanding};
use super::body::{BodyStalled, ClientBodyError, PooledBody, UpstreamBody};
use super::budget::Budget;
use super::health::{HealthGate, Outcome};
use super::pool::PolicyConnections;
use super::replay::Replay;
use super::{Clients, UpstreamTlsConnect};
use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::stage::{Bounded, Either};

/// The largest request body kept to be sent again on a retry (bytes).
pub(crate) const RETRY_BUFFER: u64 = 64 * 1024;

/// A policy's circuit breaker while the proxy runs: its counters, shared by every request
/// of the routes the policy applies to (runtime state, in the registry keyed by the
/// policy's id: it survives snapshot swaps that keep the policy).
pub(crate) struct Breaker {
    connections: PolicyConnections,
    requests: AtomicUsize,
    max_requests: usize,
    /// Retries in flight (`maxParallelRetries`).
    retries: AtomicUsize,
    max_retries: usize,
}

impl Breaker {
    pub(crate) fn new(limits: CircuitBreaker) -> Self {
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        Self {
            connections: PolicyConnections {
                open: Arc::new(Semaphore::new(
                    n(limits.max_connections).min(Semaphore::MAX_PERMITS),
                )),
                waiting: AtomicUsize::new(0),
                max_pending: n(limits.max_pending_requests),
            },
            requests: AtomicUsize::new(0),
            max_requests: n(limits.max_parallel_requests),
            retries: AtomicUsize::new(0),
            max_retries: n(limits.max_parallel_retries),
        }
    }

    /// A place among the retries in flight, or `None` at `maxParallelRetries`.
    fn retry_place(&self) -> Option<RetryPlace<'_>> {
        if self.retries.fetch_add(1, Ordering::AcqRel) >= self.max_retries {
            self.retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryPlace(self))
    }

    /// A place among the requests in flight, or `None` at `maxParallelRequests`.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<InFlight> {
        if self.requests.fetch_add(1, Ordering::AcqRel) >= self.max_requests {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(self.clone()))
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

/// One retry in flight under a breaker, until its attempt has an answer.
struct RetryPlace<'a>(&'a Breaker);

impl Drop for RetryPlace<'_> {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request in flight under a breaker, until its response body ends (or is dropped).
pub(crate) struct InFlight(Arc<Breaker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The policy's side of one attempt (see [`Gate`]).
#[derive(Clone, Copy)]
struct PolicyGate<'a> {
    connect_timeout: Option<Duration>,
    connections: Option<&'a PolicyConnections>,
    health: Option<&'a HealthGate<'a>>,
    class: u64,
    /// `loadBalancer`: the balancer and the request's hash key.
    balance: Option<(&'a Balancer, Option<u64>)>,
    /// Session persistence: `Some` on such routes (the answering endpoint is noted in the
    /// response), with the endpoint the request's session pins.
    session: Option<Option<usize>>,
}

impl Gate for PolicyGate<'_> {
    fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    fn connections(&self) -> Option<&PolicyConnections> {
        self.connections
    }

    fn eligible(&self, i: usize) -> bool {
        self.health.is_none_or(|h| h.eligible(i))
    }

    type Slot = usize;
    fn slot(&self, i: usize) -> usize {
        if let Some(h) = self.health {
            h.started(i);
        }
        i
    }

    fn outcome(&self, i: usize, outcome: Outcome) {
        if let Some(h) = self.health {
            h.outcome(i, outcome);
        }
    }

    fn class(&self) -> u64 {
        self.class
    }

    type Token = (Option<Outstanding>, usize);
    /// The balancer's in-flight count, and the endpoint that answered (for a session).
    type Held = PolicyHeld;

    fn pick(&self) -> Option<usize> {
        // A session's endpoint while health lets it have traffic, then the balancer's
        // choice among the eligible endpoints.
        if let Some(Some(pinned)) = self.session {
            if self.eligible(pinned) {
                return Some(pinned);
            }
        }
        let (b, key) = self.balance?;
        b.pick(key, |i| self.eligible(i))
    }

    fn begin(&self, i: usize) -> (Option<Outstanding>, usize) {
        (self.balance.and_then(|(b, _)| b.begin(i)), i)
    }

    fn finish(&self, (outstanding, i): (Option<Outstanding>, usize)) -> Self::Held {
        (outstanding, self.session.map(|_| i))
    }
}

/// What a policy's exchange holds until its response body ends (made by breaker admission
/// and the registries before the exchange starts).
pub(super) struct Held {
    pub(super) breaker: Option<Arc<Breaker>>,
    /// The request's place under the breaker (`maxParallelRequests`).
    pub(super) in_flight: Option<InFlight>,
    pub(super) budget: Option<Arc<Budget>>,
}

/// What the response of a policy's exchange gets on its way back.
pub(super) struct After<'a> {
    pub(super) upgrade: Option<super::PendingUpgrade>,
    /// A ConsistentHash cookie to issue.
    pub(super) cookie: Option<http::HeaderValue>,
    pub(super) sticky: Option<crate::session::Sticky>,
    pub(super) session_key: &'a crate::session::SessionKey,
}

impl Clients {
    /// [`Clients::send`] under `policy`: its connect timeout and breaker connection cap on
    /// every attempt, and its retries (see the module docs); then the response as the client
    /// gets it (hop-by-hop headers removed, a hash cookie or session issued, the balancer's
    /// count and the breaker's place held by its body). `route`: the metric label.
    ///
    /// One `async` block for all of it, boxed once by the caller: every nested `async` layer
    /// would keep its own copy of its arguments for as long as it runs and be moved into the
    /// one above it (a `memcpy` of its whole size per layer and request).
    // (Not an `async fn`: the `Send` bound is spelled out for the boxed caller.)
    #[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
    pub(super) fn send_with_policy<'a>(
        &'a self,
        metrics: &'a Metrics,
        upstream: &'a Upstream,
        mut req: Request<UpstreamBody>,
        attempt_timeout: Option<Duration>,
        tls: Result<Option<UpstreamTlsConnect>, ProxyError>,
        policy: &'a BackendPolicy,
        held: Held,
        route: &'a str,
        balance: Option<(Arc<Balancer>, Option<u64>)>,
        after: After<'a>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a {
        async move {
            let result = 'exchange: {
                if upstream.endpoints.is_empty() {
                    break 'exchange Err(ProxyError::NoHealthyUpstream(upstream.name.clone()));
                }
                let tls = match tls {
                    Ok(tls) => tls,
                    Err(err) => break 'exchange Err(err),
                };
                let health = policy.health_check.as_deref().map(|check| {
                    let tls_id = tls.as_ref().map_or(0, |t| t.identity);
                    self.health.gate(metrics, upstream, check, tls_id)
                });
                let breaker = held.breaker.as_deref();
                let gate = PolicyGate {
                    connect_timeout: policy.connect_timeout,
                    connections: breaker.map(|b| &b.connections),
                    health: health.as_ref(),
                    // Connection settings: the policy's connections are pooled apart.
                    class: policy.connection.map_or(0, |c| {
                        self.pools.class(tls.as_ref().map_or(0, |t| t.identity), &c)
                    }),
                    balance: balance.as_ref().map(|(b, key)| (&**b, *key)),
                    session: after.sticky.as_ref().map(|s| s.pin.map(|(i, _)| i)),
                };
                let Some(retry) = &policy.retry else {
                    let result = self
                        .attempt(metrics, upstream, req, tls, gate, attempt_timeout)
                        .await;
                    gate.note(&result);
                    break 'exchange result;
                };
                let budget = held.budget.as_deref();
                if let Some(b) = budget {
                    b.request();
                }
                let per_try = match (retry.per_try_timeout, attempt_timeout) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let limit = policy.request_buffer.unwrap_or(RETRY_BUFFER);
                let bytes = match replayable(&mut req, limit) {
                    Replayable::Yes(bytes) => bytes,
                    // Boxed: only requests with a body to read get this future's space.
                    Replayable::Read => match Box::pin(read_body(req.body_mut(), limit)).await {
                        Ok(bytes) => bytes,
                        Err(err) => break 'exchange Err(err),
                    },
                    Replayable::No => {
                        // Not replayable: one attempt.
                        let result = self
                            .attempt(metrics, upstream, req, tls, gate, per_try)
                            .await;
                        gate.note(&result);
                        break 'exchange result;
                    }
                };
                let idempotent = is_idempotent(req.method());
                // The head to send again, copied before the first attempt (which sends the
                // request itself: its header map, with room to spare, is the one hyper
                // reuses for the response's headers).
                let copy = Replay::of(&req);
                let mut retries = 0;
                // The place of the retry in flight (`maxParallelRetries`), until its answer.
                let mut retry_place = None;
                loop {
                    if !bytes.is_empty() {
                        *req.body_mut() = UpstreamBody::Bytes(Some(bytes.clone()));
                    }
                    let result = self
                        .attempt(metrics, upstream, req, tls.clone(), gate, per_try)
                        .await;
                    gate.note(&result);
                    drop(retry_place.take());
                    let reason = match &result {
                        Ok((response, _)) => {
                            // The gRPC status only when a gRPC trigger wants it (a header
                            // lookup by a name parsed from a string costs ~500 instructions).
                            let grpc = retry
                                .has_grpc_triggers()
                                .then(|| grpc_status(response.headers()))
                                .flatten();
                            retry
                                .retries_status(response.status().as_u16(), grpc)
                                .filter(|_| idempotent)
                        }
                        Err(ProxyError::UpstreamConnect { .. }) => {
                            retry.retries_connect_failure().then_some("connect-failure")
                        }
                        Err(ProxyError::BackendTimeout { .. }) => {
                            (idempotent && retry.retries_reset()).then_some("per-try-timeout")
                        }
                        Err(ProxyError::UpstreamRequest { .. }) => {
                            (idempotent && retry.retries_reset()).then_some("reset")
                        }
                        Err(_) => None,
                    };
                    match reason {
                        Some(reason) if retries < retry.num_retries => {
                            // Over `maxParallelRetries`: no retry, this answer.
                            if let Some(b) = breaker {
                                match b.retry_place() {
                                    Some(place) => retry_place = Some(place),
                                    None => {
                                        metrics.record_retry_skipped(route, "max_parallel_retries");
                                        break 'exchange result;
                                    }
                                }
                            }
                            // Gateway API (retryConstraint): "after the retry budget has been
                            // exceeded, additional retries to the backend MUST return a 503".
                            if budget.is_some_and(|b| !b.try_retry()) {
                                metrics.record_retry_skipped(route, "budget");
                                drop(result);
                                break 'exchange Err(ProxyError::UpstreamOverflow(
                                    upstream.name.clone(),
                                ));
                            }
                            retries += 1;
                            metrics.record_retry(route, reason);
                            drop(result);
                            let wait = retry.backoff(retries, rand::random::<u64>());
                            tokio::time::sleep(wait).await;
                            req = copy.request();
                        }
                        _ => break 'exchange result,
                    }
                }
            };
            let (response, (outstanding, served)) = result?;
            let After {
                upgrade,
                cookie,
                sticky,
                session_key,
            } = after;
            let mut response = super::checked(upstream, response, upgrade)?;
            if let Some(cookie) = cookie {
                super::balance::issue(response.headers_mut(), cookie);
            }
            if let (Some(sticky), Some(cfg)) = (sticky, &policy.session) {
                let served = served
                    .and_then(|i| upstream.endpoints.get(i))
                    .map(|e| e.addr);
                crate::session::respond(
                    session_key,
                    cfg,
                    &sticky,
                    served,
                    crate::session::now_secs(),
                    response.headers_mut(),
                );
            }
            // What the body holds until it ends: the balancer's in-flight count and the
            // breaker's place, in one wrapper inside the one box of the body.
            Ok(match (outstanding, held.in_flight) {
                (None, None) => super::boxed(response),
                held => response.map(|body| {
                    super::balance::Holding::new(body, held)
                        .map_err(BoxError::from)
                        .boxed_unsync()
                }),
            })
        }
    }

    /// One attempt (with the next endpoint on a connect error), bounded by `timeout`: the
    /// future itself, not an `async` block around it (which would hold it twice); the
    /// caller notes a timeout with [`PolicyGate::note`].
    fn attempt<'a>(
        &'a self,
        metrics: &'a Metrics,
        upstream: &'a Upstream,
        req: Request<UpstreamBody>,
        tls: Option<UpstreamTlsConnect>,
        gate: PolicyGate<'a>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<(Response<PooledBody>, PolicyHeld), ProxyError>> + Send + 'a
    {
        let fut = match upstream.protocol {
            AppProtocol::H2c => Either::Left {
                fut: self.send_http2(metrics, upstream, req, tls, gate),
            },
            AppProtocol::Http1 | AppProtocol::WebSocket => Either::Right {
                fut: self.send_http1(metrics, upstream, req, tls, gate),
            },
        };
        Bounded::new(fut, timeout, move || ProxyError::BackendTimeout {
            upstream: upstream.name.clone(),
            limit: timeout.unwrap_or_default(),
        })
    }
}

impl PolicyGate<'_> {
    /// Tell passive health about an attempt that timed out.
    fn note<T>(&self, result: &Result<T, ProxyError>) {
        if let (Err(ProxyError::BackendTimeout { .. }), Some(health)) = (result, self.health) {
            health.timed_out();
        }
    }
}

/// What went up with a policy attempt's response ([`Gate::Held`] of the policy's gate).
pub(super) type PolicyHeld = (Option<Outstanding>, Option<usize>);

/// Whether a request can be sent again (see [`replayable`]).
enum Replayable {
    /// Yes: its body's bytes (taken out of the request).
    Yes(Bytes),
    /// Once its body (small enough by its `Content-Length`) is read ([`read_body`]).
    Read,
    /// No: its body is too large or of unknown length.
    No,
}

/// Whether the request can be sent again: no body, a body read whole already by
/// `requestBuffer`, or one of at most `limit` bytes by its `Content-Length` ([`RETRY_BUFFER`],
/// or the policy's `requestBuffer.limit`), to be read first. (By reference: the request,
/// a few hundred bytes, is not moved in and out.)
fn replayable(req: &mut Request<UpstreamBody>, limit: u64) -> Replayable {
    if req.body().is_end_stream() {
        return Replayable::Yes(Bytes::new());
    }
    match std::mem::replace(req.body_mut(), UpstreamBody::empty()) {
        UpstreamBody::Bytes(Some(bytes)) => return Replayable::Yes(bytes),
        other => *req.body_mut() = other,
    }
    if content_length(req.headers()).is_some_and(|n| n <= limit) {
        Replayable::Read
    } else {
        Replayable::No
    }
}

/// The request's body read whole (at most `limit` bytes); the request keeps an empty one.
async fn read_body(body: &mut UpstreamBody, limit: u64) -> Result<Bytes, ProxyError> {
    let body = std::mem::replace(body, UpstreamBody::empty());
    Ok(
        http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .collect()
            .await
            .map_err(client_body_error)?
            .to_bytes(),
    )
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What went wrong reading the client's body into the retry buffer: the client's fault.
pub(crate) fn client_body_error(err: BoxError) -> ProxyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    while let Some(e) = cause {
        if let Some(stalled) = e.downcast_ref::<BodyStalled>() {
            return ProxyError::ClientBodyTimeout(stalled.0);
        }
        if let Some(body) = e.downcast_ref::<ClientBodyError>() {
            return ProxyError::ClientBody(body.to_string());
        }
        cause = e.source();
    }
    ProxyError::ClientBody(err.to_string())
}

/// `grpc-status` of a trailers-only gRPC answer (in the response headers).
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    headers.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_admits_up_to_its_cap_and_gets_places_back() {
        let breaker = Arc::new(Breaker::new(CircuitBreaker {
            max_parallel_requests: 2,
            ..CircuitBreaker::default()
        }));
        let a = breaker.admit();
        let b = breaker.admit();
        assert!(a.is_some() && b.is_some());
        assert!(breaker.admit().is_none(), "over the cap");
        assert_eq!(breaker.in_flight(), 2, "a refusal holds no place");
        drop(a);
        assert!(breaker.admit().is_some());
    }

    #[test]
    fn the_policy_exchange_stays_one_small_future() {
        #[allow(clippy::type_complexity)]
        fn future_size<'a, F, R>(_: F) -> usize
        where
            F: FnOnce(
                &'a Clients,
                &'a Metrics,
                &'a Upstream,
                Request<UpstreamBody>,
                Option<Duration>,
                Result<Option<UpstreamTlsConnect>, ProxyError>,
                &'a BackendPolicy,
                Held,
                &'a str,
                Option<(Arc<Balancer>, Option<u64>)>,
                After<'a>,
            ) -> R,
        {
            std::mem::size_of::<R>()
        }
        let size = future_size(Clients::send_with_policy);
        // The boxed exchange of a route with a BackendTrafficPolicy, in the test profile:
        // 8,640 bytes when it was three nested `async` layers (each holding its arguments
        // again), 2,864 as one block (bench/results/2026-12-07-policies-4.md). Every byte is
        // copied into the box per request.
        assert!(size <= 2864, "the policy exchange is {size} bytes");
    }

    #[test]
    fn grpc_status_and_content_length_are_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("12"));
        assert_eq!(grpc_status(&h), Some(14));
        assert_eq!(content_length(&h), Some(12));
    }
}
