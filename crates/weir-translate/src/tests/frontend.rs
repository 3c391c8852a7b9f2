//! Frontend client-certificate validation (Gateway `spec.tls.frontend`): which HTTPS
//! listeners get which CAs and mode, and the listener conditions the spec names for bad
//! `caCertificateRefs` (gateways CRD, `caCertificateRefs` doc; conformance tests
//! GatewayInvalidFrontendClientCertificateValidation and
//! GatewayFrontendInvalidDefaultClientCertificateValidation).

use weir_snapshot::ClientAuthMode;
use weir_store::{ConfigMap, Kind, Object};

use super::conformance::{conformance_store, run_cluster, INFRA};
use super::*;

/// A fresh CA certificate, PEM.
fn ca_pem(name: &str) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("self-signed").pem()
}

fn add_config_map(store: &mut Store, ns: &str, name: &str, data: &[(&str, &str)]) {
    let mut cm = ConfigMap::default();
    cm.metadata.namespace = Some(ns.into());
    cm.metadata.name = Some(name.into());
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    store.apply(Object::ConfigMap(Arc::new(cm)));
}

fn der(pem: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|c| c.expect("pem").to_vec())
        .collect()
}

/// (mode, CA certificates DER) of the listener `name` on a port.
fn client_auth(out: &Output, port: u16, name: &str) -> Option<(ClientAuthMode, Vec<Vec<u8>>)> {
    let socket = out.snapshot.socket(None, port).expect("socket");
    let l = socket
        .listeners
        .iter()
        .find(|l| &*l.name == name)
        .expect("listener");
    l.client_auth
        .as_ref()
        .map(|a| (a.mode, a.ca_certs.iter().map(|c| c.to_vec()).collect()))
}

/// A Gateway with HTTPS listeners on 443 and 8443 (and HTTP on 80) and the given
/// `spec.tls.frontend`.
fn frontend_gateway(frontend: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default, generation: 1}}
spec:
  gatewayClassName: weir
  tls:
    frontend:
{frontend}
  listeners:
  - {{name: a, port: 443, protocol: HTTPS, hostname: a.example, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: b, port: 443, protocol: HTTPS, hostname: b.example, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: c, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: http, port: 80, protocol: HTTP}}
"
    )
}

fn frontend_store(frontend: &str) -> Store {
    let mut store = store_with_class(&frontend_gateway(frontend));
    add_tls_secret(&mut store, "default", "cert", &["a.example", "b.example"]);
    store
}

#[test]
fn per_port_validation_overrides_the_default_and_listeners_of_a_port_share_it() {
    let default_ca = ca_pem("default");
    let port_ca = ca_pem("per-port");
    let mut store = frontend_store(
        "      default:
        validation:
          caCertificateRefs: [{group: '', kind: ConfigMap, name: default-ca}]
      perPort:
      - port: 8443
        tls:
          validation:
            mode: AllowInsecureFallback
            caCertificateRefs: [{group: '', kind: ConfigMap, name: port-ca}]",
    );
    add_config_map(
        &mut store,
        "default",
        "default-ca",
        &[("ca.crt", &default_ca)],
    );
    add_config_map(&mut store, "default", "port-ca", &[("ca.crt", &port_ca)]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    for l in ["listener a", "listener b", "listener c", "listener http"] {
        assert_eq!(
            cond(s, l, "ResolvedRefs"),
            is("True", "ResolvedRefs"),
            "{l}"
        );
        assert_eq!(cond(s, l, "Accepted"), is("True", "Accepted"), "{l}");
    }
    // The default (mode defaults to AllowValidOnly) on 443, the per-port entry on 8443.
    assert_eq!(
        client_auth(&out, 443, "a"),
        Some((ClientAuthMode::AllowValidOnly, der(&default_ca)))
    );
    assert_eq!(
        client_auth(&out, 8443, "c"),
        Some((ClientAuthMode::AllowInsecureFallback, der(&port_ca)))
    );
    let socket = out.snapshot.socket(None, 443).expect("443");
    let (a, b) = (&socket.listeners[0], &socket.listeners[1]);
    assert!(Arc::ptr_eq(
        a.client_auth.as_ref().expect("a"),
        b.client_auth.as_ref().expect("b")
    ));
    // HTTP listeners never validate client certificates.
    assert_eq!(client_auth(&out, 80, "http"), None);
    // Some listener is in AllowInsecureFallback: the Gateway says so.
    assert_eq!(
        cond(s, "", "InsecureFrontendValidationMode"),
        is("True", "ConfigurationChanged")
    );
}

#[test]
fn valid_only_gateways_have_no_insecure_condition_and_no_frontend_means_no_validation() {
    let ca = ca_pem("ca");
    let mut store = frontend_store(
        "      default:
        validation:
          mode: AllowValidOnly
          caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]",
    );
    add_config_map(&mut store, "default", "ca", &[("ca.crt", &ca)]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert!(!s
        .condition_lines()
        .iter()
        .any(|(sc, t, ..)| sc.is_empty() && t == "InsecureFrontendValidationMode"));
    assert!(client_auth(&out, 8443, "c").is_some());

    // A perPort entry without validation turns validation off for its port.
    let mut store = frontend_store(
        "      default:
        validation:
          caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]
      perPort:
      - {port: 8443, tls: {}}",
    );
    add_config_map(&mut store, "default", "ca", &[("ca.crt", &ca)]);
    let out = run(&store);
    assert!(client_auth(&out, 443, "a").is_some());
    assert_eq!(client_auth(&out, 8443, "c"), None);

    let mut store = store_with_class(&gateway(
        "gw",
        "  - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}",
    ));
    add_tls_secret(&mut store, "default", "cert", &["a.example"]);
    let out = run(&store);
    assert_eq!(client_auth(&out, 443, "a"), None);
}

