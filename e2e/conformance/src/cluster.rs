//! A stand-in for the suite's cluster: the base manifests with the suite's rewrites, the
//! Secrets the suite creates in code, one `weir-echo` process per Deployment replica, and the
//! EndpointSlices the EndpointSlice controller would write for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize as _;
use serde_json::{json, Value};
use weir_testkit::certs::{ca_config_map_yaml, tls_secret_yaml, Ca, Leaf};
use weir_testkit::process::{bin, Proc};

mod client_certs;

/// Our GatewayClass; every `{GATEWAY_CLASS_NAME}` becomes this.
pub const CLASS_NAME: &str = "weir";
/// Our controller; `{GATEWAY_CONTROLLER_NAME}` becomes this.
pub const CONTROLLER_NAME: &str = "weir.dev/gateway-controller";
/// What `PLACEHOLDER_USABLE_ADDRS` becomes: an address of this host that no other Gateway
/// of the replay uses (Linux routes all of 127.0.0.0/8 to loopback).
pub const USABLE_ADDR: &str = "127.0.0.2";
/// What `PLACEHOLDER_UNUSABLE_ADDRS` becomes: TEST-NET-3, never an address of this host.
pub const UNUSABLE_ADDR: &str = "203.0.113.77";

/// Where the vendored v1.6.1 suite lives relative to this crate.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("upstream/v1.6.1/conformance")
}

/// Where a manifest named in tests.yaml lives: `weir/<file>` is one of Weir's own (this
/// crate's `weir/`, not official), anything else is under the suite's `tests/`.
pub fn manifest_path(name: &str) -> PathBuf {
    match name.strip_prefix("weir/") {
        Some(own) => Path::new(env!("CARGO_MANIFEST_DIR")).join("weir").join(own),
        None => suite_dir().join("tests").join(name),
    }
}

/// The block Weir gives each Gateway without `spec.addresses` an address of its own from
/// (`--gateway-address-pool`), as a cluster gives each Gateway its own Service address.
pub const GATEWAY_ADDRESS_POOL: &str = "127.0.1.0/24";

/// The suite's template fields, filled: in manifests and in the steps of `tests.yaml`
/// (patches and expected addresses name the same placeholders).
pub fn fill_templates(text: &str) -> String {
    text.replace("{GATEWAY_CLASS_NAME}", CLASS_NAME)
        .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER_NAME)
        .replace("PLACEHOLDER_USABLE_ADDRS", USABLE_ADDR)
        .replace("PLACEHOLDER_UNUSABLE_ADDRS", UNUSABLE_ADDR)
}

/// Read a manifest file the way the suite's Applier does: fill the template fields, then
/// split into objects.
pub fn read_manifests(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_manifests(&fill_templates(&text)).with_context(|| format!("parsing {}", path.display()))
}

/// Split multi-document YAML into objects.
fn parse_manifests(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)?;
        if value.is_object() {
            out.push(value);
        }
    }
    Ok(out)
}

/// What an API server adds: the `kubernetes.io/metadata.name` label on Namespaces.
fn api_server_defaults(obj: &mut Value) {
    if obj["kind"] == "Namespace" {
        let name = obj["metadata"]["name"].clone();
        let meta = &mut obj["metadata"];
        if !meta["labels"].is_object() {
            meta["labels"] = json!({});
        }
        meta["labels"]["kubernetes.io/metadata.name"] = name;
    }
}

pub fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

