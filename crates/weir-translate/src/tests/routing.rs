//! Compiled routing: precedence, filters, backends, endpoints, timeouts.

use std::time::Duration;

use http::{Method, StatusCode};
use weir_snapshot::{AppProtocol, BackendTarget, Filter, PathModifier, RedirectScheme};

use super::*;

const GW: &str = "  - {name: http, port: 80, protocol: HTTP}";

fn route(name: &str, created: &str, rules: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default, creationTimestamp: '{created}'}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
{rules}
"
    )
}

fn out_with(routes: &[String]) -> Output {
    let mut docs = vec![gateway("gw", GW), SERVICES.to_string()];
    docs.extend(routes.iter().cloned());
    run_yaml(&docs.join("---\n"))
}

const T1: &str = "2024-01-01T00:00:00Z";
const T2: &str = "2024-02-01T00:00:00Z";

#[test]
fn exact_beats_longer_prefix_and_longer_prefix_beats_shorter() {
    let out = out_with(&[
        route("prefix-short", T1, "  - matches: [{path: {type: PathPrefix, value: /a}}]\n    backendRefs: [{name: svc-a, port: 80}]"),
        route("prefix-long", T2, "  - matches: [{path: {type: PathPrefix, value: /a/b}}]\n    backendRefs: [{name: svc-a, port: 80}]"),
        route("exact", T2, "  - matches: [{path: {type: Exact, value: /a/b/c}}]\n    backendRefs: [{name: svc-a, port: 80}]"),
    ]);
    assert_eq!(hit(&out, 80, &get("h", "/a/b/c")), "default/exact#0");
    assert_eq!(hit(&out, 80, &get("h", "/a/b/d")), "default/prefix-long#0");
    assert_eq!(hit(&out, 80, &get("h", "/a/x")), "default/prefix-short#0");
    assert_eq!(
        hit(&out, 80, &get("h", "/ab")),
        "404",
        "prefixes match whole segments"
    );
}

/// The proxy matches normalised request paths (`weir_snapshot::path`): Exact and PathPrefix
/// values are normalised the same way, or a value spelling a path another way never matches.
#[test]
fn path_values_are_normalised_like_request_paths() {
    let out = out_with(&[
        route("exact", T1, "  - matches: [{path: {type: Exact, value: '/%61dmin'}}]\n    backendRefs: [{name: svc-a, port: 80}]"),
        route("prefix", T1, "  - matches: [{path: {type: PathPrefix, value: '/docs/./v%31'}}]\n    backendRefs: [{name: svc-a, port: 80}]"),
    ]);
    assert_eq!(hit(&out, 80, &get("h", "/admin")), "default/exact#0");
    assert_eq!(hit(&out, 80, &get("h", "/docs/v1/x")), "default/prefix#0");
    assert_eq!(hit(&out, 80, &get("h", "/docs/v2")), "404");
}

#[test]
fn method_beats_headers_beats_query_params() {
    let out = out_with(&[
        route("query", T1, "  - matches: [{path: {value: /p}, queryParams: [{name: q, value: '1'}, {name: r, value: '2'}]}]\n    backendRefs: [{name: svc-a, port: 80}]"),
        route("headers", T1, "  - matches: [{path: {value: /p}, headers: [{name: X-A, value: a}]}]\n    backendRefs: [{name: svc-a, port: 80}]"),
        route("method", T2, "  - matches: [{path: {value: /p}, method: POST}]\n    backendRefs: [{name: svc-a, port: 80}]"),
    ]);
    let mut req = get("h", "/p?q=1&r=2");
    req.headers = vec![("x-a", "a")];
    assert_eq!(hit(&out, 80, &req), "default/headers#0");
    req.method = Method::POST;
    assert_eq!(hit(&out, 80, &req), "default/method#0");
    assert_eq!(hit(&out, 80, &get("h", "/p?q=1&r=2")), "default/query#0");
    assert_eq!(hit(&out, 80, &get("h", "/p?q=1")), "404");
}

#[test]
fn more_headers_win_and_regex_headers_are_anchored() {
    let out = out_with(&[route(
        "r",
        T1,
        "  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{headers: [{name: version, value: one}, {name: color, type: RegularExpression, value: 'bl.e'}]}]
    backendRefs: [{name: svc-a, port: 80}]",
    )]);
    let mut req = get("h", "/");
    req.headers = vec![("Version", "one"), ("Color", "blue")];
    assert_eq!(hit(&out, 80, &req), "default/r#1");
    req.headers = vec![("Version", "one"), ("Color", "dark-blue")];
    assert_eq!(hit(&out, 80, &req), "default/r#0");
}

