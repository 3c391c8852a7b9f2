//! Route attachment: for each parentRef naming one of our Gateways, which listeners take the
//! route (sectionName/port, allowedRoutes, hostnames) and the resulting conditions. The
//! parentRef and listener selection and attaching entries are shared by HTTPRoute and
//! GRPCRoute.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_store::gw::httproutes::HttpRouteStatusParentsParentRef;
use weir_store::{HttpRoute, ObjectKey, Store, GATEWAY_GROUP};

use crate::compile::CompiledRoute;
use crate::hostname::{effective_hosts, intersect};
use crate::listener::namespaces_allow;
use crate::model::{GatewayModel, ListenerModel};
use crate::model::{NotAccepted, ParentRefSpec, ParentResult};
use weir_snapshot::HostPattern;

/// Which Gateway of ours a parentRef names (its index in `index`) and in which namespace;
/// `None` when it names no Gateway of ours (another controller may own it).
pub fn our_gateway(
    p: &ParentRefSpec<'_>,
    route_ns: &str,
    index: &BTreeMap<ObjectKey, usize>,
) -> Option<(usize, String)> {
    let group = p.group.unwrap_or(GATEWAY_GROUP);
    let kind = p.kind.unwrap_or("Gateway");
    if group != GATEWAY_GROUP || kind != "Gateway" {
        return None;
    }
    let ns = p.namespace.unwrap_or(route_ns);
    let gi = *index.get(&ObjectKey::new(ns, p.name))?;
    Some((gi, ns.to_string()))
}

/// Where a route's entries went: listener `listener` of Gateway `gateway` (indices into the
/// translation's Gateway models) took the entries from `start` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub gateway: usize,
    pub listener: usize,
    pub start: usize,
}

/// Attach a compiled HTTPRoute to the listeners its parentRefs select. Returns one result per
/// parentRef that names a Gateway of ours (none: the route is not ours); `placed` gets the
/// listeners that took it.
pub fn attach(
    store: &Store,
    route: &HttpRoute,
    compiled: &CompiledRoute,
    gateways: &mut [GatewayModel],
    index: &BTreeMap<ObjectKey, usize>,
    placed: &mut Vec<Placement>,
) -> Vec<ParentResult> {
    let refs: Vec<ParentRefSpec<'_>> = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .map(ParentRefSpec::from)
        .collect();
    attach_parents(store, "HTTPRoute", &refs, compiled, gateways, index, placed)
}

