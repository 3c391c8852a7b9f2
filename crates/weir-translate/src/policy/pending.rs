//! What the policy kinds share about routes: the Gateways a route is attached to (the
//! ancestors a route-targeting policy reports). SecurityPolicy, the last kind that was only
//! given a status here, has its own module now (`policy/security.rs`).

use std::collections::BTreeSet;

use weir_store::{Kind, ObjectKey, Store, GATEWAY_GROUP};

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
