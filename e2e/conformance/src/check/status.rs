//! Status expectations: conditions, parents, listeners and addresses as the suite's
//! conformance/utils/kubernetes/helpers.go compares them, read from the admin `/status`.

use super::*;

/// What the suite reads before any test: every GatewayClass of ours (the only ones with a
/// status) reports `status.supportedFeatures` = [`weir_translate::SUPPORTED_FEATURES`], in
/// that (ascending) order.
pub async fn classes_list_supported_features(weir: &Weir) -> Result<(), String> {
    eventually(STEP_TIMEOUT, || async {
        let reply = http1(weir.admin, &Req::get("admin", "/status")).await?;
        let doc: Value =
            serde_json::from_slice(&reply.body).map_err(|e| format!("/status: {e}"))?;
        let classes: Vec<&Value> = doc["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["kind"] == "GatewayClass")
            .collect();
        if classes.is_empty() {
            return Err("no GatewayClass in /status".into());
        }
        for class in classes {
            let names: Vec<&str> = class["status"]["supportedFeatures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["name"].as_str())
                .collect();
            if names != weir_translate::SUPPORTED_FEATURES {
                return Err(format!(
                    "GatewayClass {} status.supportedFeatures is {names:?}, want \
                     weir_translate::SUPPORTED_FEATURES {:?}",
                    class["metadata"]["name"],
                    weir_translate::SUPPORTED_FEATURES
                ));
            }
        }
        Ok(())
    })
    .await
}

pub(crate) async fn status_of(env: &Env<'_>, kind: &str, name: &str) -> Result<Value, String> {
    let (ns, name) = split_name(name);
    let reply = http1(env.weir.admin, &Req::get("admin", "/status")).await?;
    let doc: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("/status: {e}"))?;
    doc["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i["kind"] == kind
                && i["metadata"]["name"] == name.as_str()
                && (crate::cluster::is_cluster_scoped(kind)
                    || i["metadata"]["namespace"] == ns.as_str())
        })
        .cloned()
        .ok_or_else(|| format!("{kind} {ns}/{name} has no status"))
}

