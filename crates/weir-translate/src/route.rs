//! HTTPRoute attachment: for each parentRef naming one of our Gateways, which listeners take
//! the route (sectionName/port, allowedRoutes, hostnames) and the resulting conditions.

use std::collections::BTreeMap;

use weir_store::gw::gateways::{
    GatewayListenersAllowedRoutesNamespaces, GatewayListenersAllowedRoutesNamespacesFrom as From,
};
use weir_store::gw::httproutes::{HttpRouteParentRefs, HttpRouteStatusParentsParentRef};
use weir_store::{HttpRoute, ObjectKey, Store, GATEWAY_GROUP};

use crate::compile::CompiledRoute;
use crate::gateway::{GatewayModel, ListenerModel};
use crate::hostname::effective_hosts;

/// The outcome for one parentRef of ours.
pub struct ParentResult {
    pub parent_ref: HttpRouteStatusParentsParentRef,
    /// `Ok(())` accepted, or Accepted=False (reason, message).
    pub accepted: Result<(), (&'static str, String)>,
}

/// Attach a compiled route to the listeners its parentRefs select. Returns one result per
/// parentRef that names a Gateway of ours (none: the route is not ours).
pub fn attach(
    store: &Store,
    route: &HttpRoute,
    compiled: &CompiledRoute,
    gateways: &mut [GatewayModel],
    index: &BTreeMap<ObjectKey, usize>,
) -> Vec<ParentResult> {
    let route_ns = compiled.key.namespace.as_str();
    let mut results = Vec::new();
    // Listeners already holding this route (a route counts once per listener).
    let mut attached: Vec<(usize, usize)> = Vec::new();
    for p in route.spec.parent_refs.iter().flatten() {
        let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            continue;
        }
        let ns = p.namespace.as_deref().unwrap_or(route_ns);
        let Some(&gi) = index.get(&ObjectKey::new(ns, &p.name)) else {
            continue; // Not ours, or unknown: another controller may own it.
        };
        let parent_ref = status_ref(p, ns);
        let accepted = match &compiled.invalid {
            Some(e) => Err((e.reason(), e.to_string())),
            None => select(
                store,
                route_ns,
                p,
                compiled,
                &mut gateways[gi],
                gi,
                &mut attached,
            ),
        };
        results.push(ParentResult {
            parent_ref,
            accepted,
        });
    }
    results
}

fn status_ref(p: &HttpRouteParentRefs, ns: &str) -> HttpRouteStatusParentsParentRef {
    HttpRouteStatusParentsParentRef {
        group: Some(p.group.clone().unwrap_or_else(|| GATEWAY_GROUP.into())),
        kind: Some(p.kind.clone().unwrap_or_else(|| "Gateway".into())),
        name: p.name.clone(),
        namespace: Some(ns.to_string()),
        port: p.port,
        section_name: p.section_name.clone(),
    }
}

fn select(
    store: &Store,
    route_ns: &str,
    p: &HttpRouteParentRefs,
    compiled: &CompiledRoute,
    gateway: &mut GatewayModel,
    gi: usize,
    attached: &mut Vec<(usize, usize)>,
) -> Result<(), (&'static str, String)> {
    let gw_ns = gateway.key.namespace.clone();
    let gw_label = gateway.key.to_string();
    // 1. sectionName / port.
    let by_ref: Vec<usize> = gateway
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| p.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| p.port.is_none_or(|port| port == i32::from(l.port)))
        .map(|(i, _)| i)
        .collect();
    if by_ref.is_empty() {
        let what = match (&p.section_name, p.port) {
            (Some(s), Some(port)) => format!("no listener named {s:?} on port {port}"),
            (Some(s), None) => format!("no listener named {s:?}"),
            (None, Some(port)) => format!("no listener on port {port}"),
            (None, None) => "it has no listeners".into(),
        };
        return Err(("NoMatchingParent", format!("Gateway {gw_label}: {what}")));
    }
    // 2. allowedRoutes (accepted listeners only: rejected ones take no routes).
    let allowed: Vec<usize> = by_ref
        .into_iter()
        .filter(|&i| {
            let l = &gateway.listeners[i];
            l.accepted()
                && l.supported_kinds.iter().any(|k| k == "HTTPRoute")
                && namespace_allowed(store, l, &gw_ns, route_ns)
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            format!(
                "no selected listener of Gateway {gw_label} allows HTTPRoutes from namespace {route_ns:?}"
            ),
        ));
    }
    // 3. hostnames.
    let mut any = false;
    for i in allowed {
        let l: &mut ListenerModel = &mut gateway.listeners[i];
        let hosts = effective_hosts(l.hostname.as_ref(), &compiled.hostnames);
        if hosts.is_empty() {
            continue;
        }
        any = true;
        if attached.contains(&(gi, i)) {
            continue;
        }
        attached.push((gi, i));
        l.attached_routes += 1;
        for host in &hosts {
            for t in &compiled.entries {
                l.entries.push((host.clone(), t.place(host.as_ref())));
            }
        }
    }
    if !any {
        return Err((
            "NoMatchingListenerHostname",
            format!("no route hostname intersects a listener hostname of Gateway {gw_label}"),
        ));
    }
    Ok(())
}

/// allowedRoutes.namespaces: Same (default), All, or Selector on the namespace's labels (which
/// always include `kubernetes.io/metadata.name`).
fn namespace_allowed(store: &Store, l: &ListenerModel, gw_ns: &str, route_ns: &str) -> bool {
    let ns: Option<&GatewayListenersAllowedRoutesNamespaces> = l.namespaces.as_ref();
    match ns.and_then(|n| n.from.as_ref()).unwrap_or(&From::Same) {
        From::Same => gw_ns == route_ns,
        From::All => true,
        From::Selector => {
            let Some(sel) = ns.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let mut labels = store.namespace_labels(route_ns);
            labels.insert("kubernetes.io/metadata.name".into(), route_ns.into());
            let labels_ok = sel
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or(&[]);
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            });
            labels_ok && exprs_ok
        }
    }
}
