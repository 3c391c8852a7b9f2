//! Issue 26, file mode: two Gateways of our class, each with one HTTP listener on port 80 and
//! no hostname, a route to each. With `--gateway-address-pool` each Gateway answers at its
//! own address (stable across a restart); without it the younger Gateway's listener is
//! Conflicted in `/status` and in `weir check`, never Programmed with a silent 404.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use weir_e2e::{condition, status_of, wait_ready, WAIT};
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{bin, echo, weir, Echo, Weir};

const POOL: &str = "127.0.1.0/24";

/// GatewayClass, Gateways `team-a` (older) and `team-b`, a Service + EndpointSlice per
/// echo backend, and an HTTPRoute from each Gateway to its backend.
fn manifests(backends: &[Echo]) -> String {
    let mut docs = vec!["apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}"
        .to_string()];
    for (i, (team, backend)) in ["team-a", "team-b"].iter().zip(backends).enumerate() {
        let port = backend.addr.port();
        docs.push(format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {team}, namespace: default, creationTimestamp: '2026-01-0{day}T00:00:00Z'}}
spec:
  gatewayClassName: weir
  listeners: [{{name: http, port: 80, protocol: HTTP}}]",
            day = i + 1
        ));
        docs.push(format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {team}-app, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {team}-app-local
  namespace: default
  labels: {{kubernetes.io/service-name: {team}-app}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ['127.0.0.1'], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {team}-route, namespace: default}}
spec:
  parentRefs: [{{name: {team}}}]
  rules: [{{backendRefs: [{{name: {team}-app, port: 80}}]}}]"
        ));
    }
    docs.join("\n---\n")
}

fn backends() -> Vec<Echo> {
    vec![echo("team-a-pod", "default"), echo("team-b-pod", "default")]
}

/// The single IPAddress a Gateway reports, once it is Programmed.
async fn programmed_address(weir: &Weir, gateway: &str) -> IpAddr {
    weir_testkit::assert_eventually(
        &format!("{gateway} programmed with an address"),
        WAIT,
        || async {
            let g = status_of(weir, "Gateway", gateway)
                .await
                .ok_or("no status")?;
            let programmed =
                condition(&g["status"]["conditions"], "Programmed").map(|c| c["status"].clone());
            if programmed != Some("True".into()) {
                return Err(format!("not programmed: {}", g["status"]));
            }
            let addrs = g["status"]["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match addrs.as_slice() {
                [a] if a["type"] == "IPAddress" => a["value"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("bad address {a}")),
                other => Err(format!("addresses {other:?}")),
            }
        },
    )
    .await
}

/// GET / with some Host at `ip`:80 (plus Weir's port offset); the answering pod's name.
async fn pod_at(weir: &Weir, ip: IpAddr) -> Result<String, String> {
    let addr = SocketAddr::new(ip, 80 + weir.offset);
    let reply = http1(addr, &Req::get("anything.example", "/")).await?;
    if reply.status != 200 {
        return Err(format!("{addr}: status {}", reply.status));
    }
    Ok(reply.json()["pod"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn with_a_pool_each_gateway_answers_at_its_own_stable_address() {
    let backends = backends();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), manifests(&backends)).unwrap();
    let mut first = weir(dir.path(), &[80], &["--gateway-address-pool", POOL]);
    wait_ready(&first).await;
    let a = programmed_address(&first, "team-a").await;
    let b = programmed_address(&first, "team-b").await;
    assert_ne!(a, b, "each Gateway its own address");
    for ip in [a, b] {
        assert!(ip.to_string().starts_with("127.0.1."), "{ip} from the pool");
    }
    assert_eq!(pod_at(&first, a).await.unwrap(), "team-a-pod");
    assert_eq!(pod_at(&first, b).await.unwrap(), "team-b-pod");
    // Nothing is served on the shared --bind address.
    assert!(pod_at(&first, "127.0.0.1".parse().unwrap()).await.is_err());
    first
        .proc
        .terminate(Duration::from_secs(10))
        .expect("weir exits");

    // A restart hands out the same addresses.
    let second = weir(dir.path(), &[80], &["--gateway-address-pool", POOL]);
    wait_ready(&second).await;
    assert_eq!(programmed_address(&second, "team-a").await, a);
    assert_eq!(programmed_address(&second, "team-b").await, b);
    assert_eq!(pod_at(&second, b).await.unwrap(), "team-b-pod");
}

#[tokio::test]
async fn without_a_pool_the_younger_gateway_is_conflicted_not_a_silent_404() {
    let backends = backends();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), manifests(&backends)).unwrap();

    let out = Command::new(bin("weir"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("listener http: Conflicted=True (HostnameConflict)"),
        "{text}"
    );
    assert!(
        text.contains("default/team-a/http"),
        "names the other listener: {text}"
    );
    // With the pool, the same directory checks clean.
    let out = Command::new(bin("weir"))
        .args(["check", "--gateway-address-pool", POOL])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    let b = status_of(&weir, "Gateway", "team-b").await.expect("status");
    let listener = &b["status"]["listeners"][0]["conditions"];
    assert_eq!(condition(listener, "Conflicted").unwrap()["status"], "True");
    assert_eq!(
        condition(listener, "Programmed").unwrap()["status"],
        "False"
    );
    let route = status_of(&weir, "HTTPRoute", "team-b-route")
        .await
        .expect("status");
    let accepted = condition(&route["status"]["parents"][0]["conditions"], "Accepted").unwrap();
    assert_eq!(accepted["status"], "False", "{route}");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Conflicted"),
        "{accepted}"
    );
    // The shared address serves the older Gateway, as its status says.
    let shared: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(pod_at(&weir, shared).await.unwrap(), "team-a-pod");
}
