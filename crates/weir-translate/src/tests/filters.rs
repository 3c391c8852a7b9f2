//! HTTPRoute extended filters: RequestMirror (and its backendRef), backendRef filters.

use weir_snapshot::Filter;

use super::*;

fn mirror_route(mirror: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default, generation: 1}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - filters: [{{type: RequestMirror, requestMirror: {mirror}}}]
    backendRefs: [{{name: svc-a, port: 80}}]
"
    )
}

fn out_for(route: &str) -> Output {
    let gw = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}");
    run_yaml(&[gw, SERVICES.into(), route.into()].join("---\n"))
}

const R: (&str, &str) = ("default", "r");
const GW: (&str, &str) = ("default", "gw");

fn mirrors(out: &Output) -> Vec<(String, (u64, u64))> {
    let e = super::route(out, 80, &get("h", "/")).expect("entry");
    e.action
        .filters
        .iter()
        .filter_map(|f| match f {
            Filter::Mirror(m) => Some((m.upstream.name.to_string(), m.sample.fraction())),
            _ => None,
        })
        .collect()
}

#[test]
fn request_mirror_resolves_its_backend_and_keeps_the_share() {
    let out = out_for(&mirror_route("{backendRef: {name: svc-b, port: 80}}"));
    assert_eq!(parent_cond(&out, R, GW, "Accepted"), is("True", "Accepted"));
    assert_eq!(
        parent_cond(&out, R, GW, "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(mirrors(&out), [("default/svc-b:80".to_string(), (1, 1))]);
    assert_eq!(
        backends(&out, 80, &get("h", "/")),
        vec![("default/svc-a:80".to_string(), 1)]
    );

    let out = out_for(&mirror_route(
        "{backendRef: {name: svc-b, port: 80}, percent: 20}",
    ));
    assert_eq!(mirrors(&out), [("default/svc-b:80".to_string(), (20, 100))]);
    let out = out_for(&mirror_route(
        "{backendRef: {name: svc-b, port: 80}, fraction: {numerator: 25, denominator: 50}}",
    ));
    assert_eq!(mirrors(&out), [("default/svc-b:80".to_string(), (25, 50))]);
    let out = out_for(&mirror_route(
        "{backendRef: {name: svc-b, port: 80}, fraction: {numerator: 3}}",
    ));
    assert_eq!(mirrors(&out), [("default/svc-b:80".to_string(), (3, 100))]);
}

/// HTTPRequestMirrorFilter.backendRef: a referent that cannot be found is dropped and the
/// route's ResolvedRefs is False; the rule itself keeps serving.
#[test]
fn request_mirror_to_a_missing_service_is_backend_not_found_and_mirrors_nothing() {
    let out = out_for(&mirror_route("{backendRef: {name: nope, port: 80}}"));
    assert_eq!(parent_cond(&out, R, GW, "Accepted"), is("True", "Accepted"));
    assert_eq!(
        parent_cond(&out, R, GW, "ResolvedRefs"),
        is("False", "BackendNotFound")
    );
    assert!(mirrors(&out).is_empty());
    assert_eq!(
        backends(&out, 80, &get("h", "/")),
        vec![("default/svc-a:80".to_string(), 1)]
    );
}

/// A cross-namespace mirror without a ReferenceGrant: RefNotPermitted.
#[test]
fn request_mirror_across_namespaces_needs_a_reference_grant() {
    let out = out_for(&mirror_route(
        "{backendRef: {name: svc-b, namespace: other, port: 80}}",
    ));
    assert_eq!(
        parent_cond(&out, R, GW, "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    assert!(mirrors(&out).is_empty());
}

/// A fraction above one (what the CRD's validation rejects) makes the route unusable.
#[test]
fn request_mirror_fraction_above_one_is_unsupported_value() {
    let out = out_for(&mirror_route(
        "{backendRef: {name: svc-b, port: 80}, fraction: {numerator: 3, denominator: 2}}",
    ));
    assert_eq!(
        parent_cond(&out, R, GW, "Accepted"),
        is("False", "UnsupportedValue")
    );
}

/// Filters on a backendRef apply only when that backend is picked.
#[test]
fn backend_ref_filters_compile_per_backend() {
    let r = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: svc-a
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Backend, value: a}]}}]
    - name: svc-b
      port: 80
      filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc-a, port: 80}}}]
";
    let out = out_for(r);
    assert_eq!(parent_cond(&out, R, GW, "Accepted"), is("True", "Accepted"));
    let e = super::route(&out, 80, &get("h", "/")).expect("entry");
    assert!(e.action.filters.is_empty());
    let [a, b] = &e.action.backends[..] else {
        panic!("two backends")
    };
    assert!(matches!(&a.filters[..], [Filter::RequestHeader(m)] if m.set.len() == 1));
    assert!(
        matches!(&b.filters[..], [Filter::Mirror(m)] if &*m.upstream.name == "default/svc-a:80")
    );
}

fn cors_route(cors: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default, generation: 1}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - filters: [{{type: CORS, cors: {cors}}}]
    backendRefs: [{{name: svc-a, port: 80}}]
"
    )
}

#[test]
fn cors_filter_compiles_origins_and_lists() {
    let out = out_for(&cors_route(
        "{allowOrigins: ['https://*.bar.com'], allowMethods: [GET, OPTIONS], allowHeaders: ['*'], maxAge: 60, allowCredentials: true}",
    ));
    assert_eq!(parent_cond(&out, R, GW, "Accepted"), is("True", "Accepted"));
    let e = super::route(&out, 80, &get("h", "/")).expect("entry");
    let [Filter::Cors(c)] = &e.action.filters[..] else {
        panic!("one CORS filter: {:?}", e.action.filters)
    };
    assert!(c.allows("https://a.b.bar.com") && !c.allows("https://bar.com"));
    assert_eq!(
        c.allow_methods,
        weir_snapshot::CorsList::List(http::HeaderValue::from_static("GET, OPTIONS"))
    );
    assert_eq!(c.allow_headers, weir_snapshot::CorsList::Any);
    assert_eq!(c.max_age.as_ref().map(|v| v.as_bytes()), Some(&b"60"[..]));
    assert!(c.allow_credentials);
}

/// An origin that is not `*` or http(s)://host[:port] (what the CRD's validation rejects)
/// makes the route unusable: UnsupportedValue.
#[test]
fn cors_filter_with_an_unusable_origin_is_unsupported_value() {
    let out = out_for(&cors_route("{allowOrigins: ['ftp://files.example']}"));
    assert_eq!(
        parent_cond(&out, R, GW, "Accepted"),
        is("False", "UnsupportedValue")
    );
    let out = out_for(&cors_route(
        "{allowOrigins: ['*'], allowMethods: ['*', GET]}",
    ));
    assert_eq!(
        parent_cond(&out, R, GW, "Accepted"),
        is("False", "UnsupportedValue")
    );
}
