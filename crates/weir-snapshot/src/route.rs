//! Route entries: what a request must look like ([`RequestMatch`]), how entries rank against
//! each other ([`RouteRank`]), and what happens to a matching request ([`RouteAction`]).

use std::cmp::{Ordering, Reverse};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::backend::Backend;
use crate::filter::Filter;

/// One (route, rule, match) triple, compiled.
#[derive(Debug)]
pub struct RouteEntry {
    pub rank: RouteRank,
    pub matcher: RequestMatch,
    pub action: Arc<RouteAction>,
}

/// Which route object and rule an entry came from (for metrics, logs and debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRef {
    /// `HTTPRoute`, …
    pub kind: &'static str,
    /// `namespace/name`, precomputed as the metric label.
    pub route: Arc<str>,
    /// Index of the rule within the route.
    pub rule: usize,
    /// The rule's `name`, if it has one.
    pub rule_name: Option<Arc<str>>,
    /// Which version of the route object this is: a hash of its identity and generation
    /// (its spec when it has no generation), the same for every rule of one version.
    /// Runtime state that must not outlive a change of the route (the response cache's
    /// entries) is tagged with it.
    pub version: u64,
}

/// What to do with a request that matched: filters in order, then (unless a filter answered,
/// as a redirect does) one backend picked by weight.
#[derive(Debug)]
pub struct RouteAction {
    pub route: RouteRef,
    pub filters: Arc<[Filter]>,
    /// Weighted backends. Empty means "no backend": the request gets 500 unless a filter
    /// (such as a redirect) answers it.
    pub backends: Arc<[Backend]>,
    /// Sum of `backends[i].weight`; 0 with backends present means every weight is 0 → 500.
    pub total_weight: u64,
    pub timeouts: Timeouts,
    /// The BackendTrafficPolicy in effect (most specific of rule, route, Gateway); `None`:
    /// the request pays nothing for policies.
    pub policy: Option<Arc<crate::BackendPolicy>>,
    /// External authorization (HTTPRoute `ExternalAuth` filter, SecurityPolicy `extAuth`),
    /// checked in phase 3; `None`: the request pays nothing for it.
    pub ext_auth: Option<Arc<crate::ExtAuth>>,
    /// The SecurityPolicy in effect (most specific of rule, route, Gateway); `None`: the
    /// request pays nothing for authentication.
    pub security: Option<Arc<crate::Security>>,
    /// The ExtensionPolicy's external processors (`extProc`), phase 3 and the response;
    /// `None`: the request pays nothing for them.
    pub ext_proc: Option<Arc<crate::ExtProc>>,
}

impl RouteAction {
    /// Whether a request on this route has an asynchronous request phase (phase 3 in
    /// weir-proxy's request pipeline: a step that waits before the request goes on). Routes
    /// without one skip the phase and pay nothing for it.
    pub fn needs_async(&self) -> bool {
        self.ext_auth.is_some()
            || self.ext_proc.is_some()
            || self.policy.as_deref().is_some_and(|p| {
                p.fault.is_some_and(|f| f.delay.is_some())
                    || p.response_cache.is_some()
                    || p.rate_limit.as_ref().is_some_and(|r| !r.global.is_empty())
            })
    }
}

/// Request and backend timeouts from the route rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole request, gateway receiving it to the response (`timeouts.request`).
    pub request: Option<Duration>,
    /// One attempt to the backend (`timeouts.backendRequest`).
    pub backend_request: Option<Duration>,
}

/// Precedence between route entries on the same listener. Smaller sorts first, and the first
/// entry that matches a request wins.
///
/// The Gateway API (HTTPRouteRule.matches) says: "Proxy or Load Balancer routing configuration
/// generated from HTTPRoutes MUST prioritize matches based on the following criteria,
/// continuing on ties. Across all rules specified on applicable Routes, precedence must be
/// given to the match having:
///   * "Exact" path match.
///   * "Prefix" path match with largest number of characters.
///   * Method match.
///   * Largest number of header matches.
///   * Largest number of query param matches.
///
/// If ties still exist across multiple Routes, matching precedence MUST be determined in order
/// of the following criteria, continuing on ties:
///   * The oldest Route based on creation timestamp.
///   * The Route appearing first in alphabetical order by "{namespace}/{name}".
///
/// If ties still exist within an HTTPRoute, matching precedence MUST be granted to the FIRST
/// matching rule (in list order) with a match meeting the above criteria."
///
/// Before all of these comes hostname specificity (HTTPRoute.hostnames: "precedence must be
/// given to rules from the HTTPRoute with the largest number of: characters in a matching
/// non-wildcard hostname; characters in a matching hostname"). The host index already yields
/// more specific buckets first; the field is kept so a rank is meaningful on its own.
/// Regular-expression paths rank after exact paths and before prefixes (the spec leaves them
/// implementation-specific; a regex is more specific than a prefix in practice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRank {
    /// (non-wildcard characters, characters) of the matching hostname; larger wins.
    pub hostname: (usize, usize),
    /// 0 exact, 1 regular expression, 2 prefix.
    pub path_kind: u8,
    /// Length of the path value; longer wins.
    pub path_len: usize,
    pub has_method: bool,
    pub headers: usize,
    pub query_params: usize,
    /// Creation time as (seconds, nanos) since the epoch; older wins.
    pub created: (i64, u32),
    /// `namespace/name`; alphabetical wins.
    pub route: Arc<str>,
    pub rule: usize,
    pub match_index: usize,
}

