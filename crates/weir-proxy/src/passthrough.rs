//! TLSRoutes: connections on a socket of TLS listeners are routed by SNI to a TLSRoute's
//! backend and spliced as a byte stream. Mode Passthrough reads the SNI from the ClientHello
//! (never terminated: [`client_hello`]) and replays it to the backend first; mode Terminate
//! ([`serve_terminated`]) gets the connection after the TLS handshake (the listener module
//! terminates it with the socket's certificates) and splices the plain bytes. On a socket
//! mixing both modes (TLSRouteModeMixed) the ClientHello is read first, the listener picked
//! by its SNI, and a Terminate listener's connection is handed to the TLS acceptor with the
//! ClientHello replayed ([`rewind`]).
//!
//! Per connection: read until the ClientHello is complete (bounded in size and time) →
//! listener by SNI (the socket's listener index, as Hosts choose HTTP listeners) → the
//! listener's TLSRoute for the SNI → weighted backend → connect (falling over to the next
//! endpoint on connect errors) → copy both ways until either side closes. A connection
//! without SNI, for a name no route serves, or whose backend is invalid or has no ready
//! endpoint is closed (there is no way to answer an error inside someone else's TLS).
//!
//! TCPRoutes ([`serve_tcp`]) share the path from the route on: a connection on a socket of
//! TCP listeners takes the route of the socket's listener at once (nothing is read first),
//! then a weighted backend, connect with fall-over, and the same splice.

pub(crate) mod client_hello;
mod rewind;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_snapshot::{BackendTarget, TlsRouteEntry, Upstream};

use crate::conn::SocketKey;
use crate::conn_guard::{Activity, Counted};
use crate::Shared;
use client_hello::Hello;
use rewind::Rewind;

/// Time a client gets to send its whole ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client of a mixed socket gets to finish the TLS handshake after its ClientHello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to connect to one backend endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a passthrough connection was closed before it reached a backend (logged at debug).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PassthroughError {
    #[error("client sent no complete ClientHello in time")]
    HelloTimeout,
    #[error("reading the ClientHello: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a TLS ClientHello: {0}")]
    NotTls(&'static str),
    #[error("the ClientHello has no SNI server name; passthrough routes by SNI")]
    NoServerName,
    #[error("no TLSRoute serves server name {0:?} on this socket")]
    NoRoute(String),
    #[error("no TCPRoute is attached to the TCP listener of this socket")]
    NoTcpRoute,
    #[error("route {route}: backend not usable: {why}")]
    BackendInvalid { route: Arc<str>, why: Arc<str> },
    #[error("route {0}: every backend has weight 0")]
    NoBackend(Arc<str>),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("upstream {0}: no ready endpoint accepted the connection")]
    Unreachable(Arc<str>),
}

/// Serve one accepted connection on a passthrough socket (Passthrough listeners only, or
/// mixed with Terminate ones, which `tls` terminates).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    key: SocketKey,
    client: TcpStream,
    peer: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    idle: Option<Duration>,
) {
    if let Err(err) = splice(&shared, key, client, &tls, idle).await {
        tracing::debug!(%peer, error = %err, "TLS passthrough connection closed");
    }
}

/// Serve one accepted connection on a socket of TCP listeners (TCPRoutes): splice it to a
/// backend of the listener's route.
pub(crate) async fn serve_tcp(
    shared: Arc<Shared>,
    key: SocketKey,
    client: TcpStream,
    peer: SocketAddr,
    idle: Option<Duration>,
) {
    let result = async {
        let upstream = choose_tcp(&shared, key)?;
        splice_to(client, &upstream, &[], idle).await
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "TCPRoute connection closed");
    }
}

/// Serve one connection of a TLS Terminate socket, after its handshake: route by the SNI
/// the client sent, then splice the decrypted bytes.
pub(crate) async fn serve_terminated<S>(
    shared: Arc<Shared>,
    key: SocketKey,
    mut client: S,
    server_name: Option<String>,
    peer: SocketAddr,
    idle: Option<Duration>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = async {
        let server_name = server_name.ok_or(PassthroughError::NoServerName)?;
        let (_, upstream) = choose(&shared, key, &server_name)?;
        splice_to(&mut client, &upstream, &[], idle).await
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "TLS terminated TLSRoute connection closed");
    }
}

async fn splice(
    shared: &Shared,
    key: SocketKey,
    mut client: TcpStream,
    tls: &tokio_rustls::TlsAcceptor,
    idle: Option<Duration>,
) -> Result<(), PassthroughError> {
    let (hello, server_name) = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut client))
        .await
        .map_err(|_| PassthroughError::HelloTimeout)??;
    let (terminate, upstream) = choose(shared, key, &server_name)?;
    if terminate {
        // Mixed socket, Terminate listener: the handshake sees the ClientHello again, and
        // the certificate resolver picks the listener's certificate by the same SNI.
        let client =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(Rewind::new(hello, client)))
                .await
                .map_err(|_| PassthroughError::HandshakeTimeout)?
                .map_err(PassthroughError::Handshake)?;
        return splice_to(client, &upstream, &[], idle).await;
    }
    splice_to(&mut client, &upstream, &hello, idle).await
}

