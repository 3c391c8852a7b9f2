//! BackendTLSPolicy and Gateway backend client certificate: conditions with the reasons the
//! spec names, and what reaches the snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_snapshot::{BackendTarget, BackendTls, SubjectAltName, Upstream};
use weir_store::{ConfigMap, Kind, Object, Store};

use crate::Output;

use crate::tests::{
    add_secret, add_tls_secret, cond, get, is, route, run, status, store_with_class,
};

/// A Gateway, a route to Services `svc-a` (port name `btls`, 443) and `svc-b` (443 `https-1`,
/// 8443 `https-2`), their endpoints.
const BASE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default, generation: 1, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default, generation: 1, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: Exact, value: /a}}]
    backendRefs: [{name: svc-a, port: 443}]
  - matches: [{path: {type: Exact, value: /b1}}]
    backendRefs: [{name: svc-b, port: 443}]
  - matches: [{path: {type: Exact, value: /b2}}]
    backendRefs: [{name: svc-b, port: 8443}]
  - matches: [{path: {type: Exact, value: /plain}}]
    backendRefs: [{name: svc-c, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-a, namespace: default}
spec:
  ports: [{name: btls, port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-b, namespace: default}
spec:
  ports:
  - {name: https-1, port: 443, targetPort: 8443}
  - {name: https-2, port: 8443, targetPort: 8443}
---
apiVersion: v1
kind: Service
metadata: {name: svc-c, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 3000}]
";

fn policy(name: &str, created: &str, target: &str, section: Option<&str>, rest: &str) -> String {
    let section = section
        .map(|s| format!(", sectionName: {s}"))
        .unwrap_or_default();
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: default, generation: 2, creationTimestamp: '{created}'}}
spec:
  targetRefs: [{{group: '', kind: Service, name: {target}{section}}}]
  validation:
{rest}
"
    )
}

fn ca_refs(name: &str) -> String {
    format!("    caCertificateRefs: [{{group: '', kind: ConfigMap, name: {name}}}]\n    hostname: abc.example.com")
}

fn ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

fn add_config_map(store: &mut Store, name: &str, data: &[(&str, &str)]) {
    let mut cm = ConfigMap::default();
    cm.metadata.namespace = Some("default".into());
    cm.metadata.name = Some(name.into());
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    store.apply(Object::ConfigMap(Arc::new(cm)));
}

fn store(policies: &[String]) -> Store {
    let mut store = store_with_class(&format!("{BASE}\n---\n{}", policies.join("\n---\n")));
    add_config_map(&mut store, "ca", &[("ca.crt", &ca_pem())]);
    store
}

/// (status, reason) of a policy condition under ancestor default/gw.
fn policy_cond(out: &Output, name: &str, type_: &str) -> (String, String) {
    cond(
        status(out, Kind::BackendTlsPolicy, "default", name),
        "parent default/gw",
        type_,
    )
}

fn upstream<'o>(out: &'o Output, path: &str) -> &'o Upstream {
    let entry = route(out, 80, &get("x", path)).expect("a route");
    match &entry.action.backends[0].target {
        BackendTarget::Upstream(u) => u,
        BackendTarget::Invalid(why) => panic!("backend invalid: {why}"),
    }
}

#[test]
fn valid_policy_is_accepted_and_gives_the_backend_tls_with_its_hostname() {
    let out = run(&store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        Some("btls"),
        &ca_refs("ca"),
    )]));
    assert_eq!(policy_cond(&out, "p", "Accepted"), is("True", "Accepted"));
    assert_eq!(
        policy_cond(&out, "p", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let s = status(&out, Kind::BackendTlsPolicy, "default", "p");
    let ancestor = &s.status["ancestors"][0];
    assert_eq!(ancestor["controllerName"], crate::tests::CONTROLLER);
    assert_eq!(ancestor["ancestorRef"]["kind"], "Gateway");
    for c in ancestor["conditions"].as_array().unwrap() {
        assert_eq!(c["observedGeneration"], 2, "{c}");
    }
    match &upstream(&out, "/a").tls {
        Some(BackendTls::Verify(t)) => {
            assert_eq!(t.server_name.to_str(), "abc.example.com");
            assert_eq!(t.roots.len(), 1);
            assert!(t.subject_alt_names.is_empty());
        }
        other => panic!("expected TLS, got {other:?}"),
    }
    // A Service no policy targets stays cleartext.
    assert!(upstream(&out, "/plain").tls.is_none());
}

#[test]
fn a_grpc_route_backend_keeps_its_tls() {
    let grpc = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw2, namespace: default, generation: 1, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  gatewayClassName: weir
  listeners:
  - {name: grpc, port: 81, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default, generation: 1, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw2}]
  rules:
  - backendRefs: [{name: svc-a, port: 443}]
";
    let out = run(&store(&[
        policy(
            "p",
            "2024-01-01T00:00:00Z",
            "svc-a",
            Some("btls"),
            &ca_refs("ca"),
        ),
        grpc.to_string(),
    ]));
    let entry = route(&out, 81, &get("x", "/pkg.Svc/Method")).expect("a route");
    match &entry.action.backends[0].target {
        BackendTarget::Upstream(u) => {
            assert_eq!(u.protocol, weir_snapshot::AppProtocol::H2c);
            assert!(
                matches!(u.tls, Some(BackendTls::Verify(_))),
                "gRPC to a TLS backend must stay TLS: {:?}",
                u.tls
            );
        }
        BackendTarget::Invalid(why) => panic!("backend invalid: {why}"),
    }
}

