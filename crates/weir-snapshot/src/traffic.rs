//! BackendTrafficPolicy blocks beside retries, timeouts and the breaker's caps (those are in
//! [`crate::backend_policy`]): fault injection, the request body limit, the settings of the
//! upstream connections a policy's requests use, and the retry budget. Compiled by
//! translation onto [`crate::BackendPolicy`]; their runtime state (budget counters) lives
//! in the proxy's registry, never here.

use std::time::Duration;

/// A share of requests, in parts per million (`percentage` 0–100 as a float, kept exact
/// enough and `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(pub u32);

impl Share {
    pub const ALL: Share = Share(1_000_000);

    /// `percent` (0–100) as a share; `None` outside that range (or NaN).
    pub fn from_percent(percent: f64) -> Option<Share> {
        if !(0.0..=100.0).contains(&percent) {
            return None;
        }
        // In range: the cast cannot overflow.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ppm = (percent * 10_000.0).round() as u32;
        Some(Share(ppm.min(1_000_000)))
    }

    /// Whether a request whose uniform random number is `roll` falls in the share.
    pub fn hit(self, roll: u64) -> bool {
        self.0 >= 1_000_000 || (roll % 1_000_000) < u64::from(self.0)
    }
}

/// `faultInjection`: for chaos testing, delay or abort a share of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInjection {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

/// `faultInjection.delay`: wait `fixed_delay` before the request is sent (before any
/// upstream connection is taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDelay {
    pub fixed_delay: Duration,
    pub share: Share,
}

/// `faultInjection.abort`: answer at once, without reaching the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAbort {
    pub status: AbortStatus,
    pub share: Share,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortStatus {
    /// `httpStatus`: a response with this status.
    Http(u16),
    /// `grpcStatus`: a trailers-only gRPC response (HTTP 200) with this `grpc-status`.
    Grpc(u32),
}

/// Settings of the upstream HTTP/1.1 connections a policy's requests use
/// (`timeout.http.connectionIdleTimeout`, `circuitBreaker.maxRequestsPerConnection`). A
/// policy with either gets connections of its own: they are pooled apart from other routes'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamConnection {
    /// An idle connection is closed after this long (the pool's default otherwise).
    pub idle_timeout: Option<Duration>,
    /// A connection serves at most this many requests, then is closed.
    pub max_requests: Option<u32>,
}

/// `retry.budget` (Gateway API's `XBackendTrafficPolicy.retryConstraint`): retries may make
/// up at most `percent` % of the requests of the last `interval`, but `min_count` retries
/// per `min_interval` are always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    pub percent: u32,
    pub interval: Duration,
    pub min_count: u32,
    pub min_interval: Duration,
}

impl Default for RetryBudget {
    /// Gateway API's defaults: 20 % over 10 s, at least 10 retries per second.
    fn default() -> Self {
        Self {
            percent: 20,
            interval: Duration::from_secs(10),
            min_count: 10,
            min_interval: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_hit_their_fraction() {
        assert_eq!(Share::from_percent(30.0), Some(Share(300_000)));
        assert_eq!(Share::from_percent(0.0001), Some(Share(1)));
        assert!(Share::from_percent(100.5).is_none());
        assert!(Share::from_percent(-1.0).is_none());
        assert!(Share::from_percent(f64::NAN).is_none());
        let s = Share(300_000);
        let hits = (0..1_000_000u64).filter(|&r| s.hit(r)).count();
        assert_eq!(hits, 300_000);
        assert!(Share::ALL.hit(u64::MAX));
        assert!(!Share(0).hit(0));
    }
}
