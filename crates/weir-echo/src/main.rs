//! `weir-echo`: the HTTP echo backend used by Weir's tests and quickstart.
//!
//! It answers like the Gateway API conformance echo server (see
//! `gateway-api/v1.6.1/echo/README.md`): `/health`, `/status/NNN`, `/version`, and for any
//! other path a JSON description of the request (path, host, method, proto, canonical
//! headers, pod/namespace context and TLS details). It serves plain HTTP (`HTTP_PORT`,
//! default 3000), cleartext HTTP/2 (`H2C_PORT`, default 3001) and, when `TLS_SERVER_CERT`
//! and `TLS_SERVER_PRIVKEY` are set, HTTPS (`HTTPS_PORT`, default 8443). With
//! `GRPC_ECHO_SERVER` set, gRPC calls on any listener are answered by the conformance
//! `GrpcEcho` service (see `grpc.rs`).
//!
//! With `TCP_ECHO_SERVER` set it speaks the suite's TCP line protocol instead (see
//! [`tcp`]): plain on `TCP_PORT` (default 3000) and, with `TLS_SERVER_CERT` and
//! `TLS_SERVER_PRIV_KEY` (or `TLS_SERVER_PRIVKEY`), over TLS on `TLS_PORT` (default 8443).
//!
//! With `UDP_ECHO_SERVER` set it is the suite's UDP echo server instead (see [`udp`]) on
//! `UDP_PORT` (default 8080); with `--dns-whoami` a stand-in for the suite's coredns
//! (`whoami` answers to DNS queries) on that UDP port.
//!
//! After binding, one line per listener is printed to stdout, e.g.
//! `listening http 127.0.0.1:43567`, so that harnesses using port 0 learn the real ports.
//! Every request is logged to stderr as
//! `Echoing back request made to <path> to client (<remote addr>)`.

mod body;
mod duration;
mod echo;
mod grpc;
mod http;
mod retry;
mod server;
mod tcp;
mod tls;
mod udp;
mod ws;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::echo::Context;
use crate::http::ListenerKind;
use crate::server::Listener;

/// HTTP echo backend answering like the Gateway API conformance echo server.
#[derive(Debug, Parser)]
#[command(name = "weir-echo", version, about)]
struct Args {
    /// Plain HTTP port (0 picks a free one).
    #[arg(long, env = "HTTP_PORT", default_value_t = 3000)]
    http_port: u16,
    /// Cleartext HTTP/2 (h2c) port (0 picks a free one).
    #[arg(long, env = "H2C_PORT", default_value_t = 3001)]
    h2c_port: u16,
    /// Do not serve h2c.
    #[arg(long)]
    no_h2c: bool,
    /// HTTPS port, served only when a server certificate and key are given.
    #[arg(long, env = "HTTPS_PORT", default_value_t = 8443)]
    https_port: u16,
    /// Address to bind every listener to.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    bind: IpAddr,
    /// Namespace reported in the echo JSON.
    #[arg(long, env = "NAMESPACE", default_value = "")]
    namespace: String,
    /// Pod name reported in the echo JSON and by /version.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod_name: String,
    /// Service name reported in the echo JSON.
    #[arg(long, env = "SERVICE_NAME", default_value = "")]
    service_name: String,
    /// Ingress name reported in the echo JSON.
    #[arg(long, env = "INGRESS_NAME", default_value = "")]
    ingress_name: String,
    /// Server certificate chain, PEM text (not a path).
    #[arg(long, env = "TLS_SERVER_CERT", hide_env_values = true)]
    tls_server_cert: Option<String>,
    /// Server private key, PEM text (not a path).
    #[arg(long, env = "TLS_SERVER_PRIVKEY", hide_env_values = true)]
    tls_server_privkey: Option<String>,
    /// Any non-empty value: also answer gRPC calls (`content-type: application/grpc`, on every
    /// listener) as the conformance GrpcEcho service.
    #[arg(long, env = "GRPC_ECHO_SERVER")]
    grpc_echo_server: Option<String>,
    /// Serve the suite's TCP line protocol (echo-basic `tcpserver`) instead of HTTP: set
    /// and not `0`/`false`.
    #[arg(long, env = "TCP_ECHO_SERVER")]
    tcp_echo_server: Option<String>,
    /// TCP mode: plain TCP port (0 picks a free one).
    #[arg(long, env = "TCP_PORT", default_value_t = 3000)]
    tcp_port: u16,
    /// TCP mode: TLS port, served only when a server certificate and key are given.
    #[arg(long, env = "TLS_PORT", default_value_t = 8443)]
    tls_port: u16,
    /// TCP mode: server private key, PEM text (echo-basic's tcpserver spelling; falls back
    /// to TLS_SERVER_PRIVKEY).
    #[arg(long, env = "TLS_SERVER_PRIV_KEY", hide_env_values = true)]
    tls_server_priv_key: Option<String>,
    /// CA certificates, PEM text; when set, clients must present a certificate they issued.
    #[arg(long, env = "TLS_CLIENT_CACERTS", hide_env_values = true)]
    tls_client_cacerts: Option<String>,
    /// Serve the suite's UDP echo protocol (echo-basic `udpechoserver`) instead of HTTP: set
    /// and not `0`/`false`.
    #[arg(long, env = "UDP_ECHO_SERVER")]
    udp_echo_server: Option<String>,
    /// UDP modes: the UDP port (0 picks a free one).
    #[arg(long, env = "UDP_PORT", default_value_t = 8080)]
    udp_port: u16,
    /// Answer DNS queries on the UDP port as coredns's `whoami` does (the conformance
    /// UDPRoute test's backend), instead of HTTP.
    #[arg(long)]
    dns_whoami: bool,
}

