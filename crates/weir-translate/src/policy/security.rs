//! SecurityPolicy (issue 23): validated, compiled to [`weir_snapshot::Security`] and put on
//! the route entries it applies to (`RouteAction::security`).
//!
//! Decisions:
//! - Targets are Gateways (every route entry of their listeners), HTTPRoutes and GRPCRoutes
//!   (`sectionName`: a rule name). The most specific wins as a whole (rule, route, Gateway);
//!   two policies naming the same target conflict and the oldest wins ([`attach`]). A
//!   Gateway listener is not a target: refused (`UnsupportedValue`).
//! - Implemented: `cors`, `basicAuth`, `apiKeyAuth`, `jwt`, `authorization` (onto
//!   `RouteAction::security`, phase 2) and `extAuth` (onto `RouteAction::ext_auth`, phase
//!   3, the engine of the HTTPRoute `ExternalAuth` filter: [`ext_auth`]). Every other field
//!   (`oidc`, ...) and sub-field is refused by its path (`UnsupportedValue`).
//! - A rule with its own `ExternalAuth` filter keeps it: the filter, more specific than a
//!   policy, wins over the policy's `extAuth` there (the policy's other mechanisms still
//!   apply to it).
//! - **Fail closed**: a policy that cannot be applied (an unsupported field, a value out of
//!   range, a missing Secret, a Secret of another namespace without a ReferenceGrant, an
//!   htpasswd or JWKS that does not parse) is `Accepted=False` *and* still holds its
//!   targets: their requests answer 500 instead of reaching the backend unauthenticated.
//!   Only a policy whose targets do not exist, or that lost them to an older one, holds
//!   nothing.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use weir_snapshot::{ExtAuth, RouteAction, Security};
use weir_store::policies::{SecretObjectRef, SecurityPolicySpec, Unsupported};
use weir_store::{ObjectKey, SecurityPolicy, Store};

use crate::backend::Upstreams;
use crate::model::GatewayModel;
use crate::policy::attach::{Allowed, NotAccepted};
use crate::policy::attached::{self, Attached};
use crate::refgrant;

mod authz;
mod credentials;
mod ext_auth;
mod jwt;

/// What a SecurityPolicy may name.
const TARGETS: Allowed = Allowed {
    gateway: true,
    listener_set: false,
    routes: true,
    service: false,
};

/// What a SecurityPolicy's targets get.
pub struct Compiled {
    /// The policy, or a deny-all when it cannot be applied.
    security: Arc<Security>,
    /// Its `extAuth`, when it has one and is applied.
    ext_auth: Option<Arc<ExtAuth>>,
}

type Model = attached::Model<SecurityPolicy, Compiled>;

/// Every SecurityPolicy, and which one holds each target (statuses:
/// [`Attached::statuses`]).
pub type SecurityPolicies = Attached<SecurityPolicy, Compiled>;

/// Evaluate every policy; `ours`: the Gateways of our classes; `upstreams`: where the
/// `extAuth` auth Services resolve (shared with the routes').
pub fn build(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    upstreams: &mut Upstreams,
) -> SecurityPolicies {
    Attached::build(store, "Gateway, route or rule", |key, p| {
        evaluate(store, upstreams, ours, key, p)
    })
}

/// Put the effective policy on every route entry of our Gateways.
pub fn place(policies: &SecurityPolicies, gateways: &mut [GatewayModel]) {
    policies.place(gateways, |old, compiled| RouteAction {
        security: Some(compiled.security.clone()),
        // The rule's own ExternalAuth filter wins over the policy's.
        ext_auth: old.ext_auth.clone().or_else(|| compiled.ext_auth.clone()),
        ..attached::copy(old)
    });
}

fn evaluate(
    store: &Store,
    upstreams: &mut Upstreams,
    ours: &BTreeSet<ObjectKey>,
    key: &ObjectKey,
    p: &Arc<SecurityPolicy>,
) -> Model {
    let name: Arc<str> = key.to_string().into();
    let id = identity(key, &p.spec);
    let compile = || {
        let (security, ext_auth) = compile(store, upstreams, key, name.clone(), id, &p.spec)?;
        Ok(Compiled {
            security: Arc::new(security),
            ext_auth: ext_auth.map(Arc::new),
        })
    };
    // Fail closed: the targets are held with a deny-all.
    let deny = |n: &NotAccepted| Compiled {
        security: Arc::new(Security::deny(
            name.clone(),
            id,
            format!("SecurityPolicy {key} is not accepted ({})", n.reason),
        )),
        ext_auth: None,
    };
    let refs = p.spec.targets.all();
    attached::evaluate(store, ours, (key, p), refs, TARGETS, compile, Some(&deny))
}

/// The paths of the fields Weir does not implement.
fn unsupported_fields(spec: &SecurityPolicySpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |path: &str, u: &Unsupported| {
        out.extend(u.keys().map(|k| format!("{path}.{k}")));
    };
    add("spec", &spec.unsupported);
    if let Some(c) = &spec.cors {
        add("spec.cors", &c.unsupported);
    }
    if let Some(b) = &spec.basic_auth {
        add("spec.basicAuth", &b.unsupported);
    }
    if let Some(a) = &spec.api_key_auth {
        add("spec.apiKeyAuth", &a.unsupported);
        for (i, e) in a.extract_from.iter().flatten().enumerate() {
            add(&format!("spec.apiKeyAuth.extractFrom[{i}]"), &e.unsupported);
        }
    }
    if let Some(j) = &spec.jwt {
        jwt::unsupported_fields(j, &mut add);
    }
    if let Some(a) = &spec.authorization {
        authz::unsupported_fields(a, &mut add);
    }
    if let Some(e) = &spec.ext_auth {
        ext_auth::unsupported_fields(e, &mut add);
    }
    out
}

