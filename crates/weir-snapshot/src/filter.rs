//! Filters, in one shape whether they came from a rule or from a backendRef. Header names and
//! values are parsed when the snapshot is built, never per request.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

#[derive(Debug, Clone)]
pub enum Filter {
    /// Modify the request before it is forwarded.
    RequestHeader(HeaderModifier),
    /// Modify the response before it is returned.
    ResponseHeader(HeaderModifier),
    /// Answer with a redirect; nothing is forwarded.
    Redirect(Redirect),
    /// Rewrite host and/or path before forwarding.
    UrlRewrite(UrlRewrite),
}

/// Set replaces (or adds), add appends, remove deletes; applied in that order: set, add,
/// remove.
#[derive(Debug, Clone, Default)]
pub struct HeaderModifier {
    pub set: Arc<[(HeaderName, HeaderValue)]>,
    pub add: Arc<[(HeaderName, HeaderValue)]>,
    pub remove: Arc<[HeaderName]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectScheme {
    Http,
    Https,
}

impl RedirectScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectScheme::Http => "http",
            RedirectScheme::Https => "https",
        }
    }

    /// The well-known port of the scheme.
    pub fn default_port(self) -> u16 {
        match self {
            RedirectScheme::Http => 80,
            RedirectScheme::Https => 443,
        }
    }
}

/// `RequestRedirect`. Unset fields keep the request's value. Port rules (from the spec): when
/// `port` is unset and `scheme` is set, the redirect uses that scheme's well-known port;
/// when both are unset, the listener's configured port; a well-known port for the resulting
/// scheme is omitted from the Location.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<RedirectScheme>,
    pub hostname: Option<Arc<str>>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    pub status: StatusCode,
}

/// `URLRewrite`.
#[derive(Debug, Clone, Default)]
pub struct UrlRewrite {
    pub hostname: Option<HeaderValue>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(Arc<str>),
    /// Replace the part of the path the rule's PathPrefix matched. `matched_prefix` is the
    /// prefix of the match this entry was compiled from.
    ReplacePrefixMatch {
        matched_prefix: Arc<str>,
        replacement: Arc<str>,
    },
}

impl PathModifier {
    /// The new path for `path` (without query).
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathModifier::ReplaceFullPath(p) => p.to_string(),
            PathModifier::ReplacePrefixMatch {
                matched_prefix,
                replacement,
            } => {
                let prefix = matched_prefix.trim_end_matches('/');
                let rest = path.strip_prefix(prefix).unwrap_or(path);
                let replacement = replacement.trim_end_matches('/');
                let joined = match (replacement.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_string(),
                    (true, false) => rest.to_string(),
                    (false, _) => format!("{replacement}{rest}"),
                };
                if joined.starts_with('/') {
                    joined
                } else {
                    format!("/{joined}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(m: &str, r: &str) -> PathModifier {
        PathModifier::ReplacePrefixMatch {
            matched_prefix: m.into(),
            replacement: r.into(),
        }
    }

    #[test]
    fn replace_prefix_match_cases_from_the_spec() {
        // Examples from the HTTPPathModifier documentation and conformance tests.
        assert_eq!(prefix("/foo", "/xyz").apply("/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/xyz").apply("/foo"), "/xyz");
        assert_eq!(prefix("/foo/", "/xyz").apply("/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/xyz/").apply("/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/").apply("/foo/bar"), "/bar");
        assert_eq!(prefix("/foo", "/").apply("/foo"), "/");
        assert_eq!(prefix("/", "/one").apply("/two"), "/one/two");
    }

    #[test]
    fn replace_full_path() {
        assert_eq!(
            PathModifier::ReplaceFullPath("/one".into()).apply("/a/b"),
            "/one"
        );
    }
}
