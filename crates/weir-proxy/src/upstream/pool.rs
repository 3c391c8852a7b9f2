//! Upstream connections, pooled per endpoint on hyper's client connections (no hyper-util
//! legacy client: its generic pool, URI-keyed lookups and connect races cost more per request
//! than the whole routing stage).
//!
//! Connections are keyed by [`PoolKey`]: the endpoint address and, for TLS backends, the
//! identity of the TLS settings (CA certificates, names checked, client certificate, ALPN),
//! so a connection is only reused by requests that would have opened it the same way.
//!
//! - HTTP/1.1: an idle list per key, most recently used first. A connection goes
//!   back to the list when its response body has been read to the end
//!   ([`super::body::PooledBody`]); a connection that closed while idle is dropped by the
//!   reaper's next tick, or found by the next request sent on it (hyper hands the request
//!   back unsent and another connection is taken); one idle longer than the idle timeout
//!   is dropped by the reaper. Each connection is driven by the request using it, not by a
//!   task of its own ([`Http1Conn`]).
//! - h2c: one HTTP/2 connection per endpoint, shared by every request (streams multiplex),
//!   replaced when it closes.
//!
//! - Connection cap (HTTP/1.1): at most [`UpstreamLimits::max_connections`] connections
//!   per endpoint are open at once (idle or busy). A request that finds none idle and the
//!   cap reached waits, in a queue of at most [`UpstreamLimits::max_pending`], for a
//!   connection to come back (check-in) or to close; a request beyond the queue fails at once
//!   ([`Overflow`], 503). So 2,000 hanging requests do not open 2,000 connections. The count
//!   is per endpoint, as nginx's `max_conns`; a connection taken over by an upgrade tunnel no
//!   longer counts (it is not the pool's any more).
//!
//! Both maps sit behind one uncontended mutex each (a current-thread runtime never
//! contends; a multi-threaded one holds it for a pop or a push). Idle times use a coarse clock
//! (ticks counted by the reaper task) so a check-in reads no clock.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use weir_snapshot::UpstreamConnection;

use super::body::UpstreamBody;
use crate::error::ConnectError;
use crate::outbound::connect_tcp;

/// How long a TCP connect to an endpoint may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an upstream connection may stay idle in the pool.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Resolution of idle times.
const TICK: Duration = Duration::from_secs(1);

mod conn;
pub(crate) use conn::Http1Conn;

pub(crate) type Http1Sender = http1::SendRequest<UpstreamBody>;
pub(crate) type Http2Sender = http2::SendRequest<UpstreamBody>;

/// Per-endpoint limits on upstream HTTP/1.1 connections (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Connections open at once to one endpoint (at least 1).
    pub max_connections: usize,
    /// Requests that may wait for a connection to one endpoint once the cap is reached;
    /// more fail at once with 503.
    pub max_pending: usize,
}

impl Default for UpstreamLimits {
    /// Envoy's circuit-breaker defaults (1024 connections, 1024 pending requests), per
    /// endpoint.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending: 1024,
        }
    }
}

/// A request found an endpoint at its connection cap with a full queue.
#[derive(Debug)]
pub(crate) struct Overflow;

/// What a request may do when no idle connection was there: take one that was checked in
/// while it waited, or open a new one (the permit counts it until it closes).
pub(crate) enum Admission {
    Idle(Reused),
    Open(ConnPermit),
}

/// What a new connection holds until it closes: its place under the endpoint's cap and,
/// for a request under a BackendTrafficPolicy's `circuitBreaker`, under the policy's cap.
pub(crate) struct ConnPermit {
    pub(crate) endpoint: OwnedSemaphorePermit,
    /// Held (never read) until the connection closes.
    #[allow(dead_code)]
    pub(crate) policy: Option<OwnedSemaphorePermit>,
}

impl From<OwnedSemaphorePermit> for ConnPermit {
    fn from(endpoint: OwnedSemaphorePermit) -> Self {
        Self {
            endpoint,
            policy: None,
        }
    }
}

/// A BackendTrafficPolicy's cap on the upstream connections its requests open
/// (`circuitBreaker.maxConnections`), and on the requests waiting at that cap
/// (`maxPendingRequests`).
pub(crate) struct PolicyConnections {
    pub(crate) open: Arc<Semaphore>,
    pub(crate) waiting: AtomicUsize,
    pub(crate) max_pending: usize,
}

