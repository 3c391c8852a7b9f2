//! Test helpers: hand-built snapshots, an echo backend, HTTP/1.1, h2c and TLS clients,
//! certificates generated at test time, and `assert_eventually`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use weir_proxy::{Proxy, ProxyConfig};
use weir_snapshot::{
    AppProtocol, Backend, BackendTarget, Endpoint, Filter, HostIndex, HostPattern, Listener,
    PathMatch, RequestMatch, RouteAction, RouteEntry, RouteRank, RouteRef, Snapshot,
    SnapshotHandle, SocketConfig, Timeouts, Upstream,
};

// ---------------------------------------------------------------------------------------
// Waiting

/// Poll `check` until it returns `Ok`, or panic with its last error after `timeout`.
pub async fn assert_eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Snapshots

pub fn upstream(name: &str, addrs: &[SocketAddr]) -> Arc<Upstream> {
    upstream_with(name, AppProtocol::Http1, addrs)
}

pub fn upstream_with(name: &str, protocol: AppProtocol, addrs: &[SocketAddr]) -> Arc<Upstream> {
    let endpoints = addrs.iter().map(|&addr| Endpoint { addr }).collect();
    Arc::new(Upstream::new(name, protocol, endpoints))
}

pub fn backend(weight: u32, upstream: &Arc<Upstream>) -> Backend {
    Backend {
        weight,
        target: BackendTarget::Upstream(upstream.clone()),
        filters: Arc::new([]),
    }
}

pub fn invalid_backend(weight: u32) -> Backend {
    Backend {
        weight,
        target: BackendTarget::Invalid("service not found".into()),
        filters: Arc::new([]),
    }
}

/// A rule: route name, filters, backends, timeouts.
pub fn action(
    route: &str,
    filters: Vec<Filter>,
    backends: Vec<Backend>,
    timeouts: Timeouts,
) -> Arc<RouteAction> {
    let total_weight = backends.iter().map(|b| u64::from(b.weight)).sum();
    Arc::new(RouteAction {
        route: RouteRef {
            kind: "HTTPRoute",
            route: route.into(),
            rule: 0,
            rule_name: None,
            version: 0,
        },
        filters: filters.into(),
        backends: backends.into(),
        total_weight,
        timeouts,
        policy: None,
        ext_auth: None,
        security: None,
        ext_proc: None,
    })
}

/// A simple rule forwarding everything to one upstream.
pub fn forward_to(route: &str, upstream: &Arc<Upstream>) -> Arc<RouteAction> {
    action(
        route,
        vec![],
        vec![backend(1, upstream)],
        Timeouts::default(),
    )
}

/// A route entry matching a path prefix.
pub fn prefix(path: &str, action: Arc<RouteAction>) -> Arc<RouteEntry> {
    let path = PathMatch::prefix(path);
    Arc::new(RouteEntry {
        rank: RouteRank {
            hostname: (0, 0),
            path_kind: path.rank_kind(),
            path_len: path.len(),
            has_method: false,
            headers: 0,
            query_params: 0,
            created: (0, 0),
            route: action.route.route.clone(),
            rule: 0,
            match_index: 0,
        },
        matcher: RequestMatch {
            path,
            ..RequestMatch::default()
        },
        action,
    })
}

/// A listener; `routes` are (route hostname, entry), in precedence order.
pub fn listener(
    gateway: &str,
    hostname: Option<&str>,
    routes: Vec<(Option<&str>, Arc<RouteEntry>)>,
) -> Listener {
    Listener {
        gateway: gateway.into(),
        name: "l".into(),
        hostname: hostname.and_then(HostPattern::parse),
        routes: HostIndex::build(
            routes
                .into_iter()
                .map(|(h, e)| (h.and_then(HostPattern::parse), e)),
        ),
        client_auth: None,
        backend_client_cert: None,
    }
}

/// A plain-HTTP socket.
pub fn socket(port: u16, listeners: Vec<Listener>) -> SocketConfig {
    tls_socket(port, false, listeners, vec![], None)
}

/// A socket on `port` whose one catch-all listener forwards everything to `up`.
pub fn routed(port: u16, up: &Arc<Upstream>) -> weir_snapshot::SocketConfig {
    socket(
        port,
        vec![listener(
            "ns/gw",
            None,
            vec![(None, prefix("/", forward_to("ns/r", up)))],
        )],
    )
}

