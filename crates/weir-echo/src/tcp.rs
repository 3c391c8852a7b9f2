//! The TCP line protocol of the conformance echo server's TCP mode (`TCP_ECHO_SERVER`,
//! echo-basic `tcpserver`), which the TLSRoute and TCPRoute tests speak: on connect the
//! server sends `Gateway API Test TCP Server\n`, then answers each line: `PING` → `PONG`,
//! `IS_TLS` → `true` / `false`, `TEST` → one line of JSON (pod context, `isTLS` and, over
//! TLS, the negotiated version, SNI and cipher suite). Other lines get no answer. Served in
//! plain TCP (`TCP_PORT`, default 3000) and over TLS (`TLS_PORT`, default 8443) when a
//! certificate is given.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::echo::Context;
use crate::tls::TlsInfo;

/// The first line the server sends on every connection.
pub const WELCOME: &str = "Gateway API Test TCP Server\n";
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line read (the protocol's commands are a few bytes).
const MAX_LINE: usize = 64 * 1024;

/// The `TEST` answer (echo-basic `TCPAssertions`).
#[derive(Debug, Serialize)]
struct Assertions<'a> {
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
    tcpport: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    tlsport: &'a str,
    #[serde(rename = "isTLS")]
    is_tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsAssertions>,
}

#[derive(Debug, Serialize)]
struct TlsAssertions {
    version: String,
    #[serde(rename = "serverName")]
    server_name: String,
    #[serde(
        rename = "negotiatedProtocol",
        skip_serializing_if = "String::is_empty"
    )]
    negotiated_protocol: String,
    #[serde(rename = "cipherSuite")]
    cipher_suite: String,
}

/// The configured ports, as reported in `tcpport` / `tlsport`.
#[derive(Debug, Clone)]
pub struct Ports {
    pub tcp: String,
    pub tls: String,
}

/// Accept on one listener (`tls`: the TLS one) until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Context>,
    ports: Ports,
    mut shutdown: watch::Receiver<bool>,
) {
    let ports = Arc::new(ports);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        eprintln!("weir-echo: tcp accept error: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (ctx, ports, tls) = (ctx.clone(), ports.clone(), tls.clone());
                conns.spawn(async move {
                    match tls {
                        None => serve(stream, &ctx, &ports, None).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    let info = TlsInfo::from_connection(stream.get_ref().1);
                                    serve(stream, &ctx, &ports, Some(info)).await;
                                }
                                Ok(Err(err)) => eprintln!("weir-echo: TLS handshake failed: {err}"),
                                Err(_) => eprintln!("weir-echo: TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    conns.shutdown().await;
}

async fn serve<S>(stream: S, ctx: &Context, ports: &Ports, tls: Option<TlsInfo>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let is_tls = tls.is_some();
    let assertions = Assertions {
        namespace: &ctx.namespace,
        ingress: &ctx.ingress,
        service: &ctx.service,
        pod: &ctx.pod,
        tcpport: &ports.tcp,
        tlsport: &ports.tls,
        is_tls,
        tls: tls.map(|t| TlsAssertions {
            version: t.version,
            server_name: t.server_name,
            negotiated_protocol: t.negotiated_protocol,
            cipher_suite: t.cipher_suite,
        }),
    };
    let test_line = match serde_json::to_string(&assertions) {
        Ok(json) => json + "\n",
        Err(err) => {
            eprintln!("weir-echo: encoding the TEST answer: {err}");
            return;
        }
    };
    let (read, mut write) = tokio::io::split(stream);
    if write.write_all(WELCOME.as_bytes()).await.is_err() {
        return;
    }
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut lines)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = match line.trim_end_matches(['\n', '\r']) {
            "TEST" => test_line.as_str(),
            "IS_TLS" if is_tls => "true\n",
            "IS_TLS" => "false\n",
            "PING" => "PONG\n",
            _ => continue,
        };
        if write.write_all(answer.as_bytes()).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}
