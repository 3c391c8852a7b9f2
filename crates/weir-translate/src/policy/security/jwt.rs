//! `jwt`: providers validated; local key sets (inline, or a ConfigMap's / Secret's `jwks`
//! key) parsed here, remote ones named for the proxy to fetch.
//!
//! `remoteJWKS.backendRefs` (Envoy Gateway's): one Service port the key set is fetched
//! from, resolved here like a route's backendRef (a ReferenceGrant from
//! `gateway.weir.dev/SecurityPolicy` for another namespace). The URI still gives the
//! request's path and Host. TLS is the Service's BackendTLSPolicy, as for any request to
//! it: an `https://` URI through a Service without one is refused rather than fetched in
//! the clear. A Service that does not resolve, more than one backendRef, or the singular
//! `backendRef` make the policy `Accepted=False` (fail closed).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use weir_snapshot::{JwtAuth, JwtKeys, JwtProvider, KeySource, Redacted};
use weir_store::policies::{self, PolicyBackendRef, Unsupported};
use weir_store::{ObjectKey, Store, POLICY_GROUP};

use super::credentials::non_empty;
use super::{invalid, secret_value};
use crate::backend::{BackendRefSpec, Upstreams};
use crate::policy::attach::NotAccepted;

/// The ConfigMap or Secret key a `localJWKS.valueRef` reads (as Envoy Gateway).
const JWKS_KEY: &str = "jwks";

/// How long a remote key set is used before it is fetched again, unless `cacheDuration`
/// says otherwise (Envoy's default: 5 minutes).
pub(crate) const DEFAULT_CACHE: Duration = Duration::from_secs(300);

pub(super) fn unsupported_fields(j: &policies::Jwt, add: &mut impl FnMut(&str, &Unsupported)) {
    add("spec.jwt", &j.unsupported);
    for (i, p) in j.providers.iter().flatten().enumerate() {
        let at = format!("spec.jwt.providers[{i}]");
        add(&at, &p.unsupported);
        if let Some(r) = &p.remote_jwks {
            add(&format!("{at}.remoteJWKS"), &r.unsupported);
            for (k, b) in r.backend_refs.iter().flatten().enumerate() {
                add(&format!("{at}.remoteJWKS.backendRefs[{k}]"), &b.unsupported);
            }
        }
        if let Some(l) = &p.local_jwks {
            add(&format!("{at}.localJWKS"), &l.unsupported);
        }
        for (k, c) in p.claim_to_headers.iter().flatten().enumerate() {
            add(&format!("{at}.claimToHeaders[{k}]"), &c.unsupported);
        }
        if let Some(e) = &p.extract_from {
            add(&format!("{at}.extractFrom"), &e.unsupported);
            for (k, h) in e.headers.iter().flatten().enumerate() {
                add(&format!("{at}.extractFrom.headers[{k}]"), &h.unsupported);
            }
        }
    }
}

pub(super) fn compile(
    store: &Store,
    upstreams: &mut Upstreams,
    policy: &ObjectKey,
    j: &policies::Jwt,
) -> Result<JwtAuth, NotAccepted> {
    let list = j.providers.as_deref().unwrap_or_default();
    if list.is_empty() {
        return Err(invalid(
            "spec.jwt.providers: at least one provider is required",
        ));
    }
    let mut providers: Vec<JwtProvider> = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let at = format!("spec.jwt.providers[{i}]");
        let name = non_empty(&format!("{at}.name"), &p.name)?;
        if providers.iter().any(|q| *q.name == *name) {
            return Err(invalid(format!("{at}.name {name:?} is used twice")));
        }
        let keys = match (&p.remote_jwks, &p.local_jwks) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(format!(
                    "{at}: set exactly one of remoteJWKS and localJWKS"
                )))
            }
            (Some(r), None) => remote(store, upstreams, policy, &at, r)?,
            (None, Some(l)) => local(store, policy, &at, l)?,
        };
        let mut claim_to_headers = Vec::new();
        for (k, c) in p.claim_to_headers.iter().flatten().enumerate() {
            let field = format!("{at}.claimToHeaders[{k}]");
            let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
                invalid(format!(
                    "{field}.header {:?} is not a header name",
                    c.header
                ))
            })?;
            let claim = non_empty(&format!("{field}.claim"), &c.claim)?;
            claim_to_headers.push((header, claim.split('.').map(str::to_string).collect()));
        }
        let mut sources = Vec::new();
        if let Some(e) = &p.extract_from {
            for (k, h) in e.headers.iter().flatten().enumerate() {
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    invalid(format!(
                        "{at}.extractFrom.headers[{k}].name {:?} is not a header name",
                        h.name
                    ))
                })?;
                sources.push(KeySource::Header {
                    name,
                    prefix: h.value_prefix.clone().unwrap_or_default(),
                });
            }
            for c in e.cookies.iter().flatten() {
                sources.push(KeySource::Cookie(non_empty(
                    &format!("{at}.extractFrom.cookies"),
                    c,
                )?));
            }
            for q in e.params.iter().flatten() {
                sources.push(KeySource::Param(non_empty(
                    &format!("{at}.extractFrom.params"),
                    q,
                )?));
            }
        }
        if sources.is_empty() {
            sources.push(KeySource::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            });
        }
        providers.push(JwtProvider {
            name: name.into(),
            issuer: p.issuer.clone().filter(|s| !s.is_empty()),
            audiences: p.audiences.clone().unwrap_or_default(),
            keys,
            claim_to_headers,
            sources,
        });
    }
    Ok(JwtAuth {
        optional: j.optional.unwrap_or(false),
        providers,
    })
}

