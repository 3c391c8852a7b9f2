//! `rateLimit` of a BackendTrafficPolicy, compiled: rules of client selectors and a limit,
//! counted on this replica (`local`, token buckets in the proxy's registry) or across
//! replicas (`global`, in Redis). Which requests a rule counts is decided here, purely
//! ([`RateLimitRule::select`]); the counting lives in the proxy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method};

use crate::client_policy::Cidr;
use crate::route::{HeaderMatch, PathMatch};

/// One policy's `rateLimit` as it applies to one route rule.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Keys the counters: the policy's id mixed with the route rule it applies to (each
    /// route rule has its own counters, as in Envoy Gateway); rules with `shared: true` use
    /// [`RateLimitRule::shared`] instead.
    pub scope: u64,
    /// `local.rules`: counted on this replica (phase 2, after authorization).
    pub local: Arc<[RateLimitRule]>,
    /// `global.rules`: counted in Redis, shared by every replica (phase 3).
    pub global: Arc<[RateLimitRule]>,
}

impl PartialEq for RateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.scope == other.scope
            && Arc::ptr_eq(&self.local, &other.local)
            && Arc::ptr_eq(&self.global, &other.global)
    }
}

impl Eq for RateLimit {}

/// `rules[i]`: every selector must hold for the request to count against `limit`.
#[derive(Debug, Clone)]
pub struct RateLimitRule {
    /// `clientSelectors` (all must hold; none: every request of the route).
    pub selectors: Vec<ClientSelector>,
    pub limit: Limit,
    /// `shared: true`: one set of counters for every route the policy applies to.
    pub shared: bool,
    /// Keys the rule's counters beside the scope: the policy id, the rule's position and
    /// `shared`; stable while the policy's spec is.
    pub id: u64,
}

/// `limit`: `requests` per `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub unit: Duration,
}

impl Limit {
    /// The unit in whole seconds (for `x-ratelimit-limit`'s window).
    pub fn window_secs(&self) -> u64 {
        self.unit.as_secs()
    }
}

