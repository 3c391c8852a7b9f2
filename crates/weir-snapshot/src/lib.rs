//! The routing snapshot: one immutable value that holds everything the data plane needs to
//! route a request, compiled for lookup. The translator builds it off the hot path; the proxy
//! loads it once per request (or connection) from an `ArcSwap` and never sees Kubernetes types.
//!
//! Shape, following a request: [`Snapshot`] → [`SocketConfig`] (one per bound address/port)
//! → [`Listener`] chosen by Host via a [`HostIndex`] → [`RouteEntry`] candidates in precedence
//! order via the listener's route [`HostIndex`] → first whose [`RequestMatch`] matches →
//! its [`RouteAction`] (filters, weighted backends).

pub mod backend;
pub mod backend_policy;
pub mod balance;
pub mod cache;
pub mod client_auth;
pub mod client_policy;
pub mod compression;
pub mod ext_auth;
pub mod ext_proc;
pub mod filter;
pub mod health;
pub mod host_index;
pub mod inference;
pub mod passthrough;
pub mod path;
pub mod rate_limit;
pub mod route;
pub mod security;
pub mod session;
pub mod traffic;

use std::net::IpAddr;
use std::sync::Arc;

pub use backend::{
    AppProtocol, Backend, BackendTarget, BackendTls, ClientCert, Endpoint, EndpointZone,
    SubjectAltName, Upstream, UpstreamTls,
};
pub use backend_policy::{BackendPolicy, CircuitBreaker, RetryPolicy, RetryTriggers};
pub use balance::{HashCookie, HashOn, LbKind, LoadBalancer, PreferLocal};
pub use cache::ResponseCache;
pub use client_auth::{ClientAuth, ClientAuthMode};
pub use client_policy::{
    Cidr, ClientIpDetection, ClientPolicy, Http2Settings, ProxyProtocol, RequestIdMode,
    TlsSettings, TlsVersion,
};
pub use compression::{Coding, Compression, Compressor};
pub use ext_auth::{ExtAuth, ExtAuthProtocol};
pub use ext_proc::{BodyMode, ExtProc, ExtProcessor};
pub use filter::{
    Cors, CorsList, Filter, HeaderModifier, Mirror, MirrorSample, OriginPattern, PathModifier,
    Redirect, RedirectScheme, UrlRewrite,
};
pub use health::{ActiveHealth, HealthCheck, PassiveHealth, Probe};
pub use host_index::{HostIndex, HostPattern};
pub use inference::{InferencePool, Picker, PickerState};
pub use passthrough::{Passthrough, TlsRouteEntry};
pub use rate_limit::{
    ClientSelector, HeaderSelector, Limit, RateLimit, RateLimitRule, SourceSelector,
};
pub use route::{
    HeaderMatch, MethodMatch, PathMatch, QueryMatch, RequestMatch, RequestView, RouteAction,
    RouteEntry, RouteRank, RouteRef, StringMatch, Timeouts,
};
pub use security::{
    ApiKeyAuth, Authorization, AuthorizationRule, BasicAuth, ClaimMatch, JwtAuth, JwtKey, JwtKeys,
    JwtPrincipal, JwtProvider, KeySource, Redacted, Security,
};
pub use session::{SessionCarrier, SessionPersistence};
pub use traffic::{
    AbortStatus, FaultAbort, FaultDelay, FaultInjection, RetryBudget, Share, UpstreamConnection,
};

/// The swappable holder of the live snapshot: the control plane stores a new `Arc<Snapshot>`,
/// the data plane loads one per request or connection and keeps it to the end.
pub type SnapshotHandle = arc_swap::ArcSwap<Snapshot>;

/// The whole routing state at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one with every snapshot that is swapped in.
    pub generation: u64,
    /// One entry per socket to serve, sorted by [`SocketConfig::key`], unique by it.
    pub sockets: Arc<[SocketConfig]>,
}

impl Snapshot {
    /// The socket config by its [`SocketConfig::key`]: an address (`None` = the default bind
    /// address) and the configured port, or the exact port for sockets with a `bind_port`.
    pub fn socket(&self, address: Option<IpAddr>, port: u16) -> Option<&SocketConfig> {
        self.sockets
            .iter()
            .find(|s| !s.is_udp() && s.key() == (address, port))
    }

    /// The UDP socket config (UDP listeners) by its key, as [`Snapshot::socket`]: a UDP and
    /// a TCP socket may share an address and port.
    pub fn udp_socket(&self, address: Option<IpAddr>, port: u16) -> Option<&SocketConfig> {
        self.sockets
            .iter()
            .find(|s| s.is_udp() && s.key() == (address, port))
    }
}