/// `conditionsMatch`: each expected condition is present with that status (and reason when
/// one is given).
pub(crate) fn conditions_match(
    expected: &[Cond],
    actual: &Value,
    what: &str,
) -> Result<(), String> {
    for e in expected {
        let found = actual
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == e.type_.as_str());
        let Some(c) = found else {
            return Err(format!("{what}: no {} condition in {actual}", e.type_));
        };
        let reason_ok = e
            .reason
            .as_deref()
            .is_none_or(|r| r.is_empty() || c["reason"] == r);
        if c["status"] != e.status.as_str() || !reason_ok {
            return Err(format!(
                "{what}: want {}={} ({}), got {}={} ({})",
                e.type_,
                e.status,
                e.reason.as_deref().unwrap_or("any"),
                e.type_,
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    Ok(())
}

/// Every condition reflects the object's latest generation.
pub(crate) fn latest_generation(
    conditions: &Value,
    generation: &Value,
    what: &str,
) -> Result<(), String> {
    for c in conditions.as_array().into_iter().flatten() {
        if c["observedGeneration"] != *generation {
            return Err(format!(
                "{what}: condition {} has observedGeneration {} but generation is {generation}",
                c["type"], c["observedGeneration"]
            ));
        }
    }
    Ok(())
}

pub(crate) async fn gateway_ready(env: &Env<'_>, gateway: &str) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let conds = &gw["status"]["conditions"];
    conditions_match(
        &[
            Cond {
                type_: "Accepted".into(),
                status: "True".into(),
                reason: None,
            },
            Cond {
                type_: "Programmed".into(),
                status: "True".into(),
                reason: None,
            },
        ],
        conds,
        &format!("Gateway {gateway}"),
    )?;
    latest_generation(
        conds,
        &gw["metadata"]["generation"],
        &format!("Gateway {gateway}"),
    )?;
    if gw["status"]["addresses"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        return Err(format!("Gateway {gateway} has no status.addresses"));
    }
    Ok(())
}

/// The parents of `route` set by our controller.
pub(crate) fn our_parents(route: &Value) -> Vec<&Value> {
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == CONTROLLER_NAME)
        .collect()
}

/// `parentsForRouteMatch` of conformance/utils/kubernetes/helpers.go compares group, kind,
/// name and namespace (which may be left out when the route is in the Gateway's namespace),
/// not the sectionName.
pub(super) fn parent_is(p: &Value, gateway: &str, route_ns: &str) -> bool {
    let (ns, name) = split_name(gateway);
    let r = &p["parentRef"];
    let ns_ok = match r["namespace"].as_str() {
        Some(n) => n == ns,
        None => route_ns == ns,
    };
    r["name"] == name.as_str()
        && ns_ok
        && r["kind"].as_str().unwrap_or("Gateway") == "Gateway"
        && r["group"].as_str().unwrap_or("gateway.networking.k8s.io") == "gateway.networking.k8s.io"
}

pub(super) async fn accepted(env: &Env<'_>, a: &Accepted) -> Result<(), String> {
    gateway_ready(env, &a.gateway).await?;
    // One expected parent per listener name given (one when none is).
    let expected = a.sections.len().max(1);
    let kind = a.kind.as_deref().unwrap_or("HTTPRoute");
    for r in &a.routes {
        let route = status_of(env, kind, r).await?;
        let parents = our_parents(&route);
        if parents.len() != expected {
            return Err(format!(
                "{kind} {r}: want {expected} parent(s), got {}",
                serde_json::to_string(&route["status"]["parents"]).unwrap_or_default()
            ));
        }
        let (route_ns, _) = split_name(r);
        for p in &parents {
            if !parent_is(p, &a.gateway, &route_ns) {
                return Err(format!(
                    "{kind} {r}: parent {} is not Gateway {}",
                    p["parentRef"], a.gateway
                ));
            }
            let what = format!("{kind} {r} parent {}", a.gateway);
            conditions_match(
                &[Cond {
                    type_: "Accepted".into(),
                    status: "True".into(),
                    reason: None,
                }],
                &p["conditions"],
                &what,
            )?;
            latest_generation(&p["conditions"], &route["metadata"]["generation"], &what)?;
        }
    }
    Ok(())
}

pub(super) async fn route_condition(
    env: &Env<'_>,
    route: &str,
    gateway: &str,
    cond: &Cond,
) -> Result<(), String> {
    let r = status_of(env, "HTTPRoute", route).await?;
    let parents = our_parents(&r);
    let (gns, gname) = split_name(gateway);
    let Some(p) = parents.iter().find(|p| {
        p["parentRef"]["name"] == gname.as_str() && p["parentRef"]["namespace"] == gns.as_str()
    }) else {
        return Err(format!("HTTPRoute {route}: no parent {gateway} in status"));
    };
    let what = format!("HTTPRoute {route} parent {gateway}");
    conditions_match(std::slice::from_ref(cond), &p["conditions"], &what)?;
    latest_generation(&p["conditions"], &r["metadata"]["generation"], &what)
}

/// `HTTPRouteMustHaveNoAcceptedParents`: no parents, or only parents with Accepted=False.
pub(super) async fn no_accepted_parents(env: &Env<'_>, route: &str) -> Result<(), String> {
    let r = status_of(env, "HTTPRoute", route).await.unwrap_or_default();
    for p in our_parents(&r) {
        let accepted = p["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True");
        if accepted {
            return Err(format!("HTTPRoute {route}: accepted by {}", p["parentRef"]));
        }
    }
    Ok(())
}

pub(super) async fn zero_routes(env: &Env<'_>, gateway: &str) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    for l in gw["status"]["listeners"].as_array().into_iter().flatten() {
        if l["attachedRoutes"].as_i64() != Some(0) {
            return Err(format!(
                "Gateway {gateway} listener {}: attachedRoutes {}",
                l["name"], l["attachedRoutes"]
            ));
        }
    }
    Ok(())
}

/// `listenersMatch`: same listener count; per listener the supported kinds, attached routes
/// and conditions.
pub(super) async fn gateway_listeners(
    env: &Env<'_>,
    gateway: &str,
    expected: &[ListenerExpect],
) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let actual = gw["status"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if actual.len() != expected.len() {
        return Err(format!(
            "Gateway {gateway}: want {} listeners, got {}",
            expected.len(),
            actual.len()
        ));
    }
    for e in expected {
        let Some(a) = actual.iter().find(|l| l["name"] == e.name.as_str()) else {
            return Err(format!("Gateway {gateway}: no listener {}", e.name));
        };
        let kinds: Vec<&str> = a["supportedKinds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| {
                k["group"].as_str().unwrap_or("gateway.networking.k8s.io")
                    == "gateway.networking.k8s.io"
            })
            .filter_map(|k| k["kind"].as_str())
            .collect();
        // listenersMatch: an empty expected list needs an empty actual one; otherwise every
        // expected kind must be present ("the implementation might support more Kinds than
        // defined in the test").
        let mut want: Vec<&str> = e.kinds.iter().map(String::as_str).collect();
        let mut got = kinds.clone();
        want.sort_unstable();
        got.sort_unstable();
        let matches = if want.is_empty() {
            got.is_empty()
        } else {
            want.iter().all(|k| got.contains(k))
        };
        if !matches {
            return Err(format!(
                "Gateway {gateway} listener {}: supportedKinds {got:?}, want {want:?}",
                e.name
            ));
        }
        if a["attachedRoutes"].as_i64() != Some(e.attached) {
            return Err(format!(
                "Gateway {gateway} listener {}: attachedRoutes {}, want {}",
                e.name, a["attachedRoutes"], e.attached
            ));
        }
        conditions_match(
            &e.conditions,
            &a["conditions"],
            &format!("Gateway {gateway} listener {}", e.name),
        )?;
    }
    Ok(())
}

