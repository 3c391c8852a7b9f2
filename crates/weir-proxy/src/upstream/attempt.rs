//! Phase 5, the attempt loop: one request to one endpoint of an upstream, then the next
//! endpoint while connecting fails, under the per-attempt timeout; pooled HTTP/1.1
//! connections (under the endpoint's cap) and the shared h2c connection. Retries with a
//! budget, per-try timeouts and breaker admission (BackendTrafficPolicy) belong here.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use weir_snapshot::{AppProtocol, ClientCert, Upstream};

use super::body::{self, ClientBodyError, PooledBody, UpstreamBody};
use super::health::Outcome;
use super::pool::{self, Admission, PolicyConnections, PoolKey};
use super::replay::Replay;
use super::{Clients, UpstreamTlsConnect};
use crate::error::{ConnectError, ProxyError};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::stage::{Bounded, Either, Staged};

/// What a BackendTrafficPolicy changes in one attempt: the connect timeout and the
/// breaker's connection cap. [`NoPolicy`] for routes without one (zero-sized: the request
/// future does not grow).
pub(crate) trait Gate: Copy + Send + Sync {
    fn connect_timeout(&self) -> Option<Duration>;
    fn connections(&self) -> Option<&PolicyConnections>;
    /// Whether endpoint `i` of the upstream may get the request (health).
    fn eligible(&self, _i: usize) -> bool {
        true
    }
    /// What identifies endpoint `i` to [`Gate::outcome`]: zero-sized for [`NoPolicy`], so
    /// the request future of routes without a policy holds nothing for it.
    type Slot: Copy + Send;
    fn slot(&self, i: usize) -> Self::Slot;
    /// What an attempt on an endpoint came to (passive health).
    fn outcome(&self, _slot: Self::Slot, _outcome: Outcome) {}
    /// The pool class tag of the policy's connection settings (0: the default pools; see
    /// [`pool::Pools::class`]).
    fn class(&self) -> u64 {
        0
    }
    /// Held while an attempt to one endpoint is in flight (`loadBalancer`'s count).
    type Token: Send;
    /// What goes up with the response when the attempt got one (returned beside it rather
    /// than put in its extensions: no map to allocate per request).
    type Held: Send;
    /// The endpoint (index) to try first (`loadBalancer`); `None`: round robin.
    fn pick(&self) -> Option<usize>;
    /// An attempt to endpoint `i` starts.
    fn begin(&self, i: usize) -> Self::Token;
    /// The attempt got its response: what of the token goes with it.
    fn finish(&self, token: Self::Token) -> Self::Held;
}

#[derive(Clone, Copy)]
pub(crate) struct NoPolicy;

impl Gate for NoPolicy {
    fn connect_timeout(&self) -> Option<Duration> {
        None
    }

    fn connections(&self) -> Option<&PolicyConnections> {
        None
    }

    type Token = ();
    type Held = ();

    fn pick(&self) -> Option<usize> {
        None
    }

    fn begin(&self, _: usize) {}

    fn finish(&self, _: ()) {}

    type Slot = ();
    fn slot(&self, _i: usize) {}
}

pin_project_lite::pin_project! {
    /// An attempt without a policy: its response, without the `()` [`NoPolicy`] holds
    /// beside it (no state of its own, so the request future does not grow).
    struct Unheld<F> {
        #[pin]
        fut: F,
    }
}

impl<F, T> Future for Unheld<F>
where
    F: Future<Output = Result<(T, ()), ProxyError>>,
{
    type Output = Result<T, ProxyError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project()
            .fut
            .poll(cx)
            .map(|out| out.map(|(response, ())| response))
    }
}

