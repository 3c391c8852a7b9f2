//! ClientTrafficPolicy in the data plane: what a socket's [`ClientPolicy`] changes, read once
//! per connection at accept time (`listener::serve_connection`).
//!
//! Per socket and policy (keyed by the socket and the policy's `id` in the proxy's
//! [`StateRegistry`](crate::state::StateRegistry), so it survives swaps that keep the
//! policy) a [`SocketPolicy`] holds what is built once from it: the HTTP server builder
//! (header limit and read timeout, idle timeout, buffer limit, HTTP/2 settings), the TLS
//! configuration (versions, ciphers, ALPN) and the connection counter of
//! `connectionLimit`. Connections on it carry it in their `ConnCtx`; per request only
//! `clientIPDetection` and `requestID` run ([`on_request`]), and only on sockets with a
//! policy (one `Option` check for the others).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::server::conn::auto;
use weir_snapshot::{ClientIpDetection, ClientPolicy, RequestIdMode};

use crate::{ProxyConfig, StreamExecutor};

/// What one socket's policy builds once: shared by every connection accepted under it.
pub(crate) struct SocketPolicy {
    pub(crate) policy: Arc<ClientPolicy>,
    /// Connections open under this policy on this socket (`connectionLimit`).
    open: AtomicU32,
    /// The HTTP server for this socket (instead of the process-wide one).
    pub(crate) server: auto::Builder<StreamExecutor>,
    /// `tls` settings as the socket's TLS configuration (no client validation); `None`
    /// when the policy has no `tls` or the socket does not terminate TLS.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_header_bytes: usize,
}

impl SocketPolicy {
    pub(crate) fn new(
        policy: Arc<ClientPolicy>,
        config: &ProxyConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        Self {
            server: crate::server_builder(config, Some(&policy)),
            idle_timeout: policy.http_idle_timeout.unwrap_or(config.idle_timeout),
            max_header_bytes: policy
                .max_request_header_bytes
                .unwrap_or(config.max_header_bytes),
            open: AtomicU32::new(0),
            tls,
            policy,
        }
    }

    /// Count a new connection against `connectionLimit`: `None` when the limit is reached
    /// (the connection is to be closed), else a guard giving the slot back on drop.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let Some(limit) = self.policy.connection_limit else {
            return Some(Admitted(None));
        };
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| Admitted(Some(self.clone())))
    }
}

