//! ListenerSets: allowedListeners, listener precedence and conflicts, routes with a
//! ListenerSet parentRef, certificate references, and the ListenerSet status reasons.

use weir_store::Kind;

use super::*;

/// A Gateway `gw` in `default` with one HTTP listener on port 80 and the given
/// `spec.allowedListeners` (YAML, may be empty).
fn gw(allowed: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default, generation: 1, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec:
  gatewayClassName: weir
  {allowed}
  listeners:
  - {{name: main, port: 80, protocol: HTTP, hostname: main.example.com}}
"
    )
}

/// A ListenerSet `ns/name` for Gateway default/gw, created at `created`, with listeners
/// (indented list items).
fn ls(ns: &str, name: &str, created: &str, listeners: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: {name}, namespace: {ns}, generation: 2, creationTimestamp: '{created}'}}
spec:
  parentRef: {{name: gw, namespace: default}}
  listeners:
{listeners}
"
    )
}

const ALL: &str = "allowedListeners: {namespaces: {from: All}}";

fn ls_cond(out: &Output, ns: &str, name: &str, scope: &str, type_: &str) -> (String, String) {
    cond(status(out, Kind::ListenerSet, ns, name), scope, type_)
}

fn attached_sets(out: &Output) -> Option<i64> {
    status(out, Kind::Gateway, "default", "gw").status["attachedListenerSets"].as_i64()
}

const ONE: &str = "  - {name: extra, port: 80, protocol: HTTP, hostname: extra.example.com}";

#[test]
fn not_allowed_by_default_or_by_none_or_by_namespace() {
    for (allowed, ns) in [
        ("", "default"),
        ("allowedListeners: {namespaces: {from: None}}", "default"),
        ("allowedListeners: {namespaces: {from: Same}}", "other"),
        (
            "allowedListeners: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}",
            "other",
        ),
    ] {
        let out = run_yaml(&format!(
            "{}\n---\n{}",
            gw(allowed),
            ls(ns, "set", "2024-01-02T00:00:00Z", ONE)
        ));
        for t in ["Accepted", "Programmed"] {
            assert_eq!(
                ls_cond(&out, ns, "set", "", t),
                is("False", "NotAllowed"),
                "{allowed:?}"
            );
        }
        assert!(status(&out, Kind::ListenerSet, ns, "set").status["listeners"].is_null());
        assert_eq!(attached_sets(&out).unwrap_or(0), 0, "{allowed:?}");
        // Its listener is not served.
        assert_eq!(hit(&out, 80, &get("extra.example.com", "/")), "404");
        // The Gateway reports only its own listeners.
        let g = status(&out, Kind::Gateway, "default", "gw");
        assert_eq!(g.status["listeners"].as_array().map(Vec::len), Some(1));
    }
}

#[test]
fn allowed_by_same_all_and_selector() {
    let ns_yaml = "
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
";
    for (allowed, ns) in [
        ("allowedListeners: {namespaces: {from: Same}}", "default"),
        (ALL, "elsewhere"),
        (
            "allowedListeners: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}",
            "team-a",
        ),
    ] {
        let out = run_yaml(&format!(
            "{}\n---\n{ns_yaml}\n---\n{}",
            gw(allowed),
            ls(ns, "set", "2024-01-02T00:00:00Z", ONE)
        ));
        assert_eq!(
            ls_cond(&out, ns, "set", "", "Accepted"),
            is("True", "Accepted"),
            "{allowed}"
        );
        assert_eq!(
            ls_cond(&out, ns, "set", "", "Programmed"),
            is("True", "Programmed")
        );
        assert_eq!(
            ls_cond(&out, ns, "set", "listener extra", "Conflicted"),
            is("False", "NoConflicts")
        );
        let s = status(&out, Kind::ListenerSet, ns, "set");
        assert_eq!(s.generation, Some(2));
        assert_eq!(
            listener_json(s, "extra")["supportedKinds"][0]["kind"],
            "HTTPRoute"
        );
        assert_eq!(attached_sets(&out), Some(1));
    }
}

