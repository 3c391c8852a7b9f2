//! The retry budget of a BackendTrafficPolicy (`retry.budget`, Gateway API's
//! `retryConstraint` shape): retries may make up at most `percent` % of the policy's
//! requests over the last `interval`, so a failing backend sees at most that much extra load
//! instead of `numRetries` times its traffic; `minRetryRate` (`count` per `interval`) keeps
//! retries possible when traffic is low. Requests are the policy's original requests
//! (retries are not counted as requests).
//!
//! The window slides: the previous window's counts are weighted by how much of it still
//! overlaps the last `interval` (the common two-bucket estimate). One small mutex per policy,
//! taken once per request and once per retry, only for routes whose policy has a budget.
//! Runtime state, in the registry by policy id.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use weir_snapshot::RetryBudget;

pub(crate) struct Budget {
    config: RetryBudget,
    windows: Mutex<Windows>,
}

struct Windows {
    /// Start of the current budget window.
    start: Instant,
    requests: [u64; 2],
    retries: [u64; 2],
    /// Start of the current `minRetryRate` window, and the retries made in it.
    min_start: Instant,
    min_used: u64,
}

impl Budget {
    pub(crate) fn new(config: RetryBudget) -> Self {
        Self::starting(config, Instant::now())
    }

    fn starting(config: RetryBudget, now: Instant) -> Self {
        Self {
            config,
            windows: Mutex::new(Windows {
                start: now,
                requests: [0; 2],
                retries: [0; 2],
                min_start: now,
                min_used: 0,
            }),
        }
    }

    /// Count a request of the policy.
    pub(crate) fn request(&self) {
        self.request_at(Instant::now());
    }

    /// Whether one more retry fits in the budget (then it is counted).
    pub(crate) fn try_retry(&self) -> bool {
        self.try_retry_at(Instant::now())
    }

    fn request_at(&self, now: Instant) {
        let mut w = self.lock();
        self.rotate(&mut w, now);
        w.requests[1] += 1;
    }

    fn try_retry_at(&self, now: Instant) -> bool {
        let mut w = self.lock();
        self.rotate(&mut w, now);
        if now.duration_since(w.min_start) >= self.config.min_interval {
            w.min_start = now;
            w.min_used = 0;
        }
        // The share of the previous window still inside the last `interval`.
        let elapsed = now.duration_since(w.start).as_secs_f64();
        let weight = (1.0 - elapsed / self.config.interval.as_secs_f64()).clamp(0.0, 1.0);
        let estimate = |c: [u64; 2]| c[0] as f64 * weight + c[1] as f64;
        let allowed = estimate(w.requests) * f64::from(self.config.percent) / 100.0;
        let fits = estimate(w.retries) + 1.0 <= allowed;
        if fits || w.min_used < u64::from(self.config.min_count) {
            w.retries[1] += 1;
            w.min_used += 1;
            return true;
        }
        false
    }

    fn rotate(&self, w: &mut Windows, now: Instant) {
        let interval = self.config.interval;
        let since = now.duration_since(w.start);
        if since < interval {
            return;
        }
        if since >= interval.saturating_mul(2) {
            w.requests = [0; 2];
            w.retries = [0; 2];
            w.start = now;
        } else {
            w.requests = [w.requests[1], 0];
            w.retries = [w.retries[1], 0];
            w.start += interval;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A budget of `percent` over 10 s, at least `min_count` retries per second.
    fn config(percent: u32, min_count: u32) -> RetryBudget {
        RetryBudget {
            percent,
            interval: Duration::from_secs(10),
            min_count,
            min_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn retries_stay_within_their_share_of_requests() {
        let t0 = Instant::now();
        let b = Budget::starting(config(20, 0), t0);
        for _ in 0..100 {
            b.request_at(t0);
        }
        let made = (0..100).filter(|_| b.try_retry_at(t0)).count();
        assert_eq!(made, 20, "20 % of 100 requests");
        // More requests make room for more retries.
        for _ in 0..10 {
            b.request_at(t0);
        }
        assert_eq!((0..100).filter(|_| b.try_retry_at(t0)).count(), 2);
    }

    #[test]
    fn the_minimum_rate_allows_retries_when_traffic_is_low() {
        let t0 = Instant::now();
        let b = Budget::starting(config(20, 3), t0);
        b.request_at(t0);
        assert_eq!((0..10).filter(|_| b.try_retry_at(t0)).count(), 3);
        // The next second has its own minimum.
        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!((0..10).filter(|_| b.try_retry_at(t1)).count(), 3);
    }

    #[test]
    fn old_requests_leave_the_window() {
        let t0 = Instant::now();
        let b = Budget::starting(config(50, 0), t0);
        for _ in 0..100 {
            b.request_at(t0);
        }
        // Half a window later, the previous window counts for half.
        let t1 = t0 + Duration::from_secs(15);
        assert_eq!((0..100).filter(|_| b.try_retry_at(t1)).count(), 25);
        // Two windows later nothing is left.
        let t2 = t0 + Duration::from_secs(40);
        assert_eq!((0..100).filter(|_| b.try_retry_at(t2)).count(), 0);
    }
}
