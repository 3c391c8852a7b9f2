//! One downstream connection as the request path sees it: which socket it came in on, from
//! whom, over what.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use weir_snapshot::RedirectScheme;

use crate::metrics::MetricsCache;
use crate::Shared;

/// A socket as the snapshot identifies it ([`weir_snapshot::SocketConfig::key`]): (address,
/// `None` = default bind; configured port, or the exact bind port when one is set).
pub(crate) type SocketKey = (Option<IpAddr>, u16);

/// One downstream connection: which socket it came in on and from whom.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    /// The socket as configured (the configured port, never the offset one).
    pub(crate) key: SocketKey,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) tls: bool,
    /// The TLS server name (SNI) the client sent, lowercase; `None` on plain sockets and for
    /// clients that send none.
    pub(crate) sni: Option<Arc<str>>,
    /// The client-certificate validation the handshake passed (see `tls/client_auth.rs`);
    /// `None` when none was asked for.
    pub(crate) client_auth: Option<Arc<weir_snapshot::ClientAuth>>,
    /// The peer's IP as the X-Forwarded-For value, formatted once per connection.
    pub(crate) client_ip: HeaderValue,
    /// The metric series this connection's last request was counted in: consecutive
    /// requests on one connection mostly hit the same route, and reusing the series skips
    /// the label hashing and the registry lock.
    pub(crate) metrics_cache: MetricsCache,
    /// What the socket's ClientTrafficPolicy built, when it has one (`client_policy.rs`).
    pub(crate) policy: Option<Arc<crate::client_policy::SocketPolicy>>,
}

impl ConnCtx {
    /// The largest request header section: the socket policy's, else `--max-header-bytes`.
    pub(crate) fn max_header_bytes(&self) -> usize {
        match &self.policy {
            None => self.shared.config.max_header_bytes,
            Some(policy) => policy.max_header_bytes,
        }
    }

    /// Whether rate-limited routes answer with `x-ratelimit-*` headers: yes, unless the
    /// socket's ClientTrafficPolicy sets `headers.disableRateLimitHeaders`.
    pub(crate) fn rate_limit_headers(&self) -> bool {
        !self
            .policy
            .as_ref()
            .is_some_and(|p| p.policy.disable_rate_limit_headers)
    }

    pub(crate) fn scheme(&self) -> RedirectScheme {
        if self.tls {
            RedirectScheme::Https
        } else {
            RedirectScheme::Http
        }
    }
}

/// The X-Forwarded-For value for a client address (IPv4-mapped IPv6 shown as IPv4). Computed
/// once per connection, not per request.
pub(crate) fn client_ip_value(client_ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(client_ip.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}
