//! TLSRoute (passthrough): listener validity, attachment reasons, backend resolution and the
//! passthrough section of the snapshot. The conformance cases load the v1.6.1 manifests and
//! assert what the official tests assert.

use weir_snapshot::BackendTarget;
use weir_store::Kind;

use super::conformance::{conformance, conformance_store, gw_socket, run_cluster, INFRA};
use super::*;

/// Condition of a TLSRoute parent ("parent ns/gw").
fn tls_parent_cond(out: &Output, route: &str, gw: &str, type_: &str) -> (String, String) {
    let s = status(out, Kind::TlsRoute, INFRA, route);
    let prefix = format!("parent {INFRA}/{gw}");
    s.condition_lines()
        .into_iter()
        .find(|(sc, t, _, _, _)| {
            (sc == &prefix || sc.starts_with(&format!("{prefix}/"))) && t == type_
        })
        .map(|(_, _, status, reason, _)| (status, reason))
        .unwrap_or_else(|| panic!("no {type_} for {prefix}: {:#?}", s.condition_lines()))
}

fn kinds(out: &Output, gw: &str, listener: &str) -> Vec<String> {
    let s = status(out, Kind::Gateway, INFRA, gw);
    listener_json(s, listener)["supportedKinds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| k["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The upstream name a passthrough connection with this SNI reaches on `port`, at the
/// first address (each Gateway its own, as in a cluster) that has a route for it.
fn passthrough_hit(out: &Output, port: u16, sni: &str) -> Option<String> {
    out.snapshot
        .sockets
        .iter()
        .filter(|s| s.port == port)
        .find_map(|socket| {
            let passthrough = socket.passthrough.as_ref()?;
            let listener = *socket.listener_index.candidates(sni).next()?;
            let route = passthrough.route_for(listener, sni)?;
            Some(match &route.backends.first()?.target {
                BackendTarget::Upstream(u) => u.name.to_string(),
                BackendTarget::Invalid(why) => format!("invalid: {why}"),
            })
        })
}

#[test]
fn simple_same_namespace_is_accepted_and_routed_by_sni() {
    let out = conformance(&["tlsroute-simple-same-namespace.yaml"]);
    let gw = status(&out, Kind::Gateway, INFRA, "gateway-tlsroute");
    assert_eq!(
        cond(gw, "listener https", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        cond(gw, "listener https", "Programmed"),
        is("True", "Programmed")
    );
    assert_eq!(kinds(&out, "gateway-tlsroute", "https"), ["TLSRoute"]);
    assert_eq!(attached(&out, INFRA, "gateway-tlsroute", "https"), 1);
    let route = "gateway-conformance-infra-test";
    assert_eq!(
        tls_parent_cond(&out, route, "gateway-tlsroute", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        tls_parent_cond(&out, route, "gateway-tlsroute", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let socket = gw_socket(&out, "gateway-tlsroute", 443).expect("socket 443");
    assert!(!socket.tls, "passthrough sockets do not terminate TLS");
    assert_eq!(
        passthrough_hit(&out, 443, "abc.example.com").as_deref(),
        Some("gateway-conformance-infra/tcp-backend:8443")
    );
    // The route's hostname is abc.example.com only; the listener's *.example.com admits
    // other names, but no route serves them.
    assert_eq!(passthrough_hit(&out, 443, "other.example.com"), None);
    assert_eq!(passthrough_hit(&out, 443, "abc.example.org"), None);
}

#[test]
fn hostnames_intersect_like_httproute_hostnames() {
    let out = conformance(&["tlsroute-hostname-intersection.yaml"]);
    for (route, gw) in [
        (
            "tlsroute-more-specific-wc-hostname-x-1",
            "gw-tlsroute-exact-hostname-x-1",
        ),
        (
            "tlsroute-exact-hostname-x-2",
            "gw-tlsroute-more-specific-wc-hostname-x-2",
        ),
        (
            "tlsroute-less-specific-wc-hostname-x-2",
            "gw-tlsroute-more-specific-wc-hostname-x-2",
        ),
        (
            "tlsroute-exact-hostname-x-3",
            "gw-tlsroute-less-specific-wc-hostname-x-3",
        ),
        (
            "tlsroute-more-specific-wc-hostname-x-3",
            "gw-tlsroute-less-specific-wc-hostname-x-3",
        ),
        (
            "tlsroute-exact-hostname-x-4",
            "gw-tlsroute-empty-hostname-x-4",
        ),
        (
            "tlsroute-less-specific-wc-hostname-x-4",
            "gw-tlsroute-empty-hostname-x-4",
        ),
    ] {
        assert_eq!(
            tls_parent_cond(&out, route, gw, "Accepted"),
            is("True", "Accepted"),
            "{route}"
        );
    }
    // Each Gateway has its own address, as in a cluster.
    assert_eq!(
        passthrough_hit(&out, 443, "abc.example.com").as_deref(),
        Some("gateway-conformance-infra/tls-backend:443")
    );
}

#[test]
fn a_more_specific_wildcard_listener_narrows_a_less_specific_route() {
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        gateway(
            "gw",
            "  - {name: tls, port: 443, protocol: TLS, hostname: '*.example.com', tls: {mode: Passthrough}}"
        ),
        SERVICES,
        "
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: wide, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: ['*.com']
  rules: [{backendRefs: [{name: svc-a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: exact, namespace: default, creationTimestamp: '2024-01-02T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: svc-b, port: 80}]}]
"
    );
    let out = run_yaml(&yaml);
    assert_eq!(
        passthrough_hit(&out, 443, "abc.example.com").as_deref(),
        Some("default/svc-b:80")
    );
    assert_eq!(
        passthrough_hit(&out, 443, "other.example.com").as_deref(),
        Some("default/svc-a:80")
    );
    // `*.com` ∩ `*.example.com` is `*.example.com`: names outside it are not served.
    assert_eq!(passthrough_hit(&out, 443, "other.com"), None);
    assert_eq!(attached(&out, "default", "gw", "tls"), 2);
}

#[test]
fn the_oldest_route_wins_a_shared_hostname() {
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        gateway(
            "gw",
            "  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}"
        ),
        SERVICES,
        "
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a-newer, namespace: default, creationTimestamp: '2024-01-02T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: svc-a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: b-older, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: svc-b, port: 80}]}]
"
    );
    let out = run_yaml(&yaml);
    assert_eq!(
        passthrough_hit(&out, 443, "abc.example.com").as_deref(),
        Some("default/svc-b:80")
    );
}

#[test]
fn unresolved_backends_are_reported_and_the_route_still_attaches() {
    let out = conformance(&["tlsroute-invalid-backendref-nonexistent.yaml"]);
    let (route, gw) = (
        "invalid-backend-ref-nonexistent",
        "gateway-tlsroute-invalid-backend-ref-nonexistent",
    );
    assert_eq!(
        tls_parent_cond(&out, route, gw, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        tls_parent_cond(&out, route, gw, "ResolvedRefs"),
        is("False", "BackendNotFound")
    );

    let out = conformance(&["tlsroute-invalid-backendref-unknown-kind.yaml"]);
    let (route, gw) = (
        "invalid-backend-ref-unknown-kind",
        "gateway-tlsroute-invalid-backend-ref-unknown-kind",
    );
    assert_eq!(
        tls_parent_cond(&out, route, gw, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        tls_parent_cond(&out, route, gw, "ResolvedRefs"),
        is("False", "InvalidKind")
    );
}

#[test]
fn a_cross_namespace_backend_needs_a_reference_grant_from_tlsroute() {
    // Every ReferenceGrant in the manifest is wrong in one field.
    let out = conformance(&["tlsroute-invalid-reference-grant.yaml"]);
    let (route, gw) = (
        "gateway-conformance-infra-test",
        "gateway-tlsroute-referencegrant",
    );
    assert_eq!(
        tls_parent_cond(&out, route, gw, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        tls_parent_cond(&out, route, gw, "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
}

#[test]
fn tlsroutes_do_not_attach_to_http_or_https_listeners_nor_unknown_sections() {
    let out = conformance(&["tlsroute-invalid-no-matching-listener.yaml"]);
    assert_eq!(
        tls_parent_cond(
            &out,
            "tlsroute-not-allowed-protocol-http",
            "gateway-tlsroute-http-only",
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        tls_parent_cond(
            &out,
            "tlsroute-not-allowed-protocol-https",
            "gateway-tlsroute-https-only",
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        tls_parent_cond(
            &out,
            "tlsroute-no-matching-section-name",
            "gateway-tlsroute-tls-passthrough-only",
            "Accepted"
        ),
        is("False", "NoMatchingParent")
    );
    assert_eq!(
        attached(&out, INFRA, "gateway-tlsroute-http-only", "http"),
        0
    );
    assert_eq!(
        attached(&out, INFRA, "gateway-tlsroute-https-only", "https"),
        0
    );
}

#[test]
fn no_intersecting_hostname_is_no_matching_listener_hostname() {
    let out = conformance(&["tlsroute-invalid-no-matching-listener-hostname.yaml"]);
    for (route, gw) in [
        ("tlsroute-hostname-mismatch-1", "gateway-tls-exact-hostname"),
        (
            "tlsroute-hostname-mismatch-2",
            "gateway-tls-wildcard-hostname",
        ),
    ] {
        assert_eq!(
            tls_parent_cond(&out, route, gw, "Accepted"),
            is("False", "NoMatchingListenerHostname")
        );
        assert_eq!(attached(&out, INFRA, gw, "tls"), 0);
    }
}

#[test]
fn passthrough_listeners_support_tlsroute_only() {
    let out = conformance(&["tlsroute-listener-passthrough-supported-kinds.yaml"]);
    let gw = "gateway-tlsroute-passthrough-supported-kind";
    assert_eq!(kinds(&out, gw, "tls-passthrough"), ["TLSRoute"]);
    let s = status(&out, Kind::Gateway, INFRA, gw);
    assert_eq!(
        cond(s, "listener tls-passthrough", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
}

#[test]
fn terminate_mode_terminates_with_the_listener_certificate_then_routes_by_sni() {
    let mut store = conformance_store(&["tlsroute-terminate-simple-same-namespace.yaml"]);
    add_tls_secret(
        &mut store,
        INFRA,
        "tls-terminate-checks-certificate",
        &["tls.example.com"],
    );
    let out = run_cluster(&store);
    let gw = "gateway-tlsroute-terminate";
    let s = status(&out, Kind::Gateway, INFRA, gw);
    assert_eq!(
        cond(s, "listener tlsterminate", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        cond(s, "listener tlsterminate", "Programmed"),
        is("True", "Programmed")
    );
    assert_eq!(kinds(&out, gw, "tlsterminate"), ["TLSRoute"]);
    assert_eq!(
        tls_parent_cond(&out, "tlsroute-terminated-test", gw, "Accepted"),
        is("True", "Accepted")
    );
    let socket = gw_socket(&out, gw, 8443).expect("socket 8443");
    assert!(socket.tls, "Terminate mode terminates TLS");
    assert!(socket.certificate_for(Some("tls.example.com")).is_some());
    assert_eq!(
        passthrough_hit(&out, 8443, "tls.example.com").as_deref(),
        Some("gateway-conformance-infra/tcp-backend:3000")
    );
}

#[test]
fn terminate_mode_without_a_certificate_is_not_programmed() {
    let out = conformance(&["tlsroute-listener-terminate-supported-kinds.yaml"]);
    let gw = "gateway-tlsroute-terminate-supported";
    let s = status(&out, Kind::Gateway, INFRA, gw);
    // The suite creates the Secret; without it the listener is accepted but its
    // certificate does not resolve.
    assert_eq!(
        cond(s, "listener tls-terminate", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        cond(s, "listener tls-terminate", "ResolvedRefs"),
        is("False", "InvalidCertificateRef")
    );
    assert_eq!(kinds(&out, gw, "tls-terminate"), ["TLSRoute"]);
}

#[test]
fn passthrough_and_terminate_share_a_port_with_mixed_termination() {
    // TLSRouteMixedTerminationSameNamespace: both listeners Accepted with 1 route each, and
    // the socket picks the mode per listener (by SNI).
    let mut store = conformance_store(&["tlsroute-mixed-termination-same-namespace.yaml"]);
    add_tls_secret(
        &mut store,
        INFRA,
        "tls-terminate-checks-certificate",
        &["tls.example.com"],
    );
    let out = run_cluster(&store);
    let gw = "gateway-tlsroute-mixed-termination";
    let s = status(&out, Kind::Gateway, INFRA, gw);
    for l in ["tls-terminate", "tls-passthrough"] {
        assert_eq!(
            cond(s, &format!("listener {l}"), "Accepted"),
            is("True", "Accepted"),
            "{l}"
        );
        assert_eq!(kinds(&out, gw, l), ["TLSRoute"], "{l}");
        assert_eq!(listener_json(s, l)["attachedRoutes"], 1, "{l}");
    }
    for r in [
        "gateway-conformance-mixed-terminateroute",
        "gateway-conformance-mixed-passthroughroute",
    ] {
        assert_eq!(
            tls_parent_cond(&out, r, gw, "Accepted"),
            is("True", "Accepted"),
            "{r}"
        );
    }
    let socket = gw_socket(&out, gw, 8883).expect("socket 8883");
    assert!(!socket.tls, "a mixed socket does not terminate at accept");
    let passthrough = socket.passthrough.as_ref().expect("TLSRoutes on 8883");
    let terminates = |sni: &str| {
        let listener = socket.listener_position(sni).expect("listener by SNI");
        passthrough.terminates(listener)
    };
    assert!(terminates("tls.example.com"));
    assert!(!terminates("abc.example.com"));
    assert!(socket.certificate_for(Some("tls.example.com")).is_some());
    assert_eq!(
        passthrough_hit(&out, 8883, "tls.example.com").as_deref(),
        Some("gateway-conformance-infra/tcp-backend:3000")
    );
    assert_eq!(
        passthrough_hit(&out, 8883, "abc.example.com").as_deref(),
        Some("gateway-conformance-infra/tcp-backend:8443")
    );
}

#[test]
fn mixed_termination_not_supported_manifest_is_accepted_when_mixed_is_supported() {
    // The Go test for the unsupported case is skipped once TLSRouteModeMixed is claimed;
    // its Gateway is then a valid mixed Gateway.
    let mut store = conformance_store(&["tlsroute-listener-mixed-termination-not-supported.yaml"]);
    add_tls_secret(
        &mut store,
        INFRA,
        "tls-terminate-checks-certificate",
        &["tls.example.com"],
    );
    let out = run_cluster(&store);
    let gw = "gateway-tlsroute-mixed-termination-not-supported";
    let s = status(&out, Kind::Gateway, INFRA, gw);
    for l in ["tls-terminate", "tls-passthrough"] {
        assert_eq!(
            cond(s, &format!("listener {l}"), "Accepted"),
            is("True", "Accepted"),
            "{l}"
        );
    }
}

#[test]
fn tls_and_https_listeners_on_one_port_still_conflict() {
    let out = run_yaml(&gateway(
        "gw",
        "  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
  - {name: https, port: 443, protocol: HTTPS}",
    ));
    let s = status(&out, Kind::Gateway, "default", "gw");
    for l in ["listener tls", "listener https"] {
        assert_eq!(
            cond(s, l, "Accepted"),
            is("False", "ProtocolConflict"),
            "{l}"
        );
    }
}

#[test]
fn tls_and_http_listeners_on_one_port_conflict() {
    let out = run_yaml(&gateway(
        "gw",
        "  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
  - {name: http, port: 443, protocol: HTTP}",
    ));
    let s = status(&out, Kind::Gateway, "default", "gw");
    for l in ["listener tls", "listener http"] {
        assert_eq!(
            cond(s, l, "Accepted"),
            is("False", "ProtocolConflict"),
            "{l}"
        );
    }
}
