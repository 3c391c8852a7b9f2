//! The CORS filter, compiled: origin patterns parsed, response header values formatted.

use std::sync::Arc;

use http::HeaderValue;

/// `HTTPCORSFilter`.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Origins whose requests may be shared; empty allows none.
    pub allow_origins: Arc<[OriginPattern]>,
    pub allow_methods: CorsList,
    pub allow_headers: CorsList,
    pub expose_headers: CorsList,
    /// `Access-Control-Max-Age` (seconds), on preflight answers.
    pub max_age: Option<HeaderValue>,
    /// Send `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
}

/// A list-valued CORS setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsList {
    /// Not configured: the header is left out.
    #[default]
    Unset,
    /// `*`.
    Any,
    /// The configured values, joined with ", ".
    List(HeaderValue),
}

/// One `allowOrigins` entry: `*`, or `scheme://host[:port]` where the host may start with
/// `*`, which matches any number of labels to its left (`https://*.bar.com` matches
/// `https://a.b.bar.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    Origin {
        scheme: Arc<str>,
        /// Lowercase; with a leading `*` for wildcards (`*.bar.com`).
        host: Arc<str>,
        /// The explicit port, else the scheme's default.
        port: u16,
    },
}

impl OriginPattern {
    /// Parse a configured origin; `None` when it is not `*` or `http(s)://host[:port]`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "*" {
            return Some(OriginPattern::Any);
        }
        let (scheme, host, port) = split_origin(s)?;
        Some(OriginPattern::Origin {
            scheme: scheme.into(),
            host: host.into(),
            port,
        })
    }

    /// Whether a request's `Origin` header value matches.
    pub fn matches(&self, origin: &str) -> bool {
        let OriginPattern::Origin { scheme, host, port } = self else {
            return true;
        };
        let Some((s, h, p)) = split_origin(origin) else {
            return false;
        };
        if s != **scheme || p != *port {
            return false;
        }
        match host.strip_prefix('*') {
            Some(suffix) => h.len() > suffix.len() && h.ends_with(suffix),
            None => h == **host,
        }
    }
}

/// `scheme://host[:port]` → (lowercase scheme, lowercase host, port or the scheme's default).
fn split_origin(s: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse().ok()?)
        }
        _ => (rest, default),
    };
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

impl Cors {
    /// Whether `origin` may share the response.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|p| p.matches(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns_follow_the_cors_filter_doc() {
        let exact = OriginPattern::parse("https://www.foo.com").unwrap();
        assert!(exact.matches("https://www.foo.com"));
        assert!(exact.matches("https://www.foo.com:443"));
        assert!(!exact.matches("http://www.foo.com"));
        assert!(!exact.matches("https://www.foo.com:8443"));
        assert!(!exact.matches("https://foo.com"));
        let wild = OriginPattern::parse("https://*.bar.com").unwrap();
        assert!(wild.matches("https://www.bar.com"));
        assert!(wild.matches("https://xpto.www.bar.com"));
        assert!(!wild.matches("https://bar.com"));
        assert!(!wild.matches("https://foobar.com"));
        assert!(OriginPattern::parse("*")
            .unwrap()
            .matches("https://foobar.com:12345"));
        assert!(OriginPattern::parse("ftp://x").is_none());
        assert!(OriginPattern::parse("https://").is_none());
        assert!(!exact.matches("null"));
    }
}
