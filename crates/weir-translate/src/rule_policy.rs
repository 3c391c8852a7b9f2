//! What a route rule itself asks of the exchange with its backends, in Gateway API's own
//! fields (experimental channel), compiled onto the same engines as a
//! BackendTrafficPolicy's: `rules[].retry` (GEP-1731) onto the retry engine
//! (`weir_snapshot::RetryPolicy`, run by the proxy's `upstream/retry.rs`), and
//! `rules[].sessionPersistence` (GEP-1619, see [`crate::session`]). Both travel in the
//! entry's `BackendPolicy`, so a rule without them pays nothing.
//!
//! What `retry`'s fields mean here:
//! - `attempts`: retries after the first try (the GEP: "the maximum number of times an
//!   individual request … should be retried"); unset: [`DEFAULT_ATTEMPTS`]; at most
//!   [`MAX_ATTEMPTS`].
//! - `codes`: the response statuses retried (400–599). A request that got no response is
//!   retried too: no connection (features HTTPRouteRetryConnectionError), a reset, or an
//!   attempt cut by `timeouts.backendRequest` (HTTPRouteRetryBackendTimeout). Unset codes:
//!   only those.
//! - `backoff`: the minimum wait before each retry; the n-th retry waits a random time
//!   between it and `backoff × 2^(n-1)` (at most ten times `backoff`). Unset: 25 ms,
//!   Envoy's base interval, with full jitter.
//! - `timeouts.backendRequest` bounds each attempt and `timeouts.request` the whole
//!   exchange, retries and waits included (the proxy applies both as for any route).
//!
//! Which requests are retried at all (the engine's rules): a body is kept for a retry only
//! when its `Content-Length` is at most 64 KiB; responses and resets are retried only for
//! idempotent methods (a POST is retried only when nothing was sent).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use weir_snapshot::{BackendPolicy, RetryPolicy, RetryTriggers, SessionPersistence};
use weir_store::gw::httproutes::HttpRouteRulesRetry;

use crate::error::TranslateError;

/// Retries when `attempts` is not set.
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// The most retries a route may ask for (as BackendTrafficPolicy's `numRetries`).
pub const MAX_ATTEMPTS: i64 = 10;
/// The first retry's wait when `backoff` is not set (full jitter below it).
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// The entry's policy for rule `rule_index` of route `label`: its retry and session
/// persistence, or `None` when it has neither.
pub fn rule_policy(
    label: &str,
    rule_index: usize,
    retry: Option<RetryPolicy>,
    session: Option<SessionPersistence>,
) -> Option<Arc<BackendPolicy>> {
    if retry.is_none() && session.is_none() {
        return None;
    }
    let mut h = DefaultHasher::new();
    (
        "rule policy",
        label,
        rule_index,
        format!("{retry:?} {session:?}"),
    )
        .hash(&mut h);
    let what = match (&retry, &session) {
        (Some(_), Some(_)) => "retry and sessionPersistence",
        (Some(_), None) => "retry",
        _ => "sessionPersistence",
    };
    Some(Arc::new(
        BackendPolicy {
            name: format!("{label} rule {rule_index} {what}").into(),
            id: h.finish(),
            retry,
            session: session.map(Arc::new),
            ..BackendPolicy::default()
        }
        .compiled(),
    ))
}

/// The retry policy of rule `rule_index`, or `None` without `retry`.
pub fn retry(
    rule_index: usize,
    retry: Option<&HttpRouteRulesRetry>,
) -> Result<Option<RetryPolicy>, TranslateError> {
    let Some(r) = retry else { return Ok(None) };
    let invalid = |detail: String| TranslateError::InvalidRetry {
        rule: rule_index,
        detail,
    };
    let num_retries = match r.attempts {
        None => DEFAULT_ATTEMPTS,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|_| (1..=MAX_ATTEMPTS).contains(&n))
            .ok_or_else(|| invalid(format!("attempts {n}: must be 1 to {MAX_ATTEMPTS}")))?,
    };
    let codes = r
        .codes
        .iter()
        .flatten()
        .map(|&c| {
            u16::try_from(c)
                .ok()
                .filter(|c| (400..=599).contains(c))
                .ok_or_else(|| invalid(format!("codes: {c} is not a status in 400-599")))
        })
        .collect::<Result<Vec<u16>, _>>()?;
    let (min_backoff, base_interval) = match r.backoff.as_deref() {
        None => (Duration::ZERO, DEFAULT_BACKOFF),
        Some(s) => {
            let d: gateway_api::Duration = s
                .parse()
                .map_err(|e: String| invalid(format!("backoff {s:?}: {e}")))?;
            let d = Duration::new(d.as_secs(), d.subsec_nanos());
            (d, d)
        }
    };
    let mut triggers = RetryTriggers::CONNECT_FAILURE | RetryTriggers::RESET;
    if !codes.is_empty() {
        triggers |= RetryTriggers::STATUS_CODES;
    }
    Ok(Some(RetryPolicy {
        num_retries,
        triggers: RetryTriggers(triggers),
        status_codes: codes.into(),
        per_try_timeout: None,
        base_interval,
        max_interval: base_interval.saturating_mul(10),
        min_backoff,
    }))
}

