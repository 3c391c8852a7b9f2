//! Statuses in Kubernetes shape: building conditions, reading them back for `weir check`, and
//! keeping transition times stable across rebuilds.

use std::collections::BTreeMap;

use serde_json::Value;
use weir_store::gw::gatewayclasses::{GatewayClassStatus, GatewayClassStatusSupportedFeatures};
use weir_store::gw::gateways::{
    GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use weir_store::gw::grpcroutes::{
    GrpcRouteStatus, GrpcRouteStatusParents, GrpcRouteStatusParentsParentRef,
};
use weir_store::gw::httproutes::{HttpRouteStatus, HttpRouteStatusParents};
use weir_store::{Condition, Kind, Time, GATEWAY_GROUP};

use crate::compile::CompiledRoute;
use crate::error::TranslateError;
use crate::gateway::{GatewayModel, ListenerModel};
use crate::route::ParentResult;
use crate::ObjectStatus;

/// Condition type added to objects whose newest version failed to parse.
pub const INVALID_MANIFEST: &str = "weir.dev/InvalidManifest";

/// Builds conditions that share a generation and a time.
pub struct Conditions<'a> {
    pub generation: Option<i64>,
    pub now: &'a Time,
}

impl Conditions<'_> {
    pub fn make(
        &self,
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Condition {
        Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time: self.now.clone(),
        }
    }
}

/// An accepted GatewayClass of ours: Accepted, and the features it supports
/// ([`crate::SUPPORTED_FEATURES`], already in the ascending order the spec requires).
pub fn gateway_class_status(c: &Conditions<'_>) -> GatewayClassStatus {
    GatewayClassStatus {
        conditions: Some(vec![c.make(
            "Accepted",
            true,
            "Accepted",
            "Handled by Weir",
        )]),
        supported_features: Some(
            crate::SUPPORTED_FEATURES
                .iter()
                .map(|name| GatewayClassStatusSupportedFeatures {
                    name: (*name).to_string(),
                })
                .collect(),
        ),
    }
}

pub fn gateway_status(g: &GatewayModel, c: &Conditions<'_>) -> GatewayStatus {
    let serving = g.serving();
    let listeners = g
        .own_listeners()
        .map(|l| listener_status(l, serving, c))
        .collect();
    let invalid: Vec<&str> = g
        .own_listeners()
        .filter(|l| !l.accepted())
        .map(|l| l.name.as_str())
        .collect();
    let accepted = match &g.address_error {
        Some(e @ crate::TranslateError::UnsupportedAddress(_)) => {
            c.make("Accepted", false, e.reason(), e.to_string())
        }
        _ if !g.accepted() => c.make(
            "Accepted",
            false,
            "ListenersNotValid",
            format!("no listener is valid: {}", invalid.join(", ")),
        ),
        _ if !invalid.is_empty() => c.make(
            "Accepted",
            true,
            "ListenersNotValid",
            format!(
                "some listeners are not valid and are not served: {}",
                invalid.join(", ")
            ),
        ),
        _ => c.make("Accepted", true, "Accepted", "Gateway is accepted"),
    };
    let programmed = match &g.address_error {
        _ if !g.accepted() => c.make("Programmed", false, "Invalid", "Gateway is not accepted"),
        Some(e) => c.make("Programmed", false, e.reason(), e.to_string()),
        None if !g.own_listeners().any(ListenerModel::serving) => c.make(
            "Programmed",
            false,
            "Invalid",
            "no listener can be served (see the listener conditions)",
        ),
        None => c.make("Programmed", true, "Programmed", "Gateway is programmed"),
    };
    let mut conditions = vec![accepted, programmed];
    if g.insecure_frontend {
        conditions.push(c.make(
            "InsecureFrontendValidationMode",
            true,
            "ConfigurationChanged",
            "a frontend validation is in mode AllowInsecureFallback: clients without a valid certificate are let through",
        ));
    }
    // ResolvedRefs is reported for the Gateway-level references (spec.tls.backend).
    let backend_ref = g
        .gateway
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref());
    if backend_ref.is_some() {
        conditions.push(match &g.backend_client_cert_error {
            Some(e) => c.make("ResolvedRefs", false, e.reason(), e.to_string()),
            None => c.make(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "All references are resolved",
            ),
        });
    }
    GatewayStatus {
        addresses: Some(
            g.status_addresses
                .iter()
                .map(|(t, v)| GatewayStatusAddresses {
                    r#type: Some(t.clone()),
                    value: v.clone(),
                })
                .collect(),
        ),
        attached_listener_sets: crate::listenerset::attached_count(g),
        conditions: Some(conditions),
        listeners: Some(listeners),
    }
}

