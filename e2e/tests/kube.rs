//! Kubernetes mode against the test API server (crates/weir-testkit/src/apiserver.rs: an
//! in-memory stand-in that serves list/watch/get/patch as kube-rs expects; no real
//! kube-apiserver can run on these machines). Two real `weir` processes, real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use weir_e2e::{condition, WAIT};
use weir_testkit::apiserver::TestApiServer;
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{bin, echo, Proc};

const GW: &str = "gateway.networking.k8s.io";

fn kubeconfig(dir: &Path, api: &TestApiServer) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\nusers:\n- name: test\n  user: {{}}\n",
            api.url()
        ),
    )
    .unwrap();
    path
}

struct Replica {
    proc: Proc,
    admin: SocketAddr,
}

fn replica(kubeconfig: &Path, name: &str, offset: u16) -> Replica {
    let admin = SocketAddr::from(([127, 0, 0, 1], weir_testkit::free_port()));
    let mut cmd = Command::new(bin("weir"));
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--bind",
            "127.0.0.1",
            "--listener-port-offset",
            &offset.to_string(),
        ])
        .args(["--admin-addr", &admin.to_string()])
        .args([
            "--leader-election-namespace",
            "weir-system",
            "--lease-duration",
            "2s",
        ])
        .args(["--drain-timeout", "1s", "--log-level", "info,weir=debug"])
        .env("POD_NAME", name)
        .env("POD_IP", "127.0.0.1");
    Replica {
        proc: Proc::spawn(cmd),
        admin,
    }
}

async fn metric(admin: SocketAddr, name: &str) -> Result<f64, String> {
    let text = http1(admin, &Req::get("admin", "/metrics")).await?.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| format!("no {name}"))
}

fn fixtures(api: &TestApiServer, backend_port: u16) {
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(json!({"apiVersion": format!("{GW}/v1"), "kind": "GatewayClass", "metadata": {"name": "weir"},
        "spec": {"controllerName": "weir.dev/gateway-controller"}}));
    api.apply(json!({"apiVersion": format!("{GW}/v1"), "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "weir", "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "Same"}}}]}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend_port}]}}));
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": backend_port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}));
    api.apply(route("app", "app.example.com", None));
}

