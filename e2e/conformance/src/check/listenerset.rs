//! ListenerSet steps, compared like conformance/utils/kubernetes/helpers.go (v1.5):
//! `ListenerSetMustHaveCondition`, `ListenerSetListenersMustHaveConditions` /
//! `GatewayListenersMustHaveConditions`, `ListenerSetStatusMustHaveListeners`,
//! `GatewayMustHaveAttachedListeners` and `RoutesAndParentMustBeAccepted` (whose parent may be
//! a ListenerSet).

use serde::Deserialize;
use serde_json::Value;

use super::{
    conditions_match, eventually, gateway_ready, latest_generation, our_parents, status_of, Env,
    STEP_TIMEOUT,
};
use crate::cluster::CONTROLLER_NAME;
use crate::spec::{split_name, Cond, ListenerExpect};

const GROUP: &str = "gateway.networking.k8s.io";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LsStep {
    /// `ListenerSetMustHaveCondition`: the ListenerSet's conditions are at its latest
    /// generation and include this one.
    ListenerSetCondition {
        listener_set: String,
        condition: Cond,
    },
    /// `ListenerSetListenersMustHaveConditions` (kind ListenerSet) or
    /// `GatewayListenersMustHaveConditions` (kind Gateway): every named listener (every
    /// listener when none is named) has all the conditions, and each named one is present.
    ListenerConditions {
        kind: String,
        name: String,
        #[serde(default)]
        listeners: Vec<String>,
        conditions: Vec<Cond>,
    },
    /// `ListenerSetStatusMustHaveListeners` (`listenerSetListenersMatch`): as many listeners
    /// as expected; per listener the expected supportedKinds present, attachedRoutes equal,
    /// the conditions present.
    ListenerSetListeners {
        listener_set: String,
        listeners: Vec<ListenerExpect>,
    },
    /// `GatewayMustHaveAttachedListeners`: `status.attachedListenerSets` (absent = 0).
    AttachedListenerSets { gateway: String, count: i64 },
    /// `RoutesAndParentMustBeAccepted` / `GatewayAndHTTPRoutesMustBeAccepted` of v1.5: each
    /// route has, among its parents, one naming this parent (group, kind, name, namespace)
    /// with Accepted=True at the route's latest generation; then every listener of the
    /// parent has ResolvedRefs, Accepted and Programmed True (kind ListenerSet), or the
    /// Gateway is ready with an address (kind Gateway).
    ParentAccepted {
        kind: String,
        parent: String,
        routes: Vec<String>,
    },
}

pub async fn run(env: &Env<'_>, step: &LsStep) -> Result<(), String> {
    match step {
        LsStep::ListenerSetCondition {
            listener_set,
            condition,
        } => {
            eventually(STEP_TIMEOUT, || async {
                let ls = status_of(env, "ListenerSet", listener_set).await?;
                let what = format!("ListenerSet {listener_set}");
                let conds = &ls["status"]["conditions"];
                latest_generation(conds, &ls["metadata"]["generation"], &what)?;
                conditions_match(std::slice::from_ref(condition), conds, &what)
            })
            .await
        }
        LsStep::ListenerConditions {
            kind,
            name,
            listeners,
            conditions,
        } => {
            eventually(STEP_TIMEOUT, || {
                listener_conditions(env, kind, name, listeners, conditions)
            })
            .await
        }
        LsStep::ListenerSetListeners {
            listener_set,
            listeners,
        } => {
            eventually(STEP_TIMEOUT, || {
                listener_set_listeners(env, listener_set, listeners)
            })
            .await
        }
        LsStep::AttachedListenerSets { gateway, count } => {
            eventually(STEP_TIMEOUT, || async {
                let gw = status_of(env, "Gateway", gateway).await?;
                let what = format!("Gateway {gateway}");
                latest_generation(
                    &gw["status"]["conditions"],
                    &gw["metadata"]["generation"],
                    &what,
                )?;
                let got = gw["status"]["attachedListenerSets"].as_i64().unwrap_or(0);
                if got != *count {
                    return Err(format!("{what}: attachedListenerSets {got}, want {count}"));
                }
                Ok(())
            })
            .await
        }
        LsStep::ParentAccepted {
            kind,
            parent,
            routes,
        } => {
            eventually(STEP_TIMEOUT, || parent_accepted(env, kind, parent, routes)).await?;
            let all_true = ["ResolvedRefs", "Accepted", "Programmed"].map(|t| Cond {
                type_: t.into(),
                status: "True".into(),
                reason: None,
            });
            eventually(STEP_TIMEOUT, || {
                listener_conditions(env, kind, parent, &[], &all_true)
            })
            .await
        }
    }
}