pub fn listener_status(
    l: &ListenerModel,
    gateway_serving: bool,
    c: &Conditions<'_>,
) -> GatewayStatusListeners {
    let accepted = match (l.conflict, &l.not_accepted) {
        (Some(reason), _) => c.make("Accepted", false, reason, conflict_message(reason)),
        (None, Some(e)) => c.make("Accepted", false, e.reason(), e.to_string()),
        (None, None) => c.make("Accepted", true, "Accepted", "Listener is accepted"),
    };
    let resolved = match l.ref_errors.first() {
        None => c.make(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references are resolved",
        ),
        Some(first) => {
            let all: Vec<String> = l.ref_errors.iter().map(ToString::to_string).collect();
            c.make("ResolvedRefs", false, first.reason(), all.join("; "))
        }
    };
    let conflicted = match l.conflict {
        Some(reason) => c.make("Conflicted", true, reason, conflict_message(reason)),
        None => c.make("Conflicted", false, "NoConflicts", "No conflicts"),
    };
    let programmed = if let Some(reason) = l.conflict {
        c.make("Programmed", false, reason, conflict_message(reason))
    } else if !l.accepted() {
        c.make("Programmed", false, "Invalid", "Listener is not accepted")
    } else if !l.serving() {
        c.make(
            "Programmed",
            false,
            "Invalid",
            "Listener has no usable certificate",
        )
    } else if !gateway_serving {
        c.make("Programmed", false, "Invalid", "Gateway is not programmed")
    } else {
        c.make("Programmed", true, "Programmed", "Listener is programmed")
    };
    GatewayStatusListeners {
        attached_routes: l.attached_routes,
        conditions: vec![accepted, programmed, resolved, conflicted],
        name: l.name.clone(),
        supported_kinds: Some(
            l.supported_kinds
                .iter()
                .map(|k| GatewayStatusListenersSupportedKinds {
                    group: Some(GATEWAY_GROUP.into()),
                    kind: k.clone(),
                })
                .collect(),
        ),
    }
}

fn conflict_message(reason: &str) -> &'static str {
    if reason == "ProtocolConflict" {
        "another listener on this port uses a different protocol; none of them is served"
    } else {
        "another listener on this port has the same hostname; none of them is served"
    }
}

pub fn route_status(
    controller: &str,
    compiled: &CompiledRoute,
    parents: Vec<ParentResult>,
    c: &Conditions<'_>,
) -> HttpRouteStatus {
    let partially_invalid = compiled
        .invalid
        .is_none()
        .then(|| compiled.invalid_rules.first())
        .flatten();
    let parents = parents
        .into_iter()
        .map(|p| HttpRouteStatusParents {
            conditions: parent_conditions(&p, compiled.unresolved.as_ref(), partially_invalid, c),
            controller_name: controller.into(),
            parent_ref: p.parent_ref,
        })
        .collect();
    HttpRouteStatus { parents }
}

/// A GRPCRoute's status (see [`crate::grpcroute`]): the same conditions per parent as an
/// HTTPRoute's.
pub fn grpc_route_status(
    controller: &str,
    compiled: &CompiledRoute,
    parents: Vec<ParentResult>,
    c: &Conditions<'_>,
) -> GrpcRouteStatus {
    let http = route_status(controller, compiled, parents, c);
    let parents = http
        .parents
        .into_iter()
        .map(|p| GrpcRouteStatusParents {
            conditions: p.conditions,
            controller_name: p.controller_name,
            parent_ref: GrpcRouteStatusParentsParentRef {
                group: p.parent_ref.group,
                kind: p.parent_ref.kind,
                name: p.parent_ref.name,
                namespace: p.parent_ref.namespace,
                port: p.parent_ref.port,
                section_name: p.parent_ref.section_name,
            },
        })
        .collect();
    GrpcRouteStatus { parents }
}

/// A route parent's conditions: Accepted, ResolvedRefs (the first backendRef that did not
/// resolve), and PartiallyInvalid when some rules are dropped.
pub(crate) fn parent_conditions(
    p: &ParentResult,
    unresolved: Option<&TranslateError>,
    partially_invalid: Option<&TranslateError>,
    c: &Conditions<'_>,
) -> Vec<Condition> {
    let mut conditions = vec![match &p.accepted {
        Ok(()) => c.make("Accepted", true, "Accepted", "Route is accepted"),
        Err((reason, message)) => c.make("Accepted", false, reason, message.as_str()),
    }];
    conditions.push(match unresolved {
        None => c.make(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references are resolved",
        ),
        Some(e) => c.make("ResolvedRefs", false, e.reason(), e.to_string()),
    });
    if let Some(e) = partially_invalid {
        conditions.push(c.make("PartiallyInvalid", true, e.reason(), e.to_string()));
    }
    conditions
}

/// Add a condition to every condition list of a status (object-level for classes and
/// Gateways, each parent for routes).
pub fn add_condition(kind: Kind, status: &mut Value, condition: &Condition) {
    let Ok(cond) = serde_json::to_value(condition) else {
        return;
    };
    match kind {
        Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute | Kind::TcpRoute => {
            if let Some(parents) = status.get_mut("parents").and_then(Value::as_array_mut) {
                for p in parents {
                    push(p, cond.clone());
                }
            }
        }
        _ => push(status, cond),
    }
}

