//! SecurityPolicy at request time (phase 2, synchronous), in this fixed order:
//!
//! 1. a policy that could not be applied refuses everything (500: fail closed);
//! 2. **CORS preflight**: answered here, without credentials (the policy's `cors`; a
//!    preflight on a route whose rule has the HTTPRoute CORS filter goes on to that filter,
//!    unauthenticated too);
//! 3. **authentication**: JWT ([`jwt`]), then basic auth ([`basic`]), then API keys
//!    ([`api_key`]); each one the policy has must pass (401 with `WWW-Authenticate`);
//! 4. **authorization** ([`authz`]): the first matching rule (principal, method, and the
//!    path as phase 1 normalised it), else the default action (403 on deny).
//!
//! Phase 3 (external auth) and the rate limits come after this: a request refused here is
//! never counted by a rate limit. Runtime state (the basic-auth verification cache, remote
//! key sets, the verified-token caches) lives in [`SecurityState`] beside the snapshot, keyed by the policy's id.

use std::net::IpAddr;

use http::request::Parts;
use weir_snapshot::{Filter, Security};

use crate::body::ProxyBody;
use crate::conn::ConnCtx;
use crate::error::ProxyError;

pub(crate) mod api_key;
pub(crate) mod authz;
pub(crate) mod basic;
pub(crate) mod jwt;
pub(crate) mod remote;

pub use remote::parse_pem_certs;
pub(crate) use remote::SecurityState;

/// What authentication established, for authorization.
#[derive(Default)]
pub(crate) struct Verified {
    /// The JWT provider whose token verified, and the token's claims.
    pub(crate) jwt: Option<(usize, std::sync::Arc<serde_json::Value>)>,
}

/// Phase 2's security step: `Ok(Some(answer))` for a preflight answered here, `Ok(None)` to
/// go on, `Err` for a denial.
pub(crate) fn run(
    conn: &ConnCtx,
    security: &Security,
    filters: &[Filter],
    parts: &mut Parts,
) -> Result<Option<http::Response<ProxyBody>>, ProxyError> {
    if let Some(why) = &security.deny {
        return Err(ProxyError::SecurityPolicyInvalid(why.clone()));
    }
    if crate::filter::cors::is_preflight(parts) {
        if let Some(cors) = &security.cors {
            return Ok(crate::filter::cors::preflight(cors, parts));
        }
        if crate::filter::cors::any(filters) {
            // The rule's CORS filter answers it, next.
            return Ok(None);
        }
    }
    let mut verified = Verified::default();
    if let Some(j) = &security.jwt {
        verified.jwt = jwt::check(
            &conn.shared.security,
            &conn.shared.metrics,
            security.id,
            j,
            parts,
        )?;
    }
    if let Some(b) = &security.basic {
        basic::check(&conn.shared.security, security.id, b, parts)?;
    }
    if let Some(a) = &security.api_key {
        api_key::check(a, parts)?;
    }
    if let Some(a) = &security.authorization {
        authz::check(
            a,
            security.jwt.as_ref(),
            &verified,
            client_ip(conn, parts),
            parts,
        )?;
    }
    Ok(None)
}

/// A refusal of authentication, authorization or external auth (401, 403) on a route with
/// CORS (the policy's `cors` or the rule's CORS filter), for a request with an `Origin`
/// (`origin`, kept only on such routes): answered here, as the error table says (status,
/// body, `WWW-Authenticate`, metric reason, access-log flag), so that it goes through
/// phase 6 like any local answer and gets the CORS response headers: a browser can then
/// read why it was refused. Any other error, or no Origin: the error as it is (routes
/// without CORS pay nothing).
pub(crate) fn refusal(
    conn: &ConnCtx,
    origin: Option<&http::HeaderValue>,
    host: &str,
    err: ProxyError,
) -> Result<http::Response<ProxyBody>, ProxyError> {
    let is_refusal = matches!(
        err,
        ProxyError::Unauthenticated { .. }
            | ProxyError::Forbidden(_)
            | ProxyError::ExtAuthFailed(_)
    );
    if origin.is_none() || !is_refusal {
        return Err(err);
    }
    conn.shared.metrics.record_error(err.classify().label);
    let mut answer = crate::rate_limit::refusal(&err, None);
    if let Some(challenge) = err.challenge(host) {
        answer
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, challenge);
    }
    Ok(answer)
}

/// The client's address: ClientTrafficPolicy's detection (`ClientAddr`), else the peer.
fn client_ip(conn: &ConnCtx, parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<crate::client_policy::ClientAddr>()
        .map_or(conn.peer, |c| c.0)
        .ip()
}

/// The value of cookie `name` in the request's Cookie headers.
pub(crate) fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Remove cookie `name` from the request (the Cookie headers rebuilt without it).
pub(crate) fn remove_cookie(headers: &mut http::HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').is_none_or(|(k, _)| k != name))
        .map(str::to_string)
        .collect();
    headers.remove(http::header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = http::HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(http::header::COOKIE, v);
        }
    }
}

/// The (first) value of query parameter `name`, percent-decoded.
pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == name).then(|| decode(v))
        })
        .next()
}

/// Remove query parameter `name` from the request target.
pub(crate) fn remove_query_param(parts: &mut Parts, name: &str) {
    let Some(query) = parts.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) != name)
        .collect();
    let path = parts.uri.path();
    let target = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut builder = http::Uri::builder();
    if let Some(s) = parts.uri.scheme() {
        builder = builder.scheme(s.clone());
    }
    if let Some(a) = parts.uri.authority() {
        builder = builder.authority(a.clone());
    }
    if let Ok(uri) = builder.path_and_query(target).build() {
        parts.uri = uri;
    }
}

/// Percent-decoding (and `+` as space) of a query component; invalid escapes kept as is.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_params_are_read_and_removed() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; key=s3cret; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, "key"), Some("s3cret"));
        assert_eq!(cookie(&h, "ke"), None);
        remove_cookie(&mut h, "key");
        assert_eq!(h[http::header::COOKIE], "a=1; b=2");
        let (mut parts, ()) = http::Request::get("/p?x=1&api%5Fkey=a%2Bb&y=2")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(query_param(&parts.uri, "api_key").as_deref(), Some("a+b"));
        remove_query_param(&mut parts, "api_key");
        assert_eq!(parts.uri, "/p?x=1&y=2");
        remove_query_param(&mut parts, "x");
        remove_query_param(&mut parts, "y");
        assert_eq!(parts.uri, "/p");
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