#[test]
fn ties_go_to_the_older_route_then_by_name_then_rule_order() {
    let rule = "  - matches: [{path: {value: /same}}]\n    backendRefs: [{name: svc-a, port: 80}]";
    let out = out_with(&[route("b-old", T1, rule), route("a-new", T2, rule)]);
    assert_eq!(hit(&out, 80, &get("h", "/same")), "default/b-old#0");
    let out = out_with(&[route("b", T1, rule), route("a", T1, rule)]);
    assert_eq!(hit(&out, 80, &get("h", "/same")), "default/a#0");
    let two_rules = format!("{rule}\n{rule}");
    let out = out_with(&[route("r", T1, &two_rules)]);
    assert_eq!(hit(&out, 80, &get("h", "/same")), "default/r#0");
    // A route without a creation timestamp counts as the newest.
    let no_time =
        route("a-undated", T1, rule).replace(", creationTimestamp: '2024-01-01T00:00:00Z'", "");
    let out = out_with(&[no_time, route("z-dated", T2, rule)]);
    assert_eq!(hit(&out, 80, &get("h", "/same")), "default/z-dated#0");
}

#[test]
fn specific_host_routes_beat_catch_all_routes() {
    let out = out_with(&[
        route("any", T1, "  - matches: [{path: {type: Exact, value: /x}}]\n    backendRefs: [{name: svc-a, port: 80}]"),
        route("host", T2, "  - backendRefs: [{name: svc-a, port: 80}]").replace("spec:\n", "spec:\n  hostnames: [h.example]\n"),
    ]);
    assert_eq!(hit(&out, 80, &get("h.example", "/x")), "default/host#0");
    assert_eq!(hit(&out, 80, &get("other.example", "/x")), "default/any#0");
}

#[test]
fn rule_without_matches_is_prefix_root_and_defaults_apply() {
    let out = out_with(&[route(
        "r",
        T1,
        "  - backendRefs: [{name: svc-a, port: 80}, {name: svc-b, port: 80, weight: 0}]",
    )]);
    let e = super::route(&out, 80, &get("h", "/anything/at/all")).expect("entry");
    assert_eq!(e.rank.path_kind, 2);
    assert_eq!(e.action.total_weight, 1);
    assert_eq!(
        backends(&out, 80, &get("h", "/")),
        vec![
            ("default/svc-a:80".to_string(), 1),
            ("default/svc-b:80".to_string(), 0)
        ]
    );
}

#[test]
fn weights_are_kept() {
    let out = out_with(&[route("r", T1, "  - backendRefs: [{name: svc-a, port: 80, weight: 70}, {name: svc-b, port: 80, weight: 30}]")]);
    assert_eq!(
        backends(&out, 80, &get("h", "/")),
        vec![
            ("default/svc-a:80".to_string(), 70),
            ("default/svc-b:80".to_string(), 30)
        ]
    );
    let e = super::route(&out, 80, &get("h", "/")).expect("entry");
    assert_eq!(e.action.total_weight, 100);
}

#[test]
fn filters_compile_in_order_on_rules_and_backends() {
    let out = out_with(&[route(
        "r",
        T1,
        "  - matches: [{path: {value: /mod}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: s}]
        add: [{name: X-Add, value: a}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-Resp, value: r}]}
    backendRefs:
    - name: svc-a
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: b}]}}]",
    )]);
    let e = super::route(&out, 80, &get("h", "/mod")).expect("entry");
    match &e.action.filters[..] {
        [Filter::RequestHeader(req), Filter::ResponseHeader(resp)] => {
            assert_eq!(req.set[0].0.as_str(), "x-set");
            assert_eq!(req.set[0].1, "s");
            assert_eq!(req.add[0].0.as_str(), "x-add");
            assert_eq!(req.remove[0].as_str(), "x-remove");
            assert_eq!(resp.add[0].0.as_str(), "x-resp");
        }
        other => panic!("unexpected filters {other:?}"),
    }
    match &e.action.backends[0].filters[..] {
        [Filter::RequestHeader(m)] => assert_eq!(m.set[0].0.as_str(), "x-backend"),
        other => panic!("unexpected backend filters {other:?}"),
    }
}

#[test]
fn redirects_compile_with_defaults_and_the_matched_prefix() {
    let out = out_with(&[route(
        "r",
        T1,
        "  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
  - matches: [{path: {type: Exact, value: /secure}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org, port: 8443, statusCode: 301}}]",
    )]);
    let e = super::route(&out, 80, &get("h", "/old/page")).expect("entry");
    let Filter::Redirect(r) = &e.action.filters[0] else {
        panic!("not a redirect: {:?}", e.action.filters);
    };
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.path,
        Some(PathModifier::ReplacePrefixMatch {
            matched_prefix: "/old".into(),
            replacement: "/new".into()
        })
    );
    assert_eq!(
        r.path.as_ref().map(|p| p.apply("/old/page")),
        Some("/new/page".to_string())
    );
    let e = super::route(&out, 80, &get("h", "/secure")).expect("entry");
    let Filter::Redirect(r) = &e.action.filters[0] else {
        panic!("not a redirect");
    };
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.scheme, Some(RedirectScheme::Https));
    assert_eq!(r.hostname.as_deref(), Some("example.org"));
    assert_eq!(r.port, Some(8443));
    assert!(e.action.backends.is_empty());
}

