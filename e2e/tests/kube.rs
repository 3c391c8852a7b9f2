//! Kubernetes mode against the test API server (crates/weir-testkit/src/apiserver.rs: an
//! in-memory stand-in that serves list/watch/get/patch as kube-rs expects; no real
//! kube-apiserver can run on these machines). Two real `weir` processes, real sockets.
//! Shared mode (`--gateway-service`) first, then one Service per Gateway (the default).
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
        // Shared mode: every Gateway on this (absent) Service's address, so the pod IP.
        .args(["--gateway-service", "weir-system/weir"])
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
    let kubeconfig = api.write_kubeconfig(dir.path());
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

    // XBackendTrafficPolicy (experimental, optional kind): read, applied, status written.
    api.apply(json!({"apiVersion": "gateway.networking.x-k8s.io/v1alpha1",
        "kind": "XBackendTrafficPolicy",
        "metadata": {"name": "sticky", "namespace": "default"},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "echo"}],
            "sessionPersistence": {"sessionName": "echo-sid"}}}));
    let x = assert_eventually("XBackendTrafficPolicy status written", WAIT, || async {
        let x = api
            .get(
                "gateway.networking.x-k8s.io",
                "xbackendtrafficpolicies",
                "default",
                "sticky",
            )
            .ok_or("no policy")?;
        if x["status"]["ancestors"].is_array() {
            Ok(x)
        } else {
            Err(format!("status {}", x["status"]))
        }
    })
    .await;
    let ancestor = &x["status"]["ancestors"][0];
    assert_eq!(ancestor["controllerName"], "weir.dev/gateway-controller");
    assert_eq!(ancestor["ancestorRef"]["name"], "gw");
    assert_eq!(
        condition(&ancestor["conditions"], "Accepted").unwrap()["status"],
        "True"
    );
    assert_eventually("the Service's session cookie", WAIT, || async {
        let r = http1(listener, &Req::get("app.example.com", "/"))
            .await
            .map_err(|e| e.to_string())?;
        match r.header("set-cookie") {
            Some(c) if c.starts_with("echo-sid=") && !c.contains("Path=") => Ok(()),
            other => Err(format!("set-cookie {other:?}")),
        }
    })
    .await;

    // A second replica serves too but does not write status while weir-a leads.
    // Its own free offset: `offset + 1` was never checked, and another test running at
    // the same time could hold that port (weir-b then never served: connection refused).
    let offset_b = weir_testkit::free_offset(&[80]);
    let b = replica(&kubeconfig, "weir-b", offset_b);
    let b_listener = SocketAddr::from(([127, 0, 0, 1], 80 + offset_b));
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
    let kubeconfig = api.write_kubeconfig(dir.path());
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

// ---------------------------------------------------------------------------------------
// One Service per Gateway (no --gateway-service): the leader writes a Service per Gateway,
// every replica binds each Gateway's pod ports. Traffic goes to 127.0.0.X:<pod port>, as
// kube-proxy sends it to the Service's targetPort on a pod.

const SELECTOR: &str = "app.kubernetes.io/name=weir,app.kubernetes.io/instance=test";

/// A replica in Services mode, binding `bind` (each replica its own loopback address, as
/// each pod has its own IP), with pod ports from `range`.
fn services_replica(kubeconfig: &Path, name: &str, bind: &str, range: &str) -> Replica {
    let admin = SocketAddr::from(([127, 0, 0, 1], weir_testkit::free_port()));
    let mut cmd = Command::new(bin("weir"));
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--bind", bind, "--admin-addr", &admin.to_string()])
        .args([
            "--gateway-port-range",
            range,
            "--gateway-pod-selector",
            SELECTOR,
        ])
        .args([
            "--leader-election-namespace",
            "weir-system",
            "--lease-duration",
            "2s",
        ])
        .args(["--drain-timeout", "1s", "--log-level", "info,weir=debug"])
        .env("POD_NAME", name)
        .env("POD_IP", bind);
    Replica {
        proc: Proc::spawn(cmd),
        admin,
    }
}

fn team_gateway(name: &str, infrastructure: Value) -> Value {
    json!({"apiVersion": format!("{GW}/v1"), "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"gatewayClassName": "weir", "infrastructure": infrastructure, "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80}]}})
}

