//! The Gateway API Inference Extension v1.6.0 conformance replay, run alone: `weir-conformance
//! --inference-only` (e2e/conformance/src/inference.rs; `make conformance` runs it after the
//! Gateway API suite). Needs `cargo build --bins` first. Fails when any of the 14 tests fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use weir_testkit::process::bin;

#[test]
fn the_inference_extension_conformance_suite_passes() {
    let out = Command::new(bin("weir-conformance"))
        .arg("--inference-only")
        .output()
        .expect("run weir-conformance (cargo build --bins first)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let passed = stdout.lines().filter(|l| l.contains("  pass (")).count();
    assert_eq!(passed, 14, "{stdout}");
}
