//! Runtime state of SecurityPolicies, beside the snapshot: basic-auth verification caches,
//! remote key sets and verified-token caches, by policy id (dropped by
//! [`SecurityState::sync`] when a swap removed the policy).
//!
//! A remote key set (`remoteJWKS.uri`, http or https) is fetched by a background task: at once, then
//! every `cacheDuration`; sooner when a token names a key id the set does not have
//! ([`RemoteJwks::kick`], at most once per [`KICK_INTERVAL`]). A failed fetch keeps the last
//! good set and is retried after [`RETRY`]. Requests never wait for a fetch: until the first
//! one succeeded, tokens of that provider get 401.
//!
//! Over https the server's certificate must chain to a public root (webpki-roots, Mozilla's
//! set compiled in: the image has no system store) or to a CA given with `--jwks-ca`, and
//! name the URI's host (SNI is that host); otherwise the fetch fails like an unreachable
//! server (the last good set stays; none yet: 401).
//!
//! With `remoteJWKS.backendRefs` the fetch goes instead to the endpoints of the Service port
//! translation resolved ([`JwtKeys::Remote::backend`]), through the proxy's upstream
//! clients like any request to that Service: its endpoints in turn, TLS exactly when a
//! BackendTLSPolicy targets it (that policy's CA and hostname; `--jwks-ca` is not used
//! there). The URI gives the request's path and Host header only. Each swap hands the
//! fetcher the Service's current endpoints ([`SecurityState::sync`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::{OnceLock, Weak};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use weir_snapshot::{JwtKey, JwtKeys, Snapshot, Upstream};

use super::basic::VerifyCache;
use super::jwt::TokenCache;
use crate::log_limit::LogLimit;
use crate::state::StateRegistry;

/// At most one key-id-triggered fetch per provider this often.
pub(crate) const KICK_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed fetch, the next one.
const RETRY: Duration = Duration::from_secs(2);
/// A fetch (connect, request, body) must complete within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

pub(crate) struct SecurityState {
    caches: StateRegistry<u64, VerifyCache>,
    jwks: StateRegistry<(u64, usize), RemoteJwks>,
    /// The client configuration of https key set fetches.
    tls: Arc<rustls::ClientConfig>,
    tokens: StateRegistry<(u64, usize), TokenCache>,
    /// The proxy's shared state (its upstream clients), for fetches through a backendRef;
    /// set by the first [`SecurityState::sync`]. Weak: the fetchers live inside it.
    shared: Arc<OnceLock<Weak<crate::Shared>>>,
}

/// Where one remote key set is fetched from: the URI, and the Service behind
/// `backendRefs` if any.
#[derive(Clone, Copy)]
pub(crate) struct RemoteSource<'a> {
    pub(crate) uri: &'a Arc<str>,
    pub(crate) every: Duration,
    pub(crate) backend: Option<&'a Arc<Upstream>>,
}

impl<'a> RemoteSource<'a> {
    /// The source of a remote provider's keys (`None` for a local set).
    pub(crate) fn of(keys: &'a JwtKeys) -> Option<Self> {
        match keys {
            JwtKeys::Local(_) => None,
            JwtKeys::Remote {
                uri,
                cache_duration,
                backend,
            } => Some(RemoteSource {
                uri,
                every: *cache_duration,
                backend: backend.as_ref(),
            }),
        }
    }
}

/// Certificates in PEM text (`-----BEGIN CERTIFICATE-----` blocks; other blocks are
/// skipped); an error if there is none or one is malformed.
pub fn parse_pem_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

