//! HTTPRoute attachment and route conditions.

use weir_store::Kind;

use super::*;

fn route(name: &str, ns: &str, parent_refs: &str, extra_spec: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}, generation: 2}}
spec:
  parentRefs: {parent_refs}
{extra_spec}
  rules:
  - backendRefs: [{{name: svc-a, namespace: default, port: 80}}]
"
    )
}

const TWO_LISTENERS: &str = "  - {name: web, port: 80, protocol: HTTP}
  - {name: alt, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}";

#[test]
fn section_name_and_port_select_listeners() {
    let yaml = [
        gateway("gw", TWO_LISTENERS),
        SERVICES.to_string(),
        route(
            "by-section",
            "default",
            "[{name: gw, sectionName: alt}]",
            "",
        ),
        route("by-port", "default", "[{name: gw, port: 80}]", ""),
        route(
            "no-section",
            "default",
            "[{name: gw, sectionName: nope}]",
            "",
        ),
        route("no-port", "default", "[{name: gw, port: 81}]", ""),
        route(
            "mismatch",
            "default",
            "[{name: gw, sectionName: web, port: 8080}]",
            "",
        ),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    let gw = ("default", "gw");
    assert_eq!(
        parent_cond(&out, ("default", "by-section"), gw, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, ("default", "by-port"), gw, "Accepted"),
        is("True", "Accepted")
    );
    for r in ["no-section", "no-port", "mismatch"] {
        assert_eq!(
            parent_cond(&out, ("default", r), gw, "Accepted"),
            is("False", "NoMatchingParent"),
            "{r}"
        );
    }
    assert_eq!(attached(&out, "default", "gw", "alt"), 1);
    assert_eq!(attached(&out, "default", "gw", "web"), 1);
    assert_eq!(hit(&out, 8080, &get("h", "/")), "default/by-section#0");
    assert_eq!(hit(&out, 80, &get("h", "/")), "default/by-port#0");
    // Status parentRef is filled with defaults and keeps sectionName.
    let s = status(&out, Kind::HttpRoute, "default", "by-section");
    let p = &s.status["parents"][0];
    assert_eq!(p["controllerName"], CONTROLLER);
    assert_eq!(
        p["parentRef"],
        serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "namespace": "default", "sectionName": "alt"})
    );
    assert_eq!(p["conditions"][0]["observedGeneration"], 2);
}

