//! `basicAuth`: `Authorization: Basic` checked against the htpasswd users. Hashes as
//! htpasswd writes them: bcrypt (`-B`: `$2y$`, `$2b$`, `$2a$`, the `bcrypt` crate), SHA-1
//! (`-s`: `{SHA}` + base64, the `sha1` crate) and apr1 (`-m`: Apache's MD5-crypt over the
//! `md-5` crate); digests compared in constant time (`subtle`).
//!
//! bcrypt is slow by design (milliseconds at cost 10): a successful verification is cached
//! for [`CACHE_TTL`] in a bounded map from a SHA-256 of `user:password` (never the password
//! itself), per policy id, so a client sending the same credentials does not pay bcrypt on
//! every request. Failures are never cached. The Authorization header is removed before the
//! request is forwarded; `forwardUsernameHeader` carries the user name instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::request::Parts;
use subtle::ConstantTimeEq;
use weir_snapshot::BasicAuth;

use super::SecurityState;
use crate::error::{AuthScheme, ProxyError};

/// How long a successful verification is reused.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most cached verifications per policy (the oldest half goes when full).
const CACHE_MAX: usize = 4096;

/// Successful verifications of one policy: SHA-256(user:password) → when verified.
#[derive(Default)]
pub(crate) struct VerifyCache {
    ok: Mutex<HashMap<[u8; 32], Instant>>,
}

impl VerifyCache {
    fn hit(&self, key: &[u8; 32], now: Instant) -> bool {
        let ok = self
            .ok
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ok.get(key)
            .is_some_and(|at| now.duration_since(*at) < CACHE_TTL)
    }

    fn insert(&self, key: [u8; 32], now: Instant) {
        let mut ok = self
            .ok
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok.len() >= CACHE_MAX {
            ok.retain(|_, at| now.duration_since(*at) < CACHE_TTL);
            if ok.len() >= CACHE_MAX {
                ok.clear();
            }
        }
        ok.insert(key, now);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ok.lock().map(|m| m.len()).unwrap_or(0)
    }
}

fn unauthenticated(why: &'static str) -> ProxyError {
    ProxyError::Unauthenticated {
        scheme: AuthScheme::Basic,
        why,
    }
}

pub(crate) fn check(
    state: &SecurityState,
    policy: u64,
    basic: &BasicAuth,
    parts: &mut Parts,
) -> Result<(), ProxyError> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("no credentials"))?;
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        })
        .ok_or_else(|| unauthenticated("not Basic credentials"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| unauthenticated("malformed Basic credentials"))?;
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| unauthenticated("malformed Basic credentials"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
    let Some(hash) = basic.users.0.get(user) else {
        return Err(unauthenticated("unknown user or wrong password"));
    };
    let cache = state.verify_cache(policy);
    let digest = ring::digest::digest(&ring::digest::SHA256, &decoded);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    let now = Instant::now();
    if !cache.hit(&key, now) {
        if !verify(password, hash) {
            return Err(unauthenticated("unknown user or wrong password"));
        }
        cache.insert(key, now);
    }
    let user = user.to_string();
    parts.headers.remove(http::header::AUTHORIZATION);
    if let Some(name) = &basic.forward_username_header {
        if let Ok(v) = http::HeaderValue::from_str(&user) {
            parts.headers.insert(name.clone(), v);
        }
    }
    Ok(())
}

/// Whether `password` matches an htpasswd `hash`.
pub(crate) fn verify(password: &str, hash: &str) -> bool {
    if hash.starts_with("$2") {
        // The bcrypt crate compares its digests in constant time.
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    if let Some(expected) = hash.strip_prefix("{SHA}") {
        use sha1::Digest as _;
        let got = base64::engine::general_purpose::STANDARD
            .encode(sha1::Sha1::digest(password.as_bytes()));
        return got.as_bytes().ct_eq(expected.as_bytes()).into();
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let Some((salt, _)) = rest.split_once('$') else {
            return false;
        };
        let got = apr1(password.as_bytes(), salt.as_bytes());
        return got.as_bytes().ct_eq(hash.as_bytes()).into();
    }
    false
}

/// Apache's `$apr1$` MD5-crypt (the FreeBSD md5crypt with another magic), the full
/// `$apr1$salt$hash` string.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    use md5::{Digest as _, Md5};
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alt = {
        let mut h = Md5::new();
        h.update(password);
        h.update(salt);
        h.update(password);
        h.finalize()
    };
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1.min(password.len())]);
        }
        i >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut h = Md5::new();
        if round & 1 == 1 {
            h.update(password);
        } else {
            h.update(digest);
        }
        if round % 3 != 0 {
            h.update(salt);
        }
        if round % 7 != 0 {
            h.update(password);
        }
        if round & 1 == 1 {
            h.update(digest);
        } else {
            h.update(password);
        }
        digest = h.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(37);
    out.push_str("$apr1$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    put((d(0) << 16) | (d(6) << 8) | d(12), 4);
    put((d(1) << 16) | (d(7) << 8) | d(13), 4);
    put((d(2) << 16) | (d(8) << 8) | d(14), 4);
    put((d(3) << 16) | (d(9) << 8) | d(15), 4);
    put((d(4) << 16) | (d(10) << 8) | d(5), 4);
    put(d(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_hashes_verify() {
        // `htpasswd -nbs alice password`, `-nbm` (salt fixed by openssl passwd -apr1).
        assert!(verify("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
        assert!(!verify("Password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
        // openssl passwd -apr1 -salt abcdefgh password
        assert!(verify("password", "$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1"));
        assert!(!verify("passwore", "$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1"));
        let b = bcrypt::hash_with_salt("password", 4, [7u8; 16]).unwrap();
        for prefix in ["$2y$", "$2b$", "$2a$"] {
            let h = b
                .format_for_version(bcrypt::Version::TwoB)
                .replacen("$2b$", prefix, 1);
            assert!(verify("password", &h), "{h}");
            assert!(!verify("passw0rd", &h), "{h}");
        }
        assert!(!verify("password", "password"));
    }

    #[test]
    fn the_cache_keeps_only_recent_successes_and_stays_bounded() {
        let c = VerifyCache::default();
        let now = Instant::now();
        c.insert([1; 32], now);
        assert!(c.hit(&[1; 32], now));
        assert!(!c.hit(&[1; 32], now + CACHE_TTL));
        for i in 0..(CACHE_MAX + 10) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c.insert(k, now);
        }
        assert!(c.len() <= CACHE_MAX);
    }
}
