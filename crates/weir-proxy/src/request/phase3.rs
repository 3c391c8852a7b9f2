//! Phase 3, request (asynchronous): the steps that wait before the request goes on —
//! external auth, external processors (ExtensionPolicy), a global rate limit, a fault delay, a cache lookup, the endpoint picker —
//! in this order, each only where the route's compiled action has it.
//!
//! Only a route whose action says it has one ([`weir_snapshot::RouteAction::needs_async`])
//! comes here, inside one boxed future (`request::handle_action`); every other route goes
//! from phase 2 straight to phase 4 and pays nothing for this phase. A step may answer (its
//! answer goes through phase 6 like any local answer), fail with a [`ProxyError`] (the one
//! error table), or change the request; it may read the request body whole with
//! [`RequestBody::buffer`], which keeps the bytes for the upstream.

use bytes::Bytes;
use http::request::Parts;
use hyper::body::{Body as _, Incoming};

use super::{Exchange, Flow};
use crate::conn::ConnCtx;
use crate::error::ProxyError;
use crate::upstream::{self, BodyTimer, CopySender, UpstreamBody};

/// Runs the route's asynchronous steps in order; the first answer ends the phase.
/// `upgrade`: the request asks for a WebSocket tunnel (never answered from a cache).
pub(super) async fn run(
    conn: &ConnCtx,
    ex: &mut Exchange<'_>,
    parts: &mut Parts,
    body: &mut RequestBody,
    upgrade: bool,
) -> Result<Flow, ProxyError> {
    let action = ex.action;
    // External authorization (`crate::ext_auth`): first, so nothing else is spent on a
    // request it refuses.
    if let Some(auth) = action.ext_auth.as_deref() {
        let origin = ex.kept.as_ref().and_then(|k| k.origin.as_ref());
        match ext_auth(conn, auth, parts, body).await {
            Ok(Flow::Answer(a)) => return Ok(Flow::Answer(a)),
            Ok(Flow::Continue) => {}
            // A failed check on a route with CORS: answered here so it gets the CORS headers.
            Err(err) => return crate::security::refusal(conn, origin, "", err).map(Flow::Answer),
        }
    }
    // An ExtensionPolicy's external processors, request side (`crate::ext_proc`): their
    // streams wait in `kept` for the response headers.
    if let Some(x) = action.ext_proc.as_deref() {
        match crate::ext_proc::request(&conn.shared, x, parts, body).await? {
            crate::ext_proc::Step::Answer(a) => return Ok(Flow::Answer(a)),
            crate::ext_proc::Step::Continue(None) => {}
            crate::ext_proc::Step::Continue(pending) => {
                ex.kept.get_or_insert_with(Default::default).ext_proc = pending;
            }
        }
    }
    // A BackendTrafficPolicy's global rate limit (`crate::rate_limit::global`): one Redis
    // round trip; its headers go on the response like a local limit's.
    if let Some(rl) = action.policy.as_deref().and_then(|p| p.rate_limit.as_ref()) {
        if !rl.global.is_empty() {
            let address = crate::rate_limit::client_address(&parts.extensions, conn.peer.ip());
            let step = crate::rate_limit::global::step(
                &conn.shared,
                &action.route.route,
                rl,
                parts,
                address,
            )
            .await;
            // Without the headers (`headers.disableRateLimitHeaders`) nothing is kept: phase 2
            // kept no local decision either.
            let headers = conn.rate_limit_headers();
            match step {
                crate::rate_limit::global::Step::Answer(mut answer, decision) => {
                    if headers {
                        ex.kept.get_or_insert_with(Default::default).rate_limit = decision;
                    } else {
                        crate::rate_limit::strip_headers(answer.headers_mut());
                    }
                    return Ok(Flow::Answer(answer));
                }
                crate::rate_limit::global::Step::Pass(Some(d)) if headers => {
                    let kept = ex.kept.get_or_insert_with(Default::default);
                    kept.rate_limit = Some(match kept.rate_limit.take() {
                        None => d,
                        Some(l) => l.tighter(d),
                    });
                }
                crate::rate_limit::global::Step::Pass(_) => {}
            }
        }
    }
    // A BackendTrafficPolicy's fault delay (`crate::fault`): before any upstream connection
    // or breaker place is taken, so a delayed request holds neither.
    if let Some(policy) = action.policy.as_deref() {
        if let Some(delay) = crate::fault::delay(&conn.shared.metrics, policy, &action.route.route)
        {
            tokio::time::sleep(delay).await;
            ex.kept.get_or_insert_with(Default::default).flag = Some("fault_delay");
        }
    }
    // The response cache's lookup (`crate::cache`): a hit answers, and goes through phases 6
    // and 7 as an upstream response would (so it is compressed for this client).
    if let Some(policy) = action.policy.as_deref().filter(|_| !upgrade) {
        if let Some(cfg) = policy.response_cache {
            let metrics = &conn.shared.metrics.cache;
            let Ok(cache) = conn.shared.caches.get_or_try_insert(&policy.id, || {
                Ok::<_, std::convert::Infallible>(crate::cache::Cache::new(cfg, metrics))
            });
            match crate::cache::lookup_coalesced(&cache, metrics, &action.route, parts).await {
                crate::cache::Lookup::Hit(hit) => {
                    ex.kept.get_or_insert_with(Default::default).cache_hit = true;
                    return Ok(Flow::Answer(hit));
                }
                crate::cache::Lookup::Forward(pending) => {
                    ex.kept.get_or_insert_with(Default::default).cache = Some(*pending);
                }
                crate::cache::Lookup::Bypass | crate::cache::Lookup::Wait(_) => {}
            }
        }
    }
    Ok(Flow::Continue)
}

