//! ExtensionPolicy (issue 24): Envoy Gateway's EnvoyExtensionPolicy `extProc` list under our
//! kind, compiled to [`weir_snapshot::ExtProc`] and put on the route entries it applies to
//! (`RouteAction::ext_proc`; the proxy runs it on the endpoint picker's ext_proc client).
//!
//! Decisions:
//! - Targets are Gateways (every route entry of their listeners) and HTTPRoutes
//!   (`sectionName`: a rule name). The most specific wins as a whole (rule, route,
//!   Gateway); two policies naming the same target conflict and the oldest wins
//!   ([`attach`]). Anything else (a listener, a GRPCRoute) is refused (`UnsupportedValue`).
//! - Implemented per processor: one `backendRef` (or a one-item `backendRefs`) to a
//!   Service speaking gRPC (h2c), `processingMode.request` (headers; `body: Buffered` sends
//!   the body whole, up to 1 MiB), `processingMode.response` (headers only), `messageTimeout`
//!   (default 200 ms) and `failOpen` (default false: a failure answers 500). Every other
//!   field or value (`wasm`, `lua`, `metadata`, `Streamed` bodies, response bodies...) is
//!   refused by its path (`UnsupportedValue`): the policy is `Accepted=False` and its targets
//!   answer 500 rather than skip the processing they were configured with.
//! - A processor Service that does not resolve leaves the policy `Accepted=True` with
//!   `ResolvedRefs=False` (the Gateway API reasons: BackendNotFound, RefNotPermitted,
//!   InvalidKind); its requests fail as the processor failing would (500, or on without it
//!   under `failOpen`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use weir_snapshot::{BackendTarget, BodyMode, ExtProc, ExtProcessor, RouteAction};
use weir_store::policies::{self, ExtensionPolicySpec, Unsupported};
use weir_store::{ExtensionPolicy, ObjectKey, Store, POLICY_GROUP};

use crate::backend::{BackendRefSpec, Upstreams};
use crate::model::GatewayModel;
use crate::policy::attach::{Allowed, NotAccepted};
use crate::policy::attached::{self, Also, Attached};

/// What an ExtensionPolicy may name.
const TARGETS: Allowed = Allowed {
    gateway: true,
    listener_set: false,
    routes: true,
    service: false,
};

/// The most request body bytes a `Buffered` processor gets (413 above).
pub const BODY_MAX: u64 = 1 << 20;

type Model = attached::Model<ExtensionPolicy, Arc<ExtProc>>;

/// Every ExtensionPolicy, and which one holds each target (statuses:
/// [`Attached::statuses`]).
pub type ExtensionPolicies = Attached<ExtensionPolicy, Arc<ExtProc>>;

/// Evaluate every policy; processor Services resolve into `upstreams` like backendRefs.
pub fn build(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    upstreams: &mut Upstreams,
) -> ExtensionPolicies {
    Attached::build(store, "Gateway, route or rule", |key, p| {
        evaluate(store, upstreams, ours, key, p)
    })
}

/// Put the effective policy on every route entry of our Gateways.
pub fn place(policies: &ExtensionPolicies, gateways: &mut [GatewayModel]) {
    policies.place(gateways, |old, compiled| RouteAction {
        ext_proc: Some(compiled.clone()),
        ..attached::copy(old)
    });
}

fn evaluate(
    store: &Store,
    upstreams: &mut Upstreams,
    ours: &BTreeSet<ObjectKey>,
    key: &ObjectKey,
    p: &Arc<ExtensionPolicy>,
) -> Model {
    let name: Arc<str> = key.to_string().into();
    let mut unresolved = None;
    let compile = || {
        let processors = compile(store, upstreams, key, &p.spec, &mut unresolved)?;
        Ok(Arc::new(ExtProc {
            name: name.clone(),
            deny: None,
            processors,
        }))
    };
    // Fail closed: the targets are held and answer 500.
    let deny = |n: &NotAccepted| {
        Arc::new(ExtProc {
            name: name.clone(),
            deny: Some(format!("ExtensionPolicy {key} is not accepted ({})", n.reason).into()),
            processors: Vec::new(),
        })
    };
    let refs = p.spec.targets.all();
    let mut model = attached::evaluate(store, ours, (key, p), refs, TARGETS, compile, Some(&deny));
    model.also = match unresolved {
        Some((reason, message)) => vec![Also::new("ResolvedRefs", false, reason, message)],
        None if model.not_accepted.is_none() => vec![Also::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every processor Service resolves",
        )],
        None => Vec::new(),
    };
    model
}

/// The paths of the fields Weir does not implement.
fn unsupported_fields(spec: &ExtensionPolicySpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |path: &str, u: &Unsupported| {
        out.extend(u.keys().map(|k| format!("{path}.{k}")));
    };
    add("spec", &spec.unsupported);
    for (i, e) in spec.ext_proc.iter().flatten().enumerate() {
        let at = format!("spec.extProc[{i}]");
        add(&at, &e.unsupported);
        if let Some(r) = &e.backend_ref {
            add(&format!("{at}.backendRef"), &r.unsupported);
        }
        for (j, r) in e.backend_refs.iter().flatten().enumerate() {
            add(&format!("{at}.backendRefs[{j}]"), &r.unsupported);
        }
        if let Some(m) = &e.processing_mode {
            add(&format!("{at}.processingMode"), &m.unsupported);
            if let Some(r) = &m.request {
                add(&format!("{at}.processingMode.request"), &r.unsupported);
            }
            if let Some(r) = &m.response {
                add(&format!("{at}.processingMode.response"), &r.unsupported);
            }
        }
    }
    out
}

