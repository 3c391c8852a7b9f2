//! Sockets and connections: which sockets are open (kept in step with the snapshot by
//! [`Sockets::sync`]), one accept loop per socket, and one task per connection serving
//! HTTP/1.1 and HTTP/2 (plain or over TLS) with graceful shutdown.
//!
//! A socket is identified by its snapshot key: (address, configured port), or (address,
//! exact port) for sockets with a `bind_port`; the port offset only changes where a socket
//! without `bind_port` is bound. Whether a connection terminates TLS is read from the
//! snapshot when it is accepted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use weir_snapshot::{ClientPolicy, Snapshot};

use crate::client_policy::SocketPolicy;
use crate::conn::{client_ip_value, ConnCtx, SocketKey};
use crate::conn_guard::{Activity, Counted, Serving};
use crate::error::BindError;
use crate::log_limit::LogLimit;
use crate::metrics::{ConnProtocol, MetricsCache};
use crate::request;
use crate::{tls, Shared};

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a load balancer gets to send its whole PROXY protocol header (it sends it at once,
/// before anything else).
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The open sockets. The mutexes guard socket bookkeeping only; requests never take them.
pub(crate) struct Sockets {
    shared: Arc<Shared>,
    open: Mutex<HashMap<SocketKey, OpenSocket>>,
    /// Accept loops of closed sockets still draining their connections.
    draining: Mutex<Vec<JoinHandle<()>>>,
    /// Serialises `sync` and `shutdown`.
    sync_lock: tokio::sync::Mutex<()>,
    shut_down: AtomicBool,
}

struct OpenSocket {
    local: SocketAddr,
    /// The exact port it was opened at (`bind_port`), if any: a change reopens it.
    exact: Option<u16>,
    /// One accept loop per worker runtime (`workers.rs`), else one.
    loops: Vec<AcceptLoop>,
}

/// One listening socket of an [`OpenSocket`] and its accept loop.
struct AcceptLoop {
    /// Dropping or sending stops the accept loop.
    stop: oneshot::Sender<()>,
    /// Fires once the accept loop has closed its listening socket.
    closed: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sockets {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            open: Mutex::new(HashMap::new()),
            draining: Mutex::new(Vec::new()),
            sync_lock: tokio::sync::Mutex::new(()),
            shut_down: AtomicBool::new(false),
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

    /// Close the sockets `snapshot` no longer has (they drain in the background), then open
    /// the ones it has that are not open. Sockets in both are untouched.
    pub(crate) async fn sync(&self, snapshot: &Snapshot) -> Vec<BindError> {
        let _serial = self.sync_lock.lock().await;
        if self.shut_down.load(Ordering::Acquire) {
            return Vec::new();
        }
        let wanted: HashMap<SocketKey, Option<u16>> = snapshot
            .sockets
            .iter()
            // UDP sockets are `udp.rs`'s.
            .filter(|s| !s.is_udp())
            .map(|s| (s.key(), s.bind_port))
            .collect();

        let closing: Vec<(SocketKey, OpenSocket)> = {
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
            tracing::info!(address = ?key.0, port = key.1, local = %socket.local, "closing socket; draining its connections");
            self.retire(socket).await;
        }

        let mut errors = Vec::new();
        let mut missing: Vec<(SocketKey, Option<u16>)> = {
            let open = lock(&self.open);
            wanted
                .into_iter()
                .filter(|(k, _)| !open.contains_key(k))
                .collect()
        };
        missing.sort();
        for (key, exact) in missing {
            match self.open_socket(key, exact) {
                Ok(socket) => {
                    tracing::info!(address = ?key.0, port = key.1, local = %socket.local, "listening");
                    lock(&self.open).insert(key, socket);
                }
                Err(err) => {
                    self.shared.metrics.bind_errors.inc();
                    tracing::warn!(error = %err, "socket not opened");
                    errors.push(err);
                }
            }
        }
        errors
    }

    /// Stop every accept loop, then wait for every socket (including those closed earlier) to
    /// drain, each bounded by the drain timeout.
    pub(crate) async fn shutdown(&self) {
        let _serial = self.sync_lock.lock().await;
        self.shut_down.store(true, Ordering::Release);
        let open: Vec<OpenSocket> = lock(&self.open).drain().map(|(_, s)| s).collect();
        for socket in open {
            self.retire(socket).await;
        }
        let draining = std::mem::take(&mut *lock(&self.draining));
        for task in draining {
            if let Err(err) = task.await {
                tracing::warn!(error = %err, "accept loop ended abnormally");
            }
        }
    }

    /// Stop a socket's accept loop, wait until its listening socket is closed (so the port
    /// can be bound again at once), and keep its task to await on shutdown.
    async fn retire(&self, socket: OpenSocket) {
        let mut tasks = Vec::with_capacity(socket.loops.len());
        let mut closing = Vec::with_capacity(socket.loops.len());
        for AcceptLoop { stop, closed, task } in socket.loops {
            let _ = stop.send(());
            closing.push(closed);
            tasks.push(task);
        }
        for closed in closing {
            let _ = closed.await;
        }
        let mut draining = lock(&self.draining);
        draining.retain(|t| !t.is_finished());
        draining.extend(tasks);
    }

    /// Open the socket `key`: at `exact` when given (the key's port is that port), else at
    /// the key's configured port plus the port offset.
    fn open_socket(&self, key: SocketKey, exact: Option<u16>) -> Result<OpenSocket, BindError> {
        let (address, port) = key;
        let addr = bind_addr(&self.shared.config, key, exact)?;
        let io_err = |source| BindError::Io {
            address,
            port,
            addr,
            source,
        };
        let tls = tls::SocketTls::new(
            &self.shared.tls_provider,
            self.shared.handle.clone(),
            address,
            port,
        )
        .map_err(|source| BindError::Tls {
            address,
            port,
            source,
        })?;
        // Per-core mode: one listening socket per worker runtime, registered with that
        // runtime's reactor; else one, with the caller's.
        let workers = &self.shared.config.workers;
        let mut listeners = Vec::with_capacity(workers.len().max(1));
        let first = match workers.first() {
            Some(worker) => {
                let _entered = worker.enter();
                listen(addr)
            }
            None => listen(addr),
        }
        .map_err(io_err)?;
        // Every further socket binds where the first landed (port 0 picks one).
        let local = first.local_addr().map_err(io_err)?;
        listeners.push(first);
        for worker in workers.iter().skip(1) {
            let _entered = worker.enter();
            listeners.push(listen(local).map_err(io_err)?);
        }

        let socket = Arc::new(SocketCtx {
            shared: self.shared.clone(),
            key,
            tls: tokio_rustls::TlsAcceptor::from(tls.plain.clone()),
            socket_tls: tls,
        });
        let loops = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let (stop, stop_rx) = oneshot::channel();
                let (closed_tx, closed) = oneshot::channel();
                let serve = accept_loop(listener, socket.clone(), stop_rx, closed_tx);
                let task = match workers.get(i) {
                    Some(worker) => worker.spawn(serve),
                    None => tokio::spawn(serve),
                };
                AcceptLoop { stop, closed, task }
            })
            .collect();
        Ok(OpenSocket {
            local,
            exact,
            loops,
        })
    }
}

