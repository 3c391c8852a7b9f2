//! GRPCRoute: attachment and status, method and header matching, precedence, backends
//! (always h2c), filters, the HTTPRoute/GRPCRoute hostname rule; GatewayClass
//! supportedFeatures.

use serde_json::json;
use weir_snapshot::AppProtocol;
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

/// A GRPCRoute `name` in `default` on Gateway `gw` with the given spec fields after
/// parentRefs (`hostnames:` and `rules:` YAML) and a creation time.
fn grpc_route_spec(name: &str, created: &str, spec: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: default, generation: 1, creationTimestamp: '{created}'}}
spec:
  parentRefs: [{{name: gw}}]
{spec}
"
    )
}

const SVC_A: &str = "[{name: svc-a, namespace: default, port: 80}]";
const WEB: &str = "  - {name: web, port: 80, protocol: HTTP}";

/// (status, reason) of a GRPCRoute parent's condition.
fn grpc_cond(out: &Output, route: &str, scope: &str, type_: &str) -> (String, String) {
    cond(status(out, Kind::GrpcRoute, "default", route), scope, type_)
}

/// A gRPC call: POST to /service/method with the given metadata.
fn call<'a>(host: &'a str, path: &'a str, headers: Vec<(&'a str, &'a str)>) -> Req<'a> {
    Req {
        method: Method::POST,
        host,
        path,
        headers,
    }
}

fn run_routes(routes: &[String]) -> Output {
    let mut yaml = vec![gateway("gw", WEB), SERVICES.to_string()];
    yaml.extend(routes.iter().cloned());
    run_yaml(&yaml.join("---\n"))
}

#[test]
fn a_grpc_route_on_our_gateway_is_accepted_attached_and_served() {
    let yaml = [
        gateway("gw", WEB),
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
        is("True", "Accepted")
    );
    assert_eq!(
        cond(s, "parent default/gw", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    // Conditions carry the route's generation.
    assert_eq!(parents[0]["conditions"][0]["observedGeneration"], 4);
    assert_eq!(attached(&out, "default", "gw", "web"), 1);
    // HTTP listeners take both route kinds by default.
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        listener_json(gw, "web")["supportedKinds"],
        json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ])
    );
    assert_eq!(
        hit(&out, 80, &call("h", "/echo.Echo/Ping", vec![])),
        "default/rpc#0"
    );
    assert_eq!(hit(&out, 80, &call("h", "/echo.Echo/Pong", vec![])), "404");
    assert_eq!(hit(&out, 80, &call("h", "/echo.Other/Ping", vec![])), "404");
    let e = route(&out, 80, &call("h", "/echo.Echo/Ping", vec![])).expect("entry");
    assert_eq!(e.action.route.kind, "GRPCRoute");
    // What /status and `weir check` see.
    let resource = s.to_resource_json();
    assert_eq!(resource["kind"], "GRPCRoute");
    assert_eq!(resource["apiVersion"], "gateway.networking.k8s.io/v1");
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}