#[test]
fn allowed_routes_same_all_and_selector() {
    let listeners = "  - {name: same, port: 80, protocol: HTTP, hostname: same.example}
  - {name: all, port: 80, protocol: HTTP, hostname: all.example, allowedRoutes: {namespaces: {from: All}}}
  - name: sel
    port: 80
    protocol: HTTP
    hostname: sel.example
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {team: a}
          matchExpressions: [{key: env, operator: NotIn, values: [prod]}]
  - name: by-name
    port: 80
    protocol: HTTP
    hostname: byname.example
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [team-b]}]}";
    let namespaces = "
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a, env: dev}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a-prod, labels: {team: a, env: prod}}
";
    let yaml = [
        gateway("gw", listeners),
        SERVICES.to_string(),
        namespaces.to_string(),
        route("local", "default", "[{name: gw, namespace: default}]", ""),
        route("a", "team-a", "[{name: gw, namespace: default}]", ""),
        route(
            "a-prod",
            "team-a-prod",
            "[{name: gw, namespace: default, sectionName: sel}]",
            "",
        ),
        route(
            "b",
            "team-b",
            "[{name: gw, namespace: default, sectionName: by-name}]",
            "",
        ),
        route(
            "c",
            "team-c",
            "[{name: gw, namespace: default, sectionName: same}]",
            "",
        ),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    let gw = ("default", "gw");
    assert_eq!(
        parent_cond(&out, ("default", "local"), gw, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, ("team-a", "a"), gw, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, ("team-a-prod", "a-prod"), gw, "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    assert_eq!(
        parent_cond(&out, ("team-b", "b"), gw, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, ("team-c", "c"), gw, "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    // default/local attaches to same, all (and not to the selector ones).
    assert_eq!(attached(&out, "default", "gw", "same"), 1);
    assert_eq!(attached(&out, "default", "gw", "all"), 2); // local, a
    assert_eq!(attached(&out, "default", "gw", "sel"), 1); // a
    assert_eq!(attached(&out, "default", "gw", "by-name"), 1); // b
    assert_eq!(hit(&out, 80, &get("same.example", "/")), "default/local#0");
    assert_eq!(hit(&out, 80, &get("sel.example", "/")), "team-a/a#0");
}

#[test]
fn hostnames_must_intersect_and_entries_use_the_more_specific_host() {
    let listeners = "  - {name: exact, port: 80, protocol: HTTP, hostname: foo.example.com}
  - {name: wild, port: 80, protocol: HTTP, hostname: '*.wild.com'}
  - {name: any, port: 80, protocol: HTTP}";
    let yaml = [
        gateway("gw", listeners),
        SERVICES.to_string(),
        route(
            "wild-on-exact",
            "default",
            "[{name: gw, sectionName: exact}]",
            "  hostnames: ['*.example.com']",
        ),
        route(
            "exact-on-wild",
            "default",
            "[{name: gw, sectionName: wild}]",
            "  hostnames: [a.b.wild.com]",
        ),
        route(
            "none",
            "default",
            "[{name: gw, sectionName: exact}]",
            "  hostnames: [other.org]",
        ),
        route(
            "on-any",
            "default",
            "[{name: gw, sectionName: any}]",
            "  hostnames: [first.org, '*.second.org']",
        ),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    let gw = ("default", "gw");
    assert_eq!(
        parent_cond(&out, ("default", "none"), gw, "Accepted"),
        is("False", "NoMatchingListenerHostname")
    );
    assert_eq!(attached(&out, "default", "gw", "exact"), 1);
    assert_eq!(
        hit(&out, 80, &get("foo.example.com", "/")),
        "default/wild-on-exact#0"
    );
    assert_eq!(
        hit(&out, 80, &get("a.b.wild.com", "/")),
        "default/exact-on-wild#0"
    );
    assert_eq!(hit(&out, 80, &get("c.b.wild.com", "/")), "404");
    assert_eq!(hit(&out, 80, &get("first.org", "/")), "default/on-any#0");
    assert_eq!(hit(&out, 80, &get("x.second.org", "/")), "default/on-any#0");
    assert_eq!(hit(&out, 80, &get("second.org", "/")), "404");
    assert_eq!(hit(&out, 80, &get("other.org", "/")), "404");
    // The rank carries the effective host's specificity.
    let e = super::route(&out, 80, &get("foo.example.com", "/")).expect("entry");
    assert_eq!(e.rank.hostname, (15, 15));
}

#[test]
fn parent_refs_to_other_kinds_or_foreign_gateways_get_no_status() {
    let yaml = [
        gateway("gw", "  - {name: http, port: 80, protocol: HTTP}"),
        SERVICES.to_string(),
        route(
            "svc-parent",
            "default",
            "[{name: gw, kind: Service, group: ''}]",
            "",
        ),
        route("missing-gw", "default", "[{name: nope}]", ""),
        route("mixed", "default", "[{name: nope}, {name: gw}]", ""),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    assert!(!has_status(&out, Kind::HttpRoute, "default", "svc-parent"));
    assert!(!has_status(&out, Kind::HttpRoute, "default", "missing-gw"));
    let s = status(&out, Kind::HttpRoute, "default", "mixed");
    assert_eq!(s.status["parents"].as_array().map(Vec::len), Some(1));
}

#[test]
fn unresolved_backends_keep_the_route_accepted_and_answer_500_for_their_share() {
    let rules = "  rules:
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: svc-a, port: 80}, {name: ghost, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /kind}}]
    backendRefs: [{name: svc-a, kind: ConfigMap, group: '', port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cross}}]
    backendRefs: [{name: svc-x, namespace: other, port: 80}]";
    let other_svc = "
apiVersion: v1
kind: Service
metadata: {name: svc-x, namespace: other}
spec: {ports: [{port: 80}]}
";
    let r = format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
{rules}
"
    );
    let gw = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    let out = run_yaml(&[gw.clone(), SERVICES.into(), other_svc.into(), r.clone()].join("---\n"));
    let p = (("default", "r"), ("default", "gw"));
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, p.0, p.1, "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    assert_eq!(
        backends(&out, 80, &get("h", "/missing")),
        vec![
            ("default/svc-a:80".to_string(), 1),
            ("invalid".to_string(), 1)
        ]
    );
    assert_eq!(
        backends(&out, 80, &get("h", "/kind")),
        vec![("invalid".to_string(), 1)]
    );
    assert_eq!(
        backends(&out, 80, &get("h", "/cross")),
        vec![("invalid".to_string(), 1)]
    );

    // Each reason on its own.
    let only = |rule: &str| {
        let r = r.replace(rules, rule);
        run_yaml(&[gw.clone(), SERVICES.into(), other_svc.into(), r].join("---\n"))
    };
    let out =
        only("  rules:\n  - backendRefs: [{name: svc-a, kind: ConfigMap, group: '', port: 80}]");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "ResolvedRefs"),
        is("False", "InvalidKind")
    );
    let out = only("  rules:\n  - backendRefs: [{name: svc-x, namespace: other, port: 80}]");
    assert_eq!(
        parent_cond(&out, p.0, p.1, "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(attached(&out, "default", "gw", "http"), 1);

    // A ReferenceGrant from HTTPRoutes in default to Services in other resolves it.
    let grant = "
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: '', kind: Service}]
";
    let r2 = r.replace(
        rules,
        "  rules:\n  - backendRefs: [{name: svc-x, namespace: other, port: 80}]",
    );
    let out = run_yaml(&[gw, SERVICES.into(), other_svc.into(), r2, grant.into()].join("---\n"));
    assert_eq!(
        parent_cond(&out, p.0, p.1, "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(
        backends(&out, 80, &get("h", "/")),
        vec![("other/svc-x:80".to_string(), 1)]
    );
}

