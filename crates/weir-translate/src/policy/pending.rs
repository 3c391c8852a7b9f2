//! SecurityPolicy before its fields are implemented: their CRDs
//! and status exist, so a user who applies one sees at once what Weir does with it. A policy
//! that asks for anything (any field but its targets) is refused — `Accepted=False`,
//! `UnsupportedValue`, naming the fields — never silently ignored; one with only targets is
//! accepted (it asks for nothing). Attachment is [`attach`]'s, as for every policy kind.

use std::collections::BTreeSet;

use weir_store::policies::{PolicyTargets, Unsupported};
use weir_store::{Kind, ObjectKey, ObjectMeta, Store, GATEWAY_GROUP};

use crate::conditions::Conditions;
use crate::policy::attach::{self, Allowed, TargetRef};
use crate::ObjectStatus;

/// Statuses of every SecurityPolicy; `ours`: the Gateways of our
/// classes.
pub fn statuses(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    controller: &str,
    now: &weir_store::Time,
) -> Vec<ObjectStatus> {
    let security = Allowed {
        gateway: true,
        listener_set: false,
        routes: true,
        service: false,
    };
    let mut out = Vec::new();
    for p in store.security_policies.values() {
        let (meta, spec) = (&p.metadata, &p.spec);
        out.push(status(
            store,
            ours,
            controller,
            now,
            Kind::SecurityPolicy,
            (meta, &spec.targets, &spec.unsupported),
            security,
        ));
    }
    out
}

fn status(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    controller: &str,
    now: &weir_store::Time,
    kind: Kind,
    (meta, targets, unsupported): (&ObjectMeta, &PolicyTargets, &Unsupported),
    allowed: Allowed,
) -> ObjectStatus {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let mut ancestors = BTreeSet::new();
    let mut not_found = None;
    for t in targets.all() {
        let r = TargetRef {
            group: &t.group,
            kind: &t.kind,
            name: &t.name,
            section_name: t.section_name.as_deref(),
        };
        let Some(resolved) = attach::resolve(store, namespace, r, allowed) else {
            continue;
        };
        if let Some(n) = resolved.not_found {
            not_found = not_found.or(Some(n));
        }
        let target = &resolved.target;
        match target.kind {
            Kind::Gateway
                if ours.contains(&target.key) || !store.gateways.contains_key(&target.key) =>
            {
                ancestors.insert(target.key.clone());
            }
            Kind::HttpRoute | Kind::GrpcRoute => {
                ancestors.extend(route_gateways(store, target.kind, &target.key, ours));
            }
            Kind::Service => {
                ancestors.extend(service_gateways(store, &target.key, ours));
            }
            _ => {}
        }
    }
    let c = Conditions {
        generation: meta.generation,
        now,
    };
    let accepted = if !unsupported.is_empty() {
        let fields: Vec<String> = unsupported.keys().map(|k| format!("spec.{k}")).collect();
        c.make(
            "Accepted",
            false,
            "UnsupportedValue",
            format!(
                "Weir does not implement {} of {kind} (yet): the policy is not applied",
                fields.join(", ")
            ),
        )
    } else if let Some(n) = not_found {
        c.make("Accepted", false, n.reason, n.message)
    } else {
        c.make("Accepted", true, "Accepted", "Policy has been accepted")
    };
    ObjectStatus::new(
        kind,
        meta,
        attach::ancestor_status(&ancestors, controller, &[accepted]),
    )
}

/// Our Gateways a route names in its parentRefs.
pub(crate) fn route_gateways(
    store: &Store,
    kind: Kind,
    route: &ObjectKey,
    ours: &BTreeSet<ObjectKey>,
) -> Vec<ObjectKey> {
    // A parentRef that names a Gateway: its key.
    let gateway = |group: Option<&str>, kind: Option<&str>, name: &str, ns: Option<&str>| {
        (group.unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP && kind.unwrap_or("Gateway") == "Gateway")
            .then(|| ObjectKey::new(ns.unwrap_or(&route.namespace), name))
    };
    let parents: Vec<ObjectKey> = match kind {
        Kind::HttpRoute => store
            .http_routes
            .get(route)
            .into_iter()
            .flat_map(|r| r.spec.parent_refs.iter().flatten())
            .filter_map(|p| {
                let (group, kind) = (p.group.as_deref(), p.kind.as_deref());
                gateway(group, kind, &p.name, p.namespace.as_deref())
            })
            .collect(),
        Kind::GrpcRoute => store
            .grpc_routes
            .get(route)
            .into_iter()
            .flat_map(|r| r.spec.parent_refs.iter().flatten())
            .filter_map(|p| {
                let (group, kind) = (p.group.as_deref(), p.kind.as_deref());
                gateway(group, kind, &p.name, p.namespace.as_deref())
            })
            .collect(),
        _ => Vec::new(),
    };
    parents.into_iter().filter(|g| ours.contains(g)).collect()
}

/// Our Gateways with an HTTPRoute in the Service's namespace whose backendRefs name it.
fn service_gateways(
    store: &Store,
    service: &ObjectKey,
    ours: &BTreeSet<ObjectKey>,
) -> Vec<ObjectKey> {
    let mut out = Vec::new();
    for (key, r) in &store.http_routes {
        let uses = r.spec.rules.iter().flatten().any(|rule| {
            rule.backend_refs.iter().flatten().any(|b| {
                b.name == *service.name
                    && b.kind.as_deref().unwrap_or("Service") == "Service"
                    && b.namespace.as_deref().unwrap_or(&key.namespace) == &*service.namespace
            })
        });
        if uses {
            out.extend(route_gateways(store, Kind::HttpRoute, key, ours));
        }
    }
    out
}
