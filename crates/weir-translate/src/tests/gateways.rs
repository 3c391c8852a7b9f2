//! GatewayClass and Gateway/listener conditions, certificates, conflicts, sockets.

use weir_store::{Kind, Location, ObjectKey, Rejection};

use super::*;

const HTTP_ROUTE_ANY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: svc-a, port: 80}]
";

#[test]
fn gateway_class_of_ours_is_accepted_others_ignored() {
    let out = run_yaml(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: default}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
",
    );
    let s = status(&out, Kind::GatewayClass, "", "weir");
    assert_eq!(cond(s, "", "Accepted"), is("True", "Accepted"));
    assert_eq!(s.status["conditions"][0]["observedGeneration"], 1);
    assert!(s.problems().is_empty());
    assert!(!has_status(&out, Kind::GatewayClass, "", "other"));
    assert!(!has_status(&out, Kind::Gateway, "default", "theirs"));
    assert!(
        out.snapshot.sockets.is_empty(),
        "other controllers' gateways are not served"
    );
}

#[test]
fn healthy_gateway_reports_all_listener_conditions_and_addresses() {
    let out = run_yaml(&gateway("gw", "  - {name: http, port: 80, protocol: HTTP}"));
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(cond(s, "", "Accepted"), is("True", "Accepted"));
    assert_eq!(cond(s, "", "Programmed"), is("True", "Programmed"));
    assert_eq!(cond(s, "listener http", "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(s, "listener http", "Programmed"),
        is("True", "Programmed")
    );
    assert_eq!(
        cond(s, "listener http", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(
        cond(s, "listener http", "Conflicted"),
        is("False", "NoConflicts")
    );
    for c in s.status["listeners"][0]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(c["observedGeneration"], 3, "{c}");
    }
    assert_eq!(s.status["addresses"][0]["value"], "127.0.0.1");
    assert_eq!(s.status["addresses"][0]["type"], "IPAddress");
    assert_eq!(
        listener_json(s, "http")["supportedKinds"],
        serde_json::json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ])
    );
    assert_eq!(s.generation, Some(3));
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    let socket = out.snapshot.socket(None, 80).expect("socket 80");
    assert!(!socket.tls);
    assert_eq!(socket.listeners.len(), 1);
    assert_eq!(&*socket.listeners[0].gateway, "default/gw");
}

#[test]
fn unsupported_protocol_listener_is_rejected_while_others_serve() {
    let mut yaml = gateway(
        "gw",
        "  - {name: http, port: 80, protocol: HTTP}\n  - {name: udp, port: 9000, protocol: SCTP}",
    );
    yaml.push_str(&format!("---\n{SERVICES}---\n{HTTP_ROUTE_ANY}"));
    let out = run_yaml(&yaml);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener udp", "Accepted"),
        is("False", "UnsupportedProtocol")
    );
    assert_eq!(
        cond(s, "listener udp", "Programmed"),
        is("False", "Invalid")
    );
    assert_eq!(
        listener_json(s, "udp")["supportedKinds"],
        serde_json::json!([])
    );
    assert_eq!(cond(s, "listener http", "Accepted"), is("True", "Accepted"));
    assert_eq!(cond(s, "", "Accepted"), is("True", "ListenersNotValid"));
    assert_eq!(cond(s, "", "Programmed"), is("True", "Programmed"));
    assert!(out.snapshot.socket(None, 9000).is_none());
    assert_eq!(hit(&out, 80, &get("x.com", "/")), "default/r#0");
    assert_eq!(attached(&out, "default", "gw", "http"), 1);
    assert_eq!(attached(&out, "default", "gw", "udp"), 0);
    assert!(!s.problems().is_empty());
}

#[test]
fn gateway_with_only_unsupported_listeners_is_not_accepted() {
    let out = run_yaml(&gateway("gw", "  - {name: udp, port: 53, protocol: SCTP}"));
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(cond(s, "", "Accepted"), is("False", "ListenersNotValid"));
    assert_eq!(cond(s, "", "Programmed"), is("False", "Invalid"));
    assert!(out.snapshot.sockets.is_empty());
}

