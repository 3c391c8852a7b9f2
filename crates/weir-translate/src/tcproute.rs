//! TCPRoute (GATEWAY-TCP profile, feature `TCPRoute`): routes on listeners of protocol TCP
//! forward raw connections, nothing read from them, to the route's backends.
//!
//! Attachment is the shared parentRef / listener selection ([`crate::route`]: a Gateway or a
//! ListenerSet, sectionName, port, allowedRoutes kinds and namespaces); a TCPRoute has no
//! hostnames, so every allowed listener takes it. Its backendRefs resolve like HTTPRoute
//! backendRefs (ResolvedRefs=False with InvalidKind, BackendNotFound or RefNotPermitted for the
//! first that does not; a ReferenceGrant must name `from: TCPRoute`); a route with an
//! unresolved backend still attaches, and connections that pick that backend are closed.
//!
//! Nothing in a TCP connection tells routes apart, so a listener with several TCPRoutes
//! forwards to the oldest one's backends (creation time, then namespace/name, as the spec
//! resolves conflicts); the others stay Accepted, as they are attached and would serve if the
//! oldest went away.

use std::collections::BTreeMap;

use weir_store::gw::tcproutes::{
    TcpRouteParentRefs, TcpRouteStatus, TcpRouteStatusParents, TcpRouteStatusParentsParentRef,
};
use weir_store::{ObjectKey, Store, TcpRoute};

use crate::backend::Upstreams;
use crate::gateway::GatewayModel;
use crate::route::{self, NotAccepted, ParentRefSpec, ParentResult};
use crate::status::{self, Conditions};
use crate::tlsroute::{self, CompiledTlsRoute};

pub const KIND: &str = "TCPRoute";

impl<'a> From<&'a TcpRouteParentRefs> for ParentRefSpec<'a> {
    fn from(p: &'a TcpRouteParentRefs) -> Self {
        Self {
            group: p.group.as_deref(),
            kind: p.kind.as_deref(),
            name: &p.name,
            namespace: p.namespace.as_deref(),
            port: p.port,
            section_name: p.section_name.as_deref(),
        }
    }
}

/// Resolve a TCPRoute's backends (every rule's backendRefs form one weighted set), into the
/// same compiled shape as a TLSRoute without hostnames.
pub fn compile(store: &Store, route: &TcpRoute, upstreams: &mut Upstreams) -> CompiledTlsRoute {
    let refs = route
        .spec
        .rules
        .iter()
        .flat_map(|r| r.backend_refs.iter())
        .map(|b| tlsroute::StreamBackendRef {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
            weight: b.weight,
        });
    tlsroute::compile_stream(store, KIND, &route.metadata, Vec::new(), refs, upstreams)
}

/// Attach a compiled TCPRoute to the TCP listeners its parentRefs select. One result per
/// parentRef that names a Gateway of ours or a ListenerSet of one (none: the route is not
/// ours).
pub fn attach(
    store: &Store,
    route: &TcpRoute,
    compiled: &CompiledTlsRoute,
    gateways: &mut [GatewayModel],
    index: &BTreeMap<ObjectKey, usize>,
) -> Vec<ParentResult> {
    let route_ns = compiled.key.namespace.as_str();
    let mut results = Vec::new();
    let mut attached: Vec<(usize, usize)> = Vec::new();
    for p in route.spec.parent_refs.iter().flatten() {
        let p = ParentRefSpec::from(p);
        let Some((gi, ns)) = route::our_gateway(&p, route_ns, index)
            .or_else(|| crate::listenerset::parent_gateway(&p, route_ns, gateways))
        else {
            continue;
        };
        let accepted = select(store, route_ns, &p, compiled, gateways, gi, &mut attached);
        results.push(ParentResult {
            parent_ref: route::status_ref(&p, &ns),
            accepted,
        });
    }
    results
}

fn select(
    store: &Store,
    route_ns: &str,
    p: &ParentRefSpec<'_>,
    compiled: &CompiledTlsRoute,
    gateways: &mut [GatewayModel],
    gi: usize,
    attached: &mut Vec<(usize, usize)>,
) -> Result<(), NotAccepted> {
    let gateway = &mut gateways[gi];
    let allowed = route::allowed_listeners(store, KIND, route_ns, p, gateway)?;
    for i in allowed {
        if attached.contains(&(gi, i)) {
            continue;
        }
        attached.push((gi, i));
        let l = &mut gateway.listeners[i];
        l.attached_routes += 1;
        l.tls_entries.push((
            None,
            (compiled.created, compiled.key.clone()),
            compiled.entry.clone(),
        ));
    }
    Ok(())
}

/// A TCPRoute's status: per parent of ours, Accepted and ResolvedRefs as for HTTPRoutes.
pub fn route_status(
    controller: &str,
    compiled: &CompiledTlsRoute,
    parents: Vec<ParentResult>,
    c: &Conditions<'_>,
) -> TcpRouteStatus {
    let parents = parents
        .into_iter()
        .map(|p| TcpRouteStatusParents {
            conditions: status::parent_conditions(&p, compiled.unresolved.as_ref(), None, c),
            controller_name: controller.into(),
            parent_ref: TcpRouteStatusParentsParentRef {
                group: p.parent_ref.group,
                kind: p.parent_ref.kind,
                name: p.parent_ref.name,
                namespace: p.parent_ref.namespace,
                port: p.parent_ref.port,
                section_name: p.parent_ref.section_name,
            },
        })
        .collect();
    TcpRouteStatus { parents }
}
