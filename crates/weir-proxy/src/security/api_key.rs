//! `apiKeyAuth`: the key is read from the first configured source the request has (header,
//! query parameter or cookie), compared in constant time against every key (no early exit,
//! so the time does not say how many keys or which one came close), and, with `sanitize`,
//! removed before the request is forwarded. `forwardClientIDHeader` carries the client ID.

use http::request::Parts;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use weir_snapshot::{ApiKeyAuth, KeySource};

use crate::error::{AuthScheme, ProxyError};

fn unauthenticated(why: &'static str) -> ProxyError {
    ProxyError::Unauthenticated {
        scheme: AuthScheme::ApiKey,
        why,
    }
}

/// The credential of the first source the request has, and that source.
pub(crate) fn extract<'s>(
    sources: &'s [KeySource],
    parts: &Parts,
) -> Option<(String, &'s KeySource)> {
    sources.iter().find_map(|s| {
        let v = match s {
            KeySource::Header { name, prefix } => {
                let v = parts.headers.get(name)?.to_str().ok()?;
                v.strip_prefix(prefix.as_str())?.to_string()
            }
            KeySource::Param(p) => super::query_param(&parts.uri, p)?,
            KeySource::Cookie(c) => super::cookie(&parts.headers, c)?.to_string(),
        };
        Some((v, s))
    })
}

/// Remove a credential from where it was found.
pub(crate) fn strip(source: &KeySource, parts: &mut Parts) {
    match source {
        KeySource::Header { name, .. } => {
            parts.headers.remove(name);
        }
        KeySource::Param(p) => super::remove_query_param(parts, p),
        KeySource::Cookie(c) => super::remove_cookie(&mut parts.headers, c),
    }
}

pub(crate) fn check(a: &ApiKeyAuth, parts: &mut Parts) -> Result<(), ProxyError> {
    let (key, source) = extract(&a.sources, parts).ok_or_else(|| unauthenticated("no API key"))?;
    let mut found = subtle::Choice::from(0);
    let mut client = 0usize;
    for (i, (k, _)) in a.keys.0.iter().enumerate() {
        let hit = k.as_slice().ct_eq(key.as_bytes());
        found |= hit;
        let mut c = client as u64;
        c.conditional_assign(&(i as u64), hit);
        client = c as usize;
    }
    if !bool::from(found) {
        return Err(unauthenticated("unknown API key"));
    }
    let client = a.keys.0.get(client).map(|(_, c)| c.clone());
    if a.sanitize {
        strip(source, parts);
    }
    if let (Some(name), Some(client)) = (&a.forward_client_id_header, client) {
        if let Ok(v) = http::HeaderValue::from_str(&client) {
            parts.headers.insert(name.clone(), v);
        }
    }
    Ok(())
}
