//! Accept loops: one per listener, each connection served by hyper-util's auto builder
//! (HTTP/1.1 or HTTP/2 detected from the preface), with graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::echo::Context;
use crate::http::{handle, ConnInfo, ListenerKind};
use crate::tls::TlsInfo;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One bound listener and what it serves.
pub struct Listener {
    pub kind: ListenerKind,
    pub listener: TcpListener,
    /// Present for [`ListenerKind::Https`].
    pub tls: Option<TlsAcceptor>,
}

/// Accepts connections until `shutdown` turns true, then lets open connections finish
/// (at most [`SHUTDOWN_GRACE`]).
pub async fn run(listener: Listener, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let Listener {
        kind,
        listener,
        tls,
    } = listener;
    let port = listener
        .local_addr()
        .map(|addr| addr.port().to_string())
        .unwrap_or_default();
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        eprintln!("weir-echo: {} accept error: {err}", kind.name());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let info = ConnInfo { kind, port: port.clone(), remote, tls: None };
                let conn = Conn {
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    ctx: ctx.clone(),
                };
                match &tls {
                    None => {
                        tokio::spawn(conn.serve(stream, info));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    let tls = TlsInfo::from_connection(stream.get_ref().1);
                                    conn.serve(stream, ConnInfo { tls: Some(tls), ..info }).await;
                                }
                                Ok(Err(err)) => eprintln!("weir-echo: TLS handshake with {remote} failed: {err}"),
                                Err(_) => eprintln!("weir-echo: TLS handshake with {remote} timed out"),
                            }
                        });
                    }
                }
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "weir-echo: {} connections still open after {SHUTDOWN_GRACE:?}",
            kind.name()
        );
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Everything needed to serve one accepted connection.
struct Conn {
    builder: Builder<TokioExecutor>,
    watcher: Watcher,
    ctx: Arc<Context>,
}

impl Conn {
    async fn serve<I>(self, io: I, info: ConnInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let remote = info.remote;
        let info = Arc::new(info);
        let ctx = self.ctx;
        let service = service_fn(move |req| handle(req, ctx.clone(), info.clone()));
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        if let Err(err) = self.watcher.watch(conn).await {
            eprintln!("weir-echo: connection from {remote}: {err}");
        }
    }
}