#[test]
fn url_rewrites_compile_per_match() {
    let out = out_with(&[route(
        "r",
        T1,
        "  - matches: [{path: {value: /one}}, {path: {value: /two}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: rewritten.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /full}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}}]
    backendRefs: [{name: svc-a, port: 80}]",
    )]);
    for (path, prefix) in [("/one/a", "/one"), ("/two/a", "/two")] {
        let e = super::route(&out, 80, &get("h", path)).expect("entry");
        let Filter::UrlRewrite(r) = &e.action.filters[0] else {
            panic!("not a rewrite");
        };
        assert_eq!(
            r.hostname.as_ref().map(|h| h.to_str().unwrap_or("")),
            Some("rewritten.example")
        );
        assert_eq!(
            r.path,
            Some(PathModifier::ReplacePrefixMatch {
                matched_prefix: prefix.into(),
                replacement: "/x".into()
            })
        );
    }
    let e = super::route(&out, 80, &get("h", "/full/zzz")).expect("entry");
    let Filter::UrlRewrite(r) = &e.action.filters[0] else {
        panic!("not a rewrite");
    };
    assert_eq!(
        r.path,
        Some(PathModifier::ReplaceFullPath("/replaced".into()))
    );
}

#[test]
fn timeouts_parse_and_zero_means_none() {
    let out = out_with(&[route(
        "r",
        T1,
        "  - matches: [{path: {value: /a}}]
    timeouts: {request: 10s, backendRequest: 500ms}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /b}}]
    timeouts: {request: 0s}
    backendRefs: [{name: svc-a, port: 80}]",
    )]);
    let e = super::route(&out, 80, &get("h", "/a")).expect("entry");
    assert_eq!(e.action.timeouts.request, Some(Duration::from_secs(10)));
    assert_eq!(
        e.action.timeouts.backend_request,
        Some(Duration::from_millis(500))
    );
    let e = super::route(&out, 80, &get("h", "/b")).expect("entry");
    assert_eq!(e.action.timeouts.request, None);
}

#[test]
fn endpoints_come_from_ready_slice_endpoints_by_port_name_or_target_port() {
    let slices = "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-a-1, namespace: default, labels: {kubernetes.io/service-name: svc-a}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: other, port: 7070}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
  zone: zone-a
- addresses: [10.0.0.2]
  conditions: {ready: false}
- addresses: [10.0.0.3]
  zone: zone-b
  hints: {forZones: [{name: zone-a}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-a-2, namespace: default, labels: {kubernetes.io/service-name: svc-a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-b-1, namespace: default, labels: {kubernetes.io/service-name: svc-b}}
addressType: IPv4
ports: [{port: 9090}]
endpoints:
- addresses: [10.0.1.1]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unrelated, namespace: other, labels: {kubernetes.io/service-name: svc-a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.9.9.9]
";
    let r = route(
        "r",
        T1,
        "  - matches: [{path: {value: /a}}]\n    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /b}}]\n    backendRefs: [{name: svc-b, port: 80}]",
    );
    let out = out_with(&[
        slices.to_string(),
        r.clone(),
        r.replace("name: r,", "name: r2,").replace("/a", "/c"),
    ]);
    let upstream = |path: &str| {
        let e = super::route(&out, 80, &get("h", path)).expect("entry");
        match &e.action.backends[0].target {
            BackendTarget::Upstream(u) => u.clone(),
            BackendTarget::Invalid(why) => panic!("invalid backend: {why}"),
        }
    };
    let a = upstream("/a");
    let addrs: Vec<String> = a.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.1:8080", "10.0.0.3:8080"]);
    assert_eq!(a.protocol, AppProtocol::Http1);
    // Zones and hints, for zoneAware: hints decide where present.
    assert_eq!(a.zones.len(), 2);
    assert_eq!(a.zones[0].zone.as_deref(), Some("zone-a"));
    assert!(a.zones[0].serves("zone-a") && !a.zones[0].serves("zone-b"));
    assert_eq!(a.zones[1].zone.as_deref(), Some("zone-b"));
    assert!(a.zones[1].serves("zone-a") && !a.zones[1].serves("zone-b"));
    // One upstream per (service, port), shared by routes.
    assert!(std::sync::Arc::ptr_eq(&a, &upstream("/c")));
    let b = upstream("/b");
    let addrs: Vec<String> = b.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.0.1.1:9090"]);
    assert_eq!(b.protocol, AppProtocol::H2c);
    assert_eq!(&*b.name, "default/svc-b:80");
    assert!(b.zones.is_empty(), "no zones in its slice");
}
