//! UDP listeners (UDPRoutes): one UDP socket per socket of UDP listeners in the snapshot,
//! kept in step with it by [`UdpSockets::sync`] as the TCP sockets are by
//! `listener::Sockets::sync`.
//!
//! A *flow* is the datagrams from one client address (IP and port). Its first datagram picks
//! the route (the socket's first listener's oldest UDPRoute, as for TCP), a backend by
//! weight and one of its endpoints, and opens one connected UDP socket to that endpoint;
//! every later datagram of the flow goes out on that socket, so a flow keeps its endpoint
//! while it is active, whatever the snapshot does meanwhile. Replies from the endpoint go
//! back to the client from the listener's socket (the address the client sent to). A flow
//! ends after `--udp-flow-idle-timeout` (30 s by default) without a datagram either way, or
//! when its listener's socket closes; its next datagram starts a new flow.
//!
//! Flows are bounded across all sockets by `--udp-max-flows` (16384 by default): each holds
//! a socket (a file descriptor) and a task. Beyond it, the datagrams of new flows are dropped
//! and counted (`weir_udp_flows_rejected_total`); `weir_udp_flows` is the flows open now.
//! Datagrams that cannot be sent at once (a full socket buffer) are dropped, as a router
//! would: nothing in UDP promises delivery, and waiting would stall every other flow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use weir_snapshot::{Endpoint, Snapshot};

use crate::conn::SocketKey;
use crate::error::BindError;
use crate::log_limit::LogLimit;
use crate::Shared;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

static REJECTED: LogLimit = LogLimit::new(1, Duration::from_secs(10));

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The open UDP sockets.
pub(crate) struct UdpSockets {
    shared: Arc<Shared>,
    open: Mutex<HashMap<SocketKey, OpenUdp>>,
    /// One permit per flow, across sockets (`--udp-max-flows`).
    flows: Arc<Semaphore>,
    sync_lock: tokio::sync::Mutex<()>,
}

