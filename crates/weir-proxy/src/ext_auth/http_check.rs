//! The HTTP auth service: the check is an HTTP request to it, sent over the upstream pools.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use weir_snapshot::{ExtAuth, Upstream};

use super::{copied_to_upstream, denial, selected_headers, Failure, Verdict, MAX_DENIAL_BODY};
use crate::upstream::UpstreamBody;
use crate::Shared;

/// Headers sent whatever `allowedHeaders` says (GEP-1494: Host, Method, Path,
/// Content-Length and Authorization; method and path travel in the request line, and
/// Content-Length is ours).
const ALWAYS: &[HeaderName] = &[AUTHORIZATION];

pub(super) async fn check(
    shared: &Shared,
    auth: &ExtAuth,
    upstream: &Upstream,
    path_prefix: &str,
    response_headers: Option<&[HeaderName]>,
    parts: &mut http::request::Parts,
    body: Option<&Bytes>,
) -> Result<Verdict, Failure> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = format!("{path_prefix}{path}");
    let uri: Uri = target
        .parse()
        .map_err(|_| Failure(format!("the check path {target:?} is not a valid URI")))?;
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(UpstreamBody::from(body.cloned().unwrap_or_default()))
        .map_err(|e| Failure(e.to_string()))?;
    let headers = req.headers_mut();
    for (name, value) in selected_headers(
        &parts.headers,
        Some(auth.allowed_headers.as_deref().unwrap_or(&[])),
        ALWAYS,
    ) {
        headers.append(name.clone(), value.clone());
    }
    // The client's Host (HTTP/2: its :authority).
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = host {
        headers.insert(HOST, host);
    }
    headers.insert(
        CONTENT_LENGTH,
        HeaderValue::from(body.map_or(0, |b| b.len() as u64)),
    );
    let response = shared
        .clients
        .send(&shared.metrics, upstream, req, Some(auth.timeout), None)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    let (answer, answer_body) = response.into_parts();
    if answer.status.is_success() {
        for (name, value) in &answer.headers {
            if copied_to_upstream(name, response_headers) {
                parts.headers.insert(name.clone(), value.clone());
            }
        }
        // The answer's body is not needed; dropping it gives the connection back or closes it.
        drop(answer_body);
        return Ok(Verdict::Continue);
    }
    let limited = http_body_util::Limited::new(answer_body, MAX_DENIAL_BODY);
    let body = limited
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| Failure(format!("the denial's body: {e}")))?;
    Ok(Verdict::Answer(denial(
        answer.status,
        {
            // `None` names repeat the previous name.
            let mut last: Option<HeaderName> = None;
            answer.headers.into_iter().filter_map(move |(n, v)| {
                if let Some(n) = n {
                    last = Some(n);
                }
                last.clone().map(|n| (n, v))
            })
        },
        body,
    )))
}
