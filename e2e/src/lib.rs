//! Shared set-up for the end-to-end tests (test-only code): the quickstart example in a
//! temporary directory, wired to local echo backends on ephemeral ports, with a certificate
//! generated for this run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_testkit::certs::{tls_secret_yaml, Ca};
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir_with_limit, Echo, Weir};

pub const WAIT: Duration = Duration::from_secs(15);

pub struct Quickstart {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub backends: Vec<Echo>,
    pub weir: Weir,
}

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart")
}

/// Copy the quickstart manifests, point their EndpointSlices at fresh echo backends, add a
/// TLS Secret signed by a test CA, and start Weir on it.
pub async fn start() -> Quickstart {
    start_with_limit(None).await
}

/// [`start`], with weir's address space limited (see [`weir_with_limit`]).
pub async fn start_with_limit(limit_kib: Option<u64>) -> Quickstart {
    start_with(&[], limit_kib).await
}

/// [`start`], with more `weir run` arguments and weir's address space limited (see
/// [`weir_with_limit`]) when `limit_kib` is given.
pub async fn start_with(extra: &[&str], limit_kib: Option<u64>) -> Quickstart {
    let dir = tempfile::tempdir().unwrap();
    let backends = vec![
        echo("go-httpbin-7d8f9c6b5-x2kqp", "default"),
        echo("old-nginx-5c7b8d9f4-k8zlm", "default"),
        echo("new-nginx-6f9d7c8b5-p4wqr", "default"),
    ];
    for name in [
        "gateway.yaml",
        "routes.yaml",
        "backends.yaml",
        "policy.yaml",
    ] {
        let mut text = std::fs::read_to_string(example_dir().join(name)).unwrap();
        for (port, backend) in [9101, 9102, 9103].iter().zip(&backends) {
            text = text.replace(&port.to_string(), &backend.addr.port().to_string());
        }
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let ca = Ca::new("weir-e2e-ca");
    let leaf = ca.leaf(&["ingress.top", "*.ingress.top"]);
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(
        dir.path().join("tls/secret.yaml"),
        tls_secret_yaml("default", "ingress-top-tls", &leaf),
    )
    .unwrap();
    let weir = weir_with_limit(dir.path(), &[80, 443], extra, limit_kib);
    wait_ready(&weir).await;
    Quickstart {
        dir,
        ca,
        backends,
        weir,
    }
}

/// A config directory with the quickstart's Gateway (its HTTP listener only: the HTTPS one
/// needs a certificate), routes and Services, go-httpbin's endpoint at `go_httpbin_port`.
pub fn http_quickstart_dir(go_httpbin_port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let gateway = std::fs::read_to_string(example_dir().join("gateway.yaml")).unwrap();
    let http_only = gateway.split("    - name: https").next().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), http_only).unwrap();
    std::fs::copy(
        example_dir().join("routes.yaml"),
        dir.path().join("routes.yaml"),
    )
    .unwrap();
    let backends = std::fs::read_to_string(example_dir().join("backends.yaml")).unwrap();
    std::fs::write(
        dir.path().join("backends.yaml"),
        backends.replace("9101", &go_httpbin_port.to_string()),
    )
    .unwrap();
    dir
}

/// A Service `namespace/name` on `port` and its EndpointSlice: `endpoints`, all on one port
/// number (an EndpointSlice has one port list), ready.
pub fn service_yaml(namespace: &str, name: &str, port: u16, endpoints: &[SocketAddr]) -> String {
    let target = endpoints.first().map_or(port, SocketAddr::port);
    let mut addresses = String::new();
    for e in endpoints {
        assert_eq!(e.port(), target, "one port per EndpointSlice");
        addresses.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
            e.ip()
        ));
    }
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  ports: [{{port: {port}, targetPort: {target}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-local\n  namespace: {namespace}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{port: {target}, protocol: TCP}}]\nendpoints:\n{addresses}"
    )
}

pub async fn wait_ready(weir: &Weir) {
    let admin = weir.admin;
    let stderr = weir.proc.stderr.clone();
    weir_testkit::assert_eventually("weir /readyz", WAIT, || {
        let stderr = stderr.clone();
        async move {
            match http1(admin, &Req::get("admin", "/readyz")).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(format!(
                    "{e}; stderr: {}",
                    stderr.lock().unwrap().join("\n")
                )),
            }
        }
    })
    .await
}

/// GET the admin server's `/status` and find one object by kind and name.
pub async fn status_of(weir: &Weir, kind: &str, name: &str) -> Option<serde_json::Value> {
    let reply = http1(weir.admin, &Req::get("admin", "/status"))
        .await
        .ok()?;
    reply.json()["items"]
        .as_array()?
        .iter()
        .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
        .cloned()
}

/// Wait until the `Accepted` condition of policy `kind`/`name` under its first ancestor (on
/// `/status`) is one `ok` takes (a missing condition is `Null`); that condition. `what`
/// names the wait in the failure message.
pub async fn policy_accepted_when(
    weir: &Weir,
    what: &str,
    kind: &str,
    name: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    weir_testkit::assert_eventually(what, WAIT, || async {
        let status = status_of(weir, kind, name).await.ok_or("no status")?;
        let c = condition(&status["status"]["ancestors"][0]["conditions"], "Accepted")
            .cloned()
            .unwrap_or_default();
        if ok(&c) {
            Ok(c)
        } else {
            Err(format!("{status}"))
        }
    })
    .await
}

/// Wait until policy `kind`/`name` is `Accepted=True` under its first ancestor.
pub async fn policy_accepted(weir: &Weir, kind: &str, name: &str) {
    policy_accepted_when(weir, "the policy accepted", kind, name, |c| {
        c["status"] == "True"
    })
    .await;
}

/// The `status` of condition `type` in a conditions array.
pub fn condition<'a>(
    conditions: &'a serde_json::Value,
    kind: &str,
) -> Option<&'a serde_json::Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}