/// A PEM option counts only when it is set and not blank.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

async fn bind(kind: ListenerKind, ip: IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {} listener to {addr}", kind.name()))
}

/// Resolves when SIGTERM or SIGINT arrives. The handlers are installed before this returns
/// its future, so signals sent right after the `listening` lines are not missed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let ctx = Arc::new(Context {
        namespace: args.namespace.clone(),
        ingress: args.ingress_name.clone(),
        service: args.service_name.clone(),
        pod: args.pod_name.clone(),
        grpc: non_empty(&args.grpc_echo_server).is_some(),
        ..Context::default()
    });
    let tcp_mode = non_empty(&args.tcp_echo_server).is_some_and(|v| v != "0" && v != "false");
    if tcp_mode {
        return run_tcp(args, ctx).await;
    }
    let udp_mode = non_empty(&args.udp_echo_server).is_some_and(|v| v != "0" && v != "false");
    if udp_mode || args.dns_whoami {
        let mode = if args.dns_whoami {
            udp::Mode::DnsWhoami
        } else {
            udp::Mode::Echo
        };
        return run_udp(args, mode, ctx).await;
    }

    let mut listeners = vec![Listener {
        kind: ListenerKind::Http,
        listener: bind(ListenerKind::Http, args.bind, args.http_port).await?,
        tls: None,
    }];
    if !args.no_h2c {
        listeners.push(Listener {
            kind: ListenerKind::H2c,
            listener: bind(ListenerKind::H2c, args.bind, args.h2c_port).await?,
            tls: None,
        });
    }
    if let (Some(cert), Some(key)) = (
        non_empty(&args.tls_server_cert),
        non_empty(&args.tls_server_privkey),
    ) {
        let config = tls::server_config(cert, key, non_empty(&args.tls_client_cacerts))?;
        listeners.push(Listener {
            kind: ListenerKind::Https,
            listener: bind(ListenerKind::Https, args.bind, args.https_port).await?,
            tls: Some(tokio_rustls::TlsAcceptor::from(config)),
        });
    }

    let signal = shutdown_signal()?;

    {
        let mut out = std::io::stdout().lock();
        for l in &listeners {
            let addr = l.listener.local_addr().context("reading a bound address")?;
            writeln!(out, "listening {} {addr}", l.kind.name()).context("writing to stdout")?;
        }
        out.flush().context("flushing stdout")?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for listener in listeners {
        tasks.spawn(server::run(listener, ctx.clone(), stop_rx.clone()));
    }

    signal.await;
    eprintln!("weir-echo: shutting down");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// UDP modes: the echo JSON or DNS answers on one UDP port.
async fn run_udp(args: Args, mode: udp::Mode, ctx: Arc<Context>) -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(args.bind, args.udp_port))
        .await
        .with_context(|| format!("binding the udp socket to port {}", args.udp_port))?;
    let signal = shutdown_signal()?;
    {
        let mut out = std::io::stdout().lock();
        let addr = socket.local_addr().context("reading a bound address")?;
        writeln!(out, "listening udp {addr}").context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(udp::run(socket, mode, ctx, stop_rx));
    signal.await;
    eprintln!("weir-echo: shutting down");
    let _ = stop_tx.send(true);
    let _ = task.await;
    Ok(())
}

/// TCP mode: the line protocol on a plain and (with a certificate) a TLS port.
async fn run_tcp(args: Args, ctx: Arc<Context>) -> anyhow::Result<()> {
    let plain = TcpListener::bind(SocketAddr::new(args.bind, args.tcp_port))
        .await
        .with_context(|| format!("binding the tcp listener to port {}", args.tcp_port))?;
    let key = non_empty(&args.tls_server_priv_key).or(non_empty(&args.tls_server_privkey));
    let secure = match (non_empty(&args.tls_server_cert), key) {
        (Some(cert), Some(key)) => {
            let mut config = (*tls::server_config(cert, key, None)?).clone();
            // echo-basic's tcpserver offers no ALPN.
            config.alpn_protocols.clear();
            let listener = TcpListener::bind(SocketAddr::new(args.bind, args.tls_port))
                .await
                .with_context(|| format!("binding the tls listener to port {}", args.tls_port))?;
            Some((listener, tokio_rustls::TlsAcceptor::from(Arc::new(config))))
        }
        _ => None,
    };
    let ports = tcp::Ports {
        tcp: args.tcp_port.to_string(),
        tls: if secure.is_some() {
            args.tls_port.to_string()
        } else {
            String::new()
        },
    };
    let signal = shutdown_signal()?;
    {
        let mut out = std::io::stdout().lock();
        let addr = plain.local_addr().context("reading a bound address")?;
        writeln!(out, "listening tcp {addr}").context("writing to stdout")?;
        if let Some((l, _)) = &secure {
            let addr = l.local_addr().context("reading a bound address")?;
            writeln!(out, "listening tls {addr}").context("writing to stdout")?;
        }
        out.flush().context("flushing stdout")?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(tcp::run(
        plain,
        None,
        ctx.clone(),
        ports.clone(),
        stop_rx.clone(),
    ));
    if let Some((listener, acceptor)) = secure {
        tasks.spawn(tcp::run(listener, Some(acceptor), ctx, ports, stop_rx));
    }
    signal.await;
    eprintln!("weir-echo: shutting down");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir-echo: {err:#}");
            ExitCode::FAILURE
        }
    }
}
