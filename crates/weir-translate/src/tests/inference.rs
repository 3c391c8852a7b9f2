//! InferencePool backendRefs (`crate::inference`): the pool's endpoints, its picker, the
//! route's ResolvedRefs and the pool's `status.parents`.

use weir_snapshot::PickerState;

use super::*;

const POOL: &str = "
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: pool, namespace: default, generation: 2}
spec:
  selector: {matchLabels: {app: model}}
  targetPorts: [{number: 3000}, {number: 3002}]
  endpointPickerRef: {name: epp, port: {number: 9002}, failureMode: FailOpen}
---
apiVersion: v1
kind: Service
metadata: {name: epp, namespace: default}
spec:
  ports: [{port: 9002, targetPort: 9002, appProtocol: http2}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: epp-1, namespace: default, labels: {kubernetes.io/service-name: epp}}
addressType: IPv4
ports: [{port: 9002}]
endpoints: [{addresses: [127.0.0.9]}]
---
apiVersion: v1
kind: Pod
metadata: {name: model-a, namespace: default, labels: {app: model}}
status: {phase: Running, podIP: 127.0.0.11, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: model-b, namespace: default, labels: {app: model}}
status: {phase: Running, podIP: 127.0.0.12, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: model-unready, namespace: default, labels: {app: model}}
status: {phase: Running, podIP: 127.0.0.13, conditions: [{type: Ready, status: 'False'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: default, labels: {app: other}}
status: {phase: Running, podIP: 127.0.0.14}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: other, labels: {app: model}}
status: {phase: Running, podIP: 127.0.0.15}
";

fn route(name: &str, backend: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default, generation: 1}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
    backendRefs:
    - {backend}
"
    )
}

fn listeners() -> String {
    gateway("gw", "  - {name: http, port: 80, protocol: HTTP}")
}

fn pool_upstream(out: &Output, path: &str) -> Arc<weir_snapshot::Upstream> {
    let e = super::route(out, 80, &get("any", path)).expect("a route");
    match &e.action.backends[0].target {
        BackendTarget::Upstream(u) => u.clone(),
        BackendTarget::Invalid(why) => panic!("invalid backend: {why}"),
    }
}

#[test]
fn a_pool_backend_targets_its_ready_selected_pods_on_every_target_port() {
    let yaml = format!(
        "{}\n---\n{POOL}\n---\n{}",
        listeners(),
        route(
            "r",
            "{group: inference.networking.k8s.io, kind: InferencePool, name: pool, port: 1234}"
        )
    );
    let out = run(&store_with_class(&yaml));
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let u = pool_upstream(&out, "/r");
    let addrs: Vec<String> = u.endpoints.iter().map(|e| e.addr.to_string()).collect();
    // The backendRef's port (1234) is ignored; unready, unselected and other-namespace Pods
    // are not endpoints.
    assert_eq!(
        addrs,
        [
            "127.0.0.11:3000",
            "127.0.0.11:3002",
            "127.0.0.12:3000",
            "127.0.0.12:3002"
        ]
    );
    let pool = u.inference.as_deref().expect("a pool upstream");
    match &pool.picker {
        PickerState::Ready(p) => {
            assert!(p.fail_open);
            assert_eq!(
                p.endpoints
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>(),
                ["127.0.0.9:9002"]
            );
        }
        other => panic!("picker {other:?}"),
    }
    // The pool's status: one parent, our Gateway, Accepted and ResolvedRefs.
    let s = status(&out, Kind::InferencePool, "default", "pool");
    let parents = s.status["parents"].as_array().expect("parents");
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0]["parentRef"]["name"], "gw");
    assert_eq!(parents[0]["parentRef"]["kind"], "Gateway");
    assert_eq!(parents[0]["controllerName"], CONTROLLER);
    let conds = parents[0]["conditions"].as_array().expect("conditions");
    assert_eq!(conds[0]["type"], "Accepted");
    assert_eq!(conds[0]["status"], "True");
    assert_eq!(conds[1]["type"], "ResolvedRefs");
    assert_eq!(conds[1]["status"], "True");
    assert_eq!(conds[1]["observedGeneration"], 2);
}

#[test]
fn a_missing_pool_is_backend_not_found_and_an_unused_pool_has_no_parents() {
    let yaml = format!(
        "{}\n---\n{POOL}\n---\n{}",
        listeners(),
        route(
            "r",
            "{group: inference.networking.k8s.io, kind: InferencePool, name: nope}"
        )
    );
    let out = run(&store_with_class(&yaml));
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    assert_eq!(
        backends(&out, 80, &get("any", "/r")),
        [("invalid".to_string(), 1)]
    );
    let s = status(&out, Kind::InferencePool, "default", "pool");
    assert_eq!(s.status["parents"], serde_json::json!([]));
}

#[test]
fn a_pool_whose_picker_service_is_missing_is_unresolved_on_route_and_pool() {
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        listeners(),
        POOL.replace("name: epp, port", "name: gone, port"),
        route(
            "r",
            "{group: inference.networking.k8s.io, kind: InferencePool, name: pool}"
        )
    );
    let out = run(&store_with_class(&yaml));
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    let u = pool_upstream(&out, "/r");
    assert!(matches!(
        u.inference.as_deref().map(|p| &p.picker),
        Some(PickerState::Unresolved(_))
    ));
    let s = status(&out, Kind::InferencePool, "default", "pool");
    let conds = &s.status["parents"][0]["conditions"];
    assert_eq!(conds[1]["status"], "False");
    assert_eq!(conds[1]["reason"], "InvalidExtensionRef");
}

#[test]
fn a_pool_without_a_picker_is_balanced_and_accepted() {
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        listeners(),
        POOL.replace(
            "  endpointPickerRef: {name: epp, port: {number: 9002}, failureMode: FailOpen}\n",
            ""
        ),
        route(
            "r",
            "{group: inference.networking.k8s.io, kind: InferencePool, name: pool}"
        )
    );
    let out = run(&store_with_class(&yaml));
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let u = pool_upstream(&out, "/r");
    assert!(matches!(
        u.inference.as_deref().map(|p| &p.picker),
        Some(PickerState::None)
    ));
}

#[test]
fn a_pool_in_another_namespace_needs_a_reference_grant() {
    let pool_elsewhere = POOL
        .replace("namespace: default", "namespace: models")
        .replace("namespace: other", "namespace: default");
    let base = format!(
        "{}\n---\n{pool_elsewhere}\n---\n{}",
        listeners(),
        route(
            "r",
            "{group: inference.networking.k8s.io, kind: InferencePool, name: pool, namespace: models}"
        )
    );
    let out = run(&store_with_class(&base));
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    let granted = format!(
        "{base}\n---\n
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g, namespace: models}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}}]
  to: [{{group: inference.networking.k8s.io, kind: InferencePool}}]
"
    );
    let out = run(&store_with_class(&granted));
    assert_eq!(
        parent_cond(&out, ("default", "r"), ("default", "gw"), "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let u = pool_upstream(&out, "/r");
    assert_eq!(
        u.endpoints.len(),
        4,
        "the pool's Pods, in its own namespace"
    );
}
