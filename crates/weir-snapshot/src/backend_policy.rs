//! A BackendTrafficPolicy, compiled: what a route entry's requests do on the way to their
//! backend (retries, timeouts, the circuit breaker). Translation resolves attachment and
//! precedence and puts the effective policy on each [`crate::RouteAction`]; the proxy never
//! merges policies per request. Its runtime state (the breaker's counters) lives in the
//! proxy's registry, keyed by [`BackendPolicy::id`].

use std::sync::Arc;
use std::time::Duration;

/// One BackendTrafficPolicy as it applies to a route entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendPolicy {
    /// `namespace/name` of the policy (logs).
    pub name: Arc<str>,
    /// A hash of the policy's name and spec: keys its runtime state (a changed spec is a new
    /// policy, with new state).
    pub id: u64,
    pub retry: Option<RetryPolicy>,
    /// `timeout.tcp.connectTimeout`: each TCP (and TLS) connect to an endpoint.
    pub connect_timeout: Option<Duration>,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// The rule's `sessionPersistence` (Gateway API; no BackendTrafficPolicy field sets it).
    pub session: Option<Arc<crate::SessionPersistence>>,
    /// `healthCheck` (see [`crate::health`]).
    pub health_check: Option<Arc<crate::health::HealthCheck>>,
    /// `faultInjection` (see [`crate::traffic`]).
    pub fault: Option<crate::FaultInjection>,
    /// `requestBuffer.limit`: request bodies larger than this get 413; also the most a
    /// retry replays (instead of the fixed default).
    pub request_buffer: Option<u64>,
    /// Settings of the upstream connections the policy's requests use.
    pub connection: Option<crate::UpstreamConnection>,
    /// `retry.budget`: caps retries to a share of requests.
    pub retry_budget: Option<crate::RetryBudget>,
    /// `loadBalancer`: how the request picks an endpoint of its backend (`None`: round
    /// robin, as without a policy).
    pub load_balancer: Option<crate::LoadBalancer>,
    /// `compression`: the response codings Weir may apply (see [`crate::compression`]).
    pub compression: Option<Arc<crate::Compression>>,
    /// `responseCache` (Weir's): the policy's routes answer from an in-memory cache.
    pub response_cache: Option<crate::ResponseCache>,
    /// `rateLimit` (see [`crate::rate_limit`]); its scope names the route rule it applies to.
    pub rate_limit: Option<crate::RateLimit>,
    /// Whether the policy sets a block of the proxy's policy exchange
    /// ([`BackendPolicy::needs_exchange`]): worked out once by [`BackendPolicy::compiled`],
    /// never set by hand.
    pub exchange: bool,
}

impl BackendPolicy {
    /// The policy with [`BackendPolicy::exchange`] worked out: every place that builds or
    /// changes a policy ends with this (a policy built without it is caught by the debug
    /// check in [`BackendPolicy::needs_exchange`]).
    #[must_use]
    pub fn compiled(mut self) -> Self {
        self.exchange = self.exchange_blocks();
        self
    }

    /// Whether a request under this policy goes through the proxy's policy exchange (one
    /// boxed future around the attempt loop: weir-proxy's `upstream/retry.rs`) rather than
    /// the plain send of a route without a policy. Only the blocks that exchange applies
    /// count: retries, the circuit breaker, passive health (`healthCheck`), `loadBalancer`,
    /// the connect timeout, the connection settings, `requestBuffer` and session
    /// persistence. A policy with only a rate limit, compression, a response cache or a
    /// fault (phases 2, 3 and 7) keeps the plain send. One read per request: the answer
    /// was worked out when the policy was compiled.
    pub fn needs_exchange(&self) -> bool {
        debug_assert_eq!(
            self.exchange,
            self.exchange_blocks(),
            "BackendPolicy {} built without BackendPolicy::compiled",
            self.name
        );
        self.exchange
    }

    /// [`BackendPolicy::needs_exchange`], worked out from the fields. (`retry_budget` acts
    /// only with `retry`.)
    fn exchange_blocks(&self) -> bool {
        self.retry.is_some()
            || self.circuit_breaker.is_some()
            || self.health_check.is_some()
            || self.load_balancer.is_some()
            || self.connect_timeout.is_some()
            || self.connection.is_some()
            || self.request_buffer.is_some()
            || self.session.is_some()
    }
}

/// Which failures a request is retried on (`retry.retryOn.triggers`), as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryTriggers(pub u16);

