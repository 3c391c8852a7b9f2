//! The data plane: binds the sockets the live routing [`Snapshot`](weir_snapshot::Snapshot)
//! asks for, accepts HTTP/1.1, HTTP/2 (h2c prior knowledge) and TLS connections, and routes
//! every request from the snapshot it loaded when the request started.
//!
//! This crate owns sockets, connections, the request pipeline and the upstream clients. It
//! must not build or change routing state: it only reads the [`SnapshotHandle`] the control
//! plane swaps, and it never sees Kubernetes types.
//!
//! A request moves through named stages, each a plain function in [`request`]:
//! route (socket → listener by Host → route entry) → filters (rule, then backend) → pick
//! backend (weighted) → forward (pooled client, endpoint fallbacks on connect errors) → log
//! (metrics and a debug line). Errors stop the pipeline and become a response in one place
//! ([`ProxyError::classify`]).

mod access_log;
mod body;
mod cache;
mod client_policy;
mod compress;
mod conn;
mod conn_guard;
mod error;
mod ext_auth;
mod ext_proc;
mod fault;
mod filter;
mod grpc_stream;
mod inference;
mod listener;
mod log_limit;
mod metrics;
mod mirror;
mod model_name;
mod outbound;
mod passthrough;
pub mod proxy_protocol;
mod rate_limit;
mod request;
mod security;
pub mod session;
mod stage;
mod state;
mod tls;
mod trace;
mod udp;
mod upstream;
mod workers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use weir_snapshot::SnapshotHandle;

pub use conn_guard::default_max_connections;
pub use error::{AuthScheme, BindError, ConnectError, ProxyError};
pub use log_limit::LogLimit;
pub use trace::{OtlpProtocol, TraceConfig};

use crate::listener::Sockets;
use crate::metrics::Metrics;
pub use crate::rate_limit::global::GlobalConfig as GlobalRateLimitConfig;
use crate::upstream::Clients;
pub use crate::upstream::UpstreamLimits;
pub use security::parse_pem_certs;
pub use workers::enter as enter_worker;

/// Process-wide proxy settings (from the command line).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Default bind address, for sockets whose configured address is `None`.
    pub bind: IpAddr,
    /// Added to every configured port when binding (so an unprivileged process can serve
    /// listeners configured on 80/443). The configured port stays what routing and redirects
    /// see.
    pub port_offset: u16,
    /// Grace for in-flight requests on shutdown and on sockets a new snapshot dropped.
    pub drain_timeout: Duration,
    /// Requests whose header section is larger get 431.
    pub max_header_bytes: usize,
    /// A client connection with no request in flight that moves no byte for this long is
    /// closed (see `conn_guard`).
    pub idle_timeout: Duration,
    /// Client connections open at once across all sockets; more are closed on accept.
    pub max_connections: usize,
    /// How long a backend may take to start its response when the route sets no timeout
    /// (504 after it); `None`: no limit.
    pub upstream_timeout: Option<Duration>,
    /// Upstream HTTP/1.1 connections per endpoint, and requests that may queue for one.
    pub upstream_limits: UpstreamLimits,
    /// The fraction of requests written to the access log (JSON lines on stdout): 1 logs
    /// every request, 0 turns the access log off.
    pub access_log_sample: f64,
    /// OpenTelemetry tracing (`--otlp-endpoint`); `None`: off, and free.
    pub tracing: Option<TraceConfig>,
    /// A UDP flow (datagrams from one client address, to one endpoint) ends after this long
    /// without a datagram either way (`udp.rs`).
    pub udp_flow_idle_timeout: Duration,
    /// UDP flows open at once across all UDP sockets; datagrams of new flows beyond it are
    /// dropped and counted.
    pub udp_max_flows: usize,
    /// The zone Weir runs in (`--zone`, `WEIR_ZONE`), for BackendTrafficPolicy
    /// `loadBalancer.zoneAware`; `None`: unknown, no zone preference.
    pub zone: Option<Arc<str>>,
    /// The key session values are sealed with (`session.rs`); `None`: a random one, so
    /// sessions last as long as this process (replicas sharing sessions need one key).
    pub session_key: Option<Arc<session::SessionKey>>,
    /// The Redis global rate limits count in (`--rate-limit-redis`); `None`: no global rate
    /// limits (translation refuses policies with them).
    pub rate_limit: Option<GlobalRateLimitConfig>,
    /// `--rate-limit-replicas`: the replicas a local rate limit is split across (each
    /// admits `⌈requests / N⌉` per unit); 1: each replica admits the whole limit.
    pub rate_limit_replicas: u32,
    /// Certificate authorities trusted for `https` SecurityPolicy `remoteJWKS.uri`s, beside
    /// the public ones (webpki-roots): PEM, from `--jwks-ca` ([`parse_pem_certs`]).
    pub jwks_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Per-core mode (`--runtime per-core`, `workers.rs`): the worker runtimes, each
    /// accepting on its own `SO_REUSEPORT` socket of every TCP listener port with upstream
    /// pools of its own; runtime `i`'s thread must have called [`enter_worker`]`(i)`. Empty:
    /// one socket per port, served on the runtime that calls [`Proxy::sync_listeners`].
    pub workers: Vec<tokio::runtime::Handle>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([0, 0, 0, 0]),
            port_offset: 0,
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: conn_guard::default_max_connections(),
            upstream_timeout: Some(Duration::from_secs(60)),
            upstream_limits: UpstreamLimits::default(),
            access_log_sample: 1.0,
            tracing: None,
            udp_flow_idle_timeout: Duration::from_secs(30),
            udp_max_flows: 16_384,
            zone: None,
            session_key: None,
            rate_limit: None,
            rate_limit_replicas: 1,
            jwks_ca: Vec::new(),
            workers: Vec::new(),
        }
    }
}