impl Clients {
    /// Send `req` to one endpoint of `upstream`: the round-robin pick, then the others while
    /// connecting fails. The one way anything reaches an upstream (forwarding, and copies
    /// such as mirrors); `req` comes with its headers final and any URI form (it is rewritten
    /// for the wire protocol). `attempt_timeout` bounds connecting and sending up to the
    /// response headers.
    ///
    /// A pooled HTTP/1.1 connection that turns out closed is replaced transparently when
    /// hyper hands the request back unsent; after it was sent, the request is repeated on
    /// a new connection only when that is safe (idempotent method, no body, and the pooled
    /// connection had been idle long enough for the peer to be closing it).
    ///
    /// Backends with TLS (`upstream.tls`) are reached over TLS, presenting `client_cert`
    /// (the Gateway's backend client certificate) when they ask for one.
    pub(crate) fn send<'a>(
        &'a self,
        metrics: &'a Metrics,
        upstream: &'a Upstream,
        req: Request<UpstreamBody>,
        attempt_timeout: Option<Duration>,
        client_cert: Option<&ClientCert>,
    ) -> impl Future<Output = Result<Response<PooledBody>, ProxyError>> + 'a {
        // Built here rather than at the first poll, so the request is held once, by the
        // exchange (see `crate::stage`).
        let exchange = if upstream.endpoints.is_empty() {
            Staged::done(Err(ProxyError::NoHealthyUpstream(upstream.name.clone())))
        } else {
            match self.tls_for(upstream, client_cert) {
                Err(err) => Staged::done(Err(err)),
                Ok(tls) => Staged::waiting(Unheld {
                    fut: match upstream.protocol {
                        AppProtocol::H2c => Either::Left {
                            fut: self.send_http2(metrics, upstream, req, tls, NoPolicy),
                        },
                        AppProtocol::Http1 | AppProtocol::WebSocket => Either::Right {
                            fut: self.send_http1(metrics, upstream, req, tls, NoPolicy),
                        },
                    },
                }),
            }
        };
        Bounded::new(exchange, attempt_timeout, move || {
            ProxyError::BackendTimeout {
                upstream: upstream.name.clone(),
                // Only called when there is a limit.
                limit: attempt_timeout.unwrap_or_default(),
            }
        })
    }

    /// An `async` block, not an `async fn`, so `req` is held once (see `crate::stage`).
    #[allow(clippy::manual_async_fn)]
    pub(super) fn send_http1<'a, G: Gate + 'a>(
        &'a self,
        metrics: &'a Metrics,
        upstream: &'a Upstream,
        mut req: Request<UpstreamBody>,
        tls: Option<UpstreamTlsConnect>,
        gate: G,
    ) -> impl Future<Output = Result<(Response<PooledBody>, G::Held), ProxyError>> + 'a {
        async move {
            let tls = tls.as_ref();
            *req.version_mut() = Version::HTTP_11;
            if req.uri().authority().is_some() {
                // HTTP/1.1 to an origin server: origin form (RFC 9112 §3.2.1).
                *req.uri_mut() = origin_form(req.uri());
            }
            let safe_to_repeat = is_idempotent(req.method()) && req.body().is_end_stream();
            // HTTP/1.0 clients may send no Host; HTTP/1.1 needs one: the endpoint's.
            let host_from_endpoint = !req.headers().contains_key(HOST);
            let mut last_connect_error = None;
            let picked = gate.pick();
            for (i, endpoint, authority) in upstream
                .attempts_from(picked)
                .filter(move |&(i, ..)| gate.eligible(i))
            {
                let token = gate.begin(i);
                let i = gate.slot(i);
                let addr = endpoint.addr;
                let mut key = UpstreamTlsConnect::pool_key(addr, tls);
                key.tls ^= gate.class();
                if host_from_endpoint {
                    if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                        req.headers_mut().insert(HOST, value);
                    }
                }
                // Idle connections first, most recently used first; then, under the
                // endpoint's cap, a new one (or, at the cap, one that comes back). One
                // `conn` for both, so the request's future holds one.
                loop {
                    // `stale`: `None` for a new connection.
                    let (mut conn, uses, stale) = match self.pools.checkout_http1(key) {
                        Some(reused) => reused.parts(),
                        None => match match gate.connections() {
                            None => self.pools.admit_http1(key).await,
                            // Boxed: routes without a breaker do not carry its space.
                            Some(c) => Box::pin(self.pools.admit_http1_capped(key, c)).await,
                        } {
                            Ok(Admission::Idle(reused)) => reused.parts(),
                            Ok(Admission::Open(permit)) => {
                                let connect = self.pools.connect_http1(
                                    key,
                                    tls.map(|t| &t.connect),
                                    permit,
                                    gate.connect_timeout(),
                                );
                                match connect.await {
                                    Ok(conn) => (conn, 1, None),
                                    Err(err) => {
                                        gate.outcome(i, Outcome::LocalFailure);
                                        last_connect_error =
                                            Some(connect_failed(metrics, upstream, addr, err));
                                        break;
                                    }
                                }
                            }
                            Err(pool::Overflow) => {
                                return Err(ProxyError::UpstreamOverflow(upstream.name.clone()))
                            }
                        },
                    };
                    // A pooled connection the peer has closed is found out by the send: hyper
                    // reads the close before it writes and hands the request back unsent.
                    let fresh = stale.is_none();
                    // Boxed: rarely made, and the future would otherwise carry its space.
                    let copy =
                        (stale == Some(true) && safe_to_repeat).then(|| Box::new(Replay::of(&req)));
                    match conn.send(req).await {
                        Ok(response) => {
                            gate.outcome(i, Outcome::Status(response.status().as_u16()));
                            let response = self.pooled(response, key, conn, uses);
                            return Ok((response, gate.finish(token)));
                        }
                        Err(mut err) => match (err.take_message(), copy) {
                            // Closed before the request was written: a new connection is
                            // like a failed connect; a pooled one is replaced.
                            (Some(unsent), _) if fresh => {
                                req = unsent;
                                gate.outcome(i, Outcome::LocalFailure);
                                let err = ConnectError::Handshake(err.into_error());
                                last_connect_error =
                                    Some(connect_failed(metrics, upstream, addr, err));
                                break;
                            }
                            (Some(unsent), _) => req = unsent,
                            (None, Some(copy)) => {
                                tracing::debug!(%addr, error = %err.error(), "pooled connection failed; repeating the request");
                                req = copy.request();
                            }
                            (None, None) => {
                                return Err(sent_failed(upstream, err.into_error(), gate, i))
                            }
                        },
                    }
                }
            }
            Err(all_failed(upstream, last_connect_error))
        }
    }

    fn pooled(
        &self,
        mut response: Response<Incoming>,
        key: PoolKey,
        conn: pool::Http1Conn,
        uses: u32,
    ) -> Response<PooledBody> {
        self.record(&mut response, key.addr);
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the tunnel: hyper hands its socket over from
            // the connection future, which runs on its own until then.
            conn.detach(None);
            return response.map(PooledBody::unpooled);
        }
        response.map(|body| PooledBody::pooled(body, &self.pools, key, conn, uses))
    }

    /// Note the endpoint in the response, when the access log wants it.
    fn record(&self, response: &mut Response<Incoming>, addr: SocketAddr) {
        if self.record_endpoint {
            response
                .extensions_mut()
                .insert(crate::access_log::UpstreamEndpoint(addr));
        }
    }

    /// An `async` block, not an `async fn`, so `req` is held once (see `crate::stage`).
    #[allow(clippy::manual_async_fn)]
    pub(super) fn send_http2<'a, G: Gate + 'a>(
        &'a self,
        metrics: &'a Metrics,
        upstream: &'a Upstream,
        mut req: Request<UpstreamBody>,
        tls: Option<UpstreamTlsConnect>,
        gate: G,
    ) -> impl Future<Output = Result<(Response<PooledBody>, G::Held), ProxyError>> + 'a {
        async move {
            let tls = tls.as_ref();
            *req.version_mut() = Version::HTTP_2;
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            let mut last_connect_error = None;
            let picked = gate.pick();
            for (i, endpoint, authority) in upstream
                .attempts_from(picked)
                .filter(move |&(i, ..)| gate.eligible(i))
            {
                let token = gate.begin(i);
                let i = gate.slot(i);
                let addr = endpoint.addr;
                let key = UpstreamTlsConnect::pool_key(addr, tls);
                let mut uri = http::uri::Parts::default();
                uri.scheme = Some(if tls.is_some() {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                });
                uri.authority = Some(authority.clone());
                uri.path_and_query = Some(path.clone());
                *req.uri_mut() =
                    Uri::from_parts(uri).map_err(|err| ProxyError::InvalidFilterResult {
                        what: "upstream URI",
                        value: err.to_string(),
                    })?;
                // The shared connection, then (if it had closed) one fresh one.
                for _ in 0..2 {
                    let mut tx = match self
                        .pools
                        .http2(key, tls.map(|t| &t.connect), gate.connect_timeout())
                        .await
                    {
                        Ok(tx) => tx,
                        Err(err) => {
                            gate.outcome(i, Outcome::LocalFailure);
                            last_connect_error = Some(connect_failed(metrics, upstream, addr, err));
                            break;
                        }
                    };
                    if tx.ready().await.is_err() {
                        self.pools.drop_http2(key);
                        continue;
                    }
                    match tx.try_send_request(req).await {
                        Ok(mut response) => {
                            gate.outcome(i, Outcome::Status(response.status().as_u16()));
                            self.record(&mut response, addr);
                            return Ok((response.map(PooledBody::unpooled), gate.finish(token)));
                        }
                        Err(mut err) => match err.take_message() {
                            Some(unsent) => {
                                req = unsent;
                                self.pools.drop_http2(key);
                            }
                            None => return Err(sent_failed(upstream, err.into_error(), gate, i)),
                        },
                    }
                }
            }
            Err(all_failed(upstream, last_connect_error))
        }
    }
}