impl SecurityState {
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        SecurityState {
            caches: StateRegistry::default(),
            jwks: StateRegistry::default(),
            tls,
            tokens: StateRegistry::default(),
            shared: Arc::new(OnceLock::new()),
        }
    }

    /// The basic-auth verification cache of policy `id`.
    pub(crate) fn verify_cache(&self, id: u64) -> Arc<VerifyCache> {
        match self.caches.get_or_try_insert(&id, || {
            Ok::<_, std::convert::Infallible>(VerifyCache::default())
        }) {
            Ok(c) => c,
        }
    }

    /// The verified-token cache of provider `index` of policy `id`.
    pub(crate) fn jwt_cache(&self, id: u64, index: usize) -> Arc<TokenCache> {
        match self.tokens.get_or_try_insert(&(id, index), || {
            Ok::<_, std::convert::Infallible>(TokenCache::default())
        }) {
            Ok(c) => c,
        }
    }

    /// The remote key set of provider `index` of policy `id` (its fetcher started if it was
    /// not running).
    pub(crate) fn remote(
        &self,
        id: u64,
        index: usize,
        source: RemoteSource<'_>,
    ) -> Arc<RemoteJwks> {
        match self.jwks.get_or_try_insert(&(id, index), || {
            Ok::<_, std::convert::Infallible>(RemoteJwks::start(
                source,
                self.tls.clone(),
                self.shared.clone(),
            ))
        }) {
            Ok(r) => r,
        }
    }

    /// After a swap: start fetchers for the snapshot's remote key sets (so their first
    /// fetch is under way before a request needs it), hand those fetching through a
    /// backendRef the Service's current endpoints, drop the state of policies gone.
    pub(crate) fn sync(&self, shared: &Arc<crate::Shared>, snapshot: &Snapshot) {
        let _ = self.shared.set(Arc::downgrade(shared));
        let mut live = std::collections::HashSet::new();
        for socket in snapshot.sockets.iter() {
            for listener in socket.listeners.iter() {
                for entry in listener.routes.values() {
                    let Some(s) = &entry.action.security else {
                        continue;
                    };
                    live.insert(s.id);
                    let providers = s.jwt.iter().flat_map(|j| j.providers.iter());
                    for (i, p) in providers.enumerate() {
                        if let Some(source) = RemoteSource::of(&p.keys) {
                            self.remote(s.id, i, source).retarget(source.backend);
                        }
                    }
                }
            }
        }
        self.caches.retain(|id| live.contains(id));
        self.jwks.retain(|(id, _)| live.contains(id));
        self.tokens.retain(|(id, _)| live.contains(id));
    }
}

struct Inner {
    keys: ArcSwapOption<Vec<JwtKey>>,
    /// `backendRefs`' Service port as of the last swap (`None`: fetch from the URI's host).
    backend: ArcSwapOption<Upstream>,
    wake: tokio::sync::Notify,
    last_kick: Mutex<Option<Instant>>,
}

/// One remote key set and its fetcher (stopped when this is dropped).
pub(crate) struct RemoteJwks {
    inner: Arc<Inner>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl RemoteJwks {
    fn start(
        source: RemoteSource<'_>,
        tls: Arc<rustls::ClientConfig>,
        shared: Arc<OnceLock<Weak<crate::Shared>>>,
    ) -> Self {
        let inner = Arc::new(Inner {
            keys: ArcSwapOption::empty(),
            backend: ArcSwapOption::new(source.backend.cloned()),
            wake: tokio::sync::Notify::new(),
            last_kick: Mutex::new(None),
        });
        let how = How {
            uri: source.uri.clone(),
            tls,
            shared,
        };
        let task = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(fetch_loop(how, source.every, inner.clone())));
        RemoteJwks { inner, task }
    }

    /// A swap's view of the backendRef's Service port (its endpoints may have changed).
    /// While no key set was fetched yet, fetch again now: the endpoints that failed may
    /// be gone.
    fn retarget(&self, backend: Option<&Arc<Upstream>>) {
        let old = self.inner.backend.load();
        let same = match (old.as_ref(), backend) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.inner.backend.store(backend.cloned());
        if self.inner.keys.load().is_none() {
            self.inner.wake.notify_one();
        }
    }

    /// The last good key set, if one was fetched.
    pub(crate) fn current(&self) -> Option<Arc<Vec<JwtKey>>> {
        self.inner.keys.load_full()
    }

