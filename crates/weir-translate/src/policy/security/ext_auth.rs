//! `extAuth` (Envoy Gateway's field names) onto the engine the HTTPRoute `ExternalAuth`
//! filter uses ([`crate::ext_auth::compile_ext_auth`]): the auth Service resolved here
//! (ReferenceGrant from `gateway.weir.dev/SecurityPolicy` for another namespace), the
//! result put on the policy's route entries as `RouteAction::ext_auth` (phase 3).
//!
//! Unlike the filter, whose unresolved auth service still compiles (its requests answer
//! 500), a policy whose auth service does not resolve is `Accepted=False` (Invalid) and
//! its targets answer 500 through the policy's deny-all: the same fail-closed rule as a
//! missing Secret.

use weir_snapshot::{BackendTarget, ExtAuth};
use weir_store::policies::{self, PolicyBackendRef, Unsupported};
use weir_store::{ObjectKey, Store, POLICY_GROUP};

use super::invalid;
use crate::backend::{BackendRefSpec, Upstreams};
use crate::ext_auth::{compile_ext_auth, ExtAuthConfig};
use crate::policy::attach::NotAccepted;

pub(super) fn unsupported_fields(e: &policies::ExtAuth, add: &mut impl FnMut(&str, &Unsupported)) {
    add("spec.extAuth", &e.unsupported);
    if let Some(b) = &e.body_to_ext_auth {
        add("spec.extAuth.bodyToExtAuth", &b.unsupported);
    }
    let mut refs = |at: &str, one: &Option<PolicyBackendRef>, many: &Option<Vec<_>>| {
        if let Some(r) = one {
            add(&format!("{at}.backendRef"), &r.unsupported);
        }
        for (i, r) in many.iter().flatten().enumerate() {
            let r: &PolicyBackendRef = r;
            add(&format!("{at}.backendRefs[{i}]"), &r.unsupported);
        }
    };
    if let Some(h) = &e.http {
        refs("spec.extAuth.http", &h.backend_ref, &h.backend_refs);
    }
    if let Some(g) = &e.grpc {
        refs("spec.extAuth.grpc", &g.backend_ref, &g.backend_refs);
    }
    if let Some(h) = &e.http {
        add("spec.extAuth.http", &h.unsupported);
    }
    if let Some(g) = &e.grpc {
        add("spec.extAuth.grpc", &g.unsupported);
    }
}

/// Validate `extAuth`, resolve its auth Service, and compile it.
pub(super) fn compile(
    store: &Store,
    upstreams: &mut Upstreams,
    policy: &ObjectKey,
    e: &policies::ExtAuth,
) -> Result<ExtAuth, NotAccepted> {
    let (at, grpc, one, many) = match (&e.http, &e.grpc) {
        (Some(h), None) => ("spec.extAuth.http", false, &h.backend_ref, &h.backend_refs),
        (None, Some(g)) => ("spec.extAuth.grpc", true, &g.backend_ref, &g.backend_refs),
        _ => {
            return Err(invalid(
                "spec.extAuth: exactly one of http and grpc must be set",
            ))
        }
    };
    let refs: Vec<&PolicyBackendRef> = one.iter().chain(many.iter().flatten()).collect();
    let r = match refs[..] {
        [r] => r,
        [] => return Err(invalid(format!("{at}: a backendRef is required"))),
        _ => {
            return Err(NotAccepted::new(
                "UnsupportedValue",
                format!("{at}: Weir sends checks to one auth service: more than one backendRef"),
            ))
        }
    };
    let group = crate::refgrant::core_group(r.group.as_deref().unwrap_or(""));
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(invalid(format!(
            "{at}.backendRef: {group}/{kind} {} is not a Service",
            r.name
        )));
    }
    let spec = BackendRefSpec {
        group: r.group.as_deref(),
        kind: r.kind.as_deref(),
        name: &r.name,
        namespace: r.namespace.as_deref(),
        port: r.port,
    };
    let upstream = upstreams
        .resolve_from(
            store,
            POLICY_GROUP,
            "SecurityPolicy",
            &policy.namespace,
            &spec,
        )
        .map_err(|err| invalid(format!("{at}.backendRef: {err}")))?;
    let timeout = crate::policy::backend::duration("spec.extAuth.timeout", e.timeout.as_deref())?;
    let body_max = match e
        .body_to_ext_auth
        .as_ref()
        .and_then(|b| b.max_request_bytes)
    {
        None => 0,
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => n,
        Some(n) => {
            return Err(invalid(format!(
                "spec.extAuth.bodyToExtAuth.maxRequestBytes {n} is not between 1 and 2^32-1"
            )))
        }
    };
    let http = e.http.as_ref();
    let config = ExtAuthConfig {
        grpc,
        path_prefix: http.and_then(|h| h.path.as_deref()).unwrap_or(""),
        allowed_headers: e.headers_to_ext_auth.as_deref(),
        // Envoy Gateway: unset or empty `headersToBackend` copies no header.
        response_headers: Some(
            http.and_then(|h| h.headers_to_backend.as_deref())
                .unwrap_or(&[]),
        ),
        body_max,
        timeout,
        fail_open: e.fail_open.unwrap_or(false),
    };
    compile_ext_auth(&config, BackendTarget::Upstream(upstream))
        .map_err(|err| invalid(format!("spec.extAuth: {err}")))
}
