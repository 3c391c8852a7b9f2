//! A ClientTrafficPolicy (`gateway.weir.dev/v1alpha1`, Envoy Gateway's field names) compiled
//! for one socket: how Weir treats the client side of the connections that arrive there.
//!
//! Translation resolves attachment and precedence (a listener's own policy beats its
//! Gateway's) and compiles the effective policy into [`crate::SocketConfig::client_policy`];
//! the proxy reads it once per connection at accept time and never merges policies.
//! Every field is optional: `None` keeps Weir's default (the process flags), so a policy only
//! tunes what it names.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The compiled policy for one socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPolicy {
    /// `namespace/name` of the policy, for logs and metrics.
    pub name: Arc<str>,
    /// Stable identity (a hash of the policy's namespace/name, spec and target): keys the
    /// runtime state the policy owns (its connection counter), so that state survives
    /// snapshot swaps that keep the policy as it is.
    pub id: u64,
    /// `clientIPDetection`: which address counts as the client's (logs, rate limits,
    /// authorization). `None`: the connection's peer (or the PROXY protocol source).
    pub client_ip: Option<ClientIpDetection>,
    /// `proxyProtocol`: connections start with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `headers.maxRequestHeaderLimit`: largest request header section in bytes (431 above
    /// it). `None`: `--max-header-bytes`.
    pub max_request_header_bytes: Option<usize>,
    /// `headers.requestID`: what happens to `x-request-id`. `None`: passed through as sent.
    pub request_id: Option<RequestIdMode>,
    /// `timeout.http.requestReceivedTimeout`: the whole request (header and body) must
    /// arrive within this; a header not complete by then closes the connection, a body not
    /// complete gets 408.
    pub request_received_timeout: Option<Duration>,
    /// `timeout.http.idleTimeout`: an HTTP connection without requests in flight is closed
    /// after this. `None`: `--idle-timeout`.
    pub http_idle_timeout: Option<Duration>,
    /// `timeout.tcp.idleTimeout`: a TCP or TLS-passthrough connection that moves no byte for
    /// this long is closed.
    pub tcp_idle_timeout: Option<Duration>,
    /// `connection.connectionLimit.value`: connections open at once on this socket; new ones
    /// beyond it are closed at accept (and counted), open ones are unharmed.
    pub connection_limit: Option<u32>,
    /// `connection.bufferLimit`: bytes buffered per connection (HTTP/1 read buffer, HTTP/2
    /// stream and connection windows are capped by it).
    pub buffer_limit: Option<u32>,
    /// `tls`: protocol versions, cipher suites and ALPN for TLS sockets.
    pub tls: Option<TlsSettings>,
    /// `http2`: HTTP/2 settings advertised to clients.
    pub http2: Option<Http2Settings>,
    /// `bodyBasedRouting` (Weir's own): before routes are matched, the `model` of a JSON
    /// request body (`Content-Type: application/json`, at most this many bytes, else 413)
    /// is copied into `X-Gateway-Model-Name`; the body is forwarded unchanged.
    pub body_based_routing: Option<u64>,
    /// `headers.disableRateLimitHeaders`: responses on this socket carry no
    /// `x-ratelimit-limit`, `-remaining` or `-reset` (a 429 keeps `retry-after`).
    pub disable_rate_limit_headers: bool,
}

/// `clientIPDetection.xForwardedFor`: the client address is taken from X-Forwarded-For when
/// the hops that appended to it are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIpDetection {
    /// `numTrustedHops: N`: the N-th address from the right of X-Forwarded-For (the
    /// rightmost N−1 were added by trusted proxies in front of Weir); fewer addresses than
    /// that: the peer address.
    NumTrustedHops(u32),
    /// `trustedCIDRs`: walk X-Forwarded-For from the right, starting with the peer address,
    /// skipping addresses inside these blocks; the first outside them is the client.
    TrustedCidrs(Vec<Cidr>),
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parse `ADDR/PREFIX` (a bare address is a /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, Some(p.trim())),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr {
            address: addr,
            prefix,
        })
    }

    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `proxyProtocol`: a PROXY protocol header (v1 text or v2 binary) before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// `optional: true`: connections without the header are served as they are; otherwise
    /// a connection without one is closed (and counted).
    pub optional: bool,
}