/// What a pooled connection is for: an endpoint, reached in cleartext (`tls` 0) or with the
/// TLS settings whose identity `tls` is (see [`super::tls::identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: u64,
}

impl From<SocketAddr> for PoolKey {
    /// A cleartext connection to `addr`.
    fn from(addr: SocketAddr) -> Self {
        Self { addr, tls: 0 }
    }
}

/// How to open a TLS connection: the client config and the SNI.
#[derive(Clone)]
pub(crate) struct TlsConnect {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

/// The upstream connection pools. Cheap to share: clones point at the same pools.
#[derive(Clone)]
pub(crate) struct Pools {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http1: Mutex<AddrMap<Endpoint>>,
    http2: Mutex<AddrMap<Http2Sender>>,
    /// Ticks since the reaper started.
    clock: AtomicU64,
    tick: Duration,
    /// Idle timeout in ticks (at least 1).
    idle_ticks: u64,
    connect_timeout: Duration,
    reaper_started: AtomicBool,
    limits: UpstreamLimits,
    /// Settings of connection classes (a BackendTrafficPolicy's `UpstreamConnection`), by
    /// the `tls` field of their keys (see [`Pools::class`]); keys not here get the defaults.
    classes: Mutex<HashMap<u64, Class>>,
}

/// What a class of connections does differently: its idle timeout and how many requests
/// one connection serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    idle_ticks: u64,
    max_uses: u32,
}

impl Inner {
    /// The settings of connections whose key's `tls` field is `tls`.
    fn class(&self, tls: u64) -> Class {
        lock(&self.classes).get(&tls).copied().unwrap_or(Class {
            idle_ticks: self.idle_ticks,
            max_uses: u32::MAX,
        })
    }
}

/// One endpoint's HTTP/1.1 connections: the idle ones and the cap on all of them.
struct Endpoint {
    idle: Vec<Idle>,
    gate: Arc<Gate>,
    class: Class,
}

