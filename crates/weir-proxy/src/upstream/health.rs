//! Endpoint health under a BackendTrafficPolicy `healthCheck`: passive ejection (outlier
//! detection from the outcomes of real requests), active probes (HTTP, TCP, gRPC) and the
//! panic threshold.
//!
//! State is kept **per endpoint address**, not per route or policy: an endpoint ejected by
//! one route's failures is ejected for every route whose policy has a health check, and one
//! prober runs per (endpoint, probe spec) however many routes and policies share it. It lives
//! in a [`HealthRegistry`] beside the snapshot (never inside it), is reconciled after every
//! snapshot swap ([`HealthRegistry::reconcile`]: probers for new endpoints start, those no
//! snapshot references any more stop and their state is dropped) and survives swaps that
//! keep the endpoint.
//!
//! Decisions:
//! - Health applies to routes whose policy has a `healthCheck`; routes without one ignore it
//!   (and pay nothing: no lookup, lock or atomic on their request path).
//! - A new endpoint under an active check starts **unhealthy until its first probe passes**
//!   (Envoy's behaviour; the first probe is sent at once, and one pass is enough at start).
//!   Until then the panic threshold keeps an upstream whose endpoints are all new serving.
//!   A changed probe (an edited policy) starts from the endpoint's current verdict: an
//!   endpoint passing the old probe stays in service until the new one fails it.
//! - The passive `interval` forgives: an endpoint that stayed in service for `interval`
//!   after an ejection has one past ejection forgotten, so its next ejection is shorter.
//! - `maxEjectionPercent` counts the upstream's (Service port's) endpoints; one endpoint may
//!   always be ejected (as in Envoy).
//! - Local-origin failures are connect errors, a request sent without a response (a reset)
//!   and an attempt past its per-try (or `timeouts.backendRequest`) timeout; without
//!   `splitExternalLocalOriginErrors` they count as 5xx and gateway errors. The route's
//!   whole-request timeout is not counted.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{opts, IntCounterVec, IntGaugeVec, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_snapshot::{
    ActiveHealth, AppProtocol, BackendTarget, HealthCheck, PassiveHealth, Probe, Snapshot, Upstream,
};

use super::{Clients, TlsConnect};
use crate::metrics::Metrics;

/// What one attempt on an endpoint came to, for passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response with this status.
    Status(u16),
    /// No connection, or the request was sent and no response came (local origin).
    LocalFailure,
}

/// Health state of every endpoint that a route with a health check reaches.
pub(crate) struct HealthRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointHealth>>>,
    /// One per endpoint and probe (and transport), however many routes share it.
    probers: Mutex<HashMap<ProberKey, Prober>>,
    /// The current snapshot's upstreams (by address of the `Upstream`, probe and TLS
    /// identity), their endpoints' state in endpoint order: one lock-free lookup per
    /// request.
    views: ArcSwap<crate::state::IdMap<ViewKey, Arc<UpstreamView>>>,
    /// Ejection decisions, one at a time (so `maxEjectionPercent` holds under races).
    eject_lock: Mutex<()>,
}

/// (endpoint, probe id, h2c, TLS identity or 0).
type ProberKey = (SocketAddr, u64, bool, u64);

/// (address of the `Upstream`, probe id, TLS identity or 0).
type ViewKey = (usize, u64, u64);

/// One endpoint's passive state.
struct EndpointHealth {
    five_xx: AtomicU32,
    gateway: AtomicU32,
    local: AtomicU32,
    /// Nanoseconds since the registry's epoch when the last ejection ends (0: never
    /// ejected). In the past: in service again.
    ejected_until: AtomicU64,
    /// Times ejected (less the forgiven ones); changed under `eject_lock`.
    ejections: AtomicU32,
}