impl SocketCtx {
    /// What the socket's ClientTrafficPolicy builds (server, TLS configuration, connection
    /// counter): from the registry when this socket has it for this policy, else built now
    /// (once per socket and policy, not per connection).
    fn policy(&self, policy: &Arc<ClientPolicy>) -> Result<Arc<SocketPolicy>, rustls::Error> {
        self.shared
            .client_policies
            .get_or_try_insert(&(self.key, policy.id), || {
                let tls = match &policy.tls {
                    Some(settings) => Some(self.socket_tls.with_settings(settings, None)?),
                    None => None,
                };
                Ok(SocketPolicy::new(policy.clone(), &self.shared.config, tls))
            })
    }
}

/// What every connection accepted on one socket shares.
struct SocketCtx {
    shared: Arc<Shared>,
    key: SocketKey,
    /// Terminates without asking for a client certificate.
    tls: tokio_rustls::TlsAcceptor,
    /// For sockets where some listener validates client certificates.
    socket_tls: tls::SocketTls,
}

async fn accept_loop(
    listener: TcpListener,
    socket: Arc<SocketCtx>,
    mut stop: oneshot::Receiver<()>,
    closed: oneshot::Sender<()>,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let accepted_here = socket
        .shared
        .metrics
        .worker_accepted
        .with_label_values(&[&crate::workers::current().to_string()]);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    accepted_here.inc();
                    let Some(permit) = socket.shared.connections.admit() else {
                        // At --max-connections: close at once rather than run out of
                        // descriptors (the admin server and upstreams keep theirs).
                        socket.shared.metrics.connections_rejected.inc();
                        if let Some(suppressed) = REFUSED.admit() {
                            tracing::warn!(
                                %peer,
                                port = socket.key.1,
                                max = socket.shared.config.max_connections,
                                suppressed,
                                "connection refused: --max-connections are open"
                            );
                        }
                        drop(tcp);
                        continue;
                    };
                    connections.spawn(serve_connection(socket.clone(), tcp, peer, graceful.watcher(), permit));
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    if let Some(suppressed) = ACCEPT_FAILED.admit() {
                        tracing::warn!(error = %err, port = socket.key.1, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closed.send(());

    let drain_timeout = socket.shared.config.drain_timeout;
    let drain = async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    };
    if tokio::time::timeout(drain_timeout, drain).await.is_err() {
        tracing::warn!(
            port = socket.key.1,
            remaining = connections.len(),
            "drain timeout reached; closing remaining connections"
        );
        connections.shutdown().await;
    }
}

/// Logs of refused connections and failed accepts: one line at the start of a burst, then
/// at most one per ten seconds with the count left out.
static REFUSED: LogLimit = LogLimit::new(1, Duration::from_secs(10));
static ACCEPT_FAILED: LogLimit = LogLimit::new(1, Duration::from_secs(10));
static POLICY_REFUSED: LogLimit = LogLimit::new(1, Duration::from_secs(10));

/// One client connection, from accept to close. Each protocol's work (a handshake, serving
/// HTTP over TCP or TLS, a passthrough) is awaited in a box of its own, allocated when that
/// branch starts: unboxed, this task's future would be as large as the largest branch (TLS
/// state and both handshakes, 9.4 KB) on every connection, plain ones included, for as long
/// as the connection stays open (bench/keepalive_mem.py). A box is awaited only after the
/// statement or block that made it has ended (see the TLS branches below).
async fn serve_connection(
    socket: Arc<SocketCtx>,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    watcher: Watcher,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    // TLS or not is the snapshot's decision at accept time; a socket that left the snapshot
    // (but is still open until the next sync) takes no new connections.
    let (tls, passthrough, validating, tcp_route, policy) = {
        let snapshot = socket.shared.handle.load();
        match snapshot.socket(socket.key.0, socket.key.1) {
            Some(config) => (
                config.tls,
                config.passthrough.is_some(),
                config.has_client_auth(),
                config.passthrough.as_ref().is_some_and(|p| p.tcp),
                config.client_policy.clone(),
            ),
            None => return,
        }
    };
    // The socket's ClientTrafficPolicy, if any: its connection limit, then its PROXY
    // protocol header, before anything else is read.
    let policy = match policy {
        None => None,
        Some(policy) => match socket.policy(&policy) {
            Ok(built) => Some(built),
            Err(err) => {
                socket
                    .shared
                    .metrics
                    .policy_errors
                    .with_label_values(&[&*policy.name])
                    .inc();
                if let Some(suppressed) = POLICY_REFUSED.admit() {
                    tracing::warn!(%peer, policy = %policy.name, error = %err, suppressed, "connection closed: the ClientTrafficPolicy cannot be applied");
                }
                return;
            }
        },
    };
    let _admitted = match &policy {
        None => None,
        Some(policy) => match policy.admit() {
            Some(admitted) => Some(admitted),
            None => {
                socket
                    .shared
                    .metrics
                    .policy_connections_rejected
                    .with_label_values(&[&*policy.policy.name])
                    .inc();
                if let Some(suppressed) = POLICY_REFUSED.admit() {
                    tracing::warn!(%peer, policy = %policy.policy.name, port = socket.key.1, suppressed, "connection refused: the ClientTrafficPolicy's connectionLimit is reached");
                }
                return;
            }
        },
    };
    if let Some(proxy) = policy.as_ref().and_then(|p| p.policy.proxy_protocol) {
        let header = Box::pin(crate::proxy_protocol::read_header(
            &mut tcp,
            proxy.optional,
            PROXY_HEADER_TIMEOUT,
        ));
        match header.await {
            Ok(Some(source)) => peer = source,
            Ok(None) => {}
            Err(err) => {
                if let Some(reason) = err.reason() {
                    socket
                        .shared
                        .metrics
                        .proxy_protocol_errors
                        .with_label_values(&[reason])
                        .inc();
                }
                tracing::debug!(%peer, error = %err, "connection closed: PROXY protocol");
                return;
            }
        }
    }
    let tcp_idle = policy.as_ref().and_then(|p| p.policy.tcp_idle_timeout);
    // TLS termination under the policy's `tls` settings, else the socket's own.
    let acceptor =
        |policy: &Option<Arc<SocketPolicy>>| match policy.as_ref().and_then(|p| p.tls.clone()) {
            Some(config) => tokio_rustls::TlsAcceptor::from(config),
            None => socket.tls.clone(),
        };
    if tcp_route {
        // TCPRoutes: spliced as they come.
        let _guard = socket.shared.metrics.connection(ConnProtocol::Tcp);
        let _ = tcp.set_nodelay(true);
        let spliced = Box::pin(crate::passthrough::serve_tcp(
            socket.shared.clone(),
            socket.key,
            tcp,
            peer,
            tcp_idle,
        ));
        spliced.await;
        return;
    }
    if passthrough {
        // TLSRoutes: routed by SNI and spliced as a byte stream; TLS is terminated first
        // only in mode Terminate (`tls`).
        let _guard = socket.shared.metrics.connection(ConnProtocol::Tls);
        let _ = tcp.set_nodelay(true);
        if !tls {
            let spliced = Box::pin(crate::passthrough::serve(
                socket.shared.clone(),
                socket.key,
                tcp,
                peer,
                acceptor(&policy),
                tcp_idle,
            ));
            spliced.await;
            return;
        }
        let spliced = {
            let handshake = Box::pin(tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                acceptor(&policy).accept(tcp),
            ));
            match handshake.await {
                Ok(Ok(stream)) => {
                    let server_name = stream.get_ref().1.server_name().map(str::to_owned);
                    Box::pin(crate::passthrough::serve_terminated(
                        socket.shared.clone(),
                        socket.key,
                        stream,
                        server_name,
                        peer,
                        tcp_idle,
                    ))
                }
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        };
        spliced.await;
        return;
    }
    let _guard = socket.shared.metrics.connection(if tls {
        ConnProtocol::Https
    } else {
        ConnProtocol::Http
    });
    let _ = tcp.set_nodelay(true);
    let conn = |sni: Option<Arc<str>>, client_auth| {
        Arc::new(ConnCtx {
            shared: socket.shared.clone(),
            key: socket.key,
            peer,
            tls,
            sni,
            client_auth,
            client_ip: client_ip_value(peer.ip()),
            metrics_cache: MetricsCache::default(),
            policy: policy.clone(),
        })
    };
    // Each TLS stream is handed to its boxed serve_http inside a block that ends before
    // the box is awaited: a binding (or temporary) still in scope at an await keeps its
    // room in this future even after it was moved out, and a TlsStream is kilobytes.
    if tls && validating {
        let served = {
            let handshake = Box::pin(socket.socket_tls.accept_validating(
                &socket.shared.handle,
                socket.key,
                tcp,
                HANDSHAKE_TIMEOUT,
                policy.as_ref().and_then(|p| p.policy.tls.as_ref()),
            ));
            match handshake.await {
                Ok((stream, client_auth)) => {
                    let sni = stream.get_ref().1.server_name().map(Arc::from);
                    Box::pin(serve_http(conn(sni, client_auth), stream, watcher))
                }
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
            }
        };
        served.await
    } else if tls {
        let served = {
            let handshake = Box::pin(tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                acceptor(&policy).accept(tcp),
            ));
            match handshake.await {
                Ok(Ok(stream)) => {
                    // rustls hands over SNI names lowercased.
                    let sni = stream.get_ref().1.server_name().map(Arc::from);
                    Box::pin(serve_http(conn(sni, None), stream, watcher))
                }
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        };
        served.await
    } else {
        let served = Box::pin(serve_http(conn(None, None), tcp, watcher));
        served.await
    }
}

/// Serve HTTP/1.1 and HTTP/2 on a client stream (plain or TLS) until it ends, the socket
/// drains, or it has been idle for `--idle-timeout` (see `conn_guard`).
async fn serve_http<S>(conn: Arc<ConnCtx>, stream: S, watcher: Watcher)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shared = conn.shared.clone();
    let policy = conn.policy.clone();
    let peer = conn.peer;
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Counted::new(stream, activity.clone()));
    let requests = activity.clone();
    let service = service_fn(move |req| {
        let busy = requests.request();
        Box::pin(Serving::new(request::serve(conn.clone(), req), busy))
    });
    // A socket with a ClientTrafficPolicy has a server of its own (built once per policy).
    let server = match &policy {
        Some(policy) => &policy.server,
        None => &shared.server,
    };
    let connection = server.serve_connection_with_upgrades(io, service);
    // The idle timer runs in a task of its own and signals over a oneshot: the connection
    // task is woken for every read and write, and polling a oneshot there costs far less
    // than polling a timer (callgrind: about 200 instructions per request less).
    let (idle_tx, idle_rx) = oneshot::channel::<()>();
    let timeout = policy
        .as_ref()
        .map_or(shared.config.idle_timeout, |p| p.idle_timeout);
    let idle = tokio::spawn(async move {
        activity.idle_for(timeout).await;
        let _ = idle_tx.send(());
    });
    tokio::select! {
        ended = watcher.watch(connection) => {
            if let Err(err) = ended {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        }
        Ok(()) = idle_rx => {
            shared.metrics.idle_closed.inc();
            tracing::debug!(%peer, "idle timeout: closing the connection");
        }
    }
    idle.abort();
}