/// The policy for an entry whose rule has a `retry` or `sessionPersistence` (`route`) and
/// to which a BackendTrafficPolicy (`attached`) applies: the policy's settings with the
/// rule's own, because Gateway API's field on the rule is the more specific one (as a
/// rule's policy beats its route's).
pub fn merge(route: &BackendPolicy, attached: &Arc<BackendPolicy>) -> Arc<BackendPolicy> {
    if route.retry.is_none() && route.session.is_none() {
        return attached.clone();
    }
    let mut h = DefaultHasher::new();
    (route.id, attached.id).hash(&mut h);
    Arc::new(
        BackendPolicy {
            name: format!("{} with {}", attached.name, route.name).into(),
            id: h.finish(),
            retry: route.retry.clone().or_else(|| attached.retry.clone()),
            session: route.session.clone(),
            ..(**attached).clone()
        }
        .compiled(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(attempts: Option<i64>, codes: &[i64], backoff: Option<&str>) -> HttpRouteRulesRetry {
        HttpRouteRulesRetry {
            attempts,
            backoff: backoff.map(str::to_string),
            codes: Some(codes.to_vec()),
        }
    }

    #[test]
    fn fields_compile_onto_the_engine() {
        let r = super::retry(1, Some(&retry(Some(3), &[500], Some("100ms"))))
            .unwrap()
            .unwrap();
        let p = rule_policy("ns/r", 1, Some(r), None).unwrap();
        let r = p.retry.as_ref().unwrap();
        assert_eq!(r.num_retries, 3);
        assert_eq!(&*r.status_codes, &[500]);
        assert_eq!(r.retries_status(500, None), Some("retriable-status-codes"));
        assert_eq!(r.retries_status(503, None), None, "only the listed codes");
        assert!(r.retries_connect_failure() && r.retries_reset());
        assert_eq!(r.min_backoff, Duration::from_millis(100));
        assert!(r.backoff(1, 0) >= Duration::from_millis(100));
        assert!(p.circuit_breaker.is_none() && p.connect_timeout.is_none());
        assert!(super::retry(0, None).unwrap().is_none());
        assert!(
            rule_policy("ns/r", 0, None, None).is_none(),
            "nothing: no policy"
        );
    }

    #[test]
    fn defaults_and_no_codes() {
        let r = super::retry(0, Some(&retry(None, &[], None)))
            .unwrap()
            .unwrap();
        assert_eq!(r.num_retries, DEFAULT_ATTEMPTS);
        assert_eq!(
            r.retries_status(500, None),
            None,
            "no codes: no status retried"
        );
        assert!(r.retries_connect_failure());
        assert_eq!(r.min_backoff, Duration::ZERO);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (r, needle) in [
            (retry(Some(0), &[500], None), "attempts 0"),
            (retry(Some(11), &[500], None), "attempts 11"),
            (retry(Some(1), &[302], None), "codes: 302"),
            (retry(Some(1), &[500], Some("soon")), "backoff \"soon\""),
        ] {
            let err = super::retry(2, Some(&r)).unwrap_err();
            assert_eq!(err.reason(), "UnsupportedValue");
            let msg = err.to_string();
            assert!(msg.contains("rule 2") && msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn a_route_retry_overrides_an_attached_policy_retry_only() {
        let r = super::retry(0, Some(&retry(Some(4), &[502], None))).unwrap();
        let route = rule_policy("ns/r", 0, r, None).unwrap();
        let attached = Arc::new(
            BackendPolicy {
                name: "ns/btp".into(),
                id: 7,
                connect_timeout: Some(Duration::from_secs(1)),
                ..BackendPolicy::default()
            }
            .compiled(),
        );
        let merged = merge(&route, &attached);
        assert_eq!(merged.retry.as_ref().unwrap().num_retries, 4);
        assert_eq!(merged.connect_timeout, Some(Duration::from_secs(1)));
        assert_ne!(merged.id, attached.id);
        assert_ne!(merged.id, route.id);
    }
}
