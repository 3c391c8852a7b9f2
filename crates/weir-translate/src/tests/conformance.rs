//! Replays of the official Gateway API v1.6.1 conformance manifests (base + one test file),
//! asserting the conditions and routing the official suite asserts.
//!
//! The manifests sit in the shared checkout beside the repository; they omit the defaults an
//! API server would fill in (parentRef group/kind, path match, weights, allowedRoutes), which
//! the translator must apply itself.

use weir_snapshot::BackendTarget;
use weir_store::Kind;

use super::*;

pub(super) const INFRA: &str = "gateway-conformance-infra";

fn manifest(rel: &str) -> String {
    let path = format!(
        "{}/../../e2e/conformance/upstream/v1.6.1/conformance/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .replace("{GATEWAY_CLASS_NAME}", "weir")
}

/// Base manifests + the given test files, our class, and the certificate the suite creates.
pub(super) fn conformance_store(tests: &[&str]) -> Store {
    let mut yaml = manifest("base/manifests.yaml");
    for t in tests {
        yaml.push_str("\n---\n");
        yaml.push_str(&manifest(&format!("tests/{t}")));
    }
    let mut store = store_with_class(&yaml);
    add_tls_secret(
        &mut store,
        INFRA,
        "tls-validity-checks-certificate",
        &["*.wildcard.org", "second-example.org"],
    );
    store
}

/// Translate as a cluster runs the suite: each Gateway has an address of its own (here from
/// an address pool, as `weir run --gateway-address-pool` gives them).
pub(super) fn run_cluster(store: &Store) -> Output {
    let pool = crate::Addressing::Pool("127.0.1.0/24".parse().expect("pool"));
    run_addressing(store, Memo::default(), &pool)
}

pub(super) fn conformance(tests: &[&str]) -> Output {
    run_cluster(&conformance_store(tests))
}

/// The socket serving `port` at Gateway `gw`'s own address.
pub(super) fn gw_socket<'o>(
    out: &'o Output,
    gw: &str,
    port: u16,
) -> Option<&'o weir_snapshot::SocketConfig> {
    let gw = format!("{INFRA}/{gw}");
    out.snapshot
        .sockets
        .iter()
        .find(|s| s.port == port && s.listeners.iter().any(|l| *l.gateway == *gw))
}

/// Route a request sent to the Gateway's own address.
fn gw_route<'o>(
    out: &'o Output,
    gw: &str,
    port: u16,
    req: &Req<'_>,
) -> Option<&'o Arc<RouteEntry>> {
    route_on(gw_socket(out, gw, port)?, req)
}

/// The backend Service a request on a Gateway reaches (single-backend rules), or "404"/"500".
fn backend_of(out: &Output, gw: &str, port: u16, req: &Req<'_>) -> String {
    let Some(e) = gw_route(out, gw, port, req) else {
        return "404".into();
    };
    match e.action.backends.first().map(|b| &b.target) {
        Some(BackendTarget::Upstream(u)) => {
            u.name.split(['/', ':']).nth(1).unwrap_or("").to_string()
        }
        _ => "500".into(),
    }
}

fn infra(name: &str) -> (&str, &str) {
    (INFRA, name)
}

#[test]
fn base_gateways_are_accepted_and_programmed() {
    let out = conformance(&[]);
    for gw in [
        "same-namespace",
        "all-namespaces",
        "backend-namespaces",
        "same-namespace-with-https-listener",
    ] {
        let s = status(&out, Kind::Gateway, INFRA, gw);
        assert_eq!(cond(s, "", "Accepted"), is("True", "Accepted"), "{gw}");
        assert_eq!(cond(s, "", "Programmed"), is("True", "Programmed"), "{gw}");
        assert!(s.problems().is_empty(), "{gw}: {:?}", s.problems());
    }
    let tls = gw_socket(&out, "same-namespace-with-https-listener", 443).expect("443");
    assert!(tls.tls);
    assert_eq!(tls.listeners.len(), 4);
    assert!(tls.certificate_for(Some("second-example.org")).is_some());
    assert!(tls.default_cert.is_some());
}