fn push(holder: &mut Value, cond: Value) {
    let Some(obj) = holder.as_object_mut() else {
        return;
    };
    let list = obj
        .entry("conditions")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = list.as_array_mut() {
        list.push(cond);
    }
}

/// Every condition list of a status with its scope ("", "listener <name>", "parent <ref>").
pub fn scoped_lists(status: &Value) -> Vec<(String, &Vec<Value>)> {
    let mut out = Vec::new();
    if let Some(list) = status.get("conditions").and_then(Value::as_array) {
        out.push((String::new(), list));
    }
    for l in status
        .get("listeners")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(list) = l.get("conditions").and_then(Value::as_array) {
            out.push((format!("listener {}", str_at(l, "name")), list));
        }
    }
    // Routes list parents; policies (BackendTLSPolicy) list ancestors of the same shape.
    for p in ["parents", "ancestors"]
        .into_iter()
        .filter_map(|field| status.get(field).and_then(Value::as_array))
        .flatten()
    {
        if let Some(list) = p.get("conditions").and_then(Value::as_array) {
            out.push((parent_scope(p), list));
        }
    }
    out
}

fn parent_scope(p: &Value) -> String {
    let r = p
        .get("parentRef")
        .or_else(|| p.get("ancestorRef"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut s = format!("parent {}/{}", str_at(&r, "namespace"), str_at(&r, "name"));
    if let Some(section) = r.get("sectionName").and_then(Value::as_str) {
        s.push('/');
        s.push_str(section);
    }
    s
}

pub fn str_at<'v>(v: &'v Value, field: &str) -> &'v str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// See [`crate::preserve_transition_times`]. Objects are matched by (kind, key) with a merge
/// when both lists are sorted (translation output is), condition lists by scope (object,
/// listener name, parentRef) and conditions by type, comparing in place: nothing is
/// allocated but the kept times.
pub fn preserve(previous: &[ObjectStatus], next: &mut [ObjectStatus]) {
    fn id(s: &ObjectStatus) -> (Kind, &weir_store::ObjectKey) {
        (s.kind, &s.key)
    }
    let sorted = |list: &[ObjectStatus]| list.windows(2).all(|w| id(&w[0]) <= id(&w[1]));
    if sorted(previous) && sorted(next) {
        let mut old = previous.iter().peekable();
        for n in next.iter_mut() {
            while old.next_if(|p| id(p) < id(n)).is_some() {}
            if let Some(p) = old.next_if(|p| id(p) == id(n)) {
                preserve_object(&p.status, &mut n.status);
            }
        }
    } else {
        let prev: BTreeMap<_, _> = previous.iter().map(|s| (id(s), s)).collect();
        for n in next.iter_mut() {
            if let Some(p) = prev.get(&id(n)) {
                preserve_object(&p.status, &mut n.status);
            }
        }
    }
}

/// Keep the times of one object's unchanged conditions.
fn preserve_object(old: &Value, new: &mut Value) {
    if let (Some(o), Some(n)) = (old.get("conditions"), new.get_mut("conditions")) {
        preserve_list(o, n);
    }
    for (field, same) in [
        ("listeners", "name"),
        // The parentRef as a whole identifies a route's parent status.
        ("parents", "parentRef"),
        // A policy's (BackendTLSPolicy) ancestor statuses, likewise.
        ("ancestors", "ancestorRef"),
    ] {
        let (Some(olds), Some(news)) = (
            old.get(field).and_then(Value::as_array),
            new.get_mut(field).and_then(Value::as_array_mut),
        ) else {
            continue;
        };
        for (i, n) in news.iter_mut().enumerate() {
            let key = n.get(same);
            // Usually at the same position; else look for it.
            let o = olds
                .get(i)
                .filter(|o| o.get(same) == key)
                .or_else(|| olds.iter().find(|o| o.get(same) == key));
            if let (Some(o), Some(list)) =
                (o.and_then(|o| o.get("conditions")), n.get_mut("conditions"))
            {
                preserve_list(o, list);
            }
        }
    }
}

/// Conditions of `new` whose type had the same status in `old` keep `old`'s time.
fn preserve_list(old: &Value, new: &mut Value) {
    let (Some(old), Some(new)) = (old.as_array(), new.as_array_mut()) else {
        return;
    };
    for c in new.iter_mut() {
        let type_ = str_at(c, "type");
        let Some(o) = old.iter().find(|o| str_at(o, "type") == type_) else {
            continue;
        };
        if str_at(o, "status") != str_at(c, "status") {
            continue;
        }
        let Some(time) = o.get("lastTransitionTime").filter(|t| !t.is_null()) else {
            continue;
        };
        if let Some(slot) = c.get_mut("lastTransitionTime") {
            if slot != time {
                slot.clone_from(time);
            }
        } else if let Some(obj) = c.as_object_mut() {
            obj.insert("lastTransitionTime".into(), time.clone());
        }
    }
}