fn connect_failed(
    metrics: &Metrics,
    upstream: &Upstream,
    addr: SocketAddr,
    err: ConnectError,
) -> ConnectError {
    metrics.record_connect_error(&upstream.name);
    // Every request to a backend that is down fails here: a burst, then a sample.
    static TLS_FAILED: LogLimit = LogLimit::new(10, Duration::from_secs(10));
    static CONNECT_FAILED: LogLimit = LogLimit::new(10, Duration::from_secs(10));
    if matches!(err, ConnectError::Tls(_)) {
        let Some(suppressed) = TLS_FAILED.admit() else {
            return err;
        };
        // The backend's certificate failed verification (or it does not speak TLS): a
        // configuration problem an operator must see, not a transient one.
        tracing::error!(
            upstream = %upstream.name,
            endpoint = %addr,
            error = %err,
            suppressed,
            "upstream TLS handshake failed"
        );
    } else if let Some(suppressed) = CONNECT_FAILED.admit() {
        tracing::warn!(
            upstream = %upstream.name,
            endpoint = %addr,
            error = %err,
            suppressed,
            "upstream connect failed"
        );
    }
    err
}

/// [`request_error`], told to passive health when it is the endpoint's (a reset).
fn sent_failed<G: Gate>(
    upstream: &Upstream,
    source: hyper::Error,
    gate: G,
    i: G::Slot,
) -> ProxyError {
    let err = request_error(upstream, source);
    if matches!(err, ProxyError::UpstreamRequest { .. }) {
        gate.outcome(i, Outcome::LocalFailure);
    }
    err
}

fn request_error(upstream: &Upstream, source: hyper::Error) -> ProxyError {
    // The client's body failed while it streamed upstream: the client's fault.
    let mut cause = std::error::Error::source(&source);
    while let Some(err) = cause {
        if let Some(body) = err.downcast_ref::<ClientBodyError>() {
            return ProxyError::ClientBody(body.to_string());
        }
        if let Some(stalled) = err.downcast_ref::<body::BodyStalled>() {
            return ProxyError::ClientBodyTimeout(stalled.0);
        }
        cause = err.source();
    }
    ProxyError::UpstreamRequest {
        upstream: upstream.name.clone(),
        source,
    }
}

fn all_failed(upstream: &Upstream, last_connect_error: Option<ConnectError>) -> ProxyError {
    match last_connect_error {
        Some(source) => ProxyError::UpstreamConnect {
            upstream: upstream.name.clone(),
            source,
        },
        None => ProxyError::NoHealthyUpstream(upstream.name.clone()),
    }
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    }
}

/// RFC 9110 §9.2.2.
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