impl EndpointHealth {
    fn new() -> Self {
        Self {
            five_xx: AtomicU32::new(0),
            gateway: AtomicU32::new(0),
            local: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// One prober's verdict, read by requests.
struct ProbeState {
    healthy: AtomicBool,
}

/// A running prober: stopped when dropped.
struct Prober {
    state: Arc<ProbeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream's endpoints' state, in the order of `Upstream::endpoints`.
pub(crate) struct UpstreamView {
    name: Arc<str>,
    /// `Upstream::id` (a hash of its name and endpoints, in order) of the upstream it was
    /// made for: a request checks it in O(1) instead of comparing every endpoint.
    id: u64,
    slots: Box<[Slot]>,
}

struct Slot {
    addr: SocketAddr,
    health: Arc<EndpointHealth>,
    /// The active probe's verdict (`None`: no active check).
    probe: Option<Arc<ProbeState>>,
}

impl Slot {
    fn healthy(&self, now: u64) -> bool {
        !self.health.ejected(now)
            && self
                .probe
                .as_ref()
                .is_none_or(|p| p.healthy.load(Ordering::Relaxed))
    }
}

impl UpstreamView {
    fn matches(&self, upstream: &Upstream) -> bool {
        self.id == upstream.id && self.slots.len() == upstream.endpoints.len()
    }

    fn healthy(&self, now: u64) -> usize {
        self.slots.iter().filter(|s| s.healthy(now)).count()
    }
}

/// One request's view of its upstream's health (routes whose policy has a `healthCheck`).
pub(crate) struct HealthGate<'a> {
    inner: &'a Inner,
    metrics: &'a Metrics,
    view: Arc<UpstreamView>,
    check: &'a HealthCheck,
    /// The clock, read once per request and only when an endpoint has ever been ejected
    /// (0: not read yet).
    now: AtomicU64,
    /// Fewer than `panicThreshold` percent healthy, so every endpoint is eligible: worked
    /// out (over all endpoints) only when the request meets an endpoint that is not healthy
    /// (0: not yet, 1: no, 2: yes).
    panic: AtomicU8,
    /// The endpoint of the attempt under way (`usize::MAX`: none yet), for timeouts.
    current: AtomicUsize,
}

impl HealthGate<'_> {
    /// Whether endpoint `i` of the upstream may get this request.
    pub(crate) fn eligible(&self, i: usize) -> bool {
        self.view.slots.get(i).is_some_and(|s| self.healthy(s)) || self.panicking()
    }

    fn now(&self) -> u64 {
        match self.now.load(Ordering::Relaxed) {
            0 => {
                let now = self.inner.now();
                self.now.store(now, Ordering::Relaxed);
                now
            }
            now => now,
        }
    }

    /// [`Slot::healthy`], reading the clock only for an endpoint ejected at some time.
    fn healthy(&self, slot: &Slot) -> bool {
        let until = slot.health.ejected_until.load(Ordering::Relaxed);
        (until == 0 || until <= self.now())
            && slot
                .probe
                .as_ref()
                .is_none_or(|p| p.healthy.load(Ordering::Relaxed))
    }

    fn panicking(&self) -> bool {
        match self.panic.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let n = self.view.slots.len();
                let healthy = self.view.slots.iter().filter(|s| self.healthy(s)).count();
                let panic = n > 0 && healthy * 100 < usize::from(self.check.panic_threshold) * n;
                self.panic
                    .store(if panic { 2 } else { 1 }, Ordering::Relaxed);
                panic
            }
        }
    }

    /// Feed an attempt's outcome on endpoint `i` to passive health.
    pub(crate) fn outcome(&self, i: usize, outcome: Outcome) {
        let (Some(passive), Some(slot)) = (&self.check.passive, self.view.slots.get(i)) else {
            return;
        };
        self.inner
            .record(self.metrics, &self.view, slot, passive, outcome);
    }

    /// An attempt on endpoint `i` starts.
    pub(crate) fn started(&self, i: usize) {
        self.current.store(i, Ordering::Relaxed);
    }

    /// The attempt under way ran out of time (per-try or backend request timeout): a
    /// local-origin failure of its endpoint.
    pub(crate) fn timed_out(&self) {
        let i = self.current.load(Ordering::Relaxed);
        if i != usize::MAX {
            self.outcome(i, Outcome::LocalFailure);
        }
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                endpoints: Mutex::new(HashMap::new()),
                probers: Mutex::new(HashMap::new()),
                views: ArcSwap::from_pointee(crate::state::IdMap::default()),
                eject_lock: Mutex::new(()),
            }),
        }
    }
}

