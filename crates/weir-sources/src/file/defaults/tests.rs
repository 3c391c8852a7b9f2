//! Each default, asserted on the typed object a manifest turns into.

use std::path::Path;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_store::gw::gateways::{
    GatewayListenersAllowedRoutesNamespacesFrom as NamespacesFrom, GatewayListenersTlsMode,
};
use weir_store::gw::grpcroutes::{
    GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType,
};
use weir_store::gw::httproutes::{
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType as PathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use weir_store::{Gateway, GrpcRoute, HttpRoute, Object, GATEWAY_GROUP};

use crate::file::parse::{parse_file, Doc};

fn parse(text: &str) -> Object {
    let docs = parse_file(Path::new("test.yaml"), text).unwrap();
    match docs.as_slice() {
        [Doc::Object(doc)] => doc.object.clone(),
        other => panic!("expected one valid object, got {other:?}"),
    }
}

fn gateway(listeners: &str) -> Gateway {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g}}\n\
         spec:\n  gatewayClassName: weir\n  listeners:\n{listeners}"
    );
    match parse(&text) {
        Object::Gateway(gateway) => (*gateway).clone(),
        other => panic!("not a gateway: {other:?}"),
    }
}

fn route(spec: &str) -> HttpRoute {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n{spec}"
    );
    match parse(&text) {
        Object::HttpRoute(route) => (*route).clone(),
        other => panic!("not a route: {other:?}"),
    }
}

#[test]
fn listener_allowed_routes_default_to_the_same_namespace() {
    let gateway = gateway(
        "  - {name: a, port: 80, protocol: HTTP}
  - {name: b, port: 81, protocol: HTTP, allowedRoutes: {}}
  - name: c
    port: 82
    protocol: HTTP
    allowedRoutes:
      namespaces: {selector: {matchLabels: {team: x}}}
      kinds: [{kind: HTTPRoute}]
  - {name: d, port: 83, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
",
    );
    let from: Vec<_> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| {
            l.allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.from.clone())
        })
        .collect();
    assert_eq!(
        from,
        vec![
            Some(NamespacesFrom::Same),
            Some(NamespacesFrom::Same),
            Some(NamespacesFrom::Same),
            Some(NamespacesFrom::All)
        ]
    );
    let c = gateway.spec.listeners[2].allowed_routes.as_ref().unwrap();
    assert!(c.namespaces.as_ref().unwrap().selector.is_some());
    assert_eq!(
        c.kinds.as_ref().unwrap()[0].group.as_deref(),
        Some("gateway.networking.k8s.io")
    );
}

#[test]
fn listener_tls_defaults_to_terminate_with_secret_references() {
    let gateway = gateway(
        "  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs: [{name: cert}]
  - name: tls
    port: 8443
    protocol: TLS
    tls: {mode: Passthrough}
  - {name: http, port: 80, protocol: HTTP}
",
    );
    let https = gateway.spec.listeners[0].tls.as_ref().unwrap();
    assert_eq!(https.mode, Some(GatewayListenersTlsMode::Terminate));
    let reference = &https.certificate_refs.as_ref().unwrap()[0];
    assert_eq!(reference.group.as_deref(), Some(""));
    assert_eq!(reference.kind.as_deref(), Some("Secret"));
    let passthrough = gateway.spec.listeners[1].tls.as_ref().unwrap();
    assert_eq!(passthrough.mode, Some(GatewayListenersTlsMode::Passthrough));
    // No tls block is made up where there was none.
    assert_eq!(gateway.spec.listeners[2].tls, None);
}