#[test]
fn invalid_route_kinds_are_left_out_of_supported_kinds() {
    let mut yaml = gateway(
        "gw",
        "  - name: only-bad
    port: 80
    protocol: HTTP
    hostname: bad.example
    allowedRoutes: {kinds: [{kind: InvalidRoute}]}
  - name: mixed
    port: 80
    protocol: HTTP
    hostname: mixed.example
    allowedRoutes: {kinds: [{kind: InvalidRoute}, {kind: HTTPRoute}]}",
    );
    yaml.push_str(&format!("---\n{SERVICES}---\n{HTTP_ROUTE_ANY}"));
    let out = run_yaml(&yaml);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener only-bad", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(
        listener_json(s, "only-bad")["supportedKinds"],
        serde_json::json!([])
    );
    assert_eq!(
        cond(s, "listener mixed", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(
        listener_json(s, "mixed")["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    assert_eq!(attached(&out, "default", "gw", "only-bad"), 0);
    assert_eq!(attached(&out, "default", "gw", "mixed"), 1);
    assert_eq!(hit(&out, 80, &get("mixed.example", "/")), "default/r#0");
    assert_eq!(hit(&out, 80, &get("bad.example", "/")), "404");
}

fn https_gateway(cert_ref: &str) -> String {
    gateway(
        "gw",
        &format!(
            "  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example
    tls: {{certificateRefs: [{cert_ref}]}}
  - {{name: http, port: 80, protocol: HTTP}}"
        ),
    )
}

#[test]
fn https_listener_with_a_valid_certificate_serves_tls() {
    let mut store = store_with_class(&format!(
        "{}---\n{SERVICES}---\n{HTTP_ROUTE_ANY}",
        https_gateway("{name: cert}")
    ));
    add_tls_secret(&mut store, "default", "cert", &["secure.example"]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(
        cond(s, "listener https", "Programmed"),
        is("True", "Programmed")
    );
    let socket = out.snapshot.socket(None, 443).expect("socket 443");
    assert!(socket.tls);
    assert!(socket.certificate_for(Some("secure.example")).is_some());
    assert!(socket.default_cert.is_some());
    assert_eq!(hit(&out, 443, &get("secure.example", "/")), "default/r#0");
    assert_eq!(attached(&out, "default", "gw", "https"), 1);
}

#[test]
fn https_listener_with_a_missing_secret_is_not_programmed_but_accepted() {
    let out = run_yaml(&format!(
        "{}---\n{SERVICES}---\n{HTTP_ROUTE_ANY}",
        https_gateway("{name: nope}")
    ));
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "InvalidCertificateRef")
    );
    assert_eq!(
        cond(s, "listener https", "Programmed"),
        is("False", "Invalid")
    );
    assert!(out.snapshot.socket(None, 443).is_none());
    // Attachment does not depend on the listener's refs (ListenerStatus.attachedRoutes).
    assert_eq!(attached(&out, "default", "gw", "https"), 1);
    assert_eq!(cond(s, "", "Programmed"), is("True", "Programmed"));
}

#[test]
fn https_certificate_ref_kinds_must_be_core_secrets() {
    for r in [
        "{group: wrong.example, kind: Secret, name: cert}",
        "{kind: ConfigMap, name: cert}",
    ] {
        let mut store = store_with_class(&https_gateway(r));
        add_tls_secret(&mut store, "default", "cert", &["secure.example"]);
        let out = run(&store);
        let s = status(&out, Kind::Gateway, "default", "gw");
        assert_eq!(
            cond(s, "listener https", "ResolvedRefs"),
            is("False", "InvalidCertificateRef"),
            "{r}"
        );
    }
}

#[test]
fn https_cross_namespace_secret_needs_a_reference_grant() {
    let grant = "
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: '', kind: Secret, name: cert}]
";
    let gw = https_gateway("{name: cert, namespace: certs}");
    let mut store = store_with_class(&gw);
    add_tls_secret(&mut store, "certs", "cert", &["secure.example"]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    assert!(out.snapshot.socket(None, 443).is_none());

    let mut store = store_with_class(&format!("{gw}---\n{grant}"));
    add_tls_secret(&mut store, "certs", "cert", &["secure.example"]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert!(out.snapshot.socket(None, 443).is_some_and(|s| s.tls));

    // A grant naming another Secret does not count.
    let mut store = store_with_class(&format!(
        "{gw}---\n{}",
        grant.replace("name: cert}", "name: other}")
    ));
    add_tls_secret(&mut store, "certs", "cert", &["secure.example"]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
}

#[test]
fn https_secret_with_invalid_pem_is_an_invalid_certificate_ref() {
    let mut store = store_with_class(&https_gateway("{name: cert}"));
    add_secret(
        &mut store,
        "default",
        "cert",
        b"Hello world\n",
        b"Hello world\n",
    );
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "InvalidCertificateRef")
    );
    let (_, _, _, _, message) = s
        .condition_lines()
        .into_iter()
        .find(|l| l.0 == "listener https" && l.1 == "ResolvedRefs")
        .expect("condition");
    assert!(message.contains("default/cert"), "{message}");

    // A key that does not belong to the certificate is rejected too.
    let a = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).expect("rcgen");
    let b = rcgen::generate_simple_self_signed(vec!["b.example".to_string()]).expect("rcgen");
    let mut store = store_with_class(&https_gateway("{name: cert}"));
    add_secret(
        &mut store,
        "default",
        "cert",
        a.cert.pem().as_bytes(),
        b.signing_key.serialize_pem().as_bytes(),
    );
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "InvalidCertificateRef")
    );
}

