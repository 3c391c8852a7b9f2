//! The BackendTrafficPolicy blocks compiled onto [`weir_snapshot::traffic`]: fault
//! injection, the request body limit, the upstream connection settings and the retry
//! budget (Weir's `retry.budget`, Gateway API's `retryConstraint` shape).

use std::time::Duration;

use weir_snapshot::{
    AbortStatus, FaultAbort, FaultDelay, FaultInjection, RetryBudget, Share, UpstreamConnection,
};
use weir_store::policies::{self as api, IntOrString};

use super::{duration, invalid, Unsupported};
use crate::policy::attach::NotAccepted;

/// The paths of the fields of these blocks Weir does not implement.
pub(super) fn unsupported_fields(
    spec: &api::BackendTrafficPolicySpec,
    add: &mut dyn FnMut(&str, &Unsupported),
) {
    if let Some(f) = &spec.fault_injection {
        add("spec.faultInjection", &f.unsupported);
        if let Some(d) = &f.delay {
            add("spec.faultInjection.delay", &d.unsupported);
        }
        if let Some(a) = &f.abort {
            add("spec.faultInjection.abort", &a.unsupported);
        }
    }
    if let Some(b) = &spec.request_buffer {
        add("spec.requestBuffer", &b.unsupported);
    }
    if let Some(b) = spec.retry.as_ref().and_then(|r| r.budget.as_ref()) {
        add("spec.retry.budget", &b.unsupported);
        if let Some(m) = &b.min_retry_rate {
            add("spec.retry.budget.minRetryRate", &m.unsupported);
        }
    }
}

fn share(field: &str, v: Option<f64>) -> Result<Share, NotAccepted> {
    match v {
        None => Ok(Share::ALL),
        Some(p) => {
            Share::from_percent(p).ok_or_else(|| invalid(format!("{field} {p}: must be 0 to 100")))
        }
    }
}

/// `faultInjection`.
pub(super) fn fault(f: &api::FaultInjection) -> Result<FaultInjection, NotAccepted> {
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let fixed_delay = duration(
                "spec.faultInjection.delay.fixedDelay",
                d.fixed_delay.as_deref(),
            )?
            .ok_or_else(|| invalid("spec.faultInjection.delay.fixedDelay: required"))?;
            Some(FaultDelay {
                fixed_delay,
                share: share("spec.faultInjection.delay.percentage", d.percentage)?,
            })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let status =
                match (a.http_status, a.grpc_status) {
                    (Some(_), Some(_)) | (None, None) => return Err(invalid(
                        "spec.faultInjection.abort: set exactly one of httpStatus and grpcStatus",
                    )),
                    (Some(s), None) => AbortStatus::Http(
                        u16::try_from(s)
                            .ok()
                            .filter(|s| (200..=599).contains(s))
                            .ok_or_else(|| {
                                invalid(format!(
                                    "spec.faultInjection.abort.httpStatus {s}: must be 200 to 599"
                                ))
                            })?,
                    ),
                    (None, Some(s)) => AbortStatus::Grpc(
                        u32::try_from(s).ok().filter(|s| *s <= 16).ok_or_else(|| {
                            invalid(format!(
                                "spec.faultInjection.abort.grpcStatus {s}: must be 0 to 16"
                            ))
                        })?,
                    ),
                };
            Some(FaultAbort {
                status,
                share: share("spec.faultInjection.abort.percentage", a.percentage)?,
            })
        }
    };
    if delay.is_none() && abort.is_none() {
        return Err(invalid("spec.faultInjection: set delay, abort or both"));
    }
    Ok(FaultInjection { delay, abort })
}

/// The largest `requestBuffer.limit` (bytes): what one request may hold in memory.
pub(super) const MAX_REQUEST_BUFFER: u64 = 1 << 30;