impl RouteRank {
    fn key(&self) -> impl Ord + '_ {
        (
            Reverse(self.hostname),
            self.path_kind,
            Reverse(self.path_len),
            Reverse(self.has_method),
            Reverse(self.headers),
            Reverse(self.query_params),
            self.created,
            &*self.route,
            self.rule,
            self.match_index,
        )
    }
}

impl Ord for RouteRank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for RouteRank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The request facts matching looks at. Built once per request by the proxy.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// The path without the query string, as received (not decoded).
    pub path: &'a str,
    /// The raw query string without '?', if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// All conditions of one HTTPRouteMatch (all must hold).
#[derive(Debug, Clone)]
pub struct RequestMatch {
    pub path: PathMatch,
    pub method: Option<MethodMatch>,
    pub headers: Arc<[HeaderMatch]>,
    pub query_params: Arc<[QueryMatch]>,
}

impl Default for RequestMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".into()),
            method: None,
            headers: Arc::new([]),
            query_params: Arc::new([]),
        }
    }
}

impl RequestMatch {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path.matches(req.path)
            && self.method.as_ref().is_none_or(|m| m.0 == *req.method)
            && self.headers.iter().all(|h| h.matches(req.headers))
            && self
                .query_params
                .iter()
                .all(|q| q.matches(req.query.unwrap_or("")))
    }
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(Arc<str>),
    /// Prefix by path elements: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`. Stored
    /// without a trailing slash (except the root `/`).
    Prefix(Arc<str>),
    /// Anchored: the whole path must match.
    Regex(Regex),
}

