//! BackendTrafficPolicy: validated, compiled to [`weir_snapshot::BackendPolicy`] and put on
//! the route entries it applies to.
//!
//! Decisions where the spec (Envoy Gateway's) leaves room:
//! - Targets are Gateways (every route entry attached to one of its listeners), HTTPRoutes
//!   and GRPCRoutes (`sectionName`: a rule name). The most specific wins, as a whole: a
//!   rule's policy beats its route's, a route's beats its Gateway's (no field-by-field
//!   merge, as Envoy Gateway does without `mergeType`). Two policies naming the same target
//!   conflict: the oldest wins (see [`attach`]). A Gateway listener (`sectionName` on a
//!   Gateway) and Services are not targets yet: refused (`UnsupportedValue`).
//! - `timeout.http.requestTimeout` is the route's request timeout when the HTTPRoute rule
//!   sets none (`timeouts.request` wins: Gateway API's own field first).
//! - A field Weir does not implement yet is refused: `Accepted=False`, `UnsupportedValue`,
//!   naming each such field; a value out of range is `Invalid`. A refused policy applies to
//!   nothing.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use weir_snapshot::{BackendPolicy, CircuitBreaker, RetryPolicy, RetryTriggers, RouteAction};
use weir_store::policies::{BackendTrafficPolicySpec, Unsupported};
use weir_store::{BackendTrafficPolicy, ObjectKey, Store};

use crate::model::GatewayModel;
use crate::policy::attach::{Allowed, NotAccepted};
use crate::policy::attached::{self, Attached};
use crate::ObjectStatus;

/// What a BackendTrafficPolicy may name (Services are resolved, then refused).
const TARGETS: Allowed = Allowed {
    gateway: true,
    listener_set: false,
    routes: true,
    service: true,
};

/// What a BackendTrafficPolicy's targets get.
struct Compiled {
    policy: Arc<BackendPolicy>,
    /// The effective `timeout.http.requestTimeout`.
    request_timeout: Option<Duration>,
}

type Model = attached::Model<BackendTrafficPolicy, Compiled>;

/// Every BackendTrafficPolicy, and which one holds each target.
pub struct BackendPolicies(Attached<BackendTrafficPolicy, Compiled>);

impl BackendPolicies {
    /// Evaluate every policy; `ours`: the Gateways of our classes.
    /// `redis`: whether global rate limits have a Redis (`--rate-limit-redis`).
    pub fn build(store: &Store, ours: &BTreeSet<ObjectKey>, redis: bool) -> Self {
        Self(Attached::build(
            store,
            "Gateway, route or rule",
            |key, p| evaluate(store, ours, key, p, redis),
        ))
    }

    /// Put the effective policy (its rule's, its route's, then the Gateway's) on every
    /// route entry of our Gateways.
    pub fn place(&self, gateways: &mut [GatewayModel]) {
        self.0.place(gateways, |old, compiled| {
            let mut timeouts = old.timeouts;
            if timeouts.request.is_none() {
                timeouts.request = compiled.request_timeout;
            }
            RouteAction {
                timeouts,
                // The rule's own `retry` (Gateway API) beats the policy's.
                policy: Some(scoped(
                    match &old.policy {
                        Some(route) => crate::rule_policy::merge(route, &compiled.policy),
                        None => compiled.policy.clone(),
                    },
                    &old.route,
                )),
                ..attached::copy(old)
            }
        });
    }

    /// One status per policy: an ancestor entry per Gateway it affects.
    pub fn statuses(&self, controller: &str, now: &weir_store::Time) -> Vec<ObjectStatus> {
        self.0.statuses(controller, now)
    }
}

/// The policy for one route rule: its rate limit counts that rule apart (see
/// [`rate_limit::scoped`]); other policies stay shared.
fn scoped(policy: Arc<BackendPolicy>, route: &weir_snapshot::RouteRef) -> Arc<BackendPolicy> {
    match &policy.rate_limit {
        None => policy,
        Some(rl) => Arc::new(
            BackendPolicy {
                rate_limit: Some(rate_limit::scoped(rl, route)),
                ..(*policy).clone()
            }
            .compiled(),
        ),
    }
}

fn evaluate(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    key: &ObjectKey,
    p: &Arc<BackendTrafficPolicy>,
    redis: bool,
) -> Model {
    let compile = || {
        let (policy, request_timeout) = compile(key, &p.spec, redis)?;
        Ok(Compiled {
            policy: Arc::new(policy),
            request_timeout,
        })
    };
    let refs = p.spec.targets.all();
    attached::evaluate(store, ours, (key, p), refs, TARGETS, compile, None)
}