#[test]
fn bad_ca_config_maps_are_invalid_ca_certificate_refs() {
    for (what, data) in [
        ("no ca.crt key", vec![("other.crt", "x")]),
        ("ca.crt without PEM", vec![("ca.crt", "not a certificate")]),
        (
            "ca.crt with a broken certificate",
            vec![(
                "ca.crt",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )],
        ),
    ] {
        let mut store = frontend_store(
            "      default:
        validation:
          caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]",
        );
        add_config_map(&mut store, "default", "ca", &data);
        let out = run(&store);
        let s = status(&out, Kind::Gateway, "default", "gw");
        for l in ["listener a", "listener c"] {
            assert_eq!(
                cond(s, l, "ResolvedRefs"),
                is("False", "InvalidCACertificateRef"),
                "{what}: {l}"
            );
            assert_eq!(
                cond(s, l, "Accepted"),
                is("False", "NoValidCACertificate"),
                "{what}: {l}"
            );
        }
        // The HTTP listener is not affected, and no HTTPS listener serves unvalidated.
        assert_eq!(cond(s, "listener http", "Accepted"), is("True", "Accepted"));
        assert!(out.snapshot.socket(None, 443).is_none(), "{what}");
    }
}

#[test]
fn one_usable_reference_keeps_the_listener_accepted_with_resolved_refs_false() {
    let ca = ca_pem("ca");
    let mut store = frontend_store(
        "      default:
        validation:
          caCertificateRefs:
          - {group: '', kind: ConfigMap, name: ca}
          - {group: '', kind: ConfigMap, name: missing}",
    );
    add_config_map(&mut store, "default", "ca", &[("ca.crt", &ca)]);
    let out = run(&store);
    let s = status(&out, Kind::Gateway, "default", "gw");
    assert_eq!(
        cond(s, "listener a", "ResolvedRefs"),
        is("False", "InvalidCACertificateRef")
    );
    assert_eq!(cond(s, "listener a", "Accepted"), is("True", "Accepted"));
    assert_eq!(
        client_auth(&out, 443, "a"),
        Some((ClientAuthMode::AllowValidOnly, der(&ca)))
    );
}

/// gateway-with-invalid-clientcertificate-validation.yaml: each bad per-port reference
/// affects only the listeners of its port, with the reason the Go test expects.
#[test]
fn conformance_invalid_client_certificate_validation() {
    let mut store = conformance_store(&["gateway-with-invalid-clientcertificate-validation.yaml"]);
    add_config_map(
        &mut store,
        INFRA,
        "tls-validity-checks-ca-certificate",
        &[("ca.crt", &ca_pem("default"))],
    );
    add_config_map(
        &mut store,
        "gateway-conformance-web-backend",
        "web-backend-cm",
        &[("ca.crt", &ca_pem("web"))],
    );
    let out = run_cluster(&store);
    let s = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-with-invalid-client-cert-validation",
    );
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(
        cond(s, "listener https", "Accepted"),
        is("True", "Accepted")
    );
    for (listener, reason) in [
        ("listener https-unresolved", "InvalidCACertificateRef"),
        ("listener https-invalid-kind", "InvalidCACertificateKind"),
        ("listener https-grant-missing", "RefNotPermitted"),
    ] {
        assert_eq!(
            cond(s, listener, "ResolvedRefs"),
            is("False", reason),
            "{listener}"
        );
        assert_eq!(
            cond(s, listener, "Accepted"),
            is("False", "NoValidCACertificate"),
            "{listener}"
        );
    }

    // A ReferenceGrant for ConfigMaps from Gateways in the infra namespace permits it.
    let grant = "
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: cm, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}]
  to: [{group: '', kind: ConfigMap}]
";
    for (_, g) in load(grant).reference_grants {
        store.apply(Object::ReferenceGrant(g));
    }
    let out = run(&store);
    let s = status(
        &out,
        Kind::Gateway,
        INFRA,
        "gateway-with-invalid-client-cert-validation",
    );
    assert_eq!(
        cond(s, "listener https-grant-missing", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(
        cond(s, "listener https-grant-missing", "Accepted"),
        is("True", "Accepted")
    );
}

/// gateway-invalid-default-frontend-client-certificate-validation.yaml: a default pointing
/// at a missing ConfigMap breaks the HTTPS listener only; the per-port entry for the HTTP
/// port changes nothing there.
#[test]
fn conformance_invalid_default_validation_affects_only_https() {
    let mut store =
        conformance_store(&["gateway-invalid-default-frontend-client-certificate-validation.yaml"]);
    add_config_map(
        &mut store,
        INFRA,
        "tls-validity-checks-per-port-ca-certificate",
        &[("ca.crt", &ca_pem("per-port"))],
    );
    let out = run_cluster(&store);
    let s = status(
        &out,
        Kind::Gateway,
        INFRA,
        "invalid-default-client-validation-config",
    );
    assert_eq!(
        cond(s, "listener https", "ResolvedRefs"),
        is("False", "InvalidCACertificateRef")
    );
    assert_eq!(
        cond(s, "listener https", "Accepted"),
        is("False", "NoValidCACertificate")
    );
    assert_eq!(
        cond(s, "listener http", "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(cond(s, "listener http", "Accepted"), is("True", "Accepted"));
    assert_eq!(cond(s, "", "Accepted"), is("True", "ListenersNotValid"));
}
