//! Any bytes as a manifest file, read the way file mode reads it (`weir_sources::file`: UTF-8,
//! documents, bounded alias expansion, CRD defaults, typed objects) and translated into a
//! snapshot. Nothing may panic, and one input may not make the process hold more than
//! `LIVE_LIMIT` (an alias bomb must be refused, not expanded). Translating again with the
//! first translation's memo must give the same statuses (the memo replays unchanged
//! HTTPRoutes; docs/ARCHITECTURE.md promises the same output either way).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_fuzz::{dump, scratch_dir, translate, Bounded};

#[global_allocator]
static ALLOC: Bounded = Bounded;

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    if let Err(err) = std::fs::write(dir.join("input.yaml"), data) {
        panic!("cannot write the input file: {err}");
    }
    let report = weir_sources::file::load_dir(dir, weir_fuzz::now());
    let first = translate(&report.store, weir_translate::Memo::default());
    let again = translate(&report.store, first.memo);
    assert_eq!(
        first.statuses, again.statuses,
        "translating with the memo gave other statuses"
    );
    assert_eq!(
        dump(&first.snapshot),
        dump(&again.snapshot),
        "translating with the memo routed otherwise"
    );
});