fn invalid(message: impl Into<String>) -> NotAccepted {
    NotAccepted::new("Invalid", message)
}

fn unsupported(message: impl Into<String>) -> NotAccepted {
    NotAccepted::new("UnsupportedValue", message)
}

/// Validate and compile every processor; `unresolved` gets the first Service that does not
/// resolve.
fn compile(
    store: &Store,
    upstreams: &mut Upstreams,
    key: &ObjectKey,
    spec: &ExtensionPolicySpec,
    unresolved: &mut Option<(&'static str, String)>,
) -> Result<Vec<ExtProcessor>, NotAccepted> {
    let fields = unsupported_fields(spec);
    if !fields.is_empty() {
        return Err(unsupported(format!(
            "Weir does not implement {} (yet): the policy is not applied and its targets answer \
             500 until {} removed",
            fields.join(", "),
            if fields.len() == 1 {
                "it is"
            } else {
                "they are"
            }
        )));
    }
    let list = spec.ext_proc.as_deref().unwrap_or(&[]);
    if list.is_empty() {
        return Err(invalid("spec.extProc: at least one processor is required"));
    }
    list.iter()
        .enumerate()
        .map(|(i, e)| processor(store, upstreams, key, i, e, unresolved))
        .collect()
}

fn body_mode(at: &str, body: Option<&str>) -> Result<BodyMode, NotAccepted> {
    match body {
        None => Ok(BodyMode::None),
        Some("Buffered") => Ok(BodyMode::Buffered),
        Some(other @ ("Streamed" | "BufferedPartial" | "FullDuplexStreamed")) => Err(unsupported(
            format!("Weir does not implement {at}.body {other} (yet): Buffered or no body"),
        )),
        Some(other) => Err(invalid(format!(
            "{at}.body {other:?} is not Streamed, Buffered, BufferedPartial or FullDuplexStreamed"
        ))),
    }
}

fn processor(
    store: &Store,
    upstreams: &mut Upstreams,
    key: &ObjectKey,
    i: usize,
    e: &policies::ExtProc,
    unresolved: &mut Option<(&'static str, String)>,
) -> Result<ExtProcessor, NotAccepted> {
    let at = format!("spec.extProc[{i}]");
    let refs: Vec<&policies::PolicyBackendRef> = e
        .backend_ref
        .iter()
        .chain(e.backend_refs.iter().flatten())
        .collect();
    let r = match refs[..] {
        [r] => r,
        [] => return Err(invalid(format!("{at}: a backendRef is required"))),
        _ => {
            return Err(unsupported(format!(
                "{at}: Weir sends to one processor Service per entry: more than one backendRef"
            )))
        }
    };
    let mode = e.processing_mode.as_ref();
    let request = mode
        .and_then(|m| m.request.as_ref())
        .map(|r| body_mode(&format!("{at}.processingMode.request"), r.body.as_deref()))
        .transpose()?;
    let response = match mode.and_then(|m| m.response.as_ref()) {
        None => false,
        Some(r) => match body_mode(&format!("{at}.processingMode.response"), r.body.as_deref())? {
            BodyMode::None => true,
            BodyMode::Buffered => {
                return Err(unsupported(format!(
                    "Weir does not implement {at}.processingMode.response.body Buffered (yet): \
                     response headers only"
                )))
            }
        },
    };
    let timeout = crate::policy::backend::duration(
        &format!("{at}.messageTimeout"),
        e.message_timeout.as_deref(),
    )?
    .unwrap_or(weir_snapshot::ext_proc::DEFAULT_MESSAGE_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(3600) {
        return Err(invalid(format!(
            "{at}.messageTimeout must be above 0 and at most 1h"
        )));
    }
    let spec = BackendRefSpec {
        group: r.group.as_deref(),
        kind: r.kind.as_deref(),
        name: &r.name,
        namespace: r.namespace.as_deref(),
        port: r.port,
    };
    let service = match upstreams.resolve_from(
        store,
        POLICY_GROUP,
        "ExtensionPolicy",
        &key.namespace,
        &spec,
    ) {
        Ok(u) => BackendTarget::Upstream(u),
        Err(err) => {
            let message = format!("{at}.backendRef: {err}");
            if unresolved.is_none() {
                *unresolved = Some((err.reason(), message.clone()));
            }
            BackendTarget::Invalid(message.into())
        }
    };
    Ok(ExtProcessor {
        service,
        request,
        response,
        timeout,
        fail_open: e.fail_open.unwrap_or(false),
        body_max: BODY_MAX,
    })
}

#[cfg(test)]
mod tests;