/// The ext auth step: the body read first when the configuration forwards it (413 beyond
/// its limit), then the check.
async fn ext_auth(
    conn: &ConnCtx,
    auth: &weir_snapshot::ExtAuth,
    parts: &mut Parts,
    body: &mut RequestBody,
) -> Result<Flow, ProxyError> {
    let forwarded = if auth.body_max > 0 && body.has_body() {
        Some(
            body.buffer(&mut parts.headers, u64::from(auth.body_max))
                .await?,
        )
    } else {
        None
    };
    Ok(
        match crate::ext_auth::check(&conn.shared, auth, parts, forwarded.as_ref()).await? {
            crate::ext_auth::Verdict::Continue => Flow::Continue,
            crate::ext_auth::Verdict::Answer(a) => Flow::Answer(a),
        },
    )
}

/// The client's request body before the attempt loop.
pub(crate) enum RequestBody {
    /// As the client sends it, not read yet, with the timer its reading is under.
    Streaming(Incoming, Option<BodyTimer>),
    /// Read whole by a phase ([`RequestBody::buffer`]): what the upstream and mirrors get.
    Buffered(Bytes),
}

impl RequestBody {
    /// The client's body: as it streams in, or as Body-Based Routing read it before routing
    /// ([`crate::model_name`]; sockets without it pay one check).
    pub(crate) fn from_client(
        conn: &ConnCtx,
        extensions: &mut http::Extensions,
        body: Incoming,
        stall: Option<BodyTimer>,
    ) -> Self {
        match crate::model_name::take_body(conn, extensions) {
            Some(bytes) => RequestBody::Buffered(bytes),
            None => RequestBody::Streaming(body, stall),
        }
    }

    /// Whether there is a body at all.
    pub(crate) fn has_body(&self) -> bool {
        match self {
            RequestBody::Streaming(body, _) => !body.is_end_stream(),
            RequestBody::Buffered(bytes) => !bytes.is_empty(),
        }
    }

    /// Reads the body whole (at most `limit` bytes, else [`ProxyError::BodyTooLarge`]: 413,
    /// at once when the `Content-Length` says so) and keeps it for the upstream, whose
    /// request then carries its exact `Content-Length`. A stalled client fails as it would
    /// upstream (408). Read once: a second call returns the same bytes.
    pub(crate) async fn buffer(
        &mut self,
        headers: &mut http::HeaderMap,
        limit: u64,
    ) -> Result<Bytes, ProxyError> {
        let bytes = match std::mem::replace(self, RequestBody::Buffered(Bytes::new())) {
            RequestBody::Buffered(bytes) => bytes,
            RequestBody::Streaming(body, _) if body.is_end_stream() => Bytes::new(),
            RequestBody::Streaming(body, stall) => {
                upstream::read_whole(upstream::tee(body, Vec::new(), stall), headers, limit).await?
            }
        };
        *self = RequestBody::Buffered(bytes.clone());
        Ok(bytes)
    }

    /// The body for the attempt loop, each data frame also handed to the mirror `copies`.
    pub(crate) fn into_upstream(self, copies: Vec<CopySender>) -> UpstreamBody {
        match self {
            RequestBody::Streaming(body, stall) => upstream::tee(body, copies, stall),
            RequestBody::Buffered(bytes) => upstream::tee_bytes(bytes, copies),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    /// A server whose every request's body is buffered (limit 8) and answered with what
    /// `buffer` returned, twice, then what the upstream body would carry.
    async fn serve_once(request: http::Request<String>) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(|req: http::Request<Incoming>| async move {
                let (mut parts, body) = req.into_parts();
                let mut body = RequestBody::Streaming(body, None);
                let answer = match body.buffer(&mut parts.headers, 8).await {
                    Err(err) => format!("error {}", err.classify().status.as_u16()),
                    Ok(first) => {
                        let second = body.buffer(&mut parts.headers, 8).await.unwrap();
                        let sent = body.into_upstream(Vec::new()).collect().await.unwrap();
                        format!(
                            "{:?} {:?} {:?} {:?}",
                            first,
                            second,
                            sent.to_bytes(),
                            parts.headers.get(http::header::CONTENT_LENGTH)
                        )
                    }
                };
                Ok::<_, std::convert::Infallible>(http::Response::new(answer))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(body: &str, chunked: bool) -> http::Request<String> {
        let mut req = http::Request::post("/").header("host", "h");
        if chunked {
            req = req.header("transfer-encoding", "chunked");
        }
        req.body(body.to_string()).unwrap()
    }

    #[tokio::test]
    async fn buffer_keeps_the_body_for_the_upstream_and_refuses_more_than_the_limit() {
        let (_, got) = serve_once(post("12345678", false)).await;
        assert_eq!(got, r#"b"12345678" b"12345678" b"12345678" Some("8")"#);
        // A chunked body: read up to the limit, then sent with its exact length.
        let (_, got) = serve_once(post("abc", true)).await;
        assert_eq!(got, r#"b"abc" b"abc" b"abc" Some("3")"#);
        // Over the limit, by Content-Length and by the bytes read.
        let (_, got) = serve_once(post("123456789", false)).await;
        assert_eq!(got, "error 413");
        let (_, got) = serve_once(post("123456789", true)).await;
        assert_eq!(got, "error 413");
        // No body at all.
        let (_, got) = serve_once(http::Request::get("/").body(String::new()).unwrap()).await;
        assert_eq!(got, r#"b"" b"" b"" None"#);
    }
}
