//! `rateLimit` translation: rules and selectors reach each route rule with its own scope,
//! invalid values and unknown fields are refused by name, global needs a Redis.

use http::{HeaderMap, HeaderName, Method};
use weir_snapshot::rate_limit::Client;
use weir_snapshot::HeaderSelector;

use super::{accepted, message, policy, policy_of, translate, GW, ROUTE, WORLD};
use crate::tests::{is, run_full, store_with_class};

const LOCAL: &str = "
  rateLimit:
    type: Local
    local:
      rules:
      - clientSelectors:
        - headers:
          - {name: x-user, type: Distinct}
          - {name: x-plan, type: RegularExpression, value: 'fr.*'}
          - {name: x-internal, value: 'yes', invert: true}
          methods: [{value: GET}, {value: HEAD}]
          path: {type: PathPrefix, value: /a}
          sourceCIDR: {type: Distinct, value: 10.0.0.0/8}
        limit: {requests: 5, unit: Minute}
      - limit: {requests: 100, unit: Second}
        shared: true
";

#[test]
fn local_rules_compile_with_every_selector() {
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, LOCAL)]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let rl = policy_of(&out, "/a")
        .and_then(|p| p.rate_limit.as_ref())
        .expect("a rate limit");
    assert!(rl.global.is_empty());
    assert_eq!(rl.local.len(), 2);
    let first = &rl.local[0];
    assert_eq!(first.limit.requests, 5);
    assert_eq!(first.limit.unit, std::time::Duration::from_secs(60));
    assert!(first.is_distinct());
    let s = &first.selectors[0];
    assert!(matches!(&s.headers[0], HeaderSelector::Distinct(n) if n == "x-user"));
    assert_eq!(s.methods.len(), 2);
    assert!(s.source.is_some_and(|c| c.distinct));
    // The regex is compiled anchored: `fr.*` matches `free`, not `xfree`.
    let mut h = HeaderMap::new();
    h.insert("x-user", "u".parse().unwrap());
    h.insert("x-plan", "free".parse().unwrap());
    let c = Client {
        method: &Method::GET,
        path: "/a/b",
        headers: &h,
        address: "10.0.0.1".parse().unwrap(),
    };
    assert!(first.select(&c, &mut |_| {}));
    let mut h2 = h.clone();
    h2.insert("x-plan", "xfree".parse().unwrap());
    let c = Client { headers: &h2, ..c };
    assert!(!first.select(&c, &mut |_| {}));
    assert!(rl.local[1].shared && !rl.local[1].is_distinct());
    // Each route rule counts apart (its own scope); rule ids are the policy's.
    let other = policy_of(&out, "/o")
        .and_then(|p| p.rate_limit.as_ref())
        .expect("a rate limit");
    assert_ne!(rl.scope, other.scope);
    assert_eq!(rl.local[0].id, other.local[0].id);
    assert_ne!(rl.local[0].id, rl.local[1].id);
    let again = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, LOCAL)]);
    let same = policy_of(&again, "/a").and_then(|p| p.rate_limit.as_ref());
    assert_eq!(
        same.map(|r| r.scope),
        Some(rl.scope),
        "stable across translations"
    );
}

#[test]
fn global_rules_need_a_redis() {
    let spec = "
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
        limit: {requests: 10, unit: Hour}
";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", ROUTE, spec)]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let rl = policy_of(&out, "/a")
        .and_then(|p| p.rate_limit.as_ref())
        .expect("a rate limit");
    assert_eq!(rl.global.len(), 1);
    let store = store_with_class(&format!(
        "{WORLD}{}",
        policy("p", "2024-01-01T00:00:00Z", ROUTE, spec)
    ));
    let without = run_full(
        &store,
        Default::default(),
        &crate::Addressing::Shared,
        false,
    );
    assert_eq!(accepted(&without, "p"), is("False", "Invalid"));
    let m = message(&without, "p");
    assert!(m.contains("--rate-limit-redis"), "{m}");
    assert!(policy_of(&without, "/a").is_none());
    // Local rules need no Redis.
    let local = store_with_class(&format!(
        "{WORLD}{}",
        policy("p", "2024-01-01T00:00:00Z", ROUTE, LOCAL)
    ));
    let out = run_full(
        &local,
        Default::default(),
        &crate::Addressing::Shared,
        false,
    );
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
}

#[test]
fn invalid_rate_limits_are_refused_naming_the_field() {
    for (spec, field) in [
        ("  rateLimit: {type: Local}", "spec.rateLimit.local"),
        ("  rateLimit: {}", "spec.rateLimit"),
        (
            "  rateLimit: {type: Sometimes, local: {rules: [{limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.type",
        ),
        ("  rateLimit: {local: {rules: []}}", "spec.rateLimit.local.rules"),
        (
            "  rateLimit: {local: {rules: [{limit: {requests: 0, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].limit.requests",
        ),
        (
            "  rateLimit: {local: {rules: [{limit: {requests: 1, unit: Fortnight}}]}}",
            "spec.rateLimit.local.rules[0].limit.unit",
        ),
        (
            "  rateLimit: {local: {rules: [{}]}}",
            "spec.rateLimit.local.rules[0].limit",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0]",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{headers: [{name: x, type: RegularExpression, value: '(' }]}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].headers[0].value",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{headers: [{name: x, type: Distinct, value: a}]}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].headers[0]",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{headers: [{name: x}]}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].headers[0].value",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{headers: [{name: 'a b', value: x}]}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].headers[0].name",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{sourceCIDR: {value: 10.0.0.0/40}}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].sourceCIDR.value",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{sourceCIDR: {type: Each, value: 10.0.0.0/8}}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].sourceCIDR.type",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{path: {type: Exact, value: nope}}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].path.value",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{methods: [{value: 'G T'}]}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].methods[0].value",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(accepted(&out, "p"), is("False", "Invalid"), "{spec}");
        let m = message(&out, "p");
        assert!(m.contains(field), "{spec}: {m}");
        assert!(policy_of(&out, "/a").is_none(), "{spec}");
    }
}

#[test]
fn rate_limit_fields_not_implemented_are_refused_by_name() {
    for (spec, field) in [
        (
            "  rateLimit: {local: {rules: [{limit: {requests: 1, unit: Second}, cost: {request: {from: Number, number: 2}}}]}}",
            "spec.rateLimit.local.rules[0].cost",
        ),
        (
            "  rateLimit: {global: {rules: [{limit: {requests: 1, unit: Second}, shadowMode: true}]}}",
            "spec.rateLimit.global.rules[0].shadowMode",
        ),
        (
            "  rateLimit: {local: {rules: [{clientSelectors: [{headers: [{name: x, value: y, caseSensitive: true}]}], limit: {requests: 1, unit: Second}}]}}",
            "spec.rateLimit.local.rules[0].clientSelectors[0].headers[0].caseSensitive",
        ),
        (
            "  rateLimit: {local: {rules: [{limit: {requests: 1, unit: Second}}]}, burst: 3}",
            "spec.rateLimit.burst",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(
            accepted(&out, "p"),
            is("False", "UnsupportedValue"),
            "{spec}"
        );
        let m = message(&out, "p");
        assert!(m.contains(field), "{spec}: {m}");
        assert!(policy_of(&out, "/a").is_none(), "{spec}");
    }
    let _ = HeaderName::from_static("x");
}