struct OpenUdp {
    local: SocketAddr,
    exact: Option<u16>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl UdpSockets {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let max = shared.config.udp_max_flows.min(Semaphore::MAX_PERMITS);
        Self {
            shared,
            open: Mutex::new(HashMap::new()),
            flows: Arc::new(Semaphore::new(max)),
            sync_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn bound(&self) -> Vec<(Option<IpAddr>, u16, SocketAddr)> {
        let mut v: Vec<_> = lock(&self.open)
            .iter()
            .map(|(&(address, port), s)| (address, port, s.local))
            .collect();
        v.sort();
        v
    }

    /// Close the UDP sockets `snapshot` no longer has (their flows end), then open those it
    /// has that are not open.
    pub(crate) async fn sync(&self, snapshot: &Snapshot) -> Vec<BindError> {
        let _serial = self.sync_lock.lock().await;
        let wanted: HashMap<SocketKey, Option<u16>> = snapshot
            .sockets
            .iter()
            .filter(|s| s.is_udp())
            .map(|s| (s.key(), s.bind_port))
            .collect();
        let closing: Vec<(SocketKey, OpenUdp)> = {
            let mut open = lock(&self.open);
            let gone: Vec<SocketKey> = open
                .iter()
                .filter(|(k, s)| wanted.get(*k) != Some(&s.exact))
                .map(|(k, _)| *k)
                .collect();
            gone.into_iter()
                .filter_map(|k| open.remove(&k).map(|s| (k, s)))
                .collect()
        };
        for (key, socket) in closing {
            tracing::info!(address = ?key.0, port = key.1, local = %socket.local, "closing UDP socket");
            retire(socket).await;
        }
        let mut missing: Vec<(SocketKey, Option<u16>)> = {
            let open = lock(&self.open);
            wanted
                .into_iter()
                .filter(|(k, _)| !open.contains_key(k))
                .collect()
        };
        missing.sort();
        let mut errors = Vec::new();
        for (key, exact) in missing {
            match self.open_socket(key, exact) {
                Ok(socket) => {
                    tracing::info!(address = ?key.0, port = key.1, local = %socket.local, "listening (UDP)");
                    lock(&self.open).insert(key, socket);
                }
                Err(err) => {
                    self.shared.metrics.bind_errors.inc();
                    tracing::warn!(error = %err, "UDP socket not opened");
                    errors.push(err);
                }
            }
        }
        errors
    }

    pub(crate) async fn shutdown(&self) {
        let _serial = self.sync_lock.lock().await;
        let open: Vec<OpenUdp> = lock(&self.open).drain().map(|(_, s)| s).collect();
        for socket in open {
            retire(socket).await;
        }
    }

    fn open_socket(&self, key: SocketKey, exact: Option<u16>) -> Result<OpenUdp, BindError> {
        let (address, port) = key;
        let addr = crate::listener::bind_addr(&self.shared.config, key, exact)?;
        let io_err = |source| BindError::Io {
            address,
            port,
            addr,
            source,
        };
        let std_socket = std::net::UdpSocket::bind(addr).map_err(io_err)?;
        std_socket.set_nonblocking(true).map_err(io_err)?;
        let socket = UdpSocket::from_std(std_socket).map_err(io_err)?;
        let local = socket.local_addr().map_err(io_err)?;
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(serve_socket(
            self.shared.clone(),
            key,
            Arc::new(socket),
            self.flows.clone(),
            stop_rx,
        ));
        Ok(OpenUdp {
            local,
            exact,
            stop,
            task,
        })
    }
}

/// Stop a socket's loop and wait for it: its socket is closed and its flows aborted when it
/// returns.
async fn retire(socket: OpenUdp) {
    let OpenUdp { stop, task, .. } = socket;
    let _ = stop.send(());
    if let Err(err) = task.await {
        tracing::warn!(error = %err, "UDP socket loop ended abnormally");
    }
}

/// One flow: its upstream socket and when it last carried a datagram.
struct Flow {
    upstream: UdpSocket,
    start: Instant,
    /// Milliseconds after `start` of the last datagram either way.
    last: AtomicU64,
    /// Set by the flow's task when it ends; a datagram then starts a new flow.
    ended: AtomicBool,
}

impl Flow {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// Held by a flow's task: its permit, and the gauge counted down when it ends (or is
/// aborted with its socket).
struct FlowGuard {
    _permit: OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

async fn serve_socket(
    shared: Arc<Shared>,
    key: SocketKey,
    socket: Arc<UdpSocket>,
    cap: Arc<Semaphore>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut flows: HashMap<SocketAddr, Arc<Flow>> = HashMap::new();
    // Each flow's task returns its client address when the flow ends.
    let mut tasks: JoinSet<SocketAddr> = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let idle = shared.config.udp_flow_idle_timeout;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(peer) = ended {
                    if flows.get(&peer).is_some_and(|f| f.ended.load(Ordering::Acquire)) {
                        flows.remove(&peer);
                    }
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    if let Some(flow) = flows.get(&peer).filter(|f| !f.ended.load(Ordering::Acquire)) {
                        flow.touch();
                        if let Err(err) = send(&flow.upstream, data) {
                            tracing::debug!(%peer, error = %err, "UDP datagram to upstream dropped");
                        }
                        continue;
                    }
                    let Ok(permit) = cap.clone().try_acquire_owned() else {
                        shared.metrics.udp_flows_rejected.inc();
                        if let Some(suppressed) = REJECTED.admit() {
                            tracing::warn!(%peer, port = key.1, max = shared.config.udp_max_flows, suppressed, "UDP flow refused: --udp-max-flows are open");
                        }
                        continue;
                    };
                    let flow = match open_flow(&shared, key, data) {
                        Ok(flow) => Arc::new(flow),
                        Err(why) => {
                            tracing::debug!(%peer, port = key.1, why, "UDP datagram dropped");
                            continue;
                        }
                    };
                    let gauge = shared.metrics.udp_flows.clone();
                    gauge.inc();
                    let guard = FlowGuard { _permit: permit, gauge };
                    flows.insert(peer, flow.clone());
                    tasks.spawn(relay_replies(flow, socket.clone(), peer, idle, guard));
                }
                Err(err) => {
                    // E.g. an ICMP error surfaced on the socket: not fatal, do not spin.
                    tracing::debug!(port = key.1, error = %err, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        }
    }
    // Dropping `tasks` aborts the flows (their guards count them down); the socket closes
    // with the last reference, held here and by those tasks.
    tasks.shutdown().await;
}

/// Start a flow for a first datagram: the route, a backend by weight, an endpoint, a
/// connected upstream socket; the datagram is sent on it.
fn open_flow(shared: &Shared, key: SocketKey, data: &[u8]) -> Result<Flow, String> {
    let endpoint = choose(shared, key)?;
    let unspecified = match endpoint.addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let io = |e: std::io::Error| format!("upstream socket to {}: {e}", endpoint.addr);
    let std_socket = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0)).map_err(io)?;
    std_socket.connect(endpoint.addr).map_err(io)?;
    std_socket.set_nonblocking(true).map_err(io)?;
    let upstream = UdpSocket::from_std(std_socket).map_err(io)?;
    if let Err(err) = send(&upstream, data) {
        tracing::debug!(endpoint = %endpoint.addr, error = %err, "UDP datagram to upstream dropped");
    }
    let flow = Flow {
        upstream,
        start: Instant::now(),
        last: AtomicU64::new(0),
        ended: AtomicBool::new(false),
    };
    flow.touch();
    Ok(flow)
}

/// The endpoint of a new flow, from the snapshot loaded now.
fn choose(shared: &Shared, key: SocketKey) -> Result<Endpoint, String> {
    let snapshot = shared.handle.load();
    let route = snapshot
        .udp_socket(key.0, key.1)
        .and_then(|s| s.passthrough.as_ref())
        .and_then(|p| p.tcp_route())
        .ok_or("no UDPRoute is attached to the UDP listener of this socket")?;
    let upstream = crate::passthrough::pick(route).map_err(|e| e.to_string())?;
    upstream
        .pick()
        .ok_or_else(|| format!("upstream {}: no ready endpoint", upstream.name))
}

/// Send on a connected socket now, or fail (WouldBlock when its buffer is full): never wait.
/// Straight to the socket: tokio's `try_send` fails on a new socket until the reactor has
/// seen it writable.
fn send(socket: &UdpSocket, data: &[u8]) -> std::io::Result<usize> {
    SockRef::from(socket).send(data)
}

thread_local! {
    /// Reply buffer: flows read into it and send from it without awaiting in between, so
    /// one per thread serves them all (a buffer per flow would be 64 KiB × flows).
    static REPLY: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_DATAGRAM]);
}

/// A flow's task: relay the endpoint's replies to the client from the listener's socket
/// until the flow has been idle for `idle`. Returns the client address.
async fn relay_replies(
    flow: Arc<Flow>,
    listener: Arc<UdpSocket>,
    peer: SocketAddr,
    idle: Duration,
    _guard: FlowGuard,
) -> SocketAddr {
    loop {
        let idle_for = flow.idle_for();
        if idle_for >= idle {
            break;
        }
        match tokio::time::timeout(idle - idle_for, flow.upstream.readable()).await {
            Err(_) => continue,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "UDP upstream socket failed; flow ends");
                break;
            }
            Ok(Ok(())) => {}
        }
        let relayed = REPLY.with(|cell| {
            let mut buf = cell.borrow_mut();
            let n = flow.upstream.try_recv(&mut buf)?;
            flow.touch();
            SockRef::from(&*listener).send_to(buf.get(..n).unwrap_or_default(), &peer.into())
        });
        match relayed {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            // An ICMP error from the endpoint (port unreachable): the flow stays until idle.
            Err(err) => tracing::debug!(%peer, error = %err, "UDP reply not relayed"),
        }
    }
    flow.ended.store(true, Ordering::Release);
    peer
}
