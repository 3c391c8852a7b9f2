//! Which ConfigMaps and Secrets the other objects of a [`Store`] name: the only ones
//! Kubernetes mode reads in full (it watches the rest by metadata alone; see
//! `weir-sources/src/kube/source.rs`).
//!
//! This is the one list of such references. Whatever the translator reads from
//! `store.config_maps` or `store.secrets` must be named here, or it is never fetched in
//! Kubernetes mode: a new kind (a policy with a Secret reference, say) adds its references
//! to [`referenced`] and itself to [`REFERRERS`]. The translator's tests
//! (`weir-translate/src/tests/refs.rs`) check, on every conformance manifest, that
//! translation with only the referenced ConfigMaps and Secrets gives what it gives with all.
//!
//! The set is a superset of what translation will use: references are taken as written,
//! before ReferenceGrants are checked (so a grant that appears later needs no fetch, and the
//! translator still refuses what no grant allows), and a reference of a group or kind that
//! is not a core ConfigMap / Secret is left out (the translator reports it without reading
//! anything).

use std::collections::BTreeSet;

use crate::{Gateway, Kind, ObjectKey, Store, GATEWAY_GROUP};

/// The kinds whose objects hold references [`referenced`] follows: a change to any other
/// kind cannot change the set.
pub const REFERRERS: [Kind; 5] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::ListenerSet,
    Kind::BackendTlsPolicy,
    Kind::SecurityPolicy,
];

/// One referenced object: [`Kind::ConfigMap`] or [`Kind::Secret`], and its key.
pub type Reference = (Kind, ObjectKey);

/// The ConfigMaps and Secrets that GatewayClasses of `controller`, their Gateways (and the
/// ListenerSets attached to them) and BackendTLSPolicies reference:
/// - GatewayClass `spec.parametersRef` (a ConfigMap; it needs a namespace);
/// - Gateway and ListenerSet listener `tls.certificateRefs` (Secrets; the namespace defaults
///   to the listener owner's);
/// - Gateway `spec.tls.frontend` `caCertificateRefs`, default and per port (ConfigMaps);
/// - Gateway `spec.tls.backend.clientCertificateRef` (a Secret);
/// - BackendTLSPolicy `spec.validation.caCertificateRefs` (ConfigMaps in the policy's
///   namespace);
/// - SecurityPolicy `basicAuth.users` and `apiKeyAuth.credentialRefs` (Secrets; the
///   namespace defaults to the policy's) and `jwt.providers[].localJWKS.valueRef` (a
///   ConfigMap or Secret in the policy's namespace).
pub fn referenced(store: &Store, controller: &str) -> BTreeSet<Reference> {
    let mut out = BTreeSet::new();
    let mut classes = BTreeSet::new();
    for (key, class) in &store.gateway_classes {
        if class.spec.controller_name != controller {
            continue;
        }
        classes.insert(&*key.name);
        if let Some(p) = &class.spec.parameters_ref {
            let ns = p.namespace.as_deref().unwrap_or("");
            if core(&p.group) && p.kind == "ConfigMap" && !ns.is_empty() {
                out.insert((Kind::ConfigMap, ObjectKey::new(ns, p.name.as_str())));
            }
        }
    }
    let ours: Vec<(&ObjectKey, &Gateway)> = store
        .gateways
        .iter()
        .filter(|(_, g)| classes.contains(g.spec.gateway_class_name.as_str()))
        .map(|(k, g)| (k, &**g))
        .collect();
    for (key, gateway) in &ours {
        gateway_refs(key, gateway, &mut out);
    }
    for (key, set) in &store.listener_sets {
        let p = &set.spec.parent_ref;
        let parent = ObjectKey::new(
            p.namespace.as_deref().unwrap_or(&key.namespace),
            p.name.as_str(),
        );
        let names_ours = p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
            && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            && ours.iter().any(|(k, _)| **k == parent);
        if !names_ours {
            continue;
        }
        for l in &set.spec.listeners {
            for r in l
                .tls
                .iter()
                .flat_map(|t| t.certificate_refs.iter().flatten())
            {
                secret(
                    &key.namespace,
                    r.group.as_deref(),
                    r.kind.as_deref(),
                    r.namespace.as_deref(),
                    &r.name,
                    &mut out,
                );
            }
        }
    }
    for (key, policy) in &store.backend_tls_policies {
        for r in policy.spec.validation.ca_certificate_refs.iter().flatten() {
            if core(&r.group) && r.kind == "ConfigMap" {
                out.insert((
                    Kind::ConfigMap,
                    ObjectKey::new(key.namespace.clone(), r.name.as_str()),
                ));
            }
        }
    }
    for (key, policy) in &store.security_policies {
        let spec = &policy.spec;
        let users = spec.basic_auth.iter().filter_map(|b| b.users.as_ref());
        let keys = spec
            .api_key_auth
            .iter()
            .flat_map(|a| a.credential_refs.iter().flatten());
        for r in users.chain(keys) {
            secret(
                &key.namespace,
                r.group.as_deref(),
                r.kind.as_deref(),
                r.namespace.as_deref(),
                &r.name,
                &mut out,
            );
        }
        let value_refs = spec
            .jwt
            .iter()
            .flat_map(|j| j.providers.iter().flatten())
            .filter_map(|p| p.local_jwks.as_ref()?.value_ref.as_ref());
        for r in value_refs {
            let kind = match r.kind.as_str() {
                "ConfigMap" => Kind::ConfigMap,
                "Secret" => Kind::Secret,
                _ => continue,
            };
            if core(&r.group) {
                out.insert((kind, ObjectKey::new(key.namespace.clone(), r.name.as_str())));
            }
        }
    }
    out
}

