//! The test endpoint picker ([`weir_testkit::epp::TestPicker`]) as a process: `make bench`
//! runs it behind an InferencePool to measure what the picker round trip costs a request.
//!
//! `weir-test-epp --endpoints IP:PORT[,IP:PORT...] [--bind 127.0.0.1] [--port 0]` prints
//! `listening epp ADDR` once it accepts connections, then serves until killed. It picks
//! round robin among the endpoints (the pool's Pods), as the conformance suite's picker does.
//! One thread (a current-thread runtime), as the bench gives every process one core.
//!
//! `weir-test-epp --probe ADDR [--requests N]` is the bench's measure of the picker round
//! trip: over one gRPC connection, N exchanges as Weir makes them for one request (open the
//! stream, the request headers, the picker's headers response; the response headers with
//! the served endpoint, the picker's answer), one at a time; prints
//! `probe exchanges N p50_ms X p99_ms Y request_step_p50_ms Z response_step_p50_ms W`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use weir_testkit::epp::TestPicker;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut bind = String::from("127.0.0.1");
    let mut port = String::from("0");
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    let mut probe: Option<SocketAddr> = None;
    let mut requests = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--bind" => bind = value,
            "--port" => port = value,
            "--probe" => match value.parse() {
                Ok(a) => probe = Some(a),
                Err(_) => {
                    eprintln!("weir-test-epp: --probe: {value} is not IP:PORT");
                    std::process::exit(2);
                }
            },
            "--requests" => requests = value.parse().unwrap_or(requests).max(1),
            "--endpoints" => {
                for e in value.split(',').filter(|e| !e.is_empty()) {
                    match e.trim().parse() {
                        Ok(addr) => endpoints.push(addr),
                        Err(_) => {
                            eprintln!("weir-test-epp: --endpoints: {e} is not IP:PORT");
                            std::process::exit(2);
                        }
                    }
                }
            }
            other => {
                eprintln!("weir-test-epp: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if let Some(addr) = probe {
        match weir_testkit::epp::probe(addr, requests, Duration::from_secs(5)).await {
            Ok(r) => {
                println!(
                    "probe exchanges {} p50_ms {:.4} p99_ms {:.4} request_step_p50_ms {:.4} \
                     response_step_p50_ms {:.4}",
                    r.whole.len(),
                    r.whole_pct(0.5),
                    r.whole_pct(0.99),
                    r.request_pct(0.5),
                    r.response_pct(0.5)
                );
                return;
            }
            Err(e) => {
                eprintln!("weir-test-epp: probe: {e}");
                std::process::exit(1);
            }
        }
    }
    if endpoints.is_empty() {
        eprintln!("weir-test-epp: --endpoints IP:PORT[,IP:PORT...] is required");
        std::process::exit(2);
    }
    let bind: SocketAddr = format!("{bind}:{port}").parse().unwrap_or_else(|_| {
        eprintln!("weir-test-epp: --bind/--port do not make an address");
        std::process::exit(2);
    });
    let picker = TestPicker::start_on(bind, endpoints).await.expect("bind");
    println!("listening epp {}", picker.addr);
    std::future::pending::<()>().await;
}