#[test]
fn hostname_conflicts_follow_precedence() {
    // The Gateway's listener beats both sets; the older set beats the newer one; a set whose
    // only listener loses is ListenersNotValid.
    let older = ls(
        "default",
        "b-older",
        "2024-01-02T00:00:00Z",
        "  - {name: dup-gw, port: 80, protocol: HTTP, hostname: main.example.com}
  - {name: shared, port: 80, protocol: HTTP, hostname: shared.example.com}",
    );
    let newer = ls(
        "default",
        "a-newer",
        "2024-01-03T00:00:00Z",
        "  - {name: shared, port: 80, protocol: HTTP, hostname: shared.example.com}",
    );
    let out = run_yaml(&format!("{}\n---\n{older}\n---\n{newer}", gw(ALL)));
    assert_eq!(
        cond(
            status(&out, Kind::Gateway, "default", "gw"),
            "listener main",
            "Accepted"
        ),
        is("True", "Accepted")
    );
    assert_eq!(
        ls_cond(&out, "default", "b-older", "listener dup-gw", "Conflicted"),
        is("True", "HostnameConflict")
    );
    assert_eq!(
        ls_cond(&out, "default", "b-older", "listener dup-gw", "Accepted").0,
        "False"
    );
    assert_eq!(
        ls_cond(&out, "default", "b-older", "listener shared", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        ls_cond(&out, "default", "b-older", "", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        ls_cond(&out, "default", "a-newer", "listener shared", "Conflicted"),
        is("True", "HostnameConflict")
    );
    for t in ["Accepted", "Programmed"] {
        assert_eq!(
            ls_cond(&out, "default", "a-newer", "", t),
            is("False", "ListenersNotValid")
        );
    }
    assert_eq!(attached_sets(&out), Some(1));
}

#[test]
fn same_creation_time_orders_sets_by_name() {
    let l = "  - {name: shared, port: 80, protocol: HTTP, hostname: shared.example.com}";
    let t = "2024-01-02T00:00:00Z";
    let out = run_yaml(&format!(
        "{}\n---\n{}\n---\n{}",
        gw(ALL),
        ls("default", "b", t, l),
        ls("default", "a", t, l)
    ));
    assert_eq!(
        ls_cond(&out, "default", "a", "listener shared", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        ls_cond(&out, "default", "b", "listener shared", "Conflicted"),
        is("True", "HostnameConflict")
    );
}

#[test]
fn protocol_conflict_with_the_gateway() {
    let out = run_yaml(&format!(
        "{}\n---\n{}",
        gw(ALL),
        ls(
            "default",
            "set",
            "2024-01-02T00:00:00Z",
            "  - {name: tls, port: 80, protocol: HTTPS, hostname: tls.example.com, tls: {certificateRefs: [{name: missing}]}}
  - {name: ok, port: 8080, protocol: HTTP}"
        )
    ));
    assert_eq!(
        ls_cond(&out, "default", "set", "listener tls", "Conflicted"),
        is("True", "ProtocolConflict")
    );
    assert_eq!(
        cond(
            status(&out, Kind::Gateway, "default", "gw"),
            "listener main",
            "Conflicted"
        ),
        is("False", "NoConflicts")
    );
    assert_eq!(
        ls_cond(&out, "default", "set", "", "Accepted"),
        is("True", "Accepted")
    );
}

const ROUTES: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-set, namespace: default, generation: 1}
spec:
  parentRefs:
  - {group: gateway.networking.k8s.io, kind: ListenerSet, name: set}
  rules:
  - backendRefs: [{name: svc-a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-section, namespace: default, generation: 1}
spec:
  parentRefs:
  - {group: gateway.networking.k8s.io, kind: ListenerSet, name: set, sectionName: one}
  rules:
  - backendRefs: [{name: svc-a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-gateway, namespace: default, generation: 1}
spec:
  parentRefs:
  - {name: gw}
  rules:
  - backendRefs: [{name: svc-b, port: 80}]
";

#[test]
fn routes_attach_through_a_listener_set_parent_ref() {
    let set = ls(
        "default",
        "set",
        "2024-01-02T00:00:00Z",
        "  - {name: one, port: 80, protocol: HTTP, hostname: one.example.com}
  - {name: two, port: 80, protocol: HTTP, hostname: two.example.com}",
    );
    let out = run_yaml(&format!(
        "{}\n---\n{set}\n---\n{SERVICES}\n---\n{ROUTES}",
        gw(ALL)
    ));
    let s = status(&out, Kind::ListenerSet, "default", "set");
    assert_eq!(listener_json(s, "one")["attachedRoutes"], 2);
    assert_eq!(listener_json(s, "two")["attachedRoutes"], 1);
    // A Gateway parentRef reaches only the Gateway's own listeners.
    assert_eq!(attached(&out, "default", "gw", "main"), 1);
    assert_eq!(
        parent_cond(&out, ("default", "to-set"), ("default", "set"), "Accepted"),
        is("True", "Accepted")
    );
    let r = status(&out, Kind::HttpRoute, "default", "to-set");
    assert_eq!(r.status["parents"][0]["parentRef"]["kind"], "ListenerSet");
    assert_eq!(
        hit(&out, 80, &get("two.example.com", "/")),
        "default/to-set#0"
    );
    assert_eq!(
        hit(&out, 80, &get("main.example.com", "/")),
        "default/to-gateway#0"
    );
    // sectionName names a listener of the set.
    let bad = ROUTES.replace("sectionName: one", "sectionName: main");
    let out = run_yaml(&format!(
        "{}\n---\n{set}\n---\n{SERVICES}\n---\n{bad}",
        gw(ALL)
    ));
    assert_eq!(
        parent_cond(
            &out,
            ("default", "to-section"),
            ("default", "set"),
            "Accepted"
        ),
        is("False", "NoMatchingParent")
    );
}

#[test]
fn same_namespace_routes_of_a_listener_set_listener_are_the_sets() {
    let set = ls(
        "apps",
        "set",
        "2024-01-02T00:00:00Z",
        "  - {name: one, port: 80, protocol: HTTP, hostname: one.example.com, allowedRoutes: {namespaces: {from: Same}}}",
    );
    let routes = ROUTES.replace("name: set}", "name: set, namespace: apps}");
    let out = run_yaml(&format!(
        "{}\n---\n{set}\n---\n{SERVICES}\n---\n{routes}",
        gw(ALL)
    ));
    assert_eq!(
        parent_cond(&out, ("default", "to-set"), ("apps", "set"), "Accepted"),
        is("False", "NotAllowedByListeners")
    );
}

#[test]
fn certificate_refs_resolve_in_the_sets_namespace_with_a_grant_from_listener_set() {
    let set = |ns: &str| {
        ls(
            ns,
            "set",
            "2024-01-02T00:00:00Z",
            "  - {name: tls, port: 443, protocol: HTTPS, hostname: tls.example.com, tls: {certificateRefs: [{name: cert, namespace: certs}]}}",
        )
    };
    let grant = |kind: &str, ns: &str| {
        format!(
            "
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g-{kind}, namespace: certs}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: {ns}}}]
  to: [{{group: '', kind: Secret}}]
"
        )
    };
    // A grant for Gateways of the set's namespace does not cover the ListenerSet.
    let mut store = store_with_class(&format!(
        "{}\n---\n{}\n---\n{}",
        gw(ALL),
        set("apps"),
        grant("Gateway", "apps")
    ));
    add_tls_secret(&mut store, "certs", "cert", &["tls.example.com"]);
    let out = run(&store);
    assert_eq!(
        ls_cond(&out, "apps", "set", "listener tls", "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    for t in ["Accepted", "Programmed"] {
        assert_eq!(
            ls_cond(&out, "apps", "set", "", t),
            is("False", "ListenersNotValid")
        );
    }
    let mut store = store_with_class(&format!(
        "{}\n---\n{}\n---\n{}",
        gw(ALL),
        set("apps"),
        grant("ListenerSet", "apps")
    ));
    add_tls_secret(&mut store, "certs", "cert", &["tls.example.com"]);
    let out = run(&store);
    assert_eq!(
        ls_cond(&out, "apps", "set", "listener tls", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(
        ls_cond(&out, "apps", "set", "", "Programmed"),
        is("True", "Programmed")
    );
    assert!(out.snapshot.socket(None, 443).is_some_and(|s| s.tls));
}

#[test]
fn a_set_of_a_gateway_that_is_not_accepted_is_parent_not_accepted() {
    let gateway = gw(ALL).replace("protocol: HTTP,", "protocol: SCTP,");
    let out = run_yaml(&format!(
        "{gateway}\n---\n{}",
        ls("default", "set", "2024-01-02T00:00:00Z", ONE)
    ));
    assert_eq!(
        ls_cond(&out, "default", "set", "", "Accepted"),
        is("False", "ParentNotAccepted")
    );
    assert_eq!(
        ls_cond(&out, "default", "set", "", "Programmed"),
        is("False", "ParentNotProgrammed")
    );
}

#[test]
fn a_set_naming_another_controllers_gateway_has_no_status() {
    let out = run_yaml(&format!(
        "{}\n---\n{}",
        gw(ALL).replace("gatewayClassName: weir", "gatewayClassName: other"),
        ls("default", "set", "2024-01-02T00:00:00Z", ONE)
    ));
    assert!(!has_status(&out, Kind::ListenerSet, "default", "set"));
}

#[test]
fn weir_check_reports_a_listener_set_that_is_not_accepted() {
    let out = run_yaml(&format!(
        "{}\n---\n{}",
        gw(""),
        ls("default", "set", "2024-01-02T00:00:00Z", ONE)
    ));
    let problems = status(&out, Kind::ListenerSet, "default", "set").problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Accepted is False (NotAllowed)")),
        "{problems:?}"
    );
    let out = run_yaml(&format!(
        "{}\n---\n{}",
        gw(ALL),
        ls("default", "set", "2024-01-02T00:00:00Z", ONE)
    ));
    assert!(status(&out, Kind::ListenerSet, "default", "set")
        .problems()
        .is_empty());
}

/// GRPCRoutes attach through a ListenerSet parentRef like HTTPRoutes (the parentRef
/// resolution is shared): to the set's listeners only, sectionName among them.
#[test]
fn grpc_routes_attach_through_a_listener_set_parent_ref() {
    let set = ls(
        "default",
        "set",
        "2024-01-02T00:00:00Z",
        "  - {name: rpc, port: 80, protocol: HTTP, hostname: rpc.example.com}",
    );
    let grpc = "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc-to-set, namespace: default, generation: 1}
spec:
  parentRefs:
  - {group: gateway.networking.k8s.io, kind: ListenerSet, name: set, sectionName: rpc}
  rules:
  - backendRefs: [{name: svc-b, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc-bad-section, namespace: default, generation: 1}
spec:
  parentRefs:
  - {group: gateway.networking.k8s.io, kind: ListenerSet, name: set, sectionName: main}
  rules:
  - backendRefs: [{name: svc-b, port: 80}]
";
    let out = run_yaml(&format!(
        "{}\n---\n{set}\n---\n{SERVICES}\n---\n{grpc}",
        gw(ALL)
    ));
    let s = status(&out, Kind::ListenerSet, "default", "set");
    assert_eq!(listener_json(s, "rpc")["attachedRoutes"], 1);
    assert_eq!(attached(&out, "default", "gw", "main"), 0);
    let r = status(&out, Kind::GrpcRoute, "default", "rpc-to-set");
    assert_eq!(
        cond(r, "parent default/set/rpc", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(r.status["parents"][0]["parentRef"]["kind"], "ListenerSet");
    let r = status(&out, Kind::GrpcRoute, "default", "rpc-bad-section");
    assert_eq!(
        cond(r, "parent default/set/main", "Accepted"),
        is("False", "NoMatchingParent")
    );
}
