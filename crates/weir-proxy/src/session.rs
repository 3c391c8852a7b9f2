//! Session persistence (`weir_snapshot::SessionPersistence`): the session value a client
//! carries (a cookie or a header) and what it pins.
//!
//! The value is sealed with an AEAD (ChaCha20-Poly1305, `ring`) under a key the proxy holds
//! ([`SessionKey`]: random per process, or given with `--session-key-file` so that every
//! replica accepts the others' sessions). It holds the backend (its index among the rule's
//! backendRefs), the endpoint's address, when the session started and when it was last
//! renewed. Sealing means a client can neither read the backend's address nor make a value
//! that names an address of its choosing: a value that does not open is ignored, and one
//! that opens still pins only an endpoint that is an endpoint of that backend now. The
//! rule's scope is the AEAD's associated data, so a value issued for one rule is not valid
//! for another.
//!
//! A request whose value is missing, does not open, has expired (`absoluteTimeout`,
//! `idleTimeout`) or names an endpoint that is gone is routed normally, and its response
//! starts a new session.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use weir_snapshot::{SessionCarrier, SessionPersistence};

/// The key sessions are sealed with.
pub struct SessionKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// version, backend (2), address (16), port (2), started (8), renewed (8).
const PLAIN_LEN: usize = 1 + 2 + 16 + 2 + 8 + 8;
const VERSION: u8 = 1;
/// The longest value that can be one of ours (base64 of nonce, plaintext and tag), so a
/// long cookie costs no decoding.
const MAX_VALUE_LEN: usize = (NONCE_LEN + PLAIN_LEN + 16).div_ceil(3) * 4;

impl SessionKey {
    /// A new random key (sessions last as long as the process).
    pub fn random() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; KEY_LEN];
        rng.fill(&mut bytes)
            .map_err(|_| "no randomness for the session key".to_string())?;
        Self::from_bytes(&bytes)
    }

    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "a session key is {KEY_LEN} bytes, not {}",
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| "unusable session key".to_string())?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// A key from a file's contents: 32 bytes as 64 hex digits or base64, surrounding
    /// whitespace ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bytes = if t.len() == 2 * KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..KEY_LEN)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect::<Vec<_>>()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| "a session key file holds 32 bytes as hex or base64".to_string())?
        };
        Self::from_bytes(&bytes)
    }

    /// The value for a session of `scope` on `backend`'s endpoint `addr`.
    pub fn seal(&self, scope: u64, session: &Session) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = Vec::with_capacity(NONCE_LEN + PLAIN_LEN + 16);
        data.extend_from_slice(&nonce);
        data.push(VERSION);
        data.extend_from_slice(&session.backend.to_be_bytes());
        let ip = match session.addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        data.extend_from_slice(&ip.octets());
        data.extend_from_slice(&session.addr.port().to_be_bytes());
        data.extend_from_slice(&session.started.to_be_bytes());
        data.extend_from_slice(&session.renewed.to_be_bytes());
        let mut plain = data.split_off(NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(scope.to_be_bytes()),
                &mut plain,
            )
            .ok()?;
        data.extend_from_slice(&plain);
        Some(URL_SAFE_NO_PAD.encode(data))
    }

    /// The session in `value`, if it is one this key sealed for `scope`.
    pub fn open(&self, scope: u64, value: &[u8]) -> Option<Session> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let mut data = URL_SAFE_NO_PAD.decode(value).ok()?;
        if data.len() != NONCE_LEN + PLAIN_LEN + 16 {
            return None;
        }
        let mut sealed = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(scope.to_be_bytes()), &mut sealed)
            .ok()?;
        let (&version, rest) = plain.split_first()?;
        if version != VERSION {
            return None;
        }
        let backend = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?);
        let ip: [u8; 16] = rest.get(2..18)?.try_into().ok()?;
        let port = u16::from_be_bytes(rest.get(18..20)?.try_into().ok()?);
        let started = u64::from_be_bytes(rest.get(20..28)?.try_into().ok()?);
        let renewed = u64::from_be_bytes(rest.get(28..36)?.try_into().ok()?);
        let ip = Ipv6Addr::from(ip);
        let ip = ip
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(ip));
        Some(Session {
            backend,
            addr: SocketAddr::new(ip, port),
            started,
            renewed,
        })
    }
}

