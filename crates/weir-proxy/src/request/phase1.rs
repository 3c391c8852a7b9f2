//! Phase 1, route: the request target normalised, the header-size check, the Host (parsed
//! and checked as RFC 9110, 9112 and 9113 ask), a TLS request's Host against its SNI
//! (421), then the listener by Host and its first matching route entry ([`route`]).

use std::sync::Arc;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Version};
use hyper::body::Incoming;
use weir_snapshot::{path, Listener, RequestView, RouteEntry, Snapshot, SocketConfig};

use super::RequestLog;
use crate::conn::ConnCtx;
use crate::error::ProxyError;

/// The request target as routes see it and the backend gets it: `*` only for OPTIONS
/// (RFC 9112 §3.2.4), the path normalised ([`path`]; the query string untouched). The URI
/// is rebuilt only when normalising changed the path.
pub(super) fn normalize_target<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let uri = req.uri();
    let raw = uri.path();
    if raw == "*" && req.method() != Method::OPTIONS {
        return Err(ProxyError::AsteriskTarget);
    }
    let normal = match path::normalize(raw).map_err(ProxyError::BadPath)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(normal) => normal,
    };
    let rebuilt =
        path::with_path(uri, normal).map_err(|value| ProxyError::InvalidFilterResult {
            what: "normalised path",
            value,
        })?;
    *req.uri_mut() = rebuilt;
    Ok(())
}

/// Phase 1: find the route entry for the request.
pub(super) fn route<'s>(
    conn: &ConnCtx,
    snapshot: &'s Snapshot,
    req: &Request<Incoming>,
    log: &mut RequestLog,
) -> Result<(u16, &'s Listener, &'s Arc<RouteEntry>), ProxyError> {
    check_header_size(req, conn.max_header_bytes())?;
    log.host = request_host(req)?;
    let socket = snapshot
        .socket(conn.key.0, conn.key.1)
        .ok_or(ProxyError::SocketGone)?;
    let position = socket.listener_position(&log.host);
    check_misdirected(conn, socket, position, &log.host)?;
    let listener = position
        .and_then(|i| socket.listeners.get(i))
        .ok_or_else(|| ProxyError::NoListener(log.host.clone()))?;
    log.gateway = Some(listener.gateway.clone());
    let view = RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    listener
        .find_route(&log.host, &view)
        .map(|entry| (socket.port, listener, entry))
        .ok_or(ProxyError::NoRoute)
}

/// A TLS request whose Host belongs to another listener than the one its SNI chose is
/// misdirected (421, RFC 9110 §15.5.20): with HTTP/2 connection reuse a client may send a
/// request for another name over a connection whose certificate and listener were chosen
/// for the SNI (Gateway API `GatewayHTTPSListenerDetectMisdirectedRequests`). Clients that
/// send no SNI, and SNI names no listener claims, are not checked for that. A Host whose
/// listener validates client certificates differently from the validation this connection
/// passed is misdirected too, whatever the SNI (else a connection could skip it).
fn check_misdirected(
    conn: &ConnCtx,
    socket: &SocketConfig,
    host_listener: Option<usize>,
    host: &str,
) -> Result<(), ProxyError> {
    if conn.tls && host_listener.is_some() {
        let wanted = host_listener
            .and_then(|i| socket.listeners.get(i))
            .and_then(|l| l.client_auth.as_ref());
        let same = match (wanted, &conn.client_auth) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.same_as(b),
            _ => false,
        };
        if !same {
            return Err(ProxyError::Misdirected {
                host: host.to_string(),
                sni: conn.sni.clone().unwrap_or_else(|| Arc::from("")),
            });
        }
    }
    let Some(sni) = &conn.sni else {
        return Ok(());
    };
    if sni.as_ref() == host {
        return Ok(());
    }
    match socket.listener_position(sni) {
        Some(sni_listener) if Some(sni_listener) != host_listener => Err(ProxyError::Misdirected {
            host: host.to_string(),
            sni: sni.clone(),
        }),
        _ => Ok(()),
    }
}

/// Reject header sections larger than the limit (hyper enforces a coarser limit for
/// HTTP/1 before the request gets here; this one also covers HTTP/2 exactly).
pub(super) fn check_header_size<B>(req: &Request<B>, limit: usize) -> Result<(), ProxyError> {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let size = req.headers().iter().fold(target, |acc, (name, value)| {
        acc + name.as_str().len() + value.len() + 4
    });
    if size > limit {
        return Err(ProxyError::HeadersTooLarge { size, limit });
    }
    Ok(())
}

/// The request's host: the URI authority (HTTP/2 `:authority`, HTTP/1 absolute form), else
/// the Host header; port stripped, lowercased. HTTP/1.0 may omit it (empty host).
///
/// Refused (400): more than one Host header, a Host or authority that is not `host[:port]`
/// (userinfo, a path, spaces…), and on HTTP/2 a Host header naming another host than
/// `:authority` (RFC 9113 §8.3.1). On HTTP/1.1 an absolute-form target's authority wins
/// over a different Host header, which is replaced (RFC 9112 §3.2.2; see
/// [`ensure_host_header`]).
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    let raw = if let Some(authority) = req.uri().authority() {
        // http's parser accepts userinfo (`user@host`); RFC 9110 §4.2.4 says to refuse it.
        if !is_authority(authority.as_str().as_bytes()) {
            return Err(ProxyError::InvalidHost);
        }
        if let Some(header) = header.filter(|_| req.version() == Version::HTTP_2) {
            // Compared by host (routing and the forwarded Host use only that): `h` and
            // `h:443` are the same entity.
            let same = header
                .to_str()
                .is_ok_and(|h| strip_port(h.trim()).eq_ignore_ascii_case(authority.host()));
            if !same {
                return Err(ProxyError::HostMismatch(format!(
                    "{:?} vs {:?}",
                    String::from_utf8_lossy(header.as_bytes()),
                    authority.as_str()
                )));
            }
        }
        authority.host()
    } else if let Some(value) = header {
        let value = value.to_str().map_err(|_| ProxyError::InvalidHost)?.trim();
        if !value.is_empty() && !is_authority(value.as_bytes()) {
            return Err(ProxyError::InvalidHost);
        }
        strip_port(value)
    } else if req.version() <= Version::HTTP_10 {
        ""
    } else {
        return Err(ProxyError::MissingHost);
    };
    Ok(raw.to_ascii_lowercase())
}

/// The bytes of a reg-name (RFC 3986 §3.2.2): unreserved, sub-delims and `%` (of a
/// percent-encoding). A table, so the check is one load per byte.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// `host[:port]` as RFC 3986 §3.2.2 and §3.2.3 define them, without userinfo: an IP
/// literal in brackets, or a reg-name, then an optional `:` and up to 5 digits. One pass.
fn is_authority(value: &[u8]) -> bool {
    let port = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = value.get(1..end).unwrap_or_default();
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        value.get(end + 1..).unwrap_or_default()
    } else {
        let host_len = value
            .iter()
            .position(|&b| !REG_NAME[usize::from(b)])
            .unwrap_or(value.len());
        value.get(host_len..).unwrap_or_default()
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows ']'.
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The Host header the upstream sees: as received, except that a URI authority (HTTP/2
/// `:authority`, HTTP/1.1 absolute form) replaces it, as RFC 9112 §3.2.2 and RFC 9113 §8.3.1
/// ask.
pub(super) fn ensure_host_header(parts: &mut http::request::Parts) {
    if let Some(authority) = parts.uri.authority() {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(HOST, value);
        }
    }
}