/// A socket; `certs` are (SNI pattern, certificate).
pub fn tls_socket(
    port: u16,
    tls: bool,
    listeners: Vec<Listener>,
    certs: Vec<(&str, Arc<CertifiedKey>)>,
    default_cert: Option<Arc<CertifiedKey>>,
) -> SocketConfig {
    let listener_index = HostIndex::build(
        listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.hostname.clone(), i)),
    );
    SocketConfig {
        address: None,
        port,
        bind_port: None,
        tls,
        listeners: listeners.into(),
        listener_index,
        certificates: HostIndex::build(certs.into_iter().map(|(h, c)| (HostPattern::parse(h), c))),
        default_cert,
        passthrough: None,
        client_policy: None,
    }
}

pub fn snapshot(generation: u64, mut sockets: Vec<SocketConfig>) -> Arc<Snapshot> {
    sockets.sort_by_key(|s| s.key());
    Arc::new(Snapshot {
        generation,
        sockets: sockets.into(),
    })
}

// ---------------------------------------------------------------------------------------
// The proxy under test

pub struct TestProxy {
    pub proxy: Proxy,
    pub handle: Arc<SnapshotHandle>,
    pub registry: prometheus::Registry,
}

pub fn config() -> ProxyConfig {
    ProxyConfig {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port_offset: 0,
        drain_timeout: Duration::from_secs(5),
        max_header_bytes: 16 * 1024,
        idle_timeout: Duration::from_secs(60),
        max_connections: 10_000,
        upstream_timeout: Some(Duration::from_secs(60)),
        upstream_limits: Default::default(),
        // The access log is tested on the weir binary's stdout (e2e).
        access_log_sample: 0.0,
        // Tracing is tested against the weir binary and a real OTLP receiver (e2e).
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

impl TestProxy {
    /// Start a proxy serving `snapshot`; panics if a socket cannot be bound.
    pub async fn start(config: ProxyConfig, snapshot: Arc<Snapshot>) -> TestProxy {
        let handle = Arc::new(ArcSwap::new(snapshot));
        let registry = prometheus::Registry::new();
        let proxy = Proxy::new(config, handle.clone(), &registry).unwrap();
        let errors = proxy.sync_listeners().await;
        assert!(errors.is_empty(), "bind errors: {errors:?}");
        TestProxy {
            proxy,
            handle,
            registry,
        }
    }

    /// The local address of the socket configured on `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        self.proxy
            .bound()
            .into_iter()
            .find(|(_, p, _)| *p == port)
            .map(|(_, _, a)| a)
            .unwrap_or_else(|| panic!("no socket for configured port {port}"))
    }

    pub fn swap(&self, snapshot: Arc<Snapshot>) {
        self.handle.store(snapshot);
    }

    /// The value on the line of `series` (a name with its labels, as the text exposition
    /// writes them: `name{a="1",b="2"}`) in the text `/metrics` serves.
    pub fn exposed(&self, series: &str) -> Option<f64> {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// The value of a metric sample whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let all = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if all {
                    total += m.get_counter().get_value() + m.get_gauge().get_value();
                }
            }
        }
        total
    }
}

// ---------------------------------------------------------------------------------------
// Echo backend

/// An HTTP/1.1 + h2c backend answering with JSON describing the request. `x-delay-ms`
/// delays the answer; `x-response-bytes: N` answers N bytes of `x` instead; `Upgrade: websocket` switches protocols and echoes bytes.
pub struct Echo {
    pub addr: SocketAddr,
    /// Requests received so far (counted before any delay).
    pub received: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// `METHOD path body` of each request whose body was read to its end, in arrival order.
    pub bodies: Arc<std::sync::Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn start(name: &str) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name: Arc<str> = name.into();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                let counter = counter.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        echo(name.clone(), seen.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Echo {
            addr,
            received,
            connections,
            bodies,
            task,
        }
    }
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

async fn echo(
    name: Arc<str>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(ms) = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = req
        .headers()
        .get("x-response-bytes")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    if req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v == "websocket")
    {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut resp = Response::new(Full::default());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        if let Some(key) = req.headers().get("sec-websocket-key") {
            resp.headers_mut().insert(
                "sec-websocket-accept",
                HeaderValue::from_str(&websocket_accept(key.as_bytes())).unwrap(),
            );
        }
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("upgrade"));
        resp.headers_mut()
            .insert("upgrade", HeaderValue::from_static("websocket"));
        return Ok(resp);
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in req.headers() {
        headers
            .entry(n.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let version = format!("{:?}", req.version());
    let host = req
        .headers()
        .get("host")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = match req.into_body().collect().await {
        Ok(b) => {
            let body = b.to_bytes();
            seen.lock().unwrap().push(format!(
                "{method} {path} {}",
                String::from_utf8_lossy(&body)
            ));
            body
        }
        Err(_) => Bytes::new(),
    };
    let json = serde_json::json!({
        "backend": &*name,
        "method": method,
        "path": path,
        "query": query,
        "host": host,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert("x-backend", HeaderValue::from_str(&name).unwrap());
    resp.headers_mut()
        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
    Ok(resp)
}

// ---------------------------------------------------------------------------------------
// Clients

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?} {}", self.status, self.body))
    }

    /// The echo backend that answered.
    pub fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The first value of a request header as the backend saw it.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_string)
    }
}

