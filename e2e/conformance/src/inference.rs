//! The Gateway API Inference Extension v1.6.0 conformance suite, replayed against its own
//! `weir` in file mode after the Gateway API replay: the suite's base resources and its 14
//! tests' manifests (vendored in `upstream/inference-extension-v1.6.0`, read from nowhere
//! else), with
//! - each model-server Deployment replica as a Pod manifest with its own loopback
//!   `status.podIP` (127.0.5.x) and one `weir-echo` per container on that address and the
//!   container's ports (HTTP, and h2c on the next port);
//! - each endpoint picker Deployment (the suite's `lwepp` image) as weir-testkit's test
//!   picker (which behaves as lwepp does) on its own loopback address, port 9002, picking
//!   among the endpoints of its `--pool-name` pool; its Service's EndpointSlice names it;
//! - each Gateway on its own address (`--gateway-address-pool 127.0.4.0/24`).
//!
//! Each test's manifests are written into one file, its assertions (transcribed from
//! `conformance/tests/*.go` at tag `conformance/v1.6.0`) run with bounded waits, and the
//! file is removed. The results are rows of the one report: their features
//! (`SupportInferencePool`, `Gateway`, and `HTTPRoute` where the Go test declares it) decide,
//! with the Gateway API tests', what our GatewayClasses may claim ([`crate::features`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_testkit::client::{http1, Req};
use weir_testkit::epp::TestPicker;
use weir_testkit::process::{bin, weir, Proc, Weir};

use crate::spec::{Profile, TestSpec};

const NS: &str = "inference-conformance-app-backend";
const WAIT: Duration = Duration::from_secs(20);
const KEPT: &[&str] = &[
    "Namespace",
    "Gateway",
    "HTTPRoute",
    "Service",
    "InferencePool",
    "ReferenceGrant",
];

/// The Inference Extension's feature (its `conformance/utils/features`).
pub const FEATURE: &str = "SupportInferencePool";
/// The tag the tests and manifests come from.
pub const TAG: &str = "conformance/v1.6.0";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("upstream/inference-extension-v1.6.0/conformance")
}

