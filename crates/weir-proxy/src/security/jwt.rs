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
//!
//! **Verified-token cache** ([`TokenCache`], one per policy id and provider, like Envoy's
//! `jwt_cache_config`): a signature check costs 0.4–3 M instructions (RSA, ECDSA), 65× a
//! whole proxied request, so a token that verified is remembered and the next request
//! carrying the very same token reuses its claims without checking the signature again.
//! - Key: the **exact token bytes**, compared in full (a keyed SipHash only picks the
//!   bucket): a token differing in any byte — another signature over the same header and
//!   claims — is a different entry and is verified. The full bytes rather than a SHA-256
//!   of them, because hashing a 600-byte RS256 token with SHA-256 on every request costs
//!   more than the whole budget (20 % of a request) and an exact comparison is stronger.
//! - Valid only under the **key set** it was verified with: the cache holds that set (the
//!   local JWKS or the remote set's current fetch) and is emptied when the provider's set is
//!   another one (a remote JWKS rotation, a changed ConfigMap/Secret), so a token verified
//!   under old keys is never accepted after a rotation. Issuer and audiences are in the
//!   policy's spec, hence in its id: a changed policy gets a new, empty cache.
//! - An entry is used only while the token would still verify: `exp` not passed and `nbf`
//!   reached, with the same clock skew ([`JWT_CLOCK_SKEW`]) as verification; a token without
//!   a numeric `exp` is never cached. Failed verifications are never cached.
//! - Bounded: at most [`CACHE_MAX_ENTRIES`] tokens and [`CACHE_MAX_BYTES`] token bytes per
//!   provider, tokens longer than [`CACHE_MAX_TOKEN`] never cached; when full, the oldest
//!   insertion goes first (FIFO), expired entries on the way out. Only tokens that verified
//!   are inserted, so each new entry costs its sender one full verification.
//! - `weir_jwt_verifications_total{result}`: `cached` (accepted from the cache), `verified`
//!   and `failed` (a full verification ran).
//!
//! The cache's lock is a plain mutex held for a map lookup or insertion, never across an
//! await (this module is synchronous).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use http::request::Parts;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use weir_snapshot::security::JWT_CLOCK_SKEW;
use weir_snapshot::{JwtAuth, JwtKey, JwtKeys, JwtProvider};

use super::remote::RemoteSource;
use super::SecurityState;
use crate::error::{AuthScheme, ProxyError};
use crate::metrics::Metrics;

/// Most verified tokens cached per provider of a policy.
pub(crate) const CACHE_MAX_ENTRIES: usize = 4096;
/// Most token bytes cached per provider of a policy (4 MiB: 4,096 tokens of 1 KiB).
pub(crate) const CACHE_MAX_BYTES: usize = 4 << 20;
/// Tokens longer than this are verified every time, never cached.
pub(crate) const CACHE_MAX_TOKEN: usize = 16 << 10;

/// The key set a token was verified with (held, so its address identifies it).
#[derive(Clone)]
pub(crate) enum KeySet {
    Local(Arc<[JwtKey]>),
    Remote(Arc<Vec<JwtKey>>),
}

impl KeySet {
    fn keys(&self) -> &[JwtKey] {
        match self {
            KeySet::Local(k) => k,
            KeySet::Remote(k) => k,
        }
    }

