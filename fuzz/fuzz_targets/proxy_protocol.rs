//! `weir_proxy::proxy_protocol::parse` on any bytes, as the start of a connection on a
//! socket whose ClientTrafficPolicy expects a PROXY protocol header:
//! - no panic;
//! - a header never claims more bytes than were given, nor more than the bounds (107 for
//!   v1, `MAX_V2` for v2), and parsing exactly its bytes gives the same header (it never
//!   depends on what follows, which belongs to the client);
//! - every shorter prefix of a header is `Incomplete` (so a header split over reads is
//!   waited for, never refused or mistaken for the client's bytes);
//! - `NotProxy` only for bytes that start neither signature; `Incomplete` only for bytes
//!   shorter than the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_fuzz::Bounded;
use weir_proxy::proxy_protocol::{parse, Parsed, MAX_V1, MAX_V2};

#[global_allocator]
static ALLOC: Bounded = Bounded;

const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1: &[u8] = b"PROXY ";

fn starts_like(data: &[u8], signature: &[u8]) -> bool {
    let n = data.len().min(signature.len());
    data[..n] == signature[..n]
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse(data) else {
        assert!(starts_like(data, V1) || starts_like(data, V2));
        return;
    };
    match parsed {
        Parsed::NotProxy => assert!(!starts_like(data, V1) && !starts_like(data, V2)),
        Parsed::Incomplete => {
            let bound = if starts_like(data, V2) {
                MAX_V2
            } else {
                MAX_V1
            };
            assert!(data.len() < bound, "{} bytes still incomplete", data.len());
        }
        Parsed::Header { len, .. } => {
            assert!(len <= data.len());
            let bound = if starts_like(data, V2) {
                MAX_V2
            } else {
                MAX_V1
            };
            assert!(len <= bound);
            assert_eq!(parse(&data[..len]), Ok(parsed));
            // Prefixes: all of them for short headers, a sample for long ones.
            let step = (len / 64).max(1);
            for cut in (0..len).step_by(step) {
                assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
            }
        }
    }
});