    /// Ask for a fetch now (at most once per [`KICK_INTERVAL`]); returns at once.
    pub(crate) fn kick(&self) {
        let now = Instant::now();
        let mut last = self
            .inner
            .last_kick
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < KICK_INTERVAL) {
            return;
        }
        *last = Some(now);
        self.inner.wake.notify_one();
    }
}

/// What a fetcher needs besides its state.
struct How {
    uri: Arc<str>,
    tls: Arc<rustls::ClientConfig>,
    shared: Arc<OnceLock<Weak<crate::Shared>>>,
}

impl How {
    /// One fetch: through the backendRef's Service when there is one, else to the URI.
    async fn fetch(&self, inner: &Inner) -> Result<Vec<JwtKey>, String> {
        match inner.backend.load_full() {
            None => fetch(&self.uri, &self.tls).await,
            Some(upstream) => {
                // Held for this fetch only: the proxy's state may go away between fetches.
                let shared = self
                    .shared
                    .get()
                    .and_then(Weak::upgrade)
                    .ok_or("the proxy is not running")?;
                fetch_through(&shared, &upstream, &self.uri).await
            }
        }
    }
}

async fn fetch_loop(how: How, every: Duration, inner: Arc<Inner>) {
    static FAILED: LogLimit = LogLimit::new(5, Duration::from_secs(60));
    let uri = &how.uri;
    loop {
        let wait = match tokio::time::timeout(FETCH_TIMEOUT, how.fetch(&inner)).await {
            Ok(Ok(keys)) => {
                inner.keys.store(Some(Arc::new(keys)));
                every
            }
            Ok(Err(e)) => {
                if let Some(suppressed) = FAILED.admit() {
                    tracing::warn!(uri = %uri, error = %e, suppressed, "remote JWKS fetch failed; keeping the last good key set");
                }
                RETRY.min(every)
            }
            Err(_) => {
                if let Some(suppressed) = FAILED.admit() {
                    tracing::warn!(uri = %uri, suppressed, "remote JWKS fetch timed out; keeping the last good key set");
                }
                RETRY.min(every)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.wake.notified() => {}
        }
    }
}

/// GET the key set over HTTP/1.1, in the clear or over TLS, and parse it (no HMAC keys from
/// a remote set).
async fn fetch(uri: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Vec<JwtKey>, String> {
    let uri: http::Uri = uri.parse().map_err(|e| format!("bad URI: {e}"))?;
    let host = uri.host().ok_or("no host")?;
    // An IPv6 literal comes bracketed; connect and SNI take it bare.
    let bare = host.trim_matches(['[', ']']).to_string();
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(bare.clone(), |a| a.to_string());
    if https {
        // SNI and the certificate check both use the URI's host (a DNS name or an IP).
        let name = rustls::pki_types::ServerName::try_from(bare)
            .map_err(|e| format!("bad TLS server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        get(stream, path, authority).await
    } else {
        get(stream, path, authority).await
    }
}

/// GET the key set from a Service port's endpoints with the proxy's upstream clients (its
/// pools, its BackendTLSPolicy), the URI's path and authority as path and Host.
async fn fetch_through(
    shared: &crate::Shared,
    upstream: &Upstream,
    uri: &str,
) -> Result<Vec<JwtKey>, String> {
    let uri: http::Uri = uri.parse().map_err(|e| format!("bad URI: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().ok_or("no host")?.as_str();
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(crate::upstream::UpstreamBody::empty())
        .map_err(|e| format!("request: {e}"))?;
    let response = shared
        .clients
        .send(&shared.metrics, upstream, req, Some(FETCH_TIMEOUT), None)
        .await
        .map_err(|e| format!("{}: {e}", upstream.name))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    parse(&body)
}

fn parse(body: &[u8]) -> Result<Vec<JwtKey>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    weir_snapshot::security::parse_jwks(text, false)
}

async fn get<IO>(io: IO, path: &str, authority: String) -> Result<Vec<JwtKey>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    parse(&body)
}