/// What arrives on one socket: the Gateway listeners (possibly of several Gateways) that share
/// this address and port.
#[derive(Debug)]
pub struct SocketConfig {
    /// Address to bind; `None` means the process-wide bind address (`--bind`).
    pub address: Option<IpAddr>,
    /// The port as configured on the listeners: what redirects and listener semantics use.
    /// Without `bind_port` the proxy binds it plus any port offset.
    pub port: u16,
    /// An exact port to bind instead of `port` + offset (Kubernetes mode with one Service
    /// per Gateway: the pod port the Gateway's Service targets for this listener port).
    pub bind_port: Option<u16>,
    /// Whether connections on this socket terminate TLS.
    pub tls: bool,
    /// The listeners sharing this socket.
    pub listeners: Arc<[Listener]>,
    /// Listener choice by request hostname: indexes into `listeners`. For a Host that no
    /// listener hostname matches, lookup yields nothing and the request gets 404.
    pub listener_index: HostIndex<usize>,
    /// Certificates by SNI (TLS sockets only): the first candidate whose pattern matches the
    /// server name serves the handshake. `default_cert` serves clients that send no SNI.
    pub certificates: HostIndex<Arc<rustls::sign::CertifiedKey>>,
    pub default_cert: Option<Arc<rustls::sign::CertifiedKey>>,
    /// Sockets of TLS listeners (TLSRoutes): connections are routed by SNI and spliced as a
    /// byte stream to the route's backend. With `tls` false (mode Passthrough) the SNI is read
    /// from the ClientHello and the connection is spliced as it is; with `tls` true (mode
    /// Terminate) TLS is terminated first with `certificates`. `None` on HTTP and HTTPS
    /// sockets.
    pub passthrough: Option<Passthrough>,
    /// The ClientTrafficPolicy in effect for connections on this socket (see
    /// [`client_policy`]); `None`: the process defaults.
    pub client_policy: Option<Arc<ClientPolicy>>,
}

impl SocketConfig {
    /// What identifies the socket: (address, `bind_port` if set, else `port`). The
    /// translator keeps keys unique within a snapshot.
    /// Whether this is a UDP socket (UDP listeners and their UDPRoutes).
    pub fn is_udp(&self) -> bool {
        self.passthrough.as_ref().is_some_and(|p| p.udp)
    }

    pub fn key(&self) -> (Option<IpAddr>, u16) {
        (self.address, self.bind_port.unwrap_or(self.port))
    }

    /// The listener a request with this Host (lowercase, without port) belongs to.
    pub fn listener_for_host(&self, host: &str) -> Option<&Listener> {
        self.listener_position(host)
            .and_then(|i| self.listeners.get(i))
    }

    /// The index in `listeners` of the listener a Host (or an SNI server name) belongs to.
    pub fn listener_position(&self, host: &str) -> Option<usize> {
        self.listener_index.candidates(host).next().copied()
    }

    /// Whether any listener here validates client certificates (the proxy then picks the
    /// TLS config from the ClientHello's SNI).
    pub fn has_client_auth(&self) -> bool {
        self.listeners.iter().any(|l| l.client_auth.is_some())
    }

    /// The client validation a handshake with this SNI gets: its listener's. Without SNI, or
    /// for a name no listener takes, the strictest on the socket (a valid-only one before a
    /// fallback one), so leaving out the SNI never weakens validation.
    pub fn client_auth_for(&self, server_name: Option<&str>) -> Option<&Arc<ClientAuth>> {
        if let Some(l) = server_name.and_then(|n| self.listener_position(n)) {
            return self.listeners.get(l).and_then(|l| l.client_auth.as_ref());
        }
        let mut all = self.listeners.iter().filter_map(|l| l.client_auth.as_ref());
        let first = all.clone().next();
        all.find(|a| a.mode == ClientAuthMode::AllowValidOnly)
            .or(first)
    }

    /// The certificate for an SNI server name (or the default when none is given).
    pub fn certificate_for(
        &self,
        server_name: Option<&str>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match server_name {
            Some(name) => self
                .certificates
                .candidates(name)
                .next()
                .cloned()
                .or_else(|| self.default_cert.clone()),
            None => self.default_cert.clone(),
        }
    }
}

/// One Gateway listener, compiled.
#[derive(Debug)]
pub struct Listener {
    /// `namespace/gateway` for metrics and logs.
    pub gateway: Arc<str>,
    /// The listener's section name.
    pub name: Arc<str>,
    /// The listener's hostname, if any.
    pub hostname: Option<HostPattern>,
    /// Routes attached to this listener, indexed by the (listener ∩ route) hostnames.
    pub routes: HostIndex<Arc<RouteEntry>>,
    /// HTTPS listeners with frontend validation (Gateway `spec.tls.frontend`): the client
    /// certificate the handshake asks for. Shared by the listeners of one Gateway port.
    pub client_auth: Option<Arc<ClientAuth>>,
    /// The certificate the listener's Gateway presents to TLS backends, if it has one.
    pub backend_client_cert: Option<Arc<ClientCert>>,
}

impl Listener {
    /// Route candidates for a Host, best first (see [`HostIndex::candidates`]).
    pub fn route_candidates<'a, 'h>(
        &'a self,
        host: &'h str,
    ) -> impl Iterator<Item = &'a Arc<RouteEntry>> + use<'a, 'h> {
        self.routes.candidates(host)
    }

    /// The first route entry that matches the request.
    pub fn find_route(&self, host: &str, req: &RequestView<'_>) -> Option<&Arc<RouteEntry>> {
        self.route_candidates(host).find(|e| e.matcher.matches(req))
    }
}
