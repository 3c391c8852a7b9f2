//! The access log as users read it: JSON lines on weir's stdout, one per request, with the
//! documented fields, no credentials, sampling and off.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use weir_e2e::{wait_ready, WAIT};
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir, Echo, Weir};

/// The quickstart's HTTP listener and demo route to one echo backend, with `extra` flags.
async fn start(extra: &[&str]) -> (tempfile::TempDir, Echo, Weir) {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let mut args = vec!["--log-level", "info"];
    args.extend_from_slice(extra);
    let weir = weir(dir.path(), &[80], &args);
    wait_ready(&weir).await;
    (dir, backend, weir)
}

/// The access log lines on stdout so far.
fn lines(weir: &Weir) -> Vec<Value> {
    weir.proc
        .stdout
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_lines(weir: &Weir, n: usize) -> Vec<Value> {
    weir_testkit::assert_eventually("access log lines", WAIT, || async {
        let got = lines(weir).len();
        if got >= n {
            Ok(())
        } else {
            Err(format!("{got} of {n} lines"))
        }
    })
    .await;
    lines(weir)
}

#[tokio::test]
async fn one_json_line_per_request_with_the_documented_fields_and_no_credentials() {
    let (_dir, backend, weir) = start(&[]).await;
    let http = weir.listener(80);
    // A GET with credentials in headers and the query string.
    let first = http1(
        http,
        &Req::get("demo.ingress.top", "/get/it?token=s3cret-query")
            .header("x-request-id", "req-42")
            .header("authorization", "Bearer s3cret-bearer")
            .header("cookie", "session=s3cret-cookie"),
    )
    .await
    .unwrap();
    assert_eq!(first.status, 200);
    // A POST with a 11-byte body, on a raw socket.
    let mut s = std::net::TcpStream::connect(http).unwrap();
    s.write_all(b"POST /post HTTP/1.1\r\nHost: demo.ingress.top\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world")
        .unwrap();
    let mut answer = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    // No route.
    let reply = http1(http, &Req::get("nowhere.example", "/x"))
        .await
        .unwrap();
    assert_eq!(reply.status, 404);

    let log = wait_lines(&weir, 3).await;
    assert_eq!(log.len(), 3, "{log:?}");
    let get = &log[0];
    assert_eq!(get["request_id"], "req-42");
    assert_eq!(get["method"], "GET");
    assert_eq!(get["host"], "demo.ingress.top");
    assert_eq!(get["path"], "/get/it", "no query string");
    assert_eq!(get["protocol"], "HTTP/1.1");
    assert_eq!(get["status"], 200);
    assert_eq!(get["bytes_in"], 0);
    assert_eq!(get["bytes_out"], first.body.len());
    assert_eq!(get["route"], "default/demo-route");
    assert_eq!(get["gateway"], "default/weir");
    assert_eq!(get["upstream_endpoint"], backend.addr.to_string());
    assert!(get["upstream"].as_str().unwrap().contains("go-httpbin"));
    assert!(get["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(get["time"].as_str().unwrap().ends_with('Z'));
    assert!(get["duration_ms"].as_f64().unwrap() >= get["upstream_ms"].as_f64().unwrap());
    assert!(get.get("flags").is_none());
    let post = &log[1];
    assert_eq!(
        (post["method"].as_str(), post["bytes_in"].as_u64()),
        (Some("POST"), Some(11))
    );
    let not_found = &log[2];
    assert_eq!(not_found["status"], 404);
    assert_eq!(not_found["flags"], "no_listener");
    assert!(not_found.get("upstream_ms").is_none());
    let stdout = weir.proc.stdout.lock().unwrap().join("\n");
    assert!(
        !stdout.contains("s3cret"),
        "credentials in the access log: {stdout}"
    );
}

#[tokio::test]
async fn the_access_log_samples_and_turns_off() {
    let (_dir, _backend, weir) = start(&["--access-log-sample", "0.25"]).await;
    for _ in 0..200 {
        let r = http1(weir.listener(80), &Req::get("demo.ingress.top", "/"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = lines(&weir).len();
    assert!((20..=80).contains(&n), "{n} of 200 requests logged at 0.25");

    let (_dir, _backend, weir) = start(&["--access-log", "off"]).await;
    for _ in 0..20 {
        http1(weir.listener(80), &Req::get("demo.ingress.top", "/"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(&weir).len(), 0);
}
