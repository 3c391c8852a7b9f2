//! Fields of the experimental channel (HTTPRoute and GRPCRoute are read with its types):
//! `retry` is compiled; what Weir does not implement is reported by name, never dropped.

use std::time::Duration;

use weir_store::Kind;

use super::*;

const GW: &str = "  - {name: http, port: 80, protocol: HTTP}";

fn http_route(rule_extra: &str, spec_extra: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
{spec_extra}  rules:
  - matches: [{{path: {{value: /special}}}}]
{rule_extra}    backendRefs: [{{name: svc-a, port: 80}}]
  - backendRefs: [{{name: svc-a, port: 80}}]
"
    )
}

fn run_route(route: &str, more: &str) -> Output {
    run_yaml(
        &[
            gateway("gw", GW),
            SERVICES.into(),
            route.into(),
            more.into(),
        ]
        .join("---\n"),
    )
}

/// The message of a parent condition of HTTPRoute default/r.
fn message(out: &Output, type_: &str) -> String {
    status(out, Kind::HttpRoute, "default", "r")
        .condition_lines()
        .into_iter()
        .find(|(sc, t, ..)| sc.starts_with("parent default/gw") && t == type_)
        .map(|(.., m)| m)
        .unwrap_or_default()
}

#[test]
fn a_rule_retry_is_compiled_onto_its_entries_only() {
    let out = run_route(
        &http_route(
            "    retry: {attempts: 3, codes: [500, 503], backoff: 10ms}\n    timeouts: {backendRequest: 1s}\n",
            "",
        ),
        "",
    );
    let p = (("default", "r"), ("default", "gw"));
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("True", "Accepted")
    );
    let e = route(&out, 80, &get("h", "/special")).expect("entry");
    let policy = e.action.policy.as_ref().expect("the rule's retry");
    let r = policy.retry.as_ref().unwrap();
    assert_eq!(r.num_retries, 3);
    assert_eq!(&*r.status_codes, &[500, 503]);
    assert_eq!(r.min_backoff, Duration::from_millis(10));
    assert_eq!(
        e.action.timeouts.backend_request,
        Some(Duration::from_secs(1))
    );
    let other = route(&out, 80, &get("h", "/other")).expect("entry");
    assert!(other.action.policy.is_none(), "the other rule pays nothing");
}

#[test]
fn a_bad_retry_is_refused_by_name() {
    let out = run_route(
        &http_route("    retry: {attempts: 2, codes: [200]}\n", ""),
        "",
    );
    let p = (("default", "r"), ("default", "gw"));
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("False", "UnsupportedValue")
    );
    assert!(
        message(&out, "Accepted").contains("codes: 200"),
        "{}",
        message(&out, "Accepted")
    );
}

#[test]
fn a_rule_retry_beats_an_attached_policy_retry_and_keeps_its_other_settings() {
    let policy = "
apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: p, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  retry: {numRetries: 7}
  timeout: {tcp: {connectTimeout: 2s}}
";
    let out = run_route(
        &http_route("    retry: {attempts: 1, codes: [502]}\n", ""),
        policy,
    );
    let special = route(&out, 80, &get("h", "/special")).expect("entry");
    let p = special.action.policy.as_ref().unwrap();
    assert_eq!(
        p.retry.as_ref().unwrap().num_retries,
        1,
        "the route's own retry"
    );
    assert_eq!(
        p.connect_timeout,
        Some(Duration::from_secs(2)),
        "the policy's rest"
    );
    let other = route(&out, 80, &get("h", "/other")).expect("entry");
    let p = other.action.policy.as_ref().unwrap();
    assert_eq!(
        p.retry.as_ref().unwrap().num_retries,
        7,
        "the policy's retry"
    );
}

#[test]
fn an_external_auth_filter_compiles_onto_its_rule() {
    let p = (("default", "r"), ("default", "gw"));
    let extra = "    filters:\n    - type: ExternalAuth\n      externalAuth: {protocol: HTTP, backendRef: {name: svc-a, port: 80}, http: {path: /check}, forwardBody: {maxSize: 64}}\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {set: [{name: x-a, value: b}]}\n";
    let out = run_route(&http_route(extra, ""), "");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, p.0, p.1, "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let s = status(&out, Kind::HttpRoute, "default", "r");
    assert!(
        !s.condition_lines()
            .iter()
            .any(|(_, t, _, _, _)| t == "PartiallyInvalid"),
        "{:#?}",
        s.condition_lines()
    );
    let e = route(&out, 80, &get("h", "/special")).expect("entry");
    let auth = e.action.ext_auth.as_ref().expect("ext auth on the rule");
    assert!(!e.action.backends.is_empty(), "the rule is served");
    assert_eq!(e.action.filters.len(), 1, "the other filter stays");
    assert_eq!(auth.body_max, 64);
    match &auth.service {
        weir_snapshot::BackendTarget::Upstream(u) => assert_eq!(&*u.name, "default/svc-a:80"),
        weir_snapshot::BackendTarget::Invalid(why) => panic!("unresolved: {why}"),
    }
    let other = route(&out, 80, &get("h", "/other")).expect("entry");
    assert!(
        other.action.ext_auth.is_none(),
        "only the rule with the filter"
    );
}