pub fn ns_name(obj: &Value) -> (String, String) {
    (
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// One echo pod's log, as it grows.
pub struct PodLog {
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl PodLog {
    /// Lines logged so far (a mark to count from).
    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Lines after `mark` containing `needle`.
    pub fn count_since(&self, mark: usize, needle: &str) -> usize {
        self.lines
            .lock()
            .map(|l| l.iter().skip(mark).filter(|x| x.contains(needle)).count())
            .unwrap_or(0)
    }
}

/// One echo "pod".
struct Pod {
    deployment: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    name: String,
    /// Container port (3000 http or tcp, 3001 h2c, 8443 https or tls) → the port the process
    /// really listens on.
    ports: BTreeMap<u16, u16>,
    /// A pod of a base Deployment (else of a test's own: its EndpointSlices exist only while
    /// that test's manifests are applied).
    base: bool,
    _proc: Proc,
}

/// The running backends and the base objects, shared by every test.
pub struct Cluster {
    base: Vec<Value>,
    pods: Vec<Pod>,
    /// The Secrets and ConfigMaps the suite creates in code (its `Setup`).
    secrets: Vec<Value>,
    /// Trust anchor for every certificate in the generated Secrets.
    pub ca_pem: String,
    /// The client certificates of the frontend validation tests, by Secret name.
    pub client_certs: BTreeMap<String, Leaf>,
    /// The generated certificates by (namespace, Secret name).
    leaves: BTreeMap<(String, String), Leaf>,
}

impl Cluster {
    /// Load the base manifests and start one `weir-echo` per replica of each echo Deployment
    /// there and in `test_deployments` (the Deployments of the tests' own manifests: they
    /// run for the whole replay, as a Deployment of an earlier test would until the suite's
    /// cleanup).
    pub fn start(test_deployments: &[Value]) -> anyhow::Result<Cluster> {
        let base = read_manifests(&suite_dir().join("base/manifests.yaml"))?;
        let ca = Ca::new("weir-conformance-ca");
        let mut secrets = String::new();
        let mut leaves: BTreeMap<(String, String), Leaf> = BTreeMap::new();
        // conformance/utils/suite/suite.go Setup: MustCreateSelfSignedCertSecret(...). The
        // harness signs them with one CA (clients trust it) instead of self-signing each.
        // tls-validity-checks-certificate is `*` and `*.org` in the suite; Go's crypto/x509
        // accepts `*.org` for example.org but rustls (webpki) does not, so the names the
        // tests use as SNI are listed too. Weir picks certificates by listener hostname, not
        // by SAN, so this changes nothing on the server side.
        for (ns, name, hosts) in [
            ("gateway-conformance-web-backend", "certificate", vec!["*"]),
            (
                "gateway-conformance-infra",
                "tls-validity-checks-certificate",
                vec![
                    "*",
                    "*.org",
                    "example.org",
                    "second-example.org",
                    "unknown-example.org",
                    "third-example.org",
                    "*.wildcard.org",
                    // backendtlspolicy.yaml's re-encrypt route
                    "https-listener.org",
                ],
            ),
            (
                "gateway-conformance-infra",
                "tls-passthrough-checks-certificate",
                vec!["abc.example.com"],
            ),
            (
                "gateway-conformance-app-backend",
                "tls-passthrough-checks-certificate",
                vec!["abc.example.com"],
            ),
            // The Terminate-mode TLSRoute listeners' certificate: their manifests call
            // tls.example.com "the valid cert SAN".
            (
                "gateway-conformance-infra",
                "tls-terminate-checks-certificate",
                vec!["tls.example.com"],
            ),
        ] {
            let leaf = ca.leaf(&hosts);
            secrets.push_str("---\n");
            secrets.push_str(&tls_secret_yaml(ns, name, &leaf));
            leaves.insert((ns.to_string(), name.to_string()), leaf);
        }
        let client_certs = client_certs::generate(&mut secrets);
        // The BackendTLSPolicy tests' backend certificate (the tls-backend Deployments serve
        // it): the names the policies' hostnames and subjectAltNames use, and the SPIFFE ID
        // of BackendTLSPolicySANValidation. `tls-checks-ca-certificate` (the CA that signed
        // it) is what the policies trust; `mismatch-ca-certificate` is an unrelated CA;
        // `tls-checks-client-certificate` is what gateway-tls-backend-client-certificate's
        // Gateway presents to its backend, which trusts tls-checks-ca-certificate.
        let infra = "gateway-conformance-infra";
        for (name, leaf) in [
            (
                "tls-checks-certificate",
                ca.leaf_with_uris(
                    &["abc.example.com", "other.example.com"],
                    &["spiffe://abc.example.com/test-identity"],
                ),
            ),
            (
                "tls-checks-client-certificate",
                ca.leaf(&["gateway-client.example.com"]),
            ),
        ] {
            secrets.push_str("---\n");
            secrets.push_str(&tls_secret_yaml(infra, name, &leaf));
            leaves.insert((infra.to_string(), name.to_string()), leaf);
        }
        let mismatch = Ca::new("weir-conformance-unrelated-ca");
        let mut ca_config_maps = BTreeMap::new();
        for (name, pem) in [
            ("tls-checks-ca-certificate", &ca.cert_pem),
            ("mismatch-ca-certificate", &mismatch.cert_pem),
        ] {
            secrets.push_str("---\n");
            secrets.push_str(&ca_config_map_yaml(infra, name, pem));
            ca_config_maps.insert((infra.to_string(), name.to_string()), pem.clone());
        }
        let mut pods = Vec::new();
        let mut started = std::collections::BTreeSet::new();
        let base_deployments = base.iter().filter(|o| kind(o) == "Deployment");
        for (d, is_base) in base_deployments
            .map(|d| (d, true))
            .chain(test_deployments.iter().map(|d| (d, false)))
        {
            if started.insert(ns_name(d)) {
                pods.extend(start_deployment(d, is_base, &leaves, &ca_config_maps)?);
            }
        }
        Ok(Cluster {
            base: base
                .into_iter()
                .filter(|o| kind(o) != "Deployment")
                .collect(),
            pods,
            secrets: parse_manifests(&secrets).context("parsing the generated Secrets")?,
            ca_pem: ca.cert_pem.clone(),
            client_certs,
            leaves,
        })
    }

    /// The base manifests' objects (Deployments aside).
    pub fn base_objects(&self) -> &[Value] {
        &self.base
    }

    /// The PEM certificate (tls.crt) of a generated TLS Secret.
    pub fn certificate_pem(&self, ns: &str, name: &str) -> Option<&str> {
        self.leaves
            .get(&(ns.to_string(), name.to_string()))
            .map(|l| l.cert_pem.as_str())
    }

    /// Write what is applied once, before any test, into `dir`: our GatewayClass, every
    /// base object (all four base Gateways, as the suite installs them), the Secrets and
    /// ConfigMaps the suite creates in code, and the EndpointSlices of the base Services for
    /// the base pods.
    pub fn write_base(&self, dir: &Path) -> anyhow::Result<ConfigDir> {
        let mut base_objs: Vec<Value> = self.base.clone();
        let mut config = ConfigDir {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            pristine: BTreeMap::new(),
        };
        base_objs.iter_mut().for_each(api_server_defaults);
        let class = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": CLASS_NAME},
            "spec": {"controllerName": CONTROLLER_NAME},
        });
        let services: Vec<&Value> = base_objs.iter().filter(|o| kind(o) == "Service").collect();
        let slices = self.endpoint_slices(&services, |p| p.base);
        config.files = BTreeMap::from([
            ("00-gatewayclass.yaml".to_string(), vec![class]),
            ("10-base.yaml".to_string(), base_objs),
            ("20-secrets.yaml".to_string(), self.secrets.clone()),
            ("30-endpointslices.yaml".to_string(), slices),
        ]);
        config.pristine = config.files.clone();
        for name in config.files.keys() {
            config.write(name)?;
        }
        Ok(config)
    }

    /// Apply one test's manifests (what `MustApplyWithCleanup` creates): its objects, minus
    /// Deployments (their pods run for the whole replay), plus the EndpointSlices the
    /// controller would write for its Services (base and this test's pods) and for the base
    /// Services that select this test's pods. One file, written whole, so Weir sees them
    /// together.
    pub fn apply_test(&self, config: &mut ConfigDir, test_objects: &[Value]) -> anyhow::Result<()> {
        let deployments: std::collections::BTreeSet<(String, String)> = test_objects
            .iter()
            .filter(|o| kind(o) == "Deployment")
            .map(ns_name)
            .collect();
        let mut objs: Vec<Value> = test_objects
            .iter()
            .filter(|o| kind(o) != "Deployment")
            .cloned()
            .collect();
        objs.iter_mut().for_each(api_server_defaults);
        let ours = |p: &Pod| deployments.contains(&(p.namespace.clone(), p.deployment.clone()));
        let test_services: Vec<&Value> = objs.iter().filter(|o| kind(o) == "Service").collect();
        let mut slices = self.endpoint_slices(&test_services, |p| p.base || ours(p));
        let base_services: Vec<&Value> =
            self.base.iter().filter(|o| kind(o) == "Service").collect();
        slices.extend(self.endpoint_slices(&base_services, |p| !p.base && ours(p)));
        objs.extend(slices);
        config.files.insert(TEST_FILE.to_string(), objs);
        config.write(TEST_FILE)
    }

    /// The pods of a Deployment: (pod name, the port its container port `container_port`
    /// really listens on at 127.0.0.1).
    pub fn pods_of(&self, ns: &str, deployment: &str, container_port: u16) -> Vec<(String, u16)> {
        self.pods
            .iter()
            .filter(|p| p.namespace == ns && p.deployment == deployment)
            .filter_map(|p| Some((p.name.clone(), *p.ports.get(&container_port)?)))
            .collect()
    }

    /// The request log (stderr lines: `Echoing back request made to <uri> to client (<peer>)`,
    /// what the suite's `DumpEchoLogs` reads) of each pod of a Deployment.
    pub fn pod_logs(&self, ns: &str, deployment: &str) -> Vec<PodLog> {
        self.pods
            .iter()
            .filter(|p| p.namespace == ns && p.deployment == deployment)
            .map(|p| PodLog {
                lines: p._proc.stderr.clone(),
            })
            .collect()
    }

    /// What the EndpointSlice controller writes: for each Service with a selector, one slice
    /// per ready pod it selects (each pod listens on its own loopback port, so each needs its
    /// own `ports`).
    fn endpoint_slices(&self, services: &[&Value], pods: impl Fn(&Pod) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        for svc in services {
            let (ns, name) = ns_name(svc);
            let Some(selector) = svc["spec"]["selector"].as_object() else {
                continue;
            };
            let selector: BTreeMap<&str, &str> = selector
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect();
            for pod in self.pods.iter().filter(|p| pods(p)).filter(|p| {
                p.namespace == ns
                    && selector
                        .iter()
                        .all(|(k, v)| p.labels.get(*k).map(String::as_str) == Some(*v))
            }) {
                let mut ports = Vec::new();
                for sp in svc["spec"]["ports"].as_array().into_iter().flatten() {
                    let protocol = sp["protocol"].as_str().unwrap_or("TCP");
                    if protocol != "TCP" && protocol != "UDP" {
                        continue;
                    }
                    let target = sp["targetPort"]
                        .as_u64()
                        .or_else(|| sp["port"].as_u64())
                        .and_then(|p| u16::try_from(p).ok());
                    let Some(real) = target.and_then(|t| pod.ports.get(&t)) else {
                        continue;
                    };
                    let mut port = json!({
                        "name": sp["name"].as_str().unwrap_or(""),
                        "port": real,
                        "protocol": protocol,
                    });
                    if let Some(app) = sp["appProtocol"].as_str() {
                        port["appProtocol"] = json!(app);
                    }
                    ports.push(port);
                }
                if ports.is_empty() {
                    continue;
                }
                let suffix = pod.name.rsplit('-').next().unwrap_or("x");
                out.push(json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": format!("{name}-{suffix}"),
                        "namespace": ns,
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "addressType": "IPv4",
                    "ports": ports,
                    "endpoints": [{
                        "addresses": ["127.0.0.1"],
                        "conditions": {"ready": true},
                        "targetRef": {"kind": "Pod", "name": pod.name, "namespace": ns},
                    }],
                }));
            }
        }
        out
    }
}