/// What a session value holds. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The backend's index among the rule's backendRefs.
    pub backend: u16,
    pub addr: SocketAddr,
    pub started: u64,
    pub renewed: u64,
}

impl Session {
    /// Whether the session is still on at `now` under `cfg`'s timeouts.
    pub fn alive(&self, cfg: &SessionPersistence, now: u64) -> bool {
        let within = |since: u64, limit: Option<Duration>| {
            limit.is_none_or(|l| now.saturating_sub(since) < l.as_secs().max(1))
        };
        self.started <= now.saturating_add(60)
            && within(self.started, cfg.absolute_timeout)
            && within(self.renewed, cfg.idle_timeout)
    }
}

/// The session value the request carries for `cfg` (its cookie, or its header), if any.
pub fn carried<'h>(cfg: &SessionPersistence, headers: &'h HeaderMap) -> Option<&'h [u8]> {
    match cfg.carrier {
        SessionCarrier::Header => headers.get(&*cfg.name).map(HeaderValue::as_bytes),
        SessionCarrier::Cookie => headers.get_all(COOKIE).iter().find_map(|v| {
            v.as_bytes().split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                let (name, value) = (&pair[..eq], &pair[eq + 1..]);
                (name == cfg.name.as_bytes()).then_some(value)
            })
        }),
    }
}

/// Put the session `value` on a response: a `Set-Cookie` (Path from the rule, HttpOnly,
/// SameSite=Lax, Secure on TLS listeners, Max-Age for a Permanent cookie) or the header.
pub fn attach(cfg: &SessionPersistence, value: &str, secure: bool, headers: &mut HeaderMap) {
    match cfg.carrier {
        SessionCarrier::Header => {
            if let (Ok(name), Ok(v)) = (
                HeaderName::from_bytes(cfg.name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, v);
            }
        }
        SessionCarrier::Cookie => {
            let mut cookie = format!("{}={value}", cfg.name);
            if let Some(path) = &cfg.path {
                cookie.push_str(&format!("; Path={path}"));
            }
            cookie.push_str("; HttpOnly; SameSite=Lax");
            if let (true, Some(max)) = (cfg.permanent, cfg.absolute_timeout) {
                cookie.push_str(&format!("; Max-Age={}", max.as_secs().max(1)));
            }
            if secure {
                cookie.push_str("; Secure");
            }
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                headers.append(SET_COOKIE, v);
            }
        }
    }
}

/// A request's session on a route with session persistence, from the backend pick
/// (phase 4) to the response (phase 6).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sticky {
    /// The picked backend's index among the rule's backendRefs.
    pub backend: u16,
    /// The endpoint (index into the upstream's endpoints) the request's valid session
    /// names, and the session; `None`: none, or one that no longer holds.
    pub pin: Option<(usize, Session)>,
    /// The listener is TLS: the cookie gets `Secure`.
    pub secure: bool,
}

/// The backend and endpoint a request's session pins, when it carries a value this proxy
/// sealed for `cfg`'s rule, the session is alive, and the endpoint is still one of that
/// backend's: (backend index, endpoint index, session).
pub(crate) fn lookup(
    key: &SessionKey,
    cfg: &SessionPersistence,
    backends: &[weir_snapshot::Backend],
    headers: &HeaderMap,
    now: u64,
) -> Option<(u16, usize, Session)> {
    let session = key.open(cfg.scope, carried(cfg, headers)?)?;
    if !session.alive(cfg, now) {
        return None;
    }
    let backend = backends.get(usize::from(session.backend))?;
    let weir_snapshot::BackendTarget::Upstream(upstream) = &backend.target else {
        return None;
    };
    let endpoint = upstream
        .endpoints
        .iter()
        .position(|e| e.addr == session.addr)?;
    Some((session.backend, endpoint, session))
}

