//! ListenerSets (GEP-1713): which ListenerSets a Gateway admits (`spec.allowedListeners`),
//! merging their listeners into the Gateway's with the spec's precedence and conflict rules,
//! routes attaching through a `ListenerSet` parentRef, and the ListenerSet status.
//!
//! The spec's precedence for the merged listener list: "1. parent Gateway, 2. ListenerSet
//! ordered by creation time (oldest first), 3. ListenerSet ordered alphabetically by
//! {namespace}/{name}". A listener that conflicts with one earlier in that order (same port
//! and a different protocol, or same port, protocol and hostname) is Conflicted and the earlier
//! one keeps serving; inside one Gateway or one ListenerSet the Gateway rules apply (every
//! listener of a conflicting group is rejected).

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_store::gw::gateways::{
    GatewayAllowedListenersNamespacesFrom as ListenersFrom, GatewayListeners,
    GatewayListenersAllowedRoutesNamespaces,
};
use weir_store::gw::listenersets::{ListenerSetStatus, ListenerSetStatusListeners};
use weir_store::{Gateway, ListenerSet, ObjectKey, Store, GATEWAY_GROUP};

use crate::conditions::Conditions;
use crate::listener::{build_listener, mark_conflicts};
use crate::meta::created;
use crate::model::ParentRefSpec;
use crate::model::{
    listeners_of, valid, GatewayModel, ListenerModel, ListenerOwner, ListenerSetModel,
};
use crate::status;

/// Condition reason of a ListenerSet the Gateway's `allowedListeners` does not admit.
pub const NOT_ALLOWED: &str = "NotAllowed";
/// Condition reason of a ListenerSet none of whose listeners is valid.
pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";

/// Find the ListenerSets naming Gateway `gw_key`, in precedence order, and append the
/// listeners of those it admits to `listeners` (which holds the Gateway's own, already
/// checked among themselves).
pub fn merge(
    store: &Store,
    gw_key: &ObjectKey,
    gateway: &Gateway,
    listeners: &mut Vec<ListenerModel>,
) -> Vec<ListenerSetModel> {
    let mut sets: Vec<(&ObjectKey, &Arc<ListenerSet>)> = store
        .listener_sets
        .iter()
        .filter(|(key, set)| names_gateway(key, set, gw_key))
        .collect();
    sets.sort_by(|a, b| (created(&a.1.metadata), a.0).cmp(&(created(&b.1.metadata), b.0)));
    let mut out = Vec::with_capacity(sets.len());
    for (key, set) in sets {
        let allowed = admits(store, gateway, &gw_key.namespace, &key.namespace);
        if allowed {
            let owner = ListenerOwner {
                key,
                kind: "ListenerSet",
            };
            let mut own: Vec<ListenerModel> = set
                .spec
                .listeners
                .iter()
                .filter_map(|l| as_gateway_listener(l).ok())
                .map(|l| build_listener(store, &owner, &l))
                .collect();
            // Conflicts with listeners of higher precedence first (only the later listener
            // is rejected), then the Gateway rules among the rest of this ListenerSet.
            for l in own.iter_mut() {
                mark_against_earlier(l, listeners);
            }
            mark_conflicts(&mut own);
            listeners.extend(own);
        }
        out.push(ListenerSetModel {
            key: key.clone(),
            set: set.clone(),
            allowed,
        });
    }
    out
}

/// Whether `spec.parentRef` of a ListenerSet names this Gateway (group and kind default to the
/// Gateway API's Gateway, the namespace to the ListenerSet's).
pub(crate) fn names_gateway(key: &ObjectKey, set: &ListenerSet, gw_key: &ObjectKey) -> bool {
    let p = &set.spec.parent_ref;
    p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        && *p.name == *gw_key.name
        && p.namespace.as_deref().unwrap_or(&key.namespace) == &*gw_key.namespace
}

/// `spec.allowedListeners.namespaces.from`: None (the default: no ListenerSets), Same (the
/// Gateway's namespace), All, or Selector (the namespace's labels).
pub(crate) fn admits(store: &Store, gateway: &Gateway, gw_ns: &str, set_ns: &str) -> bool {
    let namespaces = gateway
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_ref()) {
        None | Some(ListenersFrom::None) => false,
        Some(ListenersFrom::Same) => gw_ns == set_ns,
        Some(ListenersFrom::All) => true,
        Some(ListenersFrom::Selector) => {
            // The selector has the shape of allowedRoutes' (matchLabels, matchExpressions).
            let as_routes = namespaces
                .and_then(|n| serde_json::to_value(n).ok())
                .and_then(|v| {
                    serde_json::from_value::<GatewayListenersAllowedRoutesNamespaces>(v).ok()
                });
            as_routes
                .is_some_and(|n| crate::listener::namespaces_allow(store, Some(&n), gw_ns, set_ns))
        }
    }
}

