//! `rules[].sessionPersistence` of HTTPRoute and GRPCRoute (GEP-1619, experimental channel),
//! validated and compiled to `weir_snapshot::SessionPersistence`; the proxy's
//! `session.rs` runs it.
//!
//! - `type`: `Cookie` (default) or `Header`.
//! - `sessionName`: the cookie or header name; unset: `weir-session-` and a hash of the
//!   route and rule (GEP-1619: "a unique cookie name should be generated").
//! - `absoluteTimeout`: the session's whole life, carried inside the (authenticated)
//!   session value, so it holds for session cookies too; with
//!   `cookieConfig.lifetimeType: Permanent` (which requires it) it is also the cookie's
//!   `Max-Age`. `Session` (the default) sets neither `Max-Age` nor `Expires`.
//! - `idleTimeout` (in the Go types, not in v1.6.1's CRD, so only file mode sees it): a
//!   session unused this long is over; every response renews the value.
//! - The cookie's `Path` is the path the matched rule matches (GEP-1619 "Path"): an Exact or
//!   PathPrefix value as written, a regular expression's literal prefix up to its last `/`,
//!   `/` when the rule matches every path.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use weir_snapshot::{SessionCarrier, SessionPersistence};
use weir_store::gw::grpcroutes::{
    GrpcRouteRulesSessionPersistence, GrpcRouteRulesSessionPersistenceCookieConfigLifetimeType,
    GrpcRouteRulesSessionPersistenceType,
};
use weir_store::gw::httproutes::{
    HttpRouteRulesMatches, HttpRouteRulesMatchesPathType, HttpRouteRulesSessionPersistence,
    HttpRouteRulesSessionPersistenceCookieConfigLifetimeType, HttpRouteRulesSessionPersistenceType,
};

use weir_store::gw::xbackendtrafficpolicies::{
    XBackendTrafficPolicySessionPersistence,
    XBackendTrafficPolicySessionPersistenceCookieConfigLifetimeType,
    XBackendTrafficPolicySessionPersistenceType,
};

use crate::error::TranslateError;

/// The fields of either route kind's `sessionPersistence`.
pub struct Spec<'a> {
    header: bool,
    name: Option<&'a str>,
    absolute: Option<&'a str>,
    idle: Option<&'a str>,
    /// `cookieConfig.lifetimeType`: `Some(true)` Permanent, `Some(false)` Session.
    permanent: Option<bool>,
}

impl<'a> Spec<'a> {
    pub fn http(s: &'a HttpRouteRulesSessionPersistence) -> Self {
        Self {
            header: s.r#type == Some(HttpRouteRulesSessionPersistenceType::Header),
            name: s.session_name.as_deref(),
            absolute: s.absolute_timeout.as_deref(),
            idle: s.idle_timeout.as_deref(),
            permanent: s.cookie_config.as_ref().and_then(|c| {
                c.lifetime_type.as_ref().map(|t| {
                    *t == HttpRouteRulesSessionPersistenceCookieConfigLifetimeType::Permanent
                })
            }),
        }
    }

    pub fn grpc(s: &'a GrpcRouteRulesSessionPersistence) -> Self {
        Self {
            header: s.r#type == Some(GrpcRouteRulesSessionPersistenceType::Header),
            name: s.session_name.as_deref(),
            absolute: s.absolute_timeout.as_deref(),
            idle: s.idle_timeout.as_deref(),
            permanent: s.cookie_config.as_ref().and_then(|c| {
                c.lifetime_type.as_ref().map(|t| {
                    *t == GrpcRouteRulesSessionPersistenceCookieConfigLifetimeType::Permanent
                })
            }),
        }
    }