fn read_docs(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .replace("{GATEWAY_CLASS_NAME}", "weir");
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn write_docs(path: &Path, docs: &[Value]) -> Result<(), String> {
    let mut text = String::new();
    for d in docs {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(d).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

struct Pod {
    name: String,
    labels: BTreeMap<String, String>,
    ip: IpAddr,
    _procs: Vec<Proc>,
}

pub struct Cluster {
    dir: tempfile::TempDir,
    weir: Weir,
    pods: Vec<Pod>,
    _pickers: Vec<TestPicker>,
    /// The picker Services' EndpointSlices (what MakeServiceUnavailable empties).
    epp_slices: Vec<Value>,
}

impl Cluster {
    pub async fn start() -> Result<Cluster, String> {
        let base = read_docs(&suite_dir().join("resources/base.yaml"))?;
        let dir = tempfile::Builder::new()
            .prefix("weir-inference-conformance-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut pods = Vec::new();
        let mut next_pod = 1u8;
        for d in base.iter().filter(|d| d["kind"] == "Deployment") {
            let containers = d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !containers
                .first()
                .and_then(|c| c["image"].as_str())
                .unwrap_or("")
                .contains("echo-basic")
            {
                continue;
            }
            let name = d["metadata"]["name"]
                .as_str()
                .ok_or("a Deployment without a name")?;
            for i in 0..d["spec"]["replicas"].as_u64().unwrap_or(1) {
                let ip = IpAddr::from([127, 0, 5, next_pod]);
                next_pod = next_pod.checked_add(1).ok_or("too many Pods")?;
                let pod_name = format!("{name}-{i}");
                let mut procs = Vec::new();
                for c in &containers {
                    let env = |n: &str| {
                        c["env"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|e| e["name"] == n)
                            .and_then(|e| e["value"].as_str())
                            .and_then(|v| v.parse::<u16>().ok())
                    };
                    let http = env("HTTP_PORT")
                        .or_else(|| {
                            c["ports"][0]["containerPort"]
                                .as_u64()
                                .and_then(|p| u16::try_from(p).ok())
                        })
                        .unwrap_or(3000);
                    let h2c = env("H2C_PORT").unwrap_or(http.saturating_add(1));
                    let mut cmd = std::process::Command::new(bin("weir-echo"));
                    cmd.args(["--bind", &ip.to_string()])
                        .args(["--http-port", &http.to_string()])
                        .args(["--h2c-port", &h2c.to_string()])
                        .env("POD_NAME", &pod_name)
                        .env("NAMESPACE", NS)
                        .env_remove("HTTPS_PORT")
                        .env_remove("TLS_SERVER_CERT");
                    let proc = Proc::spawn(cmd);
                    proc.wait_stdout("listening h2c ", Duration::from_secs(10));
                    procs.push(proc);
                }
                pods.push(Pod {
                    name: pod_name,
                    labels: labels(&d["spec"]["template"]["metadata"]["labels"]),
                    ip,
                    _procs: procs,
                });
            }
        }
        // Pickers: one per lwepp Deployment, for its --pool-name pool.
        let pools: BTreeMap<&str, &Value> = base
            .iter()
            .filter(|d| d["kind"] == "InferencePool")
            .filter_map(|p| Some((p["metadata"]["name"].as_str()?, p)))
            .collect();
        let mut pickers = Vec::new();
        let mut epp_slices = Vec::new();
        let mut next_epp = 1u8;
        for d in base.iter().filter(|d| d["kind"] == "Deployment") {
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            if !c["image"].as_str().unwrap_or("").contains("lwepp") {
                continue;
            }
            let args: Vec<&str> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let pool_name = args
                .iter()
                .position(|a| *a == "--pool-name")
                .and_then(|i| args.get(i + 1))
                .ok_or("an lwepp Deployment without --pool-name")?;
            let pool = pools
                .get(pool_name)
                .ok_or_else(|| format!("no InferencePool {pool_name} in the base"))?;
            let selector = labels(&pool["spec"]["selector"]["matchLabels"]);
            let mut endpoints = Vec::new();
            for p in pods
                .iter()
                .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            {
                for tp in pool["spec"]["targetPorts"].as_array().into_iter().flatten() {
                    let port = tp["number"]
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or("a targetPort without a number")?;
                    endpoints.push(SocketAddr::new(p.ip, port));
                }
            }
            let ip = IpAddr::from([127, 0, 6, next_epp]);
            next_epp = next_epp.checked_add(1).ok_or("too many pickers")?;
            pickers.push(
                TestPicker::start_on(SocketAddr::new(ip, 9002), endpoints)
                    .await
                    .map_err(|e| format!("test picker on {ip}:9002: {e}"))?,
            );
            let app = &d["spec"]["template"]["metadata"]["labels"]["app"];
            for svc in base
                .iter()
                .filter(|s| s["kind"] == "Service" && s["spec"]["selector"]["app"] == *app)
            {
                let svc_name = svc["metadata"]["name"].as_str().unwrap_or_default();
                epp_slices.push(json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": format!("{svc_name}-1"), "namespace": NS,
                                 "labels": {"kubernetes.io/service-name": svc_name}},
                    "addressType": "IPv4",
                    "ports": [{"port": 9002, "protocol": "TCP", "appProtocol": "http2"}],
                    "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
                }));
            }
        }
        let mut objects: Vec<Value> = base
            .iter()
            .filter(|d| KEPT.contains(&d["kind"].as_str().unwrap_or("")))
            .cloned()
            .collect();
        for p in &pods {
            objects.push(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": p.name, "namespace": NS, "labels": p.labels},
                "status": {"phase": "Running", "podIP": p.ip.to_string(),
                           "conditions": [{"type": "Ready", "status": "True"}]},
            }));
        }
        write_docs(
            &dir.path().join("00-class.yaml"),
            &[json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": "weir"},
                "spec": {"controllerName": "weir.dev/gateway-controller"},
            })],
        )?;
        write_docs(&dir.path().join("10-base.yaml"), &objects)?;
        write_docs(&dir.path().join("20-epp.yaml"), &epp_slices)?;
        let weir = weir(
            dir.path(),
            &[80],
            &["--gateway-address-pool", "127.0.4.0/24"],
        );
        crate::wait_ready(&weir).await?;
        Ok(Cluster {
            dir,
            weir,
            pods,
            _pickers: pickers,
            epp_slices,
        })
    }

    fn pods(&self, app: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| p.labels.get("app").map(String::as_str) == Some(app))
            .collect()
    }

    async fn items(&self) -> Vec<Value> {
        match http1(self.weir.admin, &Req::get("admin", "/status")).await {
            Ok(r) => r.json()["items"].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    async fn object(&self, kind: &str, name: &str) -> Option<Value> {
        self.items()
            .await
            .into_iter()
            .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
    }

    /// The Gateway's address and served listener port 80.
    async fn gateway(&self, name: &str) -> Result<SocketAddr, String> {
        let weir = &self.weir;
        eventually(&format!("Gateway {name} address"), || async move {
            let g = self.object("Gateway", name).await.ok_or("no Gateway")?;
            let ip = g["status"]["addresses"][0]["value"]
                .as_str()
                .ok_or("no address")?;
            let ip: IpAddr = ip.parse().map_err(|_| "bad address")?;
            Ok(SocketAddr::new(ip, 80 + weir.offset))
        })
        .await
    }

    fn apply(&self, file: &str) -> Result<(), String> {
        let docs: Vec<Value> = read_docs(&suite_dir().join("tests").join(file))?
            .into_iter()
            .filter(|d| KEPT.contains(&d["kind"].as_str().unwrap_or("")))
            .collect();
        write_docs(&self.dir.path().join("40-test.yaml"), &docs)
    }

    fn delete_from_test(&self, kind: &str, name: &str) -> Result<(), String> {
        let path = self.dir.path().join("40-test.yaml");
        let docs: Vec<Value> = read_docs(&path)?
            .into_iter()
            .filter(|d| !(d["kind"] == kind && d["metadata"]["name"] == name))
            .collect();
        // (An empty file is what an editor leaves mid-write: the file source keeps what it
        // held. The last object goes with the file.)
        if docs.is_empty() {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            write_docs(&path, &docs)
        }
    }

    async fn cleanup(&self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.dir.path().join("40-test.yaml"));
        eventually("test objects gone", || async {
            let left = self
                .items()
                .await
                .into_iter()
                .filter(|i| i["kind"] == "HTTPRoute")
                .count();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} HTTPRoutes left"))
            }
        })
        .await
    }
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(format!("{what}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn cond_of(parents: &Value, gw: &str, type_: &str) -> Option<(String, String)> {
    let parent = parents.as_array()?.iter().find(|p| {
        p["parentRef"]["name"] == gw && p["controllerName"] == "weir.dev/gateway-controller"
    })?;
    let c = parent["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
    ))
}

