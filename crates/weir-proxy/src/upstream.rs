//! Forwarding to upstreams: pooled keep-alive clients (HTTP/1.1, and HTTP/2 prior knowledge
//! for `kubernetes.io/h2c`), endpoint fallbacks on connect errors, per-attempt timeouts,
//! hop-by-hop header cleanup, X-Forwarded-For/Proto, HTTP/1.1 upgrades (WebSocket)
//! tunnelled after a 101, and TLS to backends a BackendTLSPolicy targets ([`tls`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use weir_snapshot::{AppProtocol, BackendPolicy, BackendTls, ClientCert, Upstream};

use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::stage::{AndThen, Either};
use crate::Shared;

mod attempt;
mod balance;
mod body;
mod budget;
pub(crate) mod health;
mod pool;
mod replay;
mod request_buffer;
pub(crate) use request_buffer::read_whole;
mod retry;
mod tls;

pub(crate) use balance::Balancers;
pub(crate) use body::{
    copy_channel, tee, tee_bytes, BodyTimer, CopySender, Counted, PooledBody, UpstreamBody,
};
pub(crate) use budget::Budget;
pub use pool::UpstreamLimits;
use pool::{PoolKey, Pools, TlsConnect};
pub(crate) use retry::Breaker;
pub(crate) use retry::{client_body_error, content_length};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
use http::header::{SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY};

/// The upstream clients: pooled connections per endpoint (HTTP/1.1, and HTTP/2 prior
/// knowledge for `kubernetes.io/h2c`).
pub(crate) struct Clients {
    /// One set per worker runtime in per-core mode (`crate::workers`), else one.
    pools: crate::workers::PerWorker<Pools>,
    tls: tls::TlsConfigs,
    /// Put the endpoint each response came from in its extensions (for the access log).
    record_endpoint: bool,
    /// Endpoint health for routes whose BackendTrafficPolicy has a `healthCheck`.
    pub(crate) health: health::HealthRegistry,
}

/// The TLS side of one request's connections: the pool identity and how to connect.
#[derive(Clone)]
struct UpstreamTlsConnect {
    identity: u64,
    connect: TlsConnect,
}

impl UpstreamTlsConnect {
    /// The pool a connection to `addr` reached this way (`None`: cleartext) belongs to.
    fn pool_key(addr: SocketAddr, tls: Option<&UpstreamTlsConnect>) -> PoolKey {
        PoolKey {
            addr,
            tls: tls.map_or(0, |t| t.identity),
        }
    }
}

impl Clients {
    pub(crate) fn new(limits: UpstreamLimits, record_endpoint: bool, workers: usize) -> Self {
        let each = crate::workers::split_limits(limits, workers);
        Self {
            record_endpoint,
            pools: crate::workers::PerWorker::new(workers, |_| Pools::new(each)),
            ..Self::with_pools(Pools::new(limits))
        }
    }

    fn with_pools(pools: Pools) -> Self {
        Self {
            pools: pools.into(),
            tls: tls::TlsConfigs::default(),
            record_endpoint: false,
            health: health::HealthRegistry::default(),
        }
    }

    /// How to reach `upstream`: cleartext (`None`), TLS with its policy's settings (and the
    /// Gateway's client certificate), or not at all (an invalid policy: never cleartext).
    fn tls_for(
        &self,
        upstream: &Upstream,
        client_cert: Option<&ClientCert>,
    ) -> Result<Option<UpstreamTlsConnect>, ProxyError> {
        let settings = match &upstream.tls {
            None => return Ok(None),
            Some(BackendTls::Invalid(why)) => return Err(ProxyError::InvalidBackend(why.clone())),
            Some(BackendTls::Verify(settings)) => settings,
        };
        let h2 = upstream.protocol == AppProtocol::H2c;
        let config = self.tls.get(settings, client_cert, h2).map_err(|err| {
            ProxyError::InvalidBackend(format!("TLS settings of {}: {err}", upstream.name).into())
        })?;
        Ok(Some(UpstreamTlsConnect {
            identity: tls::identity(settings, client_cert, h2),
            connect: TlsConnect {
                config,
                server_name: settings.server_name.clone(),
            },
        }))
    }
}