#[test]
fn a_route_without_rules_matches_every_path() {
    let route = route("  parentRefs: [{name: g}]\n");
    let rules = route.spec.rules.unwrap();
    assert_eq!(rules.len(), 1);
    let matches = rules[0].matches.as_ref().unwrap();
    assert_eq!(matches.len(), 1);
    let path = matches[0].path.as_ref().unwrap();
    assert_eq!(path.r#type, Some(PathType::PathPrefix));
    assert_eq!(path.value.as_deref(), Some("/"));
}

#[test]
fn parent_refs_default_to_gateways() {
    let route = route("  parentRefs: [{name: g}, {name: s, kind: Service, group: \"\"}]\n");
    let parents = route.spec.parent_refs.unwrap();
    assert_eq!(
        parents[0].group.as_deref(),
        Some("gateway.networking.k8s.io")
    );
    assert_eq!(parents[0].kind.as_deref(), Some("Gateway"));
    assert_eq!(parents[1].group.as_deref(), Some(""));
    assert_eq!(parents[1].kind.as_deref(), Some("Service"));
}

#[test]
fn matches_paths_headers_and_query_params_get_their_defaults() {
    let route = route(
        "  rules:
  - backendRefs: [{name: a, port: 80}]
  - matches:
    - headers: [{name: x, value: y}, {name: z, value: w, type: RegularExpression}]
      queryParams: [{name: q, value: v}]
    - path: {value: /api}
    - path: {type: Exact}
    - path: {type: RegularExpression, value: /r.*}
",
    );
    let rules = route.spec.rules.unwrap();
    // A rule without matches gets the match-everything one.
    let first = rules[0].matches.as_ref().unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].path.as_ref().unwrap().value.as_deref(), Some("/"));
    let matches = rules[1].matches.as_ref().unwrap();
    let paths: Vec<_> = matches
        .iter()
        .map(|m| {
            let path = m.path.as_ref().unwrap();
            (path.r#type.clone().unwrap(), path.value.clone().unwrap())
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            (PathType::PathPrefix, "/".to_string()),
            (PathType::PathPrefix, "/api".to_string()),
            (PathType::Exact, "/".to_string()),
            (PathType::RegularExpression, "/r.*".to_string()),
        ]
    );
    let headers = matches[0].headers.as_ref().unwrap();
    assert_eq!(
        headers[0].r#type,
        Some(HttpRouteRulesMatchesHeadersType::Exact)
    );
    assert_eq!(
        headers[1].r#type,
        Some(HttpRouteRulesMatchesHeadersType::RegularExpression)
    );
    let query = matches[0].query_params.as_ref().unwrap();
    assert_eq!(
        query[0].r#type,
        Some(HttpRouteRulesMatchesQueryParamsType::Exact)
    );
}

#[test]
fn backend_refs_default_to_services_of_weight_one() {
    let route = route(
        "  rules:
  - backendRefs:
    - {name: a, port: 80}
    - {name: b, port: 80, weight: 0}
",
    );
    let backends = route.spec.rules.unwrap()[0].backend_refs.clone().unwrap();
    assert_eq!(backends[0].group.as_deref(), Some(""));
    assert_eq!(backends[0].kind.as_deref(), Some("Service"));
    assert_eq!(backends[0].weight, Some(1));
    assert_eq!(backends[1].weight, Some(0));
}

#[test]
fn filters_get_their_defaults() {
    let route = route(
        "  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https}
    - type: RequestMirror
      requestMirror:
        backendRef: {name: m, port: 80}
        fraction: {numerator: 5}
    backendRefs:
    - name: a
      port: 80
      filters:
      - type: RequestRedirect
        requestRedirect: {statusCode: 301}
",
    );
    let rule = &route.spec.rules.unwrap()[0];
    let filters = rule.filters.as_ref().unwrap();
    let redirect = filters[0].request_redirect.as_ref().unwrap();
    assert_eq!(redirect.status_code, Some(302));
    let mirror = filters[1].request_mirror.as_ref().unwrap();
    assert_eq!(mirror.backend_ref.kind.as_deref(), Some("Service"));
    assert_eq!(mirror.backend_ref.group.as_deref(), Some(""));
    assert_eq!(mirror.fraction.as_ref().unwrap().denominator, Some(100));
    let backend_filter = &rule.backend_refs.as_ref().unwrap()[0]
        .filters
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        backend_filter
            .request_redirect
            .as_ref()
            .unwrap()
            .status_code,
        Some(301)
    );
}

#[test]
fn explicit_nulls_are_defaulted_like_absent_fields() {
    let route = route("  parentRefs: [{name: g, kind: null}]\n  rules: null\n");
    assert_eq!(
        route.spec.parent_refs.unwrap()[0].kind.as_deref(),
        Some("Gateway")
    );
    assert_eq!(route.spec.rules.unwrap().len(), 1);
}