/// A ListenerSet listener has the schema of a Gateway listener (ListenerEntry).
pub(crate) fn as_gateway_listener(
    l: &weir_store::gw::listenersets::ListenerSetListeners,
) -> Result<GatewayListeners, serde_json::Error> {
    serde_json::to_value(l).and_then(serde_json::from_value)
}

/// A listener conflicts with an accepted one earlier in precedence on the same port: another
/// protocol is a ProtocolConflict, the same hostname a HostnameConflict. Only the later one
/// is rejected.
fn mark_against_earlier(l: &mut ListenerModel, earlier: &[ListenerModel]) {
    if !l.accepted() {
        return;
    }
    for e in earlier.iter().filter(|e| e.accepted() && e.port == l.port) {
        if e.protocol() != l.protocol() {
            l.conflict = Some("ProtocolConflict");
            return;
        }
        if e.hostname == l.hostname {
            l.conflict = Some("HostnameConflict");
            return;
        }
    }
}

/// The Gateway (index in `gateways`) and namespace of a route's parentRef of kind
/// ListenerSet naming a ListenerSet of one of our Gateways.
pub fn parent_gateway(
    p: &ParentRefSpec<'_>,
    route_ns: &str,
    gateways: &[GatewayModel],
) -> Option<(usize, String)> {
    if p.group.unwrap_or(GATEWAY_GROUP) != GATEWAY_GROUP || p.kind != Some("ListenerSet") {
        return None;
    }
    let ns = p.namespace.unwrap_or(route_ns);
    let key = ObjectKey::new(ns, p.name);
    gateways
        .iter()
        .position(|g| g.listener_sets.iter().any(|s| s.key == key))
        .map(|gi| (gi, ns.to_string()))
}

/// The listener owner a parentRef selects: a ListenerSet for kind ListenerSet, else the
/// Gateway itself (`None`). A Gateway parentRef never reaches ListenerSet listeners.
pub fn target_owner(p: &ParentRefSpec<'_>, route_ns: &str) -> Option<ObjectKey> {
    (p.kind == Some("ListenerSet")).then(|| ObjectKey::new(p.namespace.unwrap_or(route_ns), p.name))
}

/// A ListenerSet's status: Accepted and Programmed, and (when admitted) one entry per listener
/// with the conditions a Gateway listener gets.
pub fn status(g: &GatewayModel, set: &ListenerSetModel, c: &Conditions<'_>) -> ListenerSetStatus {
    let gw_label = g.key.to_string();
    if !set.allowed {
        let message =
            format!("Gateway {gw_label} does not allow this ListenerSet (spec.allowedListeners)");
        return ListenerSetStatus {
            conditions: Some(vec![
                c.make("Accepted", false, NOT_ALLOWED, message.as_str()),
                c.make("Programmed", false, NOT_ALLOWED, message),
            ]),
            listeners: None,
        };
    }
    let serving = g.serving();
    let listeners: Vec<ListenerSetStatusListeners> = listeners_of(g, set)
        .filter_map(|l| {
            let s = status::listener_status(l, serving, c);
            serde_json::to_value(s)
                .and_then(serde_json::from_value)
                .ok()
        })
        .collect();
    let any_valid = listeners_of(g, set).any(valid);
    let conditions = if !g.accepted() {
        let message = format!("Gateway {gw_label} is not accepted");
        vec![
            c.make("Accepted", false, "ParentNotAccepted", message.as_str()),
            c.make("Programmed", false, "ParentNotProgrammed", message),
        ]
    } else if !any_valid {
        let message = "no listener of this ListenerSet is valid (see the listener conditions)";
        vec![
            c.make("Accepted", false, LISTENERS_NOT_VALID, message),
            c.make("Programmed", false, LISTENERS_NOT_VALID, message),
        ]
    } else {
        let programmed = if !serving {
            c.make(
                "Programmed",
                false,
                "ParentNotProgrammed",
                format!("Gateway {gw_label} is not programmed"),
            )
        } else if !listeners_of(g, set).any(ListenerModel::serving) {
            c.make(
                "Programmed",
                false,
                "Invalid",
                "no listener can be served (see the listener conditions)",
            )
        } else {
            c.make(
                "Programmed",
                true,
                "Programmed",
                "ListenerSet is programmed",
            )
        };
        vec![
            c.make("Accepted", true, "Accepted", "ListenerSet is accepted"),
            programmed,
        ]
    };
    ListenerSetStatus {
        conditions: Some(conditions),
        listeners: Some(listeners),
    }
}

/// Every ListenerSet of our Gateways with its Gateway, by key (a ListenerSet names one
/// Gateway, so each appears once).
pub fn all(gateways: &[GatewayModel]) -> BTreeMap<&ObjectKey, (&GatewayModel, &ListenerSetModel)> {
    gateways
        .iter()
        .flat_map(|g| g.listener_sets.iter().map(move |s| (&s.key, (g, s))))
        .collect()
}
