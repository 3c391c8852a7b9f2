//! Body-Based Routing: the `bodyBasedRouting` of a ClientTrafficPolicy (Weir's own field).
//!
//! OpenAI-style inference requests name their model in the JSON body (`{"model": "…"}`),
//! which route matching cannot see. On a socket whose policy sets it, before routes are
//! matched, a request with `Content-Type: application/json` has its body read whole (at most
//! the policy's limit: a larger body gets 413, at once when its `Content-Length` says so)
//! and the top-level string `model` copied into the `X-Gateway-Model-Name` header (the name
//! the Inference Extension's Body-Based Router uses), so HTTPRoute header matches can send
//! each model to its own backend or InferencePool. The body is kept and forwarded
//! unchanged (with its exact `Content-Length`). A body that is not JSON, not an object, or
//! has no string `model` gets no header and is not an error. On those sockets the header
//! is Weir's alone: one a client sent is removed first.
//!
//! Sockets without the setting pay one `Option` check per request; requests that are not
//! JSON pay the header removal.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};

use crate::body::ProxyBody;
use crate::conn::ConnCtx;
use crate::error::ProxyError;

/// The header the model name goes into.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-gateway-model-name");

/// How long the body may take to arrive when the policy sets no `requestReceivedTimeout`.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The body read before routing, carried to the attempt loop in the request's extensions.
#[derive(Clone)]
struct ReadBody(Bytes);

/// A request whose body is read before routing.
pub(crate) struct Read {
    limit: u64,
    timeout: Duration,
}

/// The boxed future of a request read before routing, then routed.
type Routed<'a> =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a>>;

/// Whether this request's body is read before routing: its socket's policy asks for it,
/// and the request is JSON with a body. On those sockets the client's model header is
/// removed first, whatever the request.
pub(crate) fn wanted(conn: &ConnCtx, req: &mut Request<Incoming>) -> Option<Read> {
    let policy = &conn.policy.as_ref()?.policy;
    let limit = policy.body_based_routing?;
    req.headers_mut().remove(&HEADER);
    if !is_json(req.headers()) || req.body().is_end_stream() {
        return None;
    }
    Some(Read {
        limit,
        timeout: policy.request_received_timeout.unwrap_or(READ_TIMEOUT),
    })
}

impl Read {
    /// Read the body (the model header set from it), then `route` the request; boxed, so
    /// that only these requests carry the reading's state.
    pub(crate) fn then<'a, F, Fut>(self, mut req: Request<Incoming>, route: F) -> Routed<'a>
    where
        F: FnOnce(Request<Incoming>) -> Fut + Send + 'a,
        Fut: Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a,
    {
        Box::pin(async move {
            let bytes = match tokio::time::timeout(self.timeout, read(&mut req, self.limit)).await {
                Ok(read) => read?,
                Err(_) => return Err(ProxyError::ClientBodyTimeout(self.timeout)),
            };
            if let Some(model) = model(&bytes) {
                req.headers_mut().insert(HEADER, model);
            }
            req.extensions_mut().insert(ReadBody(bytes));
            route(req).await
        })
    }
}

/// The body read whole (413 over `limit`); the headers then carry its exact length.
async fn read(req: &mut Request<Incoming>, limit: u64) -> Result<Bytes, ProxyError> {
    if crate::upstream::content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes = match http_body_util::Limited::new(req.body_mut(), cap)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::BodyTooLarge(limit))
        }
        Err(err) => return Err(crate::upstream::client_body_error(err)),
    };
    let headers = req.headers_mut();
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(bytes)
}

/// The body read before routing, if it was (else the client's body streams on as usual).
pub(crate) fn take_body(conn: &ConnCtx, extensions: &mut http::Extensions) -> Option<Bytes> {
    conn.policy.as_ref()?.policy.body_based_routing?;
    extensions.remove::<ReadBody>().map(|b| b.0)
}

/// `Content-Type: application/json` (any parameters, any case).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The top-level string `model` of a JSON object, as a header value.
fn model(body: &[u8]) -> Option<HeaderValue> {
    // (A struct also deserializes from an array: only an object counts.)
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow, default)]
        model: Option<std::borrow::Cow<'a, str>>,
    }
    let parsed: Request<'_> = serde_json::from_slice(body).ok()?;
    let model = parsed.model?;
    if model.is_empty() {
        return None;
    }
    HeaderValue::from_str(&model).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_level_string_model_is_taken() {
        let got = |b: &str| model(b.as_bytes()).map(|v| v.to_str().unwrap_or("?").to_owned());
        assert_eq!(
            got(r#"{"model": "llama-3", "messages": [{"model": "x"}]}"#).as_deref(),
            Some("llama-3")
        );
        assert_eq!(
            got(r#"{"prompt": "hi", "model": "a\"b"}"#).as_deref(),
            Some("a\"b")
        );
        assert_eq!(got(r#"{"prompt": "no model"}"#), None);
        assert_eq!(got(r#"{"model": 7}"#), None);
        assert_eq!(got(r#"{"model": ""}"#), None);
        assert_eq!(got(r#"["model"]"#), None);
        assert_eq!(got("not json"), None);
        // Not a valid header value: no header.
        assert_eq!(got(r#"{"model": "a\nb"}"#), None);
    }

    #[test]
    fn only_application_json_is_read() {
        let with = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(t).unwrap_or(HeaderValue::from_static("x")),
            );
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonl"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