#[test]
fn httproute_matching() {
    let out = conformance(&["httproute-matching.yaml"]);
    assert_eq!(
        parent_cond(&out, infra("matching"), infra("same-namespace"), "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(
            &out,
            infra("matching"),
            infra("same-namespace"),
            "ResolvedRefs"
        ),
        is("True", "ResolvedRefs")
    );
    let gw = "same-namespace";
    let with = |path: &'static str, version: &'static str| Req {
        method: Method::GET,
        host: "example.com",
        path,
        headers: vec![("version", version)],
    };
    assert_eq!(
        backend_of(&out, gw, 80, &get("example.com", "/")),
        "infra-backend-v1"
    );
    assert_eq!(
        backend_of(&out, gw, 80, &get("example.com", "/example")),
        "infra-backend-v1"
    );
    assert_eq!(
        backend_of(&out, gw, 80, &with("/", "one")),
        "infra-backend-v1"
    );
    assert_eq!(
        backend_of(&out, gw, 80, &get("example.com", "/v2")),
        "infra-backend-v2"
    );
    assert_eq!(
        backend_of(&out, gw, 80, &get("example.com", "/v2/example")),
        "infra-backend-v2"
    );
    assert_eq!(
        backend_of(&out, gw, 80, &with("/", "two")),
        "infra-backend-v2"
    );
    // A longer path prefix outranks a header match.
    assert_eq!(
        backend_of(&out, gw, 80, &with("/v2/", "one")),
        "infra-backend-v2"
    );
}

