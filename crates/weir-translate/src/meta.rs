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
