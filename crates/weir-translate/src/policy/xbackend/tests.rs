//! XBackendTrafficPolicy translation: what reaches each route entry (retry budget, session
//! persistence), precedence with the rule's own fields and BackendTrafficPolicy, traffic
//! splitting, conflicts, missing targets, invalid values and the status ancestors.

use std::time::Duration;

use weir_snapshot::{BackendPolicy, RetryBudget, SessionCarrier};
use weir_store::Kind;

use crate::policy::fixture::{self, action, gateway};
use crate::tests::{is, status};
use crate::Output;

/// Gateway `gw` (port 80); Services `svc`, `plain` and `ghost-user` (the last has no
/// policy); HTTPRoute `r`, one rule per case.
const WORLD: &str = concat!(
    gateway!(),
    "---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: ns}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: retry
    matches: [{path: {type: PathPrefix, value: /retry}}]
    backendRefs: [{name: svc, port: 80}]
    retry: {attempts: 2, codes: [503]}
  - name: session
    matches: [{path: {type: PathPrefix, value: /session}}]
    backendRefs: [{name: svc, port: 80}]
  - name: own
    matches: [{path: {type: PathPrefix, value: /own}}]
    backendRefs: [{name: svc, port: 80}]
    retry: {attempts: 2, codes: [503]}
    sessionPersistence: {sessionName: mine}
  - name: split
    matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: plain, port: 80}, {name: svc, port: 80}]
  - name: plain
    matches: [{path: {type: PathPrefix, value: /plain}}]
    backendRefs: [{name: plain, port: 80}]
    retry: {attempts: 2, codes: [503]}
  - name: btp
    matches: [{path: {type: PathPrefix, value: /btp}}]
    backendRefs: [{name: svc, port: 80}]
"
);

const SVC: &str = "{group: '', kind: Service, name: svc}";

fn policy(name: &str, created: &str, targets: &str, spec: &str) -> String {
    fixture::policy(Kind::XBackendTrafficPolicy, name, created, targets, spec)
}

const FULL: &str = "
  retryConstraint:
    budget: {percent: 30, interval: 5s}
    minRetryRate: {count: 3, interval: 2s}
  sessionPersistence: {}";

/// A BackendTrafficPolicy on rule `btp` with its own retry and budget.
fn btp() -> String {
    fixture::policy(
        Kind::BackendTrafficPolicy,
        "weir-btp",
        "2024-01-01T00:00:00Z",
        "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: btp}]",
        "
  retry:
    numRetries: 2
    budget: {percent: 50}",
    )
}

fn translate(extra: &[String]) -> Output {
    fixture::translate(WORLD, extra)
}

fn policy_of<'a>(out: &'a Output, path: &str) -> Option<&'a BackendPolicy> {
    action(out, path).policy.as_deref()
}

fn accepted(out: &Output, name: &str) -> (String, String) {
    fixture::condition(out, Kind::XBackendTrafficPolicy, name, "Accepted")
}

fn message(out: &Output, name: &str) -> String {
    fixture::message(out, Kind::XBackendTrafficPolicy, name)
}

#[test]
fn a_service_policy_reaches_the_entries_that_use_the_service() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        &format!("[{SVC}]"),
        FULL,
    )]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));

    // A rule that retries gets the budget (and the Service's session).
    let p = policy_of(&out, "/retry").expect("a policy");
    assert_eq!(
        p.retry_budget,
        Some(RetryBudget {
            percent: 30,
            interval: Duration::from_secs(5),
            min_count: 3,
            min_interval: Duration::from_secs(2),
        })
    );
    assert_eq!(p.retry.as_ref().map(|r| r.num_retries), Some(2));
    let s = p.session.as_deref().expect("a session");
    assert_eq!(s.carrier, SessionCarrier::Cookie);
    assert_eq!(s.path, None, "a Service-level session has no cookie Path");
    assert!(s.name.starts_with("weir-session-"), "{}", s.name);

    // A rule without retries: the session only (a budget would limit nothing).
    let p = policy_of(&out, "/session").expect("a policy");
    assert!(p.retry_budget.is_none() && p.retry.is_none());
    let session = p.session.as_deref().expect("a session");
    assert_eq!(session.name, s.name, "the name is the Service's");
    assert_eq!(
        session.scope, s.scope,
        "rules with the same backends share sessions"
    );

    // A Service without a policy: nothing, not even an empty policy.
    assert!(policy_of(&out, "/plain").unwrap().session.is_none());
    assert!(policy_of(&out, "/plain").unwrap().retry_budget.is_none());
}

#[test]
fn routes_without_a_policy_pay_nothing() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        &format!("[{SVC}]"),
        FULL,
    )]);
    // Rule `plain` has a retry (its own policy) but no budget; a rule to `plain` without
    // retry has no policy at all.
    let out_none = translate(&[]);
    assert!(policy_of(&out_none, "/session").is_none());
    assert!(policy_of(&out_none, "/split").is_none());
    assert_eq!(
        policy_of(&out, "/plain").map(|p| p.id),
        policy_of(&out_none, "/plain").map(|p| p.id),
        "an entry of a Service without a policy keeps its own"
    );
}