pub(super) async fn gateway_condition(
    env: &Env<'_>,
    gateway: &str,
    cond: &Cond,
) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let what = format!("Gateway {gateway}");
    conditions_match(
        std::slice::from_ref(cond),
        &gw["status"]["conditions"],
        &what,
    )?;
    latest_generation(
        &gw["status"]["conditions"],
        &gw["metadata"]["generation"],
        &what,
    )
}

pub(super) async fn latest_conditions(env: &Env<'_>, kind: &str, name: &str) -> Result<(), String> {
    let obj = status_of(env, kind, name).await?;
    let generation = &obj["metadata"]["generation"];
    let what = format!("{kind} {name}");
    if obj["status"]["conditions"].as_array().is_some() {
        latest_generation(&obj["status"]["conditions"], generation, &what)?;
    }
    for p in our_parents(&obj) {
        latest_generation(&p["conditions"], generation, &what)?;
    }
    if kind != "HTTPRoute"
        && obj["status"]["conditions"]
            .as_array()
            .is_none_or(|c| c.is_empty())
    {
        return Err(format!("{what} has no conditions"));
    }
    Ok(())
}

/// `WaitForGatewayAddress`: the Gateway's conditions are at its latest generation and
/// status.addresses holds an IPAddress; that address.
pub(super) async fn gateway_address(env: &Env<'_>, gateway: &str) -> Result<IpAddr, String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    latest_generation(
        &gw["status"]["conditions"],
        &gw["metadata"]["generation"],
        &format!("Gateway {gateway}"),
    )?;
    gw["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "IPAddress")
        .and_then(|a| a["value"].as_str())
        .ok_or_else(|| format!("Gateway {gateway} has no IPAddress in status.addresses"))?
        .parse()
        .map_err(|e| format!("Gateway {gateway}: status address: {e}"))
}

pub(super) async fn status_addresses(
    env: &Env<'_>,
    gateway: &str,
    want: &[(String, String)],
) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let got: Vec<(String, String)> = gw["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["type"].as_str().unwrap_or_default().to_string(),
                a["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if got != want {
        return Err(format!(
            "Gateway {gateway}: status.addresses {got:?}, want {want:?}"
        ));
    }
    Ok(())
}