/// An HTTPRoute without hostname to echo, attached to `gateway`, tagging requests with
/// `x-gateway: <gateway>` so the answer says which route served it.
fn team_route(gateway: &str) -> Value {
    json!({"apiVersion": format!("{GW}/v1"), "kind": "HTTPRoute",
        "metadata": {"name": format!("r-{gateway}"), "namespace": "default"},
        "spec": {"parentRefs": [{"name": gateway}], "rules": [{
            "backendRefs": [{"name": "echo", "port": 80}],
            "filters": [{"type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-gateway", "value": gateway}]}}]}]}})
}

/// The Service of Gateway `gateway` once it records a pod port for listener port 80.
async fn gateway_service(api: &TestApiServer, gateway: &str) -> Value {
    let name = format!("weir-{gateway}");
    assert_eventually(&format!("Service {name} written"), WAIT, || async {
        let svc = api
            .get("", "services", "default", &name)
            .ok_or("no service")?;
        let recorded = svc["metadata"]["annotations"]["weir.dev/listener-ports"]
            .as_str()
            .unwrap_or_default();
        if recorded.starts_with("80:") {
            Ok(svc)
        } else {
            Err(format!("service {svc}"))
        }
    })
    .await
}

fn pod_port(svc: &Value) -> u16 {
    let recorded = svc["metadata"]["annotations"]["weir.dev/listener-ports"]
        .as_str()
        .unwrap();
    recorded.strip_prefix("80:").unwrap().parse().unwrap()
}