#[test]
fn method_matches_follow_the_rules_for_omitted_service_or_method() {
    let out = run_routes(&[grpc_route_spec(
        "m",
        "2024-01-01T00:00:00Z",
        "  rules:
  - matches: [{method: {service: pkg.Svc, method: Get}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{method: {service: only.Service}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{method: {method: OnlyMethod}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{method: {type: RegularExpression, service: 're\\.v[0-9]+\\.Svc', method: 'List.*'}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{method: {type: RegularExpression, method: 'Del.*'}}]
    backendRefs: [{name: svc-a, port: 80}]",
    )]);
    let h = |path| hit(&out, 80, &call("h", path, vec![]));
    assert_eq!(h("/pkg.Svc/Get"), "default/m#0");
    // Exact means exact: case, prefixes and suffixes do not match.
    assert_eq!(h("/pkg.Svc/get"), "404");
    assert_eq!(h("/pkg.Svc/GetX"), "404");
    assert_eq!(h("/pkg.Svc/Get/x"), "404");
    // Service only: any method of that service, nothing else.
    assert_eq!(h("/only.Service/Anything"), "default/m#1");
    assert_eq!(h("/only.Service"), "404");
    assert_eq!(h("/only.ServiceX/A"), "404");
    // Method only: that method of any service.
    assert_eq!(h("/x.Y/OnlyMethod"), "default/m#2");
    assert_eq!(h("/x.Y/OnlyMethodX"), "404");
    // Regular expressions are anchored, per part.
    assert_eq!(h("/re.v2.Svc/ListAll"), "default/m#3");
    assert_eq!(h("/re.vX.Svc/ListAll"), "404");
    assert_eq!(h("/re.v2.Svc/XList"), "404");
    assert_eq!(h("/any.Svc/Delete"), "default/m#4");
}

#[test]
fn invalid_method_matches_are_not_accepted() {
    // What the CRD's validation would reject: the route is not served, Accepted=False with
    // UnsupportedValue naming the problem.
    for (name, method) in [
        ("bad-service", "{service: 'not a/service', method: Get}"),
        ("bad-method", "{service: a.B, method: 'Get-It'}"),
        ("neither", "{type: Exact}"),
        (
            "bad-regex",
            "{type: RegularExpression, service: '(unclosed'}",
        ),
    ] {
        let out = run_routes(&[grpc_route_spec(
            name,
            "2024-01-01T00:00:00Z",
            &format!(
                "  rules:
  - matches: [{{method: {method}}}]
    backendRefs: [{{name: svc-a, port: 80}}]"
            ),
        )]);
        assert_eq!(
            grpc_cond(&out, name, "parent default/gw", "Accepted"),
            is("False", "UnsupportedValue"),
            "{name}"
        );
        assert_eq!(attached(&out, "default", "gw", "web"), 0, "{name}");
    }
}

#[test]
fn header_matches_are_anded_within_a_match_and_ored_across_matches() {
    let out = run_routes(&[grpc_route_spec(
        "hdr",
        "2024-01-01T00:00:00Z",
        "  rules:
  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{headers: [{name: version, value: two}]}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, type: RegularExpression, value: 'gr[e]+n'}]}]
    backendRefs: [{name: svc-a, port: 80}]",
    )]);
    let h = |headers| hit(&out, 80, &call("h", "/a.B/C", headers));
    assert_eq!(h(vec![("version", "one")]), "default/hdr#0");
    assert_eq!(h(vec![("version", "two")]), "default/hdr#1");
    // More header matches win.
    assert_eq!(
        h(vec![("version", "two"), ("color", "orange")]),
        "default/hdr#2"
    );
    assert_eq!(h(vec![("color", "blue")]), "default/hdr#3");
    assert_eq!(h(vec![("color", "green")]), "default/hdr#3");
    assert_eq!(h(vec![("color", "orange")]), "404");
    assert_eq!(h(vec![]), "404");
}

