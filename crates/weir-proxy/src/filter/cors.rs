//! The CORS filter at request time: preflight requests are answered here; actual requests
//! get the CORS response headers when their `Origin` is allowed. The gateway always names
//! the request's Origin (never `*`), which is right whether or not the request carries
//! credentials.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_LENGTH, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use weir_snapshot::{Cors, CorsList, Filter};

use crate::body::{empty_body, ProxyBody};

/// The request is a CORS preflight: OPTIONS with `Origin` and
/// `Access-Control-Request-Method`.
pub(crate) fn is_preflight(parts: &http::request::Parts) -> bool {
    parts.method == Method::OPTIONS
        && parts.headers.contains_key(ORIGIN)
        && parts.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The gateway's answer to a preflight request: 200, with the CORS headers only when the
/// Origin is allowed (a denied preflight is an OK answer without them).
pub(crate) fn preflight(cors: &Cors, parts: &http::request::Parts) -> Option<Response<ProxyBody>> {
    if !is_preflight(parts) {
        return None;
    }
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = allowed_origin(cors, &parts.headers) else {
        return Some(response);
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if cors.allow_credentials {
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    // `*` is answered with what was asked for: valid with and without credentials.
    let asked = |name| parts.headers.get(name).cloned();
    let methods = match &cors.allow_methods {
        CorsList::List(v) => Some(v.clone()),
        CorsList::Any => asked(ACCESS_CONTROL_REQUEST_METHOD),
        CorsList::Unset => None,
    };
    if let Some(v) = methods {
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    let allow_headers = match &cors.allow_headers {
        CorsList::List(v) => Some(v.clone()),
        CorsList::Any => asked(ACCESS_CONTROL_REQUEST_HEADERS),
        CorsList::Unset => None,
    };
    if let Some(v) = allow_headers {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    expose(cors, headers);
    if let Some(v) = &cors.max_age {
        headers.insert(ACCESS_CONTROL_MAX_AGE, v.clone());
    }
    Some(response)
}

/// CORS headers on the answer to an actual (not preflight) request from `origin`.
pub(crate) fn apply_response(
    filters: &[Filter],
    origin: Option<&HeaderValue>,
    headers: &mut HeaderMap,
) {
    let Some(origin) = origin else { return };
    for filter in filters {
        let Filter::Cors(cors) = filter else { continue };
        apply_one(cors, origin, headers);
    }
}

/// CORS headers of one CORS setting (the filter's, or a SecurityPolicy's `cors`) on the
/// answer to an actual request from `origin`.
pub(crate) fn apply_one(cors: &Cors, origin: &HeaderValue, headers: &mut HeaderMap) {
    if !origin.to_str().is_ok_and(|o| cors.allows(o)) {
        return;
    }
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if cors.allow_credentials {
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    expose(cors, headers);
}

fn allowed_origin<'h>(cors: &Cors, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    cors.allows(origin.to_str().ok()?).then_some(origin)
}

fn expose(cors: &Cors, headers: &mut HeaderMap) {
    match &cors.expose_headers {
        CorsList::List(v) => {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        // `*` means "every header" only without credentials.
        CorsList::Any if !cors.allow_credentials => {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
        }
        CorsList::Any | CorsList::Unset => {}
    }
}

/// Whether any filter is a CORS filter (then the request's Origin is kept for the answer).
pub(crate) fn any(filters: &[Filter]) -> bool {
    filters.iter().any(|f| matches!(f, Filter::Cors(_)))
}
