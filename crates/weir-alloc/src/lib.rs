//! Gives memory the allocator holds free back to the operating system.
//!
//! glibc's malloc returns freed memory only from the top of each arena; what is freed below
//! a live allocation stays resident, on its free lists, until the process allocates it
//! again. After 10,000 keep-alive clients close, Weir frees about 270 MB that glibc keeps
//! (bench/keepalive_mem.py: RSS stays at the peak). `malloc_trim(0)` walks every arena and
//! returns the free pages in the middle too (MADV_DONTNEED): RSS fell from 284 MB to 15 MB
//! (baseline 14 MB) in that measurement.
//!
//! This crate owns that one call and the workspace's only `unsafe` block. It must not do
//! anything else.

/// Ask the allocator to return the memory it holds free to the operating system. Returns
/// whether it gave anything back. Walks and briefly locks every arena, so call it from the
/// blocking pool after a drop in load, not per request. A no-op (`false`) off glibc, whose
/// allocators (musl's, other systems') have no such call.
pub fn release_free_memory() -> bool {
    imp::release()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    extern "C" {
        /// glibc, `<malloc.h>`: `int malloc_trim(size_t pad)`.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    pub(super) fn release() -> bool {
        // SAFETY: malloc_trim takes no pointers and has no preconditions; glibc takes each
        // arena's lock while it trims, so it is safe to call from any thread at any time.
        #[allow(unsafe_code)]
        let released = unsafe { malloc_trim(0) };
        released == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn release() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    /// A burst of allocations freed below a live one is given back: glibc reports that it
    /// released something (the memory itself is checked over a real process by the
    /// keep-alive e2e test).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_below_a_live_allocation_is_released() {
        let burst: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 * 1024]).collect();
        let keep = Box::new([1u8; 64]);
        drop(burst);
        assert!(super::release_free_memory());
        assert_eq!(keep[0], 1);
    }
}
