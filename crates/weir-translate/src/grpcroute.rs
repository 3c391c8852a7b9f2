//! GRPCRoute: read and reported, not served yet (a later slice of the conformance work
//! serves it).
//!
//! Until then the truth is what the spec's status says for a route no listener admits: our
//! listeners' `supportedKinds` list only HTTPRoute, so a GRPCRoute whose parentRef names a
//! Gateway of ours gets, per such parentRef, Accepted=False with NotAllowedByListeners (or
//! NoMatchingParent when its sectionName / port select no listener, as for any route), and
//! ResolvedRefs computed from its backendRefs exactly as for an HTTPRoute. It attaches to no
//! listener (attachedRoutes counts it nowhere) and adds nothing to the snapshot.

use std::collections::BTreeMap;

use weir_store::{GrpcRoute, ObjectKey, Store};

use crate::backend::{BackendRefSpec, Upstreams};
use crate::error::TranslateError;
use crate::gateway::GatewayModel;
use crate::route::{self, ParentRefSpec, ParentResult};

const KIND: &str = "GRPCRoute";

/// One result per parentRef of `grpc_route` that names a Gateway of ours (none: the route is
/// not ours).
pub fn parents(
    store: &Store,
    grpc_route: &GrpcRoute,
    gateways: &[GatewayModel],
    index: &BTreeMap<ObjectKey, usize>,
) -> Vec<ParentResult> {
    let route_ns = grpc_route.metadata.namespace.as_deref().unwrap_or("");
    let mut results = Vec::new();
    for p in grpc_route.spec.parent_refs.iter().flatten() {
        let p = ParentRefSpec::from(p);
        let Some((gi, ns)) = route::our_gateway(&p, route_ns, index) else {
            continue;
        };
        let gateway = &gateways[gi];
        let not_accepted = match route::allowed_listeners(store, KIND, route_ns, &p, gateway) {
            Err((reason, message)) => (
                reason,
                format!("{message}; Weir does not serve GRPCRoutes yet"),
            ),
            // No listener lists GRPCRoute among its supportedKinds today; should one ever
            // do so before GRPCRoute is served, the route is still not attached.
            Ok(_) => (
                "NotAllowedByListeners",
                format!(
                    "Gateway {}: Weir does not serve GRPCRoutes yet",
                    gateway.key
                ),
            ),
        };
        results.push(ParentResult {
            parent_ref: route::status_ref(&p, &ns),
            accepted: Err(not_accepted),
        });
    }
    results
}

/// The first backendRef of `grpc_route` that does not resolve (ResolvedRefs=False), checked
/// as for HTTPRoute backendRefs (kind, ReferenceGrant from GRPCRoute, Service, port).
pub fn unresolved(store: &Store, grpc_route: &GrpcRoute) -> Option<TranslateError> {
    let route_ns = grpc_route.metadata.namespace.as_deref().unwrap_or("");
    // Resolved only to be checked: nothing here reaches the snapshot.
    let mut upstreams = Upstreams::default();
    grpc_route
        .spec
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| rule.backend_refs.iter().flatten())
        .find_map(|b| {
            let spec = BackendRefSpec {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: &b.name,
                namespace: b.namespace.as_deref(),
                port: b.port,
            };
            upstreams.resolve(store, KIND, route_ns, &spec).err()
        })
}