pub(crate) fn invalid(message: impl Into<String>) -> NotAccepted {
    NotAccepted::new("Invalid", message)
}

/// Validate and compile a spec: the phase-2 mechanisms, and the `extAuth` if any.
fn compile(
    store: &Store,
    upstreams: &mut Upstreams,
    key: &ObjectKey,
    name: Arc<str>,
    id: u64,
    spec: &SecurityPolicySpec,
) -> Result<(Security, Option<ExtAuth>), NotAccepted> {
    let unsupported = unsupported_fields(spec);
    if !unsupported.is_empty() {
        return Err(NotAccepted::new(
            "UnsupportedValue",
            format!(
                "Weir does not implement {} (yet): the policy is not applied and its targets \
                 answer 500 until {} removed",
                unsupported.join(", "),
                if unsupported.len() == 1 {
                    "it is"
                } else {
                    "they are"
                }
            ),
        ));
    }
    let mut out = Security {
        name,
        id,
        deny: None,
        cors: None,
        jwt: None,
        basic: None,
        api_key: None,
        authorization: None,
    };
    if let Some(c) = &spec.cors {
        out.cors = Some(cors(c)?);
    }
    if let Some(b) = &spec.basic_auth {
        out.basic = Some(credentials::basic(store, key, b)?);
    }
    if let Some(a) = &spec.api_key_auth {
        out.api_key = Some(credentials::api_key(store, key, a)?);
    }
    if let Some(j) = &spec.jwt {
        out.jwt = Some(jwt::compile(store, upstreams, key, j)?);
    }
    if let Some(a) = &spec.authorization {
        out.authorization = Some(authz::compile(a, out.jwt.as_ref())?);
    }
    let ext_auth = spec
        .ext_auth
        .as_ref()
        .map(|e| ext_auth::compile(store, upstreams, key, e))
        .transpose()?;
    // The identity covers the credentials too: a changed htpasswd must not keep a cached
    // verification of a password it no longer has.
    let mut h = DefaultHasher::new();
    out.id.hash(&mut h);
    if let Some(b) = &out.basic {
        let mut users: Vec<_> = b.users.0.iter().collect();
        users.sort();
        users.hash(&mut h);
    }
    out.id = h.finish();
    Ok((out, ext_auth))
}

/// `cors`: the HTTPRoute CORS filter's snapshot type, so one engine serves both.
fn cors(c: &weir_store::policies::SecurityCors) -> Result<weir_snapshot::Cors, NotAccepted> {
    use crate::filter::cors::list;
    let allow_origins = c
        .allow_origins
        .iter()
        .flatten()
        .map(|o| {
            weir_snapshot::OriginPattern::parse(o).ok_or_else(|| {
                invalid(format!(
                    "spec.cors.allowOrigins {o:?} is not \"*\" or http(s)://host[:port]"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_age = crate::policy::backend::duration("spec.cors.maxAge", c.max_age.as_deref())?
        .map(|d| http::HeaderValue::from(d.as_secs()));
    let l = |field: &str, v: Option<&[String]>| {
        list(field, v).map_err(|e| invalid(format!("spec.cors: {e}")))
    };
    Ok(weir_snapshot::Cors {
        allow_origins: allow_origins.into(),
        allow_methods: l("allowMethods", c.allow_methods.as_deref())?,
        allow_headers: l("allowHeaders", c.allow_headers.as_deref())?,
        expose_headers: l("exposeHeaders", c.expose_headers.as_deref())?,
        max_age,
        allow_credentials: c.allow_credentials.unwrap_or(false),
    })
}

/// A Secret the policy names: ReferenceGrant checked for another namespace; `Invalid`
/// naming it when it is not permitted or missing.
pub(crate) fn secret<'s>(
    store: &'s Store,
    policy: &ObjectKey,
    field: &str,
    r: &SecretObjectRef,
) -> Result<&'s weir_store::Secret, NotAccepted> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !refgrant::core_group(group).is_empty() || kind != "Secret" {
        return Err(invalid(format!(
            "{field}: {group}/{kind} {} is not a core Secret",
            r.name
        )));
    }
    let ns = r.namespace.as_deref().unwrap_or(&policy.namespace);
    let secret_key = ObjectKey::new(ns, r.name.as_str());
    let permitted = refgrant::permitted(
        store,
        &refgrant::From {
            group: weir_store::POLICY_GROUP,
            kind: "SecurityPolicy",
            namespace: &policy.namespace,
        },
        &refgrant::To {
            group: "",
            kind: "Secret",
            namespace: ns,
            name: &r.name,
        },
    );
    if !permitted {
        return Err(invalid(format!(
            "{field}: Secret {secret_key} is in another namespace and no ReferenceGrant there \
             permits it"
        )));
    }
    store
        .secrets
        .get(&secret_key)
        .map(|s| &**s)
        .ok_or_else(|| invalid(format!("{field}: Secret {secret_key} does not exist")))
}

/// The bytes of a Secret's key (`data`, else `stringData`).
pub(crate) fn secret_value(secret: &weir_store::Secret, name: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(name)) {
        return Some(v.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(|v| v.as_bytes().to_vec())
}

/// What keys the policy's runtime state: its name and spec (and so, through the spec, a
/// changed Secret does not reuse a verification cache: see `credentials`).
fn identity(key: &ObjectKey, spec: &SecurityPolicySpec) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
