//! TCPRoute: TCP listener validity and kinds, attachment reasons, backend resolution
//! (ResolvedRefs reasons, ReferenceGrants from TCPRoute), weights, the oldest route serving a
//! listener, port sharing, ListenerSets with TCP listeners, and the TCP socket of the
//! snapshot. The ListenerSet cases load the v1.6.1 conformance manifests.

use weir_snapshot::BackendTarget;
use weir_store::Kind;

use super::conformance::{conformance, INFRA};
use super::*;

/// A TCPRoute `default/name` created at `created` with the given parentRefs and backendRefs
/// (YAML flow lists).
fn tcp_route(name: &str, created: &str, parents: &str, backends: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: {name}, namespace: default, generation: 2, creationTimestamp: '{created}'}}
spec:
  parentRefs: {parents}
  rules:
  - backendRefs: {backends}
"
    )
}

fn run_docs(docs: &[&str]) -> Output {
    run_yaml(&docs.join("\n---\n"))
}

/// Condition of a TCPRoute parent ("parent ns/gw[/section]").
fn tcp_cond(out: &Output, route: &str, gw: &str, type_: &str) -> (String, String) {
    let s = status(out, Kind::TcpRoute, "default", route);
    let prefix = format!("parent default/{gw}");
    s.condition_lines()
        .into_iter()
        .find(|(sc, t, _, _, _)| {
            (sc == &prefix || sc.starts_with(&format!("{prefix}/"))) && t == type_
        })
        .map(|(_, _, status, reason, _)| (status, reason))
        .unwrap_or_else(|| panic!("no {type_} for {prefix}: {:#?}", s.condition_lines()))
}

/// The route and weighted upstreams every connection to `port` takes.
fn tcp_target(out: &Output, port: u16) -> Option<(String, Vec<(String, u32)>)> {
    let socket = out.snapshot.socket(None, port)?;
    let route = socket.passthrough.as_ref()?.tcp_route()?;
    let backends = route
        .backends
        .iter()
        .map(|b| {
            let name = match &b.target {
                BackendTarget::Upstream(u) => u.name.to_string(),
                BackendTarget::Invalid(_) => "invalid".into(),
            };
            (name, b.weight)
        })
        .collect();
    Some((route.route.to_string(), backends))
}