#[test]
fn invalid_regex_or_header_name_rejects_the_route() {
    let gw = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    for m in [
        "[{path: {type: RegularExpression, value: '/(unclosed'}}]",
        "[{headers: [{name: 'bad header', value: x}]}]",
        "[{path: {type: PathPrefix, value: no-slash}}]",
    ] {
        let r = format!(
            "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: {m}
    backendRefs: [{{name: svc-a, port: 80}}]
"
        );
        let out = run_yaml(&[gw.clone(), SERVICES.into(), r].join("---\n"));
        assert_eq!(
            parent_cond(&out, ("default", "r"), ("default", "gw"), "Accepted"),
            is("False", "UnsupportedValue"),
            "{m}"
        );
        assert_eq!(hit(&out, 80, &get("h", "/")), "404", "{m}");
        assert_eq!(attached(&out, "default", "gw", "http"), 0);
        let s = status(&out, Kind::HttpRoute, "default", "r");
        assert!(!s.problems().is_empty());
    }
}

#[test]
fn unsupported_filters_answer_500_and_mark_the_route_partially_invalid() {
    let r = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /mirror}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Foo, name: x}}]
    backendRefs: [{name: svc-a, port: 80}]
  - backendRefs: [{name: svc-a, port: 80}]
";
    let gw = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    let out = run_yaml(&[gw.clone(), SERVICES.into(), r.into()].join("---\n"));
    let p = (("default", "r"), ("default", "gw"));
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        parent_cond(&out, p.0, p.1, "PartiallyInvalid"),
        is("True", "UnsupportedValue")
    );
    let e = super::route(&out, 80, &get("h", "/mirror")).expect("entry");
    assert!(
        e.action.backends.is_empty() && e.action.filters.is_empty(),
        "answers 500"
    );
    assert_eq!(
        backends(&out, 80, &get("h", "/x")),
        vec![("default/svc-a:80".to_string(), 1)]
    );

    // Every rule unusable: the route is not accepted.
    let only = r.replace("  - backendRefs: [{name: svc-a, port: 80}]\n", "");
    let out = run_yaml(&[gw, SERVICES.into(), only].join("---\n"));
    assert_eq!(
        parent_cond(&out, p.0, p.1, "Accepted"),
        is("False", "UnsupportedValue")
    );
}