/// `headers.requestID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestIdMode {
    /// Keep a client's `x-request-id`; generate one when absent.
    PreserveOrGenerate,
    /// Keep a client's `x-request-id`; never generate one.
    Preserve,
    /// Always replace it by a generated one.
    Generate,
    /// Remove a client's `x-request-id` and generate none.
    Disable,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// `tls`: what the handshake offers. Weir's TLS stack speaks only TLS 1.2 and 1.3, so
/// `minVersion` 1.0/1.1 is accepted as 1.2 (the floor) and `Auto` as no preference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// Cipher suite names as Envoy Gateway writes them (`ECDHE-RSA-AES128-GCM-SHA256`,
    /// `TLS_AES_128_GCM_SHA256`), validated by translation against what the TLS stack has;
    /// empty: the stack's defaults.
    pub ciphers: Vec<Arc<str>>,
    /// ALPN protocols in preference order (`h2`, `http/1.1`); empty: `h2`, `http/1.1`.
    pub alpn_protocols: Vec<Arc<str>>,
}

impl TlsSettings {
    /// The protocol versions the settings allow: `minVersion..=maxVersion`, each defaulting
    /// to the stack's range (1.2 to 1.3). Errors when minVersion is above maxVersion.
    pub fn protocol_versions(
        &self,
    ) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
        let min = self.min_version.unwrap_or(TlsVersion::V1_2);
        let max = self.max_version.unwrap_or(TlsVersion::V1_3);
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TlsVersion::V1_2, &rustls::version::TLS12),
            (TlsVersion::V1_3, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();
        if versions.is_empty() {
            return Err(format!(
                "TLS minVersion {min:?} is above maxVersion {max:?}"
            ));
        }
        Ok(versions)
    }

    /// `base` restricted to the cipher suites the settings name ([`cipher_suites`]);
    /// `base` itself when they name none.
    pub fn crypto_provider(
        &self,
        base: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<rustls::crypto::CryptoProvider>, String> {
        if self.ciphers.is_empty() {
            return Ok(base.clone());
        }
        Ok(Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: cipher_suites(&self.ciphers)?,
            ..(**base).clone()
        }))
    }

    /// Whether the proxy can build a TLS configuration from these settings: no unknown
    /// cipher name, minVersion not above maxVersion, and some named cipher usable with the
    /// allowed versions. Translation refuses a policy (`Accepted=False`) on `Err`; the
    /// proxy closes the connections of a socket whose settings fail here.
    pub fn check(&self) -> Result<(), String> {
        let provider = self.crypto_provider(&Arc::new(rustls::crypto::ring::default_provider()))?;
        let versions = self.protocol_versions()?;
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map(|_| ())
            .map_err(|e| format!("TLS settings cannot be used: {e}"))
    }
}

/// `http2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http2Settings {
    /// `maxConcurrentStreams`.
    pub max_concurrent_streams: Option<u32>,
    /// `initialStreamWindowSize` in bytes.
    pub initial_stream_window_size: Option<u32>,
    /// `initialConnectionWindowSize` in bytes.
    pub initial_connection_window_size: Option<u32>,
}

/// The TLS cipher suite a name stands for, as Envoy Gateway's `tls.ciphers` writes them
/// (OpenSSL/BoringSSL names: `ECDHE-RSA-AES128-GCM-SHA256`) or by their IANA names
/// (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, `TLS_AES_128_GCM_SHA256`); `None` for a name
/// Weir's TLS stack (rustls) does not have: it speaks only AEAD suites with forward secrecy,
/// so `AES128-SHA`, `ECDHE-RSA-AES128-SHA` and the like are unknown.
pub fn cipher_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name.trim() {
        "TLS_AES_128_GCM_SHA256" | "TLS13_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" | "TLS13_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" | "TLS13_CHACHA20_POLY1305_SHA256" => {
            cs::TLS13_CHACHA20_POLY1305_SHA256
        }
        "ECDHE-ECDSA-AES128-GCM-SHA256" | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        "ECDHE-ECDSA-AES256-GCM-SHA384" | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-ECDSA-CHACHA20-POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "ECDHE-RSA-AES128-GCM-SHA256" | "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        }
        "ECDHE-RSA-AES256-GCM-SHA384" | "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-RSA-CHACHA20-POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// The names in a `tls.ciphers` list, one by one: Envoy's equal-preference groups
/// (`[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]`) are split into their
/// members.
fn cipher_names<'a>(list: &'a [Arc<str>]) -> impl Iterator<Item = &'a str> + 'a {
    list.iter().flat_map(|entry| {
        entry
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split('|')
            .map(str::trim)
            .filter(|n| !n.is_empty())
    })
}

