//! The bounded Pod watch: Pods matter only as InferencePool endpoints, so Kubernetes mode
//! watches them only in namespaces that hold InferencePools, one watch per such namespace,
//! and keeps only the Pods some pool of that namespace selects. When every pool of a
//! namespace selects by the same labels, the watch asks the API server for those labels
//! alone (`labelSelector`); else it lists the namespace's running Pods and drops those no
//! pool selects. A change of a namespace's selectors restarts its watch (a relist: Pods
//! dropped before may be selected now); a namespace without pools any more loses its watch
//! and its Pods. A cluster without pools (or without the InferencePool CRD) watches no Pod.
//!
//! Memory and traffic are thus bounded by the Pods of namespaces with pools, not by the
//! cluster's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weir_store::{Object, Pod, Store};

/// One pool's `selector.matchLabels`.
pub(crate) type Selector = BTreeMap<String, String>;

/// The distinct selectors of a namespace's pools (sorted).
pub(crate) type Selectors = Vec<Selector>;

/// Per namespace with InferencePools, its pools' selectors.
pub(crate) type Scopes = BTreeMap<Arc<str>, Selectors>;

/// How the watched namespaces change.
pub(crate) struct Change {
    /// Watches to start (new namespaces, and those whose selectors changed: a relist).
    pub(crate) start: Vec<(Arc<str>, Selectors)>,
    /// Namespaces no longer watched.
    pub(crate) stop: Vec<Arc<str>>,
    /// Whether the store changed (the Pods of those namespaces left it).
    pub(crate) store_changed: bool,
}

/// The Pod watches the store's InferencePools want.
pub(crate) fn wanted(store: &Store) -> Scopes {
    let mut scopes: BTreeMap<Arc<str>, BTreeSet<Selector>> = BTreeMap::new();
    for (key, pool) in &store.inference_pools {
        scopes
            .entry(key.namespace.clone())
            .or_default()
            .insert(pool.spec.selector.match_labels.clone());
    }
    scopes
        .into_iter()
        .map(|(ns, selectors)| (ns, selectors.into_iter().collect()))
        .collect()
}

/// The server-side label selector for a namespace's watch: the pools' one selector when
/// they share it (and it selects by something), else none (the whole namespace).
pub(crate) fn label_selector(selectors: &[Selector]) -> Option<String> {
    match selectors {
        [one] if !one.is_empty() => Some(
            one.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

/// Whether some pool of the namespace selects this Pod.
pub(crate) fn selected(selectors: &[Selector], pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selectors.iter().any(|s| {
        s.iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    })
}

/// Whether a converted object is a Pod some of `selectors` selects (other kinds: kept).
pub(crate) fn keep(selectors: &[Selector], object: &Object) -> bool {
    match object {
        Object::Pod(pod) => selected(selectors, pod),
        _ => true,
    }
}

/// Remove every Pod of `namespace` from the store; returns whether any was there.
pub(crate) fn clear_namespace(store: &mut Store, namespace: &str) -> bool {
    let keys: Vec<_> = store
        .pods
        .keys()
        .filter(|k| &*k.namespace == namespace)
        .cloned()
        .collect();
    for key in &keys {
        store.delete(weir_store::Kind::Pod, key);
    }
    !keys.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pairs: &[(&str, &str)]) -> Selector {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn pod(labels: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.labels = Some(sel(labels));
        p
    }

    #[test]
    fn one_shared_selector_goes_to_the_server_several_do_not() {
        assert_eq!(
            label_selector(&[sel(&[("app", "m"), ("tier", "gpu")])]).as_deref(),
            Some("app=m,tier=gpu")
        );
        assert_eq!(
            label_selector(&[sel(&[("app", "a")]), sel(&[("app", "b")])]),
            None
        );
        assert_eq!(label_selector(&[sel(&[])]), None);
    }

    #[test]
    fn a_pod_is_kept_when_some_pool_selects_it() {
        let selectors = [sel(&[("app", "a")]), sel(&[("app", "b"), ("v", "1")])];
        assert!(selected(&selectors, &pod(&[("app", "a"), ("x", "y")])));
        assert!(selected(&selectors, &pod(&[("app", "b"), ("v", "1")])));
        assert!(!selected(&selectors, &pod(&[("app", "b")])));
        assert!(!selected(&selectors, &Pod::default()));
    }
}
