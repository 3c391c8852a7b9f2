//! `rateLimit` of a BackendTrafficPolicy, validated and compiled onto
//! [`weir_snapshot::RateLimit`]: Envoy Gateway's rules (`clientSelectors` with headers,
//! methods, path and sourceCIDR; `limit.{requests, unit}`; `shared`), `local` and `global`.
//!
//! Decisions:
//! - `type` (deprecated in Envoy Gateway) is optional; when given, the block it names must
//!   be there. `local` and `global` may be given together: a request then passes both.
//! - `global` needs a Redis (`--rate-limit-redis`): without one the policy is not accepted
//!   (`Invalid`, naming the flag), never half-applied.
//! - Regular expressions are compiled here, anchored (a full match, as Envoy's), within the
//!   same per-pattern bounds as route matches.
//! - `cost` and `shadowMode` are not implemented: refused by name (`UnsupportedValue`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::{HeaderName, Method};
use weir_snapshot::{
    Cidr, ClientSelector, HeaderMatch, HeaderSelector, Limit, PathMatch, RateLimit, RateLimitRule,
    SourceSelector, StringMatch,
};
use weir_store::policies as api;

use super::{invalid, Unsupported};
use crate::policy::attach::NotAccepted;

/// The most rules one block may have (Envoy Gateway: 16 local, 128 global).
const MAX_LOCAL_RULES: usize = 16;
const MAX_GLOBAL_RULES: usize = 128;
/// The most selectors of one rule (Envoy Gateway: 8) and headers of one selector (16).
const MAX_SELECTORS: usize = 8;
const MAX_HEADERS: usize = 16;

/// The paths of the fields of `rateLimit` Weir does not implement.
pub(super) fn unsupported_fields(rl: &api::RateLimit, add: &mut dyn FnMut(&str, &Unsupported)) {
    add("spec.rateLimit", &rl.unsupported);
    for (name, block) in [("local", &rl.local), ("global", &rl.global)] {
        let Some(block) = block else { continue };
        let at = format!("spec.rateLimit.{name}");
        add(&at, &block.unsupported);
        for (i, rule) in block.rules.iter().enumerate() {
            let at = format!("{at}.rules[{i}]");
            add(&at, &rule.unsupported);
            if let Some(l) = &rule.limit {
                add(&format!("{at}.limit"), &l.unsupported);
            }
            for (j, s) in rule.client_selectors.iter().enumerate() {
                let at = format!("{at}.clientSelectors[{j}]");
                add(&at, &s.unsupported);
                for (k, h) in s.headers.iter().enumerate() {
                    add(&format!("{at}.headers[{k}]"), &h.unsupported);
                }
                for (k, m) in s.methods.iter().enumerate() {
                    add(&format!("{at}.methods[{k}]"), &m.unsupported);
                }
                if let Some(p) = &s.path {
                    add(&format!("{at}.path"), &p.unsupported);
                }
                if let Some(c) = &s.source_cidr {
                    add(&format!("{at}.sourceCIDR"), &c.unsupported);
                }
            }
        }
    }
}

/// Validate and compile `rateLimit`; `policy_id` keys its counters, `redis`: whether global
/// rate limits have a Redis to count in.
pub(super) fn compile(
    rl: &api::RateLimit,
    policy_id: u64,
    redis: bool,
) -> Result<RateLimit, NotAccepted> {
    match rl.type_.as_deref() {
        None => {}
        Some("Local") if rl.local.is_none() => {
            return Err(invalid("spec.rateLimit.local: required with type Local"))
        }
        Some("Global") if rl.global.is_none() => {
            return Err(invalid("spec.rateLimit.global: required with type Global"))
        }
        Some("Local" | "Global") => {}
        Some(other) => {
            return Err(invalid(format!(
                "spec.rateLimit.type {other:?}: must be Local or Global"
            )))
        }
    }
    if rl.local.is_none() && rl.global.is_none() {
        return Err(invalid("spec.rateLimit: set local, global or both"));
    }
    if rl.global.is_some() && !redis {
        return Err(invalid(
            "spec.rateLimit.global: global rate limits are counted in Redis, and this Weir has \
             none: start it with --rate-limit-redis redis://HOST:PORT (the chart's value \
             rateLimit.redis.url), or use rateLimit.local",
        ));
    }
    let local = match &rl.local {
        None => Arc::from(Vec::new()),
        Some(b) => rules("spec.rateLimit.local", b, MAX_LOCAL_RULES, policy_id)?.into(),
    };
    let global = match &rl.global {
        None => Arc::from(Vec::new()),
        Some(b) => rules("spec.rateLimit.global", b, MAX_GLOBAL_RULES, policy_id)?.into(),
    };
    Ok(RateLimit {
        scope: policy_id,
        local,
        global,
    })
}

/// `rateLimit` for one route rule: its counters keyed by the policy and that rule (each
/// route rule counts apart, as Envoy Gateway's routes do, unless a rule is `shared`).
pub(crate) fn scoped(rl: &RateLimit, route: &weir_snapshot::RouteRef) -> RateLimit {
    let mut h = DefaultHasher::new();
    (rl.scope, &*route.route, route.rule).hash(&mut h);
    RateLimit {
        scope: h.finish(),
        ..rl.clone()
    }
}

fn rules(
    at: &str,
    block: &api::RateLimitRules,
    max: usize,
    policy_id: u64,
) -> Result<Vec<RateLimitRule>, NotAccepted> {
    if block.rules.is_empty() {
        return Err(invalid(format!("{at}.rules: at least one rule")));
    }
    if block.rules.len() > max {
        return Err(invalid(format!("{at}.rules: at most {max} rules")));
    }
    block
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(&format!("{at}.rules[{i}]"), r, policy_id))
        .collect()
}