/// State every connection and request shares. Immutable after [`Proxy::new`].
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) handle: Arc<SnapshotHandle>,
    pub(crate) metrics: Metrics,
    pub(crate) clients: Clients,
    pub(crate) server: auto::Builder<StreamExecutor>,
    pub(crate) tls_provider: Arc<rustls::crypto::CryptoProvider>,
    pub(crate) connections: conn_guard::ConnectionCap,
    pub(crate) access_log: Option<access_log::AccessLog>,
    /// What each socket's ClientTrafficPolicy built (server, TLS, connection counter), by
    /// (socket, policy id): survives swaps that keep the policy (`client_policy.rs`).
    pub(crate) client_policies:
        state::StateRegistry<(conn::SocketKey, u64), client_policy::SocketPolicy>,
    /// BackendTrafficPolicy circuit breakers' counters, by policy id: survive swaps that
    /// keep the policy (`upstream/retry.rs`).
    pub(crate) breakers: state::StateRegistry<u64, upstream::Breaker>,
    /// BackendTrafficPolicy retry budgets, by policy id (as the breakers).
    pub(crate) retry_budgets: state::StateRegistry<u64, upstream::Budget>,
    /// BackendTrafficPolicy response caches, by policy id (`cache.rs`): survive swaps that
    /// keep the policy; a changed or removed policy drops its entries.
    pub(crate) caches: state::StateRegistry<u64, cache::Cache>,
    /// BackendTrafficPolicy load balancers by (policy id, upstream id), and per-endpoint
    /// state (in-flight requests, first seen): survive swaps (`upstream/balance.rs`).
    pub(crate) balancers: upstream::Balancers,
    /// `None` unless `--otlp-endpoint`: a request checks this once.
    pub(crate) tracing: Option<trace::Tracing>,
    /// Seals and opens session values (`session.rs`).
    pub(crate) session_key: Arc<session::SessionKey>,
    /// Ext auth gRPC channels, by configuration id: survive swaps (`ext_auth/grpc.rs`).
    pub(crate) ext_auth: ext_auth::ExtAuthClients,
    /// SecurityPolicy runtime state: verification caches and remote key sets, by policy id
    /// (`security/remote.rs`).
    pub(crate) security: security::SecurityState,
    /// BackendTrafficPolicy local rate limits' token buckets (`rate_limit.rs`): survive
    /// swaps that keep the policy.
    pub(crate) local_limits: rate_limit::LocalLimits,
    /// Global rate limits' Redis (`rate_limit/global.rs`), with `--rate-limit-redis`.
    pub(crate) global_limits: Option<rate_limit::global::GlobalLimits>,
    /// InferencePool endpoint pickers' (and ext_proc processors') gRPC connections, by address (`inference.rs`).
    pub(crate) pickers: inference::Pickers,
}

