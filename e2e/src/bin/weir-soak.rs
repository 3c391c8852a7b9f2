//! `make soak`: a bounded soak of one Weir process (file mode, loopback). Load runs on a
//! stable route (HTTP keep-alive and HTTPS, new connection each) and on a route whose file,
//! endpoints and certificate churn, while one of the stable route's two backends is killed
//! and restarted on the same port. It reports requests, errors by kind, and Weir's RSS and
//! open descriptors at the start and the end, and exits non-zero when
//! - a request on a route nobody touched failed other than at a backend restart,
//! - a request on the churned route's unchanged path failed at all,
//! - descriptors or RSS grew beyond a bound once the load stopped.
//!
//! `SOAK_SECONDS` (default 180) sets the length; `cargo build --bins` first (make soak does).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: a broken set-up is a bug

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_e2e::service_yaml;
use weir_testkit::certs::{tls_secret_yaml, Ca};
use weir_testkit::client::{http1, https, Req};
use weir_testkit::process::{echo, echo_at, weir, Echo, Weir};

/// Load workers: keep-alive HTTP ones, and HTTPS ones (the rest).
const HTTP_WORKERS: usize = 8;
const WORKERS: usize = 10;

/// Errors within this long after a backend restart are counted as caused by it.
const RESTART_WINDOW: Duration = Duration::from_secs(2);

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: soak, namespace: soak}
spec:
  gatewayClassName: weir
  listeners:
    - {name: http, port: 80, protocol: HTTP}
    - name: https
      port: 443
      protocol: HTTPS
      tls: {certificateRefs: [{name: soak-tls}]}
"#;

const STABLE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: stable, namespace: soak}
spec:
  parentRefs: [{name: soak}]
  hostnames: [stable.soak]
  rules:
    - backendRefs: [{name: stable, port: 80}]
"#;

