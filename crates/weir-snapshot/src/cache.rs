//! BackendTrafficPolicy `responseCache` (Weir's addition): an in-memory HTTP cache
//! (RFC 9111, shared cache) for the policy's routes. Compiled by translation onto
//! [`crate::BackendPolicy::response_cache`]; the engine and its entries are the proxy's
//! (`cache.rs`), one cache per policy, kept beside the snapshot.

/// `responseCache`: the cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCache {
    /// `maxSize`: bytes held in all (bodies, headers and keys), default 64 MiB; the least
    /// recently used entries go first.
    pub max_size: u64,
    /// `maxBodySize`: the largest response stored (default 1 MiB); a larger one streams
    /// through uncached, never buffered beyond this.
    pub max_entry_size: u64,
    /// `maxEntries`: entries held at most (default 10,000).
    pub max_entries: u32,
}

pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;
pub const DEFAULT_MAX_ENTRY_SIZE: u64 = 1 << 20;
pub const DEFAULT_MAX_ENTRIES: u32 = 10_000;