fn gateway_refs(key: &ObjectKey, gateway: &Gateway, out: &mut BTreeSet<Reference>) {
    for l in &gateway.spec.listeners {
        for r in l
            .tls
            .iter()
            .flat_map(|t| t.certificate_refs.iter().flatten())
        {
            secret(
                &key.namespace,
                r.group.as_deref(),
                r.kind.as_deref(),
                r.namespace.as_deref(),
                &r.name,
                out,
            );
        }
    }
    let Some(tls) = &gateway.spec.tls else {
        return;
    };
    if let Some(r) = tls
        .backend
        .as_ref()
        .and_then(|b| b.client_certificate_ref.as_ref())
    {
        secret(
            &key.namespace,
            r.group.as_deref(),
            r.kind.as_deref(),
            r.namespace.as_deref(),
            &r.name,
            out,
        );
    }
    if let Some(frontend) = &tls.frontend {
        let default = frontend
            .default
            .validation
            .iter()
            .flat_map(|v| &v.ca_certificate_refs)
            .map(|r| (&r.group, &r.kind, r.namespace.as_deref(), &r.name));
        let per_port = frontend
            .per_port
            .iter()
            .flatten()
            .flat_map(|p| p.tls.validation.iter())
            .flat_map(|v| &v.ca_certificate_refs)
            .map(|r| (&r.group, &r.kind, r.namespace.as_deref(), &r.name));
        for (group, kind, namespace, name) in default.chain(per_port) {
            if core(group) && kind == "ConfigMap" {
                let ns = namespace.unwrap_or(&key.namespace);
                out.insert((Kind::ConfigMap, ObjectKey::new(ns, name.as_str())));
            }
        }
    }
}

/// A Secret reference (group and kind default to the core Secret, namespace to `owner_ns`).
fn secret(
    owner_ns: &str,
    group: Option<&str>,
    kind: Option<&str>,
    namespace: Option<&str>,
    name: &str,
    out: &mut BTreeSet<Reference>,
) {
    if core(group.unwrap_or("")) && kind.unwrap_or("Secret") == "Secret" {
        let ns = namespace.unwrap_or(owner_ns);
        out.insert((Kind::Secret, ObjectKey::new(ns, name)));
    }
}

