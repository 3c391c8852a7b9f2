//! `authorization`: ordered rules over principals (client CIDRs, JWT claims and scopes,
//! headers) and operations (methods).

use http::{HeaderName, Method};
use weir_snapshot::{Authorization, AuthorizationRule, Cidr, ClaimMatch, JwtAuth, JwtPrincipal};
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

/// `rules[].operation.paths`: not a field of Envoy Gateway's `Operation` (it has only
/// `methods`), so said plainly rather than as a missing feature.
pub(super) fn paths_refusal(a: &policies::Authorization) -> Option<NotAccepted> {
    let (i, _) = a.rules.iter().flatten().enumerate().find(|(_, r)| {
        r.operation
            .as_ref()
            .is_some_and(|o| o.unsupported.contains_key("paths"))
    })?;
    Some(NotAccepted::new(
        "UnsupportedValue",
        format!(
            "spec.authorization.rules[{i}].operation.paths: Envoy Gateway's Operation has only \
             `methods`; match paths with the route's rules (a rule or route per path, each \
             targeted by its own SecurityPolicy): the policy is not applied and its targets \
             answer 500 until it is removed"
        ),
    ))
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
