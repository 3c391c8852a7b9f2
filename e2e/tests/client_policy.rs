//! ClientTrafficPolicy as users write it: YAML in the config directory of a running weir,
//! applied, changed and removed without a restart, checked over real sockets. (Each field's
//! behaviour in detail: crates/weir-proxy/tests/proxy/client_policy.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use weir_e2e::{condition, policy_accepted_when, status_of, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir};

fn write_policy(dir: &Path, spec: &str) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "apiVersion: gateway.weir.dev/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: edge, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: weir}}]
{spec}"
        ),
    )
    .unwrap();
}

/// The echo backend's view of one request: (x-envoy-external-address, x-request-id).
async fn seen(http: SocketAddr, xff: &str) -> Result<(String, String), String> {
    let r = http1(
        http,
        &Req::get("demo.ingress.top", "/get")
            .header("x-forwarded-for", xff)
            .header("x-request-id", "client-id"),
    )
    .await?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    let headers = &r.json()["headers"];
    let one = |name: &str| headers[name][0].as_str().unwrap_or("").to_string();
    Ok((one("X-Envoy-External-Address"), one("X-Request-Id")))
}

/// Whether a new connection gets an answer (a connection over a limit is closed at once).
fn answered(http: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(http) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = b"GET /get HTTP/1.1\r\nHost: demo.ingress.top\r\nConnection: close\r\n\r\n";
    if s.write_all(request).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn a_policy_applies_changes_and_goes_away_without_a_restart() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let weir = weir(dir.path(), &[80], &["--access-log", "off"]);
    wait_ready(&weir).await;
    let http = weir.listener(80);

    // No policy: the client's X-Forwarded-For is not trusted and its request ID passes.
    let (external, id) = seen(http, "203.0.113.7").await.unwrap();
    assert_eq!(external, "", "no client detection without a policy");
    assert_eq!(id, "client-id");

    // One trusted proxy in front of Weir; request IDs always generated.
    write_policy(
        dir.path(),
        "  clientIPDetection: {xForwardedFor: {numTrustedHops: 1}}\n  headers: {requestID: Generate}\n",
    );
    assert_eventually("the policy applied", WAIT, || async {
        match seen(http, "203.0.113.7").await? {
            (external, id) if external == "203.0.113.7" && id != "client-id" && !id.is_empty() => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let status = status_of(&weir, "ClientTrafficPolicy", "edge")
        .await
        .unwrap();
    let accepted = condition(&status["status"]["ancestors"][0]["conditions"], "Accepted");
    assert_eq!(accepted.unwrap()["status"], "True", "{status}");

    // Changed: one connection at a time. An open connection keeps working; a second one is
    // closed at accept. (Connections count from when the policy applies: one opened before
    // is not counted against it, so the held one is opened anew until the limit bites.)
    write_policy(dir.path(), "  connection: {connectionLimit: {value: 1}}\n");
    let mut held = None;
    assert_eventually("the limit applied", WAIT, || {
        let first = TcpStream::connect(http).unwrap();
        let refused = !answered(http);
        if refused {
            held = Some(first);
        }
        async move {
            if refused {
                Ok(())
            } else {
                Err("a second connection was served".to_string())
            }
        }
    })
    .await;
    let mut held = held.unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.write_all(b"GET /get HTTP/1.1\r\nHost: demo.ingress.top\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    held.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(held);

    // A field Weir lacks: refused by name, and none of the policy applies.
    write_policy(
        dir.path(),
        "  connection: {connectionLimit: {value: 1}}\n  tcpKeepalive: {idleTime: 20m}\n",
    );
    policy_accepted_when(
        &weir,
        "the refused policy reported",
        "ClientTrafficPolicy",
        "edge",
        |c| {
            c["reason"] == "UnsupportedValue"
                && c["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("spec.tcpKeepalive")
        },
    )
    .await;
    let held = TcpStream::connect(http).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(answered(http), "the refused policy's limit does not apply");
    drop(held);

    // Removed: back to the defaults.
    std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
    assert_eventually("the policy gone", WAIT, || async {
        match seen(http, "203.0.113.7").await? {
            (external, id) if external.is_empty() && id == "client-id" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