    fn same(&self, other: &KeySet) -> bool {
        match (self, other) {
            (KeySet::Local(a), KeySet::Local(b)) => Arc::ptr_eq(a, b),
            (KeySet::Remote(a), KeySet::Remote(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

struct Entry {
    claims: Arc<Value>,
    exp: u64,
    nbf: Option<u64>,
    /// Insertion number: matches the FIFO's record of this insertion.
    seq: u64,
}

impl Entry {
    /// Whether the token would still pass `exp`/`nbf` at `now` (seconds since the epoch),
    /// with the skew verification allows.
    fn live(&self, now: u64) -> bool {
        let skew = JWT_CLOCK_SKEW.as_secs();
        self.exp.saturating_add(skew) >= now
            && self.nbf.is_none_or(|nbf| nbf <= now.saturating_add(skew))
    }
}

#[derive(Default)]
struct CacheInner {
    /// The key set every entry was verified with.
    keys: Option<KeySet>,
    map: HashMap<Arc<str>, Entry>,
    /// Insertion order (token, seq); stale records (removed entries) are skipped.
    fifo: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
    seq: u64,
}

impl CacheInner {
    fn clear(&mut self) {
        self.map.clear();
        self.fifo.clear();
        self.bytes = 0;
    }

    fn remove(&mut self, token: &str) {
        if let Some((k, _)) = self.map.remove_entry(token) {
            self.bytes -= k.len();
        }
    }

    /// Drop the oldest insertion still cached.
    fn evict_one(&mut self) {
        while let Some((token, seq)) = self.fifo.pop_front() {
            if self.map.get(&*token).is_some_and(|e| e.seq == seq) {
                self.remove(&token);
                return;
            }
        }
    }
}

/// Verified tokens of one provider of one policy (see the module documentation).
pub(crate) struct TokenCache {
    inner: Mutex<CacheInner>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_limits(CACHE_MAX_ENTRIES, CACHE_MAX_BYTES)
    }
}

impl TokenCache {
    pub(crate) fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        TokenCache {
            inner: Mutex::new(CacheInner::default()),
            max_entries,
            max_bytes,
        }
    }

    /// The claims of `token` if it verified under `keys` and is still within `exp`/`nbf`.
    pub(crate) fn get(&self, token: &str, keys: &KeySet, now: u64) -> Option<Arc<Value>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.keys.as_ref().is_some_and(|k| k.same(keys)) {
            return None;
        }
        let entry = inner.map.get(token)?;
        if entry.live(now) {
            return Some(entry.claims.clone());
        }
        inner.remove(token);
        None
    }

    /// Remember that `token` verified under `keys` with `claims` (not cached without a
    /// numeric `exp`, or when longer than [`CACHE_MAX_TOKEN`]).
    pub(crate) fn insert(&self, token: &str, keys: &KeySet, claims: &Arc<Value>) {
        let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
            return;
        };
        let nbf = match claims.get("nbf") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(n),
                None => return,
            },
        };
        if token.len() > CACHE_MAX_TOKEN || token.len() > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.keys.as_ref().is_some_and(|k| k.same(keys)) {
            // Another key set: nothing verified under the previous one is valid any more.
            inner.clear();
            inner.keys = Some(keys.clone());
        }
        inner.remove(token);
        while inner.map.len() >= self.max_entries || inner.bytes + token.len() > self.max_bytes {
            inner.evict_one();
        }
        if inner.fifo.len() >= 2 * self.max_entries {
            // Records of entries removed since (expired): compact so the queue stays bounded.
            let CacheInner { map, fifo, .. } = &mut *inner;
            fifo.retain(|(t, seq)| map.get(&**t).is_some_and(|e| e.seq == *seq));
        }
        inner.seq += 1;
        let seq = inner.seq;
        let key: Arc<str> = Arc::from(token);
        inner.bytes += key.len();
        inner.fifo.push_back((key.clone(), seq));
        inner.map.insert(
            key,
            Entry {
                claims: claims.clone(),
                exp,
                nbf,
                seq,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    #[cfg(test)]
    fn fifo_len(&self) -> usize {
        self.inner.lock().map(|i| i.fifo.len()).unwrap_or(0)
    }
}

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
    metrics: &Metrics,
    policy: u64,
    j: &JwtAuth,
    parts: &mut Parts,
) -> Result<Option<(usize, Arc<Value>)>, ProxyError> {
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
        match verify(state, metrics, policy, i, p, &token) {
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
    metrics: &Metrics,
    policy: u64,
    index: usize,
    p: &JwtProvider,
    token: &str,
) -> Result<Arc<Value>, &'static str> {
    let set = match &p.keys {
        JwtKeys::Local(k) => KeySet::Local(k.0.clone()),
        JwtKeys::Remote {
            uri,
            cache_duration,
            backend,
        } => {
            let source = RemoteSource {
                uri,
                every: *cache_duration,
                backend: backend.as_ref(),
            };
            match state.remote(policy, index, source).current() {
                Some(k) => KeySet::Remote(k),
                None => return Err("key set not fetched yet"),
            }
        }
    };
    let cache = state.jwt_cache(policy, index);
    if let Some(claims) = cache.get(token, &set, jsonwebtoken::get_current_timestamp()) {
        metrics.jwt_cached.inc();
        return Ok(claims);
    }
    match verify_signature(state, policy, index, p, set.keys(), token) {
        Ok(claims) => {
            metrics.jwt_verified.inc();
            let claims = Arc::new(claims);
            cache.insert(token, &set, &claims);
            Ok(claims)
        }
        Err(e) => {
            metrics.jwt_failed.inc();
            Err(e)
        }
    }
}

/// The full verification: header, key, signature, `exp`/`nbf`, `iss`, `aud`.
fn verify_signature(
    state: &SecurityState,
    policy: u64,
    index: usize,
    p: &JwtProvider,
    keys: &[JwtKey],
    token: &str,
) -> Result<Value, &'static str> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
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
        if let Some(source) = RemoteSource::of(&p.keys) {
            // Keys may have rotated: fetch again (rate-limited), without waiting for it.
            state.remote(policy, index, source).kick();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> KeySet {
        KeySet::Remote(Arc::new(Vec::new()))
    }

    fn claims(exp: u64) -> Arc<Value> {
        Arc::new(serde_json::json!({"sub": "u", "exp": exp}))
    }

    #[test]
    fn the_bound_holds_under_many_distinct_tokens() {
        let cache = TokenCache::with_limits(64, 64 * 40);
        let keys = set();
        let now = 1_000_000;
        for i in 0..10_000 {
            cache.insert(&format!("token-{i:030}"), &keys, &claims(now + 300));
            assert!(cache.len() <= 64);
            assert!(cache.bytes() <= 64 * 40);
            assert!(cache.fifo_len() <= 2 * 64);
        }
        assert_eq!(cache.len(), 64);
        // FIFO: the newest are kept, the oldest went.
        assert!(cache
            .get(&format!("token-{:030}", 9_999), &keys, now)
            .is_some());
        assert!(cache.get(&format!("token-{:030}", 0), &keys, now).is_none());
        // The byte bound: tokens of 1,000 bytes, at most 2 of them fit in 2,560 bytes.
        let small = TokenCache::with_limits(64, 2560);
        for i in 0..100 {
            let t = format!("{i:01000}");
            small.insert(&t, &keys, &claims(now + 300));
            assert!(small.bytes() <= 2560 && small.len() <= 2);
        }
        // Expired entries removed at lookup leave records the queue compacts.
        let churn = TokenCache::with_limits(8, 1 << 20);
        for i in 0..1000 {
            let t = format!("t{i}");
            churn.insert(&t, &keys, &claims(10));
            assert!(churn.get(&t, &keys, 10_000).is_none());
            assert!(churn.fifo_len() <= 16, "{}", churn.fifo_len());
        }
    }

    #[test]
    fn entries_follow_exp_nbf_and_the_key_set() {
        let cache = TokenCache::default();
        let (a, b) = (set(), set());
        let skew = JWT_CLOCK_SKEW.as_secs();
        cache.insert("t", &a, &claims(1000));
        assert!(cache.get("t", &a, 1000 + skew).is_some());
        assert!(cache.get("t", &a, 1000 + skew + 1).is_none());
        // Removed once expired.
        assert_eq!(cache.len(), 0);
        let nbf = Arc::new(serde_json::json!({"exp": 5000, "nbf": 2000}));
        cache.insert("n", &a, &nbf);
        assert!(cache.get("n", &a, 2000 - skew).is_some());
        // Before nbf - skew (a clock set back): not used, and dropped.
        assert!(cache.get("n", &a, 2000 - skew - 1).is_none());
        assert_eq!(cache.len(), 0);
        cache.insert("n", &a, &nbf);
        // Another key set (same contents, another fetch): not valid there, and inserting
        // under it empties the cache.
        assert!(cache.get("n", &b, 3000).is_none());
        cache.insert("m", &b, &claims(5000));
        assert!(cache.get("n", &a, 3000).is_none());
        assert!(cache.get("n", &b, 3000).is_none());
        assert_eq!(cache.len(), 1);
        // No numeric exp, or a malformed nbf: never cached.
        cache.insert("x", &b, &Arc::new(serde_json::json!({"sub": "u"})));
        cache.insert("y", &b, &Arc::new(serde_json::json!({"exp": "soon"})));
        cache.insert(
            "z",
            &b,
            &Arc::new(serde_json::json!({"exp": 5000, "nbf": 1.5})),
        );
        assert_eq!(cache.len(), 1);
        // Too long: never cached.
        cache.insert(&"a".repeat(CACHE_MAX_TOKEN + 1), &b, &claims(5000));
        assert_eq!(cache.len(), 1);
    }
}