#[test]
fn subject_alt_names_reach_the_snapshot() {
    let rest = format!(
        "{}\n    subjectAltNames:\n    - {{type: URI, uri: 'spiffe://abc.example.com/id'}}\n    - {{type: Hostname, hostname: Def.Example.com}}",
        ca_refs("ca")
    );
    let out = run(&store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        None,
        &rest,
    )]));
    assert_eq!(policy_cond(&out, "p", "Accepted"), is("True", "Accepted"));
    match &upstream(&out, "/a").tls {
        Some(BackendTls::Verify(t)) => assert_eq!(
            &t.subject_alt_names[..],
            &[
                SubjectAltName::Uri("spiffe://abc.example.com/id".into()),
                SubjectAltName::Hostname("def.example.com".into())
            ]
        ),
        other => panic!("expected TLS, got {other:?}"),
    }
}

#[test]
fn missing_config_map_is_no_valid_ca_certificate_and_the_backend_fails() {
    let out = run(&store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        None,
        &ca_refs("nonexistent"),
    )]));
    assert_eq!(
        policy_cond(&out, "p", "Accepted"),
        is("False", "NoValidCACertificate")
    );
    assert_eq!(
        policy_cond(&out, "p", "ResolvedRefs"),
        is("False", "InvalidCACertificateRef")
    );
    assert!(matches!(
        upstream(&out, "/a").tls,
        Some(BackendTls::Invalid(_))
    ));
}

#[test]
fn config_map_without_ca_crt_is_an_invalid_ca_certificate_ref() {
    let mut s = store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        None,
        &ca_refs("empty"),
    )]);
    add_config_map(&mut s, "empty", &[]);
    add_config_map(&mut s, "garbage", &[("ca.crt", "not a certificate")]);
    let out = run(&s);
    assert_eq!(
        policy_cond(&out, "p", "Accepted"),
        is("False", "NoValidCACertificate")
    );
    assert_eq!(
        policy_cond(&out, "p", "ResolvedRefs"),
        is("False", "InvalidCACertificateRef")
    );
}

#[test]
fn ca_ref_of_another_kind_is_invalid_kind() {
    let rest = "    caCertificateRefs: [{group: invalid.io, kind: InvalidKind, name: x}]\n    hostname: abc.example.com";
    let out = run(&store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        None,
        rest,
    )]));
    assert_eq!(
        policy_cond(&out, "p", "Accepted"),
        is("False", "NoValidCACertificate")
    );
    assert_eq!(
        policy_cond(&out, "p", "ResolvedRefs"),
        is("False", "InvalidKind")
    );
    assert!(matches!(
        upstream(&out, "/a").tls,
        Some(BackendTls::Invalid(_))
    ));
}

#[test]
fn well_known_ca_certificates_are_not_supported() {
    let rest = "    wellKnownCACertificates: System\n    hostname: abc.example.com";
    let out = run(&store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        None,
        rest,
    )]));
    assert_eq!(policy_cond(&out, "p", "Accepted"), is("False", "Invalid"));
    assert!(matches!(
        upstream(&out, "/a").tls,
        Some(BackendTls::Invalid(_))
    ));
}

#[test]
fn section_name_without_such_port_is_target_not_found() {
    let out = run(&store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        Some("nope"),
        &ca_refs("ca"),
    )]));
    assert_eq!(
        policy_cond(&out, "p", "Accepted"),
        is("False", "TargetNotFound")
    );
    assert!(upstream(&out, "/a").tls.is_none());
}

fn server_name(out: &Output, path: &str) -> String {
    match &upstream(out, path).tls {
        Some(BackendTls::Verify(t)) => t.server_name.to_str().to_string(),
        other => panic!("expected TLS on {path}, got {other:?}"),
    }
}