async fn listener_conditions(
    env: &Env<'_>,
    kind: &str,
    name: &str,
    listeners: &[String],
    conditions: &[Cond],
) -> Result<(), String> {
    let obj = status_of(env, kind, name).await?;
    let what = format!("{kind} {name}");
    latest_generation(
        &obj["status"]["conditions"],
        &obj["metadata"]["generation"],
        &what,
    )?;
    let actual = obj["status"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for wanted in listeners {
        if !actual.iter().any(|l| l["name"] == wanted.as_str()) {
            return Err(format!("{what}: no listener {wanted} in status"));
        }
    }
    for l in actual
        .iter()
        .filter(|l| listeners.is_empty() || listeners.iter().any(|n| l["name"] == n.as_str()))
    {
        conditions_match(
            conditions,
            &l["conditions"],
            &format!("{what} listener {}", l["name"]),
        )?;
    }
    Ok(())
}

async fn listener_set_listeners(
    env: &Env<'_>,
    listener_set: &str,
    expected: &[ListenerExpect],
) -> Result<(), String> {
    let ls = status_of(env, "ListenerSet", listener_set).await?;
    let what = format!("ListenerSet {listener_set}");
    latest_generation(
        &ls["status"]["conditions"],
        &ls["metadata"]["generation"],
        &what,
    )?;
    let actual = ls["status"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if actual.len() != expected.len() {
        return Err(format!(
            "{what}: want {} listeners, got {}",
            expected.len(),
            actual.len()
        ));
    }
    for e in expected {
        let Some(a) = actual.iter().find(|l| l["name"] == e.name.as_str()) else {
            return Err(format!("{what}: no listener {}", e.name));
        };
        let kinds: Vec<&str> = a["supportedKinds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| k["group"].as_str().unwrap_or(GROUP) == GROUP)
            .filter_map(|k| k["kind"].as_str())
            .collect();
        if e.kinds.is_empty() && !kinds.is_empty() {
            return Err(format!(
                "{what} listener {}: supportedKinds {kinds:?}, want none",
                e.name
            ));
        }
        if let Some(missing) = e.kinds.iter().find(|k| !kinds.contains(&k.as_str())) {
            return Err(format!(
                "{what} listener {}: supportedKinds {kinds:?} lack {missing}",
                e.name
            ));
        }
        if a["attachedRoutes"].as_i64() != Some(e.attached) {
            return Err(format!(
                "{what} listener {}: attachedRoutes {}, want {}",
                e.name, a["attachedRoutes"], e.attached
            ));
        }
        conditions_match(
            &e.conditions,
            &a["conditions"],
            &format!("{what} listener {}", e.name),
        )?;
    }
    Ok(())
}

/// `parentsForRouteMatch` of v1.5: some parent set by our controller names the parent by
/// group, kind, name and namespace (absent namespace: the route's), with Accepted=True.
fn names_parent(p: &Value, kind: &str, parent: &str, route_ns: &str) -> bool {
    let (ns, name) = split_name(parent);
    let r = &p["parentRef"];
    let ns_ok = r["namespace"].as_str().unwrap_or(route_ns) == ns;
    p["controllerName"] == CONTROLLER_NAME
        && r["group"].as_str().unwrap_or(GROUP) == GROUP
        && r["kind"].as_str().unwrap_or("Gateway") == kind
        && r["name"] == name.as_str()
        && ns_ok
}

async fn parent_accepted(
    env: &Env<'_>,
    kind: &str,
    parent: &str,
    routes: &[String],
) -> Result<(), String> {
    if kind == "Gateway" {
        gateway_ready(env, parent).await?;
    }
    let accepted = [Cond {
        type_: "Accepted".into(),
        status: "True".into(),
        reason: Some("Accepted".into()),
    }];
    for r in routes {
        let route = status_of(env, "HTTPRoute", r).await?;
        let (route_ns, _) = split_name(r);
        let parents = our_parents(&route);
        let matching: Vec<&&Value> = parents
            .iter()
            .filter(|p| names_parent(p, kind, parent, &route_ns))
            .collect();
        if matching.is_empty() {
            return Err(format!(
                "HTTPRoute {r}: no parent {kind} {parent} in {}",
                serde_json::to_string(&route["status"]["parents"]).unwrap_or_default()
            ));
        }
        let what = format!("HTTPRoute {r} parent {kind} {parent}");
        let mut last = Ok(());
        for p in matching {
            last = conditions_match(&accepted, &p["conditions"], &what).and_then(|()| {
                latest_generation(&p["conditions"], &route["metadata"]["generation"], &what)
            });
            if last.is_ok() {
                break;
            }
        }
        last?;
    }
    Ok(())
}