#[test]
fn passthrough_on_https_is_unsupported() {
    let out = run_yaml(&gateway(
        "gw",
        "  - {name: https, port: 443, protocol: HTTPS, tls: {mode: Passthrough}}",
    ));
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener https", "Accepted"),
        is("False", "UnsupportedValue")
    );
}

#[test]
fn same_port_same_hostname_listeners_conflict_and_others_keep_serving() {
    let mut yaml = gateway(
        "gw",
        "  - {name: a, port: 80, protocol: HTTP, hostname: dup.example}
  - {name: b, port: 80, protocol: HTTP, hostname: dup.example}
  - {name: c, port: 80, protocol: HTTP, hostname: ok.example}",
    );
    yaml.push_str(&format!("---\n{SERVICES}---\n{HTTP_ROUTE_ANY}"));
    let out = run_yaml(&yaml);
    let s = status(&out, Kind::Gateway, "default", "gw");
    for l in ["listener a", "listener b"] {
        assert_eq!(cond(s, l, "Conflicted"), is("True", "HostnameConflict"));
        assert_eq!(cond(s, l, "Accepted"), is("False", "HostnameConflict"));
        assert_eq!(cond(s, l, "Programmed"), is("False", "HostnameConflict"));
    }
    assert_eq!(
        cond(s, "listener c", "Conflicted"),
        is("False", "NoConflicts")
    );
    assert_eq!(cond(s, "", "Accepted"), is("True", "ListenersNotValid"));
    assert_eq!(hit(&out, 80, &get("ok.example", "/")), "default/r#0");
    assert_eq!(hit(&out, 80, &get("dup.example", "/")), "404");
    assert_eq!(attached(&out, "default", "gw", "a"), 0);
}

