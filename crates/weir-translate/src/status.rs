//! Statuses in Kubernetes shape: building conditions, reading them back for `weir check`, and
//! keeping transition times stable across rebuilds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use weir_store::gw::gatewayclasses::{GatewayClassStatus, GatewayClassStatusSupportedFeatures};
use weir_store::gw::gateways::{
    GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use weir_store::gw::httproutes::{HttpRouteStatus, HttpRouteStatusParents};
use weir_store::{Condition, Kind, Time, WrittenStatus, GATEWAY_GROUP};

use crate::compile::CompiledRoute;
pub use crate::conditions::Conditions;
use crate::error::TranslateError;
use crate::model::conflict_message;
use crate::model::ParentResult;
use crate::model::{GatewayModel, ListenerModel};
use crate::ObjectStatus;

/// Condition type added to objects whose newest version failed to parse.
pub const INVALID_MANIFEST: &str = "weir.dev/InvalidManifest";

/// An accepted GatewayClass of ours: Accepted, and the features it supports
/// ([`crate::SUPPORTED_FEATURES`], already in the ascending order the spec requires).
/// With `invalid` (its parametersRef is unusable): Accepted=False with that reason.
pub fn gateway_class_status(
    c: &Conditions<'_>,
    invalid: Option<&TranslateError>,
) -> GatewayClassStatus {
    let accepted = match invalid {
        Some(e) => c.make("Accepted", false, e.reason(), e.to_string()),
        None => c.make("Accepted", true, "Accepted", "Handled by Weir"),
    };
    GatewayClassStatus {
        conditions: Some(vec![accepted]),
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
    let accepted = match (&g.params_error, &g.address_error) {
        (Some(e), _) => c.make("Accepted", false, e.reason(), e.to_string()),
        (
            None,
            Some(
                e @ (crate::TranslateError::UnsupportedAddress(_)
                | crate::TranslateError::UnsupportedServiceAddress(_)),
            ),
        ) => c.make("Accepted", false, e.reason(), e.to_string()),
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
        attached_listener_sets: crate::model::attached_count(g),
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
        (Some(reason), _) => c.make("Accepted", false, reason, conflict_message(l)),
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
        Some(reason) => c.make("Conflicted", true, reason, conflict_message(l)),
        None => c.make("Conflicted", false, "NoConflicts", "No conflicts"),
    };
    let programmed = if let Some(reason) = l.conflict {
        c.make("Programmed", false, reason, conflict_message(l))
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
    parents_status(
        controller,
        compiled.unresolved.as_ref(),
        partially_invalid,
        parents,
        c,
    )
}

/// A route's status from its parents' results: per parent, Accepted, ResolvedRefs and
/// PartiallyInvalid (see [`parent_conditions`]). Every route kind's status has this shape,
/// field for field (GRPCRoute, TLSRoute, TCPRoute as HTTPRoute): all are built as
/// `HttpRouteStatus` and written with [`JsonBuilder::route_status`].
pub fn parents_status(
    controller: &str,
    unresolved: Option<&TranslateError>,
    partially_invalid: Option<&TranslateError>,
    parents: Vec<ParentResult>,
    c: &Conditions<'_>,
) -> HttpRouteStatus {
    let parents = parents
        .into_iter()
        .map(|p| HttpRouteStatusParents {
            conditions: parent_conditions(&p, unresolved, partially_invalid, c),
            controller_name: controller.into(),
            parent_ref: p.parent_ref,
        })
        .collect();
    HttpRouteStatus { parents }
}

/// Status JSON built by hand for the kinds there are many of (routes). Going through serde
/// (`serde_json::to_value` of the generated types) was a third of a 10,000-route translation,
/// a quarter of that formatting the same timestamp again for every condition. The output is
/// exactly what serde gives (tests compare the two).
///
/// Routes of one Gateway mostly have equal statuses (same parent, conditions and
/// generation): the last few distinct ones are kept and an equal status shares their value.
pub struct JsonBuilder {
    now: Time,
    /// `now` as Kubernetes writes it, formatted once.
    now_json: Value,
    recent: std::cell::RefCell<std::collections::VecDeque<(HttpRouteStatus, Arc<Value>)>>,
}

/// How many distinct route statuses [`JsonBuilder`] remembers.
const RECENT_STATUSES: usize = 8;

impl JsonBuilder {
    pub fn new(now: &Time) -> Self {
        Self {
            now: now.clone(),
            now_json: serde_json::to_value(now).unwrap_or(Value::Null),
            recent: Default::default(),
        }
    }

    /// [`Self::route_status`], shared with an equal status built shortly before.
    pub fn shared_route_status(&self, status: HttpRouteStatus) -> Arc<Value> {
        let mut recent = self.recent.borrow_mut();
        if let Some((_, json)) = recent.iter().find(|(s, _)| *s == status) {
            return json.clone();
        }
        let json = Arc::new(self.route_status(&status));
        if recent.len() == RECENT_STATUSES {
            recent.pop_back();
        }
        recent.push_front((status, json.clone()));
        json
    }

    fn time(&self, t: &Time) -> Value {
        if *t == self.now {
            self.now_json.clone()
        } else {
            serde_json::to_value(t).unwrap_or(Value::Null)
        }
    }

    pub fn condition(&self, c: &Condition) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(
            "lastTransitionTime".into(),
            self.time(&c.last_transition_time),
        );
        m.insert("message".into(), Value::String(c.message.clone()));
        if let Some(g) = c.observed_generation {
            m.insert("observedGeneration".into(), Value::from(g));
        }
        m.insert("reason".into(), Value::String(c.reason.clone()));
        m.insert("status".into(), Value::String(c.status.clone()));
        m.insert("type".into(), Value::String(c.type_.clone()));
        Value::Object(m)
    }

    /// An HTTPRoute's status. A GRPCRoute's status has the same shape, field for field, so
    /// GRPCRoutes' statuses are built as HTTPRoutes' are and written with this too.
    pub fn route_status(&self, status: &HttpRouteStatus) -> Value {
        let parents = status
            .parents
            .iter()
            .map(|p| {
                let r = &p.parent_ref;
                let mut parent_ref = serde_json::Map::new();
                let mut opt = |key: &str, v: &Option<String>| {
                    if let Some(v) = v {
                        parent_ref.insert(key.into(), Value::String(v.clone()));
                    }
                };
                opt("group", &r.group);
                opt("kind", &r.kind);
                opt("namespace", &r.namespace);
                opt("sectionName", &r.section_name);
                parent_ref.insert("name".into(), Value::String(r.name.clone()));
                if let Some(port) = r.port {
                    parent_ref.insert("port".into(), Value::from(port));
                }
                let mut m = serde_json::Map::new();
                m.insert(
                    "conditions".into(),
                    Value::Array(p.conditions.iter().map(|c| self.condition(c)).collect()),
                );
                m.insert(
                    "controllerName".into(),
                    Value::String(p.controller_name.clone()),
                );
                m.insert("parentRef".into(), Value::Object(parent_ref));
                Value::Object(m)
            })
            .collect();
        let mut m = serde_json::Map::new();
        m.insert("parents".into(), Value::Array(parents));
        Value::Object(m)
    }
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
/// Gateways, each parent for routes, each ancestor for policies: a policy's status has no
/// object-level conditions, so one there would be dropped by the API server's schema).
pub fn add_condition(kind: Kind, status: &mut Value, condition: &Condition) {
    let Ok(cond) = serde_json::to_value(condition) else {
        return;
    };
    let entries = match kind.status() {
        WrittenStatus::Parents => "parents",
        WrittenStatus::Ancestors => "ancestors",
        WrittenStatus::None | WrittenStatus::Whole => return push(status, cond),
    };
    if let Some(list) = status.get_mut(entries).and_then(Value::as_array_mut) {
        for entry in list {
            push(entry, cond.clone());
        }
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
    let mut same = SameMemo::default();
    if sorted(previous) && sorted(next) {
        let mut old = previous.iter().peekable();
        for n in next.iter_mut() {
            while old.next_if(|p| id(p) < id(n)).is_some() {}
            if let Some(p) = old.next_if(|p| id(p) == id(n)) {
                preserve_shared(p, n, &mut same);
            }
        }
    } else {
        let prev: BTreeMap<_, _> = previous.iter().map(|s| (id(s), s)).collect();
        for n in next.iter_mut() {
            if let Some(p) = prev.get(&id(n)) {
                preserve_shared(p, n, &mut same);
            }
        }
    }
}

/// Keep the times of one object's unchanged conditions. The common case, a status that
/// differs from the previous one in its times at most, takes the previous value itself: no
/// copy, and an unchanged status stays one allocation across translations.
fn preserve_shared(previous: &ObjectStatus, next: &mut ObjectStatus, same: &mut SameMemo) {
    if Arc::ptr_eq(&previous.status, &next.status) {
        return;
    }
    // Shared values (see `JsonBuilder`) come in runs: compare each pair of them once.
    let known = same
        .0
        .as_ref()
        .is_some_and(|(p, n)| Arc::ptr_eq(p, &previous.status) && Arc::ptr_eq(n, &next.status));
    if known || same_but_times(&previous.status, &next.status) {
        if !known {
            same.0 = Some((previous.status.clone(), next.status.clone()));
        }
        next.status = previous.status.clone();
        return;
    }
    preserve_object(&previous.status, Arc::make_mut(&mut next.status));
}

/// The last (previous, next) pair of status values found equal but for their times (held,
/// so that their addresses identify them).
#[derive(Default)]
struct SameMemo(Option<(Arc<Value>, Arc<Value>)>);

/// Whether two statuses are equal apart from the values of `lastTransitionTime`, and `old`
/// has a time wherever `new` has one (so keeping `old` is what [`preserve_object`] would
/// give: every condition keeps its old time).
fn same_but_times(old: &Value, new: &Value) -> bool {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            o.len() == n.len()
                && o.iter().zip(n.iter()).all(|((ok, ov), (nk, nv))| {
                    ok == nk
                        && if ok == "lastTransitionTime" {
                            ov.is_string() && nv.is_string()
                        } else {
                            same_but_times(ov, nv)
                        }
                })
        }
        (Value::Array(o), Value::Array(n)) => {
            o.len() == n.len() && o.iter().zip(n).all(|(o, n)| same_but_times(o, n))
        }
        _ => old == new,
    }
}

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

#[cfg(test)]
mod json_tests {
    use weir_store::gw::grpcroutes::GrpcRouteStatus;
    use weir_store::gw::httproutes::{HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
    use weir_store::gw::tcproutes::TcpRouteStatus;
    use weir_store::gw::tlsroutes::TlsRouteStatus;

    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn condition(type_: &str, generation: Option<i64>, at: &Time) -> Condition {
        Condition {
            type_: type_.into(),
            status: "False".into(),
            reason: "Because".into(),
            message: format!("{type_} \"quoted\" message"),
            observed_generation: generation,
            last_transition_time: at.clone(),
        }
    }

    #[test]
    fn route_status_json_is_what_serde_writes() {
        let now = time("2026-12-02T06:00:00Z");
        let earlier = time("2026-01-01T00:00:00.5Z");
        let status = HttpRouteStatus {
            parents: vec![
                HttpRouteStatusParents {
                    conditions: vec![
                        condition("Accepted", Some(3), &now),
                        condition("ResolvedRefs", None, &earlier),
                    ],
                    controller_name: "weir.dev/gateway-controller".into(),
                    parent_ref: HttpRouteStatusParentsParentRef {
                        group: Some("gateway.networking.k8s.io".into()),
                        kind: Some("Gateway".into()),
                        name: "gw".into(),
                        namespace: Some("infra".into()),
                        port: Some(8080),
                        section_name: Some("http".into()),
                    },
                },
                HttpRouteStatusParents {
                    conditions: vec![],
                    controller_name: "weir.dev/gateway-controller".into(),
                    parent_ref: HttpRouteStatusParentsParentRef {
                        name: "other".into(),
                        ..Default::default()
                    },
                },
            ],
        };
        let built = JsonBuilder::new(&now).route_status(&status);
        let serde = serde_json::to_value(&status).unwrap();
        assert_eq!(built, serde);
        // Times are written the same whether or not they are the translation's own.
        assert_eq!(
            built["parents"][0]["conditions"][1]["lastTransitionTime"],
            serde_json::to_value(&earlier).unwrap()
        );
        // A GRPCRoute's status has the same shape: the same JSON reads as one and writes
        // back unchanged.
        let grpc: GrpcRouteStatus = serde_json::from_value(built.clone()).unwrap();
        assert_eq!(serde_json::to_value(&grpc).unwrap(), built);
        // TLSRoute and TCPRoute statuses too.
        let tls: TlsRouteStatus = serde_json::from_value(built.clone()).unwrap();
        assert_eq!(serde_json::to_value(&tls).unwrap(), built);
        let tcp: TcpRouteStatus = serde_json::from_value(built.clone()).unwrap();
        assert_eq!(serde_json::to_value(&tcp).unwrap(), built);
    }

    #[test]
    fn equal_route_statuses_share_one_value_and_others_do_not() {
        let now = time("2026-12-02T06:00:00Z");
        let status = |generation| HttpRouteStatus {
            parents: vec![HttpRouteStatusParents {
                conditions: vec![condition("Accepted", Some(generation), &now)],
                controller_name: "weir.dev/gateway-controller".into(),
                parent_ref: HttpRouteStatusParentsParentRef {
                    name: "gw".into(),
                    ..Default::default()
                },
            }],
        };
        let json = JsonBuilder::new(&now);
        let a = json.shared_route_status(status(1));
        let b = json.shared_route_status(status(2));
        let a2 = json.shared_route_status(status(1));
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b["parents"][0]["conditions"][0]["observedGeneration"], 2);
        // Past the remembered few, an equal status is built again, still equal.
        for g in 3..20 {
            json.shared_route_status(status(g));
        }
        let a3 = json.shared_route_status(status(1));
        assert!(!Arc::ptr_eq(&a, &a3));
        assert_eq!(a, a3);
    }

    #[test]
    fn preserving_times_takes_the_previous_value_when_only_times_differ() {
        let key = weir_store::ObjectKey {
            namespace: "default".into(),
            name: "r".into(),
        };
        let object = |status: Value| ObjectStatus {
            kind: Kind::HttpRoute,
            key: key.clone(),
            generation: Some(1),
            creation_timestamp: None,
            status: Arc::new(status),
        };
        let cond = |status: &str, t: &str| serde_json::json!({"type": "Accepted", "status": status, "lastTransitionTime": t});
        let parents = |c: Value| serde_json::json!({"parents": [{"parentRef": {"name": "gw"}, "conditions": [c]}]});
        let old = vec![object(parents(cond("True", "2026-01-01T00:00:00Z")))];
        // Only the time differs: the previous value itself.
        let mut next = vec![object(parents(cond("True", "2026-12-02T00:00:00Z")))];
        preserve(&old, &mut next);
        assert!(Arc::ptr_eq(&old[0].status, &next[0].status));
        // The status changed: a new value, with the new time for the changed condition.
        let mut next = vec![object(parents(cond("False", "2026-12-02T00:00:00Z")))];
        preserve(&old, &mut next);
        assert!(!Arc::ptr_eq(&old[0].status, &next[0].status));
        assert_eq!(
            next[0].status["parents"][0]["conditions"][0]["lastTransitionTime"],
            "2026-12-02T00:00:00Z"
        );
    }
}