#[test]
fn v1beta1_objects_get_the_same_defaults() {
    let text = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n";
    let Object::HttpRoute(route) = parse(text) else {
        panic!("not a route");
    };
    assert_eq!(route.spec.rules.as_ref().unwrap().len(), 1);
}

#[test]
fn service_ports_get_protocol_and_target_port() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {port: 80}\n  - {port: 81, targetPort: http, protocol: UDP}\n";
    let Object::Service(service) = parse(text) else {
        panic!("not a service");
    };
    let spec = service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ports = spec.ports.as_ref().unwrap();
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(80)));
    assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
    assert_eq!(
        ports[1].target_port,
        Some(IntOrString::String("http".into()))
    );
}

#[test]
fn endpoint_slice_ports_and_secret_type() {
    let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 8080}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
    let docs = parse_file(Path::new("test.yaml"), text).unwrap();
    let [Doc::Object(slice), Doc::Object(secret)] = docs.as_slice() else {
        panic!("expected two objects: {docs:?}");
    };
    let Object::EndpointSlice(slice) = &slice.object else {
        panic!("not a slice");
    };
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.name.as_deref(), Some(""));
    let Object::Secret(secret) = &secret.object else {
        panic!("not a secret");
    };
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
}

fn grpc_route(spec: &str) -> GrpcRoute {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: r}}\nspec:\n{spec}"
    );
    match parse(&text) {
        Object::GrpcRoute(route) => (*route).clone(),
        other => panic!("not a GRPCRoute: {other:?}"),
    }
}

#[test]
fn grpc_routes_get_the_defaults_of_their_crd() {
    let route = grpc_route(
        "  parentRefs: [{name: g}, {name: l, kind: ListenerSet, sectionName: s}]
  rules:
  - matches:
    - method: {service: echo.Echo, method: Ping}
      headers: [{name: a, value: b}, {name: c, value: d, type: RegularExpression}]
    - {}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: m, port: 80}
        fraction: {numerator: 5}
    backendRefs:
    - name: a
      port: 80
      filters:
      - type: RequestMirror
        requestMirror: {backendRef: {name: m, port: 80}}
    - {name: b, port: 80, weight: 0}
  - {}
",
    );
    let parents = route.spec.parent_refs.unwrap();
    assert_eq!(parents[0].group.as_deref(), Some(GATEWAY_GROUP));
    assert_eq!(parents[0].kind.as_deref(), Some("Gateway"));
    assert_eq!(parents[1].kind.as_deref(), Some("ListenerSet"), "kept");
    let rules = route.spec.rules.unwrap();
    let matches = rules[0].matches.as_ref().unwrap();
    let method = matches[0].method.as_ref().unwrap();
    assert_eq!(method.r#type, Some(GrpcRouteRulesMatchesMethodType::Exact));
    let headers = matches[0].headers.as_ref().unwrap();
    assert_eq!(
        headers[0].r#type,
        Some(GrpcRouteRulesMatchesHeadersType::Exact)
    );
    assert_eq!(
        headers[1].r#type,
        Some(GrpcRouteRulesMatchesHeadersType::RegularExpression)
    );
    // Unlike HTTPRoute, the CRD gives an empty match no method or path default.
    assert!(matches[1].method.is_none() && matches[1].headers.is_none());
    let mirror = rules[0].filters.as_ref().unwrap()[0]
        .request_mirror
        .as_ref()
        .unwrap();
    assert_eq!(mirror.backend_ref.group.as_deref(), Some(""));
    assert_eq!(mirror.backend_ref.kind.as_deref(), Some("Service"));
    assert_eq!(mirror.fraction.as_ref().unwrap().denominator, Some(100));
    let backends = rules[0].backend_refs.as_ref().unwrap();
    assert_eq!(backends[0].group.as_deref(), Some(""));
    assert_eq!(backends[0].kind.as_deref(), Some("Service"));
    assert_eq!(backends[0].weight, Some(1));
    assert_eq!(backends[1].weight, Some(0));
    let backend_mirror = backends[0].filters.as_ref().unwrap()[0]
        .request_mirror
        .as_ref()
        .unwrap();
    assert_eq!(backend_mirror.backend_ref.kind.as_deref(), Some("Service"));
    // A rule without matches or backends gets none: GRPCRoute has no rule-level defaults.
    assert!(rules[1].matches.is_none() && rules[1].backend_refs.is_none());
}