/// A listening TCP socket at `addr`, registered with the current runtime's reactor, with
/// its options set deliberately:
/// - `SO_REUSEADDR`: the port can be bound again at once after a restart, while connections
///   of the previous process sit in TIME_WAIT.
/// - `SO_REUSEPORT`: several sockets share the port. Per-core mode opens one per worker
///   runtime and the kernel spreads new connections across them; and a socket on a specific
///   address (a Gateway listener's own address) can open beside one on the wildcard
///   (`--bind 0.0.0.0`) at the same port, which `SO_REUSEADDR` alone refuses on Linux once
///   the first listens (the kernel gives each connection to the most specific socket). Only
///   processes of the same user may join a port's group (Linux checks the effective UID), as
///   Envoy does by default.
/// - a backlog of 1024 (std's default is 128): a burst of connects while the one thread of a
///   worker runtime is busy waits in the kernel instead of being refused.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections a listening socket queues (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: u32 = 1024;

/// The address a socket for `key` binds: the configured address (else `--bind`) and the
/// configured port plus the listener port offset, or `exact` (a port already bound once).
/// Shared by the TCP sockets here and the UDP ones (`udp.rs`).
pub(crate) fn bind_addr(
    config: &crate::ProxyConfig,
    (address, port): SocketKey,
    exact: Option<u16>,
) -> Result<SocketAddr, BindError> {
    let bind_port = match exact {
        Some(exact) => exact,
        None => port
            .checked_add(config.port_offset)
            .ok_or(BindError::PortOverflow {
                address,
                port,
                offset: config.port_offset,
            })?,
    };
    Ok(SocketAddr::new(address.unwrap_or(config.bind), bind_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--bind 0.0.0.0` and a Gateway listener on 127.0.0.1 at the same port both open
    /// (SO_REUSEADDR alone refuses the second once the first listens), and a connection to
    /// 127.0.0.1 reaches the specific socket.
    #[tokio::test]
    async fn a_specific_address_opens_beside_the_wildcard_on_one_port() {
        let specific = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = specific.local_addr().unwrap().port();
        let wildcard = listen(SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
        let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (accepted, _) = tokio::time::timeout(Duration::from_secs(5), specific.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        drop(wildcard);
    }

    /// Per-core mode's sockets: several at one port, each accepting some of the
    /// connections (the kernel spreads them by address hash).
    #[tokio::test]
    async fn sockets_sharing_a_port_split_its_connections() {
        let a = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        let b = listen(addr).unwrap();
        let mut clients = Vec::new();
        for _ in 0..64 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let count = |l: &TcpListener| {
            let mut n = 0;
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            while let std::task::Poll::Ready(Ok(_)) = l.poll_accept(&mut cx) {
                n += 1;
            }
            n
        };
        // Connected means queued on one of the two sockets already.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (na, nb) = (count(&a), count(&b));
        assert_eq!(na + nb, 64);
        assert!(na > 0 && nb > 0, "{na} and {nb}");
    }
}
