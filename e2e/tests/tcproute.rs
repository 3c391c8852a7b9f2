//! TCPRoute through the real binaries: `weir run` in file mode with a TCP listener, and two
//! `weir-echo` processes speaking the conformance TCP line protocol. A connection reaches the
//! route's backend; editing only the TCPRoute's file moves new connections to the other
//! backend without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weir_e2e::{status_of, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::process::{bin, weir, Proc};

/// weir-echo in TCP line-protocol mode as pod `pod`; returns the process and its TCP port.
fn tcp_echo(pod: &str) -> (Proc, u16) {
    let mut cmd = Command::new(bin("weir-echo"));
    cmd.args(["--bind", "127.0.0.1", "--tcp-echo-server", "1"])
        .args(["--tcp-port", "0", "--tls-port", "0"])
        .env("POD_NAME", pod)
        .env("NAMESPACE", "default")
        .env_remove("TLS_SERVER_CERT")
        .env_remove("TLS_SERVER_PRIVKEY")
        .env_remove("TLS_SERVER_PRIV_KEY");
    let proc = Proc::spawn(cmd);
    let addr = proc.wait_stdout("listening tcp ", Duration::from_secs(10));
    let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    (proc, port)
}

const GATEWAY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: raw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: tcp, protocol: TCP, port: 9000}
";

fn route(backend: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: raw, namespace: default}}
spec:
  parentRefs: [{{name: raw}}]
  rules:
  - backendRefs: [{{name: {backend}, port: 3000}}]
"
    )
}

async fn next<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Result<String, String> {
    lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "closed".to_string())
}

/// One line-protocol exchange through the Gateway: the welcome line, PING → PONG, then the
/// pod that answered `TEST`.
async fn exchange(addr: SocketAddr) -> Result<String, String> {
    let run = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (read, mut write) = tcp.into_split();
        let mut lines = BufReader::new(read).lines();
        let welcome = next(&mut lines).await?;
        if welcome != "Gateway API Test TCP Server" {
            return Err(format!("welcome {welcome:?}"));
        }
        write
            .write_all(b"PING\n")
            .await
            .map_err(|e| e.to_string())?;
        let pong = next(&mut lines).await?;
        if pong != "PONG" {
            return Err(format!("PING answered {pong:?}"));
        }
        write
            .write_all(b"TEST\n")
            .await
            .map_err(|e| e.to_string())?;
        let test: serde_json::Value =
            serde_json::from_str(&next(&mut lines).await?).map_err(|e| e.to_string())?;
        if test["isTLS"] != false {
            return Err(format!("isTLS in {test}"));
        }
        Ok(test["pod"].as_str().unwrap_or_default().to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .map_err(|_| "no exchange within 5s".to_string())?
}

#[tokio::test]
async fn tcp_connections_reach_the_routes_backend_and_follow_route_edits() {
    let (_a, port_a) = tcp_echo("tcp-a-0");
    let (_b, port_b) = tcp_echo("tcp-b-0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        format!(
            "{}\n---\n{}",
            weir_e2e::service_yaml("default", "tcp-a", 3000, &[([127, 0, 0, 1], port_a).into()]),
            weir_e2e::service_yaml("default", "tcp-b", 3000, &[([127, 0, 0, 1], port_b).into()])
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("route.yaml"), route("tcp-a")).unwrap();
    let w = weir(dir.path(), &[9000], &[]);
    wait_ready(&w).await;

    let addr = w.listener(9000);
    assert_eventually("TCPRoute served by tcp-a", WAIT, || async {
        match exchange(addr).await? {
            pod if pod == "tcp-a-0" => Ok(()),
            pod => Err(format!("answered by {pod:?}")),
        }
    })
    .await;
    let status = status_of(&w, "TCPRoute", "raw")
        .await
        .expect("TCPRoute status");
    let conditions = &status["status"]["parents"][0]["conditions"];
    assert_eq!(
        weir_e2e::condition(conditions, "Accepted").unwrap()["status"],
        "True"
    );

    // Only the TCPRoute's file changes.
    let tmp = dir.path().join(".route.yaml.swp");
    std::fs::write(&tmp, route("tcp-b")).unwrap();
    std::fs::rename(&tmp, dir.path().join("route.yaml")).unwrap();
    assert_eventually("edited TCPRoute served by tcp-b", WAIT, || async {
        match exchange(addr).await? {
            pod if pod == "tcp-b-0" => Ok(()),
            pod => Err(format!("answered by {pod:?}")),
        }
    })
    .await;
}
