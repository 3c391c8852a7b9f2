//! External authorization (phase 3, first step): the request is checked by an auth service
//! before anything else asynchronous happens to it. One engine for Gateway API's HTTPRoute
//! `ExternalAuth` filter and SecurityPolicy `extAuth` ([`weir_snapshot::ExtAuth`]).
//!
//! - HTTP ([`http_check`]): the client's method and `path_prefix` + path, its Host and
//!   Authorization, the allowed headers, `Content-Length` of what is forwarded (0 without a
//!   forwarded body), sent over the auth upstream's pools (TLS from its BackendTLSPolicy,
//!   its endpoints). A 2xx lets the request through with the answer's headers (all but
//!   Host and framing ones, or the listed ones) set on it; anything else is the client's
//!   answer: status, headers, body (at most [`MAX_DENIAL_BODY`] bytes).
//! - gRPC ([`grpc`]): `envoy.service.auth.v3.Authorization/Check` over one tonic channel per
//!   auth configuration, kept in [`ExtAuthClients`] beside the snapshot and reused. An OK
//!   status applies the answer's header mutations (set / append / remove); any other is a
//!   denial with the `DeniedHttpResponse`'s status (403 when absent), headers and body.
//!
//! A failure of the service itself (no endpoint, connect error, timeout, malformed answer)
//! lets the request through with `failOpen`, else is refused with 403
//! ([`ProxyError::ExtAuthFailed`], Envoy's `status_on_error`). An unresolved service fails
//! closed with 500 whatever `failOpen` says.

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, Response};
use weir_snapshot::{BackendTarget, ExtAuth, ExtAuthProtocol};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::Shared;

mod grpc;
mod http_check;

pub(crate) use grpc::ExtAuthClients;

/// The most of an auth service's denial body passed to the client.
pub(crate) const MAX_DENIAL_BODY: usize = 64 * 1024;

/// What the check decided.
pub(crate) enum Verdict {
    /// Go on (the request's headers may have been changed).
    Continue,
    /// Answer the client with this (the service's denial).
    Answer(Response<ProxyBody>),
}

/// Check the request (`parts`; `body`: the client's buffered body when the configuration
/// forwards it, at most `auth.body_max` bytes). Allowed requests get the service's header
/// changes in `parts`.
pub(crate) async fn check(
    shared: &Shared,
    auth: &ExtAuth,
    parts: &mut http::request::Parts,
    body: Option<&Bytes>,
) -> Result<Verdict, ProxyError> {
    let upstream = match &auth.service {
        BackendTarget::Upstream(u) => u,
        BackendTarget::Invalid(why) => return Err(ProxyError::ExtAuthInvalid(why.clone())),
    };
    let body = if auth.body_max > 0 { body } else { None };
    let outcome = tokio::time::timeout(auth.timeout, async {
        match &auth.protocol {
            ExtAuthProtocol::Http {
                path_prefix,
                response_headers,
            } => {
                http_check::check(
                    shared,
                    auth,
                    upstream,
                    path_prefix,
                    response_headers.as_deref(),
                    parts,
                    body,
                )
                .await
            }
            ExtAuthProtocol::Grpc => grpc::check(shared, auth, upstream, parts, body).await,
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(Failure(format!(
            "{} did not answer within {:?}",
            upstream.name, auth.timeout
        )))
    });
    match outcome {
        Ok(v) => Ok(v),
        Err(Failure(why)) => {
            shared.metrics.ext_auth_failure(auth.fail_open);
            if auth.fail_open {
                tracing::debug!(service = %upstream.name, "ext auth failed open: {why}");
                Ok(Verdict::Continue)
            } else {
                Err(ProxyError::ExtAuthFailed(why.into()))
            }
        }
    }
}

/// The auth service failed (as opposed to answering a denial).
pub(crate) struct Failure(pub(crate) String);

/// Headers never copied from an auth answer to the upstream request or the client:
/// hop-by-hop and framing headers, and Host.
pub(crate) fn never_copied(name: &HeaderName) -> bool {
    name == HOST
        || name == CONNECTION
        || name == CONTENT_LENGTH
        || name == TRANSFER_ENCODING
        || name == TE
        || name == TRAILER
        || name == UPGRADE
        || matches!(
            name.as_str(),
            "keep-alive" | "proxy-connection" | "proxy-authenticate" | "proxy-authorization"
        )
}

/// Headers of an allowing HTTP answer that describe the answer itself, not the request: not
/// copied when every header is (an empty allowed list).
fn about_the_answer(name: &HeaderName) -> bool {
    name == CONTENT_TYPE
        || matches!(
            name.as_str(),
            "content-encoding"
                | "date"
                | "server"
                | "vary"
                | "cache-control"
                | "expires"
                | "last-modified"
                | "etag"
                | "accept-ranges"
                | "set-cookie"
        )
}

/// The client's headers the service gets: `allowed` ones (default `None`: every header but
/// framing ones, as gRPC sends), plus `always` whatever the list says.
pub(crate) fn selected_headers<'a>(
    headers: &'a HeaderMap,
    allowed: Option<&'a [HeaderName]>,
    always: &'a [HeaderName],
) -> impl Iterator<Item = (&'a HeaderName, &'a http::HeaderValue)> + 'a {
    headers.iter().filter(move |(name, _)| {
        always.contains(name)
            || match allowed {
                Some(list) => list.contains(name),
                None => !never_copied(name),
            }
    })
}

/// Whether `name` is copied from an allowing HTTP answer: the listed ones, or (no list)
/// every header that is about the request.
pub(crate) fn copied_to_upstream(name: &HeaderName, listed: Option<&[HeaderName]>) -> bool {
    if never_copied(name) {
        return false;
    }
    match listed {
        Some(list) => list.contains(name),
        None => !about_the_answer(name),
    }
}

/// A denial answer: status, the service's headers (minus framing ones), its body.
pub(crate) fn denial(
    status: http::StatusCode,
    headers: impl IntoIterator<Item = (HeaderName, http::HeaderValue)>,
    body: Bytes,
) -> Response<ProxyBody> {
    use http_body_util::{BodyExt, Full};
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let out = response.headers_mut();
    for (name, value) in headers {
        if !never_copied(&name) {
            out.append(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_the_always_sent_and_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "Bearer x".parse().unwrap_or_else(|_| unreachable!()),
        );
        h.insert("x-a", "1".parse().unwrap_or_else(|_| unreachable!()));
        h.insert("x-b", "2".parse().unwrap_or_else(|_| unreachable!()));
        h.insert(
            CONNECTION,
            "close".parse().unwrap_or_else(|_| unreachable!()),
        );
        let always = [http::header::AUTHORIZATION];
        let listed = [HeaderName::from_static("x-b")];
        let names = |allowed: Option<&[HeaderName]>, always: &[HeaderName]| {
            let mut v: Vec<_> = selected_headers(&h, allowed, always)
                .map(|(n, _)| n.as_str().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(Some(&listed), &always), ["authorization", "x-b"]);
        assert_eq!(names(Some(&[]), &always), ["authorization"]);
        assert_eq!(
            names(None, &[]),
            ["authorization", "x-a", "x-b"],
            "all but framing"
        );
    }

    #[test]
    fn framing_and_answer_headers_are_not_copied() {
        assert!(never_copied(&HOST));
        assert!(never_copied(&TRANSFER_ENCODING));
        assert!(!never_copied(&HeaderName::from_static("x-current-user")));
        assert!(about_the_answer(&CONTENT_TYPE));
        assert!(!about_the_answer(&HeaderName::from_static(
            "x-current-user"
        )));
    }
}
