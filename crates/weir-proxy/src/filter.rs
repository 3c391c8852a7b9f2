//! Filters at request time: header modifiers, URL rewrites and redirects (the only filter
//! that answers a request itself). Header names and values were parsed when the snapshot was
//! built; nothing here parses configuration.

use std::fmt::Write as _;

use http::header::{CONTENT_LENGTH, HOST, LOCATION};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Response, Uri};
use weir_snapshot::{Filter, HeaderModifier, Redirect, RedirectScheme, UrlRewrite};

pub(crate) mod cors;

use crate::body::{empty_body, ProxyBody};
use crate::error::ProxyError;

/// What a redirect keeps from the request when the filter leaves a field unset.
pub(crate) struct RedirectBase<'a> {
    /// The request host (lowercase, no port).
    pub(crate) host: &'a str,
    /// The listener's scheme: https on TLS sockets.
    pub(crate) scheme: RedirectScheme,
    /// The socket's configured listener port (never the port the proxy bound: not the
    /// offset one, not a Service's pod port).
    pub(crate) port: u16,
}

/// Apply the request side of `filters` in order. Returns the response when a filter answers
/// the request itself (a redirect); nothing is forwarded then.
pub(crate) fn apply_request(
    filters: &[Filter],
    parts: &mut http::request::Parts,
    base: &RedirectBase<'_>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    for filter in filters {
        match filter {
            Filter::RequestHeader(modifier) => modify_headers(modifier, &mut parts.headers),
            Filter::ResponseHeader(_) => {}
            Filter::Redirect(redirect) => {
                let location = redirect_location(redirect, &parts.uri, base)?;
                return Ok(Some(redirect_response(redirect, location)));
            }
            Filter::UrlRewrite(rewrite) => url_rewrite(rewrite, parts)?,
            // Sent by the forward stage, once every request filter has run.
            Filter::Mirror(_) => {}
            Filter::Cors(c) => {
                if let Some(answer) = cors::preflight(c, parts) {
                    return Ok(Some(answer));
                }
            }
        }
    }
    Ok(None)
}

/// Apply the response side of `filters` (response header modifiers) in order.
pub(crate) fn apply_response(filters: &[Filter], headers: &mut HeaderMap) {
    for filter in filters {
        if let Filter::ResponseHeader(modifier) = filter {
            modify_headers(modifier, headers);
        }
    }
}

/// Set, then add, then remove.
pub(crate) fn modify_headers(modifier: &HeaderModifier, headers: &mut HeaderMap) {
    for (name, value) in modifier.set.iter() {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in modifier.add.iter() {
        headers.append(name.clone(), value.clone());
    }
    for name in modifier.remove.iter() {
        headers.remove(name);
    }
}

/// The Location of a redirect. Unset fields keep the request's values. Port rules (Gateway
/// API `HTTPRequestRedirectFilter.port`): an explicit port wins; else, when the filter sets a
/// scheme, that scheme's well-known port; else the listener's configured port. A port that is
/// the well-known port of the resulting scheme is left out. The query string is kept.
pub(crate) fn redirect_location(
    redirect: &Redirect,
    uri: &Uri,
    base: &RedirectBase<'_>,
) -> Result<HeaderValue, ProxyError> {
    let scheme = redirect.scheme.unwrap_or(base.scheme);
    let host = redirect.hostname.as_deref().unwrap_or(base.host);
    let port = match (redirect.port, redirect.scheme) {
        (Some(port), _) => port,
        (None, Some(scheme)) => scheme.default_port(),
        (None, None) => base.port,
    };
    let mut location = String::with_capacity(64);
    location.push_str(scheme.as_str());
    location.push_str("://");
    location.push_str(host);
    if port != scheme.default_port() {
        let _ = write!(location, ":{port}");
    }
    match &redirect.path {
        Some(modifier) => {
            location.push_str(&normalized(modifier.apply(uri.path()), "redirect path")?)
        }
        // Already normalised (`request::phase1::normalize_target`).
        None => location.push_str(uri.path()),
    }
    if let Some(query) = uri.query() {
        location.push('?');
        location.push_str(query);
    }
    HeaderValue::try_from(location).map_err(|err| ProxyError::InvalidFilterResult {
        what: "redirect Location",
        value: err.to_string(),
    })
}

fn redirect_response(redirect: &Redirect, location: HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = redirect.status;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// Replace the Host header and/or the path (the query string is kept).
fn url_rewrite(rewrite: &UrlRewrite, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    if let Some(hostname) = &rewrite.hostname {
        parts.headers.insert(HOST, hostname.clone());
    }
    if let Some(modifier) = &rewrite.path {
        let mut path_and_query = normalized(modifier.apply(parts.uri.path()), "rewritten path")?;
        if let Some(query) = parts.uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        let invalid = |value: String| ProxyError::InvalidFilterResult {
            what: "rewritten path",
            value,
        };
        let path_and_query = PathAndQuery::try_from(path_and_query.as_str())
            .map_err(|_| invalid(path_and_query.clone()))?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri).map_err(|err| invalid(err.to_string()))?;
    }
    Ok(())
}

/// A path a filter produced, normalised like a request path (`weir-snapshot/src/path.rs`), so a
/// rewrite or redirect cannot bring back the dot-segments normalising took out.
fn normalized(path: String, what: &'static str) -> Result<String, ProxyError> {
    match weir_snapshot::path::normalize(&path) {
        Ok(std::borrow::Cow::Borrowed(_)) => Ok(path),
        Ok(std::borrow::Cow::Owned(normal)) => Ok(normal),
        Err(err) => Err(ProxyError::InvalidFilterResult {
            what,
            value: format!("{path}: {err}"),
        }),
    }
}

#[cfg(test)]
mod tests;