#[test]
fn precedence_service_then_method_characters_then_headers_then_age_then_name() {
    let rule = |m: &str| {
        format!(
            "  rules:
  - matches: [{m}]
    backendRefs: [{{name: svc-a, port: 80}}]"
        )
    };
    // Longer service beats longer method: "a.Long" (6) with any method vs "a.B" (3) + "Method".
    let out = run_routes(&[
        grpc_route_spec("short-service", "2024-01-01T00:00:00Z", &rule("{method: {service: a.B, method: LongMethodName}}")),
        grpc_route_spec(
            "long-service",
            "2024-01-02T00:00:00Z",
            &rule("{method: {type: RegularExpression, service: 'a\\.B|a\\.LongerService', method: '.*'}}"),
        ),
    ]);
    assert_eq!(
        hit(&out, 80, &call("h", "/a.B/LongMethodName", vec![])),
        "default/long-service#0"
    );
    // Same service: more method characters win.
    let out = run_routes(&[
        grpc_route_spec(
            "service-only",
            "2024-01-01T00:00:00Z",
            &rule("{method: {service: a.B}}"),
        ),
        grpc_route_spec(
            "with-method",
            "2024-01-02T00:00:00Z",
            &rule("{method: {service: a.B, method: Get}}"),
        ),
    ]);
    assert_eq!(
        hit(&out, 80, &call("h", "/a.B/Get", vec![])),
        "default/with-method#0"
    );
    assert_eq!(
        hit(&out, 80, &call("h", "/a.B/Put", vec![])),
        "default/service-only#0"
    );
    // Same method match: more header matches win.
    let out = run_routes(&[
        grpc_route_spec(
            "plain",
            "2024-01-01T00:00:00Z",
            &rule("{method: {service: a.B, method: Get}}"),
        ),
        grpc_route_spec(
            "headers",
            "2024-01-02T00:00:00Z",
            &rule("{method: {service: a.B, method: Get}, headers: [{name: x, value: y}]}"),
        ),
    ]);
    assert_eq!(
        hit(&out, 80, &call("h", "/a.B/Get", vec![("x", "y")])),
        "default/headers#0"
    );
    assert_eq!(
        hit(&out, 80, &call("h", "/a.B/Get", vec![])),
        "default/plain#0"
    );
    // Full tie: the oldest route, then namespace/name.
    let m = rule("{method: {service: a.B, method: Get}}");
    let out = run_routes(&[
        grpc_route_spec("a-newer", "2024-01-02T00:00:00Z", &m),
        grpc_route_spec("z-older", "2024-01-01T00:00:00Z", &m),
    ]);
    assert_eq!(
        hit(&out, 80, &call("h", "/a.B/Get", vec![])),
        "default/z-older#0"
    );
    let out = run_routes(&[
        grpc_route_spec("b", "2024-01-01T00:00:00Z", &m),
        grpc_route_spec("a", "2024-01-01T00:00:00Z", &m),
    ]);
    assert_eq!(hit(&out, 80, &call("h", "/a.B/Get", vec![])), "default/a#0");
    // Within a route: the first matching rule.
    let out = run_routes(&[grpc_route_spec(
        "r",
        "2024-01-01T00:00:00Z",
        "  rules:
  - matches: [{method: {service: a.B, method: Get}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{method: {service: a.B, method: Get}}]
    backendRefs: [{name: svc-b, port: 80}]",
    )]);
    assert_eq!(hit(&out, 80, &call("h", "/a.B/Get", vec![])), "default/r#0");
    // Hostnames come first: an exact hostname beats a longer method match on a wildcard.
    let out = run_routes(&[
        grpc_route_spec(
            "exact-host",
            "2024-01-02T00:00:00Z",
            &format!(
                "  hostnames: [a.example.com]\n{}",
                rule("{method: {service: a.B}}")
            ),
        ),
        grpc_route_spec(
            "wild-host",
            "2024-01-01T00:00:00Z",
            &format!(
                "  hostnames: ['*.example.com']\n{}",
                rule("{method: {service: a.B, method: Get}}")
            ),
        ),
    ]);
    assert_eq!(
        hit(&out, 80, &call("a.example.com", "/a.B/Get", vec![])),
        "default/exact-host#0"
    );
    assert_eq!(
        hit(&out, 80, &call("b.example.com", "/a.B/Get", vec![])),
        "default/wild-host#0"
    );
}

#[test]
fn grpc_backends_are_weighted_and_always_spoken_to_over_h2c() {
    let out = run_routes(&[grpc_route_spec(
        "w",
        "2024-01-01T00:00:00Z",
        "  rules:
  - backendRefs:
    - {name: svc-a, port: 80, weight: 70}
    - {name: svc-b, port: 80, weight: 30}
    - {name: svc-a, port: 80, weight: 0}",
    )]);
    let req = call("h", "/any.Svc/Call", vec![]);
    assert_eq!(
        backends(&out, 80, &req),
        vec![
            ("default/svc-a:80".to_string(), 70),
            ("default/svc-b:80".to_string(), 30),
            ("default/svc-a:80".to_string(), 0)
        ]
    );
    let e = route(&out, 80, &req).expect("entry");
    assert_eq!(e.action.total_weight, 100);
    for b in e.action.backends.iter() {
        match &b.target {
            // svc-a's port has no appProtocol: gRPC still needs HTTP/2.
            BackendTarget::Upstream(u) => assert_eq!(u.protocol, AppProtocol::H2c, "{}", u.name),
            BackendTarget::Invalid(why) => panic!("unresolved: {why}"),
        }
    }
}

#[test]
fn header_modifier_filters_compile_and_unsupported_ones_answer_500() {
    let out = run_routes(&[grpc_route_spec(
        "f",
        "2024-01-01T00:00:00Z",
        "  rules:
  - matches: [{method: {service: a.B, method: Get}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-added, value: '1'}], remove: [x-gone]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-resp, value: '2'}]}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{method: {service: a.B, method: Put}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Thing, name: t}
    backendRefs: [{name: svc-a, port: 80}]",
    )]);
    let e = route(&out, 80, &call("h", "/a.B/Get", vec![])).expect("entry");
    assert_eq!(e.action.filters.len(), 2);
    // The rule with an unsupported filter still routes, to no backend (500), and the route
    // says so.
    let e = route(&out, 80, &call("h", "/a.B/Put", vec![])).expect("entry");
    assert_eq!(e.action.total_weight, 0);
    assert_eq!(
        grpc_cond(&out, "f", "parent default/gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        grpc_cond(&out, "f", "parent default/gw", "PartiallyInvalid"),
        is("True", "UnsupportedValue")
    );
}