fn remote(
    store: &Store,
    upstreams: &mut Upstreams,
    policy: &ObjectKey,
    at: &str,
    r: &policies::RemoteJwks,
) -> Result<JwtKeys, NotAccepted> {
    let uri: http::Uri = r
        .uri
        .parse()
        .map_err(|_| invalid(format!("{at}.remoteJWKS.uri {:?} is not a URI", r.uri)))?;
    // https: verified against public roots and `--jwks-ca` (the proxy's fetcher).
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => {}
        _ => {
            return Err(invalid(format!(
                "{at}.remoteJWKS.uri {:?} is not an http:// or https:// URL",
                r.uri
            )))
        }
    }
    let cache_duration = crate::policy::backend::duration(
        &format!("{at}.remoteJWKS.cacheDuration"),
        r.cache_duration.as_deref(),
    )?
    .unwrap_or(DEFAULT_CACHE);
    let backend = match r.backend_refs.as_deref().unwrap_or_default() {
        [] => None,
        [b] => Some(backend(store, upstreams, policy, at, b, uri.scheme_str())?),
        _ => {
            return Err(NotAccepted::new(
                "UnsupportedValue",
                format!("{at}.remoteJWKS.backendRefs: Weir fetches a key set from one Service: more than one backendRef"),
            ))
        }
    };
    Ok(JwtKeys::Remote {
        uri: r.uri.as_str().into(),
        cache_duration,
        backend,
    })
}

/// The Service port of `remoteJWKS.backendRefs[0]`.
fn backend(
    store: &Store,
    upstreams: &mut Upstreams,
    policy: &ObjectKey,
    at: &str,
    b: &PolicyBackendRef,
    scheme: Option<&str>,
) -> Result<Arc<weir_snapshot::Upstream>, NotAccepted> {
    let at = format!("{at}.remoteJWKS.backendRefs[0]");
    let group = crate::refgrant::core_group(b.group.as_deref().unwrap_or(""));
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(invalid(format!(
            "{at}: {group}/{kind} {} is not a Service",
            b.name
        )));
    }
    let spec = BackendRefSpec {
        group: b.group.as_deref(),
        kind: b.kind.as_deref(),
        name: &b.name,
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    let upstream = upstreams
        .resolve_from(
            store,
            POLICY_GROUP,
            "SecurityPolicy",
            &policy.namespace,
            &spec,
        )
        .map_err(|err| invalid(format!("{at}: {err}")))?;
    if scheme == Some("https") && upstream.tls.is_none() {
        return Err(invalid(format!(
            "{at}: the uri is https:// but no BackendTLSPolicy targets Service {}: TLS \
             through a backendRef is that policy's (its CA and hostname); add one, or use \
             an http:// uri",
            upstream.name
        )));
    }
    Ok(upstream)
}

fn local(
    store: &Store,
    policy: &ObjectKey,
    at: &str,
    l: &policies::LocalJwks,
) -> Result<JwtKeys, NotAccepted> {
    let kind = l.type_.as_deref().unwrap_or("Inline");
    let json = match kind {
        "Inline" => l
            .inline
            .clone()
            .ok_or_else(|| invalid(format!("{at}.localJWKS.inline: required for type Inline")))?,
        "ValueRef" => {
            let r = l.value_ref.as_ref().ok_or_else(|| {
                invalid(format!(
                    "{at}.localJWKS.valueRef: required for type ValueRef"
                ))
            })?;
            let key = ObjectKey::new(policy.namespace.as_ref(), r.name.as_str());
            let group = crate::refgrant::core_group(&r.group);
            let raw = match (group, r.kind.as_str()) {
                ("", "ConfigMap") => {
                    let cm = store.config_maps.get(&key).ok_or_else(|| {
                        invalid(format!(
                            "{at}.localJWKS.valueRef: ConfigMap {key} does not exist"
                        ))
                    })?;
                    cm.data.as_ref().and_then(|d| d.get(JWKS_KEY)).cloned()
                }
                ("", "Secret") => {
                    let s = store.secrets.get(&key).ok_or_else(|| {
                        invalid(format!(
                            "{at}.localJWKS.valueRef: Secret {key} does not exist"
                        ))
                    })?;
                    secret_value(s, JWKS_KEY).and_then(|b| String::from_utf8(b).ok())
                }
                (g, k) => {
                    return Err(invalid(format!(
                        "{at}.localJWKS.valueRef: {g}/{k} is not a ConfigMap or Secret"
                    )))
                }
            };
            raw.ok_or_else(|| {
                invalid(format!(
                    "{at}.localJWKS.valueRef: {} {key} has no {JWKS_KEY} key",
                    r.kind
                ))
            })?
        }
        other => {
            return Err(invalid(format!(
                "{at}.localJWKS.type {other:?} is not Inline or ValueRef"
            )))
        }
    };
    let keys = weir_snapshot::security::parse_jwks(&json, true)
        .map_err(|e| invalid(format!("{at}.localJWKS: {e}")))?;
    Ok(JwtKeys::Local(Redacted(Arc::from(keys))))
}