/// The churned route: `/a` always, `/b{n}` on every other version.
fn churn_route(version: u64) -> String {
    let extra = if version.is_multiple_of(2) {
        format!(
            "    - matches: [{{path: {{type: PathPrefix, value: /b{version}}}}}]\n      backendRefs: [{{name: churn, port: 80}}]\n"
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: churn, namespace: soak, annotations: {{version: \"{version}\"}}}}\nspec:\n  parentRefs: [{{name: soak}}]\n  hostnames: [churn.soak]\n  rules:\n    - matches: [{{path: {{type: PathPrefix, value: /a}}}}]\n      backendRefs: [{{name: churn, port: 80}}]\n{extra}"
    )
}

/// Outcomes by kind (`route: what`), and the failures that must not happen.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    unexpected: Vec<String>,
}

struct Shared {
    tally: Mutex<Tally>,
    restarts: Mutex<Vec<Instant>>,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, route: &str, outcome: Result<u16, String>, at: Instant, expected: bool) {
        let kind = match &outcome {
            Ok(code) => format!("{route}: {code}"),
            Err(err) => format!("{route}: error {}", err.split(':').next().unwrap_or("")),
        };
        let mut tally = self.tally.lock().unwrap();
        *tally.counts.entry(kind.clone()).or_default() += 1;
        if outcome != Ok(200) && !expected {
            let near_restart = self.restarts.lock().unwrap().iter().any(|r| {
                at + Duration::from_millis(100) >= *r && at.duration_since(*r) <= RESTART_WINDOW
            });
            if near_restart && route.starts_with("stable") {
                *tally
                    .counts
                    .entry(format!("{route}: (at a backend restart)"))
                    .or_default() += 1;
            } else if tally.unexpected.len() < 50 {
                tally.unexpected.push(format!("{kind} ({outcome:?})"));
            } else {
                tally.unexpected.push(String::new());
            }
        }
    }
}

/// Weir's resident memory (KiB) and open descriptors.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

fn write(dir: &Path, name: &str, text: &str) {
    // In place, as editors and `helm template > file` do.
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("weir-soak-ca");
    // The stable Service's two endpoints: one port on two loopback addresses (one
    // EndpointSlice port), so a request whose endpoint is down is retried on the other.
    let port = weir_testkit::free_port();
    let mut stable: Vec<Echo> = (0..2u8)
        .map(|i| {
            echo_at(
                &format!("stable-{i}"),
                "soak",
                ([127, 0, 0, 2 + i], port).into(),
            )
        })
        .collect();
    let churn = [echo("churn-0", "soak"), echo("churn-1", "soak")];
    let stable_addrs: Vec<SocketAddr> = stable.iter().map(|e| e.addr).collect();
    write(d, "gateway.yaml", GATEWAY);
    write(
        d,
        "secret.yaml",
        &tls_secret_yaml("soak", "soak-tls", &ca.leaf(&["stable.soak"])),
    );
    write(d, "stable.yaml", STABLE);
    write(
        d,
        "stable-svc.yaml",
        &service_yaml("soak", "stable", 80, &stable_addrs),
    );
    write(d, "churn.yaml", &churn_route(1));
    write(
        d,
        "churn-svc.yaml",
        &service_yaml("soak", "churn", 80, &[churn[0].addr]),
    );
    let weir = weir(
        d,
        &[80, 443],
        &["--log-level", "warn", "--access-log", "off"],
    );
    weir_e2e::wait_ready(&weir).await;
    let pid = weir.proc.child.id();
    let http = weir.listener(80);
    let tls = weir.listener(443);
    wait_for_routes(http).await;

    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        restarts: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    // Warm up, then take the starting figures.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = usage(pid);
    let began = Instant::now();
    let mut loads = Vec::new();
    for i in 0..HTTP_WORKERS {
        loads.push(tokio::spawn(load_http(shared.clone(), http, i as u64)));
    }
    for _ in HTTP_WORKERS..WORKERS {
        loads.push(tokio::spawn(load_https(
            shared.clone(),
            tls,
            ca.cert_pem.clone(),
        )));
    }

    // The churn: a route rewrite every 300 ms, endpoints every 1 s, a certificate every
    // 5 s, a stable backend restart every 15 s (the first after 6 s).
    let deadline = began + Duration::from_secs(seconds);
    let mut version = 1;
    let mut tick = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tick += 1;
        version += 1;
        write(d, "churn.yaml", &churn_route(version));
        if tick.is_multiple_of(3) {
            let endpoint = churn[(tick / 3) as usize % 2].addr;
            write(
                d,
                "churn-svc.yaml",
                &service_yaml("soak", "churn", 80, &[endpoint]),
            );
        }
        if tick.is_multiple_of(17) {
            write(
                d,
                "secret.yaml",
                &tls_secret_yaml("soak", "soak-tls", &ca.leaf(&["stable.soak"])),
            );
        }
        if (tick + 30).is_multiple_of(50) {
            restart(&shared, &mut stable, (tick / 50) as usize % 2).await;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
    let elapsed = began.elapsed();
    // Let closed connections and idle upstreams go, then the ending figures.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = usage(pid);
    report(&shared, &weir, elapsed, start, end, version, tick);
}

async fn wait_for_routes(http: SocketAddr) {
    weir_testkit::assert_eventually("routes served", Duration::from_secs(15), || async {
        for host in ["stable.soak", "churn.soak"] {
            let path = if host == "churn.soak" { "/a" } else { "/" };
            match http1(http, &Req::get(host, path)).await {
                Ok(r) if r.status == 200 => {}
                other => return Err(format!("{host}: {other:?}")),
            }
        }
        Ok(())
    })
    .await;
}

/// Kill stable backend `which` and start it again on its port.
async fn restart(shared: &Shared, stable: &mut [Echo], which: usize) {
    let addr = stable[which].addr;
    shared.restarts.lock().unwrap().push(Instant::now());
    let _ = stable[which].proc.child.kill();
    let _ = stable[which].proc.child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stable[which] = echo_at(&format!("stable-{which}"), "soak", addr);
    shared.restarts.lock().unwrap().push(Instant::now());
}

/// Keep-alive HTTP/1.1 on the stable route and on the churned route's `/a` (must always
/// answer) and `/b*` (comes and goes: any status is fine).
async fn load_http(shared: Arc<Shared>, addr: SocketAddr, worker: u64) {
    let mut conn: Option<
        hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    > = None;
    let mut n = worker;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let (route, host, path, expected) = match n % 4 {
            0 | 1 => ("stable (http)", "stable.soak", "/".to_string(), false),
            2 => ("churn /a", "churn.soak", "/a/x".to_string(), false),
            _ => ("churn /b", "churn.soak", format!("/b{}", n % 7), true),
        };
        let at = Instant::now();
        let outcome = keep_alive(&mut conn, addr, host, &path).await;
        if outcome.is_err() {
            conn = None;
        }
        shared.record(route, outcome, at, expected);
    }
}

async fn keep_alive(
    conn: &mut Option<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<u16, String> {
    use http_body_util::BodyExt;
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (tx, task) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(task);
        *conn = Some(tx);
    }
    let tx = conn.as_mut().ok_or("no connection")?;
    tx.ready().await.map_err(|e| format!("ready: {e}"))?;
    let req = http::Request::get(path)
        .header("host", host)
        .body(http_body_util::Empty::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .map_err(|_| "timeout: 10 s".to_string())?
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(status)
}

/// HTTPS on the stable route, a new connection (and handshake) per request, while the
/// certificate is replaced.
async fn load_https(shared: Arc<Shared>, addr: SocketAddr, ca_pem: String) {
    while !shared.stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        let outcome = https(addr, "stable.soak", &ca_pem, &Req::get("stable.soak", "/"))
            .await
            .map(|r| r.status.as_u16());
        shared.record("stable (https)", outcome, at, false);
    }
}

fn report(
    shared: &Shared,
    weir: &Weir,
    elapsed: Duration,
    start: (u64, usize),
    end: (u64, usize),
    versions: u64,
    ticks: u64,
) {
    let tally = shared.tally.lock().unwrap();
    let total: u64 = tally
        .counts
        .iter()
        .filter(|(k, _)| !k.ends_with("(at a backend restart)"))
        .map(|(_, v)| v)
        .sum();
    let restarts = shared.restarts.lock().unwrap().len() / 2;
    println!(
        "weir soak: {:.0} s, {total} requests ({:.0}/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "churn: {versions} route versions, {} endpoint changes, {} certificates, {restarts} backend restarts",
        ticks / 3,
        ticks / 17 + 1
    );
    println!("outcomes:");
    for (kind, count) in &tally.counts {
        println!("  {kind:<40} {count}");
    }
    println!(
        "weir RSS: {} KiB at start, {} KiB at end; open descriptors: {} at start, {} at end",
        start.0, end.0, start.1, end.1
    );
    let mut failed = Vec::new();
    if !tally.unexpected.is_empty() {
        failed.push(format!(
            "{} requests failed on routes that must always answer: {:?}",
            tally.unexpected.len(),
            &tally.unexpected[..tally.unexpected.len().min(10)]
        ));
    }
    // Idle upstream connections stay pooled (60 s): at most one per load worker and endpoint.
    if end.1 > start.1 + WORKERS * 4 + 8 {
        failed.push(format!("descriptors grew from {} to {}", start.1, end.1));
    }
    // Caches and pools settle at some size; growth beyond this bound over a bounded run
    // means something is kept per request.
    if end.0 > start.0 * 2 + 64 * 1024 {
        failed.push(format!("RSS grew from {} KiB to {} KiB", start.0, end.0));
    }
    let log = weir.proc.stderr_text();
    let panics = log.lines().filter(|l| l.contains("panicked")).count();
    if panics > 0 {
        failed.push(format!("weir logged {panics} panics"));
    }
    if failed.is_empty() {
        println!("soak passed");
    } else {
        for f in &failed {
            println!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}