/// A connection counted against its socket policy's `connectionLimit`.
pub(crate) struct Admitted(Option<Arc<SocketPolicy>>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(policy) = &self.0 {
            policy.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Envoy's header for the trusted client address, set on sockets whose policy detects it
/// (`clientIPDetection`), so backends that read it behind Envoy Gateway read it behind Weir.
static X_ENVOY_EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");

/// The client address a policy's `clientIPDetection` found for a request (a request
/// extension: the access log, and later rate limits and authorization, read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// The per-request part of a socket's policy, before routing: `requestID` on
/// `x-request-id`, and `clientIPDetection` (the detected address as the [`ClientAddr`]
/// extension and `x-envoy-external-address`). `peer` is the connection's client address
/// (the PROXY protocol's source, if any).
pub(crate) fn on_request<B>(policy: &ClientPolicy, peer: SocketAddr, req: &mut http::Request<B>) {
    if let Some(mode) = policy.request_id {
        request_id(mode, req.headers_mut());
    }
    if let Some(detection) = &policy.client_ip {
        let client = detect_client(detection, peer.ip(), req.headers());
        // An address from X-Forwarded-For has no port (Envoy logs it with port 0).
        let addr = if client == peer.ip() {
            peer
        } else {
            SocketAddr::new(client, 0)
        };
        if let Ok(value) = HeaderValue::try_from(client.to_canonical().to_string()) {
            req.headers_mut()
                .insert(X_ENVOY_EXTERNAL_ADDRESS.clone(), value);
        }
        req.extensions_mut().insert(ClientAddr(addr));
    }
}

/// `headers.requestID` on the request's `x-request-id`.
fn request_id(mode: RequestIdMode, headers: &mut HeaderMap) {
    match mode {
        RequestIdMode::Preserve => {}
        RequestIdMode::PreserveOrGenerate => {
            if !headers.contains_key(&X_REQUEST_ID) {
                headers.insert(X_REQUEST_ID.clone(), uuid_v4(rand::random()));
            }
        }
        RequestIdMode::Generate => {
            headers.insert(X_REQUEST_ID.clone(), uuid_v4(rand::random()));
        }
        RequestIdMode::Disable => {
            headers.remove(&X_REQUEST_ID);
        }
    }
}

/// A random (version 4) UUID in its text form, from 128 random bits.
pub(crate) fn uuid_v4(random: u128) -> HeaderValue {
    let bits = (random & !(0xf000 << 64) & !(0xc000 << 48)) | (0x4000 << 64) | (0x8000 << 48);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        nibble -= 1;
        *slot = HEX[((bits >> (nibble * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The client address under `clientIPDetection.xForwardedFor`, as Envoy's
/// `xff_num_trusted_hops` and `xff_trusted_cidrs` find it, from the X-Forwarded-For the
/// request arrived with (before Weir appends the peer):
/// - `numTrustedHops: N`: the N-th address from the right; fewer addresses (or one that is
///   not an IP address): the peer.
/// - `trustedCIDRs`: a peer outside them is the client (its X-Forwarded-For is not read);
///   else walk X-Forwarded-For from the right, skipping trusted addresses; the first
///   untrusted one is the client; all trusted: the leftmost.
pub(crate) fn detect_client(
    detection: &ClientIpDetection,
    peer: IpAddr,
    headers: &HeaderMap,
) -> IpAddr {
    let mut hops = forwarded_for(headers).rev();
    match detection {
        ClientIpDetection::NumTrustedHops(0) => peer,
        ClientIpDetection::NumTrustedHops(n) => hops
            .nth(usize::try_from(*n - 1).unwrap_or(usize::MAX))
            .and_then(|hop| hop.parse::<IpAddr>().ok())
            .unwrap_or(peer),
        ClientIpDetection::TrustedCidrs(cidrs) => {
            let trusted = |ip: IpAddr| cidrs.iter().any(|c| c.contains(ip));
            if !trusted(peer) {
                return peer;
            }
            let mut leftmost = None;
            for hop in hops {
                let Ok(ip) = hop.parse::<IpAddr>() else {
                    // Not an address: nothing left of it can be trusted.
                    return leftmost.unwrap_or(peer);
                };
                if !trusted(ip) {
                    return ip;
                }
                leftmost = Some(ip);
            }
            leftmost.unwrap_or(peer)
        }
    }
}

/// The X-Forwarded-For entries, left to right, over all its header lines.
fn forwarded_for(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    entries.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_snapshot::Cidr;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn trusted_hops_pick_from_the_right() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let h = xff(&["203.0.113.128, 203.0.113.10", "203.0.113.1"]);
        let hops = |n| detect_client(&ClientIpDetection::NumTrustedHops(n), peer, &h);
        assert_eq!(hops(0), peer);
        assert_eq!(hops(1), "203.0.113.1".parse::<IpAddr>().unwrap());
        assert_eq!(hops(2), "203.0.113.10".parse::<IpAddr>().unwrap());
        assert_eq!(hops(3), "203.0.113.128".parse::<IpAddr>().unwrap());
        assert_eq!(hops(4), peer);
        assert_eq!(
            detect_client(
                &ClientIpDetection::NumTrustedHops(1),
                peer,
                &xff(&["garbage"])
            ),
            peer
        );
    }

    #[test]
    fn trusted_cidrs_skip_trusted_hops() {
        let cidrs = ClientIpDetection::TrustedCidrs(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        let trusted_peer: IpAddr = "10.0.0.9".parse().unwrap();
        let h = xff(&["198.51.100.1, 203.0.113.5, 10.1.1.1"]);
        assert_eq!(
            detect_client(&cidrs, trusted_peer, &h),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(detect_client(&cidrs, outsider, &h), outsider);
        assert_eq!(
            detect_client(&cidrs, trusted_peer, &xff(&["10.2.2.2, 10.3.3.3"])),
            "10.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            detect_client(&cidrs, trusted_peer, &HeaderMap::new()),
            trusted_peer
        );
    }

    #[test]
    fn request_id_modes() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("client-id"));
        let mut keep = h.clone();
        request_id(RequestIdMode::PreserveOrGenerate, &mut keep);
        assert_eq!(keep[&X_REQUEST_ID], "client-id");
        let mut gen = h.clone();
        request_id(RequestIdMode::Generate, &mut gen);
        assert_ne!(gen[&X_REQUEST_ID], "client-id");
        let mut off = h.clone();
        request_id(RequestIdMode::Disable, &mut off);
        assert!(off.get(&X_REQUEST_ID).is_none());
        let mut none = HeaderMap::new();
        request_id(RequestIdMode::Preserve, &mut none);
        assert!(none.get(&X_REQUEST_ID).is_none());
        request_id(RequestIdMode::PreserveOrGenerate, &mut none);
        assert_eq!(none[&X_REQUEST_ID].len(), 36);
    }

    #[test]
    fn uuid_v4_text() {
        assert_eq!(uuid_v4(0), "00000000-0000-4000-8000-000000000000");
        assert_eq!(uuid_v4(u128::MAX), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