#[test]
fn the_rule_and_backend_traffic_policy_beat_the_service() {
    let out = translate(&[
        policy("p", "2024-01-01T00:00:00Z", &format!("[{SVC}]"), FULL),
        btp(),
    ]);
    // The rule's own sessionPersistence wins; the Service's budget still applies.
    let p = policy_of(&out, "/own").expect("a policy");
    let s = p.session.as_deref().expect("the rule's session");
    assert_eq!(&*s.name, "mine");
    assert_eq!(
        s.path.as_deref(),
        Some("/own"),
        "the rule's cookie has its Path"
    );
    assert_eq!(p.retry_budget.map(|b| b.percent), Some(30));

    // BackendTrafficPolicy's retry.budget beats retryConstraint; the session is added.
    let p = policy_of(&out, "/btp").expect("a policy");
    assert_eq!(p.retry_budget.map(|b| b.percent), Some(50));
    assert_eq!(p.retry.as_ref().map(|r| r.num_retries), Some(2));
    assert!(p.session.as_deref().is_some_and(|s| s.path.is_none()));
}

#[test]
fn a_split_rule_gets_the_session_for_all_its_backends() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        &format!("[{SVC}]"),
        FULL,
    )]);
    let split = policy_of(&out, "/split").expect("a policy");
    let s = split.session.as_deref().expect("a session");
    let alone = policy_of(&out, "/session")
        .unwrap()
        .session
        .clone()
        .unwrap();
    assert_eq!(s.name, alone.name, "the settings of svc's policy");
    assert_ne!(
        s.scope, alone.scope,
        "other backends: the session's backend index means something else"
    );
}

#[test]
fn one_policy_per_service_the_oldest_wins() {
    let out = translate(&[
        policy(
            "newer",
            "2024-06-01T00:00:00Z",
            &format!("[{SVC}]"),
            "  sessionPersistence: {sessionName: newer}",
        ),
        policy(
            "older",
            "2024-01-01T00:00:00Z",
            &format!("[{SVC}]"),
            "  sessionPersistence: {sessionName: older}",
        ),
    ]);
    assert_eq!(accepted(&out, "older"), is("True", "Accepted"));
    assert_eq!(accepted(&out, "newer"), is("False", "Conflicted"));
    let p = policy_of(&out, "/session").expect("a policy");
    assert_eq!(&*p.session.as_deref().unwrap().name, "older");
}

#[test]
fn a_missing_service_is_target_not_found() {
    let world = format!(
        "{}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ghost-user, namespace: ns}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /ghost}}}}]
    backendRefs: [{{name: ghost, port: 80}}]
",
        policy(
            "p",
            "2024-01-01T00:00:00Z",
            "[{group: '', kind: Service, name: ghost}]",
            "  sessionPersistence: {}",
        )
    );
    let out = translate(&[world]);
    assert_eq!(accepted(&out, "p"), is("False", "TargetNotFound"));
    assert!(
        message(&out, "p").contains("ns/ghost"),
        "{}",
        message(&out, "p")
    );
    assert!(policy_of(&out, "/session").is_none());
}

#[test]
fn invalid_targets_and_values_are_named() {
    for (targets, spec, needle) in [
        (
            format!("[{SVC}, {{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]"),
            "  sessionPersistence: {}",
            "spec.targetRefs[1]: gateway.networking.k8s.io \"Gateway\" gw",
        ),
        (
            format!("[{SVC}]"),
            "  retryConstraint: {budget: {percent: 101}}",
            "spec.retryConstraint.budget.percent 101",
        ),
        (
            format!("[{SVC}]"),
            "  retryConstraint: {budget: {interval: 2h}}",
            "spec.retryConstraint.budget.interval",
        ),
        (
            format!("[{SVC}]"),
            "  retryConstraint: {minRetryRate: {count: 0}}",
            "spec.retryConstraint.minRetryRate.count 0",
        ),
        (
            format!("[{SVC}]"),
            "  sessionPersistence: {cookieConfig: {lifetimeType: Permanent}}",
            "spec.sessionPersistence: absoluteTimeout must be specified",
        ),
        (
            format!("[{SVC}]"),
            "  sessionPersistence: {sessionName: 'a b'}",
            "spec.sessionPersistence: sessionName",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", &targets, spec)]);
        let s = status(&out, Kind::XBackendTrafficPolicy, "ns", "p");
        let lines = s.condition_lines();
        let (_, _, st, reason, msg) = lines.first().expect("a condition").clone();
        assert_eq!(
            (st.as_str(), reason.as_str()),
            ("False", "Invalid"),
            "{spec}"
        );
        assert!(msg.contains(needle), "{needle}: {msg}");
        assert!(
            policy_of(&out, "/session").is_none(),
            "a refused policy applies to nothing"
        );
    }
}