impl HealthRegistry {
    /// Register `weir_endpoint_healthy{upstream}` on `registry` (computed when scraped).
    pub(crate) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let gauge = IntGaugeVec::new(
            opts!(
                "weir_endpoint_healthy",
                "Endpoints in service (not ejected, passing their active probe) of upstreams \
                 under a BackendTrafficPolicy healthCheck."
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(HealthyGauge {
            gauge,
            inner: Arc::downgrade(&self.inner),
        }))
    }

    /// The gate of one request to `upstream` under `check`.
    /// `tls`: the identity of the TLS settings the request reaches the upstream with (0:
    /// cleartext).
    pub(crate) fn gate<'a>(
        &'a self,
        metrics: &'a Metrics,
        upstream: &Upstream,
        check: &'a HealthCheck,
        tls: u64,
    ) -> HealthGate<'a> {
        let inner = &*self.inner;
        let active = check.active.as_ref().map_or(0, |a| a.id());
        let key = (std::ptr::from_ref(upstream) as usize, active, tls);
        let view = inner
            .views
            .load()
            .get(&key)
            .filter(|v| v.matches(upstream))
            .cloned()
            .unwrap_or_else(|| inner.transient_view(upstream, active, tls));
        HealthGate {
            inner,
            metrics,
            view,
            check,
            now: AtomicU64::new(0),
            panic: AtomicU8::new(0),
            current: AtomicUsize::new(usize::MAX),
        }
    }

    /// After a snapshot swap: state and probers for every endpoint a route with a health
    /// check reaches; the others' dropped (their probers stop). Probes of a backend a
    /// BackendTLSPolicy targets go over TLS as the listener's requests do (`clients`).
    pub(crate) fn reconcile(&self, snapshot: &Snapshot, metrics: &Metrics, clients: &Clients) {
        let inner = &*self.inner;
        let mut views: crate::state::IdMap<ViewKey, Arc<UpstreamView>> =
            crate::state::IdMap::default();
        let mut live_endpoints = HashSet::new();
        let mut live_probers = HashSet::new();
        let mut endpoints = inner
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut probers = inner.probers.lock().unwrap_or_else(PoisonError::into_inner);
        // Endpoints that pass a probe now (a changed probe starts from that verdict).
        let passing: HashSet<SocketAddr> = probers
            .iter()
            .filter(|(_, p)| p.state.healthy.load(Ordering::Relaxed))
            .map(|(key, _)| key.0)
            .collect();
        let actions = snapshot
            .sockets
            .iter()
            .flat_map(|s| s.listeners.iter())
            .flat_map(|l| {
                let cert = l.backend_client_cert.as_deref();
                l.routes.values().map(move |entry| (&entry.action, cert))
            });
        for (action, cert) in actions {
            let Some(check) = action
                .policy
                .as_ref()
                .and_then(|p| p.health_check.as_deref())
            else {
                continue;
            };
            let active = check.active.as_ref();
            let active_id = active.map_or(0, |a| a.id());
            for backend in action.backends.iter() {
                let BackendTarget::Upstream(up) = &backend.target else {
                    continue;
                };
                // Invalid TLS settings: requests fail anyway; the probes go in cleartext.
                let tls = clients.tls_for(up, cert).ok().flatten();
                let tls_id = tls.as_ref().map_or(0, |t| t.identity);
                let key = (Arc::as_ptr(up) as usize, active_id, tls_id);
                if views.contains_key(&key) {
                    continue;
                }
                let h2c = up.protocol == AppProtocol::H2c;
                let slots = up
                    .endpoints
                    .iter()
                    .map(|e| {
                        live_endpoints.insert(e.addr);
                        let health = endpoints
                            .entry(e.addr)
                            .or_insert_with(|| Arc::new(EndpointHealth::new()))
                            .clone();
                        let probe = active.map(|a| {
                            live_probers.insert((e.addr, active_id, h2c, tls_id));
                            probers
                                .entry((e.addr, active_id, h2c, tls_id))
                                .or_insert_with(|| {
                                    Prober::start(
                                        e.addr,
                                        passing.contains(&e.addr),
                                        h2c,
                                        tls.as_ref().map(|t| t.connect.clone()),
                                        a.clone(),
                                        up.name.clone(),
                                        metrics.health_probes.clone(),
                                    )
                                })
                                .state
                                .clone()
                        });
                        Slot {
                            addr: e.addr,
                            health,
                            probe,
                        }
                    })
                    .collect();
                views.insert(
                    key,
                    Arc::new(UpstreamView {
                        name: up.name.clone(),
                        id: up.id,
                        slots,
                    }),
                );
            }
        }
        endpoints.retain(|addr, _| live_endpoints.contains(addr));
        probers.retain(|key, _| live_probers.contains(key));
        inner.views.store(Arc::new(views));
    }
}

