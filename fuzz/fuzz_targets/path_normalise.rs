//! `weir_snapshot::path::normalize` on any string: it refuses the path or returns one that
//! is normal (docs/SECURITY.md, "Route boundaries"):
//! - starts with `/` (for input that does; other targets, `*` and authorities, come back
//!   as they were),
//! - has no `.` or `..` segment and no empty segment (`//`: slashes are merged),
//! - keeps no percent-encoded unreserved character, no `%2F`/`%5C`, no backslash and no
//!   bad escape,
//! - is never longer than the input,
//! - normalises to itself (borrowed: no allocation the second time).
//!
//! And a refusal is never arbitrary: a refused path has one of the things refused.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use weir_fuzz::Bounded;
use weir_snapshot::path::{normalize, PathError};

#[global_allocator]
static ALLOC: Bounded = Bounded;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The escapes of `path`, decoded (`None` for a `%` without two hex digits).
fn escapes(path: &[u8]) -> impl Iterator<Item = Option<u8>> + '_ {
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'%')
        .map(|(i, _)| {
            let hi = path.get(i + 1).copied().and_then(hex)?;
            let lo = path.get(i + 2).copied().and_then(hex)?;
            Some(hi << 4 | lo)
        })
}

fuzz_target!(|input: &str| {
    let bytes = input.as_bytes();
    let out = match normalize(input) {
        Ok(out) => out,
        Err(err) => {
            assert!(
                input.starts_with('/'),
                "{input:?} is not a path, refused {err:?}"
            );
            let why = match err {
                PathError::BadEscape => escapes(bytes).any(|e| e.is_none()),
                // After decoding: `%2F` and `%5C` only (a `%252F` stays `%252F`).
                PathError::EncodedSlash => escapes(bytes).any(|e| matches!(e, Some(b'/' | b'\\'))),
                PathError::Backslash => bytes.contains(&b'\\'),
                PathError::DotSegmentParameters => {
                    let lower = input.to_ascii_lowercase();
                    lower.contains(".;") || lower.contains("%2e;")
                }
            };
            assert!(why, "{input:?} refused for {err:?} without cause");
            return;
        }
    };
    if !input.starts_with('/') {
        assert!(matches!(out, Cow::Borrowed(_)), "{input:?} changed");
        assert_eq!(out, input);
        return;
    }
    let o = out.as_bytes();
    assert!(out.starts_with('/'), "{input:?} → {out:?}");
    assert!(o.len() <= bytes.len(), "{input:?} → {out:?} grew");
    assert!(!out.contains("//"), "{input:?} → {out:?}: empty segment");
    assert!(
        !out.split('/').any(|s| s == "." || s == ".."),
        "{input:?} → {out:?}: dot-segment"
    );
    assert!(!out.contains('\\'), "{input:?} → {out:?}: backslash");
    for e in escapes(o) {
        match e {
            None => panic!("{input:?} → {out:?}: bad escape"),
            Some(b) => assert!(
                !is_unreserved(b) && b != b'/' && b != b'\\',
                "{input:?} → {out:?}: escape of {:?} left",
                b as char
            ),
        }
    }
    match normalize(&out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out, "{input:?}"),
        other => panic!("{input:?} → {out:?} → {other:?}: not a fixed point"),
    }
    // Nothing but dot-segments, empty segments and unreserved escapes changed: the
    // segments that stayed are, decoded, segments of the input in the same order.
    let decoded: Vec<u8> = {
        let mut d = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let e = (b == b'%')
                .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
                .flatten();
            match e {
                Some(v) if is_unreserved(v) => {
                    d.push(v);
                    i += 3;
                }
                _ => {
                    d.push(b);
                    i += 1;
                }
            }
        }
        d
    };
    let mut pool = decoded.split(|&b| b == b'/');
    for kept in o.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        assert!(
            pool.any(|s| s == kept),
            "{input:?} → {out:?}: segment {:?} is not the input's",
            String::from_utf8_lossy(kept)
        );
    }
});
