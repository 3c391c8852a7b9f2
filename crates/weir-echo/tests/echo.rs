//! Runs the real binary on port 0 and checks its answers over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::{get, h2c, http1, EchoProcess};
use serde_json::json;

// Multi-threaded so that the client connections keep running (and answer the server's
// HTTP/2 GOAWAY/PING) while the test thread blocks waiting for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_server_end_to_end() {
    let mut echo = EchoProcess::start(
        &[
            "--pod-name",
            "infra-backend-v1-abc12",
            "--namespace",
            "gateway-conformance-infra",
        ],
        &[
            ("SERVICE_NAME", "infra-backend-v1"),
            ("INGRESS_NAME", "ing"),
        ],
        2,
    );
    let h2c_addr = echo.h2c.expect("h2c listener");
    assert!(echo.https.is_none(), "no TLS without a certificate");
    let http_port = echo.http.port().to_string();

    // The echo JSON.
    let answer = http1(
        echo.http,
        get(
            "/echo//x?foo=bar&baz=1",
            &[
                ("host", "example.com:8080"),
                ("x-foo-bar", "1"),
                ("X-MULTI", "a"),
                ("x-multi", "b"),
                ("x-echo-set-header", "X-Set-One: 1, x-set-two: two words"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("x-set-one"), Some("1"));
    assert_eq!(answer.header("x-set-two"), Some("two words"));
    let v = answer.json();
    assert_eq!(v["path"], "/echo//x?foo=bar&baz=1");
    assert_eq!(v["host"], "example.com:8080");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["proto"], "HTTP/1.1");
    assert_eq!(v["pod"], "infra-backend-v1-abc12");
    assert_eq!(v["namespace"], "gateway-conformance-infra");
    assert_eq!(v["service"], "infra-backend-v1");
    assert_eq!(v["ingress"], "ing");
    assert_eq!(v["httpPort"], http_port.as_str());
    assert_eq!(v["headers"]["X-Foo-Bar"], json!(["1"]));
    assert_eq!(v["headers"]["X-Multi"], json!(["a", "b"]));
    assert_eq!(
        v["headers"]["X-Echo-Set-Header"],
        json!(["X-Set-One: 1, x-set-two: two words"])
    );
    assert!(v["headers"].get("Host").is_none(), "Host is not a header");
    assert!(v.get("tls").is_none(), "no tls over plain HTTP");

    // The mirror-detection log line.
    let line = echo.wait_for_log("Echoing back request made to /echo//x?foo=bar&baz=1 ");
    assert!(
        line.starts_with(
            "Echoing back request made to /echo//x?foo=bar&baz=1 to client (127.0.0.1:"
        ),
        "{line}"
    );
    assert!(line.ends_with(')'), "{line}");

    // /version, /health, /status.
    let answer = http1(echo.http, get("/version", &[("host", "h")])).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        "version: v1\nhostname: infra-backend-v1-abc12\n"
    );
    let answer = http1(echo.http, get("//health", &[("host", "h")])).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "OK"));
    let answer = http1(echo.http, get("/status/418", &[("host", "h")])).await;
    assert_eq!((answer.status, answer.body.as_str()), (418, ""));
    let answer = http1(echo.http, get("/status//503", &[("host", "h")])).await;
    assert_eq!(answer.status, 503, "the path is collapsed before routing");
    let answer = http1(echo.http, get("/status/41x", &[("host", "h")])).await;
    assert_eq!(answer.status, 400);

    // delay=<Go duration> sleeps before answering.
    let started = Instant::now();
    let answer = http1(echo.http, get("/slow?delay=300ms", &[("host", "h")])).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["path"], "/slow?delay=300ms");
    let answer = http1(echo.http, get("/slow?delay=soon", &[("host", "h")])).await;
    assert_eq!(answer.status, 500, "an invalid delay is an error");

    // HTTP/2 prior knowledge on the h2c port.
    let uri = format!("http://{h2c_addr}/h2c//path?x=1");
    let answer = h2c(h2c_addr, get(&uri, &[("x-h2", "yes")])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v = answer.json();
    assert_eq!(v["proto"], "HTTP/2.0");
    assert_eq!(v["path"], "/h2c//path?x=1");
    assert_eq!(v["host"], h2c_addr.to_string());
    assert_eq!(v["httpPort"], h2c_addr.port().to_string());
    assert_eq!(v["headers"]["X-H2"], json!(["yes"]));
    assert_eq!(v["pod"], "infra-backend-v1-abc12");

    // Plain HTTP/1.1 on the h2c port is refused.
    let answer = http1(h2c_addr, get("/", &[("host", "h")])).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body, "Expected h2c request");

    // HTTP/2 prior knowledge also works on the plain port.
    let uri = format!("http://{}/p", echo.http);
    let answer = h2c(echo.http, get(&uri, &[])).await;
    assert_eq!(answer.json()["proto"], "HTTP/2.0");

    let started = Instant::now();
    let status = echo.terminate();
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "idle connections should not hold up shutdown ({:?})",
        started.elapsed()
    );
    echo.wait_for_log("weir-echo: shutting down");
}

#[tokio::test]
async fn env_configures_context_and_no_h2c_disables_h2c() {
    let echo = EchoProcess::start(
        &["--no-h2c"],
        &[("POD_NAME", "from-env-1"), ("NAMESPACE", "env-ns")],
        1,
    );
    assert!(echo.h2c.is_none());
    let answer = http1(echo.http, get("/", &[("host", "h")])).await;
    let v = answer.json();
    assert_eq!(v["pod"], "from-env-1");
    assert_eq!(v["namespace"], "env-ns");
    assert_eq!(v["path"], "/");
}

#[test]
fn bad_tls_material_fails_startup() {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_weir-echo"))
        .args(["--bind", "127.0.0.1", "--http-port", "0", "--h2c-port", "0"])
        .args(["--https-port", "0"])
        .env("TLS_SERVER_CERT", "not a pem")
        .env("TLS_SERVER_PRIVKEY", "not a pem")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run weir-echo");
    assert!(!status.success());
}