/// Attach a compiled route of `kind` (`HTTPRoute`, `GRPCRoute`) through `parent_refs`.
/// Returns one result per parentRef that names a Gateway of ours (none: the route is not
/// ours). `placed` (cleared first) gets the listeners holding the route, each once (a route
/// counts once per listener).
pub fn attach_parents(
    store: &Store,
    kind: &'static str,
    parent_refs: &[ParentRefSpec<'_>],
    compiled: &CompiledRoute,
    gateways: &mut [GatewayModel],
    index: &BTreeMap<ObjectKey, usize>,
    placed: &mut Vec<Placement>,
) -> Vec<ParentResult> {
    let route_ns = &*compiled.key.namespace;
    let mut results = Vec::new();
    placed.clear();
    for p in parent_refs {
        let Some((gi, ns)) = our_gateway(p, route_ns, index)
            .or_else(|| crate::listenerset::parent_gateway(p, route_ns, gateways))
        else {
            continue;
        };
        let parent_ref = status_ref(p, &ns);
        let accepted = match &compiled.invalid {
            Some(e) => Err((e.reason(), e.to_string())),
            None => select(store, kind, p, compiled, &mut gateways[gi], gi, placed),
        };
        results.push(ParentResult {
            parent_ref,
            accepted,
        });
    }
    results
}

/// The parentRef as status reports it: group, kind and namespace filled in.
pub fn status_ref(p: &ParentRefSpec<'_>, ns: &str) -> HttpRouteStatusParentsParentRef {
    HttpRouteStatusParentsParentRef {
        group: Some(p.group.unwrap_or(GATEWAY_GROUP).to_string()),
        kind: Some(p.kind.unwrap_or("Gateway").to_string()),
        name: p.name.to_string(),
        namespace: Some(ns.to_string()),
        port: p.port,
        section_name: p.section_name.map(str::to_string),
    }
}

/// The listeners of `gateway` a route of `route_kind` in `route_ns` may attach to through
/// parentRef `p`, before hostnames are considered: those its sectionName / port select
/// (none: NoMatchingParent), then those accepted whose allowedRoutes admit the kind and the
/// namespace (none: NotAllowedByListeners).
pub fn allowed_listeners(
    store: &Store,
    route_kind: &str,
    route_ns: &str,
    p: &ParentRefSpec<'_>,
    gateway: &GatewayModel,
) -> Result<Vec<usize>, NotAccepted> {
    let gw_ns = &*gateway.key.namespace;
    // (Formatted only in the error paths: this runs for every route and parent.)
    let gw_label = &gateway.key;
    // 1. sectionName / port, among the listeners of the Gateway itself or of the ListenerSet
    // the parentRef names.
    let owner = crate::listenerset::target_owner(p, route_ns);
    // One list, narrowed step by step (this runs for every route and parent).
    let selected = |l: &crate::model::ListenerModel| {
        l.owner == owner
            && p.section_name.is_none_or(|s| s == l.name)
            && p.port.is_none_or(|port| port == i32::from(l.port))
    };
    let mut allowed: Vec<usize> = gateway
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| selected(l))
        .map(|(i, _)| i)
        .collect();
    if allowed.is_empty() {
        let what = match (p.section_name, p.port) {
            (Some(s), Some(port)) => format!("no listener named {s:?} on port {port}"),
            (Some(s), None) => format!("no listener named {s:?}"),
            (None, Some(port)) => format!("no listener on port {port}"),
            (None, None) => "it has no listeners".into(),
        };
        return Err(("NoMatchingParent", format!("Gateway {gw_label}: {what}")));
    }
    // 2. allowedRoutes (accepted listeners only: rejected ones take no routes).
    let conflicted = allowed
        .iter()
        .map(|&i| &gateway.listeners[i])
        .find(|l| l.conflict.is_some());
    allowed.retain(|&i| gateway.listeners[i].accepted());
    let any_accepted = !allowed.is_empty();
    // Say why when the only listeners selected lost a conflict (e.g. to another Gateway on
    // the same address): the listener's Conflicted condition has the details.
    if let (false, Some(l)) = (any_accepted, conflicted) {
        return Err((
            "NotAllowedByListeners",
            format!(
                "listener {:?} of Gateway {gw_label} is Conflicted ({}): {}",
                l.name,
                l.conflict.unwrap_or_default(),
                crate::model::conflict_message(l)
            ),
        ));
    }
    allowed.retain(|&i| {
        gateway.listeners[i]
            .supported_kinds
            .iter()
            .any(|k| k == route_kind)
    });
    if any_accepted && allowed.is_empty() {
        let mut kinds: Vec<&str> = gateway
            .listeners
            .iter()
            .filter(|l| selected(l) && l.accepted())
            .flat_map(|l| l.supported_kinds.iter())
            .map(String::as_str)
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let kinds = if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        };
        return Err((
            "NotAllowedByListeners",
            format!(
                "no selected listener of Gateway {gw_label} allows {route_kind}s (their supportedKinds: {kinds})"
            ),
        ));
    }
    allowed.retain(|&i| namespace_allowed(store, &gateway.listeners[i], gw_ns, route_ns));
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            format!(
                "no selected listener of Gateway {gw_label} allows {route_kind}s from namespace {route_ns:?}"
            ),
        ));
    }
    Ok(allowed)
}