/// The unit names of `limit.unit` and their lengths (a month is 30 days and a year 365, as
/// Envoy's rate limit service counts them).
pub fn unit(name: &str) -> Option<Duration> {
    let secs = match name {
        "Second" => 1,
        "Minute" => 60,
        "Hour" => 3600,
        "Day" => 86_400,
        "Month" => 30 * 86_400,
        "Year" => 365 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// One `clientSelectors[]` entry: its parts must all hold.
#[derive(Debug, Clone, Default)]
pub struct ClientSelector {
    /// `headers`: each must hold.
    pub headers: Vec<HeaderSelector>,
    /// `methods`: any one must hold (each possibly inverted); empty: any method.
    pub methods: Vec<(Method, bool)>,
    /// `path` (with `invert`).
    pub path: Option<(PathMatch, bool)>,
    /// `sourceCIDR`: the client address is inside the block; `distinct`: each address
    /// counts apart.
    pub source: Option<SourceSelector>,
}

#[derive(Debug, Clone)]
pub enum HeaderSelector {
    /// `Exact` or `RegularExpression`, with `invert` (a missing header does not match, so
    /// inverted it holds).
    Match { header: HeaderMatch, invert: bool },
    /// `Distinct`: the header must be present; each value counts apart.
    Distinct(HeaderName),
}

#[derive(Debug, Clone, Copy)]
pub struct SourceSelector {
    pub cidr: Cidr,
    pub distinct: bool,
}

/// What a request looks like to the selectors.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub method: &'a Method,
    /// Without the query string.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The client address ClientTrafficPolicy's `clientIPDetection` found, else the peer's.
    pub address: IpAddr,
}

impl RateLimitRule {
    /// Whether the rule counts this request; `distinct` gets the parts that make its
    /// counter's key (header values, the client address) in a fixed order. A rule without
    /// `Distinct` selectors gets no part: one counter.
    pub fn select(&self, client: &Client<'_>, distinct: &mut dyn FnMut(&[u8])) -> bool {
        self.selectors.iter().all(|s| s.select(client, distinct))
    }

    /// Whether some selector counts each client apart (a bounded map of counters instead of
    /// one).
    pub fn is_distinct(&self) -> bool {
        self.selectors.iter().any(|s| {
            s.source.is_some_and(|c| c.distinct)
                || s.headers
                    .iter()
                    .any(|h| matches!(h, HeaderSelector::Distinct(_)))
        })
    }
}

impl ClientSelector {
    fn select(&self, client: &Client<'_>, distinct: &mut dyn FnMut(&[u8])) -> bool {
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|(m, invert)| (m == client.method) != *invert)
        {
            return false;
        }
        if let Some((path, invert)) = &self.path {
            if path.matches(client.path) == *invert {
                return false;
            }
        }
        if let Some(source) = self.source {
            if !source.cidr.contains(client.address) {
                return false;
            }
        }
        for h in &self.headers {
            match h {
                HeaderSelector::Match { header, invert } => {
                    if header.matches(client.headers) == *invert {
                        return false;
                    }
                }
                HeaderSelector::Distinct(name) => {
                    if !client.headers.contains_key(name) {
                        return false;
                    }
                }
            }
        }
        // Every condition holds: now the key parts, headers first, then the address.
        for h in &self.headers {
            if let HeaderSelector::Distinct(name) = h {
                for v in client.headers.get_all(name) {
                    distinct(v.as_bytes());
                }
                distinct(b"\0");
            }
        }
        if self.source.is_some_and(|s| s.distinct) {
            let address = match client.address {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client.address, IpAddr::V4),
                v4 => v4,
            };
            match address {
                IpAddr::V4(a) => distinct(&a.octets()),
                IpAddr::V6(a) => distinct(&a.octets()),
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::StringMatch;

    fn client<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> Client<'a> {
        Client {
            method,
            path,
            headers,
            address: "10.1.2.3".parse().unwrap(),
        }
    }

    fn rule(selectors: Vec<ClientSelector>) -> RateLimitRule {
        RateLimitRule {
            selectors,
            limit: Limit {
                requests: 1,
                unit: Duration::from_secs(1),
            },
            shared: false,
            id: 1,
        }
    }

    fn parts(rule: &RateLimitRule, c: &Client<'_>) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        rule.select(c, &mut |p| out.push(p.to_vec())).then_some(out)
    }

    #[test]
    fn selectors_all_hold_and_distinct_parts_name_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert("x-plan", "free".parse().unwrap());
        let get = Method::GET;
        let r = rule(vec![ClientSelector {
            headers: vec![
                HeaderSelector::Distinct(HeaderName::from_static("x-user")),
                HeaderSelector::Match {
                    header: HeaderMatch {
                        name: HeaderName::from_static("x-plan"),
                        value: StringMatch::Regex(regex::Regex::new("^(?:fr.*)$").unwrap()),
                    },
                    invert: false,
                },
            ],
            methods: vec![(Method::GET, false), (Method::HEAD, false)],
            path: Some((PathMatch::prefix("/api"), false)),
            source: Some(SourceSelector {
                cidr: Cidr::parse("10.0.0.0/8").unwrap(),
                distinct: true,
            }),
        }]);
        assert!(r.is_distinct());
        let got = parts(&r, &client(&get, "/api/x", &h)).expect("selected");
        assert_eq!(
            got,
            vec![b"alice".to_vec(), b"\0".to_vec(), vec![10, 1, 2, 3]]
        );
        // Each condition on its own refuses.
        assert!(parts(&r, &client(&Method::POST, "/api/x", &h)).is_none());
        assert!(parts(&r, &client(&get, "/apix", &h)).is_none());
        let mut paid = h.clone();
        paid.insert("x-plan", "paid".parse().unwrap());
        assert!(parts(&r, &client(&get, "/api", &paid)).is_none());
        let mut anonymous = h.clone();
        anonymous.remove("x-user");
        assert!(parts(&r, &client(&get, "/api", &anonymous)).is_none());
        let mut outside = client(&get, "/api", &h);
        outside.address = "192.168.0.1".parse().unwrap();
        assert!(parts(&r, &outside).is_none());
    }

    #[test]
    fn inverted_matches_hold_when_the_value_does_not() {
        let h = HeaderMap::new();
        let r = rule(vec![ClientSelector {
            headers: vec![HeaderSelector::Match {
                header: HeaderMatch {
                    name: HeaderName::from_static("x-internal"),
                    value: StringMatch::Exact("yes".into()),
                },
                invert: true,
            }],
            methods: vec![(Method::GET, true)],
            path: Some((PathMatch::Exact("/health".into()), true)),
            source: None,
        }]);
        assert!(!r.is_distinct());
        assert_eq!(
            parts(&r, &client(&Method::POST, "/x", &h)),
            Some(Vec::new())
        );
        assert!(parts(&r, &client(&Method::GET, "/x", &h)).is_none());
        assert!(parts(&r, &client(&Method::POST, "/health", &h)).is_none());
        let mut internal = HeaderMap::new();
        internal.insert("x-internal", "yes".parse().unwrap());
        assert!(parts(&r, &client(&Method::POST, "/x", &internal)).is_none());
        // No selectors: every request.
        assert_eq!(
            parts(&rule(Vec::new()), &client(&Method::GET, "/", &h)),
            Some(Vec::new())
        );
    }
}