impl Endpoint {
    fn new(limits: UpstreamLimits, class: Class) -> Self {
        Self {
            idle: Vec::new(),
            class,
            gate: Arc::new(Gate {
                open: Arc::new(Semaphore::new(limits.max_connections.max(1))),
                max: limits.max_connections.max(1),
                returned: Notify::new(),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// Whether the entry may be forgotten: nothing idle, no connection open, nobody waiting
    /// (forgetting it with connections open would reset their count).
    fn unused(&self) -> bool {
        self.idle.is_empty()
            && self.gate.open.available_permits() == self.gate.max
            && self.gate.waiting.load(Ordering::Relaxed) == 0
    }
}

/// The connection cap of one endpoint.
struct Gate {
    /// One permit per open connection, held by its [`Http1Conn`].
    open: Arc<Semaphore>,
    max: usize,
    /// Signalled when a connection is checked in while requests wait.
    returned: Notify,
    /// Requests waiting for a connection.
    waiting: AtomicUsize,
}

/// Leaves the queue when dropped (a waiter served, failed or cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Idle {
    conn: Http1Conn,
    /// Clock tick of the check-in.
    since: u64,
    /// Requests the connection has served.
    uses: u32,
}

/// A connection taken from the idle list.
pub(crate) struct Reused {
    conn: Http1Conn,
    /// It sat idle for at least a tick: the peer may be closing it right now (its own idle
    /// timeout), so a request that is safe to repeat should be kept for a retry.
    stale: bool,
    /// Requests it has served.
    uses: u32,
}

impl Reused {
    /// The connection, the requests it will have served with the next one, and whether it
    /// is stale.
    pub(crate) fn parts(self) -> (Http1Conn, u32, Option<bool>) {
        (self.conn, self.uses.saturating_add(1), Some(self.stale))
    }
}

impl Pools {
    pub(crate) fn new(limits: UpstreamLimits) -> Self {
        Self::with_timeouts(TICK, IDLE_TIMEOUT, CONNECT_TIMEOUT).with_limits(limits)
    }

    /// The same pools with other connection limits (before any connection is made).
    pub(crate) fn with_limits(mut self, limits: UpstreamLimits) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.limits = limits;
        }
        self
    }

    /// Pools with other timings (tests use short ones). `idle_timeout` is rounded up to
    /// whole ticks.
    pub(crate) fn with_timeouts(tick: Duration, idle_timeout: Duration, connect: Duration) -> Self {
        let tick = tick.max(Duration::from_millis(1));
        let idle_ticks = idle_timeout.as_nanos().div_ceil(tick.as_nanos()).max(1);
        Self {
            inner: Arc::new(Inner {
                http1: Mutex::new(AddrMap::default()),
                http2: Mutex::new(AddrMap::default()),
                clock: AtomicU64::new(0),
                tick,
                idle_ticks: u64::try_from(idle_ticks).unwrap_or(u64::MAX),
                connect_timeout: connect,
                reaper_started: AtomicBool::new(false),
                limits: UpstreamLimits::default(),
                classes: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Connections of a BackendTrafficPolicy with connection settings
    /// (`timeout.http.connectionIdleTimeout`, `circuitBreaker.maxRequestsPerConnection`) are
    /// pooled apart: their keys' `tls` field is the TLS identity `tls` XOR the tag returned
    /// here (a hash of the settings), so they are reused only by requests of policies with
    /// the same settings, and the settings apply to every connection of such a key. (The
    /// pool key keeps its size: every request's future holds one.)
    pub(crate) fn class(&self, tls: u64, settings: &UpstreamConnection) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(settings, &mut h);
        let tag = Hasher::finish(&h) | 1;
        let idle_ticks = match settings.idle_timeout {
            None => self.inner.idle_ticks,
            // Rounded up to ticks, plus one: the check-in's tick may be up to one old, so a
            // connection is closed after between the timeout and the timeout plus a tick.
            Some(t) => u64::try_from(t.as_nanos().div_ceil(self.inner.tick.as_nanos()))
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        };
        let class = Class {
            idle_ticks,
            max_uses: settings.max_requests.unwrap_or(u32::MAX),
        };
        lock(&self.inner.classes).entry(tls ^ tag).or_insert(class);
        tag
    }

    /// The most recently used idle HTTP/1.1 connection for `key` that has not expired.
    /// Whether the peer closed it shows when a request is sent on it ([`Http1Conn::send`]).
    pub(crate) fn checkout_http1(&self, key: PoolKey) -> Option<Reused> {
        let now = self.inner.clock.load(Ordering::Relaxed);
        let mut map = lock(&self.inner.http1);
        let endpoint = map.get_mut(&key)?;
        let idle_ticks = endpoint.class.idle_ticks;
        while let Some(entry) = endpoint.idle.pop() {
            let age = now.saturating_sub(entry.since);
            if age >= idle_ticks {
                continue;
            }
            return Some(Reused {
                conn: entry.conn,
                stale: age >= 1,
                uses: entry.uses,
            });
        }
        None
    }

    /// Called when `key` has no idle connection: a permit to open one when the endpoint is
    /// under its cap; else a wait in its queue (if there is room) for a connection that is
    /// checked in (taken) or closes (its permit taken).
    pub(crate) async fn admit_http1(&self, key: PoolKey) -> Result<Admission, Overflow> {
        // Under the map's lock, so the reaper cannot forget the entry in between.
        let gate = {
            let limits = self.inner.limits;
            let mut map = lock(&self.inner.http1);
            let gate = &map
                .entry(key)
                .or_insert_with(|| Endpoint::new(limits, self.inner.class(key.tls)))
                .gate;
            if let Ok(permit) = gate.open.clone().try_acquire_owned() {
                return Ok(Admission::Open(permit.into()));
            }
            if gate.waiting.fetch_add(1, Ordering::Relaxed) >= limits.max_pending {
                gate.waiting.fetch_sub(1, Ordering::Relaxed);
                return Err(Overflow);
            }
            gate.clone()
        };
        let _waiting = Waiting(&gate.waiting);
        loop {
            // Registered before looking, so a check-in between the look and the wait is
            // not missed.
            let returned = gate.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(reused) = self.checkout_http1(key) {
                return Ok(Admission::Idle(reused));
            }
            tokio::select! {
                permit = gate.open.clone().acquire_owned() => {
                    // The semaphore is never closed.
                    return permit.map(|p| Admission::Open(p.into())).map_err(|_| Overflow);
                }
                _ = &mut returned => {}
            }
        }
    }

    /// [`Self::admit_http1`] for a request whose policy caps its connections too: opening
    /// one also takes a permit of `policy`. At the policy's cap the request waits (one of at
    /// most `max_pending`, else [`Overflow`]) for a connection of its endpoint to be checked
    /// in, or for one of the policy's connections to close.
    pub(crate) async fn admit_http1_capped(
        &self,
        key: PoolKey,
        policy: &PolicyConnections,
    ) -> Result<Admission, Overflow> {
        let endpoint = match self.admit_http1(key).await? {
            Admission::Idle(reused) => return Ok(Admission::Idle(reused)),
            Admission::Open(permit) => permit.endpoint,
        };
        if let Ok(p) = policy.open.clone().try_acquire_owned() {
            return Ok(Admission::Open(ConnPermit {
                endpoint,
                policy: Some(p),
            }));
        }
        drop(endpoint);
        if policy.waiting.fetch_add(1, Ordering::Relaxed) >= policy.max_pending {
            policy.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(Overflow);
        }
        let _policy_waiting = Waiting(&policy.waiting);
        let gate = {
            let limits = self.inner.limits;
            let mut map = lock(&self.inner.http1);
            map.entry(key)
                .or_insert_with(|| Endpoint::new(limits, self.inner.class(key.tls)))
                .gate
                .clone()
        };
        gate.waiting.fetch_add(1, Ordering::Relaxed);
        let endpoint_waiting = Waiting(&gate.waiting);
        let permit = loop {
            let returned = gate.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(reused) = self.checkout_http1(key) {
                return Ok(Admission::Idle(reused));
            }
            tokio::select! {
                permit = policy.open.clone().acquire_owned() => {
                    break permit.map_err(|_| Overflow)?;
                }
                _ = &mut returned => {}
            }
        };
        drop(endpoint_waiting);
        match self.admit_http1(key).await? {
            Admission::Idle(reused) => Ok(Admission::Idle(reused)),
            Admission::Open(p) => Ok(Admission::Open(ConnPermit {
                endpoint: p.endpoint,
                policy: Some(permit),
            })),
        }
    }

    /// A new HTTP/1.1 connection to `key.addr`, over TLS with `tls` (upgrades enabled),
    /// holding `permit` (its place under the endpoint's cap) until it is dropped.
    /// `connect_timeout`: the policy's (`timeout.tcp.connectTimeout`), else the pool's.
    pub(crate) fn connect_http1<'a>(
        &'a self,
        key: PoolKey,
        tls: Option<&'a TlsConnect>,
        permit: ConnPermit,
        connect_timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<Http1Conn, ConnectError>> + Send + 'a>> {
        // Connecting (TCP, TLS and HTTP handshakes) has a large future and happens once per
        // connection: boxed, so that every request's future does not carry its space (and
        // move it, a memcpy of several KB per request and level, which callgrind showed as
        // 40% of the proxy's instructions before).
        let limit = connect_timeout.unwrap_or(self.inner.connect_timeout);
        Box::pin(async move {
            let tcp = connect_tcp(key.addr, limit).await?;
            match tls {
                None => self.handshake_http1(key.addr, tcp, permit).await,
                Some(tls) => {
                    let stream = self.connect_tls(tcp, tls, limit).await?;
                    self.handshake_http1(key.addr, stream, permit).await
                }
            }
        })
    }

    async fn handshake_http1<S>(
        &self,
        addr: SocketAddr,
        io: S,
        permit: ConnPermit,
    ) -> Result<Http1Conn, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        Ok(Http1Conn::new(tx, conn.with_upgrades(), addr, permit))
    }

    /// The TLS handshake with a backend, bounded by the connect timeout.
    async fn connect_tls(
        &self,
        tcp: TcpStream,
        tls: &TlsConnect,
        limit: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        tokio::time::timeout(limit, connector.connect(tls.server_name.clone(), tcp))
            .await
            .map_err(|_| ConnectError::Timeout(limit))?
            .map_err(ConnectError::Tls)
    }

    /// Put a connection whose exchange finished back on `key`'s idle list (`uses`: the
    /// requests it has served; at its class's `max_uses` it is closed instead).
    pub(crate) fn checkin_http1(inner: &Arc<Inner>, key: PoolKey, conn: Http1Conn, uses: u32) {
        if !conn.is_idle() {
            return;
        }
        let since = inner.clock.load(Ordering::Relaxed);
        {
            let limits = inner.limits;
            let mut map = lock(&inner.http1);
            let endpoint = map
                .entry(key)
                .or_insert_with(|| Endpoint::new(limits, inner.class(key.tls)));
            if uses >= endpoint.class.max_uses {
                // Dropping it closes the connection and gives back its permit (which wakes a
                // waiter).
                drop(map);
                drop(conn);
                return;
            }
            endpoint.idle.push(Idle { conn, since, uses });
            if endpoint.gate.waiting.load(Ordering::Relaxed) > 0 {
                endpoint.gate.returned.notify_one();
            }
        }
        if !inner.reaper_started.load(Ordering::Relaxed) {
            start_reaper(inner);
        }
    }

    /// The shared HTTP/2 connection for `key`, connected first (over TLS with `tls`) if there
    /// is none (or it closed).
    /// (`connect_timeout`: as for [`Self::connect_http1`].)
    pub(crate) async fn http2(
        &self,
        key: PoolKey,
        tls: Option<&TlsConnect>,
        connect_timeout: Option<Duration>,
    ) -> Result<Http2Sender, ConnectError> {
        if let Some(tx) = lock(&self.inner.http2).get(&key) {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let limit = connect_timeout.unwrap_or(self.inner.connect_timeout);
        // Boxed for the reason given in `connect_http1`.
        Box::pin(async move {
            let tcp = connect_tcp(key.addr, limit).await?;
            let tx = match tls {
                None => handshake_http2(key.addr, tcp).await?,
                Some(tls) => {
                    handshake_http2(key.addr, self.connect_tls(tcp, tls, limit).await?).await?
                }
            };
            lock(&self.inner.http2).insert(key, tx.clone());
            Ok(tx)
        })
        .await
    }

    /// Forget a shared HTTP/2 connection that failed (if it is still the one in the map).
    pub(crate) fn drop_http2(&self, key: PoolKey) {
        let mut map = lock(&self.inner.http2);
        if map.get(&key).is_some_and(|tx| tx.is_closed()) {
            map.remove(&key);
        }
    }

    /// Idle HTTP/1.1 connections for `key` (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn idle_http1(&self, key: impl Into<PoolKey>) -> usize {
        lock(&self.inner.http1)
            .get(&key.into())
            .map_or(0, |e| e.idle.len())
    }
}

async fn handshake_http2<S>(addr: SocketAddr, io: S) -> Result<Http2Sender, ConnectError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%addr, error = %err, "upstream h2 connection ended with an error");
        }
    });
    Ok(tx)
}

