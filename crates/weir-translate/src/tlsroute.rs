//! TLSRoute: routes TLS connections by SNI on TLS listeners: in mode Passthrough without
//! terminating TLS (GATEWAY-TLS profile, feature `TLSRoute`), in mode Terminate after
//! terminating it with the listener's certificate (`TLSRouteModeTerminate`).
//!
//! Attachment is the shared parentRef / listener selection ([`crate::route`]: sectionName,
//! port, allowedRoutes kinds and namespaces), then hostnames: a TLSRoute's `hostnames`
//! intersect the listener's hostname like HTTPRoute hostnames (none:
//! NoMatchingListenerHostname). Its backendRefs resolve like HTTPRoute backendRefs
//! (ResolvedRefs=False with InvalidKind, BackendNotFound or RefNotPermitted for the first that
//! does not; a ReferenceGrant must name `from: TLSRoute`); a route with an unresolved backend
//! still attaches, and connections that pick that backend are closed.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_snapshot::{Backend, BackendTarget, HostPattern, TlsRouteEntry};
use weir_store::gw::tlsroutes::TlsRouteParentRefs;
use weir_store::{ObjectKey, ObjectMeta, Store, TlsRoute};

use crate::backend::{BackendRefSpec, Upstreams};
use crate::error::TranslateError;
use crate::hostname::effective_hosts;
use crate::meta::created;
use crate::model::GatewayModel;
use crate::model::{NotAccepted, ParentRefSpec, ParentResult};
use crate::route;

const KIND: &str = "TLSRoute";

impl<'a> From<&'a TlsRouteParentRefs> for ParentRefSpec<'a> {
    fn from(p: &'a TlsRouteParentRefs) -> Self {
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

/// A TLSRoute (or TCPRoute, without hostnames) compiled: its entry for the snapshot and the
/// first backendRef that did not resolve.
pub struct CompiledTlsRoute {
    pub key: ObjectKey,
    pub created: (i64, u32),
    pub hostnames: Vec<HostPattern>,
    pub entry: Arc<TlsRouteEntry>,
    pub unresolved: Option<TranslateError>,
}

/// Resolve a TLSRoute's backends (every rule's backendRefs form one weighted set).
pub fn compile(store: &Store, route: &TlsRoute, upstreams: &mut Upstreams) -> CompiledTlsRoute {
    let hostnames = route
        .spec
        .hostnames
        .iter()
        .filter_map(|h| HostPattern::parse(h))
        .collect();
    let refs = route
        .spec
        .rules
        .iter()
        .flat_map(|r| r.backend_refs.iter())
        .map(|b| StreamBackendRef {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
            weight: b.weight,
        });
    compile_stream(store, KIND, &route.metadata, hostnames, refs, upstreams)
}

/// A backendRef of a layer-4 route (TLSRoute, TCPRoute), whichever kind it comes from.
pub struct StreamBackendRef<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

/// Compile a layer-4 route of `kind` (TLSRoute, TCPRoute): resolve its backendRefs into one
/// weighted set, noting the first that does not resolve.
pub fn compile_stream<'a>(
    store: &Store,
    kind: &'static str,
    meta: &ObjectMeta,
    hostnames: Vec<HostPattern>,
    refs: impl IntoIterator<Item = StreamBackendRef<'a>>,
    upstreams: &mut Upstreams,
) -> CompiledTlsRoute {
    let key = ObjectKey::of(meta);
    let mut unresolved = None;
    let mut backends = Vec::new();
    for b in refs {
        let spec = BackendRefSpec {
            group: b.group,
            kind: b.kind,
            name: b.name,
            namespace: b.namespace,
            port: b.port,
        };
        let target = match upstreams.resolve(store, kind, &key.namespace, &spec) {
            Ok(u) => BackendTarget::Upstream(u),
            Err(e) => {
                let why: Arc<str> = e.to_string().into();
                unresolved.get_or_insert(e);
                BackendTarget::Invalid(why)
            }
        };
        backends.push(Backend {
            weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
            target,
            filters: Arc::from([]),
        });
    }
    CompiledTlsRoute {
        hostnames,
        entry: Arc::new(TlsRouteEntry {
            route: key.to_string().into(),
            backends: backends.into(),
        }),
        created: created(meta),
        key,
        unresolved,
    }
}

