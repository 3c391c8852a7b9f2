//! What translation reads from any object's metadata: its creation order.

/// Creation time as (seconds, nanos); a missing timestamp sorts as newest.
pub fn created(meta: &weir_store::ObjectMeta) -> (i64, u32) {
    meta.creation_timestamp
        .as_ref()
        .map(|t| {
            (
                t.0.as_second(),
                u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0),
            )
        })
        .unwrap_or((i64::MAX, u32::MAX))
}

/// A route object's version ([`weir_snapshot::RouteRef::version`]): a hash of its kind, key,
/// `uid` and `generation`, which the API server (and the file source) bump on every change
/// of the spec; an object without a generation hashes its spec instead.
pub fn version(
    kind: &str,
    key: &weir_store::ObjectKey,
    meta: &weir_store::ObjectMeta,
    spec: &impl serde::Serialize,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    key.hash(&mut h);
    meta.uid.hash(&mut h);
    match meta.generation {
        Some(g) => g.hash(&mut h),
        None => serde_json::to_string(spec).unwrap_or_default().hash(&mut h),
    }
    h.finish()
}