/// The core API group, spelled `""` or `"core"`.
fn core(group: &str) -> bool {
    group.is_empty() || group == "core"
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::Object;

    const OURS: &str = "weir.dev/gateway-controller";

    fn store(objects: Vec<serde_json::Value>) -> Store {
        let mut store = Store::default();
        for o in objects {
            let object = match o["kind"].as_str() {
                Some("GatewayClass") => Object::GatewayClass(Arc::new(from(o))),
                Some("Gateway") => Object::Gateway(Arc::new(from(o))),
                Some("ListenerSet") => Object::ListenerSet(Arc::new(from(o))),
                Some("BackendTLSPolicy") => Object::BackendTlsPolicy(Arc::new(from(o))),
                Some("SecurityPolicy") => Object::SecurityPolicy(Arc::new(from(o))),
                other => panic!("kind {other:?}"),
            };
            store.apply(object);
        }
        store
    }

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("test object deserializes")
    }

    fn class(name: &str, controller: &str, params: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {"controllerName": controller, "parametersRef": params}})
    }

    fn https(name: &str, refs: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": refs}})
    }

    fn set(refs: &[Reference]) -> BTreeSet<Reference> {
        refs.iter().cloned().collect()
    }

    fn cm(ns: &str, name: &str) -> Reference {
        (Kind::ConfigMap, ObjectKey::new(ns, name))
    }

    fn sec(ns: &str, name: &str) -> Reference {
        (Kind::Secret, ObjectKey::new(ns, name))
    }

    #[test]
    fn security_policies_reference_their_secrets_and_key_sets() {
        let store = store(vec![json!({"apiVersion": "gateway.weir.dev/v1alpha1",
        "kind": "SecurityPolicy", "metadata": {"name": "p", "namespace": "apps"},
        "spec": {
            "basicAuth": {"users": {"name": "users"}},
            "apiKeyAuth": {"credentialRefs": [{"name": "k1"}, {"name": "k2", "namespace": "keys"},
                {"group": "x", "kind": "Vault", "name": "no"}]},
            "jwt": {"providers": [
                {"name": "a", "localJWKS": {"type": "ValueRef", "valueRef": {"group": "", "kind": "ConfigMap", "name": "jwks"}}},
                {"name": "b", "localJWKS": {"type": "ValueRef", "valueRef": {"group": "", "kind": "Secret", "name": "jwks-s"}}}
            ]}
        }})]);
        assert_eq!(
            referenced(&store, OURS),
            set(&[
                sec("apps", "users"),
                sec("apps", "k1"),
                sec("keys", "k2"),
                cm("apps", "jwks"),
                sec("apps", "jwks-s"),
            ])
        );
    }

    #[test]
    fn every_reference_translation_reads() {
        let store = store(vec![
            class(
                "weir",
                OURS,
                json!({"group": "", "kind": "ConfigMap", "name": "params", "namespace": "weir-system"}),
            ),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "infra"},
            "spec": {"gatewayClassName": "weir", "listeners": [
                https("a", json!([{"name": "cert"}, {"group": "core", "kind": "Secret", "name": "other", "namespace": "certs"}])),
                {"name": "http", "port": 80, "protocol": "HTTP"},
            ], "tls": {
                "backend": {"clientCertificateRef": {"name": "client"}},
                "frontend": {
                    "default": {"validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]}},
                    "perPort": [{"port": 8443, "tls": {"validation": {"caCertificateRefs": [
                        {"group": "", "kind": "ConfigMap", "name": "ca-8443", "namespace": "cas"}]}}}],
                },
            }}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "ListenerSet",
                "metadata": {"name": "team", "namespace": "team"},
                "spec": {"parentRef": {"name": "gw", "namespace": "infra"},
                    "listeners": [https("t", json!([{"name": "team-cert"}]))]}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
                "metadata": {"name": "p", "namespace": "apps"},
                "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                    "validation": {"hostname": "web", "caCertificateRefs": [
                        {"group": "", "kind": "ConfigMap", "name": "backend-ca"}]}}}),
        ]);
        assert_eq!(
            referenced(&store, OURS),
            set(&[
                cm("weir-system", "params"),
                sec("infra", "cert"),
                sec("certs", "other"),
                sec("infra", "client"),
                cm("infra", "ca"),
                cm("cas", "ca-8443"),
                sec("team", "team-cert"),
                cm("apps", "backend-ca"),
            ])
        );
    }

    #[test]
    fn other_controllers_objects_and_other_kinds_are_left_out() {
        let store = store(vec![
            class(
                "theirs",
                "example.com/other",
                json!({"group": "", "kind": "ConfigMap", "name": "their-params", "namespace": "x"}),
            ),
            // Ours, but its parametersRef is not a core ConfigMap, or has no namespace.
            class(
                "weir",
                OURS,
                json!({"group": "example.com", "kind": "Params", "name": "p", "namespace": "x"}),
            ),
            class(
                "weir-2",
                OURS,
                json!({"group": "", "kind": "ConfigMap", "name": "no-namespace"}),
            ),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "their-gw", "namespace": "infra"},
                "spec": {"gatewayClassName": "theirs", "listeners": [https("a", json!([{"name": "their-cert"}]))]}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "ListenerSet",
                "metadata": {"name": "on-theirs", "namespace": "infra"},
                "spec": {"parentRef": {"name": "their-gw"},
                    "listeners": [https("t", json!([{"name": "their-set-cert"}]))]}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "infra"},
                "spec": {"gatewayClassName": "weir", "listeners": [
                    https("a", json!([{"group": "example.com", "kind": "Vault", "name": "v"}, {"name": "cert"}]))]}}),
        ]);
        assert_eq!(referenced(&store, OURS), set(&[sec("infra", "cert")]));
        assert!(referenced(&Store::default(), OURS).is_empty());
    }
}