impl HealthRegistry {
    /// Stop every prober (shutdown).
    pub(crate) fn stop(&self) {
        self.inner
            .views
            .store(Arc::new(crate::state::IdMap::default()));
        self.inner
            .probers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A view for an upstream the last reconcile did not see (a request on a snapshot
    /// swapped in since): known endpoints' state, nothing stored.
    fn transient_view(&self, upstream: &Upstream, active: u64, tls: u64) -> Arc<UpstreamView> {
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let probers = self.probers.lock().unwrap_or_else(PoisonError::into_inner);
        let h2c = upstream.protocol == AppProtocol::H2c;
        let slots = upstream
            .endpoints
            .iter()
            .map(|e| Slot {
                addr: e.addr,
                health: endpoints
                    .get(&e.addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointHealth::new())),
                probe: probers
                    .get(&(e.addr, active, h2c, tls))
                    .map(|p| p.state.clone()),
            })
            .collect();
        Arc::new(UpstreamView {
            name: upstream.name.clone(),
            id: upstream.id,
            slots,
        })
    }

    fn record(
        &self,
        metrics: &Metrics,
        view: &UpstreamView,
        slot: &Slot,
        p: &PassiveHealth,
        outcome: Outcome,
    ) {
        let h = &*slot.health;
        let bump = |a: &AtomicU32| a.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let over = |limit: u32, n: u32| limit > 0 && n >= limit;
        let trip = match outcome {
            Outcome::Status(s) if s >= 500 => {
                let n5 = bump(&h.five_xx);
                let ng = if (502..=504).contains(&s) {
                    bump(&h.gateway)
                } else {
                    clear(&h.gateway);
                    0
                };
                // A response: connecting worked.
                clear(&h.local);
                over(p.consecutive_5xx, n5) || over(p.consecutive_gateway, ng)
            }
            Outcome::Status(_) => {
                clear(&h.five_xx);
                clear(&h.gateway);
                clear(&h.local);
                false
            }
            Outcome::LocalFailure if p.split_external_local_origin_errors => {
                over(p.consecutive_local_origin, bump(&h.local))
            }
            Outcome::LocalFailure => {
                let n5 = bump(&h.five_xx);
                let ng = bump(&h.gateway);
                over(p.consecutive_5xx, n5) || over(p.consecutive_gateway, ng)
            }
        };
        if trip {
            self.eject(metrics, view, slot, p);
        }
    }

    fn eject(&self, metrics: &Metrics, view: &UpstreamView, slot: &Slot, p: &PassiveHealth) {
        let _one_at_a_time = self
            .eject_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.now();
        let h = &*slot.health;
        if h.ejected(now) {
            return;
        }
        let n = view.slots.len();
        let ejected = view.slots.iter().filter(|s| s.health.ejected(now)).count();
        if ejected > 0 && (ejected + 1) * 100 > usize::from(p.max_ejection_percent) * n {
            // At maxEjectionPercent: stays in service (its failures keep counting).
            return;
        }
        let mut times = h.ejections.load(Ordering::Relaxed);
        let back = h.ejected_until.load(Ordering::Relaxed);
        let interval = u64::try_from(p.interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        if times > 0 && back > 0 {
            let forgiven = now.saturating_sub(back) / interval;
            times = times.saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX));
        }
        times = times.saturating_add(1);
        let lasts = p.base_ejection_time.saturating_mul(times);
        let lasts = u64::try_from(lasts.as_nanos()).unwrap_or(u64::MAX);
        h.ejections.store(times, Ordering::Relaxed);
        h.ejected_until
            .store(now.saturating_add(lasts), Ordering::Relaxed);
        clear(&h.five_xx);
        clear(&h.gateway);
        clear(&h.local);
        metrics
            .endpoint_ejections
            .with_label_values(&[&view.name])
            .inc();
        tracing::info!(
            upstream = %view.name,
            endpoint = %slot.addr,
            ejections = times,
            for_ms = Duration::from_nanos(lasts).as_millis() as u64,
            "endpoint ejected by passive health"
        );
    }
}

