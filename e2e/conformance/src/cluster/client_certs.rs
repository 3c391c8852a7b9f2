//! The client certificates and CA ConfigMaps of the frontend validation tests
//! (conformance/utils/suite/suite.go Setup creates them beside the other TLS Secrets): two
//! CAs, each with a ConfigMap holding its certificate as `ca.crt` and a client certificate
//! it signed in a `kubernetes.io/tls` Secret, so that each CA rejects the other's client.

use std::collections::BTreeMap;

use weir_testkit::certs::{ca_config_map_yaml, tls_secret_yaml, Ca, Leaf};

const NAMESPACE: &str = "gateway-conformance-infra";

/// (CA ConfigMap, client certificate Secret) pairs.
const PAIRS: &[(&str, &str)] = &[
    (
        "tls-validity-checks-ca-certificate",
        "tls-validity-checks-client-certificate",
    ),
    (
        "tls-validity-checks-per-port-ca-certificate",
        "tls-validity-checks-per-port-client-certificate",
    ),
];

/// Append the ConfigMaps and Secrets to `manifests`; returns the client certificates by
/// Secret name.
pub fn generate(manifests: &mut String) -> BTreeMap<String, Leaf> {
    let mut out = BTreeMap::new();
    for (config_map, secret) in PAIRS {
        let ca = Ca::new(config_map);
        let leaf = ca.leaf(&["client.gateway-conformance.example"]);
        manifests.push_str("---\n");
        manifests.push_str(&tls_secret_yaml(NAMESPACE, secret, &leaf));
        manifests.push_str("---\n");
        manifests.push_str(&ca_config_map_yaml(NAMESPACE, config_map, &ca.cert_pem));
        out.insert((*secret).to_string(), leaf);
    }
    out
}