impl PathMatch {
    /// A prefix match, normalised (trailing slash dropped, except for `/`).
    pub fn prefix(value: &str) -> PathMatch {
        let trimmed = value.trim_end_matches('/');
        PathMatch::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.into())
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == &**p,
            PathMatch::Prefix(p) => {
                if &**p == "/" {
                    return true;
                }
                match path.strip_prefix(&**p) {
                    Some(rest) => rest.is_empty() || rest.starts_with('/'),
                    None => false,
                }
            }
            PathMatch::Regex(re) => re.is_match(path),
        }
    }

    /// The configured value's length, for ranking.
    pub fn len(&self) -> usize {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p.len(),
            PathMatch::Regex(re) => re.as_str().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// 0 exact, 1 regex, 2 prefix (see [`RouteRank`]).
    pub fn rank_kind(&self) -> u8 {
        match self {
            PathMatch::Exact(_) => 0,
            PathMatch::Regex(_) => 1,
            PathMatch::Prefix(_) => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodMatch(pub Method);

/// Exact (case-sensitive) or anchored regular-expression value match.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(Arc<str>),
    Regex(Regex),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(v) => **v == *value,
            StringMatch::Regex(re) => re.is_match(value),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Header names are case-insensitive; `HeaderName` is lowercase.
    pub name: HeaderName,
    pub value: StringMatch,
}

impl HeaderMatch {
    /// Matches when the header is present and its value matches. Several values of the same
    /// header are compared as one comma-joined value, as a proxy would see them folded
    /// (RFC 9110 §5.3): a comma between every two values, empty ones included, so
    /// `x: ""`, `x: 9` is `,9` as `x: 9`, `x: ""` is `9,`.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return false;
        };
        match values.next() {
            None => first.to_str().is_ok_and(|v| self.value.matches(v)),
            Some(second) => {
                let Ok(first) = first.to_str() else {
                    return false;
                };
                let mut joined = first.to_owned();
                for v in std::iter::once(second).chain(values) {
                    let Ok(v) = v.to_str() else { return false };
                    joined.push(',');
                    joined.push_str(v);
                }
                self.value.matches(&joined)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// Query parameter names are case-sensitive.
    pub name: Arc<str>,
    pub value: StringMatch,
}

impl QueryMatch {
    /// Matches against the first occurrence of the parameter (as the spec allows), with
    /// percent-decoding of `%XX` and `+` as space applied to both name and value.
    pub fn matches(&self, query: &str) -> bool {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if decode(name) == *self.name {
                return self.value.matches(&decode(value));
            }
        }
        false
    }
}

fn decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return s.into();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            method,
            path,
            query,
            headers,
        }
    }

    #[test]
    fn prefix_matches_path_elements() {
        let p = PathMatch::prefix("/foo/");
        assert!(p.matches("/foo"));
        assert!(p.matches("/foo/bar"));
        assert!(!p.matches("/foobar"));
        assert!(PathMatch::prefix("/").matches("/anything"));
        assert!(PathMatch::prefix("/").matches("/"));
    }

    #[test]
    fn exact_and_regex() {
        assert!(PathMatch::Exact("/a".into()).matches("/a"));
        assert!(!PathMatch::Exact("/a".into()).matches("/a/"));
        let re = PathMatch::Regex(Regex::new("^(?:/v[0-9]+/.*)$").unwrap());
        assert!(re.matches("/v2/x"));
        assert!(!re.matches("/x/v2/x"));
    }

    #[test]
    fn headers_are_case_insensitive_by_name_and_exact_by_value() {
        let mut h = HeaderMap::new();
        h.insert("Version", "Two".parse().unwrap());
        let m = HeaderMatch {
            name: HeaderName::from_static("version"),
            value: StringMatch::Exact("Two".into()),
        };
        assert!(m.matches(&h));
        let m2 = HeaderMatch {
            name: HeaderName::from_static("version"),
            value: StringMatch::Exact("two".into()),
        };
        assert!(!m2.matches(&h));
        let missing = HeaderMatch {
            name: HeaderName::from_static("other"),
            value: StringMatch::Exact("Two".into()),
        };
        assert!(!missing.matches(&h));
    }

    /// Found by the `request_match` fuzz target: empty values before the first non-empty
    /// one lost their commas (`""`, `""`, `9` was compared as `9`, so it matched `[0-9]+`,
    /// while `9`, `""` was `9,`): the joined value depended on where the empty lines were.
    #[test]
    fn several_values_are_joined_with_a_comma_between_each_two_empty_or_not() {
        let id = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-id", v.parse().unwrap());
            }
            h
        };
        let digits = HeaderMatch {
            name: HeaderName::from_static("x-id"),
            value: StringMatch::Regex(Regex::new("^(?:[0-9]+)$").unwrap()),
        };
        assert!(digits.matches(&id(&["9"])));
        assert!(!digits.matches(&id(&["", "", "9"])));
        assert!(!digits.matches(&id(&["9", ""])));
        assert!(!digits.matches(&id(&["", "9", ""])));
        let exact = |value: &str| HeaderMatch {
            name: HeaderName::from_static("x-id"),
            value: StringMatch::Exact(value.into()),
        };
        assert!(exact(",,9").matches(&id(&["", "", "9"])));
        assert!(exact("9,").matches(&id(&["9", ""])));
        assert!(exact(",").matches(&id(&["", ""])));
        assert!(exact("a,b,c").matches(&id(&["a", "b", "c"])));
    }

    #[test]
    fn query_uses_first_occurrence_and_decodes() {
        let q = QueryMatch {
            name: "animal".into(),
            value: StringMatch::Exact("whale shark".into()),
        };
        assert!(q.matches("x=1&animal=whale%20shark&animal=dolphin"));
        assert!(q.matches("animal=whale+shark"));
        assert!(!q.matches("animal=dolphin&animal=whale%20shark"));
        assert!(!q.matches("Animal=whale%20shark"));
        // A stray '%' is kept literally.
        let pct = QueryMatch {
            name: "a".into(),
            value: StringMatch::Exact("%".into()),
        };
        assert!(pct.matches("a=%"));
    }

    #[test]
    fn all_conditions_must_hold() {
        let get = Method::GET;
        let post = Method::POST;
        let h = HeaderMap::new();
        let m = RequestMatch {
            method: Some(MethodMatch(Method::POST)),
            ..RequestMatch::default()
        };
        assert!(m.matches(&view(&post, "/", None, &h)));
        assert!(!m.matches(&view(&get, "/", None, &h)));
    }

    fn rank(path_kind: u8, path_len: usize, route: &str, created: i64) -> RouteRank {
        RouteRank {
            hostname: (0, 0),
            path_kind,
            path_len,
            has_method: false,
            headers: 0,
            query_params: 0,
            created: (created, 0),
            route: route.into(),
            rule: 0,
            match_index: 0,
        }
    }

    #[test]
    fn rank_follows_spec_order() {
        // Exact before any prefix.
        assert!(rank(0, 2, "a/a", 0) < rank(2, 20, "a/a", 0));
        // Longer prefix first.
        assert!(rank(2, 5, "a/a", 0) < rank(2, 1, "a/a", 0));
        // Method beats headers.
        let mut with_method = rank(2, 1, "a/a", 0);
        with_method.has_method = true;
        let mut with_headers = rank(2, 1, "a/a", 0);
        with_headers.headers = 3;
        assert!(with_method < with_headers);
        // More headers beat more query params.
        let mut with_query = rank(2, 1, "a/a", 0);
        with_query.query_params = 5;
        assert!(with_headers < with_query);
        // Older route wins, then alphabetical.
        assert!(rank(2, 1, "z/z", 1) < rank(2, 1, "a/a", 2));
        assert!(rank(2, 1, "a/a", 1) < rank(2, 1, "a/b", 1));
        // Then rule order.
        let mut r1 = rank(2, 1, "a/a", 1);
        r1.rule = 1;
        assert!(rank(2, 1, "a/a", 1) < r1);
        // Hostname specificity above all.
        let mut exact_host = rank(2, 1, "a/a", 9);
        exact_host.hostname = (10, 10);
        assert!(exact_host < rank(0, 50, "a/a", 0));
    }
}