fn select(
    store: &Store,
    kind: &'static str,
    p: &ParentRefSpec<'_>,
    compiled: &CompiledRoute,
    gateway: &mut GatewayModel,
    gi: usize,
    placed: &mut Vec<Placement>,
) -> Result<(), NotAccepted> {
    let gw_label = gateway.key.to_string();
    let route_ns = &*compiled.key.namespace;
    let allowed = allowed_listeners(store, kind, route_ns, p, gateway)?;
    // 3. hostnames.
    let mut any = false;
    let mut conflict: Option<Arc<str>> = None;
    for i in allowed {
        let l: &mut ListenerModel = &mut gateway.listeners[i];
        let hosts = effective_hosts(l.hostname.as_ref(), &compiled.hostnames);
        if hosts.is_empty() {
            continue;
        }
        if let Some(other) = other_kind_on_hosts(l, kind, &hosts) {
            conflict.get_or_insert(other);
            continue;
        }
        any = true;
        if placed.iter().any(|p| (p.gateway, p.listener) == (gi, i)) {
            continue;
        }
        placed.push(Placement {
            gateway: gi,
            listener: i,
            start: l.entries.len(),
        });
        l.attached_routes += 1;
        if !l.entry_kinds.contains(&kind) {
            l.entry_kinds.push(kind);
        }
        for host in &hosts {
            for t in &compiled.entries {
                l.entries
                    .push((host.clone(), Arc::new(t.place(host.as_ref()))));
            }
        }
    }
    if let (false, Some(other)) = (any, conflict) {
        return Err((
            "NotAllowedByListeners",
            format!(
                "the selected listeners of Gateway {gw_label} already serve {other} on an intersecting hostname; a listener accepts only the older of an HTTPRoute and a GRPCRoute whose hostnames intersect"
            ),
        ));
    }
    if !any {
        return Err((
            "NoMatchingListenerHostname",
            format!("no route hostname intersects a listener hostname of Gateway {gw_label}"),
        ));
    }
    Ok(())
}

/// A route of the other kind (HTTPRoute vs GRPCRoute) already attached to `l` on a host
/// intersecting `hosts`, as "Kind ns/name". GRPCRoute.hostnames: "If a Route (A) of type
/// HTTPRoute or GRPCRoute is attached to a Listener and that listener already has another
/// Route (B) of the other type attached and the intersection of the hostnames of A and B is
/// non-empty, then the implementation MUST accept exactly one of these two routes,
/// determined by the following criteria, in order: the oldest Route based on creation
/// timestamp; the Route appearing first in alphabetical order by "{namespace}/{name}"."
/// Routes attach in that order (see `crate::translate`), so the one already attached wins.
fn other_kind_on_hosts(
    l: &ListenerModel,
    kind: &str,
    hosts: &[Option<HostPattern>],
) -> Option<Arc<str>> {
    let overlaps = |a: &Option<HostPattern>, b: &Option<HostPattern>| match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => intersect(a, b).is_some(),
    };
    if l.entry_kinds.iter().all(|k| *k == kind) {
        return None;
    }
    l.entries
        .iter()
        .filter(|(_, e)| e.action.route.kind != kind)
        .find(|(h, _)| hosts.iter().any(|mine| overlaps(mine, h)))
        .map(|(_, e)| format!("{} {}", e.action.route.kind, e.action.route.route).into())
}

/// allowedRoutes.namespaces: Same (default), All, or Selector on the namespace's labels (which
/// always include `kubernetes.io/metadata.name`).
/// For a ListenerSet's listener, Same is the ListenerSet's namespace.
fn namespace_allowed(store: &Store, l: &ListenerModel, gw_ns: &str, route_ns: &str) -> bool {
    let owner_ns = l.owner.as_ref().map_or(gw_ns, |o| &*o.namespace);
    namespaces_allow(store, l.namespaces.as_ref(), owner_ns, route_ns)
}