/// The file holding the current test's objects.
const TEST_FILE: &str = "40-test.yaml";

/// The one config directory Weir serves for the whole replay (the stand-in for the API
/// server's contents): the base files, written once, and the current test's file. Steps
/// change objects here the way the suite patches them through the API server.
pub struct ConfigDir {
    dir: PathBuf,
    files: BTreeMap<String, Vec<Value>>,
    /// The base files as first written, to restore a base object a test patched (as the
    /// suite's cleanup would have to).
    pristine: BTreeMap<String, Vec<Value>>,
}

/// `(kind, namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub type ObjectId = (String, String, String);

/// Whether objects of `kind` (a Kubernetes kind string) are cluster-scoped: from Weir's
/// kind table, so a cluster-scoped kind added there is not looked up by namespace here.
pub fn is_cluster_scoped(kind: &str) -> bool {
    weir_store::Kind::ALL
        .into_iter()
        .any(|k| k.as_str() == kind && k.is_cluster_scoped())
}

/// The identity of an object as `/status` names it.
pub fn object_id(obj: &Value) -> ObjectId {
    let (ns, name) = ns_name(obj);
    let ns = if is_cluster_scoped(kind(obj)) {
        String::new()
    } else {
        ns
    };
    (kind(obj).to_string(), ns, name)
}