/// Attach a compiled TLSRoute to the passthrough listeners its parentRefs select. One result
/// per parentRef that names a Gateway of ours (none: the route is not ours).
pub fn attach(
    store: &Store,
    route: &TlsRoute,
    compiled: &CompiledTlsRoute,
    gateways: &mut [GatewayModel],
    index: &BTreeMap<ObjectKey, usize>,
) -> Vec<ParentResult> {
    let how = StreamAttach {
        kind: KIND,
        listener_sets: false,
        by_hostname: true,
    };
    let refs = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .map(ParentRefSpec::from);
    attach_stream(store, &how, refs, compiled, gateways, index)
}

/// What differs between the stream routes (TLSRoute, TCPRoute) when they attach.
pub(crate) struct StreamAttach {
    pub kind: &'static str,
    /// Whether a parentRef may name a ListenerSet (of a Gateway of ours).
    pub listener_sets: bool,
    /// Whether the route's hostnames must intersect the listener's (TLSRoute); without, the
    /// route sits under the catch-all of every listener it is allowed on (TCPRoute).
    pub by_hostname: bool,
}

/// Attach a compiled stream route to the listeners its parentRefs select. One result per
/// parentRef that names a Gateway of ours, or with `listener_sets` a ListenerSet of one
/// (none: the route is not ours).
pub(crate) fn attach_stream<'a>(
    store: &Store,
    how: &StreamAttach,
    parent_refs: impl Iterator<Item = ParentRefSpec<'a>>,
    compiled: &CompiledTlsRoute,
    gateways: &mut [GatewayModel],
    index: &BTreeMap<ObjectKey, usize>,
) -> Vec<ParentResult> {
    let route_ns = &*compiled.key.namespace;
    let mut results = Vec::new();
    let mut attached: Vec<(usize, usize)> = Vec::new();
    for p in parent_refs {
        let parent = route::our_gateway(&p, route_ns, index).or_else(|| {
            how.listener_sets
                .then(|| crate::listenerset::parent_gateway(&p, route_ns, gateways))
                .flatten()
        });
        let Some((gi, ns)) = parent else {
            continue;
        };
        let accepted = select(
            store,
            how,
            route_ns,
            &p,
            compiled,
            &mut gateways[gi],
            gi,
            &mut attached,
        );
        results.push(ParentResult {
            parent_ref: route::status_ref(&p, &ns),
            accepted,
        });
    }
    results
}

#[allow(clippy::too_many_arguments)]
fn select(
    store: &Store,
    how: &StreamAttach,
    route_ns: &str,
    p: &ParentRefSpec<'_>,
    compiled: &CompiledTlsRoute,
    gateway: &mut GatewayModel,
    gi: usize,
    attached: &mut Vec<(usize, usize)>,
) -> Result<(), NotAccepted> {
    let allowed = route::allowed_listeners(store, how.kind, route_ns, p, gateway)?;
    let mut any = false;
    for i in allowed {
        let l = &mut gateway.listeners[i];
        let hosts = if how.by_hostname {
            effective_hosts(l.hostname.as_ref(), &compiled.hostnames)
        } else {
            vec![None]
        };
        if hosts.is_empty() {
            continue;
        }
        any = true;
        if attached.contains(&(gi, i)) {
            continue;
        }
        attached.push((gi, i));
        l.attached_routes += 1;
        for host in hosts {
            l.tls_entries.push((
                host,
                (compiled.created, compiled.key.clone()),
                compiled.entry.clone(),
            ));
        }
    }
    // (Without hostnames there is nothing to intersect: an allowed listener takes the route.)
    if !any && how.by_hostname {
        return Err((
            "NoMatchingListenerHostname",
            format!(
                "no {} hostname intersects a listener hostname of Gateway {}",
                how.kind, gateway.key
            ),
        ));
    }
    Ok(())
}
