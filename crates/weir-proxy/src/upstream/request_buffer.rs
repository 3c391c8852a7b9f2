//! `requestBuffer.limit` of a BackendTrafficPolicy: the request body is read whole (up to
//! the limit) before the exchange starts, as Envoy Gateway's default `BufferAndLimit` mode
//! does. A body larger than the limit gets 413: at once by its `Content-Length`, else (a
//! chunked or HTTP/2 body without one) as soon as the bytes read pass the limit; either way
//! before anything was sent upstream, so no upstream request is ever cut short. The buffered
//! body is then what retries replay (instead of the default 64 KiB [`super::retry`] buffer).
//! Only routes whose policy sets a limit come here.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;

use super::body::UpstreamBody;
use crate::error::ProxyError;

/// The request with its body read into memory, or [`ProxyError::BodyTooLarge`] when the
/// body is larger than `limit` bytes.
pub(super) async fn buffered(
    req: Request<UpstreamBody>,
    limit: u64,
) -> Result<Request<UpstreamBody>, ProxyError> {
    if req.body().is_end_stream() {
        return Ok(req);
    }
    let (mut parts, body) = req.into_parts();
    let bytes = read_whole(body, &mut parts.headers, limit).await?;
    Ok(Request::from_parts(parts, UpstreamBody::Bytes(Some(bytes))))
}

/// `body` read whole, or [`ProxyError::BodyTooLarge`] when it is larger than `limit` bytes
/// (at once when its `Content-Length` says so). `headers` then carry its exact
/// `Content-Length`.
pub(crate) async fn read_whole(
    body: UpstreamBody,
    headers: &mut HeaderMap,
    limit: u64,
) -> Result<Bytes, ProxyError> {
    check_length(headers, limit)?;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes: Bytes = match http_body_util::Limited::new(body, cap).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::BodyTooLarge(limit))
        }
        Err(err) => return Err(super::retry::client_body_error(err)),
    };
    // The body now has a known length: sent with a Content-Length.
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(bytes)
}

/// 413 up front for a `Content-Length` above the limit.
pub(super) fn check_length(headers: &HeaderMap, limit: u64) -> Result<(), ProxyError> {
    match super::retry::content_length(headers) {
        Some(n) if n > limit => Err(ProxyError::BodyTooLarge(limit)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_kept_and_larger_ones_refused() {
        let req = Request::new(UpstreamBody::Bytes(Some(Bytes::from_static(b"12345"))));
        let ok = buffered(req, 5).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.headers()[CONTENT_LENGTH], "5");
        let body = ok.into_body().collect().await.map(|c| c.to_bytes());
        assert_eq!(body.ok().as_deref(), Some(&b"12345"[..]));
        let req = Request::new(UpstreamBody::Bytes(Some(Bytes::from_static(b"123456"))));
        assert!(matches!(
            buffered(req, 5).await,
            Err(ProxyError::BodyTooLarge(5))
        ));
        let mut req = Request::new(UpstreamBody::Bytes(Some(Bytes::from_static(b"1"))));
        req.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("600"));
        assert!(matches!(
            buffered(req, 5).await,
            Err(ProxyError::BodyTooLarge(5))
        ));
    }
}