fn kinds(s: &ObjectStatus, listener: &str) -> Vec<String> {
    listener_json(s, listener)["supportedKinds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| k["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

const TCP_GW: &str = "  - {name: tcp, port: 9000, protocol: TCP}";
const TO_GW: &str = "[{name: gw}]";
const SVC_A: &str = "[{name: svc-a, port: 80}]";

#[test]
fn a_tcp_listener_takes_tcproutes_and_forwards_to_their_backends() {
    let out = run_docs(&[
        &gateway("gw", TCP_GW),
        SERVICES,
        &tcp_route(
            "r",
            "2024-01-02T00:00:00Z",
            TO_GW,
            "[{name: svc-a, port: 80, weight: 3}, {name: svc-b, port: 80}]",
        ),
    ]);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(cond(gw, "listener tcp", "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(gw, "listener tcp", "Programmed"),
        is("True", "Programmed")
    );
    assert_eq!(
        cond(gw, "listener tcp", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(kinds(gw, "tcp"), ["TCPRoute"]);
    assert_eq!(attached(&out, "default", "gw", "tcp"), 1);
    assert_eq!(
        tcp_cond(&out, "r", "gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        tcp_cond(&out, "r", "gw", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let socket = out.snapshot.socket(None, 9000).expect("socket 9000");
    assert!(!socket.tls, "TCP sockets do not terminate TLS");
    assert_eq!(
        tcp_target(&out, 9000),
        Some((
            "default/r".into(),
            vec![
                ("default/svc-a:80".into(), 3),
                ("default/svc-b:80".into(), 1)
            ]
        ))
    );
    // Status carries the route's generation.
    let route = status(&out, Kind::TcpRoute, "default", "r");
    assert_eq!(route.generation, Some(2));
    assert!(route.problems().is_empty(), "{:?}", route.problems());
}

#[test]
fn a_tcp_listener_without_routes_serves_a_socket_that_closes_connections() {
    let out = run_docs(&[&gateway("gw", TCP_GW)]);
    let socket = out.snapshot.socket(None, 9000).expect("socket 9000");
    assert!(socket.passthrough.as_ref().is_some_and(|p| p.tcp));
    assert_eq!(tcp_target(&out, 9000), None);
}

#[test]
fn a_tcp_listener_rejects_other_route_kinds() {
    let out = run_docs(&[&gateway(
        "gw",
        "  - {name: tcp, port: 9000, protocol: TCP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TCPRoute}]}}
  - {name: http-only, port: 9001, protocol: TCP, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}",
    )]);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(gw, "listener tcp", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(kinds(gw, "tcp"), ["TCPRoute"]);
    assert_eq!(
        cond(gw, "listener http-only", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert!(kinds(gw, "http-only").is_empty());
}

#[test]
fn tcproutes_are_not_allowed_by_http_listeners_nor_httproutes_by_tcp_ones() {
    let out = run_docs(&[
        &gateway(
            "gw",
            "  - {name: http, port: 80, protocol: HTTP}\n  - {name: tcp, port: 9000, protocol: TCP}",
        ),
        SERVICES,
        &tcp_route(
            "to-http",
            "2024-01-02T00:00:00Z",
            "[{name: gw, sectionName: http}]",
            SVC_A,
        ),
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h, namespace: default, generation: 1}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules:
  - backendRefs: [{name: svc-a, port: 80}]
",
    ]);
    assert_eq!(
        tcp_cond(&out, "to-http", "gw", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        parent_cond(&out, ("default", "h"), ("default", "gw"), "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(attached(&out, "default", "gw", "http"), 0);
    assert_eq!(attached(&out, "default", "gw", "tcp"), 0);
    assert_eq!(tcp_target(&out, 9000), None);
}

#[test]
fn an_unknown_section_or_port_is_no_matching_parent() {
    let out = run_docs(&[
        &gateway("gw", TCP_GW),
        SERVICES,
        &tcp_route(
            "section",
            "2024-01-02T00:00:00Z",
            "[{name: gw, sectionName: nope}]",
            SVC_A,
        ),
        &tcp_route(
            "port",
            "2024-01-02T00:00:00Z",
            "[{name: gw, port: 9001}]",
            SVC_A,
        ),
        &tcp_route(
            "both",
            "2024-01-03T00:00:00Z",
            "[{name: gw, sectionName: tcp, port: 9000}]",
            SVC_A,
        ),
    ]);
    assert_eq!(
        tcp_cond(&out, "section", "gw", "Accepted"),
        is("False", "NoMatchingParent")
    );
    assert_eq!(
        tcp_cond(&out, "port", "gw", "Accepted"),
        is("False", "NoMatchingParent")
    );
    assert_eq!(
        tcp_cond(&out, "both", "gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(attached(&out, "default", "gw", "tcp"), 1);
}

#[test]
fn a_route_from_a_namespace_the_listener_does_not_allow_is_not_allowed_by_listeners() {
    let out = run_docs(&[
        &gateway(
            "gw",
            "  - {name: tcp, port: 9000, protocol: TCP, allowedRoutes: {namespaces: {from: Same}}}",
        ),
        "
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: far, namespace: other, generation: 1}
spec:
  parentRefs: [{name: gw, namespace: default}]
  rules:
  - backendRefs: [{name: svc-a, namespace: default, port: 80}]
",
    ]);
    let s = status(&out, Kind::TcpRoute, "other", "far");
    assert_eq!(
        cond(s, "parent default/gw", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(attached(&out, "default", "gw", "tcp"), 0);
}

#[test]
fn unresolved_backends_are_reported_and_the_route_still_attaches() {
    let out = run_docs(&[
        &gateway("gw", TCP_GW),
        SERVICES,
        &tcp_route(
            "missing",
            "2024-01-02T00:00:00Z",
            TO_GW,
            "[{name: nope, port: 80}]",
        ),
    ]);
    assert_eq!(
        tcp_cond(&out, "missing", "gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        tcp_cond(&out, "missing", "gw", "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    assert_eq!(
        tcp_target(&out, 9000),
        Some(("default/missing".into(), vec![("invalid".into(), 1)]))
    );

    let out = run_docs(&[
        &gateway("gw", TCP_GW),
        SERVICES,
        &tcp_route(
            "kind",
            "2024-01-02T00:00:00Z",
            TO_GW,
            "[{group: example.com, kind: Widget, name: svc-a, port: 80}]",
        ),
    ]);
    assert_eq!(
        tcp_cond(&out, "kind", "gw", "ResolvedRefs"),
        is("False", "InvalidKind")
    );
}

const OTHER_NS_SVC: &str = "
apiVersion: v1
kind: Service
metadata: {name: far-svc, namespace: other}
spec:
  ports:
  - {port: 7000, targetPort: 7000}
";

fn grant(from_kind: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g, namespace: other}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: default}}]
  to: [{{group: '', kind: Service}}]
"
    )
}

#[test]
fn a_cross_namespace_backend_needs_a_reference_grant_from_tcproute() {
    let route = tcp_route(
        "far",
        "2024-01-02T00:00:00Z",
        TO_GW,
        "[{name: far-svc, namespace: other, port: 7000}]",
    );
    let gw = gateway("gw", TCP_GW);
    for (grant, want) in [
        (String::new(), is("False", "RefNotPermitted")),
        (grant("TLSRoute"), is("False", "RefNotPermitted")),
        (grant("TCPRoute"), is("True", "ResolvedRefs")),
    ] {
        let out = run_docs(&[&gw, OTHER_NS_SVC, &route, &grant]);
        assert_eq!(tcp_cond(&out, "far", "gw", "ResolvedRefs"), want);
        assert_eq!(
            tcp_cond(&out, "far", "gw", "Accepted"),
            is("True", "Accepted")
        );
    }
}

#[test]
fn the_oldest_route_serves_a_listener_and_all_attach() {
    let out = run_docs(&[
        &gateway("gw", TCP_GW),
        SERVICES,
        &tcp_route("newer", "2024-01-03T00:00:00Z", TO_GW, SVC_A),
        &tcp_route(
            "older",
            "2024-01-02T00:00:00Z",
            TO_GW,
            "[{name: svc-b, port: 80}]",
        ),
    ]);
    assert_eq!(attached(&out, "default", "gw", "tcp"), 2);
    for r in ["newer", "older"] {
        assert_eq!(tcp_cond(&out, r, "gw", "Accepted"), is("True", "Accepted"));
    }
    assert_eq!(
        tcp_target(&out, 9000).map(|(route, _)| route).as_deref(),
        Some("default/older")
    );
}

#[test]
fn tcp_and_http_listeners_on_one_port_conflict() {
    let out = run_docs(&[&gateway(
        "gw",
        "  - {name: tcp, port: 80, protocol: TCP}\n  - {name: http, port: 80, protocol: HTTP}",
    )]);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    for l in ["listener tcp", "listener http"] {
        assert_eq!(cond(gw, l, "Conflicted"), is("True", "ProtocolConflict"));
        assert_eq!(cond(gw, l, "Accepted"), is("False", "ProtocolConflict"));
    }
    // Two TCP listeners on one port cannot be told apart either.
    let out = run_docs(&[&gateway(
        "gw",
        "  - {name: a, port: 9000, protocol: TCP}\n  - {name: b, port: 9000, protocol: TCP, hostname: ignored.example.com}",
    )]);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(gw, "listener a", "Conflicted"),
        is("True", "HostnameConflict")
    );
    assert_eq!(
        cond(gw, "listener b", "Conflicted"),
        is("True", "HostnameConflict")
    );
}

#[test]
fn a_later_gateways_tcp_listener_on_a_taken_port_is_port_unavailable() {
    let first = gateway("first", TCP_GW);
    let second = gateway("second", TCP_GW).replace("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z");
    let out = run_docs(&[&first, &second]);
    assert_eq!(
        cond(
            status(&out, Kind::Gateway, "default", "first"),
            "listener tcp",
            "Accepted"
        ),
        is("True", "Accepted")
    );
    assert_eq!(
        cond(
            status(&out, Kind::Gateway, "default", "second"),
            "listener tcp",
            "Accepted"
        ),
        is("False", "PortUnavailable")
    );
    let socket = out.snapshot.socket(None, 9000).expect("socket 9000");
    assert_eq!(socket.listeners.len(), 1);
}

#[test]
fn tcproutes_attach_to_tcp_listeners_of_a_listener_set() {
    let out = run_docs(&[
        "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default, generation: 1, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  gatewayClassName: weir
  allowedListeners: {namespaces: {from: Same}}
  listeners:
  - {name: main, port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: set, namespace: default, generation: 1, creationTimestamp: '2024-01-02T00:00:00Z'}
spec:
  parentRef: {name: gw}
  listeners:
  - {name: raw, port: 9000, protocol: TCP}
",
        SERVICES,
        &tcp_route(
            "via-set",
            "2024-01-03T00:00:00Z",
            "[{group: gateway.networking.k8s.io, kind: ListenerSet, name: set, sectionName: raw}]",
            SVC_A,
        ),
        &tcp_route("via-gw", "2024-01-03T00:00:00Z", TO_GW, SVC_A),
    ]);
    let set = status(&out, Kind::ListenerSet, "default", "set");
    assert_eq!(
        cond(set, "listener raw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(listener_json(set, "raw")["attachedRoutes"], 1);
    let s = status(&out, Kind::TcpRoute, "default", "via-set");
    assert_eq!(
        cond(s, "parent default/set/raw", "Accepted"),
        is("True", "Accepted")
    );
    // A Gateway parentRef does not reach the ListenerSet's listeners; the Gateway's own are
    // HTTP.
    assert_eq!(
        tcp_cond(&out, "via-gw", "gw", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        tcp_target(&out, 9000).map(|(route, _)| route).as_deref(),
        Some("default/via-set")
    );
}

/// ListenerSetProtocolConflict (v1.6.1): TCP listeners of ListenerSets on the Gateway's HTTP
/// port lose to the Gateway's listeners; the HTTP listeners beside them stay accepted.
#[test]
fn listener_set_protocol_conflict_manifest() {
    let out = conformance(&["listenerset-protocol-conflict.yaml"]);
    let gw = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-with-listenerset-protocol-conflict",
    );
    assert_eq!(cond(gw, "", "Accepted").0, "True");
    for l in [
        "listener gateway-listener",
        "listener protocol-conflict-with-gateway-listener",
    ] {
        assert_eq!(cond(gw, l, "Accepted"), is("True", "Accepted"));
        assert_eq!(cond(gw, l, "Conflicted"), is("False", "NoConflicts"));
    }
    assert_eq!(gw.status["attachedListenerSets"], 2);
    let set = |name: &str| status(&out, Kind::ListenerSet, INFRA, name);
    for (name, accepted, conflicted) in [
        (
            "listenerset-with-protocol-conflict-with-gateway-1",
            true,
            "protocol-conflict-with-gateway-listener",
        ),
        (
            "listenerset-with-protocol-conflict-with-gateway-2",
            false,
            "protocol-conflict-with-gateway-listener",
        ),
        (
            "listenerset-with-protocol-conflict-with-listener-set-1",
            true,
            "protocol-conflict-with-listener-set-listener",
        ),
        (
            "listenerset-with-protocol-conflict-with-listener-set-2",
            false,
            "protocol-conflict-with-listener-set-listener",
        ),
    ] {
        let s = set(name);
        let scope = format!("listener {conflicted}");
        assert_eq!(
            cond(s, &scope, "Conflicted"),
            is("True", "ProtocolConflict"),
            "{name}"
        );
        assert_eq!(
            cond(s, &scope, "Accepted"),
            is("False", "ProtocolConflict"),
            "{name}"
        );
        assert_eq!(cond(s, &scope, "Programmed").0, "False", "{name}");
        if accepted {
            assert_eq!(cond(s, "", "Accepted"), is("True", "Accepted"), "{name}");
            assert_eq!(
                cond(s, "", "Programmed"),
                is("True", "Programmed"),
                "{name}"
            );
        } else {
            assert_eq!(
                cond(s, "", "Accepted"),
                is("False", "ListenersNotValid"),
                "{name}"
            );
            assert_eq!(cond(s, "", "Programmed").0, "False", "{name}");
        }
    }
    let s = set("listenerset-with-protocol-conflict-with-gateway-1");
    for l in [
        "listener listener-set-1-listener",
        "listener protocol-conflict-with-listener-set-listener",
    ] {
        assert_eq!(cond(s, l, "Accepted"), is("True", "Accepted"));
        assert_eq!(cond(s, l, "Conflicted"), is("False", "NoConflicts"));
    }
    let s = set("listenerset-with-protocol-conflict-with-listener-set-1");
    assert_eq!(
        cond(s, "listener listener-set-2-listener", "Accepted"),
        is("True", "Accepted")
    );
}

/// ListenerSetAllowedRoutesSupportedKinds (v1.6.1): a TLS Passthrough listener of a
/// ListenerSet that allows only HTTPRoutes has ResolvedRefs=False InvalidRouteKinds.
#[test]
fn listener_set_allowed_routes_supported_kinds_manifest() {
    let out = conformance(&["listenerset-allowed-routes-supported-kinds.yaml"]);
    let gw = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-with-listener-sets-test-supported-route-kinds",
    );
    assert_eq!(cond(gw, "", "Accepted").0, "True");
    let s = status(
        &out,
        Kind::ListenerSet,
        INFRA,
        "listenerset-test-allowed-routes-supported-kinds",
    );
    let l = "listener listener-set-listener-allowed-routes-tls-only";
    assert_eq!(cond(s, l, "ResolvedRefs"), is("False", "InvalidRouteKinds"));
    assert!(kinds(s, "listener-set-listener-allowed-routes-tls-only").is_empty());
}