#[test]
fn grpc_routes_without_rules_stay_without_rules_and_lose_their_status() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: r}\n\
                spec: {parentRefs: [{name: g}]}\n\
                status: {parents: [{controllerName: x, parentRef: {name: g}, conditions: []}]}\n";
    let Object::GrpcRoute(route) = parse(text) else {
        panic!("not a GRPCRoute");
    };
    assert!(route.spec.rules.is_none());
    assert!(route.status.is_none(), "status is a subresource");
    assert_eq!(route.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn grpc_routes_are_read_only_in_v1() {
    let text = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: GRPCRoute\nmetadata: {name: r}\nspec: {}\n";
    let docs = parse_file(Path::new("test.yaml"), text).unwrap();
    assert!(
        docs.is_empty(),
        "the v1.6.1 CRD serves GRPCRoute only in v1"
    );
}

#[test]
fn listener_set_defaults_parent_ref_and_listeners_like_a_gateway() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {name: s}\n\
                spec:\n  parentRef: {name: g}\n  listeners:\n  \
                - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}\n\
                status: {conditions: []}\n";
    let Object::ListenerSet(set) = parse(text) else {
        panic!("not a ListenerSet");
    };
    assert_eq!(set.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(set.spec.parent_ref.group.as_deref(), Some(GATEWAY_GROUP));
    assert_eq!(set.spec.parent_ref.kind.as_deref(), Some("Gateway"));
    let l = &set.spec.listeners[0];
    let from = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_ref());
    assert_eq!(
        serde_json::to_value(from).unwrap(),
        serde_json::json!("Same")
    );
    let tls = l.tls.as_ref().unwrap();
    assert_eq!(
        serde_json::to_value(&tls.mode).unwrap(),
        serde_json::json!("Terminate")
    );
    let cert = &tls.certificate_refs.as_ref().unwrap()[0];
    assert_eq!(cert.kind.as_deref(), Some("Secret"));
    assert!(set.status.is_none());
}

#[test]
fn tls_and_tcp_routes_get_parent_and_backend_ref_defaults() {
    for (version, kind) in [
        ("v1", "TCPRoute"),
        ("v1alpha2", "TCPRoute"),
        ("v1", "TLSRoute"),
        ("v1", "UDPRoute"),
        ("v1alpha2", "UDPRoute"),
    ] {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\nmetadata: {{name: r}}\n\
             spec:\n  hostnames: [a.example]\n  parentRefs: [{{name: g, sectionName: tcp}}, {{name: s, kind: ListenerSet}}]\n  \
             rules: [{{backendRefs: [{{name: a, port: 3000}}, {{name: b, port: 3000, weight: 0}}]}}]\n"
        );
        let (parents, backends) = match parse(&text) {
            Object::TcpRoute(r) => (
                serde_json::to_value(&r.spec.parent_refs).unwrap(),
                serde_json::to_value(&r.spec.rules[0].backend_refs).unwrap(),
            ),
            Object::TlsRoute(r) => (
                serde_json::to_value(&r.spec.parent_refs).unwrap(),
                serde_json::to_value(&r.spec.rules[0].backend_refs).unwrap(),
            ),
            Object::UdpRoute(r) => (
                serde_json::to_value(&r.spec.parent_refs).unwrap(),
                serde_json::to_value(&r.spec.rules[0].backend_refs).unwrap(),
            ),
            other => panic!("{version} {kind}: read as {:?}", other.kind()),
        };
        assert_eq!(
            parents[0]["group"], "gateway.networking.k8s.io",
            "{version} {kind}"
        );
        assert_eq!(parents[0]["kind"], "Gateway", "{version} {kind}");
        assert_eq!(
            parents[1]["kind"], "ListenerSet",
            "{version} {kind}: given, kept"
        );
        assert_eq!(backends[0]["group"], "", "{version} {kind}");
        assert_eq!(backends[0]["kind"], "Service", "{version} {kind}");
        assert_eq!(backends[0]["weight"], 1, "{version} {kind}");
        assert_eq!(backends[1]["weight"], 0, "{version} {kind}: given, kept");
    }
}