    /// A Service's `sessionPersistence` (XBackendTrafficPolicy, GEP-1619 "BackendLBPolicy").
    pub fn xbackend(s: &'a XBackendTrafficPolicySessionPersistence) -> Self {
        Self {
            header: s.r#type == Some(XBackendTrafficPolicySessionPersistenceType::Header),
            name: s.session_name.as_deref(),
            absolute: s.absolute_timeout.as_deref(),
            idle: s.idle_timeout.as_deref(),
            permanent: s.cookie_config.as_ref().and_then(|c| {
                c.lifetime_type.as_ref().map(|t| {
                    *t == XBackendTrafficPolicySessionPersistenceCookieConfigLifetimeType::Permanent
                })
            }),
        }
    }

    /// Validate and compile the rule's session persistence (its cookie path is set per
    /// match by [`Compiled::for_match`]).
    pub fn compile(&self, label: &str, rule_index: usize) -> Result<Compiled, TranslateError> {
        let mut h = DefaultHasher::new();
        ("session", label, rule_index).hash(&mut h);
        let scope = h.finish();
        let default_name = format!("weir-session-{:08x}", scope as u32);
        self.settings(scope, default_name, Some(Arc::from("/")))
            .map(Compiled)
            .map_err(|detail| TranslateError::InvalidSessionPersistence {
                rule: rule_index,
                detail,
            })
    }

    /// Validate and compile: the settings with this `scope`, the name when `sessionName` is
    /// unset, and the cookie `path` (`None`: no `Path` attribute); the error names the field.
    pub fn settings(
        &self,
        scope: u64,
        default_name: String,
        path: Option<Arc<str>>,
    ) -> Result<SessionPersistence, String> {
        let duration = |field: &str, v: Option<&str>| -> Result<Option<Duration>, String> {
            let Some(s) = v else { return Ok(None) };
            let d: gateway_api::Duration = s
                .parse()
                .map_err(|e: String| format!("{field} {s:?}: {e}"))?;
            if d.is_zero() {
                return Err(format!("{field} must be more than 0"));
            }
            Ok(Some(Duration::new(d.as_secs(), d.subsec_nanos())))
        };
        let absolute_timeout = duration("absoluteTimeout", self.absolute)?;
        let idle_timeout = duration("idleTimeout", self.idle)?;
        if self.header && self.permanent.is_some() {
            return Err("cookieConfig can only be set with type Cookie".into());
        }
        let permanent = self.permanent == Some(true);
        if permanent && absolute_timeout.is_none() {
            return Err(
                "absoluteTimeout must be specified when cookie lifetimeType is Permanent".into(),
            );
        }
        let name: Arc<str> = match self.name {
            Some(n) if valid_name(n, self.header) => n.into(),
            Some(n) => {
                return Err(format!(
                    "sessionName {n:?} is not a valid {} name",
                    if self.header { "header" } else { "cookie" }
                ))
            }
            None => default_name.into(),
        };
        Ok(SessionPersistence {
            carrier: if self.header {
                SessionCarrier::Header
            } else {
                SessionCarrier::Cookie
            },
            name,
            scope,
            absolute_timeout,
            idle_timeout,
            permanent,
            path,
        })
    }
}

/// A rule's compiled session persistence, before its cookie path is known.
#[derive(Debug, Clone)]
pub struct Compiled(SessionPersistence);

impl Compiled {
    /// For one match of an HTTPRoute rule: the cookie path is the matched path.
    pub fn for_match(&self, m: &HttpRouteRulesMatches) -> SessionPersistence {
        let path = m.path.as_ref().and_then(|p| {
            let value = p.value.as_deref()?;
            Some(match p.r#type {
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => literal_prefix(value),
                _ => value.to_string(),
            })
        });
        let path = path.filter(|p| is_cookie_path(p)).unwrap_or("/".into());
        SessionPersistence {
            path: Some(path.into()),
            ..self.0.clone()
        }
    }

    /// For a GRPCRoute rule: every method of the rule shares the session (path `/`).
    pub fn whole(self) -> SessionPersistence {
        self.0
    }
}

