//! The test external authorization service ([`weir_testkit::ext_auth`]) as a process: the
//! conformance replay runs it for Weir's own ExternalAuth tests' auth Deployments.
//!
//! `weir-test-auth --protocol http|grpc [--bind 127.0.0.1] [--port 0] [--quiet]` prints
//! `listening ext-auth ADDR` once it accepts connections, then serves until killed.
//! `--quiet` (for `make bench`) does not log each check: the log loop copies every check
//! seen so far each 100 ms, which under load would take the CPU the bench measures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use weir_testkit::ext_auth::{AuthRules, AuthServer};

#[tokio::main]
async fn main() {
    let mut protocol = String::from("http");
    let mut bind = String::from("127.0.0.1");
    let mut port = String::from("0");
    let mut quiet = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--quiet" {
            quiet = true;
            continue;
        }
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--protocol" => protocol = value.to_ascii_lowercase(),
            "--bind" => bind = value,
            "--port" => port = value,
            other => {
                eprintln!("weir-test-auth: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(format!("{bind}:{port}"))
        .await
        .expect("bind");
    let server = match protocol.as_str() {
        "grpc" => AuthServer::grpc(listener, AuthRules::default()),
        "http" => AuthServer::http(listener, AuthRules::default()),
        other => {
            eprintln!("weir-test-auth: --protocol must be http or grpc, not {other}");
            std::process::exit(2);
        }
    };
    println!("listening ext-auth {}", server.addr);
    if quiet {
        std::future::pending::<()>().await;
    }
    let mut seen = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // Each check on stderr, as the echo pods log requests.
        let all = server.seen();
        for s in all.iter().skip(seen) {
            eprintln!(
                "ext-auth check {} {} host={} body={}B",
                s.method,
                s.path,
                s.host,
                s.body.len()
            );
        }
        seen = all.len();
    }
}
