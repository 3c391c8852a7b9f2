//! Filters, in one shape whether they came from a rule or from a backendRef. Header names and
//! values are parsed when the snapshot is built, never per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::backend::Upstream;

mod cors;

pub use cors::{Cors, CorsList, OriginPattern};

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
    /// Send a copy of the request (as all request filters left it, just before it is
    /// forwarded) to another backend; its answer is discarded.
    Mirror(Mirror),
    /// Answer CORS preflight requests here; add CORS headers to actual responses.
    Cors(Cors),
}

/// `RequestMirror`. Only mirrors whose backendRef resolved are compiled (an unresolved one
/// is reported in the route's ResolvedRefs condition and mirrors nothing).
#[derive(Debug, Clone)]
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    pub sample: MirrorSample,
}

/// Which share of requests a mirror copies: `numerator / denominator` (`percent: P` is
/// P/100; neither given is 1/1). Sampling is deterministic, not random: request n (counted
/// per mirror filter and snapshot) is mirrored when ⌊(n+1)·num/den⌋ > ⌊n·num/den⌋, so any
/// run of consecutive requests is mirrored within one request of the exact share.
#[derive(Debug, Clone)]
pub struct MirrorSample {
    numerator: u64,
    denominator: u64,
    seen: Arc<AtomicU64>,
}

impl MirrorSample {
    /// `None` unless `0 < denominator` and `numerator <= denominator`.
    pub fn new(numerator: u64, denominator: u64) -> Option<Self> {
        (denominator > 0 && numerator <= denominator).then(|| Self {
            numerator,
            denominator,
            seen: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Every request.
    pub fn all() -> Self {
        Self {
            numerator: 1,
            denominator: 1,
            seen: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn fraction(&self) -> (u64, u64) {
        (self.numerator, self.denominator)
    }

    /// Count one request; whether it is mirrored.
    pub fn take(&self) -> bool {
        if self.numerator == self.denominator {
            return true;
        }
        if self.numerator == 0 {
            return false;
        }
        let n = u128::from(self.seen.fetch_add(1, Ordering::Relaxed));
        let (num, den) = (u128::from(self.numerator), u128::from(self.denominator));
        (n + 1) * num / den > n * num / den
    }
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
    fn mirror_sample_is_exact_over_any_window() {
        let s = MirrorSample::new(20, 100).unwrap();
        let picks: Vec<bool> = (0..1000).map(|_| s.take()).collect();
        assert_eq!(picks.iter().filter(|p| **p).count(), 200);
        for window in picks.windows(500) {
            let n = window.iter().filter(|p| **p).count();
            assert!((99..=101).contains(&n), "{n} of 500");
        }
        let half = MirrorSample::new(25, 50).unwrap();
        assert_eq!((0..10).filter(|_| half.take()).count(), 5);
        assert!((0..10).all(|_| MirrorSample::all().take()));
        let none = MirrorSample::new(0, 100).unwrap();
        assert!((0..10).all(|_| !none.take()));
        assert!(MirrorSample::new(3, 2).is_none());
        assert!(MirrorSample::new(1, 0).is_none());
    }

    #[test]
    fn replace_full_path() {
        assert_eq!(
            PathModifier::ReplaceFullPath("/one".into()).apply("/a/b"),
            "/one"
        );
    }
}
