//! UDPRoute: UDP listeners (their kinds, own sockets beside TCP ones on one port number),
//! attachment (sectionName, port, every listener, NotAllowedByListeners on other
//! protocols), backend resolution (BackendNotFound, RefNotPermitted, ReferenceGrants from
//! UDPRoute), weights and the oldest route serving a listener.

use weir_snapshot::BackendTarget;
use weir_store::Kind;

use super::*;

fn udp_route(name: &str, created: &str, parents: &str, backends: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {{name: {name}, namespace: default, generation: 3, creationTimestamp: '{created}'}}
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

fn udp_cond(out: &Output, route: &str, gw: &str, type_: &str) -> (String, String) {
    let s = status(out, Kind::UdpRoute, "default", route);
    let prefix = format!("parent default/{gw}");
    s.condition_lines()
        .into_iter()
        .find(|(sc, t, _, _, _)| {
            (sc == &prefix || sc.starts_with(&format!("{prefix}/"))) && t == type_
        })
        .map(|(_, _, status, reason, _)| (status, reason))
        .unwrap_or_else(|| panic!("no {type_} for {prefix}: {:#?}", s.condition_lines()))
}

/// The route and weighted upstreams every new flow to UDP `port` takes.
fn udp_target(out: &Output, port: u16) -> Option<(String, Vec<(String, u32)>)> {
    let socket = out.snapshot.udp_socket(None, port)?;
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

const UDP_GW: &str = "  - {name: udp, port: 5300, protocol: UDP}";
const TO_GW: &str = "[{name: gw}]";

#[test]
fn a_udp_listener_takes_udproutes_with_weighted_backends_on_a_udp_socket() {
    let out = run_docs(&[
        &gateway("gw", UDP_GW),
        SERVICES,
        &udp_route(
            "r",
            "2024-01-02T00:00:00Z",
            TO_GW,
            "[{name: svc-a, port: 80, weight: 7}, {name: svc-b, port: 80, weight: 3}]",
        ),
    ]);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(cond(gw, "listener udp", "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(gw, "listener udp", "Programmed"),
        is("True", "Programmed")
    );
    assert_eq!(kinds(gw, "udp"), ["UDPRoute"]);
    assert_eq!(attached(&out, "default", "gw", "udp"), 1);
    assert_eq!(
        udp_cond(&out, "r", "gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        udp_cond(&out, "r", "gw", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    // A UDP socket, not a TCP one.
    assert!(out.snapshot.socket(None, 5300).is_none());
    assert!(out.snapshot.udp_socket(None, 5300).is_some());
    assert_eq!(
        udp_target(&out, 5300),
        Some((
            "default/r".into(),
            vec![
                ("default/svc-a:80".into(), 7),
                ("default/svc-b:80".into(), 3)
            ]
        ))
    );
    let route = status(&out, Kind::UdpRoute, "default", "r");
    assert_eq!(route.generation, Some(3));
    assert!(route.problems().is_empty(), "{:?}", route.problems());
}

#[test]
fn udp_and_tcp_listeners_share_a_port_number_without_conflict() {
    let out = run_docs(&[
        &gateway(
            "gw",
            "  - {name: udp, port: 9000, protocol: UDP}\n  - {name: tcp, port: 9000, protocol: TCP}",
        ),
        SERVICES,
        &udp_route("u", "2024-01-02T00:00:00Z", "[{name: gw, sectionName: udp}]", "[{name: svc-a, port: 80}]"),
    ]);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    for l in ["listener udp", "listener tcp"] {
        assert_eq!(cond(gw, l, "Accepted"), is("True", "Accepted"), "{l}");
        assert_eq!(cond(gw, l, "Conflicted"), is("False", "NoConflicts"), "{l}");
    }
    assert!(out.snapshot.socket(None, 9000).is_some());
    assert!(out.snapshot.udp_socket(None, 9000).is_some());
    assert_eq!(
        udp_target(&out, 9000).map(|(r, _)| r).as_deref(),
        Some("default/u")
    );
    // Two UDP listeners on one port do conflict (nothing tells their datagrams apart).
    let out = run_docs(&[&gateway(
        "gw",
        "  - {name: a, port: 9000, protocol: UDP}\n  - {name: b, port: 9000, protocol: UDP}",
    )]);
    let gw = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(cond(gw, "listener a", "Conflicted").0, "True");
}

#[test]
fn parent_refs_select_by_section_port_or_every_udp_listener() {
    let gw = gateway(
        "gw",
        "  - {name: u1, port: 5301, protocol: UDP}\n  - {name: u2, port: 5302, protocol: UDP}\n  - {name: h, port: 80, protocol: HTTP}",
    );
    let out = run_docs(&[
        &gw,
        SERVICES,
        &udp_route(
            "all",
            "2024-01-02T00:00:00Z",
            TO_GW,
            "[{name: svc-a, port: 80}]",
        ),
        &udp_route(
            "by-port",
            "2024-01-03T00:00:00Z",
            "[{name: gw, port: 5302}]",
            "[{name: svc-b, port: 80}]",
        ),
        &udp_route(
            "nope",
            "2024-01-03T00:00:00Z",
            "[{name: gw, sectionName: h}]",
            "[{name: svc-b, port: 80}]",
        ),
        &udp_route(
            "none",
            "2024-01-03T00:00:00Z",
            "[{name: gw, port: 9999}]",
            "[{name: svc-b, port: 80}]",
        ),
    ]);
    assert_eq!(attached(&out, "default", "gw", "u1"), 1);
    assert_eq!(attached(&out, "default", "gw", "u2"), 2);
    assert_eq!(attached(&out, "default", "gw", "h"), 0);
    assert_eq!(
        udp_cond(&out, "all", "gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        udp_cond(&out, "by-port", "gw", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        udp_cond(&out, "nope", "gw", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        udp_cond(&out, "none", "gw", "Accepted"),
        is("False", "NoMatchingParent")
    );
    // The oldest route serves a listener.
    assert_eq!(
        udp_target(&out, 5302).map(|(r, _)| r).as_deref(),
        Some("default/all")
    );
}

#[test]
fn a_udproute_on_a_tls_only_gateway_is_not_allowed_by_listeners() {
    let out = run_docs(&[
        &gateway(
            "gw",
            "  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}",
        ),
        SERVICES,
        &udp_route(
            "r",
            "2024-01-02T00:00:00Z",
            TO_GW,
            "[{name: svc-a, port: 80}]",
        ),
    ]);
    assert_eq!(
        udp_cond(&out, "r", "gw", "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(attached(&out, "default", "gw", "tls"), 0);
}

const OTHER_NS_SVC: &str = "
apiVersion: v1
kind: Service
metadata: {name: far-svc, namespace: other}
spec:
  ports:
  - {port: 7000, targetPort: 7000, protocol: UDP}
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
fn backends_resolve_with_reference_grants_from_udproute() {
    let route = udp_route(
        "far",
        "2024-01-02T00:00:00Z",
        TO_GW,
        "[{name: far-svc, namespace: other, port: 7000}]",
    );
    let gw = gateway("gw", UDP_GW);
    for (grant, want) in [
        (String::new(), is("False", "RefNotPermitted")),
        (grant("TCPRoute"), is("False", "RefNotPermitted")),
        (grant("UDPRoute"), is("True", "ResolvedRefs")),
    ] {
        let out = run_docs(&[&gw, OTHER_NS_SVC, &route, &grant]);
        assert_eq!(udp_cond(&out, "far", "gw", "ResolvedRefs"), want);
        assert_eq!(
            udp_cond(&out, "far", "gw", "Accepted"),
            is("True", "Accepted")
        );
    }
    let missing = udp_route(
        "m",
        "2024-01-02T00:00:00Z",
        TO_GW,
        "[{name: nothing, port: 53}]",
    );
    let out = run_docs(&[&gw, &missing]);
    assert_eq!(
        udp_cond(&out, "m", "gw", "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    assert_eq!(
        udp_cond(&out, "m", "gw", "Accepted"),
        is("True", "Accepted")
    );
}