/// Phase 6 on a response of a route with session persistence: a new session value when the
/// request had none (or its endpoint did not answer), a renewed one when the rule has an
/// idle timeout; nothing otherwise.
pub(crate) fn respond(
    key: &SessionKey,
    cfg: &SessionPersistence,
    sticky: &Sticky,
    served: Option<SocketAddr>,
    now: u64,
    headers: &mut HeaderMap,
) {
    let Some(addr) = served else { return };
    let session = match sticky.pin {
        Some((_, s)) if s.addr == addr => {
            if cfg.idle_timeout.is_none() {
                return;
            }
            Session { renewed: now, ..s }
        }
        _ => Session {
            backend: sticky.backend,
            addr,
            started: now,
            renewed: now,
        },
    };
    if let Some(value) = key.seal(cfg.scope, &session) {
        attach(cfg, &value, sticky.secure, headers);
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cfg(carrier: SessionCarrier) -> SessionPersistence {
        SessionPersistence {
            carrier,
            name: "sid".into(),
            scope: 42,
            absolute_timeout: Some(Duration::from_secs(100)),
            idle_timeout: Some(Duration::from_secs(10)),
            permanent: false,
            path: Some(Arc::from("/app")),
        }
    }

    fn session(addr: &str) -> Session {
        Session {
            backend: 1,
            addr: addr.parse().unwrap(),
            started: 1_000,
            renewed: 1_005,
        }
    }

    #[test]
    fn sealed_values_open_only_for_their_key_and_scope() {
        let key = SessionKey::random().unwrap();
        for addr in ["10.1.2.3:8080", "[fd00::7]:443"] {
            let s = session(addr);
            let v = key.seal(42, &s).unwrap();
            assert!(
                !v.contains("10.1.2.3") && !v.contains("8080"),
                "opaque: {v}"
            );
            assert_eq!(key.open(42, v.as_bytes()), Some(s));
            assert_eq!(key.open(43, v.as_bytes()), None, "another rule's");
            let other = SessionKey::random().unwrap();
            assert_eq!(other.open(42, v.as_bytes()), None, "another key's");
            // Any change to the value is refused.
            let mut bytes = v.clone().into_bytes();
            bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
            assert_eq!(key.open(42, &bytes), None);
        }
        assert_eq!(key.open(42, b"not a session"), None);
        assert_eq!(key.open(42, &[b'A'; 4096]), None);
        assert_ne!(
            key.seal(42, &session("10.0.0.1:1")),
            key.seal(42, &session("10.0.0.1:1")),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn keys_parse_from_hex_or_base64() {
        let hex = "00".repeat(31) + "ff";
        assert!(SessionKey::parse(&format!("{hex}\n")).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let a = SessionKey::parse(&b64).unwrap();
        let b = SessionKey::from_bytes(&[7u8; 32]).unwrap();
        let v = a.seal(1, &session("10.0.0.1:80")).unwrap();
        assert!(
            b.open(1, v.as_bytes()).is_some(),
            "the same key from either form"
        );
        assert!(SessionKey::parse("short").is_err());
        assert!(SessionKey::from_bytes(&[0; 16]).is_err());
    }

    #[test]
    fn sessions_expire_by_absolute_and_idle_timeouts() {
        let c = cfg(SessionCarrier::Cookie);
        let s = session("10.0.0.1:80");
        assert!(s.alive(&c, 1_010));
        assert!(!s.alive(&c, 1_015), "idle 10 s");
        let fresh = Session {
            renewed: 1_095,
            ..s
        };
        assert!(fresh.alive(&c, 1_099));
        assert!(!fresh.alive(&c, 1_100), "absolute 100 s");
        let forever = SessionPersistence {
            absolute_timeout: None,
            idle_timeout: None,
            ..c
        };
        assert!(s.alive(&forever, u64::MAX / 2));
        let future = Session {
            started: 1_000_000,
            ..s
        };
        assert!(!future.alive(&forever, 1_000), "not from the future");
    }

    #[test]
    fn the_value_is_found_in_cookies_or_the_header() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; sidx=2"));
        h.append(COOKIE, HeaderValue::from_static("b=3;sid=xyz ; c=4"));
        assert_eq!(carried(&cfg(SessionCarrier::Cookie), &h), Some(&b"xyz"[..]));
        assert_eq!(carried(&cfg(SessionCarrier::Header), &h), None);
        h.insert("sid", HeaderValue::from_static("hv"));
        assert_eq!(carried(&cfg(SessionCarrier::Header), &h), Some(&b"hv"[..]));
    }

    #[test]
    fn responses_start_renew_or_leave_sessions() {
        let key = SessionKey::random().unwrap();
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let s = Session {
            backend: 0,
            addr,
            started: 100,
            renewed: 100,
        };
        let opened = |h: &HeaderMap| {
            let v = h.get("sid")?.as_bytes().to_vec();
            key.open(42, &v)
        };
        let sticky = |pin| Sticky {
            backend: 0,
            pin,
            secure: false,
        };
        let header = cfg(SessionCarrier::Header);
        // No session: a new one on the endpoint that answered.
        let mut h = HeaderMap::new();
        respond(&key, &header, &sticky(None), Some(addr), 150, &mut h);
        assert_eq!(opened(&h).map(|n| (n.addr, n.started)), Some((addr, 150)));
        // The pinned endpoint answered, idle timeout set: renewed, same start.
        let mut h = HeaderMap::new();
        respond(
            &key,
            &header,
            &sticky(Some((0, s))),
            Some(addr),
            150,
            &mut h,
        );
        let renewed = opened(&h).unwrap();
        assert_eq!((renewed.started, renewed.renewed), (100, 150));
        // No idle timeout: nothing to say.
        let no_idle = SessionPersistence {
            idle_timeout: None,
            ..header.clone()
        };
        let mut h = HeaderMap::new();
        respond(
            &key,
            &no_idle,
            &sticky(Some((0, s))),
            Some(addr),
            150,
            &mut h,
        );
        assert!(h.is_empty());
        // Another endpoint answered (the pinned one failed to connect): a new session there.
        let other: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let mut h = HeaderMap::new();
        respond(
            &key,
            &no_idle,
            &sticky(Some((0, s))),
            Some(other),
            150,
            &mut h,
        );
        assert_eq!(opened(&h).map(|n| (n.addr, n.started)), Some((other, 150)));
        // No endpoint known: nothing.
        let mut h = HeaderMap::new();
        respond(&key, &header, &sticky(None), None, 150, &mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn cookies_carry_path_and_lifetime() {
        let mut h = HeaderMap::new();
        attach(&cfg(SessionCarrier::Cookie), "v1", false, &mut h);
        assert_eq!(h[SET_COOKIE], "sid=v1; Path=/app; HttpOnly; SameSite=Lax");
        let permanent = SessionPersistence {
            permanent: true,
            ..cfg(SessionCarrier::Cookie)
        };
        let mut h = HeaderMap::new();
        attach(&permanent, "v2", true, &mut h);
        assert_eq!(
            h[SET_COOKIE],
            "sid=v2; Path=/app; HttpOnly; SameSite=Lax; Max-Age=100; Secure"
        );
        let mut h = HeaderMap::new();
        attach(&cfg(SessionCarrier::Header), "v3", false, &mut h);
        assert_eq!(h["sid"], "v3");
        // A Service's session (XBackendTrafficPolicy): no Path attribute at all.
        let service = SessionPersistence {
            path: None,
            ..cfg(SessionCarrier::Cookie)
        };
        let mut h = HeaderMap::new();
        attach(&service, "v4", false, &mut h);
        assert_eq!(h[SET_COOKIE], "sid=v4; HttpOnly; SameSite=Lax");
    }
}