/// Once per pool: a task that advances the clock every tick and drops connections idle past
/// the timeout or closed by the peer (a poll of an idle connection reads its EOF; no
/// connection is left in CLOSE_WAIT until a request trips over it), and endpoints with none
/// left, so endpoints that left the snapshot do not linger. It ends when the pools are
/// dropped.
fn start_reaper(inner: &Arc<Inner>) {
    // A body dropped outside the runtime (at shutdown) must not panic in `spawn`.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if inner.reaper_started.swap(true, Ordering::Relaxed) {
        return;
    }
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let tick = inner.tick;
    runtime.spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let now = inner.clock.fetch_add(1, Ordering::Relaxed) + 1;
            let expired: Vec<Idle> = {
                let mut map = lock(&inner.http1);
                let mut expired = Vec::new();
                map.retain(|_, endpoint| {
                    let idle_ticks = endpoint.class.idle_ticks;
                    for mut e in std::mem::take(&mut endpoint.idle) {
                        if now.saturating_sub(e.since) < idle_ticks && e.conn.drive_idle() {
                            endpoint.idle.push(e);
                        } else {
                            expired.push(e);
                        }
                    }
                    !endpoint.unused()
                });
                lock(&inner.http2).retain(|_, tx| !tx.is_closed());
                expired
            };
            // Closing happens outside the lock.
            drop(expired);
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps keyed by endpoint (and TLS identity). The keys come from our own snapshot, not from
/// clients, so a fast non-keyed hash is fine (no flooding risk) and cheaper than SipHash per
/// request.
type AddrMap<V> = HashMap<PoolKey, V, BuildHasherDefault<AddrHasher>>;

/// FxHash-style multiply-rotate hasher.
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl AddrHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests;
