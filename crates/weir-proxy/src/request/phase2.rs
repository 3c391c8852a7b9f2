//! Phase 2, request (synchronous): the steps that may answer or deny without waiting, run
//! in order from [`super::handle_action`]: the route's SecurityPolicy and the rule's request
//! filters ([`request_phases`]), then under a BackendTrafficPolicy its local rate limit
//! ([`local_rate_limit`]), its fault abort (`crate::fault`), and the coding a route with
//! `compression` answers in ([`accept_coding`]).

use http::request::Parts;
use http::{Method, Response};

use super::{Exchange, Flow};
use crate::body::ProxyBody;
use crate::conn::ConnCtx;
use crate::error::ProxyError;
use crate::filter::{self, RedirectBase};

/// Phase 2, request (synchronous): the route's SecurityPolicy (fail closed, CORS preflight,
/// authentication, authorization: [`crate::security`]), then the rule's request filters; a
/// redirect or a CORS preflight answers here. (The local rate limit and the fault abort
/// follow, in [`super::handle_action`].)
pub(super) fn request_phases(
    conn: &ConnCtx,
    ex: &Exchange<'_>,
    parts: &mut Parts,
    base: &RedirectBase<'_>,
) -> Result<Flow, ProxyError> {
    if let Some(security) = ex.action.security.as_deref() {
        let origin = ex.kept.as_ref().and_then(|k| k.origin.as_ref());
        if let Some(answer) = crate::security::run(conn, security, &ex.action.filters, parts)
            .or_else(|err| crate::security::refusal(conn, origin, base.host, err).map(Some))?
        {
            return Ok(Flow::Answer(answer));
        }
    }
    Ok(
        match filter::apply_request(&ex.action.filters, parts, base)? {
            Some(answer) => Flow::Answer(answer),
            None => Flow::Continue,
        },
    )
}

/// Phase 2: the route's local rate limit. The decision's headers go on the response
/// (phase 6); over the limit, the 429 answers here.
pub(super) fn local_rate_limit(
    conn: &ConnCtx,
    ex: &mut Exchange<'_>,
    rl: &weir_snapshot::RateLimit,
    parts: &Parts,
) -> Option<Response<ProxyBody>> {
    if rl.local.is_empty() {
        return None;
    }
    let client = weir_snapshot::rate_limit::Client {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        address: crate::rate_limit::client_address(&parts.extensions, conn.peer.ip()),
    };
    let decision = conn.shared.local_limits.check(rl, &client)?;
    let headers = conn.rate_limit_headers();
    if decision.allowed {
        // Without the headers an admitted request keeps nothing for the response side.
        if headers {
            ex.kept.get_or_insert_with(Default::default).rate_limit = Some(decision);
        }
        return None;
    }
    let metrics = &conn.shared.metrics;
    metrics.record_rate_limited(&ex.action.route.route, "local");
    metrics.record_error(ProxyError::RateLimited.classify().label);
    let mut answer = crate::rate_limit::refusal(&ProxyError::RateLimited, Some(&decision));
    if !headers {
        crate::rate_limit::strip_headers(answer.headers_mut());
    }
    Some(answer)
}

/// Phase 2 under a BackendTrafficPolicy with `compression`: the coding the client takes, kept
/// for phase 7 (never for HEAD or an upgrade: no body to compress).
pub(super) fn accept_coding<'s>(
    conn: &'s ConnCtx,
    ex: &mut Exchange<'s>,
    compression: &weir_snapshot::Compression,
    parts: &Parts,
    upgrade: bool,
) {
    if parts.method != Method::HEAD && !upgrade {
        ex.kept.get_or_insert_with(Default::default).accepted = Some((
            crate::compress::negotiate(compression, &parts.headers),
            &conn.shared.metrics.compress,
        ));
    }
}
