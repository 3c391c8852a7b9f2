use serde_json::{json, Value};
use weir_store::Kind;

use super::{desired_status, keep_times, same, status_patch};

const OURS: &str = "weir.dev/gateway-controller";
const THEIRS: &str = "example.com/other";
const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2025-06-01T12:00:00Z";

fn condition(ty: &str, status: &str, time: &str) -> Value {
    json!({"type": ty, "status": status, "reason": ty, "message": "", "observedGeneration": 1,
        "lastTransitionTime": time})
}

fn parent(controller: &str, gateway: &str, conditions: Vec<Value>) -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "ns", "name": gateway},
        "controllerName": controller,
        "conditions": conditions,
    })
}

#[test]
fn unchanged_conditions_keep_their_time_and_changed_ones_take_the_new() {
    let live = json!([
        condition("Accepted", "True", T0),
        condition("Programmed", "False", T0)
    ]);
    let mut new = json!([
        condition("Accepted", "True", T1),
        condition("Programmed", "True", T1)
    ]);
    keep_times(Some(&live), Some(&mut new));
    assert_eq!(new[0]["lastTransitionTime"], T0);
    assert_eq!(new[1]["lastTransitionTime"], T1);
}

#[test]
fn a_gateway_whose_only_difference_is_time_is_unchanged() {
    let live = json!({
        "conditions": [condition("Accepted", "True", T0)],
        "listeners": [{"name": "http", "attachedRoutes": 1, "supportedKinds": [],
            "conditions": [condition("Programmed", "True", T0)]}],
    });
    let computed = json!({
        "conditions": [condition("Accepted", "True", T1)],
        "listeners": [{"name": "http", "attachedRoutes": 1, "supportedKinds": [],
            "conditions": [condition("Programmed", "True", T1)]}],
    });
    let desired = desired_status(Kind::Gateway, &live, &computed, OURS);
    assert!(same(&desired, &live), "{desired:#}");

    // A new attached route count is a change, and the condition time stays.
    let mut more = computed.clone();
    more["listeners"][0]["attachedRoutes"] = json!(2);
    let desired = desired_status(Kind::Gateway, &live, &more, OURS);
    assert!(!same(&desired, &live));
    assert_eq!(
        desired["listeners"][0]["conditions"][0]["lastTransitionTime"],
        T0
    );
}

#[test]
fn a_new_observed_generation_is_a_change_that_keeps_the_time() {
    let live = json!({"conditions": [condition("Accepted", "True", T0)]});
    let mut computed = json!({"conditions": [condition("Accepted", "True", T1)]});
    computed["conditions"][0]["observedGeneration"] = json!(2);
    let desired = desired_status(Kind::GatewayClass, &live, &computed, OURS);
    assert!(!same(&desired, &live));
    assert_eq!(desired["conditions"][0]["lastTransitionTime"], T0);
    assert_eq!(desired["conditions"][0]["observedGeneration"], 2);
}

/// Both route kinds share `status.parents` with other controllers.
const ROUTE_KINDS: [Kind; 2] = [Kind::HttpRoute, Kind::GrpcRoute];

#[test]
fn route_parents_of_other_controllers_are_kept_in_place() {
    let live = json!({"parents": [
        parent(THEIRS, "theirs", vec![condition("Accepted", "True", T0)]),
        parent(OURS, "a", vec![condition("Accepted", "True", T0)]),
        parent(OURS, "gone", vec![condition("Accepted", "True", T0)]),
    ]});
    let computed = json!({"parents": [
        parent(OURS, "a", vec![condition("Accepted", "True", T1), condition("ResolvedRefs", "False", T1)]),
        parent(OURS, "new", vec![condition("Accepted", "True", T1)]),
    ]});
    for kind in ROUTE_KINDS {
        let desired = desired_status(kind, &live, &computed, OURS);
        let parents = desired["parents"].as_array().unwrap();
        let names: Vec<_> = parents
            .iter()
            .map(|p| p["parentRef"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["theirs", "a", "new"], "{kind}");
        assert_eq!(parents[0], live["parents"][0], "{kind}: theirs untouched");
        assert_eq!(parents[1]["conditions"][0]["lastTransitionTime"], T0);
        assert_eq!(parents[1]["conditions"][1]["lastTransitionTime"], T1);

        // Writing that and computing the same again is no change.
        let again = desired_status(kind, &desired, &computed, OURS);
        assert!(same(&again, &desired), "{kind}");
    }
}

#[test]
fn grpc_route_parents_are_not_replaced_wholesale() {
    // Were GRPCRoute status treated like a Gateway's (ours alone), the other controller's
    // entry would be dropped.
    let live =
        json!({"parents": [parent(THEIRS, "theirs", vec![condition("Accepted", "True", T0)])]});
    let computed = json!({"parents": [
        parent(OURS, "gw", vec![condition("Accepted", "False", T1)]),
    ]});
    let desired = desired_status(Kind::GrpcRoute, &live, &computed, OURS);
    assert_eq!(
        desired["parents"],
        json!([live["parents"][0], computed["parents"][0]])
    );
}

#[test]
fn routes_with_only_other_controllers_parents_and_nothing_computed_are_unchanged() {
    let live = json!({"parents": [parent(THEIRS, "theirs", vec![])]});
    for kind in ROUTE_KINDS {
        let desired = desired_status(kind, &live, &json!({"parents": []}), OURS);
        assert!(same(&desired, &live), "{kind}");
    }
}

#[test]
fn nulls_and_missing_status_compare_equal() {
    assert!(same(&Value::Null, &json!({})));
    assert!(same(&json!({"a": null, "b": 1}), &json!({"b": 1})));
    assert!(!same(&json!({"b": 1}), &json!({"b": 2})));
}

#[test]
fn patches_replace_gateway_status_wholesale_and_guard_routes_with_the_version() {
    let live = json!({"conditions": [], "addresses": [{"value": "10.0.0.1"}]});
    let desired = json!({"conditions": [condition("Accepted", "True", T0)]});
    let patch = status_patch(Kind::Gateway, &live, &desired, Some("7"));
    assert_eq!(patch["status"]["addresses"], Value::Null);
    assert!(patch.get("metadata").is_none());
    for kind in ROUTE_KINDS {
        let patch = status_patch(kind, &json!({}), &json!({"parents": []}), Some("7"));
        assert_eq!(patch["metadata"]["resourceVersion"], "7", "{kind}");
    }
}
