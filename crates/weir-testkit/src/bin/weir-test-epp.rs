//! The test endpoint picker ([`weir_testkit::epp::TestPicker`]) as a process: `make bench`
//! runs it behind an InferencePool to measure what the picker round trip costs a request.
//!
//! `weir-test-epp --endpoints IP:PORT[,IP:PORT...] [--bind 127.0.0.1] [--port 0]` prints
//! `listening epp ADDR` once it accepts connections, then serves until killed. It picks
//! round robin among the endpoints (the pool's Pods), as the conformance suite's picker does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use weir_testkit::epp::TestPicker;

#[tokio::main]
async fn main() {
    let mut bind = String::from("127.0.0.1");
    let mut port = String::from("0");
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--bind" => bind = value,
            "--port" => port = value,
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