impl ConfigDir {
    fn write(&self, file: &str) -> anyhow::Result<()> {
        write_yaml(&self.dir.join(file), &self.files[file])
    }

    /// The distinct objects Weir's store should hold now (what its `weir_store_objects`
    /// gauge counts): every object written, the first of each identity (as the file source
    /// keeps the first definition).
    pub fn store_objects(&self) -> usize {
        self.objects()
            .map(object_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// Copy the current test's file (as patched) to `.kept/<test>.yaml` (hidden: the file
    /// source ignores it).
    pub fn keep_test(&self, test: &str) -> anyhow::Result<()> {
        let kept = self.dir.join(".kept");
        std::fs::create_dir_all(&kept)?;
        write_yaml(
            &kept.join(format!("{test}.yaml")),
            self.files
                .get(TEST_FILE)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
    }

    /// The current test's objects (empty between tests).
    pub fn test_objects(&self) -> Vec<ObjectId> {
        self.files
            .get(TEST_FILE)
            .into_iter()
            .flatten()
            .map(object_id)
            .collect()
    }

    /// Delete the current test's objects (its file goes, as the suite's cleanup deletes
    /// what it applied), and put back any base object a step patched. Returns the base
    /// objects restored.
    pub fn remove_test(&mut self) -> anyhow::Result<Vec<ObjectId>> {
        if self.files.remove(TEST_FILE).is_some() {
            let path = self.dir.join(TEST_FILE);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        let mut restored = Vec::new();
        let changed: Vec<String> = self
            .pristine
            .iter()
            .filter(|(file, objects)| self.files.get(*file) != Some(objects))
            .map(|(file, _)| file.clone())
            .collect();
        for file in changed {
            let now = self.files.get(&file).cloned().unwrap_or_default();
            let before = self.pristine[&file].clone();
            restored.extend(before.iter().filter(|o| !now.contains(o)).map(object_id));
            self.files.insert(file.clone(), before);
            self.write(&file)?;
        }
        Ok(restored)
    }

    /// Every object written, in file order.
    pub fn objects(&self) -> impl Iterator<Item = &Value> {
        self.files.values().flatten()
    }

    /// `ns/name` of every Gateway → its listeners' (configured port, protocol).
    pub fn gateways(&self) -> BTreeMap<String, Vec<(u16, String)>> {
        self.objects()
            .filter(|o| kind(o) == "Gateway")
            .map(|g| {
                let (ns, name) = ns_name(g);
                let listeners = g["spec"]["listeners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| {
                        Some((
                            u16::try_from(l["port"].as_u64()?).ok()?,
                            l["protocol"].as_str()?.to_string(),
                        ))
                    })
                    .collect();
                (format!("{ns}/{name}"), listeners)
            })
            .collect()
    }

    /// What `client.Patch(ctx, obj, client.MergeFrom(orig))` does: apply a JSON merge patch
    /// (RFC 7386: objects merge, `null` deletes, lists are replaced whole) to the object,
    /// then rewrite the file that holds it, as the API server would store it.
    pub fn patch(
        &mut self,
        kind_: &str,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> anyhow::Result<()> {
        let cluster_scoped = is_cluster_scoped(kind_);
        let mut found = None;
        for (file, objects) in &mut self.files {
            for o in objects.iter_mut() {
                let (ons, oname) = ns_name(o);
                if kind(o) == kind_ && oname == name && (cluster_scoped || ons == ns) {
                    merge_patch(o, patch);
                    found = Some(file.clone());
                }
            }
        }
        let Some(file) = found else {
            bail!("no {kind_} {ns}/{name} to patch");
        };
        self.write(&file)
    }
}

impl ConfigDir {
    /// Objects a test creates after its manifests (`MustApplyObjectsWithCleanup`): they join
    /// the test's file, as the API server stores them, and go with it at cleanup.
    pub fn create(&mut self, objects: &[Value]) -> anyhow::Result<()> {
        let Some(test) = self.files.get_mut(TEST_FILE) else {
            bail!("no test is applied to create objects in");
        };
        for o in objects {
            let mut o = o.clone();
            api_server_defaults(&mut o);
            test.push(o);
        }
        self.write(TEST_FILE)
    }

    /// `client.Delete` of one of the test's objects: it leaves the test's file.
    pub fn delete(&mut self, kind_: &str, ns: &str, name: &str) -> anyhow::Result<()> {
        let cluster_scoped = is_cluster_scoped(kind_);
        let Some(test) = self.files.get_mut(TEST_FILE) else {
            bail!("no test is applied to delete {kind_} {ns}/{name} from");
        };
        let before = test.len();
        test.retain(|o| {
            let (ons, oname) = ns_name(o);
            !(kind(o) == kind_ && oname == name && (cluster_scoped || ons == ns))
        });
        if test.len() == before {
            bail!("the test has no {kind_} {ns}/{name} to delete");
        }
        self.write(TEST_FILE)
    }

    /// What httproute-service-types.go `setupEndpointSlices` does to a hand-written
    /// EndpointSlice: its endpoints become the given pods (ready, serving, not terminating,
    /// with a Pod targetRef). The suite's pods share the slice's port; ours each listen on
    /// their own 127.0.0.1 port, so the slice takes the first pod and its port, and each
    /// further pod gets a copy of the slice named `<slice>-<i>` with its own port.
    pub fn fill_endpoint_slice(
        &mut self,
        ns: &str,
        slice: &str,
        pods: &[(String, u16)],
    ) -> anyhow::Result<()> {
        let mut found = None;
        for (file, objects) in &mut self.files {
            let Some(at) = objects.iter().position(|o| {
                kind(o) == "EndpointSlice" && ns_name(o) == (ns.to_string(), slice.to_string())
            }) else {
                continue;
            };
            let template = objects[at].clone();
            let mut filled = Vec::new();
            for (i, (pod, port)) in pods.iter().enumerate() {
                let mut o = template.clone();
                if i > 0 {
                    o["metadata"]["name"] = json!(format!("{slice}-{i}"));
                }
                for p in o["ports"].as_array_mut().into_iter().flatten() {
                    p["port"] = json!(port);
                }
                o["endpoints"] = json!([{
                    "addresses": ["127.0.0.1"],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": ns},
                }]);
                filled.push(o);
            }
            objects.splice(at..=at, filled);
            found = Some(file.clone());
            break;
        }
        let Some(file) = found else {
            bail!("no EndpointSlice {ns}/{slice}");
        };
        self.write(&file)
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in fields {
        if v.is_null() {
            if let Some(obj) = target.as_object_mut() {
                obj.remove(k);
            }
        } else {
            merge_patch(&mut target[k.as_str()], v);
        }
    }
}

fn write_yaml(path: &Path, objects: &[Value]) -> anyhow::Result<()> {
    let mut text = String::new();
    for o in objects {
        text.push_str("---\n");
        text.push_str(&serde_norway::to_string(o)?);
    }
    // Whole files only: the source must never read a half-written one. Hidden files are
    // ignored by the file source, so the temporary name is invisible to it.
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Deterministic pod-template-hash-like strings (the alphabet Kubernetes uses).
fn hash_str(seed: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..len)
        .map(|i| {
            let idx = ((h >> ((i * 5) % 60)) % ALPHABET.len() as u64) as usize;
            char::from(ALPHABET[idx])
        })
        .collect()
}

/// The generated certificate a Deployment mounts from a Secret volume (the echo containers
/// read `TLS_SERVER_CERT` and the key from it), if any.
fn mounted_leaf<'a>(
    d: &Value,
    ns: &str,
    leaves: &'a BTreeMap<(String, String), Leaf>,
) -> Option<&'a Leaf> {
    d["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .find_map(|name| leaves.get(&(ns.to_string(), name.to_string())))
}

/// The CA certificates a Deployment mounts from a ConfigMap volume (the echo containers read
/// `TLS_CLIENT_CACERTS` from it), if any.
fn mounted_ca<'a>(
    d: &Value,
    ns: &str,
    config_maps: &'a BTreeMap<(String, String), String>,
) -> Option<&'a String> {
    d["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .filter_map(|v| v["configMap"]["name"].as_str())
        .find_map(|name| config_maps.get(&(ns.to_string(), name.to_string())))
}

/// Whether a container sets env `name`.
fn has_env(containers: &[Value], name: &str) -> bool {
    containers.iter().any(|c| {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"].as_str() == Some(name))
    })
}

/// Start the replicas of one Deployment whose container is the conformance echo server: in
/// HTTP mode (container ports 3000 http, 3001 h2c, and 8443 https when it mounts a
/// certificate), or with `TCP_ECHO_SERVER` in the TCP line protocol mode (3000 plain, 8443
/// TLS).
fn start_deployment(
    d: &Value,
    base: bool,
    leaves: &BTreeMap<(String, String), Leaf>,
    ca_config_maps: &BTreeMap<(String, String), String>,
) -> anyhow::Result<Vec<Pod>> {
    let (ns, name) = ns_name(d);
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let is_echo = containers.iter().any(|c| {
        c["image"]
            .as_str()
            .is_some_and(|i| i.contains("echo-basic"))
    });
    // coredns (the UDPRoute test's DNS backend, answering foo.bar.com with `whoami`):
    // weir-echo's DNS stand-in on its UDP port 53.
    let coredns = containers.iter().any(|c| {
        c["image"]
            .as_str()
            .is_some_and(|i| i.contains("coredns/coredns"))
    });
    // Weir's test auth service (its own ExternalAuth tests, `weir/httproute-external-auth-*`):
    // `weir-test-auth`, speaking AUTH_PROTOCOL (HTTP or GRPC) on its one container port.
    let auth = containers.iter().find(|c| {
        c["image"]
            .as_str()
            .is_some_and(|i| i.contains("weir-test-auth"))
    });
    if let Some(auth) = auth {
        return start_auth_deployment(d, auth, base);
    }
    if !is_echo && !coredns {
        return Ok(Vec::new());
    }
    let labels: BTreeMap<String, String> = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    // The echo image serves the GrpcEcho service when its container sets GRPC_ECHO_SERVER
    // (the grpc-infra-backend Deployments); weir-echo does the same.
    let grpc = containers.iter().any(|c| {
        c["env"].as_array().into_iter().flatten().any(|e| {
            e["name"] == "GRPC_ECHO_SERVER" && e["value"].as_str().is_some_and(|v| !v.is_empty())
        })
    });
    let tcp_mode = has_env(&containers, "TCP_ECHO_SERVER");
    let udp_mode = has_env(&containers, "UDP_ECHO_SERVER");
    // A literal SERVICE_NAME (the UDP echo pods report it; the suite checks it).
    let service_name = containers.iter().find_map(|c| {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "SERVICE_NAME")
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    });
    let leaf = has_env(&containers, "TLS_SERVER_CERT")
        .then(|| mounted_leaf(d, &ns, leaves))
        .flatten();
    let client_cas = has_env(&containers, "TLS_CLIENT_CACERTS")
        .then(|| mounted_ca(d, &ns, ca_config_maps))
        .flatten();
    let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let hash = hash_str(&format!("{ns}/{name}"), 10);
    let mut pods = Vec::new();
    for i in 0..replicas {
        let pod_name = format!("{name}-{hash}-{}", hash_str(&format!("{ns}/{name}/{i}"), 5));
        let mut cmd = Command::new(bin("weir-echo"));
        cmd.args(["--bind", "127.0.0.1"])
            .env("POD_NAME", &pod_name)
            .env("NAMESPACE", &ns);
        for var in [
            "TLS_SERVER_CERT",
            "TLS_SERVER_PRIVKEY",
            "TLS_SERVER_PRIV_KEY",
            "HTTP_PORT",
            "H2C_PORT",
            "HTTPS_PORT",
            "TCP_ECHO_SERVER",
            "TCP_PORT",
            "TLS_PORT",
            "GRPC_ECHO_SERVER",
            "TLS_CLIENT_CACERTS",
            "UDP_ECHO_SERVER",
            "UDP_PORT",
            "SERVICE_NAME",
        ] {
            cmd.env_remove(var);
        }
        if let Some(service) = &service_name {
            cmd.env("SERVICE_NAME", service);
        }
        if grpc {
            cmd.env("GRPC_ECHO_SERVER", "1");
        }
        if coredns {
            cmd.args(["--dns-whoami", "--udp-port", "0"]);
        } else if udp_mode {
            cmd.args(["--udp-echo-server", "1", "--udp-port", "0"]);
        } else if tcp_mode {
            cmd.args([
                "--tcp-echo-server",
                "1",
                "--tcp-port",
                "0",
                "--tls-port",
                "0",
            ]);
        } else {
            cmd.args(["--http-port", "0", "--h2c-port", "0", "--https-port", "0"]);
        }
        if let Some(leaf) = leaf {
            // PEM text, not paths: weir-echo reads the certificate from the variable.
            cmd.env("TLS_SERVER_CERT", &leaf.cert_pem)
                .env("TLS_SERVER_PRIVKEY", &leaf.key_pem);
        }
        if let Some(cas) = client_cas {
            // PEM text as well: clients must present a certificate these CAs issued.
            cmd.env("TLS_CLIENT_CACERTS", cas);
        }
        let proc = Proc::spawn(cmd);
        let port_of = |addr: &str| -> anyhow::Result<u16> {
            match addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
                Some(p) => Ok(p),
                None => bail!("weir-echo printed an address without a port: {addr}"),
            }
        };
        let wait =
            |what: &str| proc.wait_stdout(&format!("listening {what} "), Duration::from_secs(10));
        let mut ports = BTreeMap::new();
        if coredns {
            ports.insert(53, port_of(&wait("udp"))?);
        } else if udp_mode {
            // echo-basic's udpechoserver: UDP_PORT, default 8080.
            ports.insert(8080, port_of(&wait("udp"))?);
        } else if tcp_mode {
            ports.insert(3000, port_of(&wait("tcp"))?);
            if leaf.is_some() {
                ports.insert(8443, port_of(&wait("tls"))?);
            }
        } else {
            ports.insert(3000, port_of(&wait("http"))?);
            ports.insert(3001, port_of(&wait("h2c"))?);
            if leaf.is_some() {
                ports.insert(8443, port_of(&wait("https"))?);
            }
        }
        pods.push(Pod {
            deployment: name.clone(),
            namespace: ns.clone(),
            labels: labels.clone(),
            name: pod_name,
            ports,
            base,
            _proc: proc,
        });
    }
    Ok(pods)
}

/// The replicas of a test auth service Deployment: `weir-test-auth` with the container's
/// `AUTH_PROTOCOL`, its first container port mapped to the port the process listens on.
fn start_auth_deployment(d: &Value, container: &Value, base: bool) -> anyhow::Result<Vec<Pod>> {
    let (ns, name) = ns_name(d);
    let protocol = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "AUTH_PROTOCOL")
        .and_then(|e| e["value"].as_str())
        .unwrap_or("HTTP")
        .to_string();
    let container_port = container["ports"][0]["containerPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(9000);
    let labels: BTreeMap<String, String> = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let hash = hash_str(&format!("{ns}/{name}"), 10);
    let mut pods = Vec::new();
    for i in 0..replicas {
        let pod_name = format!("{name}-{hash}-{}", hash_str(&format!("{ns}/{name}/{i}"), 5));
        let mut cmd = Command::new(bin("weir-test-auth"));
        cmd.args([
            "--protocol",
            &protocol,
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
        ]);
        let proc = Proc::spawn(cmd);
        let addr = proc.wait_stdout("listening ext-auth ", Duration::from_secs(10));
        let Some(port) = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.trim().parse().ok())
        else {
            bail!("weir-test-auth printed an address without a port: {addr}");
        };
        pods.push(Pod {
            deployment: name.clone(),
            namespace: ns.clone(),
            labels: labels.clone(),
            name: pod_name,
            ports: BTreeMap::from([(container_port, port)]),
            base,
            _proc: proc,
        });
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(name: &str, hostname: &str) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": "gateway-conformance-infra"},
            "spec": {"listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "hostname": hostname}]},
        })
    }

    fn config(dir: &Path) -> ConfigDir {
        let files = BTreeMap::from([("10-base.yaml".to_string(), vec![gateway("base", "a")])]);
        let config = ConfigDir {
            dir: dir.to_path_buf(),
            pristine: files.clone(),
            files,
        };
        config.write("10-base.yaml").unwrap();
        config
    }

    #[test]
    fn scope_comes_from_the_kind_table() {
        assert!(is_cluster_scoped("GatewayClass"));
        assert!(is_cluster_scoped("Namespace"));
        assert!(!is_cluster_scoped("Gateway"));
        assert!(!is_cluster_scoped("HTTPRoute"));
        assert!(!is_cluster_scoped("Widget"));
    }

    /// A test's file goes with its cleanup; a base object a step patched comes back as it
    /// was, in its file; the test's objects are counted while it is applied only.
    #[test]
    fn cleanup_removes_the_test_file_and_restores_patched_base_objects() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config
            .files
            .insert(TEST_FILE.to_string(), vec![gateway("own", "b")]);
        config.write(TEST_FILE).unwrap();
        assert_eq!(config.store_objects(), 2);
        config
            .patch(
                "Gateway",
                "gateway-conformance-infra",
                "base",
                &json!({"spec": {"listeners": [{"name": "http", "port": 81, "protocol": "HTTP"}]}}),
            )
            .unwrap();
        let patched = std::fs::read_to_string(dir.path().join("10-base.yaml")).unwrap();
        assert!(patched.contains("81"), "{patched}");

        let gone = config.test_objects();
        assert_eq!(
            gone,
            vec![(
                "Gateway".to_string(),
                "gateway-conformance-infra".to_string(),
                "own".to_string()
            )]
        );
        let restored = config.remove_test().unwrap();
        assert_eq!(
            restored,
            vec![(
                "Gateway".to_string(),
                "gateway-conformance-infra".to_string(),
                "base".to_string()
            )]
        );
        assert!(!dir.path().join(TEST_FILE).exists());
        let base = std::fs::read_to_string(dir.path().join("10-base.yaml")).unwrap();
        assert!(
            !base.contains("81") && base.contains("hostname: a"),
            "{base}"
        );
        assert_eq!(config.store_objects(), 1);
        assert!(config.test_objects().is_empty());
        // Nothing patched: nothing to restore.
        assert!(config.remove_test().unwrap().is_empty());
    }

    #[test]
    fn cluster_scoped_objects_have_no_namespace_in_their_id() {
        let class = json!({"kind": "GatewayClass", "metadata": {"name": "weir"}});
        assert_eq!(
            object_id(&class),
            (
                "GatewayClass".to_string(),
                String::new(),
                "weir".to_string()
            )
        );
    }
}
