//! UDPRoute (GATEWAY-UDP profile, feature `UDPRoute`): routes on listeners of protocol UDP
//! forward datagrams, nothing read from them, to the route's backends.
//!
//! Everything but the transport is TCPRoute's ([`crate::tcproute`]): attachment by
//! parentRef (Gateway or ListenerSet, sectionName, port, allowedRoutes kinds and
//! namespaces; a UDPRoute has no hostnames, so every allowed listener takes it), backendRefs
//! resolved like HTTPRoute's (ResolvedRefs=False with InvalidKind, BackendNotFound or
//! RefNotPermitted; a ReferenceGrant must name `from: UDPRoute`), one weighted set of
//! backends, and the oldest route of a listener serving it (the others stay Accepted).
//! UDP listeners get sockets of their own: a UDP and a TCP listener may share a port number.

use std::collections::BTreeMap;

use weir_store::gw::udproutes::UdpRouteParentRefs;
use weir_store::{ObjectKey, Store, UdpRoute};

use crate::backend::Upstreams;
use crate::model::GatewayModel;
use crate::model::{ParentRefSpec, ParentResult};
use crate::tlsroute::{self, CompiledTlsRoute, StreamAttach};

pub const KIND: &str = "UDPRoute";

impl<'a> From<&'a UdpRouteParentRefs> for ParentRefSpec<'a> {
    fn from(p: &'a UdpRouteParentRefs) -> Self {
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

/// Resolve a UDPRoute's backends (every rule's backendRefs form one weighted set).
pub fn compile(store: &Store, route: &UdpRoute, upstreams: &mut Upstreams) -> CompiledTlsRoute {
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

/// Attach a compiled UDPRoute to the UDP listeners its parentRefs select. One result per
/// parentRef that names a Gateway of ours or a ListenerSet of one.
pub fn attach(
    store: &Store,
    route: &UdpRoute,
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
