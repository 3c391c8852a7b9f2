//! `weir_store::refs::referenced` names every ConfigMap and Secret the translator reads:
//! Kubernetes mode reads only those in full, so a reference missing from that list would be
//! a certificate or CA bundle that Weir never sees. For every conformance manifest, with a
//! valid TLS Secret and CA ConfigMap under every name and namespace its objects mention,
//! translating with only the referenced ones gives exactly what translating with all gives.

use std::collections::BTreeSet;

use weir_store::refs::referenced;
use weir_store::{ConfigMap, Kind, Object, Store};

use super::conformance::{conformance_store, run_cluster};
use super::memo::dump;
use super::*;

/// The strings under `name` and `namespace` keys anywhere in `value`.
fn names(
    value: &serde_json::Value,
    names: &mut BTreeSet<String>,
    namespaces: &mut BTreeSet<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("name", serde_json::Value::String(s)) => {
                        names.insert(s.clone());
                    }
                    ("namespace", serde_json::Value::String(s)) => {
                        namespaces.insert(s.clone());
                    }
                    _ => self::names(v, names, namespaces),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                self::names(v, names, namespaces);
            }
        }
        _ => {}
    }
}

/// `store` plus a TLS Secret and a CA ConfigMap for every (namespace, name) its Gateways,
/// ListenerSets, BackendTLSPolicies and GatewayClasses mention, where it has none.
fn with_everything(mut store: Store) -> Store {
    let (mut ns, mut nm) = (BTreeSet::new(), BTreeSet::new());
    let mut values = Vec::new();
    values.extend(store.gateways.values().map(|o| json(&**o)));
    values.extend(store.listener_sets.values().map(|o| json(&**o)));
    values.extend(store.backend_tls_policies.values().map(|o| json(&**o)));
    values.extend(store.gateway_classes.values().map(|o| json(&**o)));
    for v in &values {
        names(v, &mut nm, &mut ns);
    }
    let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).expect("rcgen");
    let (crt, key) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    for namespace in &ns {
        for name in &nm {
            let key_ = ObjectKey::new(namespace.as_str(), name.as_str());
            if !store.secrets.contains_key(&key_) {
                add_secret(&mut store, namespace, name, crt.as_bytes(), key.as_bytes());
            }
            if !store.config_maps.contains_key(&key_) {
                let mut cm = ConfigMap::default();
                cm.metadata.namespace = Some(namespace.clone());
                cm.metadata.name = Some(name.clone());
                cm.data = Some([("ca.crt".to_string(), crt.clone())].into());
                store.apply(Object::ConfigMap(Arc::new(cm)));
            }
        }
    }
    store
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serializes")
}

#[test]
fn translation_reads_only_referenced_config_maps_and_secrets() {
    let dir = format!(
        "{}/../../e2e/conformance/upstream/v1.6.1/conformance/tests",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut manifests: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    manifests.sort();
    let mut exercised = 0;
    for manifest in &manifests {
        let full = with_everything(conformance_store(&[manifest.as_str()]));
        let wanted = referenced(&full, CONTROLLER);
        let mut only = full.clone();
        only.secrets
            .retain(|k, _| wanted.contains(&(Kind::Secret, k.clone())));
        only.config_maps
            .retain(|k, _| wanted.contains(&(Kind::ConfigMap, k.clone())));
        if only.secrets.len() + only.config_maps.len() > 0 {
            exercised += 1;
        }
        let (a, b) = (run_cluster(&full), run_cluster(&only));
        assert_eq!(
            a.statuses, b.statuses,
            "{manifest}: statuses differ with only the referenced ConfigMaps and Secrets"
        );
        assert_eq!(dump(&a), dump(&b), "{manifest}: routing differs");
    }
    assert!(
        exercised >= 20,
        "only {exercised} manifests reference a ConfigMap or Secret"
    );
}