pub async fn read(resp: Response<Incoming>) -> anyhow::Result<Resp> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub fn request(host: &str, path: &str) -> http::request::Builder {
    Request::builder().uri(path).header("host", host)
}

/// A kept-alive HTTP/1.1 connection.
pub struct H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl H1 {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<H1> {
        let tcp = TcpStream::connect(addr).await?;
        Self::over(tcp).await
    }

    pub async fn over<S>(io: S) -> anyhow::Result<H1>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(H1(sender))
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Resp> {
        self.0.ready().await?;
        read(self.0.send_request(req).await?).await
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// One request on a new HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> anyhow::Result<Resp> {
    H1::connect(addr).await?.send(req).await
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Resp> {
    send(addr, request(host, path).body(Full::default())?).await
}

/// An HTTP/2 connection (prior knowledge over TCP, or over TLS after ALPN h2).
pub struct H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>);

impl H2 {
    pub async fn over<S>(io: S) -> anyhow::Result<H2>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(conn);
        Ok(H2(sender))
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Resp> {
        self.0.ready().await?;
        read(self.0.send_request(req).await?).await
    }
}

/// Write raw bytes, read until the server closes (or 5 s), return what came back.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

// ---------------------------------------------------------------------------------------
// TLS

/// A test CA issuing leaf certificates.
pub struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weir test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A certificate for `names`, signed by this CA, as rustls serves it.
    pub fn leaf(&self, names: &[&str]) -> Arc<CertifiedKey> {
        self.leaf_with_uris(names, &[])
    }

    /// A certificate for DNS `names` that also carries `uris` as URI subjectAltNames.
    pub fn leaf_with_uris(&self, names: &[&str], uris: &[&str]) -> Arc<CertifiedKey> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        KEYS.lock()
            .unwrap()
            .insert(cert.der().to_vec(), key.serialize_der());
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer))
    }

    /// The CA certificate (a trust anchor for client validation).
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// This CA as the only trust anchor.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        Arc::new(roots)
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_config_as(alpn, None)
    }

    /// Trusting this CA, presenting `client` (when given) if the server asks.
    pub fn client_config_as(
        &self,
        alpn: &[&[u8]],
        client: Option<&CertifiedKey>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(c) => builder
                .with_client_auth_cert(c.cert.clone(), client_key(c))
                .unwrap(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connect with TLS, sending `sni`, trusting `ca`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca: &Ca,
    alpn: &[&[u8]],
) -> anyhow::Result<TlsStream> {
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(alpn));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string())?;
    connector.connect(name, tcp).await.context("TLS handshake")
}

/// Connect with TLS as [`tls_connect`], presenting `client` if the server asks.
pub async fn tls_connect_as(
    addr: SocketAddr,
    sni: &str,
    ca: &Ca,
    client: Option<&CertifiedKey>,
) -> anyhow::Result<TlsStream> {
    let connector = tokio_rustls::TlsConnector::from(ca.client_config_as(&[b"http/1.1"], client));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string())?;
    connector.connect(name, tcp).await.context("TLS handshake")
}

/// The private key of a test leaf, kept beside it (see [`Ca::leaf`]).
fn client_key(c: &CertifiedKey) -> PrivateKeyDer<'static> {
    KEYS.lock()
        .unwrap()
        .get(c.cert[0].as_ref())
        .cloned()
        .map(|k| PrivateKeyDer::Pkcs8(k.into()))
        .expect("a leaf made by Ca::leaf")
}

/// Leaf certificate DER → its PKCS#8 key, for presenting leaves as client certificates.
static KEYS: std::sync::LazyLock<std::sync::Mutex<BTreeMap<Vec<u8>, Vec<u8>>>> =
    std::sync::LazyLock::new(Default::default);

/// The leaf certificate the server presented.
pub fn peer_cert(stream: &TlsStream) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

pub fn cert_der(key: &CertifiedKey) -> CertificateDer<'static> {
    key.cert[0].clone()
}
