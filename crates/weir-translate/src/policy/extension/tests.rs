//! ExtensionPolicy translation: what reaches each route entry, precedence by target, the
//! status (Accepted, ResolvedRefs=False for a missing Service), and the refusals.

use std::time::Duration;

use weir_snapshot::{BackendTarget, BodyMode, ExtProc};
use weir_store::Kind;

use crate::policy::fixture::{self, action, gateway, routes, ROUTE, RULE_A};
use crate::tests::is;
use crate::Output;

const WORLD: &str = concat!(
    gateway!(),
    "---
apiVersion: v1
kind: Service
metadata: {name: proc, namespace: ns}
spec: {ports: [{port: 9002, appProtocol: kubernetes.io/h2c}]}
",
    routes!("", "")
);

fn policy(name: &str, created: &str, target: &str, spec: &str) -> String {
    fixture::policy(
        Kind::ExtensionPolicy,
        name,
        created,
        &format!("[{target}]"),
        spec,
    )
}

fn translate(policies: &[String]) -> Output {
    fixture::translate(WORLD, policies)
}

fn ext_proc<'a>(out: &'a Output, path: &str) -> Option<&'a ExtProc> {
    action(out, path).ext_proc.as_deref()
}

fn condition(out: &Output, name: &str, type_: &str) -> (String, String) {
    fixture::condition(out, Kind::ExtensionPolicy, name, type_)
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
        let message = fixture::message(&out, Kind::ExtensionPolicy, "xp");
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