impl Clients {
    /// The TLS client settings (ALPN h2) for a gRPC service reached outside the pools (the
    /// ext auth channel): `None` for cleartext; an invalid policy is an error, never
    /// cleartext.
    pub(crate) fn grpc_tls(
        &self,
        upstream: &Upstream,
    ) -> Result<
        Option<(
            std::sync::Arc<rustls::ClientConfig>,
            rustls::pki_types::ServerName<'static>,
        )>,
        ProxyError,
    > {
        let settings = match &upstream.tls {
            None => return Ok(None),
            Some(BackendTls::Invalid(why)) => return Err(ProxyError::InvalidBackend(why.clone())),
            Some(BackendTls::Verify(settings)) => settings,
        };
        let config = self.tls.get(settings, None, true).map_err(|err| {
            ProxyError::InvalidBackend(format!("TLS settings of {}: {err}", upstream.name).into())
        })?;
        Ok(Some((config, settings.server_name.clone())))
    }
}

/// What forwarding needs to know about the request's side of the Gateway.
pub(crate) struct Downstream<'a> {
    /// The client address as the X-Forwarded-For value.
    pub(crate) client_ip: &'a HeaderValue,
    /// Whether the client connection is TLS (X-Forwarded-Proto).
    pub(crate) tls: bool,
    /// The certificate the Gateway presents to TLS backends.
    pub(crate) client_cert: Option<&'a ClientCert>,
}

/// Stage 4: send the request to one endpoint of `upstream` ([`Clients::send`]) and return
/// its response, cleaned of hop-by-hop headers. `attempt_timeout` bounds the wait for the
/// response headers. The body is the client's (possibly teed to mirrors) or a mirror copy's.
/// `upgrade` is the client's WebSocket upgrade ([`strip_hop_by_hop`]): tunnelled to HTTP/1.1
/// backends (plain or `kubernetes.io/ws`), dropped for h2c ones.
///
/// Not forced inline: as its own function it builds the exchange straight into the
/// caller's slot; inlined into `request::onward` (20d4a38) the exchange was built in a
/// temporary and copied into place (+136 Ir of `memcpy` per request, and `Bounded::new`
/// stopped being inlined: another copy).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_body<'a>(
    shared: &'a Shared,
    upstream: &'a Upstream,
    mut parts: http::request::Parts,
    body: UpstreamBody,
    upgrade: Option<PendingUpgrade>,
    downstream: &Downstream<'_>,
    attempt_timeout: Option<Duration>,
    policy: Option<(&'a BackendPolicy, &'a str)>,
    sticky: Option<crate::session::Sticky>,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
    let upgrade = match upstream.protocol {
        AppProtocol::H2c => None,
        AppProtocol::Http1 | AppProtocol::WebSocket => upgrade,
    };
    // The client's hop-by-hop headers are gone already; this removes any a filter set.
    prepare_headers(&mut parts.headers, upgrade.as_ref().map(|u| &u.protocol));
    forwarded_headers(&mut parts.headers, downstream.client_ip, downstream.tls);
    let req = Request::from_parts(parts, body);
    // Only a policy with a block of the exchange (retries, breaker, health, balancer,
    // connect timeout, connection settings, request buffer, session) takes it; one with only
    // a rate limit, compression, a cache or a fault keeps the plain send below.
    if let Some((policy, route)) = policy.filter(|(p, _)| p.needs_exchange()) {
        return Either::Right {
            fut: with_policy(
                shared,
                upstream,
                req,
                upgrade,
                downstream,
                attempt_timeout,
                policy,
                route,
                sticky,
            ),
        };
    }
    let sent = shared.clients.send(
        &shared.metrics,
        upstream,
        req,
        attempt_timeout,
        downstream.client_cert,
    );
    Either::Left {
        fut: AndThen::new(sent, move |response| {
            into_downstream(upstream, response, upgrade)
        }),
    }
}