fn rule(at: &str, r: &api::RateLimitRule, policy_id: u64) -> Result<RateLimitRule, NotAccepted> {
    let Some(limit) = &r.limit else {
        return Err(invalid(format!("{at}.limit: required")));
    };
    let requests = limit
        .requests
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            invalid(format!(
                "{at}.limit.requests: required, 1 to 4294967295 (got {})",
                limit
                    .requests
                    .map_or_else(|| "none".to_string(), |n| n.to_string())
            ))
        })?;
    let unit_name = limit.unit.as_deref().unwrap_or_default();
    let unit = weir_snapshot::rate_limit::unit(unit_name).ok_or_else(|| {
        invalid(format!(
            "{at}.limit.unit {unit_name:?}: must be Second, Minute, Hour, Day, Month or Year"
        ))
    })?;
    if r.client_selectors.len() > MAX_SELECTORS {
        return Err(invalid(format!(
            "{at}.clientSelectors: at most {MAX_SELECTORS}"
        )));
    }
    let selectors = r
        .client_selectors
        .iter()
        .enumerate()
        .map(|(j, s)| selector(&format!("{at}.clientSelectors[{j}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    let shared = r.shared.unwrap_or(false);
    let mut h = DefaultHasher::new();
    (policy_id, at, shared).hash(&mut h);
    Ok(RateLimitRule {
        selectors,
        limit: Limit { requests, unit },
        shared,
        id: h.finish(),
    })
}

fn selector(at: &str, s: &api::RateLimitSelectCondition) -> Result<ClientSelector, NotAccepted> {
    if s.headers.is_empty() && s.methods.is_empty() && s.path.is_none() && s.source_cidr.is_none() {
        return Err(invalid(format!(
            "{at}: set at least one of headers, methods, path or sourceCIDR"
        )));
    }
    if s.headers.len() > MAX_HEADERS {
        return Err(invalid(format!("{at}.headers: at most {MAX_HEADERS}")));
    }
    let mut headers = Vec::with_capacity(s.headers.len());
    for (k, h) in s.headers.iter().enumerate() {
        let at = format!("{at}.headers[{k}]");
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("{at}.name {:?}: not a header name", h.name)))?;
        let invert = h.invert.unwrap_or(false);
        let value = || {
            h.value
                .as_deref()
                .ok_or_else(|| invalid(format!("{at}.value: required with this type")))
        };
        headers.push(match h.type_.as_deref().unwrap_or("Exact") {
            "Exact" => HeaderSelector::Match {
                header: HeaderMatch {
                    name,
                    value: StringMatch::Exact(value()?.into()),
                },
                invert,
            },
            "RegularExpression" => HeaderSelector::Match {
                header: HeaderMatch {
                    name,
                    value: StringMatch::Regex(regex(&format!("{at}.value"), value()?)?),
                },
                invert,
            },
            "Distinct" => {
                if h.value.is_some() || invert {
                    return Err(invalid(format!(
                        "{at}: a Distinct match takes no value and no invert"
                    )));
                }
                HeaderSelector::Distinct(name)
            }
            other => {
                return Err(invalid(format!(
                    "{at}.type {other:?}: must be Exact, RegularExpression or Distinct"
                )))
            }
        });
    }
    let mut methods = Vec::with_capacity(s.methods.len());
    for (k, m) in s.methods.iter().enumerate() {
        let method = Method::from_bytes(m.value.as_bytes())
            .ok()
            .filter(|_| !m.value.is_empty())
            .ok_or_else(|| {
                invalid(format!(
                    "{at}.methods[{k}].value {:?}: not an HTTP method",
                    m.value
                ))
            })?;
        methods.push((method, m.invert.unwrap_or(false)));
    }
    let path = match &s.path {
        None => None,
        Some(p) => {
            let value = p.value.as_deref().unwrap_or("/");
            let m = match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" | "PathPrefix" if !value.starts_with('/') => {
                    return Err(invalid(format!(
                        "{at}.path.value {value:?}: must start with /"
                    )))
                }
                "Exact" => PathMatch::Exact(value.into()),
                "PathPrefix" => PathMatch::prefix(value),
                "RegularExpression" => PathMatch::Regex(regex(&format!("{at}.path.value"), value)?),
                other => {
                    return Err(invalid(format!(
                        "{at}.path.type {other:?}: must be Exact, PathPrefix or \
                         RegularExpression"
                    )))
                }
            };
            Some((m, p.invert.unwrap_or(false)))
        }
    };
    let source = match &s.source_cidr {
        None => None,
        Some(c) => {
            let cidr = Cidr::parse(&c.value).ok_or_else(|| {
                invalid(format!(
                    "{at}.sourceCIDR.value {:?}: not an address block like 10.0.0.0/8 or \
                     2001:db8::/32",
                    c.value
                ))
            })?;
            let distinct = match c.type_.as_deref().unwrap_or("Exact") {
                "Exact" => false,
                "Distinct" => true,
                other => {
                    return Err(invalid(format!(
                        "{at}.sourceCIDR.type {other:?}: must be Exact or Distinct"
                    )))
                }
            };
            Some(SourceSelector { cidr, distinct })
        }
    };
    Ok(ClientSelector {
        headers,
        methods,
        path,
        source,
    })
}

fn regex(field: &str, re: &str) -> Result<regex::Regex, NotAccepted> {
    crate::pattern::Budget::default()
        .anchored(re)
        .map_err(|e| invalid(format!("{field}: {e}")))
}
