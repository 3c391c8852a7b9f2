//! BackendTrafficPolicy `responseCache` (Weir's addition) compiled onto
//! [`weir_snapshot::ResponseCache`]: the cache's bounds, with defaults.

use weir_snapshot::cache::{DEFAULT_MAX_ENTRIES, DEFAULT_MAX_ENTRY_SIZE, DEFAULT_MAX_SIZE};
use weir_snapshot::ResponseCache;
use weir_store::policies as api;

use super::compression::bytes;
use super::{invalid, Unsupported};
use crate::policy::attach::NotAccepted;

/// The most one policy's cache may hold (16 GiB).
const MAX_SIZE: u64 = 16 << 30;

pub(super) fn unsupported_fields(c: &api::ResponseCache, add: &mut dyn FnMut(&str, &Unsupported)) {
    add("spec.responseCache", &c.unsupported);
}

pub(super) fn compile(c: &api::ResponseCache) -> Result<ResponseCache, NotAccepted> {
    let max_size = match &c.max_size {
        None => DEFAULT_MAX_SIZE,
        Some(v) => bytes("spec.responseCache.maxSize", v, 1024, MAX_SIZE)?,
    };
    let max_entry_size = match &c.max_entry_size {
        None => DEFAULT_MAX_ENTRY_SIZE.min(max_size),
        Some(v) => bytes("spec.responseCache.maxBodySize", v, 1, MAX_SIZE)?,
    };
    if max_entry_size > max_size {
        return Err(invalid(format!(
            "spec.responseCache.maxBodySize ({max_entry_size} bytes) is larger than maxSize \
             ({max_size} bytes)"
        )));
    }
    let max_entries = match c.max_entries {
        None => DEFAULT_MAX_ENTRIES,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=10_000_000).contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "spec.responseCache.maxEntries {n}: must be 1 to 10000000"
                ))
            })?,
    };
    Ok(ResponseCache {
        max_size,
        max_entry_size,
        max_entries,
    })
}