/// The paths of the fields Weir does not implement.
fn unsupported_fields(spec: &BackendTrafficPolicySpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |path: &str, u: &Unsupported| {
        out.extend(u.keys().map(|k| format!("{path}.{k}")));
    };
    add("spec", &spec.unsupported);
    if let Some(r) = &spec.retry {
        add("spec.retry", &r.unsupported);
        if let Some(on) = &r.retry_on {
            add("spec.retry.retryOn", &on.unsupported);
        }
        if let Some(per) = &r.per_retry {
            add("spec.retry.perRetry", &per.unsupported);
            if let Some(b) = &per.back_off {
                add("spec.retry.perRetry.backOff", &b.unsupported);
            }
        }
    }
    if let Some(t) = &spec.timeout {
        add("spec.timeout", &t.unsupported);
        if let Some(h) = &t.http {
            add("spec.timeout.http", &h.unsupported);
        }
        if let Some(tcp) = &t.tcp {
            add("spec.timeout.tcp", &tcp.unsupported);
        }
    }
    if let Some(c) = &spec.circuit_breaker {
        add("spec.circuitBreaker", &c.unsupported);
    }
    traffic::unsupported_fields(spec, &mut add);
    if let Some(lb) = &spec.load_balancer {
        lb::unsupported_fields(lb, &mut add);
    }
    if let Some(c) = &spec.compression {
        compression::unsupported_fields(c, &mut add);
    }
    if let Some(c) = &spec.response_cache {
        cache::unsupported_fields(c, &mut add);
    }
    if let Some(rl) = &spec.rate_limit {
        rate_limit::unsupported_fields(rl, &mut add);
    }
    if let Some(h) = &spec.health_check {
        health::unsupported_fields(h, &mut out);
    }
    out
}

fn invalid(message: impl Into<String>) -> NotAccepted {
    NotAccepted::new("Invalid", message)
}