impl Cluster {
    /// A condition of kind/name's parent entry for Gateway `gw` must be `status` (and
    /// `reason`, unless empty).
    async fn parent_cond(
        &self,
        kind: &str,
        name: &str,
        gw: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Result<(), String> {
        eventually(
            &format!("{kind} {name} parent {gw} {type_}={status} {reason}"),
            || async {
                let o = self.object(kind, name).await.ok_or("not in /status")?;
                match cond_of(&o["status"]["parents"], gw, type_) {
                    Some((s, r)) if s == status && (reason.is_empty() || r == reason) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    }

    async fn route_ok(&self, route: &str, gw: &str) -> Result<(), String> {
        self.parent_cond("HTTPRoute", route, gw, "Accepted", "True", "Accepted")
            .await?;
        self.parent_cond(
            "HTTPRoute",
            route,
            gw,
            "ResolvedRefs",
            "True",
            "ResolvedRefs",
        )
        .await
    }

    async fn pool_accepted(&self, pool: &str, gw: &str) -> Result<(), String> {
        self.parent_cond("InferencePool", pool, gw, "Accepted", "True", "")
            .await
    }
}

/// One request: (status, response headers, echo JSON or Null).
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

struct Call<'a> {
    host: &'a str,
    path: &'a str,
    body: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
}

fn call<'a>(host: &'a str, path: &'a str) -> Call<'a> {
    Call {
        host,
        path,
        body: None,
        headers: Vec::new(),
    }
}

impl<'a> Call<'a> {
    fn post(mut self, body: &'a str) -> Self {
        self.body = Some(body);
        self
    }
    fn header(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }

    async fn send(&self, addr: SocketAddr) -> Result<Answer, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(if self.body.is_some() { "POST" } else { "GET" })
            .uri(self.path)
            .header("host", self.host);
        for (k, v) in &self.headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(self.body.unwrap_or("").to_owned())))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        })
    }

    /// MakeRequestAndExpectEventuallyConsistentResponse: eventually `statuses`, the pod's
    /// name starting with `pod_prefix` (when given) and `header` as given, three times in a
    /// row.
    async fn expect(
        &self,
        addr: SocketAddr,
        statuses: &[u16],
        pod_prefix: Option<&str>,
        header: Option<(&str, &str)>,
    ) -> Result<(), String> {
        let streak = std::sync::atomic::AtomicUsize::new(0);
        let streak = &streak;
        eventually(&format!("{} {}", self.host, self.path), || async move {
            use std::sync::atomic::Ordering::SeqCst;
            let a = self.send(addr).await?;
            let ok = statuses.contains(&a.status)
                && pod_prefix.is_none_or(|p| {
                    a.json["pod"].as_str().is_some_and(|pod| pod.starts_with(p))
                        && a.json["namespace"] == NS
                })
                && header
                    .is_none_or(|(k, v)| a.headers.get(k).and_then(|h| h.to_str().ok()) == Some(v));
            if ok {
                streak.fetch_add(1, SeqCst);
            } else {
                streak.store(0, SeqCst);
            }
            if streak.load(SeqCst) >= 3 {
                Ok(())
            } else {
                Err(format!(
                    "status {} pod {} headers {:?}",
                    a.status, a.json["pod"], a.headers
                ))
            }
        })
        .await
    }
}

