//! ExtensionPolicy `extProc` in Kubernetes mode: a real `weir` process reading from the test
//! API server (crates/weir-testkit/src/apiserver.rs), weir-testkit's ext_proc test processor
//! behind a Service, weir-echo behind another. The policy's status is written back, the
//! processor's header mutations reach the backend and the client, /metrics counts the
//! exchanges, and a refused policy is `Accepted=False` without taking other routes down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use weir_e2e::{condition, WAIT};
use weir_testkit::apiserver::TestApiServer;
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::epp::TestPicker;
use weir_testkit::process::{bin, echo, Proc};

const GW: &str = "gateway.networking.k8s.io";
const WEIR: &str = "gateway.weir.dev";

/// One weir replica (shared mode, so every Gateway is on 127.0.0.1 + the offset).
fn weir(kubeconfig: &Path, offset: u16, admin: SocketAddr) -> Proc {
    let mut cmd = Command::new(bin("weir"));
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--bind", "127.0.0.1"])
        .args(["--listener-port-offset", &offset.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--leader-election-namespace", "weir-system"])
        .args(["--drain-timeout", "1s", "--log-level", "info,weir=debug"])
        .args(["--gateway-service", "weir-system/weir"])
        .env("POD_NAME", "weir-a")
        .env("POD_IP", "127.0.0.1");
    Proc::spawn(cmd)
}

/// A Service `name` on port `port` with one ready endpoint, 127.0.0.1:`target`.
fn service(api: &TestApiServer, name: &str, port: u16, target: u16) {
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "p", "port": port, "targetPort": target}]}}));
    api.apply(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "p", "port": target}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}),
    );
}

fn route(name: &str, host: &str) -> Value {
    json!({"apiVersion": format!("{GW}/v1"), "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host],
            "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}})
}

fn policy(name: &str, route: &str, processor: Value) -> Value {
    json!({"apiVersion": format!("{WEIR}/v1alpha1"), "kind": "ExtensionPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"targetRefs": [{"group": GW, "kind": "HTTPRoute", "name": route}],
            "extProc": [processor]}})
}

/// (type → (status, reason)) of the policy's ancestor entry for default/gw, ours.
fn conditions(policy: &Value) -> Option<Vec<(String, String, String)>> {
    let ancestors = policy["status"]["ancestors"].as_array()?;
    let ours = ancestors.iter().find(|a| {
        a["ancestorRef"]["name"] == "gw" && a["controllerName"] == "weir.dev/gateway-controller"
    })?;
    ["Accepted", "ResolvedRefs"]
        .iter()
        .filter_map(|t| {
            let c = condition(&ours["conditions"], t)?;
            Some(Some((
                (*t).to_owned(),
                c["status"].as_str()?.to_owned(),
                c["reason"].as_str()?.to_owned(),
            )))
        })
        .collect()
}

async fn status_is(api: &TestApiServer, name: &str, want: &[(&str, &str, &str)], stderr: &Proc) {
    assert_eventually(
        &format!("extensionpolicies/{name} status"),
        WAIT,
        || async {
            let p = api
                .get(WEIR, "extensionpolicies", "default", name)
                .ok_or("gone")?;
            let got = conditions(&p).unwrap_or_default();
            let want: Vec<(String, String, String)> = want
                .iter()
                .map(|(t, s, r)| ((*t).to_owned(), (*s).to_owned(), (*r).to_owned()))
                .collect();
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "{got:?} in {}; stderr: {}",
                    p["status"],
                    stderr.stderr_text()
                ))
            }
        },
    )
    .await;
}