#[test]
fn named_rules_reach_the_route_entry() {
    let out = run_routes(&[grpc_route_spec(
        "n",
        "2024-01-01T00:00:00Z",
        "  rules:
  - name: named-rule
    matches: [{method: {service: a.B, method: Get}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{method: {service: a.B, method: Put}}]
    backendRefs: [{name: svc-a, port: 80}]",
    )]);
    let e = route(&out, 80, &call("h", "/a.B/Get", vec![])).expect("entry");
    assert_eq!(e.action.route.rule_name.as_deref(), Some("named-rule"));
    let e = route(&out, 80, &call("h", "/a.B/Put", vec![])).expect("entry");
    assert_eq!(e.action.route.rule_name, None);
}

#[test]
fn listener_route_kinds_decide_which_routes_attach() {
    let listeners = "  - name: grpc-only
    port: 80
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: GRPCRoute}]}
  - name: http-only
    port: 8080
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: HTTPRoute}]}
  - name: bad
    port: 8081
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: GRPCRoute}, {kind: TcpRoute}]}";
    let http = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: grpc-only}]
  rules: [{backendRefs: [{name: svc-a, port: 80}]}]
";
    let yaml = [
        gateway("gw", listeners),
        SERVICES.to_string(),
        grpc_route(
            "rpc",
            "default",
            "[{name: gw, sectionName: grpc-only}]",
            SVC_A,
        ),
        grpc_route(
            "rpc-http",
            "default",
            "[{name: gw, sectionName: http-only}]",
            SVC_A,
        ),
        http.to_string(),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        listener_json(gw, "grpc-only")["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
    );
    assert_eq!(
        cond(gw, "listener grpc-only", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    // TCPRoute is not supported: InvalidRouteKinds, GRPCRoute still listed.
    assert_eq!(
        cond(gw, "listener bad", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(
        listener_json(gw, "bad")["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
    );
    assert_eq!(
        grpc_cond(&out, "rpc", "parent default/gw/grpc-only", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        grpc_cond(&out, "rpc-http", "parent default/gw/http-only", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        cond(
            status(&out, Kind::HttpRoute, "default", "web"),
            "parent default/gw/grpc-only",
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(attached(&out, "default", "gw", "grpc-only"), 1);
    assert_eq!(attached(&out, "default", "gw", "http-only"), 0);
}

#[test]
fn listener_hostnames_intersect_grpc_route_hostnames() {
    let listeners = "  - {name: bar, port: 80, protocol: HTTP, hostname: bar.com}
  - {name: wild, port: 80, protocol: HTTP, hostname: '*.bar.com'}";
    let yaml = [
        gateway("gw", listeners),
        SERVICES.to_string(),
        grpc_route_spec(
            "mismatch",
            "2024-01-01T00:00:00Z",
            "  hostnames: [foo.com]
  rules: [{backendRefs: [{name: svc-a, port: 80}]}]",
        ),
        grpc_route_spec(
            "sub",
            "2024-01-01T00:00:00Z",
            "  hostnames: [a.bar.com]
  rules: [{backendRefs: [{name: svc-a, port: 80}]}]",
        ),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    assert_eq!(
        grpc_cond(&out, "mismatch", "parent default/gw", "Accepted"),
        is("False", "NoMatchingListenerHostname")
    );
    assert_eq!(
        grpc_cond(&out, "sub", "parent default/gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(attached(&out, "default", "gw", "wild"), 1);
    assert_eq!(attached(&out, "default", "gw", "bar"), 0);
    assert_eq!(
        hit(&out, 80, &call("a.bar.com", "/x.Y/Z", vec![])),
        "default/sub#0"
    );
    assert_eq!(hit(&out, 80, &call("b.bar.com", "/x.Y/Z", vec![])), "404");
}

/// An HTTPRoute `name` in `default` on `gw` with hostnames and a creation time.
fn http_route(name: &str, created: &str, hostnames: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default, creationTimestamp: '{created}'}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: {hostnames}
  rules: [{{backendRefs: [{{name: svc-a, port: 80}}]}}]
"
    )
}

#[test]
fn an_http_route_and_a_grpc_route_with_intersecting_hostnames_keep_only_the_older() {
    let grpc = |name: &str, created: &str, hostnames: &str| {
        grpc_route_spec(
            name,
            created,
            &format!(
                "  hostnames: {hostnames}
  rules: [{{backendRefs: [{{name: svc-a, port: 80}}]}}]"
            ),
        )
    };
    // The HTTPRoute is older: the GRPCRoute on an intersecting hostname is rejected.
    let out = run_routes(&[
        http_route("web", "2024-01-01T00:00:00Z", "['*.example.com']"),
        grpc("rpc", "2024-01-02T00:00:00Z", "[a.example.com]"),
        grpc("other-host", "2024-01-02T00:00:00Z", "[other.com]"),
    ]);
    assert_eq!(
        cond(
            status(&out, Kind::HttpRoute, "default", "web"),
            "parent default/gw",
            "Accepted"
        ),
        is("True", "Accepted")
    );
    assert_eq!(
        grpc_cond(&out, "rpc", "parent default/gw", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    let message = &status(&out, Kind::GrpcRoute, "default", "rpc").condition_lines()[0].4;
    assert!(message.contains("HTTPRoute default/web"), "{message}");
    // Hostnames that do not intersect: both kinds are served on the listener.
    assert_eq!(
        grpc_cond(&out, "other-host", "parent default/gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(attached(&out, "default", "gw", "web"), 2);
    assert_eq!(
        hit(&out, 80, &call("a.example.com", "/x.Y/Z", vec![])),
        "default/web#0"
    );
    assert_eq!(
        hit(&out, 80, &call("other.com", "/x.Y/Z", vec![])),
        "default/other-host#0"
    );
    // The GRPCRoute is older (whatever the store order): the HTTPRoute is rejected.
    let out = run_routes(&[
        http_route("a-web", "2024-01-02T00:00:00Z", "[]"),
        grpc("z-rpc", "2024-01-01T00:00:00Z", "[]"),
    ]);
    assert_eq!(
        cond(
            status(&out, Kind::HttpRoute, "default", "a-web"),
            "parent default/gw",
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        grpc_cond(&out, "z-rpc", "parent default/gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(hit(&out, 80, &get("h", "/")), "default/z-rpc#0");
    // Same age: namespace/name decides.
    let out = run_routes(&[
        http_route("b-web", "2024-01-01T00:00:00Z", "[]"),
        grpc("a-rpc", "2024-01-01T00:00:00Z", "[]"),
    ]);
    assert_eq!(
        grpc_cond(&out, "a-rpc", "parent default/gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        cond(
            status(&out, Kind::HttpRoute, "default", "b-web"),
            "parent default/gw",
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
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
        is("True", "Accepted")
    );
    // Two parentRefs selecting one listener attach the route once.
    assert_eq!(attached(&out, "default", "gw", "web"), 1);
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
    // References decide ResolvedRefs only: every parent is accepted.
    assert_eq!(
        cond(
            status(&out, Kind::GrpcRoute, "granted", "granted"),
            "parent default/gw",
            "Accepted"
        ),
        is("True", "Accepted")
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
fn grpc_routes_from_the_conformance_suite_are_accepted_on_their_gateways() {
    let path = format!(
        "{}/../../e2e/conformance/upstream/v1.6.1/conformance",
        env!("CARGO_MANIFEST_DIR")
    );
    let read = |rel: &str| {
        std::fs::read_to_string(format!("{path}/{rel}"))
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
            .replace("{GATEWAY_CLASS_NAME}", "weir")
    };
    let ns = "gateway-conformance-infra";
    for (file, routes) in [
        (
            "grpcroute-exact-method-matching.yaml",
            vec!["exact-matching"],
        ),
        (
            "grpcroute-header-matching.yaml",
            vec!["grpc-header-matching"],
        ),
        ("grpcroute-named-rule.yaml", vec!["grpc-named-rules"]),
        ("grpcroute-weight.yaml", vec!["weighted-backends"]),
        (
            "grpcroute-listener-hostname-matching.yaml",
            vec!["backend-v1", "backend-v2", "backend-v3"],
        ),
    ] {
        let yaml = format!(
            "{}\n---\n{}",
            read("base/manifests.yaml"),
            read(&format!("tests/{file}"))
        );
        let out = super::conformance::run_cluster(&store_with_class(&yaml));
        for name in routes {
            let s = status(&out, Kind::GrpcRoute, ns, name);
            for (scope, type_, status, reason, message) in s.condition_lines() {
                if type_ == "Accepted" || type_ == "ResolvedRefs" {
                    assert_eq!(
                        (status.as_str(), reason.as_str()),
                        ("True", type_.as_str()),
                        "{file} {name} {scope}: {message}"
                    );
                }
            }
        }
    }
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
