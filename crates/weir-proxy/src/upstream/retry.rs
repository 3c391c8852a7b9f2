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

use super::attempt::{head_copy, is_idempotent, Gate};
use super::balance::{Balancer, Outstanding};
use super::body::{BodyStalled, ClientBodyError, PooledBody, UpstreamBody};
use super::budget::Budget;
use super::health::{HealthGate, Outcome};
use super::pool::PolicyConnections;
use super::{Clients, UpstreamTlsConnect};
use crate::body::BoxError;
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

impl Clients {
    /// [`Clients::send`] under `policy`: its connect timeout and breaker connection cap on
    /// every attempt, and its retries (see the module docs). `route`: the metric label.
    // (Not an `async fn`: the `Send` bound is spelled out for the boxed caller.)
    #[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
    pub(super) fn send_with_policy<'a>(
        &'a self,
        metrics: &'a Metrics,
        upstream: &'a Upstream,
        req: Request<UpstreamBody>,
        attempt_timeout: Option<Duration>,
        tls: Result<Option<UpstreamTlsConnect>, ProxyError>,
        policy: &'a BackendPolicy,
        (breaker, budget): (Option<&'a Breaker>, Option<&'a Budget>),
        route: &'a str,
        balance: Option<(&'a Balancer, Option<u64>)>,
        session: Option<Option<usize>>,
    ) -> impl Future<Output = Result<(Response<PooledBody>, PolicyHeld), ProxyError>> + Send + 'a
    {
        async move {
            if upstream.endpoints.is_empty() {
                return Err(ProxyError::NoHealthyUpstream(upstream.name.clone()));
            }
            let tls = tls?;
            let health = policy.health_check.as_deref().map(|check| {
                let tls_id = tls.as_ref().map_or(0, |t| t.identity);
                self.health.gate(metrics, upstream, check, tls_id)
            });
            let gate = PolicyGate {
                connect_timeout: policy.connect_timeout,
                connections: breaker.map(|b| &b.connections),
                health: health.as_ref(),
                // Connection settings: the policy's connections are pooled apart.
                class: policy.connection.map_or(0, |c| {
                    self.pools.class(tls.as_ref().map_or(0, |t| t.identity), &c)
                }),
                balance,
                session,
            };
            let Some(retry) = &policy.retry else {
                return self
                    .attempt(metrics, upstream, req, tls, gate, attempt_timeout)
                    .await;
            };
            if let Some(b) = budget {
                b.request();
            }
            let per_try = match (retry.per_try_timeout, attempt_timeout) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let limit = policy.request_buffer.unwrap_or(RETRY_BUFFER);
            let (head, bytes) = match replayable(req, limit).await? {
                (req, None) => {
                    // Not replayable: one attempt.
                    return self
                        .attempt(metrics, upstream, req, tls, gate, per_try)
                        .await;
                }
                (req, Some(bytes)) => (req, bytes),
            };
            let idempotent = is_idempotent(head.method());
            let mut retries = 0;
            // The place of the retry in flight (`maxParallelRetries`), until its answer.
            let mut retry_place = None;
            loop {
                let mut req = head_copy(&head);
                if !bytes.is_empty() {
                    *req.body_mut() = UpstreamBody::Bytes(Some(bytes.clone()));
                }
                let result = self
                    .attempt(metrics, upstream, req, tls.clone(), gate, per_try)
                    .await;
                drop(retry_place.take());
                let reason = match &result {
                    Ok((response, _)) => {
                        // The gRPC status only when a gRPC trigger wants it (a header lookup
                        // by a name parsed from a string costs ~500 instructions).
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
                        // Over `maxParallelRetries`: no retry, this answer. Over the budget: 503.
                        if let Some(b) = breaker {
                            match b.retry_place() {
                                Some(place) => retry_place = Some(place),
                                None => {
                                    metrics.record_retry_skipped(route, "max_parallel_retries");
                                    return result;
                                }
                            }
                        }
                        // Gateway API (retryConstraint): "after the retry budget has been
                        // exceeded, additional retries to the backend MUST return a 503".
                        if budget.is_some_and(|b| !b.try_retry()) {
                            metrics.record_retry_skipped(route, "budget");
                            drop(result);
                            return Err(ProxyError::UpstreamOverflow(upstream.name.clone()));
                        }
                        retries += 1;
                        metrics.record_retry(route, reason);
                        drop(result);
                        let wait = retry.backoff(retries, rand::random::<u64>());
                        tokio::time::sleep(wait).await;
                    }
                    _ => return result,
                }
            }
        }
    }

    /// One attempt (with the next endpoint on a connect error), bounded by `timeout`.
    /// (Not boxed: the policy's exchange, which holds it, is boxed already.)
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
        let bounded = Bounded::new(fut, timeout, move || ProxyError::BackendTimeout {
            upstream: upstream.name.clone(),
            limit: timeout.unwrap_or_default(),
        });
        async move {
            let result = bounded.await;
            if let (Err(ProxyError::BackendTimeout { .. }), Some(health)) = (&result, gate.health) {
                health.timed_out();
            }
            result
        }
    }
}

/// What goes up with a policy attempt's response ([`Gate::Held`] of the policy's gate).
pub(super) type PolicyHeld = (Option<Outstanding>, Option<usize>);

/// The request's head and its body as bytes when it can be sent again (no body, a body
/// read whole already by `requestBuffer`, or one of at most `limit` bytes by its
/// `Content-Length`: [`RETRY_BUFFER`], or the policy's `requestBuffer.limit`); else the
/// request as it is.
async fn replayable(
    req: Request<UpstreamBody>,
    limit: u64,
) -> Result<(Request<UpstreamBody>, Option<Bytes>), ProxyError> {
    if req.body().is_end_stream() {
        return Ok((req, Some(Bytes::new())));
    }
    if let UpstreamBody::Bytes(Some(bytes)) = req.body() {
        let bytes = bytes.clone();
        let (parts, _) = req.into_parts();
        return Ok((
            Request::from_parts(parts, UpstreamBody::empty()),
            Some(bytes),
        ));
    }
    let small = content_length(req.headers()).is_some_and(|n| n <= limit);
    if !small {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
        .map_err(client_body_error)?
        .to_bytes();
    Ok((
        Request::from_parts(parts, UpstreamBody::empty()),
        Some(bytes),
    ))
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
    fn grpc_status_and_content_length_are_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("12"));
        assert_eq!(grpc_status(&h), Some(14));
        assert_eq!(content_length(&h), Some(12));
    }
}
