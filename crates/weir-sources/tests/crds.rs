//! Weir's own CRDs (charts/weir/files/crds/weir) agree with the kind table: every kind of
//! the `gateway.weir.dev` group has one, with the table's plural, version and a status
//! subresource, and every object level of its spec keeps unknown fields (so a field Weir
//! does not implement reaches translation and is refused in status, not pruned by the API
//! server).

// Test helpers outside #[test] functions: panicking is how they fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use weir_store::{Kind, POLICY_GROUP};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/weir/files/crds/weir"
);

fn crd(kind: Kind) -> Value {
    let path = format!("{DIR}/{}_{}.yaml", kind.group(), kind.plural());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap()
}

/// Every object schema under `schema` (itself included) with its path.
fn objects<'a>(path: String, schema: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    if schema["type"] == "object" {
        out.push((path.clone(), schema));
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, s) in props {
            objects(format!("{path}.{name}"), s, out);
        }
    }
    if schema["items"].is_object() {
        objects(format!("{path}[]"), &schema["items"], out);
    }
}

#[test]
fn every_policy_kind_has_its_crd() {
    let ours: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == POLICY_GROUP)
        .collect();
    assert_eq!(ours.len(), 4);
    let files = std::fs::read_dir(DIR).unwrap().count();
    assert_eq!(files, ours.len(), "one CRD file per kind in {DIR}");
    for kind in ours {
        assert!(kind.is_optional(), "{kind}: a cluster may lack Weir's CRDs");
        let crd = crd(kind);
        let spec = &crd["spec"];
        assert_eq!(spec["group"], POLICY_GROUP);
        assert_eq!(spec["names"]["kind"], kind.as_str());
        assert_eq!(spec["names"]["plural"], kind.plural());
        assert_eq!(spec["scope"], "Namespaced");
        let versions = spec["versions"].as_array().unwrap();
        let storage = versions.iter().find(|v| v["storage"] == true).unwrap();
        assert_eq!(storage["name"], kind.version(), "{kind}: storage version");
        assert!(storage["subresources"]["status"].is_object(), "{kind}");
        let schema = &storage["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut all = Vec::new();
        objects("spec".into(), schema, &mut all);
        for (path, o) in all {
            // targetRefs are fully typed: a typo there is the API server's to refuse.
            if path.contains("targetRef") {
                continue;
            }
            assert_eq!(
                o["x-kubernetes-preserve-unknown-fields"], true,
                "{kind}: {path} must keep unknown fields"
            );
        }
    }
}
