//! BackendTLSPolicy status steps, compared like conformance/utils/kubernetes/helpers.go:
//! `BackendTLSPolicyMustHaveCondition` (the condition under our ancestor entry for the
//! Gateway) and `BackendTLSPolicyMustHaveLatestConditions`.

use serde_json::Value;

use super::{conditions_match, latest_generation, status_of, Env};
use crate::cluster::CONTROLLER_NAME;
use crate::spec::{split_name, Cond};

const KIND: &str = "BackendTLSPolicy";

/// Our ancestor entries (controllerName ours).
fn our_ancestors(policy: &Value) -> Vec<&Value> {
    policy["status"]["ancestors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["controllerName"] == CONTROLLER_NAME)
        .collect()
}

/// `BackendTLSPolicyMustHaveCondition`: the ancestor entry naming the Gateway has the
/// condition (an empty reason matches any).
pub(super) async fn policy_condition(
    env: &Env<'_>,
    policy: &str,
    gateway: &str,
    cond: &Cond,
) -> Result<(), String> {
    let p = status_of(env, KIND, policy).await?;
    let (gns, gname) = split_name(gateway);
    let ancestors = our_ancestors(&p);
    let Some(a) = ancestors.iter().find(|a| {
        let r = &a["ancestorRef"];
        r["name"] == gname.as_str()
            && r["namespace"] == gns.as_str()
            && r["kind"].as_str().unwrap_or("Gateway") == "Gateway"
    }) else {
        return Err(format!(
            "{KIND} {policy}: no ancestor {gateway} in status ({} of ours)",
            ancestors.len()
        ));
    };
    let what = format!("{KIND} {policy} ancestor {gateway}");
    conditions_match(std::slice::from_ref(cond), &a["conditions"], &what)?;
    latest_generation(&a["conditions"], &p["metadata"]["generation"], &what)
}

/// `BackendTLSPolicyMustHaveLatestConditions`: ancestors exist and every condition of ours
/// is at the policy's generation.
pub(super) async fn latest_conditions(env: &Env<'_>, policy: &str) -> Result<(), String> {
    let p = status_of(env, KIND, policy).await?;
    let ancestors = our_ancestors(&p);
    if ancestors.is_empty() {
        return Err(format!("{KIND} {policy} has no ancestors of ours"));
    }
    for a in ancestors {
        latest_generation(
            &a["conditions"],
            &p["metadata"]["generation"],
            &format!("{KIND} {policy}"),
        )?;
    }
    Ok(())
}
