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

use weir_store::gw::tcproutes::TcpRouteParentRefs;
use weir_store::{ObjectKey, Store, TcpRoute};

use crate::backend::Upstreams;
use crate::model::GatewayModel;
use crate::model::{ParentRefSpec, ParentResult};
use crate::tlsroute::{self, CompiledTlsRoute, StreamAttach};

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
    let how = StreamAttach {
        kind: KIND,
        listener_sets: true,
        by_hostname: false,
    };
    let refs = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .map(ParentRefSpec::from);
    tlsroute::attach_stream(store, &how, refs, compiled, gateways, index)
}