#[test]
fn conflicts_go_to_the_oldest_policy_then_by_name() {
    let with_host = |h: &str| {
        format!(
            "    caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca}}]\n    hostname: {h}"
        )
    };
    let out = run(&store(&[
        // Same creation time: first by namespace/name wins.
        policy(
            "a-first",
            "2024-01-01T00:00:00Z",
            "svc-a",
            None,
            &with_host("first.example.com"),
        ),
        policy(
            "b-second",
            "2024-01-01T00:00:00Z",
            "svc-a",
            None,
            &with_host("second.example.com"),
        ),
        // Older wins although its name sorts later.
        policy(
            "z-old",
            "2023-01-01T00:00:00Z",
            "svc-b",
            Some("https-1"),
            &with_host("old.example.com"),
        ),
        policy(
            "y-new",
            "2024-01-01T00:00:00Z",
            "svc-b",
            Some("https-1"),
            &with_host("new.example.com"),
        ),
        // The whole Service: no conflict with the sectioned one; applies to https-2.
        policy(
            "whole",
            "2024-01-01T00:00:00Z",
            "svc-b",
            None,
            &with_host("whole.example.com"),
        ),
    ]));
    assert_eq!(
        policy_cond(&out, "a-first", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        policy_cond(&out, "b-second", "Accepted"),
        is("False", "Conflicted")
    );
    assert_eq!(
        policy_cond(&out, "z-old", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        policy_cond(&out, "y-new", "Accepted"),
        is("False", "Conflicted")
    );
    assert_eq!(
        policy_cond(&out, "whole", "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(server_name(&out, "/a"), "first.example.com");
    assert_eq!(server_name(&out, "/b1"), "old.example.com");
    assert_eq!(server_name(&out, "/b2"), "whole.example.com");
}

/// The Gateway of [`BASE`] with `spec.tls.backend.clientCertificateRef`.
fn with_client_ref(reference: &str) -> Store {
    let base = BASE.replace(
        "  - {name: http, port: 80, protocol: HTTP}\n",
        &format!("  - {{name: http, port: 80, protocol: HTTP}}\n  tls:\n    backend:\n      clientCertificateRef: {reference}\n"),
    );
    store_with_class(&base)
}

fn gateway_cond(out: &Output, type_: &str) -> (String, String) {
    cond(status(out, Kind::Gateway, "default", "gw"), "", type_)
}

#[test]
fn gateway_backend_client_certificate_resolves_and_reaches_the_listener() {
    let mut s = with_client_ref("{group: '', kind: Secret, name: client}");
    add_tls_secret(&mut s, "default", "client", &["client.example.com"]);
    let out = run(&s);
    assert_eq!(gateway_cond(&out, "Accepted"), is("True", "Accepted"));
    assert_eq!(
        gateway_cond(&out, "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let socket = out.snapshot.socket(None, 80).expect("socket");
    assert!(socket.listeners[0].backend_client_cert.is_some());
}

#[test]
fn gateway_backend_client_certificate_problems_set_resolved_refs_false() {
    for (reference, reason) in [
        (
            "{group: '', kind: Secret, name: nonexistent}",
            "InvalidClientCertificateRef",
        ),
        (
            "{group: wrong.io, kind: Secret, name: client}",
            "InvalidClientCertificateRef",
        ),
        (
            "{group: '', kind: WrongKind, name: client}",
            "InvalidClientCertificateRef",
        ),
        (
            "{group: '', kind: Secret, name: malformed}",
            "InvalidClientCertificateRef",
        ),
        (
            "{group: '', kind: Secret, name: client, namespace: other}",
            "RefNotPermitted",
        ),
    ] {
        let mut s = with_client_ref(reference);
        add_tls_secret(&mut s, "default", "client", &["client.example.com"]);
        add_tls_secret(&mut s, "other", "client", &["client.example.com"]);
        add_secret(&mut s, "default", "malformed", b"", b"");
        let out = run(&s);
        assert_eq!(
            gateway_cond(&out, "ResolvedRefs"),
            is("False", reason),
            "{reference}"
        );
        assert_eq!(
            gateway_cond(&out, "Accepted"),
            is("True", "Accepted"),
            "{reference}"
        );
        let socket = out.snapshot.socket(None, 80).expect("socket");
        assert!(socket.listeners[0].backend_client_cert.is_none());
    }
}

#[test]
fn gateways_without_backend_tls_report_no_resolved_refs() {
    let out = run(&store(&[]));
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert!(!s
        .condition_lines()
        .iter()
        .any(|(scope, t, ..)| scope.is_empty() && t == "ResolvedRefs"));
}

/// A newer version of a policy that did not parse: the last good one keeps applying, and
/// the InvalidManifest condition goes into each ancestor entry (a policy status has no
/// object-level conditions; one there is dropped by the CRD's schema).
#[test]
fn a_rejected_newer_version_is_reported_in_each_ancestor() {
    let mut store = store(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "svc-a",
        Some("btls"),
        &ca_refs("ca"),
    )]);
    store.rejected.insert(
        (
            Kind::BackendTlsPolicy,
            weir_store::ObjectKey::new("default", "p"),
        ),
        weir_store::Rejection {
            location: weir_store::Location::default(),
            message: "bad indentation".into(),
        },
    );
    let out = run(&store);
    assert_eq!(
        policy_cond(&out, "p", crate::INVALID_MANIFEST),
        is("True", "ParseError")
    );
    assert_eq!(policy_cond(&out, "p", "Accepted"), is("True", "Accepted"));
    let s = status(&out, Kind::BackendTlsPolicy, "default", "p");
    assert!(s.status.get("conditions").is_none(), "{}", s.status);
}
