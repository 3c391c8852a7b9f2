//! Minimal HTTP clients over real sockets: one connection per call, so each request's
//! transport (HTTP/1.1, h2c, TLS with a chosen SNI and trusted CA) is explicit.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// ALPN protocol negotiated (TLS only).
    pub alpn: Option<Vec<u8>>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the echo backend's answer); panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Req<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    /// The request body (empty: none).
    pub body: &'a [u8],
}

impl<'a> Req<'a> {
    pub fn get(host: &'a str, path: &'a str) -> Self {
        Req {
            method: "GET",
            host,
            path,
            headers: Vec::new(),
            body: &[],
        }
    }

    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn build(&self, http2: bool, scheme: &str) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(self.method);
        builder = if http2 {
            builder
                .uri(format!("{scheme}://{}{}", self.host, self.path))
                .version(http::Version::HTTP_2)
        } else {
            builder.uri(self.path).header("host", self.host)
        };
        for (n, v) in &self.headers {
            builder = builder.header(*n, *v);
        }
        builder
            .body(Full::new(Bytes::copy_from_slice(self.body)))
            .unwrap()
    }
}

/// HTTP/1.1 over a new plain connection.
pub async fn http1(addr: SocketAddr, req: &Req<'_>) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req.build(false, "http"))
        .await
        .map_err(|e| e.to_string())?;
    collect(resp, None).await
}

/// HTTP/2 with prior knowledge over a new plain connection.
pub async fn h2c(addr: SocketAddr, req: &Req<'_>) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req.build(true, "http"))
        .await
        .map_err(|e| e.to_string())?;
    collect(resp, None).await
}

/// HTTPS over a new connection: SNI `server_name`, trusting only `ca_pem`, offering h2 and
/// http/1.1 and speaking whichever the server picks.
pub async fn https(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    req: &Req<'_>,
) -> Result<Reply, String> {
    https_with(addr, server_name, ca_pem, None, req).await
}

/// A client certificate to present when the server asks for one (mutual TLS); `asked`
/// records whether the server did.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub asked: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientCert {
    pub fn new(cert_pem: &str, key_pem: &str) -> Self {
        Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            asked: Arc::default(),
        }
    }

    /// Whether a server asked for this certificate since it was made.
    pub fn was_asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Presents the certificate whenever asked (whatever CAs the server hints), and notes it.
#[derive(Debug)]
struct PresentCert {
    key: Arc<rustls::sign::CertifiedKey>,
    asked: Arc<std::sync::atomic::AtomicBool>,
}

impl rustls::client::ResolvesClientCert for PresentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, std::sync::atomic::Ordering::SeqCst);
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// [`https`], presenting `client` when the server asks for a certificate.
pub async fn https_with(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client: Option<&ClientCert>,
    req: &Req<'_>,
) -> Result<Reply, String> {
    let (tls, alpn) =
        tls_connect_with(addr, server_name, ca_pem, &[b"h2", b"http/1.1"], client).await?;
    let io = TokioIo::new(tls);
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(req.build(true, "https"))
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(req.build(false, "https"))
            .await
            .map_err(|e| e.to_string())?
    };
    collect(resp, alpn).await
}

/// A TLS handshake only; returns the stream, the ALPN protocol, and lets the caller inspect the
/// peer certificate.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>), String> {
    tls_connect_with(addr, server_name, ca_pem, alpn, None).await
}

/// [`tls_connect`], presenting `client` when the server asks for a certificate. With TLS 1.3
/// the server checks the certificate after the client has finished its handshake, so a
/// rejected certificate shows on the first read, not here.
pub async fn tls_connect_with(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
    client: Option<&ClientCert>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let certs = rustls_pemfile::certs(&mut c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate PEM: {e}"))?;
            let key = rustls_pemfile::private_key(&mut c.key_pem.as_bytes())
                .map_err(|e| format!("client key PEM: {e}"))?
                .ok_or("client key PEM holds no key")?;
            let key = rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|e| format!("client key: {e}"))?;
            builder.with_client_cert_resolver(Arc::new(PresentCert {
                key: Arc::new(rustls::sign::CertifiedKey::new(certs, key)),
                asked: c.asked.clone(),
            }))
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    Ok((tls, alpn))
}

async fn collect(
    resp: http::Response<hyper::body::Incoming>,
    alpn: Option<Vec<u8>>,
) -> Result<Reply, String> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        alpn,
    })
}