impl RetryTriggers {
    /// Any 5xx response, and no response at all (connect failure, reset, per-try timeout).
    pub const FIVE_XX: u16 = 1 << 0;
    /// 502, 503 and 504, and no response at all.
    pub const GATEWAY_ERROR: u16 = 1 << 1;
    /// The request was sent and no response came (reset, closed, per-try timeout).
    pub const RESET: u16 = 1 << 2;
    /// No connection could be made (nothing was sent).
    pub const CONNECT_FAILURE: u16 = 1 << 3;
    /// 409 Conflict.
    pub const RETRIABLE_4XX: u16 = 1 << 4;
    /// The statuses of `retryOn.httpStatusCodes`.
    pub const STATUS_CODES: u16 = 1 << 5;
    /// gRPC statuses in the response headers (a trailers-only answer).
    pub const GRPC_CANCELLED: u16 = 1 << 6;
    pub const GRPC_DEADLINE_EXCEEDED: u16 = 1 << 7;
    pub const GRPC_INTERNAL: u16 = 1 << 8;
    pub const GRPC_RESOURCE_EXHAUSTED: u16 = 1 << 9;
    pub const GRPC_UNAVAILABLE: u16 = 1 << 10;

    /// The bit of an Envoy Gateway trigger name.
    pub fn parse(name: &str) -> Option<u16> {
        Some(match name {
            "5xx" => Self::FIVE_XX,
            "gateway-error" => Self::GATEWAY_ERROR,
            "reset" => Self::RESET,
            "connect-failure" => Self::CONNECT_FAILURE,
            "retriable-4xx" => Self::RETRIABLE_4XX,
            "retriable-status-codes" => Self::STATUS_CODES,
            "cancelled" => Self::GRPC_CANCELLED,
            "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
            "internal" => Self::GRPC_INTERNAL,
            "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => Self::GRPC_UNAVAILABLE,
            _ => return None,
        })
    }

    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// `retry`: how often and on what a request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`numRetries`, default 2).
    pub num_retries: u32,
    pub triggers: RetryTriggers,
    /// `retryOn.httpStatusCodes` (with the `retriable-status-codes` trigger).
    pub status_codes: Arc<[u16]>,
    /// `perRetry.timeout`: each attempt, up to its response headers.
    pub per_try_timeout: Option<Duration>,
    /// `perRetry.backOff`: the n-th retry waits a random time in
    /// `[0, min(max_interval, base_interval × 2^(n-1))]` (full jitter).
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// The shortest wait before any retry (HTTPRoute `retry.backoff`: "not retried before
    /// the configured minimum duration"); zero for a BackendTrafficPolicy's full jitter.
    pub min_backoff: Duration,
}

impl RetryPolicy {
    /// Whether any gRPC status is a trigger (else a response's `grpc-status` need not be
    /// read at all).
    pub fn has_grpc_triggers(&self) -> bool {
        self.triggers.0
            & (RetryTriggers::GRPC_CANCELLED
                | RetryTriggers::GRPC_DEADLINE_EXCEEDED
                | RetryTriggers::GRPC_INTERNAL
                | RetryTriggers::GRPC_RESOURCE_EXHAUSTED
                | RetryTriggers::GRPC_UNAVAILABLE)
            != 0
    }

    /// Whether a response with `status` (and gRPC status `grpc`, from its headers) is
    /// retried; the trigger's name for the metric when it is.
    pub fn retries_status(&self, status: u16, grpc: Option<u32>) -> Option<&'static str> {
        let t = self.triggers;
        if t.has(RetryTriggers::STATUS_CODES) && self.status_codes.contains(&status) {
            return Some("retriable-status-codes");
        }
        if t.has(RetryTriggers::GATEWAY_ERROR) && matches!(status, 502..=504) {
            return Some("gateway-error");
        }
        if t.has(RetryTriggers::FIVE_XX) && (500..=599).contains(&status) {
            return Some("5xx");
        }
        if t.has(RetryTriggers::RETRIABLE_4XX) && status == 409 {
            return Some("retriable-4xx");
        }
        let grpc_trigger = match grpc? {
            1 => (RetryTriggers::GRPC_CANCELLED, "cancelled"),
            4 => (RetryTriggers::GRPC_DEADLINE_EXCEEDED, "deadline-exceeded"),
            8 => (RetryTriggers::GRPC_RESOURCE_EXHAUSTED, "resource-exhausted"),
            13 => (RetryTriggers::GRPC_INTERNAL, "internal"),
            14 => (RetryTriggers::GRPC_UNAVAILABLE, "unavailable"),
            _ => return None,
        };
        t.has(grpc_trigger.0).then_some(grpc_trigger.1)
    }

    /// Whether no connection (nothing sent) is retried.
    pub fn retries_connect_failure(&self) -> bool {
        let t = self.triggers;
        t.has(RetryTriggers::CONNECT_FAILURE)
            || t.has(RetryTriggers::FIVE_XX)
            || t.has(RetryTriggers::GATEWAY_ERROR)
    }

    /// Whether a request sent without a response (reset, per-try timeout) is retried.
    pub fn retries_reset(&self) -> bool {
        let t = self.triggers;
        t.has(RetryTriggers::RESET)
            || t.has(RetryTriggers::FIVE_XX)
            || t.has(RetryTriggers::GATEWAY_ERROR)
    }

    /// The wait before retry number `n` (1-based), given a uniformly random `draw`: a
    /// duration in `[min_backoff, max(min_backoff, backoff_cap(n))]`.
    pub fn backoff(&self, n: u32, draw: u64) -> Duration {
        let cap = self.backoff_cap(n).max(self.min_backoff);
        let span = cap.saturating_sub(self.min_backoff).as_nanos();
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        self.min_backoff + Duration::from_nanos(draw % span.saturating_add(1))
    }

    /// The upper bound of the wait before retry number `n` (1-based).
    pub fn backoff_cap(&self, n: u32) -> Duration {
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.base_interval
            .checked_mul(factor)
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }
}