fn clear(a: &AtomicU32) {
    if a.load(Ordering::Relaxed) != 0 {
        a.store(0, Ordering::Relaxed);
    }
}

/// `weir_endpoint_healthy`, computed from the current views when scraped.
struct HealthyGauge {
    gauge: IntGaugeVec,
    inner: Weak<Inner>,
}

impl Collector for HealthyGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.reset();
        if let Some(inner) = self.inner.upgrade() {
            let now = inner.now();
            let views = inner.views.load();
            let mut seen = HashSet::new();
            for view in views.values() {
                if seen.insert(view.name.clone()) {
                    let healthy = i64::try_from(view.healthy(now)).unwrap_or(i64::MAX);
                    self.gauge.with_label_values(&[&view.name]).set(healthy);
                }
            }
        }
        self.gauge.collect()
    }
}

// ---------------------------------------------------------------------------------------
// Active probes

impl Prober {
    /// Probe `addr` at the check's interval, from now on; `upstream` labels the metric.
    /// `passing`: the endpoint passes another probe now (a policy was edited), so this one
    /// starts healthy instead of waiting for its first pass.
    fn start(
        addr: SocketAddr,
        passing: bool,
        h2c: bool,
        tls: Option<TlsConnect>,
        check: Arc<ActiveHealth>,
        upstream: Arc<str>,
        probes: IntCounterVec,
    ) -> Prober {
        let state = Arc::new(ProbeState {
            healthy: AtomicBool::new(passing),
        });
        let verdict = state.clone();
        let task = tokio::spawn(async move {
            let passed = probes.with_label_values(&[&upstream, "success"]);
            let failed = probes.with_label_values(&[&upstream, "failure"]);
            let mut tracker =
                Tracker::new(passing, check.healthy_threshold, check.unhealthy_threshold);
            loop {
                let ok = tokio::time::timeout(
                    check.timeout,
                    probe(addr, h2c, tls.as_ref(), &check.probe),
                )
                .await
                .unwrap_or(false);
                if ok { &passed } else { &failed }.inc();
                if let Some(healthy) = tracker.observe(ok) {
                    verdict.healthy.store(healthy, Ordering::Relaxed);
                    tracing::info!(%upstream, endpoint = %addr, healthy, "active health check changed");
                }
                tokio::time::sleep(check.interval).await;
            }
        });
        Prober { state, task }
    }
}

/// Consecutive probe results to verdicts.
struct Tracker {
    healthy: bool,
    /// No probe has passed yet: one pass is enough (as in Envoy at start).
    initial: bool,
    run: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl Tracker {
    /// `passing`: start healthy (the endpoint passes another probe now).
    fn new(passing: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            healthy: passing,
            initial: !passing,
            run: 0,
            healthy_threshold,
            unhealthy_threshold,
        }
    }

    /// A probe result; the new verdict when it changed.
    fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.run = 0;
            return None;
        }
        self.run = self.run.saturating_add(1);
        let threshold = match (ok, self.initial) {
            (true, true) => 1,
            (true, false) => self.healthy_threshold,
            (false, _) => self.unhealthy_threshold,
        };
        if self.run < threshold {
            return None;
        }
        self.run = 0;
        self.healthy = ok;
        self.initial = false;
        Some(ok)
    }
}

/// One probe; `true` when it passed. HTTP probes speak h2c to `kubernetes.io/h2c`
/// upstreams, HTTP/1.1 to the others; HTTP and gRPC probes go over TLS with `tls` (TCP
/// probes check the TCP connection itself).
async fn probe(addr: SocketAddr, h2c: bool, tls: Option<&TlsConnect>, probe: &Probe) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = tcp.set_nodelay(true);
    if let Probe::Tcp { send, receive } = probe {
        return probe_tcp(tcp, send.as_deref(), receive.as_deref()).await;
    }
    match tls {
        None => probe_stream(addr, h2c, tcp, probe).await,
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            match connector.connect(tls.server_name.clone(), tcp).await {
                Ok(stream) => probe_stream(addr, h2c, stream, probe).await,
                Err(_) => false,
            }
        }
    }
}

