//! ReferenceGrant checks: may an object in one namespace refer to an object in another?

use weir_store::Store;

/// The referring side of a cross-namespace reference.
pub struct From<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// The referenced object.
pub struct To<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// True when the reference stays in one namespace, or a ReferenceGrant in the target's
/// namespace lists the referrer in `from` and the target (by group, kind and, if given, name)
/// in `to`.
pub fn permitted(store: &Store, from: &From<'_>, to: &To<'_>) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    store
        .reference_grants
        .iter()
        .filter(|(key, _)| *key.namespace == *to.namespace)
        .any(|(_, grant)| {
            let from_ok = grant.spec.from.iter().any(|f| {
                f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
            });
            let to_ok = grant.spec.to.iter().any(|t| {
                core_group(&t.group) == core_group(to.group)
                    && t.kind == to.kind
                    && t.name.as_deref().is_none_or(|n| n == to.name)
            });
            from_ok && to_ok
        })
}

/// The core group may be written "" or "core".
pub fn core_group(group: &str) -> &str {
    if group == "core" {
        ""
    } else {
        group
    }
}