/// `requestBuffer.limit`, in bytes.
pub(super) fn request_buffer(b: &api::RequestBuffer) -> Result<u64, NotAccepted> {
    let field = "spec.requestBuffer.limit";
    let Some(v) = &b.limit else {
        return Err(invalid(format!("{field}: required")));
    };
    let (n, shown) = match v {
        IntOrString::Int(n) => (u64::try_from(*n).ok(), n.to_string()),
        IntOrString::String(s) => (crate::policy::client::quantity(s), format!("{s:?}")),
    };
    n.filter(|n| (1..=MAX_REQUEST_BUFFER).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "{field} {shown}: must be a quantity (like 64Ki or 1Mi) of 1 to \
                 {MAX_REQUEST_BUFFER} bytes"
            ))
        })
}

/// The connection settings: `timeout.http.connectionIdleTimeout` and
/// `circuitBreaker.maxRequestsPerConnection`; `None` when neither is set.
pub(super) fn connection(
    spec: &api::BackendTrafficPolicySpec,
) -> Result<Option<UpstreamConnection>, NotAccepted> {
    let idle_timeout = duration(
        "spec.timeout.http.connectionIdleTimeout",
        spec.timeout
            .as_ref()
            .and_then(|t| t.http.as_ref())
            .and_then(|h| h.connection_idle_timeout.as_deref()),
    )?;
    let max_requests = match spec
        .circuit_breaker
        .as_ref()
        .and_then(|c| c.max_requests_per_connection)
    {
        None => None,
        Some(n) => Some(u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
            invalid(format!(
                "spec.circuitBreaker.maxRequestsPerConnection {n}: must be 1 to 4294967295"
            ))
        })?),
    };
    Ok(
        (idle_timeout.is_some() || max_requests.is_some()).then_some(UpstreamConnection {
            idle_timeout,
            max_requests,
        }),
    )
}

/// `retry.budget`.
pub(super) fn retry_budget(b: &api::RetryBudget) -> Result<RetryBudget, NotAccepted> {
    let rate = b.min_retry_rate.as_ref();
    budget(
        "spec.retry.budget",
        "spec.retry.budget.minRetryRate",
        BudgetFields {
            percent: b.percent,
            interval: b.interval.as_deref(),
            min_count: rate.and_then(|r| r.count),
            min_interval: rate.and_then(|r| r.interval.as_deref()),
        },
    )
}

/// The fields of a retry budget as written (Weir's `retry.budget`, Gateway API's
/// `retryConstraint`).
pub(crate) struct BudgetFields<'a> {
    pub percent: Option<i64>,
    pub interval: Option<&'a str>,
    pub min_count: Option<i64>,
    pub min_interval: Option<&'a str>,
}

/// Validate and compile a retry budget; `at` and `rate_at` name the budget's and its
/// `minRetryRate`'s fields in errors.
pub(crate) fn budget(
    at: &str,
    rate_at: &str,
    b: BudgetFields<'_>,
) -> Result<RetryBudget, NotAccepted> {
    let d = RetryBudget::default();
    let percent = match b.percent {
        None => d.percent,
        Some(p) => u32::try_from(p)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| invalid(format!("{at}.percent {p}: must be 0 to 100")))?,
    };
    let interval = window(&format!("{at}.interval"), b.interval)?.unwrap_or(d.interval);
    let min_count = match b.min_count {
        None => d.min_count,
        Some(c) => u32::try_from(c)
            .ok()
            .ok_or_else(|| invalid(format!("{rate_at}.count {c}: must be 0 or more")))?,
    };
    let min_interval =
        window(&format!("{rate_at}.interval"), b.min_interval)?.unwrap_or(d.min_interval);
    Ok(RetryBudget {
        percent,
        interval,
        min_count,
        min_interval,
    })
}

/// A budget window: 1 s to 1 h (Gateway API's bounds for `retryConstraint` intervals).
fn window(field: &str, v: Option<&str>) -> Result<Option<Duration>, NotAccepted> {
    let d = duration(field, v)?;
    if let Some(d) = d {
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
            return Err(invalid(format!("{field}: must be 1s to 1h")));
        }
    }
    Ok(d)
}
