//! What the fuzz targets share: an allocator that bounds what one input may hold, the file
//! source and the translator set up as file mode sets them up.
//!
//! The fuzz targets build without a sanitizer (`cargo fuzz build -s none`: Weir is safe Rust,
//! so AddressSanitizer finds little, and it doubles the build). Without one, libFuzzer's
//! `-malloc_limit_mb` has no malloc hooks to work with, so [`Bounded`] does its job: an
//! input that makes the process hold more than [`LIVE_LIMIT`] bytes at once aborts, and
//! libFuzzer saves it as a crash. `-rss_limit_mb` (set by `make fuzz`) still backs it up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use weir_store::{Store, Time};

/// The most one input may make the process hold at once. File mode refuses a file whose
/// aliases expand past 4 × its size (at least 64 Ki units), and the fuzzer's inputs are at
/// most a few KiB (`-max_len`), so a well-behaved input stays far below this.
pub const LIVE_LIMIT: usize = 256 << 20;

/// The system allocator, counting live bytes and aborting past [`LIVE_LIMIT`].
pub struct Bounded;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is kept
// beside it.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

fn charge(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if live > LIVE_LIMIT {
        // No allocation from here on: a static message to unbuffered stderr, then abort
        // (libFuzzer saves the input as a crash).
        let _ = std::io::stderr()
            .write_all(b"weir-fuzz: one input made the process hold more than LIVE_LIMIT bytes\n");
        std::process::abort();
    }
}

/// Bytes the process holds now (allocated and not freed).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The fixed "now" of every translation (translation is a function of its input).
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// The controller name file mode uses by default.
pub const CONTROLLER: &str = "weir.dev/gateway-controller";

/// Translate `store` as file mode does with the default flags (`--bind 127.0.0.1`, shared
/// address), with `memo` from a previous translation.
pub fn translate(store: &Store, memo: weir_translate::Memo) -> weir_translate::Output {
    let addresses = [("IPAddress".to_string(), "127.0.0.1".to_string())];
    weir_translate::translate_with(
        &weir_translate::Input {
            store,
            controller_name: CONTROLLER,
            now: now(),
            gateway_addresses: &addresses,
            address_usable: &|ip| ip.is_loopback(),
            addressing: &weir_translate::Addressing::Shared,
            // File mode's default: no `--rate-limit-redis`.
            rate_limit_redis: false,
        },
        memo,
    )
}

/// A directory of this process's own (under the system temp dir), holding one file that
/// each input is written to: file mode reads it from there like any manifest.
pub fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weir-fuzz-{}", std::process::id()));
        // A leftover of a dead process with the same id is ours to reuse.
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(err) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {err}", dir.display());
        }
        dir
    })
}

/// What a snapshot routes, comparable: per socket and listener its route entries, sorted
/// (the order within a bucket follows the entries' ranks, which the dump holds).
pub fn dump(snapshot: &weir_snapshot::Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for socket in snapshot.sockets.iter() {
        lines.push(format!(
            "socket {:?}:{} tls={} passthrough={}",
            socket.address,
            socket.port,
            socket.tls,
            socket.passthrough.is_some()
        ));
        for l in socket.listeners.iter() {
            lines.push(format!(
                "  listener {} {} {:?}",
                l.gateway, l.name, l.hostname
            ));
            let mut entries: Vec<String> = l.routes.values().map(|e| format!("{e:?}")).collect();
            entries.sort();
            lines.extend(entries.into_iter().map(|e| format!("    {e}")));
        }
    }
    lines
}