/// The data plane. Create it once, call [`Proxy::sync_listeners`] after every snapshot swap,
/// and [`Proxy::shutdown`] at exit.
pub struct Proxy {
    shared: Arc<Shared>,
    sockets: Sockets,
    /// The UDP sockets (UDPRoutes).
    udp: udp::UdpSockets,
    /// Gives freed memory back after connections close (`conn_guard`); started with the
    /// first sockets, stopped on shutdown.
    trimmer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    /// Build the proxy and register its metrics on `registry`. Opens no socket yet.
    pub fn new(
        config: ProxyConfig,
        snapshot: Arc<SnapshotHandle>,
        registry: &prometheus::Registry,
    ) -> Result<Proxy, ProxyError> {
        let metrics = Metrics::register(registry)?;
        let server = server_builder(&config, None);
        let connections = conn_guard::ConnectionCap::new(config.max_connections);
        let access_log = if config.access_log_sample > 0.0 {
            Some(
                access_log::AccessLog::start(
                    config.access_log_sample,
                    metrics.access_log_dropped.clone(),
                )
                .map_err(ProxyError::AccessLog)?,
            )
        } else {
            None
        };
        let tracing = match &config.tracing {
            Some(trace) => Some(
                trace::Tracing::start(trace, metrics.trace_spans_dropped.clone())
                    .map_err(ProxyError::Tracing)?,
            ),
            None => None,
        };
        // The upstream endpoint goes into the access log line and the span.
        let clients = Clients::new(
            config.upstream_limits,
            access_log.is_some() || tracing.is_some(),
            config.workers.len(),
        );
        let zone = config.zone.clone();
        let session_key = match &config.session_key {
            Some(key) => key.clone(),
            None => Arc::new(session::SessionKey::random().map_err(ProxyError::SessionKey)?),
        };
        clients.health.register(registry)?;
        let global_limits = match &config.rate_limit {
            Some(c) => Some(
                rate_limit::global::GlobalLimits::new(c).map_err(ProxyError::RateLimitConfig)?,
            ),
            None => None,
        };
        let tls_provider = Arc::new(rustls::crypto::ring::default_provider());
        let security = security::SecurityState::new(
            // https key set fetches: the public roots plus `--jwks-ca`.
            outbound::client_tls(tls_provider.clone(), true, &config.jwks_ca)
                .map_err(ProxyError::JwksCa)?,
        );
        let shared = Arc::new(Shared {
            local_limits: rate_limit::LocalLimits::new(config.rate_limit_replicas),
            global_limits,
            session_key,
            connections,
            config,
            handle: snapshot,
            metrics,
            clients,
            access_log,
            tracing,
            server,
            client_policies: state::StateRegistry::default(),
            breakers: state::StateRegistry::default(),
            pickers: inference::Pickers::default(),
            retry_budgets: state::StateRegistry::default(),
            caches: state::StateRegistry::default(),
            ext_auth: ext_auth::ExtAuthClients::default(),
            balancers: upstream::Balancers::new(zone),
            tls_provider,
            security,
        });
        registry.register(Box::new(shared.balancers.in_flight_metric()?))?;
        Ok(Proxy {
            sockets: Sockets::new(shared.clone()),
            udp: udp::UdpSockets::new(shared.clone()),
            shared,
            trimmer: std::sync::Mutex::new(None),
        })
    }

    /// Open sockets the current snapshot needs that are not open yet, and close (drain) those
    /// it no longer has. Returns one error per socket that could not be bound (the rest keep
    /// working). Idempotent; call it after every swap.
    pub async fn sync_listeners(&self) -> Vec<BindError> {
        self.trimmer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(|| {
                let shared = self.shared.clone();
                tokio::spawn(conn_guard::release_memory_after_drops(move || {
                    shared.connections.open()
                }))
            });
        let snapshot = self.shared.handle.load_full();
        // Policy state whose policy the snapshot no longer has on that socket goes.
        self.shared.client_policies.retain(|(key, id)| {
            snapshot
                .socket(key.0, key.1)
                .and_then(|s| s.client_policy.as_ref())
                .is_some_and(|p| p.id == *id)
        });
        // Breakers whose policy no route of the snapshot has any more go.
        let mut live = std::collections::HashSet::new();
        let mut live_auth = std::collections::HashSet::new();
        // And endpoint pickers no pool of the snapshot names.
        let mut pickers = std::collections::HashSet::new();
        for socket in snapshot.sockets.iter() {
            for listener in socket.listeners.iter() {
                for entry in listener.routes.values() {
                    if let Some(p) = &entry.action.policy {
                        live.insert(p.id);
                    }
                    if let Some(a) = &entry.action.ext_auth {
                        live_auth.insert(a.id);
                    }
                    // ExtensionPolicy processors share the pickers' channels.
                    if let Some(x) = &entry.action.ext_proc {
                        pickers.extend(ext_proc::addresses(x));
                    }
                    for b in entry.action.backends.iter() {
                        if let weir_snapshot::BackendTarget::Upstream(u) = &b.target {
                            if let Some(weir_snapshot::PickerState::Ready(p)) =
                                u.inference.as_deref().map(|i| &i.picker)
                            {
                                pickers.extend(p.endpoints.iter().copied());
                            }
                        }
                    }
                }
            }
        }
        // Ext auth channels of configurations no route has any more close.
        self.shared.ext_auth.retain(&live_auth);
        self.shared.breakers.retain(|id| live.contains(id));
        self.shared.pickers.retain(|a| pickers.contains(a));
        // Endpoint health: probers for the endpoints routes with a health check reach.
        let clients = &self.shared.clients;
        clients
            .health
            .reconcile(&snapshot, &self.shared.metrics, clients);
        self.shared.retry_budgets.retain(|id| live.contains(id));
        cache::sync(&self.shared.caches, &snapshot);
        self.shared.local_limits.retain_live(&snapshot);
        self.shared.balancers.sync(&snapshot);
        self.shared.security.sync(&self.shared, &snapshot);
        let mut errors = self.sockets.sync(&snapshot).await;
        errors.extend(self.udp.sync(&snapshot).await);
        errors
    }

