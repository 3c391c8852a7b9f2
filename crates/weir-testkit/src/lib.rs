//! Test helpers shared by Weir's integration and end-to-end tests (never linked into the
//! product): start real `weir` and `weir-echo` processes, generate certificates at test time,
//! talk HTTP/1.1, HTTP/2 and HTTPS to real sockets, and wait for conditions instead of
//! sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod apiserver;
pub mod certs;
pub mod client;
pub mod epp;
pub mod ext_auth;
pub mod grpc;
pub mod otlp;
pub mod process;
pub mod redis;

use std::time::{Duration, Instant};

/// Poll `check` until it returns `Ok`, or fail with its last error after `timeout`.
pub async fn assert_eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// An offset such that `port + offset` is free for each of `ports` (best effort: the ports are
/// checked, then released).
pub fn free_offset(ports: &[u16]) -> u16 {
    for _ in 0..200 {
        let candidate = 20000 + (std::process::id() as u16 % 100) * 100 + rand_u16() % 9000;
        if ports.iter().all(|p| {
            // Free for TCP and UDP: UDP listeners bind UDP sockets.
            p.checked_add(candidate).is_some_and(|port| {
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                    && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            })
        }) {
            return candidate;
        }
    }
    panic!("no free port offset found")
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}
