//! `jwt`: a token is read from each provider's sources (default `Authorization: Bearer`),
//! and the request passes when one provider verifies its token (Envoy Gateway's
//! "requires any"): signature with a key of the provider's set (its `kid`, and an algorithm
//! the key allows; `none` is never one, HMAC only from a local key set), `exp` and `nbf`
//! within [`weir_snapshot::security::JWT_CLOCK_SKEW`], `iss` and `aud` when configured.
//! Failure: 401 with `WWW-Authenticate: Bearer ... error="invalid_token"`. `optional`: a
//! request without any token passes (one with a bad token does not).
//!
//! The verified token is not forwarded (removed from where it was found, as Envoy does
//! without `forward`); `claimToHeaders` set headers from its claims, and a client's own
//! values of those headers are always removed first, so they cannot be forged.

use http::request::Parts;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use weir_snapshot::security::JWT_CLOCK_SKEW;
use weir_snapshot::{JwtAuth, JwtKey, JwtKeys, JwtProvider};

use super::SecurityState;
use crate::error::{AuthScheme, ProxyError};

fn unauthenticated(why: &'static str) -> ProxyError {
    ProxyError::Unauthenticated {
        scheme: AuthScheme::Bearer,
        why,
    }
}

/// Verify the request's token: the provider (index) that verified it and its claims;
/// `None` when the policy is optional and the request has no token.
pub(crate) fn check(
    state: &SecurityState,
    policy: u64,
    j: &JwtAuth,
    parts: &mut Parts,
) -> Result<Option<(usize, Value)>, ProxyError> {
    for p in &j.providers {
        for (name, _) in &p.claim_to_headers {
            parts.headers.remove(name);
        }
    }
    let mut why = None;
    for (i, p) in j.providers.iter().enumerate() {
        let Some((token, source)) = super::api_key::extract(&p.sources, parts) else {
            continue;
        };
        match verify(state, policy, i, p, &token) {
            Ok(claims) => {
                super::api_key::strip(source, parts);
                for (name, path) in &p.claim_to_headers {
                    let value = match super::authz::claim(&claims, path) {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Null) | None => None,
                        Some(other) => Some(other.to_string()),
                    };
                    if let Some(v) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                        parts.headers.insert(name.clone(), v);
                    }
                }
                return Ok(Some((i, claims)));
            }
            Err(e) => why = why.or(Some(e)),
        }
    }
    match why {
        None if j.optional => Ok(None),
        None => Err(unauthenticated("no token")),
        Some(why) => Err(unauthenticated(why)),
    }
}

fn verify(
    state: &SecurityState,
    policy: u64,
    index: usize,
    p: &JwtProvider,
    token: &str,
) -> Result<Value, &'static str> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
    let remote;
    let keys: &[JwtKey] = match &p.keys {
        JwtKeys::Local(k) => &k.0,
        JwtKeys::Remote {
            uri,
            cache_duration,
        } => {
            let jwks = state.remote(policy, index, uri, *cache_duration);
            remote = jwks.current();
            match &remote {
                Some(k) => k,
                None => return Err("key set not fetched yet"),
            }
        }
    };
    let kid = header.kid.as_deref();
    let mut known_kid = kid.is_none();
    let mut last = "signature does not verify";
    for k in keys {
        if kid.is_some() && k.kid.is_some() && k.kid.as_deref() != kid {
            continue;
        }
        known_kid = true;
        if !k.algorithms.contains(&header.alg) {
            last = "algorithm not allowed for the key";
            continue;
        }
        match jsonwebtoken::decode::<Value>(token, &k.key, &validation(p, header.alg)) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                last = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not valid yet",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                    _ => "signature does not verify",
                };
            }
        }
    }
    if !known_kid {
        if let JwtKeys::Remote {
            uri,
            cache_duration,
        } = &p.keys
        {
            // Keys may have rotated: fetch again (rate-limited), without waiting for it.
            state.remote(policy, index, uri, *cache_duration).kick();
        }
        return Err("unknown key id");
    }
    Err(last)
}

fn validation(p: &JwtProvider, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = JWT_CLOCK_SKEW.as_secs();
    v.validate_nbf = true;
    let mut required: Vec<&str> = Vec::new();
    match &p.issuer {
        Some(iss) => {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    if p.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&p.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}