#[test]
fn an_external_auth_filter_with_a_missing_service_fails_closed() {
    let p = (("default", "r"), ("default", "gw"));
    let extra = "    filters:\n    - type: ExternalAuth\n      externalAuth: {protocol: GRPC, backendRef: {name: nope, port: 80}}\n";
    let out = run_route(&http_route(extra, ""), "");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    let e = route(&out, 80, &get("h", "/special")).expect("entry");
    let auth = e.action.ext_auth.as_ref().expect("ext auth kept");
    assert!(
        matches!(auth.service, weir_snapshot::BackendTarget::Invalid(_)),
        "requests fail closed, never skip the check"
    );
}

#[test]
fn an_external_auth_filter_across_namespaces_needs_a_reference_grant() {
    let p = (("default", "r"), ("default", "gw"));
    let extra = "    filters:\n    - type: ExternalAuth\n      externalAuth: {protocol: HTTP, backendRef: {name: svc-a, namespace: other, port: 80}}\n";
    let out = run_route(&http_route(extra, ""), "");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
}

#[test]
fn two_external_auth_filters_in_a_rule_are_reported() {
    let p = (("default", "r"), ("default", "gw"));
    let one = "    - type: ExternalAuth\n      externalAuth: {protocol: HTTP, backendRef: {name: svc-a, port: 80}}\n";
    let extra = format!("    filters:\n{one}{one}");
    let out = run_route(&http_route(&extra, ""), "");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "PartiallyInvalid"),
        is("True", "UnsupportedValue")
    );
    assert!(message(&out, "PartiallyInvalid").contains("ExternalAuth"));
}

#[test]
fn use_default_gateways_all_is_refused_and_none_is_fine() {
    let p = (("default", "r"), ("default", "gw"));
    let out = run_route(&http_route("", "  useDefaultGateways: All\n"), "");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("False", "UnsupportedValue")
    );
    assert!(message(&out, "Accepted").contains("useDefaultGateways"));
    let out = run_route(&http_route("", "  useDefaultGateways: None\n"), "");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("True", "Accepted")
    );
}

#[test]
fn session_persistence_is_compiled_per_match_and_checked() {
    let out = run_route(
        &http_route(
            "    sessionPersistence: {sessionName: sid, absoluteTimeout: 1h, cookieConfig: {lifetimeType: Permanent}}\n",
            "",
        ),
        "",
    );
    let e = route(&out, 80, &get("h", "/special/x")).expect("entry");
    let s = e.action.policy.as_ref().unwrap().session.clone().unwrap();
    assert_eq!(
        (&*s.name, s.path.as_deref(), s.permanent),
        ("sid", Some("/special"), true)
    );
    assert_eq!(s.absolute_timeout, Some(Duration::from_secs(3600)));
    let other = route(&out, 80, &get("h", "/other")).expect("entry");
    assert!(
        other.action.policy.is_none(),
        "the other rule has no session"
    );

    // The CRD's rule, checked in file mode too: Permanent needs absoluteTimeout.
    let out = run_route(
        &http_route(
            "    sessionPersistence: {cookieConfig: {lifetimeType: Permanent}}\n",
            "",
        ),
        "",
    );
    let p = (("default", "r"), ("default", "gw"));
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("False", "UnsupportedValue")
    );
    assert!(message(&out, "Accepted").contains("absoluteTimeout must be specified"));
}

#[test]
fn grpc_session_persistence_is_compiled() {
    let r = "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - sessionPersistence: {sessionName: x-session, type: Header}
    backendRefs: [{name: svc-a, port: 80}]
";
    let out = run_yaml(&[gateway("gw", GW), SERVICES.into(), r.into()].join("---\n"));
    let lines = status(&out, Kind::GrpcRoute, "default", "g").condition_lines();
    assert!(
        lines
            .iter()
            .any(|(_, t, st, ..)| t == "Accepted" && st == "True"),
        "{lines:?}"
    );
    let e = route(&out, 80, &get("h", "/pkg.Svc/Method")).expect("entry");
    let s = e.action.policy.as_ref().unwrap().session.clone().unwrap();
    assert_eq!(
        (&*s.name, s.carrier),
        ("x-session", weir_snapshot::SessionCarrier::Header)
    );
}

#[test]
fn a_service_session_reaches_grpc_routes_too() {
    let r = "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: svc-a, port: 80}]
---
apiVersion: gateway.networking.x-k8s.io/v1alpha1
kind: XBackendTrafficPolicy
metadata: {name: x, namespace: default}
spec:
  targetRefs: [{group: '', kind: Service, name: svc-a}]
  sessionPersistence: {sessionName: x-session, type: Header}
";
    let out = run_yaml(&[gateway("gw", GW), SERVICES.into(), r.into()].join("---\n"));
    let lines = status(&out, Kind::XBackendTrafficPolicy, "default", "x").condition_lines();
    assert!(
        lines
            .iter()
            .any(|(_, t, st, r, _)| t == "Accepted" && st == "True" && r == "Accepted"),
        "{lines:?}"
    );
    let e = route(&out, 80, &get("h", "/pkg.Svc/Method")).expect("entry");
    let s = e.action.policy.as_ref().unwrap().session.clone().unwrap();
    assert_eq!(
        (&*s.name, s.carrier, s.path.as_deref()),
        ("x-session", weir_snapshot::SessionCarrier::Header, None)
    );
}
