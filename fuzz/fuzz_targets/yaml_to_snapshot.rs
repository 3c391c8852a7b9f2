//! Any bytes as a manifest file, read the way file mode reads it (`weir_sources::file`: UTF-8,
//! documents, bounded alias expansion, CRD defaults, typed objects) and translated into a
//! snapshot. Nothing may panic, and one input may not make the process hold more than
//! `LIVE_LIMIT` (an alias bomb must be refused, not expanded). Translating again with the
//! first translation's memo must give the same statuses (the memo replays unchanged
//! HTTPRoutes; docs/ARCHITECTURE.md promises the same output either way). Every Exact and
//! PathPrefix value in the snapshot is normal (translation normalises them as the proxy
//! normalises request paths, else no request could match them), and requests for those
//! values route without panicking whatever the fuzzed matchers hold.
#![no_main]

use std::borrow::Cow;

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use weir_fuzz::{dump, scratch_dir, translate, Bounded};
use weir_snapshot::{path, HostPattern, PathMatch, RequestView, Snapshot};

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
    route_each_value(&first.snapshot);
});

/// Check the path values of every route entry, and route a request for each.
fn route_each_value(snapshot: &Snapshot) {
    let headers = HeaderMap::new();
    for socket in snapshot.sockets.iter() {
        for listener in socket.listeners.iter() {
            let host = match &listener.hostname {
                Some(HostPattern::Exact(h)) => h.to_string(),
                Some(HostPattern::Wildcard(suffix)) => format!("x{suffix}"),
                None => "example.com".to_string(),
            };
            for entry in listener.routes.values() {
                let value = match &entry.matcher.path {
                    PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
                    PathMatch::Regex(_) => continue,
                };
                // An unnormalisable value (an encoded slash) is kept as written: no request
                // that reaches routing has one.
                let normal = path::normalize(value);
                assert!(
                    matches!(normal, Ok(Cow::Borrowed(_)) | Err(_)),
                    "{value:?} in the snapshot is not normal: {normal:?}"
                );
                for method in [Method::GET, Method::POST] {
                    let view = RequestView {
                        method: &method,
                        path: value,
                        query: None,
                        headers: &headers,
                    };
                    if let Some(hit) = listener.find_route(&host, &view) {
                        assert!(hit.matcher.matches(&view), "{host} {value}: {hit:?}");
                    }
                }
            }
        }
    }
}
