//! Certificates generated at test time: a CA and leaf certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (first is the common name).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with_uris(names, &[])
    }

    /// A certificate for DNS `names` (first is the common name) that also carries `uris` as
    /// URI subjectAltNames (e.g. SPIFFE IDs).
    pub fn leaf_with_uris(&self, names: &[&str], uris: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A `kubernetes.io/tls` Secret manifest holding `leaf`.
pub fn tls_secret_yaml(namespace: &str, name: &str, leaf: &Leaf) -> String {
    use base64::Engine;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        encode(leaf.cert_pem.as_bytes()),
        encode(leaf.key_pem.as_bytes())
    )
}

/// A ConfigMap manifest holding `ca_pem` under `ca.crt` (what BackendTLSPolicy
/// `caCertificateRefs` and frontend client validation read).
pub fn ca_config_map_yaml(namespace: &str, name: &str, ca_pem: &str) -> String {
    let indented: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  ca.crt: |\n{indented}"
    )
}

/// A `kubernetes.io/tls` Secret holding `leaf`, as JSON (what the test API server takes).
pub fn tls_secret_json(namespace: &str, name: &str, leaf: &Leaf) -> serde_json::Value {
    use base64::Engine;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": encode(leaf.cert_pem.as_bytes()), "tls.key": encode(leaf.key_pem.as_bytes())},
    })
}