/// `circuitBreaker`: caps over every request of the routes the policy applies to (one set
/// of counters per policy). Over a cap a request gets 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Upstream HTTP/1.1 connections the policy's requests have opened and that are open.
    pub max_connections: u32,
    /// Requests waiting for a connection while `max_connections` are open.
    pub max_pending_requests: u32,
    /// Requests in flight (admitted to their response's end).
    pub max_parallel_requests: u32,
    /// Retries in flight at once (`maxParallelRetries`); over it a retry is not made.
    pub max_parallel_retries: u32,
}

impl Default for CircuitBreaker {
    /// Envoy's defaults.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_parallel_requests: 1024,
            max_parallel_retries: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(triggers: u16) -> RetryPolicy {
        RetryPolicy {
            num_retries: 2,
            triggers: RetryTriggers(triggers),
            status_codes: Arc::from([418u16]),
            per_try_timeout: None,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(100),
            min_backoff: Duration::ZERO,
        }
    }

    #[test]
    fn grpc_statuses_are_read_only_for_grpc_triggers() {
        assert!(!policy(RetryTriggers::FIVE_XX | RetryTriggers::STATUS_CODES).has_grpc_triggers());
        let grpc = policy(RetryTriggers::GRPC_UNAVAILABLE);
        assert!(grpc.has_grpc_triggers());
        assert_eq!(grpc.retries_status(200, Some(14)), Some("unavailable"));
        assert_eq!(grpc.retries_status(200, Some(13)), None);
        assert_eq!(grpc.retries_status(200, None), None);
    }

    #[test]
    fn triggers_match_their_statuses() {
        let p = policy(RetryTriggers::GATEWAY_ERROR);
        assert_eq!(p.retries_status(503, None), Some("gateway-error"));
        assert_eq!(p.retries_status(500, None), None);
        let p = policy(RetryTriggers::FIVE_XX | RetryTriggers::STATUS_CODES);
        assert_eq!(p.retries_status(500, None), Some("5xx"));
        assert_eq!(p.retries_status(418, None), Some("retriable-status-codes"));
        assert_eq!(p.retries_status(404, None), None);
        let p = policy(RetryTriggers::GRPC_UNAVAILABLE);
        assert_eq!(p.retries_status(200, Some(14)), Some("unavailable"));
        assert_eq!(p.retries_status(200, Some(13)), None);
        assert!(!policy(RetryTriggers::RETRIABLE_4XX).retries_connect_failure());
        assert!(policy(RetryTriggers::FIVE_XX).retries_reset());
    }

    #[test]
    fn backoff_never_waits_less_than_its_minimum() {
        let mut p = policy(0);
        assert_eq!(
            p.backoff(1, 0),
            Duration::ZERO,
            "full jitter starts at zero"
        );
        assert!(p.backoff(3, u64::MAX) <= Duration::from_millis(100));
        p.min_backoff = Duration::from_millis(40);
        for draw in [0, 1, 7_000_000, u64::MAX] {
            let w = p.backoff(1, draw);
            assert!(w >= Duration::from_millis(40), "{w:?}");
            assert!(
                w <= Duration::from_millis(40),
                "cap below the floor: the floor"
            );
            let w = p.backoff(3, draw);
            assert!((Duration::from_millis(40)..=Duration::from_millis(100)).contains(&w));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let p = policy(0);
        assert_eq!(p.backoff_cap(1), Duration::from_millis(25));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(50));
        assert_eq!(p.backoff_cap(3), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(40), Duration::from_millis(100));
    }
}
