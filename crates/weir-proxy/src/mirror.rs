//! RequestMirror: a copy of the request goes to each mirror backend, fire-and-forget. The
//! copy is sent from its own task, its answer is read and dropped, and nothing about it
//! (slowness, errors) reaches the main request. At most [`MAX_IN_FLIGHT`] copies are in
//! flight per process; past that, copies are dropped (and counted in the log) rather than
//! queued, so a slow mirror backend cannot build up memory.
//!
//! Copies carry the method, URI, headers and body. A body is teed while it streams to the
//! main backend ([`crate::upstream::tee`]): each data frame is also handed to the copies, up to
//! a few frames ahead of them; a copy that falls further behind is given up (its request
//! fails, the main request never waits).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use weir_snapshot::{Filter, Mirror};

use crate::upstream::{self, CopySender, UpstreamBody};
use crate::Shared;

/// Mirror copies in flight at once, across all routes.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// A mirror copy that has not completed by then is abandoned.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

static IN_FLIGHT: Semaphore = Semaphore::const_new(MAX_IN_FLIGHT);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The request as a mirror sees it: what the filters left, without the body.
pub(crate) struct MirrorRequest<'a> {
    pub(crate) parts: &'a http::request::Parts,
    /// Whether the downstream request has a body (then the copies get it teed).
    pub(crate) has_body: bool,
    pub(crate) client_ip: &'a HeaderValue,
    pub(crate) tls: bool,
    /// The certificate the Gateway presents to TLS backends.
    pub(crate) client_cert: Option<&'a Arc<weir_snapshot::ClientCert>>,
}

/// Start a copy for each mirror filter of `filters` whose sample takes this request. For a
/// request with a body, each copy's body sender is pushed to `bodies`, for the caller to tee
/// the client's body into.
pub(crate) fn spawn_all(
    shared: &Arc<Shared>,
    filters: &[Filter],
    req: &MirrorRequest<'_>,
    bodies: &mut Vec<CopySender>,
) {
    for filter in filters {
        if let Filter::Mirror(mirror) = filter {
            spawn_one(shared, mirror, req, bodies);
        }
    }
}

fn spawn_one(
    shared: &Arc<Shared>,
    mirror: &Mirror,
    req: &MirrorRequest<'_>,
    bodies: &mut Vec<CopySender>,
) {
    if !mirror.sample.take() {
        return;
    }
    let Ok(permit) = IN_FLIGHT.try_acquire() else {
        let n = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(upstream = %mirror.upstream.name, dropped = n, "mirror copy dropped: too many in flight");
        return;
    };
    let mut copy = Request::new(());
    *copy.method_mut() = req.parts.method.clone();
    *copy.uri_mut() = req.parts.uri.clone();
    *copy.version_mut() = req.parts.version;
    *copy.headers_mut() = req.parts.headers.clone();
    let (parts, ()) = copy.into_parts();
    let body = if req.has_body {
        let (sender, body) = upstream::copy_channel();
        bodies.push(sender);
        body
    } else {
        UpstreamBody::empty()
    };
    let shared = shared.clone();
    let upstream = mirror.upstream.clone();
    let client_ip = req.client_ip.clone();
    let tls = req.tls;
    let client_cert = req.client_cert.cloned();
    tokio::spawn(async move {
        let _permit = permit;
        let send = async {
            let downstream = upstream::Downstream {
                client_ip: &client_ip,
                tls,
                client_cert: client_cert.as_deref(),
            };
            let response = upstream::forward_body(
                &shared,
                &upstream,
                parts,
                body,
                None,
                &downstream,
                None,
                None,
                None,
            )
            .await?;
            // Read the answer to its end so the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<(), crate::error::ProxyError>(())
        };
        match tokio::time::timeout(MIRROR_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(upstream = %upstream.name, error = %err, "mirror copy failed")
            }
            Err(_) => tracing::debug!(upstream = %upstream.name, "mirror copy timed out"),
        }
    });
}
