//! The echo JSON document and the header helpers it needs.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Version};
use serde::Serialize;

use crate::tls::TlsInfo;

/// Context echoed back in every JSON answer (from the environment or flags).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
    /// Answer gRPC calls (`GRPC_ECHO_SERVER`) with the GrpcEcho service.
    pub grpc: bool,
    /// `/retry/…` attempts per uuid.
    pub retries: std::sync::Arc<crate::retry::RetrySimulation>,
}

/// The JSON answer, field names as the Gateway API conformance echo server spells them.
#[derive(Debug, Serialize)]
pub struct EchoResponse<'a> {
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: &'static str,
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "httpPort")]
    pub http_port: &'a str,
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub pod: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'a TlsInfo>,
}

impl<'a> EchoResponse<'a> {
    /// Describes `req` as received on a listener bound to `http_port`.
    pub fn new<B>(
        req: &Request<B>,
        ctx: &'a Context,
        http_port: &'a str,
        tls: Option<&'a TlsInfo>,
    ) -> Self {
        EchoResponse {
            path: request_uri(req),
            host: request_host(req),
            method: req.method().as_str().to_owned(),
            proto: proto_name(req.version()),
            headers: canonical_headers(req.headers()),
            http_port,
            namespace: &ctx.namespace,
            ingress: &ctx.ingress,
            service: &ctx.service,
            pod: &ctx.pod,
            tls,
        }
    }
}

/// The request URI as received, like Go's `Request.RequestURI`: the request target for
/// HTTP/1 and `:path` (path plus query) for HTTP/2.
pub fn request_uri<B>(req: &Request<B>) -> String {
    if req.version() == Version::HTTP_2 {
        req.uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
    } else {
        req.uri().to_string()
    }
}

/// The host the request was made to: the URI authority (HTTP/2 `:authority`, or an
/// absolute-form HTTP/1 target), else the Host header.
pub fn request_host<B>(req: &Request<B>) -> String {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str().to_owned();
    }
    req.headers()
        .get(http::header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// The protocol as Go spells `Request.Proto`.
pub fn proto_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Request headers keyed by canonical name, each with all its values; Host is left out.
pub fn canonical_headers(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if name == http::header::HOST {
            continue;
        }
        out.entry(canonical_mime_header_key(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// Whether `b` may appear in a header field name (an RFC 7230 `tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: the first letter and every letter after a `-`
/// upper case, the rest lower case (`x-foo-bar` → `X-Foo-Bar`). A key holding a byte that
/// is not allowed in a header name is returned unchanged, as Go does.
pub fn canonical_mime_header_key(key: &str) -> String {
    if !key.bytes().all(is_token_byte) {
        return key.to_owned();
    }
    let mut upper = true;
    key.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Parses the values of `X-Echo-Set-Header` request headers: each is a comma-separated list
/// of `Name: value` pairs. Pairs are returned in order; names and values are trimmed, and
/// entries with an empty name are skipped. A pair without a colon sets an empty value.
pub fn parse_echo_set_headers<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for list in values {
        for item in list.split(',') {
            let item = item.trim();
            let (name, value) = item.split_once(':').unwrap_or((item, ""));
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            pairs.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    pairs
}

/// Sets the headers requested through `X-Echo-Set-Header` on a response. A name given more
/// than once gets its values joined with `,` into one header, as the Go server does.
/// Names or values that are not valid in HTTP are ignored.
pub fn apply_echo_set_headers(request: &HeaderMap, response: &mut HeaderMap) {
    let values = request
        .get_all("x-echo-set-header")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let mut merged: Vec<(HeaderName, String)> = Vec::new();
    for (name, value) in parse_echo_set_headers(values) {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    for (name, value) in merged {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys() {
        assert_eq!(canonical_mime_header_key("x-foo-bar"), "X-Foo-Bar");
        assert_eq!(canonical_mime_header_key("USER-AGENT"), "User-Agent");
        assert_eq!(canonical_mime_header_key("content-type"), "Content-Type");
        assert_eq!(canonical_mime_header_key("x--a"), "X--A");
        assert_eq!(canonical_mime_header_key("x_foo"), "X_foo");
        assert_eq!(canonical_mime_header_key("-x"), "-X");
        // Not a valid header name: left alone, like Go.
        assert_eq!(canonical_mime_header_key("bad key"), "bad key");
    }

    #[test]
    fn headers_map_excludes_host_and_groups_values() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        let map = canonical_headers(&headers);
        assert_eq!(map.len(), 2);
        assert_eq!(map["X-Multi"], vec!["a", "b"]);
        assert_eq!(map["Accept"], vec!["*/*"]);
    }

    #[test]
    fn set_header_parsing() {
        let pairs = parse_echo_set_headers(["X-A: 1, x-b:two words ", "X-C", " : skipped,,"]);
        let want = [("X-A", "1"), ("x-b", "two words"), ("X-C", "")];
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn set_header_applied_and_merged() {
        let mut request = HeaderMap::new();
        request.append(
            "x-echo-set-header",
            HeaderValue::from_static("X-A: 1, X-B: 2"),
        );
        request.append(
            "x-echo-set-header",
            HeaderValue::from_static("x-a: 3, bad name: 4"),
        );
        let mut response = HeaderMap::new();
        apply_echo_set_headers(&request, &mut response);
        assert_eq!(response.get("x-a").map(|v| v.as_bytes()), Some(&b"1,3"[..]));
        assert_eq!(response.get("x-b").map(|v| v.as_bytes()), Some(&b"2"[..]));
        assert_eq!(response.len(), 2);
    }

    #[test]
    fn uri_and_host() {
        let req = Request::builder()
            .uri("/a//b?x=1")
            .header("host", "h.example")
            .body(())
            .unwrap();
        assert_eq!(request_uri(&req), "/a//b?x=1");
        assert_eq!(request_host(&req), "h.example");
        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://h2.example:81/p?q")
            .body(())
            .unwrap();
        assert_eq!(request_uri(&req), "/p?q");
        assert_eq!(request_host(&req), "h2.example:81");
        assert_eq!(proto_name(req.version()), "HTTP/2.0");
    }
}
