//! The per-request state the response side needs ([`Exchange`], with the policy phases'
//! part boxed in [`Kept`]), and the response phases that read it: phase 6, response headers
//! ([`Exchange::response_headers`]), and phase 7, response body
//! ([`Exchange::response_body`]), on upstream responses and on the answers the request
//! phases made ([`local`]).

use http::{HeaderValue, Response};
use weir_snapshot::{Backend, RouteAction};

use super::Forward;
use crate::body::ProxyBody;
use crate::filter;

/// Per-request state the response phases need, filled in by the request phases (one struct,
/// moved into the response side whole, instead of captures and `&mut Option` parameters).
pub(super) struct Exchange<'s> {
    pub(super) action: &'s RouteAction,
    /// The backend picked (phase 4); `None` when a request phase answered first.
    pub(super) backend: Option<&'s Backend>,
    /// What the policy phases keep for the response side; `None` (one word) for requests
    /// no such phase acted on, so routes without policies carry nothing more.
    pub(super) kept: Option<Box<Kept<'s>>>,
}

/// Per-request state of the policy phases for the response side (boxed in [`Exchange`]).
#[derive(Default)]
pub(super) struct Kept<'s> {
    /// The request's Origin, kept only for routes with a CORS filter.
    pub(super) origin: Option<HeaderValue>,
    /// The access-log flag of a response that came from the backend after a phase acted on
    /// the request (`fault_delay`).
    pub(super) flag: Option<&'static str>,
    /// The coding the client accepts best, for routes with `compression` (phase 2; used in
    /// phase 7), and the metrics it counts in.
    pub(super) accepted: Option<(
        crate::compress::Accepted,
        &'s crate::compress::CompressMetrics,
    )>,
    /// A forwarded request of a route with `responseCache`: what the fill stores its
    /// response with.
    pub(super) cache: Option<crate::cache::Pending>,
    /// Phase 3 answered from the response cache: the answer goes through phases 6 and 7 as
    /// an upstream response would.
    pub(super) cache_hit: bool,
    /// What a rate limit decided (phase 2 local, phase 3 global): its `x-ratelimit-*`
    /// headers go on the response.
    pub(super) rate_limit: Option<crate::rate_limit::Decision>,
    /// An ExtensionPolicy's processor streams awaiting the response headers (phase 3).
    pub(super) ext_proc: Option<Box<crate::ext_proc::Pending>>,
}

impl Exchange<'_> {
    /// Phase 6, response headers: the rule's and the backend's response filters and the
    /// CORS headers, on upstream responses (`local` false) and on answers the request phases
    /// made (`local` true): refusals (401, 403, 429, an ext auth denial) carry the CORS
    /// headers too, so a browser can read them; preflight answers carry theirs already.
    pub(super) fn response_headers(&self, headers: &mut http::HeaderMap, local: bool) {
        filter::apply_response(&self.action.filters, headers);
        if let Some(backend) = self.backend {
            filter::apply_response(&backend.filters, headers);
        }
        if !local || !headers.contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            let origin = self.kept.as_ref().and_then(|k| k.origin.as_ref());
            filter::cors::apply_response(&self.action.filters, origin, headers);
            let security_cors = self.action.security.as_ref().and_then(|s| s.cors.as_ref());
            if let (Some(cors), Some(origin)) = (security_cors, origin) {
                filter::cors::apply_one(cors, origin, headers);
            }
        }
        if let Some(decision) = self.kept.as_ref().and_then(|k| k.rate_limit.as_ref()) {
            decision.write(headers);
        }
    }

    /// Phase 7, response body: compression (`compress.rs`), for routes whose policy has it.
    pub(super) fn response_body(&self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let accepted = self.kept.as_ref().and_then(|k| k.accepted);
        match (accepted, self.action.policy.as_deref()) {
            (Some((accepted, metrics)), Some(policy)) => match &policy.compression {
                Some(c) => crate::compress::response(metrics, c, accepted, response),
                None => response,
            },
            _ => response,
        }
    }
}

/// A local answer through phase 6.
pub(super) fn local<F>(ex: &Exchange<'_>, answer: Response<ProxyBody>) -> Forward<F> {
    Forward::Answer(local_response(ex, answer))
}

/// Phase 6 on an answer a request phase made.
pub(super) fn local_response(
    ex: &Exchange<'_>,
    mut answer: Response<ProxyBody>,
) -> Response<ProxyBody> {
    ex.response_headers(answer.headers_mut(), true);
    answer
}
