//! `/retry/…`: the conformance echo server's flaky backend, for retry tests. Requests are
//! told apart by their `uuid` query parameter; the first `succeedAfter` requests with one
//! uuid fail, later ones get the echo answer. A failure is an answer with `responseCode`
//! when that parameter is given, else the connection (or HTTP/2 stream) is dropped without
//! an answer. `delayRetry` (a Go duration) delays each failure.
//!
//! Memory is bounded: at most [`MAX_UUIDS`] uuids are remembered; past that the table is
//! emptied (a test uses a fresh uuid per request, so forgetting old ones is harmless).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use http::StatusCode;

use crate::duration::parse_go_duration;
use crate::http::query_param;

/// The most uuids remembered at once.
pub const MAX_UUIDS: usize = 65_536;

/// Attempts seen per uuid.
#[derive(Debug, Default)]
pub struct RetrySimulation {
    attempts: Mutex<HashMap<String, u64>>,
}

/// What `/retry/…` does with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A missing or bad parameter: 400 with this text.
    BadRequest(&'static str),
    /// Fail this attempt, after `delay`: with this status, or by dropping the connection.
    Fail {
        status: Option<StatusCode>,
        delay: Option<std::time::Duration>,
    },
    /// Enough attempts failed: answer with the echo.
    Succeed,
}

impl RetrySimulation {
    pub fn attempt(&self, query: Option<&str>) -> Verdict {
        let Some(uuid) = query_param(query, "uuid").filter(|u| !u.is_empty()) else {
            return Verdict::BadRequest("uuid is required");
        };
        let Some(succeed_after) =
            query_param(query, "succeedAfter").and_then(|n| n.parse::<u64>().ok())
        else {
            return Verdict::BadRequest("succeedAfter is required");
        };
        let status = query_param(query, "responseCode")
            .and_then(|c| c.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok());
        let delay = query_param(query, "delayRetry").and_then(|d| parse_go_duration(&d).ok());
        let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        if attempts.len() >= MAX_UUIDS && !attempts.contains_key(&uuid) {
            attempts.clear();
        }
        let seen = attempts.entry(uuid).or_insert(0);
        if *seen < succeed_after {
            *seen += 1;
            return Verdict::Fail { status, delay };
        }
        Verdict::Succeed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_until_succeed_after_then_succeeds() {
        let sim = RetrySimulation::default();
        let q = Some("uuid=a&succeedAfter=2&responseCode=503");
        let fail = Verdict::Fail {
            status: Some(StatusCode::SERVICE_UNAVAILABLE),
            delay: None,
        };
        assert_eq!(sim.attempt(q), fail);
        assert_eq!(sim.attempt(q), fail);
        assert_eq!(sim.attempt(q), Verdict::Succeed);
        assert_eq!(sim.attempt(q), Verdict::Succeed);
        // Another uuid counts on its own; no responseCode: the connection is dropped.
        assert_eq!(
            sim.attempt(Some("uuid=b&succeedAfter=1")),
            Verdict::Fail {
                status: None,
                delay: None
            }
        );
        assert_eq!(
            sim.attempt(Some("succeedAfter=1")),
            Verdict::BadRequest("uuid is required")
        );
        assert_eq!(
            sim.attempt(Some("uuid=c&succeedAfter=x")),
            Verdict::BadRequest("succeedAfter is required")
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let sim = RetrySimulation::default();
        for i in 0..(MAX_UUIDS + 10) {
            sim.attempt(Some(&format!("uuid={i}&succeedAfter=1&responseCode=500")));
        }
        assert!(sim.attempts.lock().unwrap().len() <= MAX_UUIDS);
    }
}
