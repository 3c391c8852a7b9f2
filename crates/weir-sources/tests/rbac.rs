//! The chart's ClusterRole grants what the Kubernetes source and the status writer do, for
//! every kind of the kind table, and nothing for kinds Weir does not read: a kind added to
//! the table but not to charts/weir/templates/clusterrole.yaml fails here, before a cluster
//! refuses the watch. (charts/tests checks the rendered chart the same way, from
//! `weir kinds`.)

// Test helpers outside #[test] functions: panicking is how they fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use weir_store::{Kind, WrittenStatus};

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/weir/templates/clusterrole.yaml"
);

/// (group, resource) -> verbs of the template's rules, every conditional block included
/// (template lines are dropped, which leaves plain YAML).
fn granted() -> BTreeMap<(String, String), BTreeSet<String>> {
    let text = std::fs::read_to_string(TEMPLATE).unwrap();
    let yaml: String = text
        .lines()
        .filter(|line| !line.contains("{{"))
        .map(|line| format!("{line}\n"))
        .collect();
    let role: Value = serde_norway::from_str(&yaml).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.entry((group.clone(), resource))
                    .or_default()
                    .extend(strings(&rule["verbs"]));
            }
        }
    }
    out
}

#[test]
fn the_cluster_role_grants_every_kind_and_only_the_kinds() {
    let granted = granted();
    let verbs = |group: &str, resource: &str| {
        granted
            .get(&(group.to_owned(), resource.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    for kind in Kind::ALL {
        let read = verbs(kind.group(), kind.plural());
        for verb in ["get", "list", "watch"] {
            assert!(read.contains(verb), "{kind}: {verb} {}", kind.plural());
        }
        let status = verbs(kind.group(), &format!("{}/status", kind.plural()));
        if kind.status() == WrittenStatus::None {
            assert!(status.is_empty(), "{kind}: Weir writes no status");
        } else {
            assert!(status.contains("patch"), "{kind}: patch its status");
        }
    }
    for (group, resource) in granted.keys() {
        let plural = resource.strip_suffix("/status").unwrap_or(resource);
        assert!(
            Kind::ALL
                .into_iter()
                .any(|k| k.group() == group && k.plural() == plural),
            "{group}/{resource}: granted, but not a kind of the table"
        );
    }
}
