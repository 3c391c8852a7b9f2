//! Time a file-source rescan after one small file changed, on a directory shaped like the
//! benchmark's (bench/run.py `weir_config`: many files of routes plus `live.yaml`, which this
//! rewrites). The first scan reads everything; each later one follows a rewrite of
//! `live.yaml` (renamed into place, as the benchmark does), as after a route change. Under
//! `valgrind --tool=callgrind` use `--iterations 1` for instruction counts.
//!
//!     cargo run --release -p weir-sources --example rescan_scale -- DIR [iterations]

// A developer harness: failing loudly is what it should do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use weir_sources::file::FileSource;
use weir_store::Time;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: rescan_scale DIR [iterations]"));
    let iterations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut source = FileSource::new(&dir, Box::new(|| Time(k8s_openapi::jiff::Timestamp::now())));
    let started = Instant::now();
    let report = source.scan();
    println!(
        "first scan: {} objects in {:.1} ms",
        report.store.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let live = dir.join("live.yaml");
    let original = std::fs::read_to_string(&live).expect("DIR/live.yaml");
    for i in 1..=iterations {
        let tmp = dir.join(".live.yaml.tmp");
        std::fs::write(&tmp, original.replace("/gen-", &format!("/gen-{i}-"))).unwrap();
        std::fs::rename(&tmp, &live).unwrap();
        let started = Instant::now();
        let report = source.scan();
        println!(
            "rescan {i}: changed {} in {:.1} ms",
            report.changed,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    std::fs::write(&live, original).unwrap();
}