/// Connect to the upstream (falling over on connect errors), send `first` (the replayed
/// ClientHello, or nothing), then copy both ways until either side closes, or (with `idle`,
/// a ClientTrafficPolicy's `timeout.tcp.idleTimeout`) until no byte moved for that long.
async fn splice_to<S>(
    mut client: S,
    upstream: &Upstream,
    first: &[u8],
    idle: Option<Duration>,
) -> Result<(), PassthroughError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut backend = connect(upstream).await?;
    let _ = backend.set_nodelay(true);
    if !first.is_empty() {
        backend.write_all(first).await?;
    }
    // Either side closing (or failing) ends the splice; errors after this point are normal
    // connection ends, not ours to report.
    match idle {
        None => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        }
        Some(timeout) => {
            // Every byte either way passes the client side, so counting it sees them all.
            let activity = Arc::new(Activity::default());
            let mut client = Counted::new(client, activity.clone());
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
                () = activity.idle_for(timeout) => {
                    tracing::debug!(upstream = %upstream.name, "TCP idle timeout: closing the connection");
                }
            }
        }
    }
    Ok(())
}

/// Read until the ClientHello is complete; returns the bytes read and the server name.
async fn read_hello(client: &mut TcpStream) -> Result<(Vec<u8>, String), PassthroughError> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        if buf.len() >= client_hello::MAX_HELLO {
            return Err(PassthroughError::NotTls("ClientHello too large"));
        }
        let n = client.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(PassthroughError::Read(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        match client_hello::parse(&buf) {
            Hello::Incomplete => continue,
            Hello::Invalid(why) => return Err(PassthroughError::NotTls(why)),
            Hello::Complete(None) => return Err(PassthroughError::NoServerName),
            Hello::Complete(Some(name)) => return Ok((buf, name)),
        }
    }
}

/// Listener by SNI, then the listener's route for it, then a backend: all from the snapshot
/// loaded now (the guard is not held across awaits). Also whether the listener terminates
/// TLS (mode Terminate).
fn choose(
    shared: &Shared,
    key: SocketKey,
    server_name: &str,
) -> Result<(bool, Arc<Upstream>), PassthroughError> {
    let snapshot = shared.handle.load();
    let no_route = || PassthroughError::NoRoute(server_name.to_string());
    let socket = snapshot.socket(key.0, key.1).ok_or_else(no_route)?;
    let passthrough = socket.passthrough.as_ref().ok_or_else(no_route)?;
    let listener = *socket
        .listener_index
        .candidates(server_name)
        .next()
        .ok_or_else(no_route)?;
    let route = passthrough
        .route_for(listener, server_name)
        .ok_or_else(no_route)?;
    Ok((passthrough.terminates(listener), pick(route)?))
}

/// The route of a TCP socket, then a backend, from the snapshot loaded now.
fn choose_tcp(shared: &Shared, key: SocketKey) -> Result<Arc<Upstream>, PassthroughError> {
    let snapshot = shared.handle.load();
    let route = snapshot
        .socket(key.0, key.1)
        .and_then(|s| s.passthrough.as_ref())
        .and_then(|p| p.tcp_route())
        .ok_or(PassthroughError::NoTcpRoute)?;
    pick(route)
}

/// A route's backend by weight; it must be a usable upstream.
pub(crate) fn pick(route: &TlsRouteEntry) -> Result<Arc<Upstream>, PassthroughError> {
    let roll = if route.backends.len() > 1 {
        rand::random::<u64>()
    } else {
        0
    };
    let backend = route
        .pick(roll)
        .ok_or_else(|| PassthroughError::NoBackend(route.route.clone()))?;
    match &backend.target {
        BackendTarget::Upstream(u) => Ok(u.clone()),
        BackendTarget::Invalid(why) => Err(PassthroughError::BackendInvalid {
            route: route.route.clone(),
            why: why.clone(),
        }),
    }
}

async fn connect(upstream: &Upstream) -> Result<TcpStream, PassthroughError> {
    for endpoint in upstream.pick_with_fallbacks() {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => {
                tracing::debug!(upstream = %upstream.name, endpoint = %endpoint.addr, error = %err, "connect failed; trying the next endpoint");
            }
            Err(_) => {
                tracing::debug!(upstream = %upstream.name, endpoint = %endpoint.addr, "connect timed out; trying the next endpoint");
            }
        }
    }
    Err(PassthroughError::Unreachable(upstream.name.clone()))
}