/// The exchange of a route with a BackendTrafficPolicy that sets one of its blocks
/// ([`BackendPolicy::needs_exchange`]): breaker admission, then
/// [`Clients::send_with_policy`]; one boxed future, only for such routes.
#[allow(clippy::too_many_arguments)]
fn with_policy<'a>(
    shared: &'a Shared,
    upstream: &'a Upstream,
    req: Request<UpstreamBody>,
    upgrade: Option<PendingUpgrade>,
    downstream: &Downstream<'_>,
    attempt_timeout: Option<Duration>,
    policy: &'a BackendPolicy,
    route: &'a str,
    sticky: Option<crate::session::Sticky>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a>> {
    #[cfg(test)]
    EXCHANGES.with(|n| n.set(n.get() + 1));
    // Before the future: the certificate is borrowed only for now.
    let tls = shared.clients.tls_for(upstream, downstream.client_cert);
    // ConsistentHash by SourceIP: the client's address, while `downstream` is at hand.
    let client = policy
        .load_balancer
        .as_ref()
        .filter(|lb| {
            matches!(
                lb.kind,
                weir_snapshot::LbKind::ConsistentHash {
                    on: weir_snapshot::HashOn::SourceIp,
                    ..
                }
            )
        })
        .and_then(|_| balance::client_ip(&req, downstream.client_ip));
    if let Some(limit) = policy.request_buffer {
        if let Err(err) = request_buffer::check_length(req.headers(), limit) {
            return Box::pin(std::future::ready(Err(err)));
        }
    }
    // The body limit (read whole): before breaker admission and any connection
    // ([`request_buffer`]). (A fault delay ran in phase 3, before this.)
    if let Some(limit) = policy.request_buffer {
        return Box::pin(async move {
            let req = request_buffer::buffered(req, limit).await?;
            admitted(
                shared,
                upstream,
                req,
                upgrade,
                tls,
                attempt_timeout,
                policy,
                route,
                client,
                sticky,
            )
            .await
        });
    }
    admitted(
        shared,
        upstream,
        req,
        upgrade,
        tls,
        attempt_timeout,
        policy,
        route,
        client,
        sticky,
    )
}