#[test]
fn httproute_invalid_cross_namespace_backend_ref() {
    let out = conformance(&["httproute-invalid-cross-namespace-backend-ref.yaml"]);
    let r = infra("invalid-cross-namespace-backend-ref");
    let gw = infra("same-namespace");
    assert_eq!(parent_cond(&out, r, gw, "Accepted"), is("True", "Accepted"));
    assert_eq!(
        parent_cond(&out, r, gw, "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    assert_eq!(
        backend_of(&out, "same-namespace", 80, &get("example.com", "/")),
        "500"
    );
}

#[test]
fn httproute_partially_invalid_via_invalid_reference_grant() {
    let out = conformance(&["httproute-partially-invalid-via-invalid-reference-grant.yaml"]);
    let r = infra("invalid-reference-grant");
    let gw = infra("same-namespace");
    assert_eq!(parent_cond(&out, r, gw, "Accepted"), is("True", "Accepted"));
    assert_eq!(
        parent_cond(&out, r, gw, "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    assert_eq!(
        backend_of(&out, "same-namespace", 80, &get("x", "/v2")),
        "500"
    );
    assert_eq!(
        backend_of(&out, "same-namespace", 80, &get("x", "/")),
        "app-backend-v1"
    );
}

#[test]
fn httproute_hostname_intersection() {
    let out = conformance(&["httproute-hostname-intersection.yaml"]);
    let gwn = "httproute-hostname-intersection";
    for r in [
        "specific-host-matches-listener-specific-host",
        "specific-host-matches-listener-wildcard-host",
        "wildcard-host-matches-listener-specific-host",
        "wildcard-host-matches-listener-wildcard-host",
    ] {
        assert_eq!(
            parent_cond(&out, infra(r), infra(gwn), "Accepted"),
            is("True", "Accepted"),
            "{r}"
        );
        assert_eq!(
            parent_cond(&out, infra(r), infra(gwn), "ResolvedRefs"),
            is("True", "ResolvedRefs"),
            "{r}"
        );
    }
    assert_eq!(
        parent_cond(&out, infra("no-intersecting-hosts"), infra(gwn), "Accepted"),
        is("False", "NoMatchingListenerHostname")
    );
    let cases = [
        ("very.specific.com", "/s1", "infra-backend-v1"),
        ("non.matching.com", "/s1", "404"),
        ("foo.nonmatchingwildcard.io", "/s1", "404"),
        ("foo.wildcard.io", "/s1", "404"),
        ("very.specific.com", "/non-matching-prefix", "404"),
        ("foo.wildcard.io", "/s2", "infra-backend-v2"),
        ("bar.wildcard.io", "/s2", "infra-backend-v2"),
        ("foo.bar.wildcard.io", "/s2", "infra-backend-v2"),
        ("non.matching.com", "/s2", "404"),
        ("wildcard.io", "/s2", "404"),
        ("very.specific.com", "/s2", "404"),
        ("foo.wildcard.io", "/non-matching-prefix", "404"),
        ("very.specific.com", "/s3", "infra-backend-v3"),
        ("non.matching.com", "/s3", "404"),
        ("foo.specific.com", "/s3", "404"),
        ("foo.wildcard.io", "/s3", "404"),
        ("foo.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("bar.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("foo.bar.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("anotherwildcard.io", "/s4", "404"),
        ("foo.wildcard.io", "/s4", "404"),
        ("very.specific.com", "/s4", "404"),
        ("specific.but.wrong.com", "/s5", "404"),
        ("wildcard.io", "/s5", "404"),
    ];
    for (host, path, want) in cases {
        assert_eq!(
            backend_of(&out, gwn, 80, &get(host, path)),
            want,
            "{host}{path}"
        );
    }
    assert_eq!(attached(&out, INFRA, gwn, "listener-1"), 2);
    assert_eq!(attached(&out, INFRA, gwn, "listener-2"), 1);
    assert_eq!(attached(&out, INFRA, gwn, "listener-3"), 1);

    let all = "httproute-hostname-intersection-all";
    for (host, want) in [
        ("first.com", "infra-backend-v2"),
        ("sub.first.com", "infra-backend-v2"),
        ("second.com", "infra-backend-v2"),
        ("sub.second.com", "infra-backend-v2"),
        ("third.com", "404"),
        ("sub.third.com", "404"),
    ] {
        assert_eq!(backend_of(&out, all, 80, &get(host, "/")), want, "{host}");
    }
}

#[test]
fn gateway_invalid_route_kind() {
    let out = conformance(&["gateway-invalid-route-kind.yaml"]);
    let s = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-only-invalid-route-kind",
    );
    assert_eq!(
        cond(s, "listener http", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(
        listener_json(s, "http")["supportedKinds"],
        serde_json::json!([])
    );
    assert_eq!(listener_json(s, "http")["attachedRoutes"], 0);
    let s = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-supported-and-invalid-route-kind",
    );
    assert_eq!(
        cond(s, "listener http", "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(
        listener_json(s, "http")["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
}

#[test]
fn gateway_invalid_tls_configuration() {
    let out = conformance(&["gateway-invalid-tls-configuration.yaml"]);
    for gw in [
        "gateway-certificate-nonexistent-secret",
        "gateway-certificate-unsupported-group",
        "gateway-certificate-unsupported-kind",
        "gateway-certificate-malformed-secret",
    ] {
        let s = status(&out, Kind::Gateway, INFRA, gw);
        assert_eq!(
            cond(s, "listener https", "ResolvedRefs"),
            is("False", "InvalidCertificateRef"),
            "{gw}"
        );
        assert_eq!(listener_json(s, "https")["attachedRoutes"], 0, "{gw}");
        assert_eq!(
            listener_json(s, "https")["supportedKinds"],
            serde_json::json!([
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
            ])
        );
        assert_eq!(
            cond(s, "listener https", "Programmed"),
            is("False", "Invalid"),
            "{gw}"
        );
    }
}

#[test]
fn gateway_secret_reference_grants() {
    let out = conformance(&["gateway-secret-invalid-reference-grant.yaml"]);
    let s = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-secret-invalid-reference-grant",
    );
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );

    let out = conformance(&["gateway-secret-missing-reference-grant.yaml"]);
    let s = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-secret-missing-reference-grant",
    );
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );

    for t in [
        "gateway-secret-reference-grant-specific",
        "gateway-secret-reference-grant-all-in-namespace",
    ] {
        let mut store = conformance_store(&[&format!("{t}.yaml")]);
        add_tls_secret(
            &mut store,
            "gateway-conformance-web-backend",
            "certificate",
            &["*.example.com"],
        );
        let out = run_cluster(&store);
        let s = status(&out, Kind::Gateway, INFRA, t);
        assert_eq!(
            cond(s, "listener https", "ResolvedRefs"),
            is("True", "ResolvedRefs"),
            "{t}"
        );
        assert_eq!(
            cond(s, "listener https", "Programmed"),
            is("True", "Programmed"),
            "{t}"
        );
    }
}

#[test]
fn httproute_invalid_parent_refs() {
    let out = conformance(&[
        "httproute-invalid-parentref-not-matching-section-name.yaml",
        "httproute-invalid-parentref-not-matching-listener-port.yaml",
        "httproute-invalid-parentref-section-name-not-matching-port.yaml",
        "httproute-invalid-cross-namespace-parent-ref.yaml",
        "httproute-disallowed-kind.yaml",
    ]);
    let same = infra("same-namespace");
    assert_eq!(
        parent_cond(
            &out,
            infra("httproute-listener-not-matching-section-name"),
            same,
            "Accepted"
        ),
        is("False", "NoMatchingParent")
    );
    assert_eq!(
        parent_cond(
            &out,
            infra("httproute-listener-not-matching-route-port"),
            same,
            "Accepted"
        ),
        is("False", "NoMatchingParent")
    );
    assert_eq!(
        parent_cond(
            &out,
            infra("httproute-listener-section-name-not-matching-port"),
            infra("gateway-with-one-not-matching-port-and-section-name-route"),
            "Accepted"
        ),
        is("False", "NoMatchingParent")
    );
    assert_eq!(
        parent_cond(
            &out,
            (
                "gateway-conformance-web-backend",
                "invalid-cross-namespace-parent-ref"
            ),
            same,
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        parent_cond(
            &out,
            infra("disallowed-kind"),
            infra("tlsroutes-only"),
            "Accepted"
        ),
        is("False", "NotAllowedByListeners")
    );
    // The TLS Passthrough listener itself is a supported protocol (it serves TLSRoutes
    // only); its Gateway has its own address, so nothing else is on its port 443.
    let s = status(&out, Kind::Gateway, INFRA, "tlsroutes-only");
    assert_eq!(cond(s, "listener tls", "Accepted"), is("True", "Accepted"));
    assert_eq!(attached(&out, INFRA, "same-namespace", "http"), 0);
}

#[test]
fn gateway_with_attached_routes() {
    let out = conformance(&["gateway-with-attached-routes.yaml"]);
    assert_eq!(
        attached(&out, INFRA, "gateway-with-one-attached-route", "http"),
        1
    );
    assert_eq!(
        attached(&out, INFRA, "gateway-with-two-attached-routes", "http"),
        2
    );
    assert_eq!(
        parent_cond(
            &out,
            infra("http-route-not-accepted"),
            infra("gateway-with-two-attached-routes"),
            "Accepted"
        ),
        is("False", "NoMatchingListenerHostname")
    );
    // A listener whose certificate does not resolve still counts attached routes.
    let gw = "unresolved-gateway-with-one-attached-unresolved-route";
    assert_eq!(attached(&out, INFRA, gw, "tls"), 1);
    let s = status(&out, Kind::Gateway, INFRA, gw);
    assert_eq!(
        cond(s, "listener tls", "ResolvedRefs"),
        is("False", "InvalidCertificateRef")
    );
    assert_eq!(
        parent_cond(&out, infra("http-route-4"), infra(gw), "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
}