fn route(name: &str, host: &str, header: Option<&str>) -> Value {
    let mut rule = json!({"backendRefs": [{"name": "echo", "port": 80}]});
    if let Some(value) = header {
        rule["filters"] = json!([{"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x-version", "value": value}]}}]);
    }
    json!({"apiVersion": format!("{GW}/v1"), "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host], "rules": [rule]}})
}

async fn get_status(addr: SocketAddr, host: &str) -> Result<u16, String> {
    http1(addr, &Req::get(host, "/"))
        .await
        .map(|r| r.status.as_u16())
}

#[tokio::test]
async fn kube_mode_serves_writes_status_and_hands_over_leadership() {
    let api = TestApiServer::start().await;
    let backend = echo("echo-7c9d8-abcde", "default");
    fixtures(&api, backend.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), &api);
    let offset = weir_testkit::free_offset(&[80]);
    let listener = SocketAddr::from(([127, 0, 0, 1], 80 + offset));

    let mut a = replica(&kubeconfig, "weir-a", offset);
    let a_admin = a.admin;
    let a_stderr = a.proc.stderr.clone();
    // Objects created → route served.
    assert_eventually("route served via weir-a", WAIT, || {
        let stderr = a_stderr.clone();
        async move {
            match get_status(listener, "app.example.com").await {
                Ok(200) => Ok(()),
                other => Err(format!(
                    "{other:?}; stderr: {}",
                    stderr.lock().unwrap().join("\n")
                )),
            }
        }
    })
    .await;
    assert_eq!(
        http1(listener, &Req::get("app.example.com", "/"))
            .await
            .unwrap()
            .json()["pod"],
        "echo-7c9d8-abcde"
    );

    // Status written to the API server with the right conditions.
    let gw = assert_eventually("Gateway status written", WAIT, || async {
        let gw = api
            .get(GW, "gateways", "default", "gw")
            .ok_or("no gateway")?;
        match condition(&gw["status"]["conditions"], "Programmed") {
            Some(c) if c["status"] == "True" => Ok(gw),
            _ => Err(format!("status: {}", gw["status"])),
        }
    })
    .await;
    assert_eq!(gw["status"]["addresses"][0]["value"], "127.0.0.1");
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
    // The writer patches one object at a time: wait for the class and the route too.
    let (class, r) = assert_eventually("class and route status written", WAIT, || async {
        let class = api
            .get(GW, "gatewayclasses", "", "weir")
            .ok_or("no class")?;
        let r = api
            .get(GW, "httproutes", "default", "app")
            .ok_or("no route")?;
        if class["status"]["conditions"].is_array() && r["status"]["parents"].is_array() {
            Ok((class, r))
        } else {
            Err(format!("class {} route {}", class["status"], r["status"]))
        }
    })
    .await;
    assert_eq!(
        condition(&class["status"]["conditions"], "Accepted").unwrap()["status"],
        "True"
    );
    let parent = &r["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "weir.dev/gateway-controller");
    assert_eq!(
        condition(&parent["conditions"], "Accepted").unwrap()["status"],
        "True"
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs").unwrap()["status"],
        "True"
    );

    // A second replica serves too but does not write status while weir-a leads.
    let b = replica(&kubeconfig, "weir-b", offset + 1);
    let b_listener = SocketAddr::from(([127, 0, 0, 1], 80 + offset + 1));
    assert_eventually("route served via weir-b", WAIT, || async {
        match get_status(b_listener, "app.example.com").await {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let lease = api
        .get(
            "coordination.k8s.io",
            "leases",
            "weir-system",
            "weir-leader",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "weir-a");
    assert_eq!(metric(a_admin, "weir_leader").await, Ok(1.0));
    assert_eq!(metric(b.admin, "weir_leader").await, Ok(0.0));
    assert_eq!(metric(b.admin, "weir_status_patches_total").await, Ok(0.0));
    assert!(metric(a_admin, "weir_status_patches_total").await.unwrap() >= 3.0);

    // The watch stream is cut: a route created meanwhile still arrives.
    api.cut_watches();
    api.apply(route("late", "late.example.com", None));
    assert_eventually("route created across a watch cut served", WAIT, || async {
        match get_status(listener, "late.example.com").await {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Deleted → 404.
    api.delete(GW, "httproutes", "default", "late");
    assert_eventually("deleted route gone", WAIT, || async {
        match get_status(listener, "late.example.com").await {
            Ok(404) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The leader stops: weir-b takes over within the lease duration and writes status.
    let exit = a
        .proc
        .terminate(Duration::from_secs(10))
        .expect("weir-a exits on SIGTERM");
    assert!(exit.success(), "{exit:?}");
    assert_eventually("weir-b leads", Duration::from_secs(6), || async {
        let lease = api
            .get(
                "coordination.k8s.io",
                "leases",
                "weir-system",
                "weir-leader",
            )
            .ok_or("no lease")?;
        if lease["spec"]["holderIdentity"] == "weir-b" {
            Ok(())
        } else {
            Err(format!("holder {}", lease["spec"]["holderIdentity"]))
        }
    })
    .await;
    api.apply(route("app", "app.example.com", Some("two")));
    assert_eventually("weir-b writes the new observedGeneration", WAIT, || async {
        let r = api
            .get(GW, "httproutes", "default", "app")
            .ok_or("no route")?;
        let accepted = condition(&r["status"]["parents"][0]["conditions"], "Accepted")
            .cloned()
            .unwrap_or_default();
        if accepted["observedGeneration"] == r["metadata"]["generation"]
            && r["metadata"]["generation"] == 2
        {
            Ok(())
        } else {
            Err(format!(
                "generation {} accepted {}",
                r["metadata"]["generation"], accepted
            ))
        }
    })
    .await;
    // The counter moves once the writer's whole batch is done, which can be just after the
    // API server has the patch the wait above saw.
    assert_eventually("weir-b counts its status patches", WAIT, || async {
        let n = metric(b.admin, "weir_status_patches_total").await?;
        (n >= 1.0)
            .then_some(())
            .ok_or_else(|| format!("{n} patches"))
    })
    .await;
    let r = http1(b_listener, &Req::get("app.example.com", "/"))
        .await
        .unwrap();
    assert_eq!(r.json()["headers"]["X-Version"][0], "two");
}

/// With `--gateway-service`, Gateways report the Service's load balancer address, and until
/// it has one, the ready endpoints behind it (the replicas' pod IPs). The addresses here are
/// documentation ranges written into status only; no traffic goes to them.
#[tokio::test]
async fn gateway_addresses_follow_the_gateway_service() {
    let api = TestApiServer::start().await;
    let backend = echo("echo-7c9d8-abcde", "default");
    fixtures(&api, backend.addr.port());
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "weir", "namespace": "weir-system"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "weir-1", "namespace": "weir-system", "labels": {"kubernetes.io/service-name": "weir"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["192.0.2.11"], "conditions": {"ready": true}},
            {"addresses": ["192.0.2.10"], "conditions": {"ready": true}},
            {"addresses": ["192.0.2.12"], "conditions": {"ready": false}}]}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), &api);
    let offset = weir_testkit::free_offset(&[80]);
    let admin = SocketAddr::from(([127, 0, 0, 1], weir_testkit::free_port()));
    let mut cmd = Command::new(bin("weir"));
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--bind",
            "127.0.0.1",
            "--listener-port-offset",
            &offset.to_string(),
        ])
        .args([
            "--admin-addr",
            &admin.to_string(),
            "--gateway-service",
            "weir-system/weir",
        ])
        .args([
            "--leader-election-namespace",
            "weir-system",
            "--lease-duration",
            "2s",
        ])
        .env("POD_NAME", "weir-a")
        .env("POD_IP", "127.0.0.1");
    let _weir = Proc::spawn(cmd);

    let addresses = |api: &TestApiServer| {
        api.get(GW, "gateways", "default", "gw")
            .map(|gw| gw["status"]["addresses"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eventually("ready replicas' IPs as addresses", WAIT, || async {
        let got = addresses(&api);
        let want = json!([{"type": "IPAddress", "value": "192.0.2.10"}, {"type": "IPAddress", "value": "192.0.2.11"}]);
        if got == want { Ok(()) } else { Err(format!("addresses {got}")) }
    })
    .await;

    let mut service = api.get("", "services", "weir-system", "weir").unwrap();
    service["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}});
    api.apply(service);
    assert_eventually("load balancer address", WAIT, || async {
        let got = addresses(&api);
        if got == json!([{"type": "IPAddress", "value": "203.0.113.10"}]) {
            Ok(())
        } else {
            Err(format!("addresses {got}"))
        }
    })
    .await;
}