#[cfg(test)]
thread_local! {
    /// Requests this thread sent through [`with_policy`] (tests: which routes take it).
    static EXCHANGES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// [`with_policy`] after any fault delay: breaker admission, then the exchange.
#[allow(clippy::too_many_arguments)]
fn admitted<'a>(
    shared: &'a Shared,
    upstream: &'a Upstream,
    req: Request<UpstreamBody>,
    upgrade: Option<PendingUpgrade>,
    tls: Result<Option<UpstreamTlsConnect>, ProxyError>,
    attempt_timeout: Option<Duration>,
    policy: &'a BackendPolicy,
    route: &'a str,
    client: Option<IpAddr>,
    sticky: Option<crate::session::Sticky>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a>> {
    let breaker = policy.circuit_breaker.map(|limits| {
        let made = shared.breakers.get_or_try_insert(&policy.id, || {
            Ok::<_, std::convert::Infallible>(Breaker::new(limits))
        });
        match made {
            Ok(b) => b,
            Err(never) => match never {},
        }
    });
    let in_flight = match &breaker {
        None => None,
        Some(b) => match b.admit() {
            Some(guard) => Some(guard),
            None => {
                shared.metrics.record_breaker_overflow(route);
                return Box::pin(std::future::ready(Err(ProxyError::UpstreamOverflow(
                    upstream.name.clone(),
                ))));
            }
        },
    };
    let budget = match (&policy.retry, policy.retry_budget) {
        (Some(_), Some(config)) => {
            let made = shared.retry_budgets.get_or_try_insert(&policy.id, || {
                Ok::<_, std::convert::Infallible>(Budget::new(config))
            });
            match made {
                Ok(b) => Some(b),
                Err(never) => match never {},
            }
        }
        _ => None,
    };
    // `loadBalancer`: the balancer of this policy over this upstream, the request's hash key
    // (and a cookie to issue).
    let (balancer, key, cookie) = match &policy.load_balancer {
        None => (None, None, None),
        Some(lb) => {
            let b = shared.balancers.get(policy.id, lb, upstream);
            let (key, cookie) = match b.hash_on() {
                None => (None, None),
                Some(on) => balance::request_key(on, &req, client),
            };
            (Some(b), key, cookie)
        }
    };
    // One box, holding the exchange as `send_with_policy` builds it: the attempt loop and
    // what the response gets after it, in one future (each `async` layer would hold its
    // arguments again and move the one inside it: bench/results/2026-12-07-policies-4.md).
    Box::pin(shared.clients.send_with_policy(
        &shared.metrics,
        upstream,
        req,
        attempt_timeout,
        tls,
        policy,
        retry::Held {
            breaker,
            in_flight,
            budget,
        },
        route,
        balancer.map(|b| (b, key)),
        retry::After {
            upgrade,
            cookie,
            sticky,
            session_key: &shared.session_key,
        },
    ))
}

/// The client's hop-by-hop headers removed (those its `Connection` names and the RFC 9110
/// §7.6.1 list, [`prepare_headers`]), before any filter runs; a WebSocket upgrade
/// (`Connection: upgrade`, `Upgrade: websocket`, HTTP/1.1) is taken out to be tunnelled.
/// Every other `Upgrade` (h2c, TLS…) is dropped: the request goes on as a plain one, as RFC
/// 9110 §7.8 lets a server ignore Upgrade.
///
/// (A request with both Transfer-Encoding and Content-Length never gets here with both:
/// hyper reads it by the chunks, drops the Content-Length and closes the connection after
/// the answer, as RFC 9112 §6.3 asks.)
pub(crate) fn strip_hop_by_hop(parts: &mut http::request::Parts) -> Option<PendingUpgrade> {
    let upgrade = take_upgrade(parts);
    prepare_headers(&mut parts.headers, None);
    upgrade
}

/// The upstream response as the client gets it: hop-by-hop headers removed, body streamed.
fn into_downstream(
    upstream: &Upstream,
    response: Response<PooledBody>,
    upgrade: Option<PendingUpgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
    checked(upstream, response, upgrade).map(boxed)
}

/// The response's body in the one box a response body gets.
fn boxed(response: Response<PooledBody>) -> Response<ProxyBody> {
    response.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

/// [`into_downstream`] before its body is boxed: hop-by-hop headers removed, framing and
/// upgrade checked.
/// A 101 switches only to the protocol the client asked for (RFC 9110 §15.2.2): a 101 to a
/// request that asked for no upgrade, or naming another protocol, is the backend's fault
/// (502), and nothing is tunnelled — what the client sends next is a new request, routed.
fn checked(
    upstream: &Upstream,
    mut response: Response<PooledBody>,
    upgrade: Option<PendingUpgrade>,
) -> Result<Response<PooledBody>, ProxyError> {
    // RFC 9112 §6.1: both framings at once "ought to be handled as an error" (response
    // splitting); hyper decoded the chunks but kept the Content-Length, which the client
    // would get with another body length. nginx answers 502 too. The connection is not
    // reused: the unread body is dropped with it.
    if response.headers().contains_key(TRANSFER_ENCODING)
        && response
            .headers()
            .contains_key(http::header::CONTENT_LENGTH)
    {
        return Err(bad_upstream(
            upstream,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(upgrade) = upgrade else {
            return Err(bad_upstream(
                upstream,
                "a 101 to a request that asked for no upgrade",
            ));
        };
        let same = response.headers().get(UPGRADE).is_some_and(|p| {
            p.as_bytes()
                .eq_ignore_ascii_case(upgrade.protocol.as_bytes())
        });
        if !same {
            return Err(bad_upstream(
                upstream,
                "a 101 switching to another protocol",
            ));
        }
        // Proof that the backend read the handshake and switched (RFC 6455 §4.2.2), not a
        // status it was made to echo: else the client's next bytes would reach a backend
        // still speaking HTTP as requests no route let through.
        let accepted = response
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|a| a.as_bytes() == upgrade.accept.as_bytes());
        if !accepted {
            return Err(bad_upstream(
                upstream,
                "a 101 without the Sec-WebSocket-Accept of the client's key",
            ));
        }
        prepare_headers(response.headers_mut(), Some(&upgrade.protocol));
        tunnel(upgrade.downstream, hyper::upgrade::on(&mut response));
    } else {
        prepare_headers(response.headers_mut(), None);
    }
    Ok(response)
}

fn bad_upstream(upstream: &Upstream, what: &'static str) -> ProxyError {
    ProxyError::UpstreamProtocol {
        upstream: upstream.name.clone(),
        what,
    }
}

/// A client asked to switch to WebSocket (HTTP/1.1 `Upgrade`).
pub(crate) struct PendingUpgrade {
    protocol: HeaderValue,
    /// The `Sec-WebSocket-Accept` a backend that really switched answers with.
    accept: String,
    downstream: OnUpgrade,
}

/// The only upgrade Weir tunnels: a WebSocket handshake (RFC 6455 §4.1: GET, HTTP/1.1,
/// `Upgrade: websocket`, a `Sec-WebSocket-Key`).
fn take_upgrade(parts: &mut http::request::Parts) -> Option<PendingUpgrade> {
    if parts.version != Version::HTTP_11
        || parts.method != Method::GET
        || !connection_has(&parts.headers, "upgrade")
    {
        return None;
    }
    let protocol = parts.headers.get(UPGRADE)?.clone();
    if !protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let accept = websocket_accept(parts.headers.get(SEC_WEBSOCKET_KEY)?.as_bytes());
    let downstream = parts.extensions.remove::<OnUpgrade>()?;
    Some(PendingUpgrade {
        protocol,
        accept,
        downstream,
    })
}

/// Copy bytes both ways once both sides have switched protocols.
fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        if let Err(err) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %err, "upgraded connection ended with an error");
        }
    });
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + the RFC 6455 GUID)).
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers: Connection and the headers it names, Keep-Alive,
/// Proxy-Connection, Transfer-Encoding, Upgrade and TE (but `TE: trailers` is kept). With
/// `upgrade`, `Connection: upgrade` and that `Upgrade` are kept for the next hop.
pub(crate) fn prepare_headers(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // Fast paths, the common cases: one pass over the (few) names instead of a hash lookup
    // per hop-by-hop name. Most requests carry none; most responses carry only
    // `Connection: keep-alive` (or `close`), which names nothing else to remove.
    if upgrade.is_none() {
        let mut hop_by_hop = headers.keys().filter(|name| is_hop_by_hop(name));
        match (hop_by_hop.next(), hop_by_hop.next()) {
            (None, _) => return,
            (Some(name), None) if name == CONNECTION && !connection_names_headers(headers) => {
                headers.remove(CONNECTION);
                return;
            }
            _ => {}
        }
    }
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    // `Connection: keep-alive` / `close` (what most peers send) names no header to strip
    // beyond the fixed list below: skip collecting the names it lists.
    if connection_names_headers(headers) {
        let listed: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            // A client must not be able to strip the Host the route was chosen by.
            .filter(|name| name != HOST)
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &TE,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
}

/// Whether `Connection` lists anything but `keep-alive` and `close`.
fn connection_names_headers(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            !(t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("close"))
        })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Append the client IP to X-Forwarded-For and set X-Forwarded-Proto.
pub(crate) fn forwarded_headers(headers: &mut HeaderMap, client_ip: &HeaderValue, tls: bool) {
    static HTTP: HeaderValue = HeaderValue::from_static("http");
    static HTTPS: HeaderValue = HeaderValue::from_static("https");
    let proto = if tls { &HTTPS } else { &HTTP };
    headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
    // Fast path, the common case: no X-Forwarded-For from the client yet (one hash of the
    // name for the lookup and the insert).
    if let http::header::Entry::Vacant(slot) = headers.entry(X_FORWARDED_FOR.clone()) {
        slot.insert(client_ip.clone());
        return;
    }
    let mut combined = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if value.to_str().is_ok() {
            combined.extend_from_slice(value.as_bytes());
            combined.extend_from_slice(b", ");
        }
    }
    combined.extend_from_slice(client_ip.as_bytes());
    match HeaderValue::from_maybe_shared(Bytes::from(combined)) {
        Ok(value) => {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        Err(_) => {
            headers.append(X_FORWARDED_FOR.clone(), client_ip.clone());
        }
    }
}

#[cfg(test)]
mod tests;