async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let text = http1(admin, &Req::get("admin", "/metrics"))
        .await
        .ok()?
        .text();
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn an_extension_policy_is_applied_its_status_written_and_a_refused_one_stays_contained() {
    let api = TestApiServer::start().await;
    let backend = echo("echo-7c9d8-abcde", "default");
    let processor = TestPicker::start_processor().await.unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(
        json!({"apiVersion": format!("{GW}/v1"), "kind": "GatewayClass",
        "metadata": {"name": "weir"}, "spec": {"controllerName": "weir.dev/gateway-controller"}}),
    );
    api.apply(json!({"apiVersion": format!("{GW}/v1"), "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "weir", "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "Same"}}}]}}));
    service(&api, "echo", 80, backend.addr.port());
    service(&api, "processor", 9002, processor.addr.port());
    api.apply(route("app", "app.example.com"));
    api.apply(route("other", "other.example.com"));
    api.apply(policy(
        "enrich",
        "app",
        json!({"backendRefs": [{"name": "processor", "port": 9002}],
            "processingMode": {"request": {}, "response": {}},
            "messageTimeout": "2s"}),
    ));

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let offset = weir_testkit::free_offset(&[80]);
    let listener = SocketAddr::from(([127, 0, 0, 1], 80 + offset));
    let admin = SocketAddr::from(([127, 0, 0, 1], weir_testkit::free_port()));
    let weir = weir(&kubeconfig, offset, admin);

    status_is(
        &api,
        "enrich",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ],
        &weir,
    )
    .await;
    // The processor's request mutation reaches the backend, its response mutation the
    // client, on one stream per request.
    let reply = assert_eventually("the processor's mutations on app", WAIT, || async {
        let r = http1(
            listener,
            &Req::get("app.example.com", "/x").header("x-ext-proc-remove", "1"),
        )
        .await?;
        if r.status != 200 || r.header("x-ext-proc-response") != Some("added") {
            return Err(format!("{} {:?} {}", r.status, r.headers, r.text()));
        }
        Ok(r)
    })
    .await;
    let seen = &reply.json()["headers"];
    assert_eq!(seen["X-Ext-Proc-Request"][0], "added", "{seen}");
    assert!(seen.get("X-Ext-Proc-Remove").is_none(), "{seen}");
    assert_eq!(reply.header("x-ext-proc-status"), Some("200"));
    let streams = processor.seen();
    assert_eq!(
        streams.last().map(|s| s.messages.clone()),
        Some(vec!["request_headers", "response_headers"])
    );
    // The ImmediateResponse of a marked request, as is.
    let denied = http1(
        listener,
        &Req::get("app.example.com", "/x").header("x-ext-proc-deny", "1"),
    )
    .await
    .unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(denied.text(), "denied by processor");
    // A route without the policy never reaches the processor.
    let before = processor.streams();
    let plain = http1(listener, &Req::get("other.example.com", "/x"))
        .await
        .unwrap();
    assert_eq!(plain.status, 200);
    assert!(plain.header("x-ext-proc-response").is_none());
    assert_eq!(processor.streams(), before);
    // /metrics times every exchange, by phase and result.
    let count = |phase: &'static str, result: &'static str| async move {
        metric(
            admin,
            &format!("weir_ext_proc_seconds_count{{phase=\"{phase}\",result=\"{result}\"}}"),
        )
        .await
    };
    assert!(count("request", "ok").await >= Some(1.0));
    assert!(count("response", "ok").await >= Some(1.0));
    assert_eq!(count("request", "immediate").await, Some(1.0));

    // A policy Weir refuses (`wasm`) on the other route: Accepted=False, that route fails
    // closed (500) as documented, and the first route keeps serving through its processor.
    let mut refused = policy(
        "refused",
        "other",
        json!({"backendRefs": [{"name": "processor", "port": 9002}],
            "processingMode": {"request": {}}}),
    );
    refused["spec"]["wasm"] = json!([{"name": "filter"}]);
    api.apply(refused);
    status_is(
        &api,
        "refused",
        &[("Accepted", "False", "UnsupportedValue")],
        &weir,
    )
    .await;
    assert_eventually("the refused policy's route fails closed", WAIT, || async {
        match http1(listener, &Req::get("other.example.com", "/x")).await {
            Ok(r) if r.status == 500 => Ok(()),
            other => Err(format!("{:?}", other.map(|r| r.status))),
        }
    })
    .await;
    let r = http1(listener, &Req::get("app.example.com", "/x"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ext-proc-response"), Some("added"));
    // A processor Service that does not exist: Accepted, ResolvedRefs=False, and with
    // failOpen its route goes on without it (counted).
    api.apply(policy(
        "missing",
        "other",
        json!({"backendRefs": [{"name": "nowhere", "port": 9002}],
            "processingMode": {"request": {}}, "failOpen": true}),
    ));
    api.delete(WEIR, "extensionpolicies", "default", "refused");
    status_is(
        &api,
        "missing",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ],
        &weir,
    )
    .await;
    assert_eventually("failOpen past a missing processor", WAIT, || async {
        match http1(listener, &Req::get("other.example.com", "/x")).await {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{:?}", other.map(|r| r.status))),
        }
    })
    .await;
    assert!(metric(admin, "weir_ext_proc_fail_open_total{phase=\"request\"}").await >= Some(1.0));
}