/// Validate and compile a spec: the policy, and its request timeout.
fn compile(
    key: &ObjectKey,
    spec: &BackendTrafficPolicySpec,
    redis: bool,
) -> Result<(BackendPolicy, Option<Duration>), NotAccepted> {
    let unsupported = unsupported_fields(spec);
    if !unsupported.is_empty() {
        return Err(NotAccepted::new(
            "UnsupportedValue",
            format!(
                "Weir does not implement {} (yet): remove {} to apply this policy",
                unsupported.join(", "),
                if unsupported.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    let mut out = BackendPolicy {
        name: key.to_string().into(),
        id: identity(key, spec),
        ..BackendPolicy::default()
    };
    let mut request_timeout = None;
    if let Some(r) = &spec.retry {
        out.retry = Some(retry(r)?);
    }
    if let Some(t) = &spec.timeout {
        if let Some(h) = &t.http {
            request_timeout = duration(
                "spec.timeout.http.requestTimeout",
                h.request_timeout.as_deref(),
            )?;
        }
        if let Some(tcp) = &t.tcp {
            out.connect_timeout = duration(
                "spec.timeout.tcp.connectTimeout",
                tcp.connect_timeout.as_deref(),
            )?;
        }
    }
    if let Some(c) = &spec.circuit_breaker {
        let cap = |field: &str, v: Option<i64>, default: u32| -> Result<u32, NotAccepted> {
            match v {
                None => Ok(default),
                Some(n) => u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    invalid(format!(
                        "spec.circuitBreaker.{field} {n}: must be 1 to 4294967295"
                    ))
                }),
            }
        };
        let d = CircuitBreaker::default();
        out.circuit_breaker = Some(CircuitBreaker {
            max_connections: cap("maxConnections", c.max_connections, d.max_connections)?,
            max_pending_requests: cap(
                "maxPendingRequests",
                c.max_pending_requests,
                d.max_pending_requests,
            )?,
            max_parallel_requests: cap(
                "maxParallelRequests",
                c.max_parallel_requests,
                d.max_parallel_requests,
            )?,
            max_parallel_retries: cap(
                "maxParallelRetries",
                c.max_parallel_retries,
                d.max_parallel_retries,
            )?,
        });
    }
    if let Some(h) = &spec.health_check {
        out.health_check = Some(Arc::new(health::compile(h)?));
    }
    if let Some(f) = &spec.fault_injection {
        out.fault = Some(traffic::fault(f)?);
    }
    if let Some(b) = &spec.request_buffer {
        out.request_buffer = Some(traffic::request_buffer(b)?);
    }
    out.connection = traffic::connection(spec)?;
    if let Some(b) = spec.retry.as_ref().and_then(|r| r.budget.as_ref()) {
        out.retry_budget = Some(traffic::retry_budget(b)?);
    }
    if let Some(lb) = &spec.load_balancer {
        out.load_balancer = Some(lb::compile(lb)?);
    }
    if let Some(c) = &spec.compression {
        out.compression = Some(Arc::new(compression::compile(c)?));
    }
    if let Some(c) = &spec.response_cache {
        out.response_cache = Some(cache::compile(c)?);
    }
    if let Some(rl) = &spec.rate_limit {
        out.rate_limit = Some(rate_limit::compile(rl, out.id, redis)?);
    }
    Ok((out.compiled(), request_timeout))
}

/// At most this many retries (Envoy Gateway has no maximum; a retry storm needs none).
const MAX_RETRIES: i64 = 10;

fn retry(r: &weir_store::policies::Retry) -> Result<RetryPolicy, NotAccepted> {
    let num_retries = match r.num_retries {
        None => 2,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|_| n <= MAX_RETRIES)
            .ok_or_else(|| {
                invalid(format!(
                    "spec.retry.numRetries {n}: must be 0 to {MAX_RETRIES}"
                ))
            })?,
    };
    // Envoy Gateway's default when `retryOn` is absent: connect failures and 503s.
    let (mut triggers, mut status_codes) = (
        RetryTriggers::CONNECT_FAILURE | RetryTriggers::STATUS_CODES,
        vec![503u16],
    );
    if let Some(on) = &r.retry_on {
        triggers = 0;
        for name in on.triggers.iter().flatten() {
            triggers |= RetryTriggers::parse(name).ok_or_else(|| {
                invalid(format!(
                    "spec.retry.retryOn.triggers: {name:?} is not one of 5xx, gateway-error, \
                     reset, connect-failure, retriable-4xx, retriable-status-codes, cancelled, \
                     deadline-exceeded, internal, resource-exhausted, unavailable (Weir does \
                     not implement refused-stream yet)"
                ))
            })?;
        }
        status_codes = on
            .http_status_codes
            .iter()
            .flatten()
            .map(|&c| {
                u16::try_from(c)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| {
                        invalid(format!(
                            "spec.retry.retryOn.httpStatusCodes: {c} is not an HTTP status"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        if !status_codes.is_empty() {
            // Envoy: status codes imply their trigger.
            triggers |= RetryTriggers::STATUS_CODES;
        }
        if triggers & RetryTriggers::STATUS_CODES != 0 && status_codes.is_empty() {
            return Err(invalid(
                "spec.retry.retryOn: retriable-status-codes needs httpStatusCodes",
            ));
        }
    }
    let per = r.per_retry.as_ref();
    let per_try_timeout = duration(
        "spec.retry.perRetry.timeout",
        per.and_then(|p| p.timeout.as_deref()),
    )?;
    let back_off = per.and_then(|p| p.back_off.as_ref());
    let base_interval = duration(
        "spec.retry.perRetry.backOff.baseInterval",
        back_off.and_then(|b| b.base_interval.as_deref()),
    )?
    .unwrap_or(Duration::from_millis(25));
    let max_interval = duration(
        "spec.retry.perRetry.backOff.maxInterval",
        back_off.and_then(|b| b.max_interval.as_deref()),
    )?
    .unwrap_or(base_interval.saturating_mul(10));
    if max_interval < base_interval {
        return Err(invalid(
            "spec.retry.perRetry.backOff: maxInterval is below baseInterval",
        ));
    }
    Ok(RetryPolicy {
        num_retries,
        triggers: RetryTriggers(triggers),
        status_codes: status_codes.into(),
        per_try_timeout,
        base_interval,
        max_interval,
        min_backoff: Duration::ZERO,
    })
}

/// A duration field (Gateway API format), more than zero.
pub(crate) fn duration(field: &str, v: Option<&str>) -> Result<Option<Duration>, NotAccepted> {
    let Some(s) = v else { return Ok(None) };
    let d: gateway_api::Duration = s
        .parse()
        .map_err(|e: String| invalid(format!("{field} {s:?}: {e}")))?;
    if d.is_zero() {
        return Err(invalid(format!("{field}: must be more than 0")));
    }
    Ok(Some(Duration::new(d.as_secs(), d.subsec_nanos())))
}

/// What keys the policy's runtime state: its name and spec.
fn identity(key: &ObjectKey, spec: &BackendTrafficPolicySpec) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

mod cache;
mod compression;
mod health;
mod lb;
mod rate_limit;
pub(crate) mod traffic;

#[cfg(test)]
mod tests;
