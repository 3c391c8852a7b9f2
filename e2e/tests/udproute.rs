//! UDPRoute through the real binaries: `weir run` in file mode with a UDP listener and a TCP
//! listener on the same port number, two `weir-echo` processes in the conformance UDP echo
//! mode. Datagrams reach the route's backend and the answers come back from the Gateway's
//! address; a flow keeps its backend after a route edit while new flows take the new one;
//! `--udp-max-flows` bounds the flows and counts the ones refused on /metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::net::UdpSocket;
use weir_e2e::{status_of, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{bin, weir, Proc};

/// weir-echo in UDP echo mode as pod `pod`; returns the process and its UDP port.
fn udp_echo(pod: &str) -> (Proc, u16) {
    let mut cmd = Command::new(bin("weir-echo"));
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--udp-echo-server",
        "1",
        "--udp-port",
        "0",
    ])
    .env("POD_NAME", pod)
    .env("NAMESPACE", "default")
    .env_remove("UDP_PORT")
    .env_remove("TCP_ECHO_SERVER");
    let proc = Proc::spawn(cmd);
    let addr = proc.wait_stdout("listening udp ", Duration::from_secs(10));
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
metadata: {name: dgram, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: udp, protocol: UDP, port: 9053}
  - {name: tcp, protocol: TCP, port: 9053}
";

fn route(backend: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {{name: dgram, namespace: default}}
spec:
  parentRefs: [{{name: dgram, sectionName: udp}}]
  rules:
  - backendRefs: [{{name: {backend}, port: 8080}}]
"
    )
}

/// A client connected to the Gateway's UDP socket (it takes answers from that address only).
async fn client(addr: SocketAddr) -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(addr).await.unwrap();
    c
}

/// One datagram and its answer: the pod that answered (the request must come back intact).
async fn ask(c: &UdpSocket, probe: &str) -> Result<String, String> {
    c.send(probe.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), c.recv(&mut buf))
        .await
        .map_err(|_| "no answer within 1s".to_string())?
        .map_err(|e| e.to_string())?;
    let answer: serde_json::Value = serde_json::from_slice(&buf[..n]).map_err(|e| e.to_string())?;
    if answer["request"] != probe {
        return Err(format!("request echoed as {}", answer["request"]));
    }
    Ok(answer["pod"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn datagrams_reach_the_routes_backend_flows_keep_it_and_are_bounded() {
    let (_a, port_a) = udp_echo("udp-a-0");
    let (_b, port_b) = udp_echo("udp-b-0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        format!(
            "{}\n---\n{}",
            weir_e2e::service_yaml("default", "udp-a", 8080, &[([127, 0, 0, 1], port_a).into()]),
            weir_e2e::service_yaml("default", "udp-b", 8080, &[([127, 0, 0, 1], port_b).into()])
        )
        .replace("protocol: TCP", "protocol: UDP"),
    )
    .unwrap();
    std::fs::write(dir.path().join("route.yaml"), route("udp-a")).unwrap();
    let w = weir(dir.path(), &[9053], &["--udp-max-flows", "2"]);
    wait_ready(&w).await;

    let addr = w.listener(9053);
    let first = client(addr).await;
    assert_eventually("UDPRoute served by udp-a", WAIT, || async {
        match ask(&first, "one").await? {
            pod if pod == "udp-a-0" => Ok(()),
            pod => Err(format!("answered by {pod:?}")),
        }
    })
    .await;
    let status = status_of(&w, "UDPRoute", "dgram")
        .await
        .expect("UDPRoute status");
    let conditions = &status["status"]["parents"][0]["conditions"];
    assert_eq!(
        weir_e2e::condition(conditions, "Accepted").unwrap()["status"],
        "True"
    );

    // The TCP listener on the same port number has its own (TCP) socket.
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());

    // The route moves to udp-b: new flows go there, the open flow keeps udp-a.
    let tmp = dir.path().join(".route.yaml.swp");
    std::fs::write(&tmp, route("udp-b")).unwrap();
    std::fs::rename(&tmp, dir.path().join("route.yaml")).unwrap();
    // (A flow's first datagram picks the backend: wait until the edit is served, as the
    // status of the new generation shows, before the second client starts its flow.)
    assert_eventually("the edited UDPRoute's status", WAIT, || async {
        let s = status_of(&w, "UDPRoute", "dgram")
            .await
            .ok_or("no status")?;
        let observed = &s["status"]["parents"][0]["conditions"][0]["observedGeneration"];
        if *observed == s["metadata"]["generation"] && *observed != 1 {
            Ok(())
        } else {
            Err(format!("observedGeneration {observed}"))
        }
    })
    .await;
    let second = client(addr).await;
    assert_eq!(ask(&second, "two").await.unwrap(), "udp-b-0");
    assert_eq!(ask(&first, "one again").await.unwrap(), "udp-a-0");

    // Two flows are open (`--udp-max-flows 2`, no flow ended: 30 s idle timeout); a third
    // client's datagrams are dropped and counted.
    let third = client(addr).await;
    assert!(ask(&third, "three").await.is_err());
    let metrics = http1(w.admin, &Req::get("admin", "/metrics"))
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(body.contains("weir_udp_flows 2"), "{body}");
    let rejected = body
        .lines()
        .find_map(|l| l.strip_prefix("weir_udp_flows_rejected_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(rejected >= 1.0, "{body}");
}