#[test]
fn attached_routes_count_routes_once_per_listener() {
    let yaml = [
        gateway("gw", TWO_LISTENERS),
        SERVICES.to_string(),
        route(
            "twice",
            "default",
            "[{name: gw, sectionName: web}, {name: gw, port: 80}]",
            "",
        ),
        route("whole", "default", "[{name: gw}]", ""),
        route("bad-host", "default", "[{name: gw}]", "  hostnames: ['']"),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    assert_eq!(attached(&out, "default", "gw", "web"), 3);
    assert_eq!(attached(&out, "default", "gw", "alt"), 2);
}

fn regex_route(name: &str, created_s: u32, regex: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default, creationTimestamp: '2025-01-01T00:{:02}:{:02}Z'}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: RegularExpression, value: '{regex}'}}}}]
    backendRefs: [{{name: svc-a, port: 80}}]
",
        created_s / 60,
        created_s % 60
    )
}

#[test]
fn a_regex_over_the_per_pattern_bound_rejects_the_route() {
    let gw = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    // 2.4 MiB compiled: accepted under the regex crate's default 10 MiB bound.
    let yaml = [
        gw,
        SERVICES.into(),
        regex_route("big", 1, r"/big/\w{50}"),
        regex_route("small", 2, r"/small/\w+"),
    ]
    .join("---\n");
    let out = run_yaml(&yaml);
    assert_eq!(
        parent_cond(&out, ("default", "big"), ("default", "gw"), "Accepted"),
        is("False", "UnsupportedValue")
    );
    let s = status(&out, Kind::HttpRoute, "default", "big");
    assert!(
        s.problems().iter().any(|p| p.contains("too large")),
        "{:?}",
        s.problems()
    );
    assert_eq!(hit(&out, 80, &get("h", "/big/abcdefghij")), "404");
    assert_eq!(hit(&out, 80, &get("h", "/small/abc")), "default/small#0");
}

#[test]
fn regexes_are_bounded_in_total_and_the_newest_over_the_budget_is_refused() {
    let gw = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    let mut docs = vec![gw, SERVICES.into()];
    // Each about 0.5 MiB charged: 80 of them are more than the 32 MiB budget.
    const ROUTES: u32 = 80;
    for i in 0..ROUTES {
        docs.push(regex_route(
            &format!("r{i:02}"),
            i,
            &format!(r"/r{i:02}/\w{{4}}"),
        ));
    }
    // The newest route of all has no regex: the budget is no concern of it.
    docs.push(route(
        "plain",
        "default",
        "[{name: gw}]",
        "  hostnames: [plain.example]",
    ));
    let store = store_with_class(&docs.join("---\n"));
    let out = run(&store);
    let accepted: Vec<bool> = (0..ROUTES)
        .map(|i| {
            let name = format!("r{i:02}");
            parent_cond(&out, ("default", &name), ("default", "gw"), "Accepted").0 == "True"
        })
        .collect();
    let served = accepted.iter().take_while(|a| **a).count();
    // The oldest are served, then every one after is refused.
    assert!(served > 20 && served < ROUTES as usize, "{served} served");
    assert!(accepted[served..].iter().all(|a| !a), "{accepted:?}");
    let last = format!("r{:02}", ROUTES - 1);
    assert_eq!(
        parent_cond(&out, ("default", &last), ("default", "gw"), "Accepted"),
        is("False", "UnsupportedValue")
    );
    let s = status(&out, Kind::HttpRoute, "default", &last);
    assert!(
        s.problems().iter().any(|p| p.contains("does not fit")),
        "{:?}",
        s.problems()
    );
    assert_eq!(hit(&out, 80, &get("h", "/r00/abcd")), "default/r00#0");
    assert_eq!(hit(&out, 80, &get("h", &format!("/{last}/abcd"))), "404");
    assert_eq!(
        parent_cond(&out, ("default", "plain"), ("default", "gw"), "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(hit(&out, 80, &get("plain.example", "/")), "default/plain#0");

    // With the memo of the translation before: the same outcome (a route with a regex
    // is never replayed, since what it may use depends on the routes before it).
    let again = run_with(&store, out.memo);
    assert_eq!(again.statuses, run(&store).statuses);
}