/// Which Gateway's route answered at `addr` (the echoed x-gateway header).
async fn served_by(addr: SocketAddr) -> Result<String, String> {
    let r = http1(addr, &Req::get("any.example", "/")).await?;
    if r.status.as_u16() != 200 {
        return Err(format!("status {}", r.status));
    }
    Ok(r.json()["headers"]["X-Gateway"][0]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

async fn wait_served(addr: SocketAddr, gateway: &str, stderr: &Proc) {
    assert_eventually(&format!("{gateway} served at {addr}"), WAIT, || async {
        match served_by(addr).await {
            Ok(g) if g == gateway => Ok(()),
            other => Err(format!("{other:?}; stderr: {}", stderr.stderr_text())),
        }
    })
    .await;
}

fn at(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[tokio::test]
async fn each_gateway_gets_its_own_service_and_pod_ports() {
    let api = TestApiServer::start().await;
    let backend = echo("echo-7c9d8-abcde", "default");
    let port = backend.addr.port();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "weir-params", "namespace": "weir-system"},
        "data": {"serviceType": "LoadBalancer", "serviceAnnotations": "cloud.example/lb: internal\n"}}));
    api.apply(json!({"apiVersion": format!("{GW}/v1"), "kind": "GatewayClass", "metadata": {"name": "weir"},
        "spec": {"controllerName": "weir.dev/gateway-controller",
            "parametersRef": {"group": "", "kind": "ConfigMap", "name": "weir-params", "namespace": "weir-system"}}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}}));
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}));
    api.apply(team_gateway("team-a", json!(null)));
    api.apply(team_gateway(
        "team-b",
        json!({"labels": {"team": "b"}, "annotations": {"owner": "team-b@example.com"}}),
    ));
    api.apply(team_route("team-a"));
    api.apply(team_route("team-b"));

    // Pod ports for the whole test: 3 Gateways fit in 4 ports; the range must be free on
    // both replicas' addresses.
    let low = weir_testkit::free_offset(&[0, 1, 2, 3]);
    let range = format!("{low}-{}", low + 3);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let mut a = services_replica(&kubeconfig, "weir-a", "127.0.0.1", &range);

    // The leader writes one Service per Gateway.
    let svc_a = gateway_service(&api, "team-a").await;
    let svc_b = gateway_service(&api, "team-b").await;
    let (port_a, port_b) = (pod_port(&svc_a), pod_port(&svc_b));
    assert_ne!(port_a, port_b);
    for p in [port_a, port_b] {
        assert!((low..=low + 3).contains(&p), "{p} outside {range}");
    }
    let gw_b = api.get(GW, "gateways", "default", "team-b").unwrap();
    assert_eq!(svc_b["spec"]["type"], "LoadBalancer");
    assert_eq!(
        svc_b["spec"]["ports"],
        json!([{"name": "port-80", "port": 80, "protocol": "TCP", "targetPort": port_b}])
    );
    assert_eq!(
        svc_b["spec"]["selector"],
        json!({"app.kubernetes.io/name": "weir", "app.kubernetes.io/instance": "test"})
    );
    let owner = &svc_b["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Gateway");
    assert_eq!(owner["apiVersion"], format!("{GW}/v1"));
    assert_eq!(owner["name"], "team-b");
    assert_eq!(owner["uid"], gw_b["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    let labels = &svc_b["metadata"]["labels"];
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "team-b");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "weir");
    assert_eq!(labels["team"], "b");
    let annotations = &svc_b["metadata"]["annotations"];
    assert_eq!(annotations["owner"], "team-b@example.com");
    assert_eq!(annotations["cloud.example/lb"], "internal");
    assert!(svc_a["metadata"]["labels"].get("team").is_none());

    // Both Gateways answer on port 80 of their own Service: each pod port reaches only its
    // Gateway's route.
    wait_served(at([127, 0, 0, 1], port_a), "team-a", &a.proc).await;
    wait_served(at([127, 0, 0, 1], port_b), "team-b", &a.proc).await;

    // No load balancer address yet: Programmed=False AddressNotAssigned; once the load
    // balancer (the test, here) writes the ingress, it is the Gateway's own address.
    assert_eventually("team-a waits for its address", WAIT, || async {
        let gw = api
            .get(GW, "gateways", "default", "team-a")
            .ok_or("no gw")?;
        match condition(&gw["status"]["conditions"], "Programmed") {
            Some(c) if c["reason"] == "AddressNotAssigned" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for (name, ip) in [
        ("weir-team-a", "203.0.113.1"),
        ("weir-team-b", "203.0.113.2"),
    ] {
        let mut svc = api.get("", "services", "default", name).unwrap();
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        api.apply(svc);
    }
    for (gateway, ip) in [("team-a", "203.0.113.1"), ("team-b", "203.0.113.2")] {
        assert_eventually(&format!("{gateway} programmed at {ip}"), WAIT, || async {
            let gw = api.get(GW, "gateways", "default", gateway).ok_or("no gw")?;
            let programmed = condition(&gw["status"]["conditions"], "Programmed").cloned();
            if gw["status"]["addresses"] == json!([{"type": "IPAddress", "value": ip}])
                && programmed.as_ref().is_some_and(|c| c["status"] == "True")
            {
                Ok(())
            } else {
                Err(format!("status {}", gw["status"]))
            }
        })
        .await;
    }

    // A second replica binds the same pod ports on its own address, and writes nothing.
    let mut b = services_replica(&kubeconfig, "weir-b", "127.0.0.2", &range);
    wait_served(at([127, 0, 0, 2], port_a), "team-a", &b.proc).await;
    wait_served(at([127, 0, 0, 2], port_b), "team-b", &b.proc).await;

    // The leader goes: weir-b takes over; the Services keep their ports, and a new
    // Gateway gets a free one.
    let exit = a
        .proc
        .terminate(Duration::from_secs(10))
        .expect("weir-a exits");
    assert!(exit.success(), "{exit:?}");
    assert_eventually("weir-b leads", Duration::from_secs(8), || async {
        let n = metric(b.admin, "weir_leader").await?;
        (n == 1.0).then_some(()).ok_or(format!("weir_leader {n}"))
    })
    .await;
    api.apply(team_gateway("team-c", json!(null)));
    api.apply(team_route("team-c"));
    let svc_c = gateway_service(&api, "team-c").await;
    let port_c = pod_port(&svc_c);
    assert!(![port_a, port_b].contains(&port_c), "{port_c}");
    wait_served(at([127, 0, 0, 2], port_c), "team-c", &b.proc).await;
    assert_eq!(pod_port(&gateway_service(&api, "team-a").await), port_a);
    assert_eq!(pod_port(&gateway_service(&api, "team-b").await), port_b);

    // A deleted Gateway's Service goes (the test API server has no garbage collector; the
    // leader deletes it) and its pod port closes.
    api.delete(GW, "gateways", "default", "team-a");
    assert_eventually("team-a's Service deleted", WAIT, || async {
        match api.get("", "services", "default", "weir-team-a") {
            None => Ok(()),
            Some(svc) => Err(format!("still there: {}", svc["metadata"])),
        }
    })
    .await;
    assert_eventually("team-a's pod port closed", WAIT, || async {
        match tokio::net::TcpStream::connect(at([127, 0, 0, 2], port_a)).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    wait_served(at([127, 0, 0, 2], port_b), "team-b", &b.proc).await;

    // A restart: a fresh Weir reads the same Services and binds the same ports.
    let exit = b
        .proc
        .terminate(Duration::from_secs(10))
        .expect("weir-b exits");
    assert!(exit.success(), "{exit:?}");
    let a2 = services_replica(&kubeconfig, "weir-a2", "127.0.0.1", &range);
    wait_served(at([127, 0, 0, 1], port_b), "team-b", &a2.proc).await;
    wait_served(at([127, 0, 0, 1], port_c), "team-c", &a2.proc).await;
    assert_eventually("weir-a2 leads", Duration::from_secs(8), || async {
        let n = metric(a2.admin, "weir_leader").await?;
        (n == 1.0).then_some(()).ok_or(format!("weir_leader {n}"))
    })
    .await;
    // As leader it changes nothing: the same ports stay recorded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pod_port(&gateway_service(&api, "team-b").await), port_b);
    assert_eq!(pod_port(&gateway_service(&api, "team-c").await), port_c);
}

/// The HTTPS listener of the Gateway in [`fixtures`], on `port`, with `secret`.
fn https_listener(name: &str, port: u16, secret: &str) -> Value {
    json!({"name": name, "protocol": "HTTPS", "port": port, "hostname": "app.example.com",
        "allowedRoutes": {"namespaces": {"from": "Same"}},
        "tls": {"certificateRefs": [{"name": secret}]}})
}

fn gateway_with(listeners: Vec<Value>) -> Value {
    let mut all = vec![json!({"name": "http", "protocol": "HTTP", "port": 80,
        "allowedRoutes": {"namespaces": {"from": "Same"}}})];
    all.extend(listeners);
    json!({"apiVersion": format!("{GW}/v1"), "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "weir", "listeners": all}})
}

async fn https_ok(addr: SocketAddr, ca: &weir_testkit::certs::Ca) -> Result<(), String> {
    let r = weir_testkit::client::https(
        addr,
        "app.example.com",
        &ca.cert_pem,
        &Req::get("app.example.com", "/"),
    )
    .await?;
    (r.status == 200)
        .then_some(())
        .ok_or_else(|| format!("status {}", r.status))
}

/// ConfigMaps and Secrets are watched by metadata alone: a large ConfigMap and a TLS
/// Secret nobody references are never read in full, while the Secret a listener names
/// is served over real TLS, rotates without restart, is picked up when a listener starts
/// naming it, and its deletion is reported as before.
#[tokio::test]
async fn only_referenced_secrets_are_read_and_they_follow_changes() {
    use weir_testkit::certs::{tls_secret_json, Ca};
    let api = TestApiServer::start().await;
    let backend = echo("echo-7c9d8-abcde", "default");
    fixtures(&api, backend.addr.port());
    let (ca1, ca2, ca3) = (Ca::new("ca-1"), Ca::new("ca-2"), Ca::new("ca-3"));
    api.apply(gateway_with(vec![https_listener("https", 443, "cert")]));
    api.apply(tls_secret_json(
        "default",
        "cert",
        &ca1.leaf(&["app.example.com"]),
    ));
    api.apply(tls_secret_json(
        "default",
        "spare",
        &ca3.leaf(&["app.example.com"]),
    ));
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "default"},
        "data": {"blob": "x".repeat(2 << 20)}}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let offset = weir_testkit::free_offset(&[80, 443, 444]);
    let https1 = SocketAddr::from(([127, 0, 0, 1], 443 + offset));
    let https2 = SocketAddr::from(([127, 0, 0, 1], 444 + offset));
    let weir = replica(&kubeconfig, "weir-a", offset);
    let stderr = weir.proc.stderr.clone();
    assert_eventually("HTTPS served with the Secret's certificate", WAIT, || {
        let stderr = stderr.clone();
        let ca1 = &ca1;
        async move {
            https_ok(https1, ca1)
                .await
                .map_err(|e| format!("{e}; stderr: {}", stderr.lock().unwrap().join("\n")))
        }
    })
    .await;
    assert!(
        https_ok(https1, &ca2).await.is_err(),
        "the certificate is ca-1's"
    );

    // (b) The Secret gets a new certificate: served without restart.
    api.apply(tls_secret_json(
        "default",
        "cert",
        &ca2.leaf(&["app.example.com"]),
    ));
    assert_eventually("the rotated certificate served", WAIT, || {
        https_ok(https1, &ca2)
    })
    .await;

    // (c) A listener starts naming the existing Secret "spare": it is read and served.
    api.apply(gateway_with(vec![
        https_listener("https", 443, "cert"),
        https_listener("https-2", 444, "spare"),
    ]));
    assert_eventually("the newly referenced Secret served", WAIT, || {
        https_ok(https2, &ca3)
    })
    .await;

    // (a) The large ConfigMap was never read in full, nor was "spare" before it was named.
    assert_eq!(api.full_reads("", "configmaps", "default", "big"), 0);
    assert_eq!(api.full_reads("", "secrets", "default", "spare"), 1);

    // (d) "spare" is deleted: the listener reports the missing certificate, as before.
    api.delete("", "secrets", "default", "spare");
    assert_eventually("the missing Secret reported", WAIT, || async {
        let gw = api
            .get(GW, "gateways", "default", "gw")
            .ok_or("no gateway")?;
        let listener = gw["status"]["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == "https-2"))
            .cloned()
            .unwrap_or_default();
        match condition(&listener["conditions"], "ResolvedRefs") {
            Some(c) if c["status"] == "False" && c["reason"] == "InvalidCertificateRef" => Ok(()),
            _ => Err(format!("listener status: {listener}")),
        }
    })
    .await;
    // The other listener keeps serving.
    https_ok(https1, &ca2).await.unwrap();
}

const WEIR: &str = "gateway.weir.dev";

/// (status, reason) of the Accepted condition in a policy's ancestor entry for default/gw.
fn policy_accepted(policy: &Value) -> Option<(String, String)> {
    let ancestors = policy["status"]["ancestors"].as_array()?;
    let ours = ancestors.iter().find(|a| {
        a["ancestorRef"]["name"] == "gw" && a["controllerName"] == "weir.dev/gateway-controller"
    })?;
    let c = condition(&ours["conditions"], "Accepted")?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
    ))
}

#[tokio::test]
async fn policies_are_read_and_their_status_written() {
    let api = TestApiServer::start().await;
    let backend = echo("echo-7c9d8-abcde", "default");
    fixtures(&api, backend.addr.port());
    let target = json!([{"group": GW, "kind": "Gateway", "name": "gw"}]);
    api.apply(
        json!({"apiVersion": format!("{WEIR}/v1alpha1"), "kind": "ClientTrafficPolicy",
        "metadata": {"name": "clients", "namespace": "default"},
        "spec": {"targetRefs": target, "connection": {"connectionLimit": {"value": 100}}}}),
    );
    api.apply(
        json!({"apiVersion": format!("{WEIR}/v1alpha1"), "kind": "BackendTrafficPolicy",
        "metadata": {"name": "retries", "namespace": "default"},
        "spec": {"targetRefs": target, "retry": {"numRetries": 2}}}),
    );
    // Another controller's entry in a policy's status stays.
    let mut security = json!({"apiVersion": format!("{WEIR}/v1alpha1"), "kind": "SecurityPolicy",
        "metadata": {"name": "auth", "namespace": "default"},
        "spec": {"targetRefs": [{"group": GW, "kind": "Gateway", "name": "gw", "sectionName": "nope"}]}});
    security["status"] = json!({"ancestors": [{
        "ancestorRef": {"group": GW, "kind": "Gateway", "name": "theirs", "namespace": "default"},
        "controllerName": "example.com/other", "conditions": []}]});
    api.apply(security);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let offset = weir_testkit::free_offset(&[80]);
    let weir = replica(&kubeconfig, "weir-a", offset);
    let stderr = weir.proc.stderr.clone();
    let expect = [
        ("clienttrafficpolicies", "clients", ("True", "Accepted")),
        ("backendtrafficpolicies", "retries", ("True", "Accepted")),
        // A Gateway listener (`sectionName`) is not a SecurityPolicy target Weir implements.
        ("securitypolicies", "auth", ("False", "UnsupportedValue")),
    ];
    for (plural, name, (status, reason)) in expect {
        assert_eventually(&format!("{plural}/{name} status written"), WAIT, || {
            let stderr = stderr.clone();
            let api = &api;
            async move {
                let policy = api.get(WEIR, plural, "default", name).ok_or("gone")?;
                match policy_accepted(&policy) {
                    Some((s, r)) if s == status && r == reason => Ok(()),
                    other => Err(format!(
                        "{other:?} in {}; stderr: {}",
                        policy["status"],
                        stderr.lock().unwrap().join("\n")
                    )),
                }
            }
        })
        .await;
    }
    let auth = api
        .get(WEIR, "securitypolicies", "default", "auth")
        .unwrap();
    let controllers: Vec<&Value> = auth["status"]["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["controllerName"])
        .collect();
    assert!(controllers.contains(&&json!("example.com/other")), "{auth}");

    // A spec change is read and the status follows it.
    api.apply(
        json!({"apiVersion": format!("{WEIR}/v1alpha1"), "kind": "ClientTrafficPolicy",
        "metadata": {"name": "clients", "namespace": "default"},
        "spec": {"targetRefs": target, "tcpKeepalive": {"idleTime": "20m"}}}),
    );
    assert_eventually("the changed policy refused", WAIT, || async {
        let policy = api
            .get(WEIR, "clienttrafficpolicies", "default", "clients")
            .ok_or("gone")?;
        match policy_accepted(&policy) {
            Some((s, r)) if s == "False" && r == "UnsupportedValue" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn a_cluster_without_the_policy_crds_is_served() {
    let api = TestApiServer::start_with(weir_testkit::apiserver::TestApiServerOptions {
        unserved: vec![
            "clienttrafficpolicies".into(),
            "backendtrafficpolicies".into(),
            "securitypolicies".into(),
        ],
        ..Default::default()
    })
    .await;
    let backend = echo("echo-7c9d8-abcde", "default");
    fixtures(&api, backend.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let offset = weir_testkit::free_offset(&[80]);
    let listener = SocketAddr::from(([127, 0, 0, 1], 80 + offset));
    let _weir = replica(&kubeconfig, "weir-a", offset);
    assert_eventually("route served without Weir's CRDs", WAIT, || async {
        match get_status(listener, "app.example.com").await {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Without `--rate-limit-replicas`, a local limit is split across the ready endpoints of
/// `--gateway-service` (the Weir Pods behind it), and re-divided live as that count changes.
#[tokio::test]
async fn a_local_limit_is_split_across_the_ready_pods_behind_the_gateway_service() {
    let api = TestApiServer::start().await;
    let backend = echo("echo-7c9d8-abcde", "default");
    fixtures(&api, backend.addr.port());
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "weir", "namespace": "weir-system"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
    let pods = |api: &TestApiServer, ready: &[bool]| {
        let endpoints: Vec<Value> = ready
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"addresses": [format!("192.0.2.{}", 10 + i)], "conditions": {"ready": r}}))
            .collect();
        api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "weir-1", "namespace": "weir-system", "labels": {"kubernetes.io/service-name": "weir"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}));
    };
    pods(&api, &[true, true, false]);
    api.apply(
        json!({"apiVersion": format!("{WEIR}/v1alpha1"), "kind": "BackendTrafficPolicy",
        "metadata": {"name": "limits", "namespace": "default"},
        "spec": {"targetRefs": [{"group": GW, "kind": "HTTPRoute", "name": "app"}],
            "rateLimit": {"local": {"rules": [{
                "clientSelectors": [{"headers": [{"name": "x-user", "type": "Distinct"}]}],
                "limit": {"requests": 12, "unit": "Hour"}}]}}}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let offset = weir_testkit::free_offset(&[80]);
    let weir = replica(&kubeconfig, "weir-a", offset);
    let http = SocketAddr::from(([127, 0, 0, 1], 80 + offset));
    let stderr = weir.proc.stderr.clone();
    // A new user each time: a fresh counter, whose limit header shows this replica's share.
    let n = std::sync::atomic::AtomicUsize::new(0);
    let share = |want: &'static str| {
        let (stderr, n) = (stderr.clone(), &n);
        async move {
            assert_eventually(&format!("a share of {want}"), WAIT, || {
                let stderr = stderr.clone();
                async move {
                    let user = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let r = http1(
                        http,
                        &Req::get("app.example.com", "/").header("x-user", &format!("u{user}")),
                    )
                    .await?;
                    match r.header("x-ratelimit-limit") {
                        Some(got) if got == want => Ok(()),
                        got => Err(format!(
                            "{} limit {got:?}; stderr: {}",
                            r.status,
                            stderr.lock().unwrap().join("\n")
                        )),
                    }
                }
            })
            .await;
        }
    };
    // Two ready Pods (the third is not ready): 12 / 2.
    share("6").await;
    pods(&api, &[true, true, true]);
    share("4").await;
    // Scaled down to one: the whole limit; and a limit once reached says so.
    pods(&api, &[true]);
    share("12").await;
    for i in 0..13 {
        let r = http1(
            http,
            &Req::get("app.example.com", "/").header("x-user", "same"),
        )
        .await
        .unwrap();
        assert_eq!(
            r.status.as_u16(),
            if i < 12 { 200 } else { 429 },
            "request {i}"
        );
    }
}
