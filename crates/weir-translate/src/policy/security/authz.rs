//! `authorization`: ordered rules over principals (client CIDRs, JWT claims and scopes,
//! headers) and operations (methods, and Weir's `paths`).
//!
//! `operation.paths` is Weir's extension (Envoy Gateway's `Operation` has only `methods`):
//! a list of HTTPRoute path matches (`type`: `Exact`, `PathPrefix` — the default, by path
//! elements — or `RegularExpression`, anchored; `value`). Exact and PathPrefix values are
//! normalised as route matches are, and the proxy matches them against the normalised
//! request path, the one the route matched: `/a/../admin` is `/admin` for both. A value
//! that does not start with `/`, an unknown type or a regular expression that does not
//! compile (or exceeds the per-pattern bounds of route regexes) makes the policy
//! `Accepted=False` (`Invalid`), and its targets fail closed.

use http::{HeaderName, Method};
use weir_snapshot::{
    Authorization, AuthorizationRule, Cidr, ClaimMatch, JwtAuth, JwtPrincipal, PathMatch,
};
use weir_store::policies::{self, Unsupported};

use super::invalid;
use crate::policy::attach::NotAccepted;

pub(super) fn unsupported_fields(
    a: &policies::Authorization,
    add: &mut impl FnMut(&str, &Unsupported),
) {
    add("spec.authorization", &a.unsupported);
    for (i, r) in a.rules.iter().flatten().enumerate() {
        let at = format!("spec.authorization.rules[{i}]");
        add(&at, &r.unsupported);
        if let Some(o) = &r.operation {
            add(&format!("{at}.operation"), &o.unsupported);
            for (k, p) in o.paths.iter().flatten().enumerate() {
                add(&format!("{at}.operation.paths[{k}]"), &p.unsupported);
            }
        }
        add(&format!("{at}.principal"), &r.principal.unsupported);
        if let Some(j) = &r.principal.jwt {
            add(&format!("{at}.principal.jwt"), &j.unsupported);
            for (k, c) in j.claims.iter().flatten().enumerate() {
                add(&format!("{at}.principal.jwt.claims[{k}]"), &c.unsupported);
            }
        }
        for (k, h) in r.principal.headers.iter().flatten().enumerate() {
            add(&format!("{at}.principal.headers[{k}]"), &h.unsupported);
        }
    }
}

fn action(field: &str, v: &str) -> Result<bool, NotAccepted> {
    match v {
        "Allow" => Ok(true),
        "Deny" => Ok(false),
        other => Err(invalid(format!("{field} {other:?} is not Allow or Deny"))),
    }
}

pub(super) fn compile(
    a: &policies::Authorization,
    jwt: Option<&JwtAuth>,
) -> Result<Authorization, NotAccepted> {
    let default_allow = match a.default_action.as_deref() {
        None => false,
        Some(v) => action("spec.authorization.defaultAction", v)?,
    };
    let mut rules = Vec::new();
    for (i, r) in a.rules.iter().flatten().enumerate() {
        let at = format!("spec.authorization.rules[{i}]");
        let allow = action(&format!("{at}.action"), &r.action)?;
        let methods = r
            .operation
            .iter()
            .flat_map(|o| o.methods.iter().flatten())
            .map(|m| {
                Method::from_bytes(m.as_bytes())
                    .map_err(|_| invalid(format!("{at}.operation.methods: {m:?} is not a method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let paths = r
            .operation
            .iter()
            .flat_map(|o| o.paths.iter().flatten())
            .enumerate()
            .map(|(k, m)| path_match(&format!("{at}.operation.paths[{k}]"), m))
            .collect::<Result<Vec<_>, _>>()?;
        let p = &r.principal;
        let client_cidrs = p
            .client_cidrs
            .iter()
            .flatten()
            .map(|c| {
                Cidr::parse(c).ok_or_else(|| {
                    invalid(format!(
                        "{at}.principal.clientCIDRs: {c:?} is not an address block"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let jwt_principal = match &p.jwt {
            None => None,
            Some(j) => {
                let known =
                    jwt.is_some_and(|jwt| jwt.providers.iter().any(|q| *q.name == *j.provider));
                if !known {
                    return Err(invalid(format!(
                        "{at}.principal.jwt.provider {:?} is not a provider of this policy's jwt",
                        j.provider
                    )));
                }
                let claims = j
                    .claims
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(k, c)| {
                        let array = match c.value_type.as_deref() {
                            None | Some("String") => false,
                            Some("StringArray") => true,
                            Some(other) => {
                                return Err(invalid(format!(
                                    "{at}.principal.jwt.claims[{k}].valueType {other:?} is not \
                                     String or StringArray"
                                )))
                            }
                        };
                        if c.name.is_empty() || c.values.is_empty() {
                            return Err(invalid(format!(
                                "{at}.principal.jwt.claims[{k}]: name and values are required"
                            )));
                        }
                        Ok(ClaimMatch {
                            path: c.name.split('.').map(str::to_string).collect(),
                            array,
                            values: c.values.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let scopes = j.scopes.clone().unwrap_or_default();
                if claims.is_empty() && scopes.is_empty() {
                    return Err(invalid(format!(
                        "{at}.principal.jwt: name claims or scopes"
                    )));
                }
                Some(JwtPrincipal {
                    provider: j.provider.as_str().into(),
                    claims,
                    scopes,
                })
            }
        };
        let headers = p
            .headers
            .iter()
            .flatten()
            .enumerate()
            .map(|(k, h)| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    invalid(format!(
                        "{at}.principal.headers[{k}].name {:?} is not a header name",
                        h.name
                    ))
                })?;
                if h.values.is_empty() {
                    return Err(invalid(format!(
                        "{at}.principal.headers[{k}].values: at least one value"
                    )));
                }
                Ok((name, h.values.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if client_cidrs.is_empty() && jwt_principal.is_none() && headers.is_empty() {
            return Err(invalid(format!(
                "{at}.principal: name clientCIDRs, jwt or headers"
            )));
        }
        rules.push(AuthorizationRule {
            name: r.name.clone().unwrap_or_else(|| format!("rule-{i}")).into(),
            allow,
            methods,
            paths,
            client_cidrs,
            jwt: jwt_principal,
            headers,
        });
    }
    Ok(Authorization {
        default_allow,
        rules,
    })
}

/// One `operation.paths` entry, compiled as an HTTPRoute path match is.
fn path_match(at: &str, m: &policies::AuthorizationPathMatch) -> Result<PathMatch, NotAccepted> {
    let kind = m.type_.as_deref().unwrap_or("PathPrefix");
    let value = m.value.as_str();
    let normal = |value: &str| match weir_snapshot::path::normalize(value) {
        Ok(v) => Ok(v.into_owned()),
        Err(e) => Err(invalid(format!("{at}.value {value:?}: {e}"))),
    };
    match kind {
        "Exact" | "PathPrefix" if !value.starts_with('/') => {
            Err(invalid(format!("{at}.value {value:?} must start with '/'")))
        }
        "Exact" => Ok(PathMatch::Exact(normal(value)?.into())),
        "PathPrefix" => Ok(PathMatch::prefix(&normal(value)?)),
        "RegularExpression" => crate::pattern::Budget::default()
            .anchored(value)
            .map(PathMatch::Regex)
            .map_err(|e| invalid(format!("{at}.value: {e}"))),
        other => Err(invalid(format!(
            "{at}.type {other:?} is not Exact, PathPrefix or RegularExpression"
        ))),
    }
}