/// A regular expression's literal prefix up to its last `/` (GEP-1619: `/p1/p2/.*/p3` gives
/// `/p1/p2`), `/` when there is none.
fn literal_prefix(re: &str) -> String {
    let literal: String = re
        .trim_start_matches('^')
        .chars()
        .take_while(|c| !r".*+?()[]{}|\^$".contains(*c))
        .collect();
    match literal.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => literal[..i].into(),
    }
}

/// Whether `p` can be a cookie's `Path` attribute as is (RFC 6265 §4.1.1: any CHAR but
/// controls and `;`).
fn is_cookie_path(p: &str) -> bool {
    p.starts_with('/') && p.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

/// A cookie name (an RFC 7230 token) or a header name.
fn valid_name(n: &str, header: bool) -> bool {
    if header {
        return http::HeaderName::from_bytes(n.as_bytes()).is_ok();
    }
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        header: bool,
        permanent: Option<bool>,
        absolute: Option<&'static str>,
    ) -> Spec<'static> {
        Spec {
            header,
            name: None,
            absolute,
            idle: None,
            permanent,
        }
    }

    #[test]
    fn defaults_give_a_session_cookie_named_for_the_rule() {
        let c = spec(false, None, None).compile("ns/r", 0).unwrap().whole();
        assert_eq!(c.carrier, SessionCarrier::Cookie);
        assert!(c.name.starts_with("weir-session-"));
        assert!(!c.permanent && c.absolute_timeout.is_none());
        let other = spec(false, None, None).compile("ns/r", 1).unwrap().whole();
        assert_ne!(c.scope, other.scope, "rules do not share sessions");
        assert_ne!(c.name, other.name);
    }

    #[test]
    fn the_crd_rules_hold_in_file_mode_too() {
        let e = spec(false, Some(true), None)
            .compile("ns/r", 3)
            .unwrap_err();
        assert!(
            e.to_string().contains("absoluteTimeout must be specified"),
            "{e}"
        );
        assert_eq!(e.reason(), "UnsupportedValue");
        let e = spec(true, Some(false), None)
            .compile("ns/r", 0)
            .unwrap_err();
        assert!(e.to_string().contains("cookieConfig"), "{e}");
        let e = spec(false, None, Some("soon"))
            .compile("ns/r", 0)
            .unwrap_err();
        assert!(e.to_string().contains("absoluteTimeout \"soon\""), "{e}");
        let mut bad = spec(false, None, None);
        bad.name = Some("a b");
        assert!(bad.compile("ns/r", 0).is_err());
        let ok = spec(false, Some(true), Some("5m"))
            .compile("ns/r", 0)
            .unwrap();
        let ok = ok.whole();
        assert!(ok.permanent);
        assert_eq!(ok.absolute_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn cookie_paths_follow_the_match() {
        let c = spec(false, None, None).compile("ns/r", 0).unwrap();
        let m = |t: HttpRouteRulesMatchesPathType, v: &str| HttpRouteRulesMatches {
            path: Some(weir_store::gw::httproutes::HttpRouteRulesMatchesPath {
                r#type: Some(t),
                value: Some(v.into()),
            }),
            ..Default::default()
        };
        use HttpRouteRulesMatchesPathType as T;
        assert_eq!(
            c.for_match(&m(T::PathPrefix, "/app")).path.as_deref(),
            Some("/app")
        );
        assert_eq!(
            c.for_match(&m(T::Exact, "/a/b")).path.as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            c.for_match(&m(T::RegularExpression, "/p1/p2/.*/p3"))
                .path
                .as_deref(),
            Some("/p1/p2")
        );
        assert_eq!(
            c.for_match(&m(T::RegularExpression, "/v[0-9]+/x"))
                .path
                .as_deref(),
            Some("/")
        );
        assert_eq!(
            c.for_match(&m(T::PathPrefix, "/a;b")).path.as_deref(),
            Some("/")
        );
        assert_eq!(
            c.for_match(&HttpRouteRulesMatches::default())
                .path
                .as_deref(),
            Some("/")
        );
    }
}