#[test]
fn http_and_https_on_one_port_are_a_protocol_conflict() {
    let mut store = store_with_class(&gateway(
        "gw",
        "  - {name: plain, port: 8443, protocol: HTTP}
  - {name: secure, port: 8443, protocol: HTTPS, hostname: s.example, tls: {certificateRefs: [{name: cert}]}}
  - {name: other, port: 80, protocol: HTTP}",
    ));
    add_tls_secret(&mut store, "default", "cert", &["s.example"]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    for l in ["listener plain", "listener secure"] {
        assert_eq!(cond(s, l, "Conflicted"), is("True", "ProtocolConflict"));
        assert_eq!(cond(s, l, "Accepted"), is("False", "ProtocolConflict"));
    }
    assert!(out.snapshot.socket(None, 8443).is_none());
    assert!(out.snapshot.socket(None, 80).is_some());
}

/// Gateways sharing a socket: listeners with disjoint hostnames share it; the younger
/// Gateway's catch-all overlaps the older one's, so it is Conflicted (it would never get a
/// request) while its other listener keeps serving.
#[test]
fn gateways_sharing_a_port_share_a_socket_only_with_disjoint_hostnames() {
    let mut yaml = gateway(
        "gw",
        "  - {name: http, port: 80, protocol: HTTP, hostname: '*.example'}",
    );
    yaml.push_str("---\n");
    yaml.push_str(
        &gateway("gw2", "  - {name: http, port: 80, protocol: HTTP}\n  - {name: s, port: 80, protocol: HTTP, hostname: only2.other}")
            .replace("2024-01-01", "2024-06-01"),
    );
    yaml.push_str(&format!(
        "---\n{SERVICES}---\n{HTTP_ROUTE_ANY}---\n{}",
        HTTP_ROUTE_ANY
            .replace("name: r,", "name: r2,")
            .replace("name: gw}", "name: gw2}")
    ));
    let out = run_yaml(&yaml);
    let socket = out.snapshot.socket(None, 80).expect("socket");
    assert_eq!(socket.listeners.len(), 2);
    assert_eq!(hit(&out, 80, &get("any.example", "/")), "default/r#0");
    assert_eq!(hit(&out, 80, &get("only2.other", "/")), "default/r2#0");
    assert_eq!(hit(&out, 80, &get("else.other", "/")), "404");
    assert_eq!(out.snapshot.sockets.len(), 1);
    let s = status(&out, Kind::Gateway, "default", "gw2");
    assert_eq!(
        cond(s, "listener http", "Conflicted"),
        is("True", "HostnameConflict")
    );
    assert_eq!(
        cond(s, "listener s", "Conflicted"),
        is("False", "NoConflicts")
    );
}

#[test]
fn http_then_https_across_gateways_on_one_port_rejects_the_newer() {
    let mut yaml = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    yaml.push_str("---\n");
    yaml.push_str(
        &gateway(
            "gw2",
            "  - {name: https, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}",
        )
        .replace("2024-01-01", "2024-06-01"),
    );
    let mut store = store_with_class(&yaml);
    add_tls_secret(&mut store, "default", "cert", &["x.example"]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw2");
    assert_eq!(
        cond(s, "listener https", "Accepted"),
        is("False", "PortUnavailable")
    );
    assert!(out.snapshot.socket(None, 80).is_some_and(|s| !s.tls));
}

/// A Gateway with `spec.addresses` set to `addrs` (a YAML flow list body) and `listeners`.
fn gateway_with_addresses(name: &str, addrs: &str, listeners: &str) -> String {
    gateway(name, listeners).replace(
        "  gatewayClassName: weir",
        &format!("  gatewayClassName: weir\n  addresses: [{addrs}]"),
    )
}

fn status_addresses(s: &ObjectStatus) -> Vec<(String, String)> {
    s.status["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["type"].as_str().unwrap_or_default().to_string(),
                a["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn ip(s: &str) -> Option<std::net::IpAddr> {
    Some(s.parse().expect("ip"))
}

const HTTP_80: &str = "  - {name: http, port: 80, protocol: HTTP}";

/// gateway-static-addresses.go, first step: an address type we do not support makes the
/// Gateway not accepted, whatever the other addresses are; nothing is served.
#[test]
fn spec_address_of_unsupported_type_is_not_accepted() {
    for kind in ["test/fake-invalid-type", "Hostname", "NamedAddress"] {
        let yaml = gateway_with_addresses(
            "gw",
            &format!("{{type: {kind}, value: x.example}}, {{value: 127.0.0.2}}"),
            HTTP_80,
        );
        let out = run_yaml(&yaml);
        let s = status(&out, Kind::Gateway, "default", "gw");
        assert_eq!(
            cond(s, "", "Accepted"),
            is("False", "UnsupportedAddress"),
            "{kind}"
        );
        assert_eq!(cond(s, "", "Programmed"), is("False", "Invalid"), "{kind}");
        assert!(out.snapshot.sockets.is_empty(), "{kind}");
    }
}

/// gateway-invalid-parameters-ref.go (v1.6.1): a Gateway whose
/// spec.infrastructure.parametersRef Weir cannot use (it takes none per Gateway) is not
/// accepted, with InvalidParameters naming the reference, and nothing is served for it; a
/// Gateway without one, beside it, is unaffected.
#[test]
fn gateway_parameters_ref_is_invalid_parameters() {
    let with_params = |name: &str, group: &str, kind: &str| {
        gateway(name, HTTP_80).replace(
            "  gatewayClassName: weir\n",
            &format!(
                "  gatewayClassName: weir\n  infrastructure:\n    parametersRef: {{group: '{group}', kind: {kind}, name: params}}\n"
            ),
        )
    };
    for (group, kind) in [("invalid.io", "InvalidParameters"), ("", "ConfigMap")] {
        let yaml = format!(
            "{}\n---\n{}",
            with_params("gw", group, kind),
            gateway("plain", HTTP_80)
        );
        assert!(yaml.contains("parametersRef"), "{yaml}");
        let out = run_yaml(&yaml);
        let s = status(&out, Kind::Gateway, "default", "gw");
        assert_eq!(
            cond(s, "", "Accepted"),
            is("False", "InvalidParameters"),
            "{group}/{kind}"
        );
        let message = s
            .condition_lines()
            .into_iter()
            .find(|(scope, t, _, _, _)| scope.is_empty() && t == "Accepted")
            .map(|(_, _, _, _, message)| message)
            .unwrap_or_default();
        assert!(
            message.contains(kind) && message.contains("parametersRef"),
            "{message}"
        );
        assert_eq!(
            cond(s, "", "Programmed"),
            is("False", "Invalid"),
            "{group}/{kind}"
        );
        let plain = status(&out, Kind::Gateway, "default", "plain");
        assert_eq!(cond(plain, "", "Accepted"), is("True", "Accepted"));
        // Only the plain Gateway's listener is served.
        let served: Vec<_> = out
            .snapshot
            .sockets
            .iter()
            .flat_map(|s| s.listeners.iter().map(|l| l.gateway.to_string()))
            .collect();
        assert_eq!(served, ["default/plain"], "{group}/{kind}");
    }
}

/// gateway-static-addresses.go, second step: accepted, but an address that is not one of
/// this host's is AddressNotUsable and the Gateway is not programmed; status lists only the
/// usable address.
#[test]
fn spec_address_not_of_this_host_is_not_usable() {
    for bad in ["203.0.113.77", "not-an-ip"] {
        let yaml = gateway_with_addresses(
            "gw",
            &format!("{{type: IPAddress, value: {bad}}}, {{value: 127.0.0.2}}"),
            HTTP_80,
        );
        let out = run_yaml(&yaml);
        let s = status(&out, Kind::Gateway, "default", "gw");
        assert_eq!(cond(s, "", "Accepted"), is("True", "Accepted"), "{bad}");
        assert_eq!(
            cond(s, "", "Programmed"),
            is("False", "AddressNotUsable"),
            "{bad}"
        );
        assert_eq!(
            status_addresses(s),
            [("IPAddress".to_string(), "127.0.0.2".to_string())],
            "{bad}"
        );
        assert!(out.snapshot.sockets.is_empty(), "{bad}");
        assert!(!s.problems().is_empty());
    }
}

/// gateway-static-addresses.go, last step: a usable static address is where the listeners
/// are bound, and the only address in status.
#[test]
fn spec_address_of_this_host_gets_its_own_sockets() {
    let yaml = gateway_with_addresses("gw", "{type: IPAddress, value: 127.0.0.2}", HTTP_80);
    let out = run_yaml(&yaml);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(cond(s, "", "Accepted"), is("True", "Accepted"));
    assert_eq!(cond(s, "", "Programmed"), is("True", "Programmed"));
    assert_eq!(
        status_addresses(s),
        [("IPAddress".to_string(), "127.0.0.2".to_string())]
    );
    let addresses: Vec<_> = out
        .snapshot
        .sockets
        .iter()
        .map(|s| (s.address, s.port))
        .collect();
    assert_eq!(addresses, [(ip("127.0.0.2"), 80)]);
}

/// An IPAddress equal to the bind address shares the default socket; one without value
/// (gateway-optional-address-value.go) is given the bind address.
#[test]
fn spec_address_served_already_or_empty_uses_the_bind_address() {
    for (addrs, reported) in [
        ("{value: 127.0.0.1}", "127.0.0.1"),
        ("{type: IPAddress}", "127.0.0.1"),
    ] {
        let out = run_yaml(&gateway_with_addresses("gw", addrs, HTTP_80));
        let s = status(&out, Kind::Gateway, "default", "gw");
        assert_eq!(
            cond(s, "", "Programmed"),
            is("True", "Programmed"),
            "{addrs}"
        );
        assert_eq!(
            status_addresses(s),
            [("IPAddress".to_string(), reported.to_string())],
            "{addrs}"
        );
        let addresses: Vec<_> = out
            .snapshot
            .sockets
            .iter()
            .map(|s| (s.address, s.port))
            .collect();
        assert_eq!(addresses, [(None, 80)], "{addrs}");
    }
    // Both: the listeners are bound on each.
    let out = run_yaml(&gateway_with_addresses(
        "gw",
        "{type: IPAddress}, {value: '::1'}",
        HTTP_80,
    ));
    let addresses: Vec<_> = out
        .snapshot
        .sockets
        .iter()
        .map(|s| (s.address, s.port))
        .collect();
    assert_eq!(addresses, [(None, 80), (ip("::1"), 80)]);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(status_addresses(s).len(), 2);
}

/// Gateways on different addresses do not share sockets: the same port may be HTTP on one
/// and HTTPS on the other, and each Gateway's listeners see only their own hosts.
#[test]
fn gateways_on_different_addresses_do_not_clash() {
    let yaml = format!(
        "{}\n---\n{}",
        gateway("gw1", HTTP_80),
        gateway_with_addresses(
            "gw2",
            "{value: 127.0.0.2}",
            "  - {name: https, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}",
        ),
    );
    let mut store = store_with_class(&yaml);
    add_tls_secret(&mut store, "default", "cert", &["x.example"]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw2");
    assert_eq!(
        cond(s, "listener https", "Accepted"),
        is("True", "Accepted")
    );
    assert!(out.snapshot.socket(None, 80).is_some_and(|s| !s.tls));
    let own = out
        .snapshot
        .socket(ip("127.0.0.2"), 80)
        .expect("own socket");
    assert!(own.tls);
    assert_eq!(own.listeners.len(), 1);
    assert_eq!(&*own.listeners[0].gateway, "default/gw2");
}

#[test]
fn address_errors_know_their_reasons() {
    use crate::TranslateError as E;
    assert_eq!(
        E::UnsupportedAddress("Hostname".into()).reason(),
        "UnsupportedAddress"
    );
    assert_eq!(
        E::AddressNotUsable("10.0.0.1".into()).reason(),
        "AddressNotUsable"
    );
    assert_eq!(E::InvalidIpAddress("x".into()).reason(), "AddressNotUsable");
}

#[test]
fn rejected_manifest_is_reported_but_not_a_problem() {
    let mut store = store_with_class(&gateway("gw", "  - {name: http, port: 80, protocol: HTTP}"));
    store.rejected.insert(
        (Kind::Gateway, ObjectKey::new("default", "gw")),
        Rejection {
            location: Location {
                file: "conf/gw.yaml".into(),
                line: 7,
            },
            message: "unknown field `listenerz`".into(),
        },
    );
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "", crate::INVALID_MANIFEST),
        is("True", "ParseError")
    );
    let line = s
        .condition_lines()
        .into_iter()
        .find(|l| l.1 == crate::INVALID_MANIFEST)
        .expect("line");
    assert_eq!(
        line.4,
        "conf/gw.yaml:7: unknown field `listenerz`; serving the last good version"
    );
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}

#[test]
fn preserve_transition_times_keeps_unchanged_conditions() {
    let store = store_with_class(&gateway("gw", "  - {name: http, port: 80, protocol: HTTP}"));
    let old = run(&store);
    let addresses = vec![("IPAddress".to_string(), "127.0.0.1".to_string())];
    let later = Time("2025-02-02T00:00:00Z".parse().expect("time"));
    // Same store, later clock: every time is kept.
    let mut next = translate(&Input {
        store: &store,
        controller_name: CONTROLLER,
        now: later.clone(),
        gateway_addresses: &addresses,
        address_usable: &crate::tests::host_address,
        addressing: &crate::Addressing::Shared,
        rate_limit_redis: false,
    });
    crate::preserve_transition_times(&old.statuses, &mut next.statuses);
    assert_eq!(old.statuses, next.statuses);

    // A listener that changes state gets the new time; the others keep theirs.
    let changed = store_with_class(&gateway("gw", "  - {name: http, port: 80, protocol: SCTP}"));
    let mut next = translate(&Input {
        store: &changed,
        controller_name: CONTROLLER,
        now: later,
        gateway_addresses: &addresses,
        address_usable: &crate::tests::host_address,
        addressing: &crate::Addressing::Shared,
        rate_limit_redis: false,
    });
    crate::preserve_transition_times(&old.statuses, &mut next.statuses);
    let s = status(&next, Kind::Gateway, "default", "gw");
    let l = listener_json(s, "http");
    let time_of = |t: &str| {
        l["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["lastTransitionTime"].clone())
            .expect("condition")
    };
    assert_eq!(time_of("Accepted"), "2025-02-02T00:00:00Z");
    assert_eq!(time_of("Conflicted"), "2025-01-01T00:00:00Z");
}

#[test]
fn to_resource_json_has_identity_and_status() {
    let out = run_yaml(&gateway("gw", "  - {name: http, port: 80, protocol: HTTP}"));
    let s = status(&out, Kind::Gateway, "default", "gw");
    let j = s.to_resource_json();
    assert_eq!(j["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(j["kind"], "Gateway");
    assert_eq!(j["metadata"]["namespace"], "default");
    assert_eq!(j["metadata"]["name"], "gw");
    assert_eq!(j["metadata"]["generation"], 3);
    assert_eq!(j["metadata"]["creationTimestamp"], "2024-01-01T00:00:00Z");
    assert_eq!(j["status"], *s.status);
    let class = status(&out, Kind::GatewayClass, "", "weir").to_resource_json();
    assert!(class["metadata"].get("namespace").is_none());
}

#[test]
fn output_is_deterministic_and_sorted() {
    let mut yaml = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    yaml.push_str(&format!("---\n{SERVICES}---\n{HTTP_ROUTE_ANY}"));
    let store = store_with_class(&yaml);
    let a = run(&store);
    let b = run(&store);
    assert_eq!(a.statuses, b.statuses);
    let order: Vec<_> = a.statuses.iter().map(|s| (s.kind, s.key.clone())).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(order[0].0, Kind::GatewayClass);
}

#[test]
fn preserve_transition_times_matches_route_parents_by_parent_ref() {
    // A route with two parents; the second Gateway's listener then stops admitting it.
    let route = |allowed: &str| {
        [
            gateway("gw-a", "  - {name: http, port: 80, protocol: HTTP}"),
            gateway(
                "gw-b",
                &format!("  - {{name: http, port: 81, protocol: HTTP, allowedRoutes: {allowed}}}"),
            ),
            crate::tests::SERVICES.to_string(),
            "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default, generation: 1}
spec:
  parentRefs: [{name: gw-a}, {name: gw-b}]
  rules:
  - backendRefs: [{name: svc-a, port: 80}]
"
            .to_string(),
        ]
        .join("---\n")
    };
    let old = run(&store_with_class(&route("{namespaces: {from: Same}}")));
    let addresses = vec![("IPAddress".to_string(), "127.0.0.1".to_string())];
    let later = Time("2025-02-02T00:00:00Z".parse().expect("time"));
    let changed = store_with_class(&route("{kinds: [{kind: GRPCRoute}]}"));
    let mut next = translate(&Input {
        store: &changed,
        controller_name: CONTROLLER,
        now: later,
        gateway_addresses: &addresses,
        address_usable: &crate::tests::host_address,
        addressing: &crate::Addressing::Shared,
        rate_limit_redis: false,
    });
    // Reversed: the lookup must not depend on the order of the previous statuses.
    let mut previous = old.statuses.clone();
    previous.reverse();
    crate::preserve_transition_times(&previous, &mut next.statuses);
    let s = status(&next, Kind::HttpRoute, "default", "r");
    let time_of = |gw: &str, t: &str| {
        s.status["parents"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["parentRef"]["name"] == gw))
            .and_then(|p| p["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| (c["status"].clone(), c["lastTransitionTime"].clone()))
            .expect("condition")
    };
    assert_eq!(
        time_of("gw-a", "Accepted"),
        ("True".into(), "2025-01-01T00:00:00Z".into())
    );
    assert_eq!(
        time_of("gw-b", "Accepted"),
        ("False".into(), "2025-02-02T00:00:00Z".into())
    );
    assert_eq!(
        time_of("gw-b", "ResolvedRefs"),
        ("True".into(), "2025-01-01T00:00:00Z".into())
    );
}
