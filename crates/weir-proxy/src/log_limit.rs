//! Rate limits for log lines that can repeat per request or per connection (a backend that
//! is down fails every request; a process out of descriptors fails every accept): without
//! them one fault writes millions of lines a minute and the log pipeline becomes the outage.
//!
//! Each call site owns a [`LogLimit`] (usually a `static`): a fixed window with a burst. The
//! first `burst` occurrences of a window are logged; the rest are counted, and the next line
//! logged says how many were left out (`suppressed`). Metrics still count every occurrence.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A per-call-site budget of log lines: at most `burst` per `window`.
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// At most `burst` lines per `window`.
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            state: Mutex::new(State {
                window_start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether this occurrence may be logged; if so, how many were left out before it.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`LogLimit::admit`] at a given time (tests).
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = state
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            state.window_start = Some(now);
            state.logged = 0;
        }
        if state.logged < self.burst {
            state.logged += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_the_count_of_what_was_left_out() {
        let limit = LogLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let first: Vec<_> = (0..1000)
            .map(|i| limit.admit_at(t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(first.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(&first[..3], &[Some(0), Some(0), Some(0)]);
        // The next window's first line carries the count.
        assert_eq!(limit.admit_at(t0 + Duration::from_secs(10)), Some(997));
        assert_eq!(limit.admit_at(t0 + Duration::from_secs(11)), Some(0));
    }
}
