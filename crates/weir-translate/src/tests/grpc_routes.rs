//! GRPCRoute: reported truthfully (not accepted: no listener of ours admits GRPCRoutes), not
//! served; GatewayClass supportedFeatures.

use serde_json::json;
use weir_store::{Kind, ObjectKey, Rejection};

use super::*;
use crate::SUPPORTED_FEATURES;

fn grpc_route(name: &str, ns: &str, parent_refs: &str, backend_refs: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: {ns}, generation: 4}}
spec:
  parentRefs: {parent_refs}
  rules:
  - matches:
    - method: {{service: echo.Echo, method: Ping}}
    backendRefs: {backend_refs}
"
    )
}

const SVC_A: &str = "[{name: svc-a, namespace: default, port: 80}]";

/// (status, reason) of a GRPCRoute parent's condition.
fn grpc_cond(out: &Output, route: &str, scope: &str, type_: &str) -> (String, String) {
    cond(status(out, Kind::GrpcRoute, "default", route), scope, type_)
}

#[test]
fn a_grpc_route_on_our_gateway_is_reported_not_accepted_and_not_served() {
    let yaml = [
        gateway("gw", "  - {name: web, port: 80, protocol: HTTP}"),
        SERVICES.to_string(),
        grpc_route("rpc", "default", "[{name: gw}]", SVC_A),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    let s = status(&out, Kind::GrpcRoute, "default", "rpc");
    let parents = s.status["parents"].as_array().expect("parents");
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0]["controllerName"], CONTROLLER);
    assert_eq!(
        parents[0]["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "namespace": "default"})
    );
    assert_eq!(
        cond(s, "parent default/gw", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        cond(s, "parent default/gw", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let message = s.condition_lines()[0].4.clone();
    assert!(
        message.contains("supportedKinds: HTTPRoute") && message.contains("does not serve"),
        "{message}"
    );
    // Conditions carry the route's generation.
    assert_eq!(parents[0]["conditions"][0]["observedGeneration"], 4);
    // Not attached, not served.
    assert_eq!(attached(&out, "default", "gw", "web"), 0);
    assert_eq!(hit(&out, 80, &get("h", "/echo.Echo/Ping")), "404");
    // What /status and `weir check` see.
    let resource = s.to_resource_json();
    assert_eq!(resource["kind"], "GRPCRoute");
    assert_eq!(resource["apiVersion"], "gateway.networking.k8s.io/v1");
    let problems = s.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("parent default/gw: Accepted is False (NotAllowedByListeners)"));
}

#[test]
fn listeners_that_name_grpc_route_report_an_invalid_route_kind() {
    // A listener listing GRPCRoute in allowedRoutes.kinds: the kind is not supported, so
    // ResolvedRefs=False / InvalidRouteKinds and it is left out of supportedKinds; the
    // listener stays accepted for the kinds it does support.
    let listeners = "  - name: grpc-only
    port: 80
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: GRPCRoute}]}
  - name: both
    port: 8080
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: GRPCRoute}]}";
    let yaml = [
        gateway("gw", listeners),
        SERVICES.to_string(),
        grpc_route("rpc", "default", "[{name: gw}]", SVC_A),
        grpc_route(
            "rpc-grpc-only",
            "default",
            "[{name: gw, sectionName: grpc-only}]",
            SVC_A,
        ),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(gw, "listener grpc-only", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(
        cond(gw, "listener both", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(listener_json(gw, "grpc-only")["supportedKinds"], json!([]));
    assert_eq!(
        listener_json(gw, "both")["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    for route in ["rpc", "rpc-grpc-only"] {
        let scope = if route == "rpc" {
            "parent default/gw"
        } else {
            "parent default/gw/grpc-only"
        };
        assert_eq!(
            grpc_cond(&out, route, scope, "Accepted"),
            is("False", "NotAllowedByListeners"),
            "{route}"
        );
    }
    assert_eq!(attached(&out, "default", "gw", "both"), 0);
}

#[test]
fn grpc_route_parent_refs_are_selected_like_any_route() {
    let yaml = [
        gateway("gw", "  - {name: web, port: 80, protocol: HTTP}"),
        SERVICES.to_string(),
        grpc_route(
            "no-section",
            "default",
            "[{name: gw, sectionName: nope}]",
            SVC_A,
        ),
        grpc_route("no-port", "default", "[{name: gw, port: 81}]", SVC_A),
        grpc_route(
            "two-parents",
            "default",
            "[{name: gw, sectionName: web}, {name: gw, port: 80}]",
            SVC_A,
        ),
        // Parents that are not Gateways of ours: no status from us at all.
        grpc_route(
            "not-ours",
            "default",
            "[{name: elsewhere}, {name: gw, kind: ListenerSet}]",
            SVC_A,
        ),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    for route in ["no-section", "no-port"] {
        let s = status(&out, Kind::GrpcRoute, "default", route);
        let scope = s.condition_lines()[0].0.clone();
        assert_eq!(
            cond(s, &scope, "Accepted"),
            is("False", "NoMatchingParent"),
            "{route}"
        );
    }
    let s = status(&out, Kind::GrpcRoute, "default", "two-parents");
    assert_eq!(s.status["parents"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        cond(s, "parent default/gw/web", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(s.status["parents"][1]["parentRef"]["port"], 80);
    assert!(!has_status(&out, Kind::GrpcRoute, "default", "not-ours"));
}

#[test]
fn grpc_route_backend_refs_resolve_like_http_route_ones() {
    let yaml = [
        gateway(
            "gw",
            "  - {name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
        ),
        SERVICES.to_string(),
        "
apiVersion: v1
kind: Service
metadata: {name: svc-o, namespace: other}
spec:
  ports:
  - {port: 80}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-grpc, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: granted}]
  to: [{group: '', kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-http, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: http-granted}]
  to: [{group: '', kind: Service}]
"
        .to_string(),
        grpc_route(
            "missing",
            "default",
            "[{name: gw}]",
            "[{name: nope, port: 80}]",
        ),
        grpc_route(
            "no-port",
            "default",
            "[{name: gw}]",
            "[{name: svc-a, port: 81}]",
        ),
        grpc_route(
            "kind",
            "default",
            "[{name: gw}]",
            "[{group: example.com, kind: Thing, name: t}]",
        ),
        grpc_route(
            "granted",
            "granted",
            "[{name: gw, namespace: default}]",
            "[{name: svc-o, namespace: other, port: 80}]",
        ),
        grpc_route(
            "http-grant-only",
            "http-granted",
            "[{name: gw, namespace: default}]",
            "[{name: svc-o, namespace: other, port: 80}]",
        ),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    let resolved = |ns: &str, name: &str| {
        cond(
            status(&out, Kind::GrpcRoute, ns, name),
            "parent default/gw",
            "ResolvedRefs",
        )
    };
    assert_eq!(
        resolved("default", "missing"),
        is("False", "BackendNotFound")
    );
    assert_eq!(
        resolved("default", "no-port"),
        is("False", "BackendNotFound")
    );
    assert_eq!(resolved("default", "kind"), is("False", "InvalidKind"));
    assert_eq!(resolved("granted", "granted"), is("True", "ResolvedRefs"));
    // A grant for HTTPRoutes does not cover GRPCRoutes.
    assert_eq!(
        resolved("http-granted", "http-grant-only"),
        is("False", "RefNotPermitted")
    );
    let message =
        &status(&out, Kind::GrpcRoute, "http-granted", "http-grant-only").condition_lines()[1].4;
    assert!(message.contains("this GRPCRoute"), "{message}");
    // Every parent is still not accepted, whatever its references.
    assert_eq!(
        cond(
            status(&out, Kind::GrpcRoute, "granted", "granted"),
            "parent default/gw",
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
}

#[test]
fn a_rejected_grpc_route_version_is_reported_on_each_parent() {
    let yaml = [
        gateway("gw", "  - {name: web, port: 80, protocol: HTTP}"),
        SERVICES.to_string(),
        grpc_route(
            "rpc",
            "default",
            "[{name: gw}, {name: gw, sectionName: web}]",
            SVC_A,
        ),
    ]
    .join("---\n");
    let mut store = store_with_class(&yaml);
    store.rejected.insert(
        (Kind::GrpcRoute, ObjectKey::new("default", "rpc")),
        Rejection {
            location: Default::default(),
            message: "spec.rules: invalid type".into(),
        },
    );
    let out = run(&store);
    let s = status(&out, Kind::GrpcRoute, "default", "rpc");
    for scope in ["parent default/gw", "parent default/gw/web"] {
        assert_eq!(
            cond(s, scope, crate::INVALID_MANIFEST),
            is("True", "ParseError"),
            "{scope}"
        );
    }
}

#[test]
fn grpc_routes_from_the_conformance_suite_are_reported_on_the_base_gateway() {
    let path = format!(
        "{}/../../../shared/gateway-api/v1.5.1/conformance",
        env!("CARGO_MANIFEST_DIR")
    );
    let read = |rel: &str| {
        std::fs::read_to_string(format!("{path}/{rel}"))
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
            .replace("{GATEWAY_CLASS_NAME}", "weir")
    };
    let yaml = format!(
        "{}\n---\n{}",
        read("base/manifests.yaml"),
        read("tests/grpcroute-exact-method-matching.yaml")
    );
    let out = run_yaml(&yaml);
    let s = status(
        &out,
        Kind::GrpcRoute,
        "gateway-conformance-infra",
        "exact-matching",
    );
    assert_eq!(
        cond(
            s,
            "parent gateway-conformance-infra/same-namespace",
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        cond(
            s,
            "parent gateway-conformance-infra/same-namespace",
            "ResolvedRefs"
        ),
        is("True", "ResolvedRefs")
    );
}

#[test]
fn supported_features_are_sorted_unique_suite_names() {
    let mut sorted = SUPPORTED_FEATURES.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted, SUPPORTED_FEATURES,
        "sorted ascending, no duplicates"
    );
    for core in ["Gateway", "HTTPRoute", "ReferenceGrant"] {
        assert!(SUPPORTED_FEATURES.contains(&core), "{core}");
    }
    // Not served yet, so never claimed.
    assert!(!SUPPORTED_FEATURES
        .iter()
        .any(|f| f.starts_with("GRPCRoute")));
}

#[test]
fn our_gateway_class_lists_the_supported_features() {
    let out = run_yaml("");
    let class = status(&out, Kind::GatewayClass, "", "weir");
    let names: Vec<&str> = class.status["supportedFeatures"]
        .as_array()
        .expect("supportedFeatures")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, SUPPORTED_FEATURES);
    assert_eq!(cond(class, "", "Accepted"), is("True", "Accepted"));
}
