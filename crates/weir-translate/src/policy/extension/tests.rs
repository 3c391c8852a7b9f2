//! ExtensionPolicy translation: what reaches each route entry, precedence by target, the
//! status (Accepted, ResolvedRefs=False for a missing Service), and the refusals.

use std::time::Duration;

use http::{HeaderMap, Method};
use weir_snapshot::{BackendTarget, BodyMode, ExtProc, RequestView, RouteAction};
use weir_store::Kind;

use crate::tests::{cond, is, run, status, store_with_class};
use crate::Output;

const WORLD: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns, generation: 1}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ns}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: proc, namespace: ns}
spec: {ports: [{port: 9002, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: a
    matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: svc, port: 80}]
  - name: b
    matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /o}}]
    backendRefs: [{name: svc, port: 80}]
";

const ROUTE: &str = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}";
const RULE_A: &str = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: a}";

fn policy(name: &str, created: &str, target: &str, spec: &str) -> String {
    format!(
        "
---
apiVersion: gateway.weir.dev/v1alpha1
kind: ExtensionPolicy
metadata: {{name: {name}, namespace: ns, generation: 2, creationTimestamp: '{created}'}}
spec:
  targetRefs: [{target}]
{spec}"
    )
}

fn translate(policies: &[String]) -> Output {
    run(&store_with_class(&format!("{WORLD}{}", policies.concat())))
}

fn action<'a>(out: &'a Output, path: &str) -> &'a RouteAction {
    let socket = out.snapshot.socket(None, 80).expect("socket");
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        path,
        query: None,
        headers: &headers,
    };
    &socket.listeners[0]
        .find_route("x.example", &view)
        .expect("a route")
        .action
}

fn ext_proc<'a>(out: &'a Output, path: &str) -> Option<&'a ExtProc> {
    action(out, path).ext_proc.as_deref()
}

fn condition(out: &Output, name: &str, type_: &str) -> (String, String) {
    cond(
        status(out, Kind::ExtensionPolicy, "ns", name),
        "parent ns/gw",
        type_,
    )
}

const FULL: &str = "  extProc:
  - backendRefs: [{name: proc, port: 9002}]
    processingMode:
      request: {body: Buffered}
      response: {}
    messageTimeout: 1s
    failOpen: true
";

#[test]
fn a_processor_compiles_onto_the_targeted_routes_only() {
    let out = translate(&[policy("xp", "2024-01-01T00:00:00Z", ROUTE, FULL)]);
    assert_eq!(condition(&out, "xp", "Accepted"), is("True", "Accepted"));
    assert_eq!(
        condition(&out, "xp", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let x = ext_proc(&out, "/a").expect("on rule a");
    assert!(x.deny.is_none());
    let p = &x.processors[0];
    assert_eq!(p.request, Some(BodyMode::Buffered));
    assert!(p.response);
    assert!(p.fail_open);
    assert_eq!(p.timeout, Duration::from_secs(1));
    assert!(matches!(&p.service, BackendTarget::Upstream(u) if &*u.name == "ns/proc:9002"));
    assert!(ext_proc(&out, "/b").is_some());
    assert!(ext_proc(&out, "/o").is_none(), "another route is untouched");
    // Defaults: nothing sent without a processing mode; 200 ms; fail closed.
    let out = translate(&[policy(
        "xp",
        "2024-01-01T00:00:00Z",
        RULE_A,
        "  extProc: [{backendRef: {name: proc, port: 9002}}]\n",
    )]);
    let p = &ext_proc(&out, "/a").expect("rule a").processors[0];
    assert_eq!((p.request, p.response, p.fail_open), (None, false, false));
    assert_eq!(p.timeout, Duration::from_millis(200));
    assert!(ext_proc(&out, "/b").is_none(), "sectionName: rule a only");
}

#[test]
fn a_missing_service_is_resolved_refs_false_and_fails_at_request_time() {
    let spec = FULL.replace("name: proc", "name: gone");
    let out = translate(&[policy("xp", "2024-01-01T00:00:00Z", ROUTE, &spec)]);
    assert_eq!(condition(&out, "xp", "Accepted"), is("True", "Accepted"));
    assert_eq!(
        condition(&out, "xp", "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    let p = &ext_proc(&out, "/a").expect("held").processors[0];
    assert!(matches!(p.service, BackendTarget::Invalid(_)));
}

#[test]
fn unsupported_fields_and_values_are_refused_by_name_and_fail_closed() {
    for (spec, field) in [
        (
            FULL.replace("failOpen: true", "failOpen: true\n    metadata: {}"),
            "spec.extProc[0].metadata",
        ),
        (
            FULL.replace("body: Buffered", "body: Streamed"),
            "processingMode.request.body Streamed",
        ),
        (
            FULL.replace("response: {}", "response: {body: Buffered}"),
            "processingMode.response.body Buffered",
        ),
        (format!("{FULL}  wasm: []\n"), "spec.wasm"),
    ] {
        let out = translate(&[policy("xp", "2024-01-01T00:00:00Z", ROUTE, &spec)]);
        assert_eq!(
            condition(&out, "xp", "Accepted"),
            is("False", "UnsupportedValue"),
            "{field}"
        );
        let message = status(&out, Kind::ExtensionPolicy, "ns", "xp").condition_lines()[0]
            .4
            .clone();
        assert!(message.contains(field), "{field}: {message}");
        let x = ext_proc(&out, "/a").expect("its targets are held");
        assert!(x.deny.is_some(), "{field}: fail closed");
    }
    // A GRPCRoute or a listener is not a target.
    let out = translate(&[policy(
        "xp",
        "2024-01-01T00:00:00Z",
        "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}",
        FULL,
    )]);
    assert_eq!(
        condition(&out, "xp", "Accepted"),
        is("False", "UnsupportedValue")
    );
}

#[test]
fn the_most_specific_policy_wins_and_the_younger_of_two_conflicts() {
    let out = translate(&[
        policy("route", "2024-01-01T00:00:00Z", ROUTE, FULL),
        policy(
            "rule",
            "2024-01-02T00:00:00Z",
            RULE_A,
            "  extProc: [{backendRef: {name: proc, port: 9002}, failOpen: false}]\n",
        ),
        policy("late", "2024-01-03T00:00:00Z", ROUTE, FULL),
    ]);
    assert!(!ext_proc(&out, "/a").expect("rule").processors[0].fail_open);
    assert!(ext_proc(&out, "/b").expect("route").processors[0].fail_open);
    assert_eq!(
        condition(&out, "late", "Accepted"),
        is("False", "Conflicted")
    );
}