    /// Split local rate limits across `replicas` from now on (at least 1): what
    /// `--rate-limit-replicas` set at the start, or the ready Pods behind
    /// `--gateway-service` as they change. A change restarts the local limits' windows.
    /// Whether the count changed.
    pub fn set_rate_limit_replicas(&self, replicas: u32) -> bool {
        self.shared.local_limits.set_replicas(replicas)
    }

    /// Currently bound sockets: (address as configured: `None` = default bind, configured
    /// port, actual local address).
    pub fn bound(&self) -> Vec<(Option<IpAddr>, u16, SocketAddr)> {
        self.sockets.bound()
    }

    /// Currently bound UDP sockets (UDP listeners), as [`Proxy::bound`].
    pub fn bound_udp(&self) -> Vec<(Option<IpAddr>, u16, SocketAddr)> {
        self.udp.bound()
    }

    /// Stop accepting, let in-flight requests finish within the drain timeout, then return.
    pub async fn shutdown(&self) {
        self.sockets.shutdown().await;
        if let Some(tracing) = &self.shared.tracing {
            // What the drained requests traced goes out before the process exits.
            tracing.shutdown(Duration::from_secs(5)).await;
        }
        self.udp.shutdown().await;
        self.shared.clients.health.stop();
        self.stop_trimmer();
    }

    fn stop_trimmer(&self) {
        let trimmer = self
            .trimmer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = trimmer {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_trimmer();
    }
}

/// The HTTP server for client connections: from the process flags, tuned by a socket's
/// ClientTrafficPolicy when it has one (`client_policy.rs`; built once per socket policy).
pub(crate) fn server_builder(
    config: &ProxyConfig,
    policy: Option<&weir_snapshot::ClientPolicy>,
) -> auto::Builder<StreamExecutor> {
    let mut builder = auto::Builder::new(StreamExecutor);
    let max_header_bytes = policy
        .and_then(|p| p.max_request_header_bytes)
        .unwrap_or(config.max_header_bytes);
    let idle_timeout = policy
        .and_then(|p| p.http_idle_timeout)
        .unwrap_or(config.idle_timeout);
    let buffer_limit = policy
        .and_then(|p| p.buffer_limit)
        .and_then(|b| usize::try_from(b).ok());
    // hyper refuses a read buffer below 8 KiB; the request stage enforces smaller limits.
    let read_buffer = buffer_limit
        .map_or(max_header_bytes, |b| b.min(max_header_bytes))
        .max(8 * 1024);
    // hyper's header read timer also runs while a keep-alive connection waits for its next
    // request, so at a fixed 30 s it closed idle keep-alive connections at half the default
    // `--idle-timeout`. A request head gets as long as an idle connection (nginx's
    // client_header_timeout is 60 s), and never less than the 30 s it had. A policy's
    // `requestReceivedTimeout` sets it (so on such a socket an idle HTTP/1 keep-alive
    // connection is closed after the shorter of it and the idle timeout; HTTP/2 has no
    // header timer in hyper, its streams get the body deadline only).
    let header_timeout = policy
        .and_then(|p| p.request_received_timeout)
        .unwrap_or_else(|| idle_timeout.max(Duration::from_secs(30)));
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(read_buffer);
    let mut h2 = builder.http2();
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    let settings = policy.and_then(|p| p.http2).unwrap_or_default();
    if let Some(streams) = settings.max_concurrent_streams {
        h2.max_concurrent_streams(streams);
    }
    // `bufferLimit` caps both windows; HTTP/2 allows at most 2^31 - 1 (h2 asserts it).
    let cap = |window: Option<u32>| {
        match (window, policy.and_then(|p| p.buffer_limit)) {
            (Some(w), Some(b)) => Some(w.min(b)),
            (w, b) => w.or(b),
        }
        .map(|w| w.min(0x7fff_ffff))
    };
    if let Some(window) = cap(settings.initial_stream_window_size) {
        h2.initial_stream_window_size(window);
    }
    if let Some(window) = cap(settings.initial_connection_window_size) {
        h2.initial_connection_window_size(window);
    }
    builder
}

/// Where hyper's HTTP/2 server runs each stream: a task of its own, with the stream's future
/// boxed. The future holds the whole request pipeline (about 5 KB), and tokio moves a task's
/// future by value several times between spawn and completion; boxed, those moves are of a
/// pointer, and the one copy is into the box (callgrind: most of the h2c path's memcpy).
#[derive(Clone, Copy)]
pub(crate) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}