/// An HTTP or gRPC probe over a connected stream.
async fn probe_stream<S>(addr: SocketAddr, h2c: bool, io: S, probe: &Probe) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match probe {
        Probe::Tcp { .. } => true,
        Probe::Grpc { service } => probe_grpc(addr, io, service.as_deref()).await,
        Probe::Http {
            path,
            method,
            hostname,
            expected_statuses,
        } => {
            let host = hostname
                .as_deref()
                .map_or_else(|| addr.to_string(), str::to_owned);
            let mut req = http::Request::builder()
                .method(method.clone())
                .header(http::header::USER_AGENT, "weir-health-check");
            req = if h2c {
                req.uri(format!("http://{host}{path}"))
            } else {
                req.uri(&**path)
                    .header(http::header::HOST, host)
                    .header(http::header::CONNECTION, "close")
            };
            let Ok(req) = req.body(Empty::<Bytes>::new()) else {
                return false;
            };
            let status = if h2c {
                let Ok((mut tx, conn)) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                        .await
                else {
                    return false;
                };
                let conn = tokio::spawn(conn);
                let status = tx.send_request(req).await.map(|r| r.status());
                conn.abort();
                status
            } else {
                let Ok((mut tx, conn)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(io)).await
                else {
                    return false;
                };
                let conn = tokio::spawn(conn);
                let status = tx.send_request(req).await.map(|r| r.status());
                conn.abort();
                status
            };
            status.is_ok_and(|s| expected_statuses.contains(&s.as_u16()))
        }
    }
}

async fn probe_tcp(mut tcp: TcpStream, send: Option<&[u8]>, receive: Option<&[u8]>) -> bool {
    if let Some(send) = send {
        if tcp.write_all(send).await.is_err() {
            return false;
        }
    }
    let Some(expected) = receive else {
        return true;
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < 64 * 1024 {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
        if got.windows(expected.len()).any(|w| w == expected) {
            return true;
        }
    }
    false
}

/// `grpc.health.v1.Health/Check` over h2c: passes when the answer is SERVING with
/// `grpc-status: 0`.
async fn probe_grpc<S>(addr: SocketAddr, io: S, service: Option<&str>) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok((mut tx, conn)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await
    else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let ok = async {
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(Full::new(grpc_check_request(service)))
            .ok()?;
        let resp = tx.send_request(req).await.ok()?;
        if resp.status() != http::StatusCode::OK {
            return None;
        }
        let in_headers = grpc_status(resp.headers());
        let collected = resp.into_body().collect().await.ok()?;
        let status = collected.trailers().and_then(grpc_status).or(in_headers)?;
        (status == 0 && grpc_serving(collected.to_bytes())).then_some(())
    }
    .await
    .is_some();
    conn.abort();
    ok
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A gRPC message (uncompressed) holding `HealthCheckRequest { service = 1 }`.
fn grpc_check_request(service: Option<&str>) -> Bytes {
    let mut msg = Vec::new();
    if let Some(s) = service.filter(|s| !s.is_empty()) {
        msg.push(0x0a);
        put_varint(&mut msg, s.len() as u64);
        msg.extend_from_slice(s.as_bytes());
    }
    let mut framed = Vec::with_capacity(5 + msg.len());
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed.into()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut impl Buf) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Whether a framed `HealthCheckResponse` says SERVING (`status = 1`, field 1).
fn grpc_serving(mut body: Bytes) -> bool {
    if body.remaining() < 5 || body.get_u8() != 0 {
        return false;
    }
    let len = body.get_u32() as usize;
    if body.remaining() < len {
        return false;
    }
    let mut msg = body.split_to(len);
    let mut status = 0;
    while msg.has_remaining() {
        let Some(key) = get_varint(&mut msg) else {
            return false;
        };
        match key & 7 {
            0 => {
                let Some(v) = get_varint(&mut msg) else {
                    return false;
                };
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let Some(n) = get_varint(&mut msg) else {
                    return false;
                };
                let Ok(n) = usize::try_from(n) else {
                    return false;
                };
                if msg.remaining() < n {
                    return false;
                }
                msg.advance(n);
            }
            1 if msg.remaining() >= 8 => msg.advance(8),
            5 if msg.remaining() >= 4 => msg.advance(4),
            _ => return false,
        }
    }
    status == 1
}

#[cfg(test)]
mod tests;