const BODY: &str = r#"{"model": "conformance-fake-model", "prompt": "Write as if you were a critic: San Francisco"}"#;

/// `assertTrafficOnlyReachesToExpectedPods`: 100 requests, every one served by one of
/// `pods`.
async fn only_reaches(c: &Call<'_>, addr: SocketAddr, pods: &[&str]) -> Result<(), String> {
    c.expect(addr, &[200], None, None).await?;
    for _ in 0..100 {
        let a = c.send(addr).await?;
        let pod = a.json["pod"].as_str().unwrap_or("");
        if a.status != 200 || !pods.contains(&pod) {
            return Err(format!("status {} from unexpected pod {pod:?}", a.status));
        }
    }
    Ok(())
}

async fn run_test(cl: &Cluster, name: &str) -> Result<(), String> {
    let primary = cl.gateway("conformance-primary").await?;
    let secondary = cl.gateway("conformance-secondary").await?;
    let prim_pods = cl.pods("primary-inference-model-server");
    // The base runs three replicas of each model server; the steps index them.
    for app in [
        "primary-inference-model-server",
        "secondary-inference-model-server",
        "dp-inference-model-server",
    ] {
        if cl.pods(app).len() < 3 {
            return Err(format!("the base has fewer than 3 {app} Pods"));
        }
    }
    match name {
        "InferencePoolAccepted" => {
            cl.pool_accepted("primary-inference-pool", "conformance-primary")
                .await
        }
        "HTTPRouteInvalidInferencePoolRef" => {
            let r = "httproute-to-non-existent-pool";
            cl.parent_cond(
                "HTTPRoute",
                r,
                "conformance-primary",
                "Accepted",
                "True",
                "Accepted",
            )
            .await?;
            cl.parent_cond(
                "HTTPRoute",
                r,
                "conformance-primary",
                "ResolvedRefs",
                "False",
                "BackendNotFound",
            )
            .await
        }
        "InferencePoolInvalidEPPService" => {
            let r = "httproute-for-invalid-epp-pool";
            cl.parent_cond(
                "HTTPRoute",
                r,
                "conformance-primary",
                "Accepted",
                "True",
                "Accepted",
            )
            .await?;
            cl.parent_cond(
                "InferencePool",
                "pool-with-invalid-epp",
                "conformance-primary",
                "ResolvedRefs",
                "False",
                "",
            )
            .await?;
            call("", "/invalid-epp-test")
                .expect(primary, &[500, 501, 502, 503, 504], None, None)
                .await
        }
        "InferencePoolMissingEPPRef" => {
            cl.parent_cond(
                "HTTPRoute",
                "httproute-for-missing-epp-ref-pool",
                "conformance-primary",
                "Accepted",
                "True",
                "Accepted",
            )
            .await?;
            cl.pool_accepted("pool-with-missing-epp-ref", "conformance-primary")
                .await
        }
        "InferencePoolResolvedRefsCondition" => {
            cl.route_ok("httproute-for-primary-gw", "conformance-primary")
                .await?;
            cl.route_ok("httproute-for-secondary-gw", "conformance-secondary")
                .await?;
            cl.pool_accepted("primary-inference-pool", "conformance-primary")
                .await?;
            cl.pool_accepted("primary-inference-pool", "conformance-secondary")
                .await?;
            let p = call("primary.example.com", "/primary-gateway-test");
            let s = call("secondary.example.com", "/secondary-gateway-test");
            p.expect(
                primary,
                &[200],
                Some("primary-inference-model-server"),
                None,
            )
            .await?;
            s.expect(
                secondary,
                &[200],
                Some("primary-inference-model-server"),
                None,
            )
            .await?;
            cl.delete_from_test("HTTPRoute", "httproute-for-primary-gw")?;
            cl.pool_accepted("primary-inference-pool", "conformance-secondary")
                .await?;
            s.expect(
                secondary,
                &[200],
                Some("primary-inference-model-server"),
                None,
            )
            .await?;
            p.expect(primary, &[404], None, None).await?;
            cl.delete_from_test("HTTPRoute", "httproute-for-secondary-gw")?;
            eventually("pool has no parents", || async {
                let o = cl
                    .object("InferencePool", "primary-inference-pool")
                    .await
                    .ok_or("gone")?;
                match o["status"]["parents"].as_array().map(Vec::len) {
                    None | Some(0) => Ok(()),
                    Some(n) => Err(format!("{n} parents")),
                }
            })
            .await?;
            s.expect(secondary, &[404], None, None).await
        }
        "InferencePoolHTTPRoutePortValidation" => {
            for (route, host, path) in [
                (
                    "httproute-pool-port-unspecified",
                    "port-unspecified.example.com",
                    "/test-port-unspecified",
                ),
                (
                    "httproute-pool-port-matching",
                    "port-matching.example.com",
                    "/test-port-matching",
                ),
                (
                    "httproute-pool-port-non-matching",
                    "port-non-matching.example.com",
                    "/test-port-non-matching",
                ),
            ] {
                cl.route_ok(route, "conformance-primary").await?;
                cl.pool_accepted("primary-inference-pool", "conformance-primary")
                    .await?;
                call(host, path)
                    .expect(
                        primary,
                        &[200],
                        Some("primary-inference-model-server"),
                        None,
                    )
                    .await?;
            }
            Ok(())
        }
        "GatewayFollowingEPPRouting" => {
            cl.route_ok("httproute-for-primary-gw", "conformance-primary")
                .await?;
            cl.pool_accepted("primary-inference-pool", "conformance-primary")
                .await?;
            let base = || call("primary.example.com", "/primary-gateway-test").post(BODY);
            for p in &prim_pods {
                base()
                    .header("test-epp-endpoint-selection", p.ip.to_string())
                    .expect(primary, &[200], Some(&p.name), None)
                    .await?;
            }
            for chosen in [vec![2], vec![0, 1], vec![0, 1, 2]] {
                let ips: Vec<String> = chosen
                    .iter()
                    .map(|&i| prim_pods[i].ip.to_string())
                    .collect();
                let names: Vec<&str> = chosen.iter().map(|&i| prim_pods[i].name.as_str()).collect();
                only_reaches(
                    &base().header("test-epp-endpoint-selection", ips.join(",")),
                    primary,
                    &names,
                )
                .await?;
            }
            Ok(())
        }
        "GatewayFollowingEPPRoutingDP" => {
            cl.pool_accepted("dp-inference-pool", "conformance-primary")
                .await?;
            let dp = cl.pods("dp-inference-model-server");
            let base = || call("primary.example.com", "/primary-gateway-dp-test").post(BODY);
            for p in &dp {
                base()
                    .header("test-epp-endpoint-selection", p.ip.to_string())
                    .expect(primary, &[200], Some(&p.name), None)
                    .await?;
            }
            let cases: [(Vec<String>, Vec<usize>); 3] = [
                (vec![dp[1].ip.to_string()], vec![1]),
                (
                    vec![dp[0].ip.to_string(), format!("{}:3002", dp[2].ip)],
                    vec![0, 2],
                ),
                (
                    vec![
                        dp[0].ip.to_string(),
                        format!("{}:3000", dp[1].ip),
                        format!("{}:3004", dp[1].ip),
                        dp[2].ip.to_string(),
                    ],
                    vec![0, 1, 2],
                ),
            ];
            for (header, pods) in cases {
                let names: Vec<&str> = pods.iter().map(|&i| dp[i].name.as_str()).collect();
                only_reaches(
                    &base().header("test-epp-endpoint-selection", header.join(",")),
                    primary,
                    &names,
                )
                .await?;
            }
            Ok(())
        }
        "GatewayDestinationEndpointServed" => {
            cl.pool_accepted("primary-inference-pool", "conformance-primary")
                .await?;
            for p in &prim_pods {
                let served = format!("{}:3000", p.ip);
                call("primary.example.com", "/destination-endpoint-served-test")
                    .post(BODY)
                    .header("test-epp-endpoint-selection", p.ip.to_string())
                    .expect(
                        primary,
                        &[200],
                        Some(&p.name),
                        Some(("x-conformance-test-served-endpoint", &served)),
                    )
                    .await?;
            }
            Ok(())
        }
        "GatewayWeightedAcrossTwoInferencePools" => {
            cl.pool_accepted("primary-inference-pool", "conformance-primary")
                .await?;
            cl.pool_accepted("secondary-inference-pool", "conformance-primary")
                .await?;
            let sec_pods = cl.pods("secondary-inference-model-server");
            let all: Vec<&&Pod> = prim_pods.iter().chain(sec_pods.iter()).collect();
            let ips: Vec<String> = all.iter().map(|p| p.ip.to_string()).collect();
            // Warm-up with the union of both pools' pods in the header, until answers are
            // 200 (as one revision of the suite's test does). The revision this replay
            // follows otherwise warms up each pod alone (its address in the header, three
            // 200s in a row from it): a request the 70/30 weights send to the other pool
            // then rightly gets that pool's picker's 503, so a secondary pod needs three
            // 30 % draws in a row, and on a loaded machine that ran out of time with Weir
            // answering correctly. The warm-up checks nothing the 200 requests below do not.
            call("primary.example.com", "/weighted-two-pools-test")
                .post(r#"{"model":"conformance-fake-model","prompt":"Warmup"}"#)
                .header("test-epp-endpoint-selection", ips.join(","))
                .expect(primary, &[200], None, None)
                .await?;
            let c = call("primary.example.com", "/weighted-two-pools-test")
                .post(BODY)
                .header("test-epp-endpoint-selection", ips.join(","));
            let (mut prim, mut sec) = (0, 0);
            for _ in 0..200 {
                let a = c.send(primary).await?;
                let pod = a.json["pod"].as_str().unwrap_or("");
                if prim_pods.iter().any(|p| p.name == pod) {
                    prim += 1;
                } else if sec_pods.iter().any(|p| p.name == pod) {
                    sec += 1;
                } else {
                    return Err(format!("status {} from {pod:?}", a.status));
                }
            }
            // 70/30 with the suite's own bound: max(0.10, 4.5 sigma) = 0.146 at 200 requests.
            // The choice is a weighted random draw, so a stricter 0.10 (3.1 sigma) failed
            // about one run in 500 with nothing wrong (share 0.81 once); 0.146 fails one in
            // 100,000, and still fails a gateway that ignores the weights (0.5) or one pool.
            let share = f64::from(prim) / 200.0;
            let tolerance = (4.5 * (0.7f64 * 0.3 / 200.0).sqrt()).max(0.10);
            if (share - 0.7).abs() > tolerance {
                return Err(format!(
                    "primary share {share} (primary {prim}, secondary {sec}), allowed 0.7 ± {tolerance:.3}"
                ));
            }
            Ok(())
        }
        "EppUnAvailableFailOpen" => {
            cl.route_ok("httproute-for-failopen-pool-gw", "conformance-secondary")
                .await?;
            cl.pool_accepted("secondary-inference-pool", "conformance-secondary")
                .await?;
            let sec_pods = cl.pods("secondary-inference-model-server");
            let c = call("secondary.example.com", "/failopen-pool-test")
                .post(BODY)
                .header("test-epp-endpoint-selection", sec_pods[0].ip.to_string());
            c.expect(secondary, &[200], Some(&sec_pods[0].name), None)
                .await?;
            // MakeServiceUnavailable(PrimaryEppServiceNN): its endpoints go.
            let kept: Vec<Value> = cl
                .epp_slices
                .iter()
                .filter(|s| {
                    s["metadata"]["labels"]["kubernetes.io/service-name"]
                        != "primary-endpoint-picker-svc"
                })
                .cloned()
                .collect();
            write_docs(&cl.dir.path().join("20-epp.yaml"), &kept)?;
            let result = c
                .expect(
                    secondary,
                    &[200],
                    Some("secondary-inference-model-server"),
                    None,
                )
                .await;
            write_docs(&cl.dir.path().join("20-epp.yaml"), &cl.epp_slices)?;
            result
        }
        "HTTPRouteMultipleGatewaysDifferentPools" => {
            cl.route_ok("route-for-primary-gateway", "conformance-primary")
                .await?;
            cl.pool_accepted("primary-inference-pool", "conformance-primary")
                .await?;
            call("primary.example.com", "/test-primary-gateway")
                .expect(
                    primary,
                    &[200],
                    Some("primary-inference-model-server"),
                    None,
                )
                .await?;
            cl.route_ok("route-for-secondary-gateway", "conformance-secondary")
                .await?;
            cl.pool_accepted("secondary-inference-pool", "conformance-secondary")
                .await?;
            call("secondary.example.com", "/test-secondary-gateway")
                .expect(
                    secondary,
                    &[200],
                    Some("secondary-inference-model-server"),
                    None,
                )
                .await
        }
        "InferencePoolAppProtocol" => {
            for (host, path, port, pool, app) in [
                (
                    "appprotocol-h2c.example.com",
                    "/inferencepool-app-protocol-h2c",
                    3001,
                    "appprotocol-h2c-inference-pool",
                    "appprotocol-inference-model-server",
                ),
                (
                    "appprotocol-http.example.com",
                    "/inferencepool-app-protocol-http",
                    3000,
                    "appprotocol-http-inference-pool",
                    "appprotocol-inference-model-server",
                ),
                (
                    "appprotocol-default.example.com",
                    "/inferencepool-app-protocol-default",
                    3000,
                    "primary-inference-pool",
                    "primary-inference-model-server",
                ),
            ] {
                cl.pool_accepted(pool, "conformance-primary").await?;
                for p in cl.pods(app) {
                    let ep = format!("{}:{port}", p.ip);
                    call(host, path)
                        .post(BODY)
                        .header("test-epp-endpoint-selection", ep.clone())
                        .expect(
                            primary,
                            &[200],
                            Some(&p.name),
                            Some(("x-conformance-test-served-endpoint", &ep)),
                        )
                        .await?;
                }
            }
            Ok(())
        }
        "InferencePoolMultipleRulesDifferentPools" => {
            let r = "httproute-multiple-rules-different-pools";
            cl.parent_cond(
                "HTTPRoute",
                r,
                "conformance-primary",
                "Accepted",
                "True",
                "Accepted",
            )
            .await?;
            cl.pool_accepted("primary-inference-pool", "conformance-primary")
                .await?;
            cl.pool_accepted("secondary-inference-pool", "conformance-primary")
                .await?;
            call("", "/primary")
                .expect(
                    primary,
                    &[200],
                    Some("primary-inference-model-server"),
                    None,
                )
                .await?;
            call("", "/secondary")
                .expect(
                    primary,
                    &[200],
                    Some("secondary-inference-model-server"),
                    None,
                )
                .await
        }
        other => Err(format!("no replay for {other}")),
    }
}

const TESTS: &[(&str, &str)] = &[
    ("InferencePoolAccepted", "inferencepool_accepted.yaml"),
    (
        "HTTPRouteInvalidInferencePoolRef",
        "httproute_invalid_inferencepool_ref.yaml",
    ),
    (
        "InferencePoolInvalidEPPService",
        "inferencepool_invalid_epp_service.yaml",
    ),
    (
        "InferencePoolMissingEPPRef",
        "inferencepool_missing_epp_ref.yaml",
    ),
    (
        "InferencePoolResolvedRefsCondition",
        "inferencepool_resolvedrefs_condition.yaml",
    ),
    (
        "InferencePoolHTTPRoutePortValidation",
        "inferencepool_httproute_port_validation.yaml",
    ),
    (
        "GatewayFollowingEPPRouting",
        "gateway_following_epp_routing.yaml",
    ),
    (
        "GatewayFollowingEPPRoutingDP",
        "gateway_following_epp_routing_dp.yaml",
    ),
    (
        "GatewayDestinationEndpointServed",
        "gateway_destination_endpoint_served.yaml",
    ),
    (
        "GatewayWeightedAcrossTwoInferencePools",
        "gateway_weighted_two_pools.yaml",
    ),
    ("EppUnAvailableFailOpen", "epp_unavailable_fail_open.yaml"),
    (
        "HTTPRouteMultipleGatewaysDifferentPools",
        "httproute_multiple_gateways_different_pools.yaml",
    ),
    ("InferencePoolAppProtocol", "inferencepool_appprotocol.yaml"),
    (
        "InferencePoolMultipleRulesDifferentPools",
        "inferencepool_multiple_rules_different_pools.yaml",
    ),
];

/// The replayed tests as rows of the report: the Go test's name, file and features.
pub fn specs() -> Vec<TestSpec> {
    TESTS
        .iter()
        .map(|(name, file)| {
            let mut features = vec!["Gateway".to_owned(), FEATURE.to_owned()];
            // (The one v1.6.0 test that also declares SupportHTTPRoute.)
            if *name == "InferencePoolMultipleRulesDifferentPools" {
                features.push("HTTPRoute".to_owned());
            }
            TestSpec {
                name: (*name).to_owned(),
                go: format!("conformance/tests/{}", file.replace(".yaml", ".go")),
                manifests: vec![(*file).to_owned()],
                profile: Profile::Core,
                features,
                feature: Some(FEATURE.to_owned()),
                skip: None,
                suite_skips_when_claimed: None,
                claimed: true,
                steps: Vec::new(),
            }
        })
        .collect()
}

/// Replay `selected` (of [`specs`]) against one new Weir; one result (and its seconds) per
/// test, in order.
pub async fn replay(selected: &[&TestSpec]) -> Vec<(Result<(), String>, f64)> {
    let cl = match Cluster::start().await {
        Ok(cl) => cl,
        Err(e) => {
            let why = format!("the inference cluster did not start: {e}");
            return selected.iter().map(|_| (Err(why.clone()), 0.0)).collect();
        }
    };
    let mut results = Vec::new();
    for spec in selected {
        let started = Instant::now();
        let mut result = match spec.manifests.first() {
            Some(file) => match cl.apply(file) {
                Ok(()) => run_test(&cl, &spec.name).await,
                Err(e) => Err(e),
            },
            None => Err("no manifest".to_owned()),
        };
        if let Err(e) = cl.cleanup().await {
            result = result.and(Err(format!("cleanup: {e}")));
        }
        if result.is_err() {
            let tail: Vec<String> = cl
                .weir
                .proc
                .stderr_text()
                .lines()
                .rev()
                .take(10)
                .map(str::to_owned)
                .collect();
            result =
                result.map_err(|e| format!("{e}; weir's last log lines: {}", tail.join(" / ")));
        }
        eprintln!(
            "{:<55} {} ({:.1}s)",
            spec.name,
            if result.is_ok() { "pass" } else { "FAIL" },
            started.elapsed().as_secs_f64()
        );
        results.push((result, started.elapsed().as_secs_f64()));
    }
    results
}
