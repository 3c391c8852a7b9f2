//! `authorization`: the rules in order, the first whose principal and operation match
//! decides; none: the default action. A rule matches when each part it names matches: the
//! client address in one of its CIDRs (the address ClientTrafficPolicy detected, else the
//! peer's), the token verified by its JWT provider carrying every claim (one of the values)
//! and every scope, each header with one of its values, the method one of its methods, the
//! path (normalised, as the route matched it) one of its paths.

use std::net::IpAddr;

use http::request::Parts;
use serde_json::Value;
use weir_snapshot::{Authorization, AuthorizationRule, ClaimMatch, JwtAuth};

use super::Verified;
use crate::error::ProxyError;

pub(crate) fn check(
    a: &Authorization,
    jwt: Option<&JwtAuth>,
    verified: &Verified,
    client: IpAddr,
    parts: &Parts,
) -> Result<(), ProxyError> {
    for rule in &a.rules {
        if matches(rule, jwt, verified, client, parts) {
            return if rule.allow {
                Ok(())
            } else {
                Err(ProxyError::Forbidden(rule.name.clone()))
            };
        }
    }
    if a.default_allow {
        Ok(())
    } else {
        Err(ProxyError::Forbidden("defaultAction".into()))
    }
}

fn matches(
    rule: &AuthorizationRule,
    jwt: Option<&JwtAuth>,
    verified: &Verified,
    client: IpAddr,
    parts: &Parts,
) -> bool {
    if !rule.methods.is_empty() && !rule.methods.contains(&parts.method) {
        return false;
    }
    // Phase 1 normalised the path before routing: the path the route matched.
    if !rule.paths.is_empty() && !rule.paths.iter().any(|p| p.matches(parts.uri.path())) {
        return false;
    }
    if !rule.client_cidrs.is_empty() && !rule.client_cidrs.iter().any(|c| c.contains(client)) {
        return false;
    }
    for (name, values) in &rule.headers {
        let ok = parts
            .headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| values.iter().any(|w| w == v)));
        if !ok {
            return false;
        }
    }
    if let Some(p) = &rule.jwt {
        let claims = verified.jwt.as_ref().and_then(|(i, claims)| {
            let provider = jwt?.providers.get(*i)?;
            (*provider.name == *p.provider).then_some(claims)
        });
        let Some(claims) = claims else {
            return false;
        };
        if !p.claims.iter().all(|c| claim_matches(c, claims)) {
            return false;
        }
        if !p.scopes.is_empty() {
            let granted = scopes(claims);
            if !p.scopes.iter().all(|s| granted.contains(&s.as_str())) {
                return false;
            }
        }
    }
    true
}

/// A claim by path (`user.roles`).
pub(crate) fn claim<'v>(claims: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(claims, |v, k| v.get(k))
}

fn claim_matches(c: &ClaimMatch, claims: &Value) -> bool {
    match claim(claims, &c.path) {
        Some(Value::Array(items)) if c.array => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| c.values.iter().any(|v| v == s))),
        Some(Value::String(s)) if !c.array => c.values.iter().any(|v| v == s),
        Some(Value::Number(n)) if !c.array => c.values.iter().any(|v| *v == n.to_string()),
        Some(Value::Bool(b)) if !c.array => c.values.iter().any(|v| *v == b.to_string()),
        _ => false,
    }
}

/// The token's scopes: `scope` (space-separated, RFC 8693) or `scp` (an array).
fn scopes(claims: &Value) -> Vec<&str> {
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        (_, Some(Value::Array(a))) => a.iter().filter_map(Value::as_str).collect(),
        (_, Some(Value::String(s))) => s.split(' ').collect(),
        _ => Vec::new(),
    }
}
