//! Editing manifests while Weir runs: changes apply without restart, broken input keeps the
//! last good routing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Duration;

use weir_e2e::{start, status_of, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};

const EXTRA_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: extra
  namespace: default
spec:
  parentRefs: [{name: weir}]
  hostnames: [extra.ingress.top]
  rules:
    - backendRefs: [{name: new-nginx, port: 80}]
"#;

async fn status_code(addr: std::net::SocketAddr, host: &str) -> Result<u16, String> {
    http1(addr, &Req::get(host, "/"))
        .await
        .map(|r| r.status.as_u16())
}

#[tokio::test]
async fn route_added_then_removed() {
    let q = start().await;
    let addr = q.weir.listener(80);
    assert_eq!(status_code(addr, "extra.ingress.top").await, Ok(404));

    // Written as editors do: a hidden temporary file renamed into place.
    let tmp = q.dir.path().join(".extra.yaml.swp");
    std::fs::write(&tmp, EXTRA_ROUTE).unwrap();
    std::fs::rename(&tmp, q.dir.path().join("extra.yaml")).unwrap();
    assert_eventually("new route served", WAIT, || async {
        match status_code(addr, "extra.ingress.top").await? {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
    let r = http1(addr, &Req::get("extra.ingress.top", "/"))
        .await
        .unwrap();
    assert!(r.json()["pod"].as_str().unwrap().starts_with("new-nginx"));

    std::fs::remove_file(q.dir.path().join("extra.yaml")).unwrap();
    assert_eventually("removed route gone", WAIT, || async {
        match status_code(addr, "extra.ingress.top").await? {
            404 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
    assert!(
        status_of(&q.weir, "HTTPRoute", "extra").await.is_none(),
        "removed route must leave /status"
    );
    // Routes that did not change kept working throughout.
    assert_eq!(status_code(addr, "demo.ingress.top").await, Ok(200));
}

#[tokio::test]
async fn broken_yaml_keeps_the_last_good_routing() {
    let q = start().await;
    let addr = q.weir.listener(80);
    let routes = q.dir.path().join("routes.yaml");
    let good = std::fs::read_to_string(&routes).unwrap();

    // Rewrite in place with a YAML syntax error.
    std::fs::write(&routes, format!("{good}\n---\nkind: [unclosed\n")).unwrap();
    let admin = q.weir.admin;
    assert_eventually("failed reload counted", WAIT, || async move {
        let m = http1(admin, &Req::get("admin", "/metrics")).await?.text();
        if m.lines()
            .any(|l| l.starts_with("weir_config_reloads_total{result=\"failed\"}"))
        {
            Ok(())
        } else {
            Err("no failed reload yet".to_string())
        }
    })
    .await;
    for host in [
        "demo.ingress.top",
        "filter.ingress.top",
        "weight.ingress.top",
    ] {
        assert_eq!(
            status_code(addr, host).await,
            Ok(200),
            "{host} must keep serving"
        );
    }
    let stderr = q.weir.proc.stderr_text();
    assert!(
        stderr.contains("routes.yaml"),
        "the error names the file:\n{stderr}"
    );

    // An edit that removes demo-route from the (fixed) file applies again.
    let without_demo: Vec<&str> = good
        .split("\n---\n")
        .filter(|d| !d.contains("name: demo-route"))
        .collect();
    std::fs::write(&routes, without_demo.join("\n---\n")).unwrap();
    assert_eventually("fixed file applies", WAIT, || async {
        match status_code(addr, "demo.ingress.top").await? {
            404 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
    assert_eq!(status_code(addr, "filter.ingress.top").await, Ok(200));
}

#[tokio::test]
async fn spec_change_bumps_generation_and_observed_generation() {
    let q = start().await;
    let routes = q.dir.path().join("routes.yaml");
    let text = std::fs::read_to_string(&routes).unwrap();
    std::fs::write(&routes, text.replace("value: foo", "value: bar")).unwrap();
    let weir = &q.weir;
    let route = assert_eventually("generation 2", WAIT, || async {
        let s = status_of(weir, "HTTPRoute", "demo-filter")
            .await
            .ok_or("no status")?;
        if s["metadata"]["generation"] == 2 {
            Ok(s)
        } else {
            Err(format!("generation {}", s["metadata"]["generation"]))
        }
    })
    .await;
    let accepted =
        weir_e2e::condition(&route["status"]["parents"][0]["conditions"], "Accepted").unwrap();
    assert_eq!(accepted["observedGeneration"], 2);
    let r = http1(q.weir.listener(80), &Req::get("filter.ingress.top", "/"))
        .await
        .unwrap();
    assert_eq!(r.json()["headers"]["My-Header"][0], "bar");
    tokio::time::sleep(Duration::from_millis(0)).await;
}

/// Requests to `hosts` in a loop until `stop`, on a few connections; returns how many were
/// made and every answer that was not 200.
fn load(
    addr: std::net::SocketAddr,
    hosts: &'static [&'static str],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut count, mut failures) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for host in hosts {
                count += 1;
                match status_code(addr, host).await {
                    Ok(200) => {}
                    other => failures.push(format!("{host}: {other:?}")),
                }
            }
        }
        (count, failures)
    })
}

const HOSTS: &[&str] = &[
    "demo.ingress.top",
    "filter.ingress.top",
    "weight.ingress.top",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_rewrite_in_place_drops_no_request() {
    use std::io::Write;

    let q = start().await;
    let addr = q.weir.listener(80);
    let routes = q.dir.path().join("routes.yaml");
    let good = std::fs::read_to_string(&routes).unwrap();
    // The new version changes demo-filter; its first part (demo-route alone) is valid YAML,
    // so a scan in the middle of the write would serve demo-route only.
    let new = good.replace("value: foo", "value: bar");
    let cut = new.find("\n---\n").unwrap() + 5;

    let phase = load_phase(addr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // In place, as `cat new > routes.yaml` does: truncate, write half, pause far longer than
    // the debounce (50 ms) and its burst cap (500 ms), write the rest, close.
    let path = routes.clone();
    let first = new[..cut].to_string();
    let rest = new[cut..].to_string();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(first.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(1_200));
        file.write_all(rest.as_bytes()).unwrap();
    })
    .await
    .unwrap();
    assert_eventually("the new version applied", WAIT, || async {
        let r = http1(addr, &Req::get("filter.ingress.top", "/")).await?;
        if r.status != 200 {
            return Err(format!("status {}", r.status));
        }
        match r.json()["headers"]["My-Header"][0].as_str() {
            Some("bar") => Ok(()),
            other => Err(format!("my-header {other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    phase.finish("the slow rewrite").await;

    // Emptied (truncated and left so): the routes it held keep serving, the error is reported.
    let phase = load_phase(addr);
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::File::create(&routes).unwrap();
    let weir = &q.weir;
    assert_eventually("the empty file reported", WAIT, || async {
        let stderr = weir.proc.stderr_text();
        if stderr.contains("routes.yaml") && stderr.contains("the file is empty") {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.finish("the emptied file").await;
    // The served routes carry the problem in their status.
    let route = status_of(&q.weir, "HTTPRoute", "demo-filter")
        .await
        .unwrap();
    assert!(route.to_string().contains("the file is empty"), "{route:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_config_directory_keeps_the_last_good_set() {
    let q = start().await;
    let addr = q.weir.listener(80);
    let root = q.dir.path().to_path_buf();
    let phase = load_phase(addr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // `rm -r` of a larger tree, or on a slower disk: one file after another, then the
    // directories. Each step alone would drop a part of the routing.
    tokio::task::spawn_blocking(move || {
        for file in [
            "routes.yaml",
            "backends.yaml",
            "policy.yaml",
            "tls/secret.yaml",
            "gateway.yaml",
        ] {
            std::fs::remove_file(root.join(file)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_dir(root.join("tls")).unwrap();
        std::fs::remove_dir(&root).unwrap();
    })
    .await
    .unwrap();
    let weir = &q.weir;
    assert_eventually("the missing directory reported", WAIT, || async {
        if weir.proc.stderr_text().contains("does not exist") {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.finish("deleting the directory").await;
}

/// A "billion laughs" document of about 40 KB: a list of 5,000 strings, then three levels
/// of 200 aliases each to the level below (4 × 10^10 strings expanded). Few enough alias
/// jumps for the YAML parser's own repetition limit to let it through.
fn alias_bomb() -> String {
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n");
    text.push_str(&format!("  l0: &l0 [{}]\n", vec!["lol"; 5_000].join(",")));
    for level in 1..=3 {
        let refs = vec![format!("*l{}", level - 1); 200].join(",");
        text.push_str(&format!("  l{level}: &l{level} [{refs}]\n"));
    }
    text
}

/// Peak resident memory of a process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_bomb_is_refused_with_bounded_memory() {
    // Should the bound not hold, weir fails an allocation at 3 GiB of address space rather
    // than take the machine's memory.
    let mut q = weir_e2e::start_with_limit(Some(3 * 1024 * 1024)).await;
    let addr = q.weir.listener(80);
    let pid = q.weir.proc.child.id();
    let before = peak_rss_kib(pid);
    let routes = q.dir.path().join("routes.yaml");
    let good = std::fs::read_to_string(&routes).unwrap();
    let bomb = alias_bomb();
    assert!(bomb.len() < 50_000, "{} bytes", bomb.len());

    let phase = load_phase(addr);
    let written = std::time::Instant::now();
    std::fs::write(&routes, format!("{good}\n---\n{bomb}")).unwrap();
    let weir = &q.weir;
    assert_eventually("the bomb refused", WAIT, || async {
        let stderr = weir.proc.stderr_text();
        assert!(
            !stderr.contains("memory allocation of"),
            "weir ran out of memory"
        );
        if stderr.contains("refused: YAML aliases expand") {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    let took = written.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    phase.finish("the alias bomb").await;
    assert!(
        q.weir.proc.child.try_wait().unwrap().is_none(),
        "weir exited:\n{}",
        q.weir.proc.stderr_text()
    );
    let grew = peak_rss_kib(pid).saturating_sub(before);
    eprintln!("alias bomb: refused after {took:?}; peak RSS grew by {grew} KiB");
    assert!(took < Duration::from_secs(3), "refused only after {took:?}");
    assert!(grew < 64 * 1024, "peak RSS grew by {grew} KiB");
}

/// Three clients requesting every quickstart host until finished.
struct LoadPhase {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    loads: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

fn load_phase(addr: std::net::SocketAddr) -> LoadPhase {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads = (0..3).map(|_| load(addr, HOSTS, stop.clone())).collect();
    LoadPhase { stop, loads }
}

impl LoadPhase {
    /// Stop, and assert that every request got 200.
    async fn finish(self, what: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut count, mut failures) = (0, Vec::new());
        for l in self.loads {
            let (c, f) = l.await.unwrap();
            count += c;
            failures.extend(f);
        }
        assert!(count > 30, "{what}: only {count} requests");
        assert!(
            failures.is_empty(),
            "{what}: {} of {count} requests failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
    }
}