/// The names in a `tls.ciphers` list that Weir's TLS stack does not have (empty: all are
/// usable). Translation calls this to refuse a policy naming one (`Accepted=False`).
pub fn unknown_ciphers(list: &[Arc<str>]) -> Vec<String> {
    cipher_names(list)
        .filter(|n| cipher_suite(n).is_none())
        .map(str::to_string)
        .collect()
}

/// The cipher suites a `tls.ciphers` list allows, in its order (duplicates once). As in
/// Envoy, the list is about TLS 1.2; a list that names no TLS 1.3 suite keeps all of them
/// (a list naming some restricts TLS 1.3 to those). Errors with the unknown names.
pub fn cipher_suites(list: &[Arc<str>]) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    let unknown = unknown_ciphers(list);
    if !unknown.is_empty() {
        return Err(format!("unknown TLS cipher suites: {}", unknown.join(", ")));
    }
    let mut suites: Vec<rustls::SupportedCipherSuite> = Vec::new();
    for suite in cipher_names(list).filter_map(cipher_suite) {
        if !suites.iter().any(|s| s.suite() == suite.suite()) {
            suites.push(suite);
        }
    }
    if !suites
        .iter()
        .any(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
    {
        suites.extend(
            rustls::crypto::ring::DEFAULT_CIPHER_SUITES
                .iter()
                .copied()
                .filter(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_))),
        );
    }
    Ok(suites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let host = Cidr::parse("2001:db8::1").unwrap();
        assert_eq!(host.prefix, 128);
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
    }

    #[test]
    fn cipher_names_map_to_suites() {
        let list: Vec<Arc<str>> = vec![
            "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]".into(),
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
            "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
        ];
        assert!(unknown_ciphers(&list).is_empty());
        let suites = cipher_suites(&list).unwrap();
        // Three TLS 1.2 suites (the duplicate once), then every TLS 1.3 one.
        assert_eq!(suites.len(), 6);
        let bad: Vec<Arc<str>> = vec!["AES128-SHA".into(), "TLS_AES_128_GCM_SHA256".into()];
        assert_eq!(unknown_ciphers(&bad), vec!["AES128-SHA".to_string()]);
        assert!(cipher_suites(&bad).is_err());
        let only13: Vec<Arc<str>> = vec!["TLS_AES_256_GCM_SHA384".into()];
        assert_eq!(cipher_suites(&only13).unwrap().len(), 1);
    }

    #[test]
    fn tls_settings_check() {
        assert!(TlsSettings::default().check().is_ok());
        let inverted = TlsSettings {
            min_version: Some(TlsVersion::V1_3),
            max_version: Some(TlsVersion::V1_2),
            ..TlsSettings::default()
        };
        assert!(inverted.check().is_err());
        // Only TLS 1.3 suites named, but only TLS 1.2 allowed: nothing to negotiate.
        let unusable = TlsSettings {
            max_version: Some(TlsVersion::V1_2),
            ciphers: vec!["TLS_AES_128_GCM_SHA256".into()],
            ..TlsSettings::default()
        };
        assert!(unusable.check().is_err());
        let unknown = TlsSettings {
            ciphers: vec!["AES128-SHA".into()],
            ..TlsSettings::default()
        };
        assert!(unknown.check().unwrap_err().contains("AES128-SHA"));
        let fine = TlsSettings {
            min_version: Some(TlsVersion::V1_2),
            ciphers: vec!["ECDHE-RSA-AES128-GCM-SHA256".into()],
            alpn_protocols: vec!["h2".into()],
            ..TlsSettings::default()
        };
        assert!(fine.check().is_ok());
    }
}
