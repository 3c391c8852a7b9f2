//! `weir-conformance`: replays the Gateway API v1.6.1 conformance suite's manifests against
//! Weir in file mode and checks what each official test asserts.
//!
//! As the Go suite runs against one installation: ONE `weir run --config-dir DIR
//! --gateway-address-pool 127.0.1.0/24` serves the whole replay. At start DIR receives our
//! GatewayClass, every base object (all four base Gateways), the Secrets and ConfigMaps the
//! suite creates in code, and EndpointSlices pointing at `weir-echo` processes (one per
//! Deployment replica, started once for the run). Then per test: its manifests (with the
//! suite's rewrites, Deployments aside, plus the EndpointSlices of its Services) are written
//! into one file; the harness waits until Weir's store holds what DIR holds; the steps
//! transcribed into `tests.yaml` run; the file is removed (and any base object a step
//! patched restored), and the harness waits, at most 15 s, until no object of the test is in
//! `/status`, `/status` is back to the state it had with the base alone, and the test's
//! Gateways' sockets are closed — else the test fails, saying which objects stayed, what
//! differs or which socket still answers.
//!
//! Addresses: Weir gives each Gateway without `spec.addresses` its own address from the pool
//! (as a cluster gives each Gateway its own Service) and reports it in `status.addresses`;
//! every request goes to that reported address, as the suite sends it. The harness never
//! writes addresses into Gateways. The one liberty: listeners are served on their port plus
//! the `--listener-port-offset` the harness started Weir with (one offset for the whole run,
//! on ports no socket of the host listens on), so the replay needs no privileged ports and
//! can run beside other copies of itself; requests still carry the configured port where
//! the suite puts one (Host header, redirects).
//!
//! Before its steps, each test checks that our GatewayClasses report
//! `status.supportedFeatures` = `weir_translate::SUPPORTED_FEATURES` (what the suite reads to
//! choose its tests); after the run, that this list is exactly the set of features whose
//! replayed tests all pass ([`features`]).
//!
//! After it, the Gateway API Inference Extension v1.6.0 suite is replayed against a second
//! Weir ([`inference`]); its tests are rows of the same report and feature check.
//!
//! Usage: `weir-conformance [--only NAME[,NAME]] [--inference-only] [--markdown PATH] [--tests
//! FILE] [--keep]`; the markdown path may also come from `WEIR_CONFORMANCE_MARKDOWN`. Exits 1 when a test whose
//! features Weir claims fails, or when `SUPPORTED_FEATURES` differs from what passes. Needs
//! `cargo build --bins` first.

mod check;
mod cluster;
mod features;
mod inference;
mod profiles;
mod report;
mod spec;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::Weir;

use crate::cluster::ObjectId;

use crate::report::{Outcome, Row};
use crate::spec::TestSpec;

struct Args {
    only: Vec<String>,
    markdown: Option<PathBuf>,
    tests: PathBuf,
    keep: bool,
    /// Only the Inference Extension suite (`--inference-only`).
    inference_only: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        only: Vec::new(),
        markdown: std::env::var_os("WEIR_CONFORMANCE_MARKDOWN").map(PathBuf::from),
        tests: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests.yaml"),
        keep: false,
        inference_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => args.only.extend(
                it.next()
                    .context("--only needs a test name")?
                    .split(',')
                    .map(str::to_string),
            ),
            "--markdown" => {
                args.markdown = Some(it.next().context("--markdown needs a path")?.into())
            }
            "--tests" => args.tests = it.next().context("--tests needs a path")?.into(),
            "--keep" => args.keep = true,
            "--inference-only" => args.inference_only = true,
            "-h" | "--help" => {
                println!("usage: weir-conformance [--only NAME[,NAME]] [--inference-only] [--markdown PATH] [--tests FILE] [--keep]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// What the whole replay shares: the backends, the one Weir and the config directory it
/// serves, and the state `/status` showed with only the base manifests applied.
struct Suite<'a> {
    cluster: &'a cluster::Cluster,
    weir: &'a Weir,
    config: &'a RefCell<cluster::ConfigDir>,
    /// `/status` with the base manifests alone (see [`normalized_status`]), the state every
    /// test's cleanup must return to.
    baseline: RefCell<Vec<Value>>,
    keep: bool,
    /// Time spent waiting for Weir to take each test's manifests and to drop them.
    waited: std::cell::Cell<Duration>,
}

/// How long Weir may take to show a test's objects after their file is written, and to drop
/// them after it is removed.
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often to look meanwhile: this wait happens twice per test, so it is short.
const POLL: Duration = Duration::from_millis(5);

async fn wait_ready(weir: &Weir) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http1(weir.admin, &Req::get("admin", "/readyz")).await {
            Ok(r) if r.status == 200 => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(25)).await,
            other => {
                return Err(format!(
                    "weir not ready: {:?}; stderr:\n{}",
                    other.map(|r| r.status),
                    weir.proc.stderr_text()
                ))
            }
        }
    }
}

/// Whether the one Weir still answers on its admin address; if not, why (with the end of
/// its log).
async fn alive(weir: &Weir) -> Result<(), String> {
    let req = Req::get("admin", "/healthz");
    let probe = http1(weir.admin, &req);
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(r)) if r.status == 200 => Ok(()),
        other => {
            let why = match other {
                Ok(Ok(r)) => format!("status {}", r.status),
                Ok(Err(e)) => e,
                Err(_) => "no answer within 5 s".to_string(),
            };
            let log = weir.proc.stderr_text();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "not run: Weir no longer answers /healthz ({why}); its log ends:\n{}",
                tail.join("\n")
            ))
        }
    }
}

/// Weir's `weir_store_objects` gauge: the objects of the store its current status and
/// snapshot were computed from (set right after the status is swapped in).
async fn store_objects(weir: &Weir) -> Result<usize, String> {
    let reply = http1(weir.admin, &Req::get("admin", "/metrics")).await?;
    let text = String::from_utf8_lossy(&reply.body);
    text.lines()
        .find_map(|l| l.strip_prefix("weir_store_objects "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as usize)
        .ok_or_else(|| "no weir_store_objects in /metrics".to_string())
}

/// Until Weir's store holds exactly `want` objects (every file written or removed has been
/// read, and the status served is computed from that store).
async fn store_holds(weir: &Weir, want: usize, what: &str) -> Result<(), String> {
    check::eventually_every(APPLY_TIMEOUT, POLL, || async {
        let have = store_objects(weir).await?;
        if have != want {
            return Err(format!(
                "{what}: Weir's store holds {have} objects, the config directory {want}"
            ));
        }
        Ok(())
    })
    .await
}

/// `/status` items without the fields that legitimately move while nothing changes
/// (`lastTransitionTime`), sorted: what "the same state" means between tests.
async fn normalized_status(weir: &Weir) -> Result<Vec<Value>, String> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("lastTransitionTime");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let reply = http1(weir.admin, &Req::get("admin", "/status")).await?;
    let mut doc: Value =
        serde_json::from_slice(&reply.body).map_err(|e| format!("/status: {e}"))?;
    let mut items = match doc["items"].take() {
        Value::Array(items) => items,
        other => return Err(format!("/status: items is {other}")),
    };
    items.iter_mut().for_each(strip);
    items.sort_by_key(|i| {
        (
            i["kind"].as_str().map(str::to_string),
            i["metadata"]["namespace"].as_str().map(str::to_string),
            i["metadata"]["name"].as_str().map(str::to_string),
        )
    });
    Ok(items)
}

/// `/status` once two reads 200 ms apart agree (the base state to come back to).
async fn settled_status(weir: &Weir) -> Result<Vec<Value>, String> {
    let mut last = normalized_status(weir).await?;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = normalized_status(weir).await?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Err("/status keeps changing with only the base manifests applied".into())
}

fn status_id(item: &Value) -> ObjectId {
    (
        item["kind"].as_str().unwrap_or_default().to_string(),
        item["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// What differs between two normalized `/status` lists, in a few lines.
fn status_diff(want: &[Value], got: &[Value]) -> String {
    let mut out = Vec::new();
    for w in want {
        match got.iter().find(|g| status_id(g) == status_id(w)) {
            None => out.push(format!("{:?} is missing", status_id(w))),
            Some(g) if g != w => out.push(format!(
                "{:?} differs: want {}, got {}",
                status_id(w),
                w["status"],
                g["status"]
            )),
            Some(_) => {}
        }
    }
    for g in got {
        if !want.iter().any(|w| status_id(w) == status_id(g)) {
            out.push(format!("{:?} is still there", status_id(g)));
        }
    }
    out.join("; ")
}

/// The suite's cleanup: delete the test's objects, put back base objects it patched, and
/// wait (bounded) until Weir has dropped every object of the test from `/status` and shows
/// the base state again.
/// The sockets of the test's own Gateways: each IPAddress of this host in their
/// `status.addresses` that no base Gateway reports, with each listener port (plus the
/// offset). Once the Gateways are deleted nothing may answer there.
async fn test_gateway_sockets(suite: &Suite<'_>) -> Result<Vec<(String, SocketAddr)>, String> {
    let addresses = |item: &Value| -> Vec<std::net::IpAddr> {
        item["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == "IPAddress")
            .filter_map(|a| a["value"].as_str()?.parse().ok())
            .collect()
    };
    let base: BTreeSet<std::net::IpAddr> = suite
        .baseline
        .borrow()
        .iter()
        .filter(|i| i["kind"] == "Gateway")
        .flat_map(addresses)
        .collect();
    let ours: BTreeSet<ObjectId> = suite
        .config
        .borrow()
        .test_objects()
        .into_iter()
        .filter(|(kind, _, _)| kind == "Gateway")
        .collect();
    let listeners = suite.config.borrow().gateways();
    let mut out = Vec::new();
    for item in normalized_status(suite.weir).await? {
        let id = status_id(&item);
        if !ours.contains(&id) {
            continue;
        }
        let name = format!("{}/{}", id.1, id.2);
        let ports: BTreeSet<u16> = listeners
            .get(&name)
            .into_iter()
            .flatten()
            .map(|(p, _)| *p)
            .collect();
        for ip in addresses(&item) {
            if !ip.is_loopback() || base.contains(&ip) {
                continue;
            }
            for port in &ports {
                out.push((
                    name.clone(),
                    SocketAddr::new(ip, suite.weir.listener(*port).port()),
                ));
            }
        }
    }
    Ok(out)
}

async fn clean_up(suite: &Suite<'_>) -> Result<(), String> {
    let gone = suite.config.borrow().test_objects();
    let sockets = test_gateway_sockets(suite).await?;
    let restored = suite
        .config
        .borrow_mut()
        .remove_test()
        .map_err(|e| format!("{e:#}"))?;
    let want = suite.config.borrow().store_objects();
    check::eventually_every(APPLY_TIMEOUT, POLL, || async {
        let items = normalized_status(suite.weir).await?;
        let left: Vec<ObjectId> = items
            .iter()
            .map(status_id)
            .filter(|id| gone.contains(id))
            .collect();
        if !left.is_empty() {
            return Err(format!(
                "objects of this test still in /status after their manifests were deleted: \
                 {left:?}"
            ));
        }
        let have = store_objects(suite.weir).await?;
        if have != want {
            return Err(format!(
                "after deleting the test's manifests Weir's store holds {have} objects, the \
                 config directory {want} (kinds /status does not list, e.g. Services, are left)"
            ));
        }
        if !restored.is_empty() {
            // Checked below, once the restored version is served.
            return Ok(());
        }
        let baseline = suite.baseline.borrow();
        if items != *baseline {
            return Err(format!(
                "/status does not return to the base state after the test: {}",
                status_diff(&baseline, &items)
            ));
        }
        Ok(())
    })
    .await?;
    check::eventually_every(APPLY_TIMEOUT, POLL, || async {
        for (gateway, addr) in &sockets {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                return Err(format!(
                    "{addr} (a listener of the deleted Gateway {gateway}) still accepts \
                     connections"
                ));
            }
        }
        Ok(())
    })
    .await?;
    if !restored.is_empty() {
        // A base object was patched and put back (no replayed test does this today): its
        // generation moved on, so the state to come back to from now on is the settled one.
        eprintln!("  restored base objects the test patched: {restored:?}");
        *suite.baseline.borrow_mut() = settled_status(suite.weir).await?;
    }
    Ok(())
}

async fn run_test(suite: &Suite<'_>, spec: &TestSpec) -> Result<(), String> {
    let mut objects = Vec::new();
    for m in &spec.manifests {
        objects.extend(
            cluster::read_manifests(&cluster::manifest_path(m)).map_err(|e| format!("{e:#}"))?,
        );
    }
    suite
        .cluster
        .apply_test(&mut suite.config.borrow_mut(), &objects)
        .map_err(|e| format!("{e:#}"))?;
    let mut result = run_steps(suite, spec).await;
    if suite.keep {
        if let Err(e) = suite.config.borrow().keep_test(&spec.name) {
            eprintln!("{}: could not keep its manifests: {e:#}", spec.name);
        }
    }
    let t0 = Instant::now();
    let cleaned = clean_up(suite).await;
    suite.waited.set(suite.waited.get() + t0.elapsed());
    if let Err(e) = cleaned {
        let e = format!("cleanup: {e}");
        result = match result {
            Ok(()) => Err(e),
            Err(first) => Err(format!("{first}; {e}")),
        };
    }
    result
}

async fn run_steps(suite: &Suite<'_>, spec: &TestSpec) -> Result<(), String> {
    let want = suite.config.borrow().store_objects();
    let t0 = Instant::now();
    let applied = store_holds(suite.weir, want, "applying the test's manifests").await;
    suite.waited.set(suite.waited.get() + t0.elapsed());
    applied?;
    check::classes_list_supported_features(suite.weir)
        .await
        .map_err(|e| format!("GatewayClass supportedFeatures: {e}"))?;
    let env = check::Env {
        weir: suite.weir,
        cluster: suite.cluster,
        dir: suite.config,
        ca_pem: &suite.cluster.ca_pem,
    };
    for (i, step) in spec.steps.iter().enumerate() {
        check::run_step(&env, step)
            .await
            .map_err(|e| format!("step {}: {e}", i + 1))?;
    }
    Ok(())
}

/// Every listener port of a Gateway or ListenerSet in `v` (objects or patches).
fn listener_ports(v: &Value, out: &mut BTreeSet<u16>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(listeners)) = map.get("listeners") {
                out.extend(
                    listeners
                        .iter()
                        .filter_map(|l| u16::try_from(l["port"].as_u64()?).ok()),
                );
            }
            map.values().for_each(|x| listener_ports(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| listener_ports(x, out)),
        _ => {}
    }
}

/// An offset that puts every listener port of the replay on a port no socket of this host
/// listens on, at any address (a wildcard bind conflicts with a listening socket on any
/// address, so Gateways' own addresses are covered too).
fn free_offset(ports: &BTreeSet<u16>) -> anyhow::Result<u16> {
    let max = ports.iter().copied().max().unwrap_or(0);
    let seed = u32::from(weir_testkit::free_port()) ^ std::process::id();
    for i in 0..400u32 {
        let candidate = 20000 + ((seed.wrapping_add(i.wrapping_mul(7919))) % 9000) as u16;
        if max.checked_add(candidate).is_none() {
            continue;
        }
        if ports.iter().all(|p| {
            // UDP listeners bind UDP sockets: their ports must be free for UDP too.
            std::net::TcpListener::bind(("0.0.0.0", p + candidate)).is_ok()
                && std::net::UdpSocket::bind(("0.0.0.0", p + candidate)).is_ok()
        }) {
            return Ok(candidate);
        }
    }
    anyhow::bail!("no listener port offset leaves all of {ports:?} free")
}

/// The one `weir run --config-dir` of the replay.
fn start_weir(dir: &Path, ports: &BTreeSet<u16>) -> anyhow::Result<Weir> {
    let offset = free_offset(ports)?;
    let admin = SocketAddr::from(([127, 0, 0, 1], weir_testkit::free_port()));
    let mut cmd = Command::new(weir_testkit::process::bin("weir"));
    cmd.arg("run")
        .arg("--config-dir")
        .arg(dir)
        .args(["--bind", "127.0.0.1"])
        .args(["--listener-port-offset", &offset.to_string()])
        .args(["--gateway-address-pool", cluster::GATEWAY_ADDRESS_POOL])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--log-level", "info"]);
    Ok(Weir {
        proc: weir_testkit::process::Proc::spawn(cmd),
        admin,
        offset,
        dir: dir.to_path_buf(),
    })
}

fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    let specs = spec::load(&args.tests)?;
    let inference_specs = inference::specs();
    for name in &args.only {
        anyhow::ensure!(
            specs
                .iter()
                .chain(&inference_specs)
                .any(|s| &s.name == name),
            "no test named {name} in {} or the Inference Extension suite",
            args.tests.display()
        );
    }
    let selected: Vec<&TestSpec> = specs
        .iter()
        .filter(|_| !args.inference_only)
        .filter(|s| args.only.is_empty() || args.only.contains(&s.name))
        .collect();
    let selected_inference: Vec<&TestSpec> = inference_specs
        .iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&s.name))
        .collect();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut rows, waited) = if selected.is_empty() {
        (Vec::new(), Duration::ZERO)
    } else {
        replay_gateway_api(&args, selected, &rt, started)?
    };
    // The Inference Extension suite, against its own Weir (its base holds Gateways and
    // namespaces of its own).
    let mut inference_rows = Vec::new();
    if !selected_inference.is_empty() {
        let results = rt.block_on(inference::replay(&selected_inference));
        for (spec, (result, seconds)) in selected_inference.iter().zip(results) {
            inference_rows.push(Row {
                spec,
                outcome: match result {
                    Ok(()) => Outcome::Pass,
                    Err(e) => Outcome::Fail(e),
                },
                seconds,
            });
        }
    }
    let all: Vec<Row<'_>> = rows.drain(..).chain(inference_rows).collect();
    let features = features::FeatureCheck::new(&all, args.only.is_empty() && !args.inference_only);
    let (rows, inference_rows): (Vec<Row<'_>>, Vec<Row<'_>>) = all
        .into_iter()
        .partition(|r| !r.spec.features.iter().any(|f| f == inference::FEATURE));
    if !rows.is_empty() {
        print!("{}", report::text(&rows));
    }
    if !inference_rows.is_empty() {
        println!("\nGateway API Inference Extension {}:", inference::TAG);
        print!("{}", report::text(&inference_rows));
    }
    print!("{}", features.text());
    println!(
        "total {:.1}s (of which {:.1}s waiting for Weir to take and drop the tests' manifests)",
        started.elapsed().as_secs_f64(),
        waited.as_secs_f64()
    );
    if let Some(path) = &args.markdown {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, report::markdown(&rows, &inference_rows, &features))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("markdown written to {}", path.display());
    }
    let claimed_failures = rows
        .iter()
        .chain(&inference_rows)
        .filter(|r| r.spec.claimed && matches!(r.outcome, Outcome::Fail(_)))
        .count();
    if claimed_failures > 0 {
        eprintln!("weir-conformance: {claimed_failures} test(s) whose features Weir claims failed");
    }
    if let Some(why) = features.failure() {
        eprintln!("weir-conformance: {why}");
    }
    Ok(claimed_failures == 0 && features.ok())
}

/// The Gateway API suite's replay of `selected`: its rows, and the time spent waiting for
/// Weir to take and drop the tests' manifests.
fn replay_gateway_api<'a>(
    args: &Args,
    selected: Vec<&'a TestSpec>,
    rt: &tokio::runtime::Runtime,
    started: Instant,
) -> anyhow::Result<(Vec<Row<'a>>, Duration)> {
    // The Deployments of the selected tests' own manifests (e.g. a backend that checks
    // client certificates) run next to the base ones.
    let mut test_deployments = Vec::new();
    for spec in selected.iter().filter(|s| s.skip.is_none()) {
        for m in &spec.manifests {
            test_deployments.extend(
                cluster::read_manifests(&cluster::manifest_path(m))?
                    .into_iter()
                    .filter(|o| cluster::kind(o) == "Deployment"),
            );
        }
    }
    let cluster = cluster::Cluster::start(&test_deployments)?;
    eprintln!("backends up in {:.1}s", started.elapsed().as_secs_f64());
    let dir = tempfile::Builder::new()
        .prefix("weir-conformance-")
        .tempdir()?;
    let config = RefCell::new(cluster.write_base(dir.path())?);
    // One offset for the whole replay: every listener port of the base, of each test and of
    // each patch step.
    let mut ports = BTreeSet::new();
    listener_ports(&Value::Array(cluster.base_objects().to_vec()), &mut ports);
    for spec in selected.iter().filter(|s| s.skip.is_none()) {
        for m in &spec.manifests {
            listener_ports(
                &Value::Array(cluster::read_manifests(&cluster::manifest_path(m))?),
                &mut ports,
            );
        }
        for step in &spec.steps {
            if let spec::Step::Patch { merge, .. } = step {
                listener_ports(merge, &mut ports);
            }
        }
    }
    let weir = start_weir(dir.path(), &ports)?;
    let baseline = rt
        .block_on(async {
            wait_ready(&weir).await?;
            let want = config.borrow().store_objects();
            store_holds(&weir, want, "applying the base manifests").await?;
            check::classes_list_supported_features(&weir)
                .await
                .map_err(|e| format!("GatewayClass supportedFeatures: {e}"))?;
            settled_status(&weir).await
        })
        .map_err(|e| anyhow::anyhow!("the base manifests: {e}"))?;
    eprintln!(
        "weir up with the base manifests in {:.1}s (listener port offset {})",
        started.elapsed().as_secs_f64(),
        weir.offset
    );
    let suite = Suite {
        cluster: &cluster,
        weir: &weir,
        config: &config,
        baseline: RefCell::new(baseline),
        keep: args.keep,
        waited: std::cell::Cell::new(Duration::ZERO),
    };
    let mut rows = Vec::new();
    // Set once Weir stops answering: the remaining tests fail at once with why, instead of
    // each waiting out its timeouts.
    let mut gone: Option<String> = None;
    for spec in selected {
        let t0 = Instant::now();
        if gone.is_none() && spec.skip.is_none() && spec.suite_skip().is_none() {
            gone = rt.block_on(alive(&weir)).err();
        }
        let outcome = match (&spec.skip, spec.suite_skip()) {
            (Some(why), _) => Outcome::Skip(why.clone()),
            (None, Some(why)) => Outcome::SuiteSkip(why),
            (None, None) if spec.steps.is_empty() => Outcome::Fail(format!(
                "the official suite runs this test now ({} is not claimed), but no steps are \
                 transcribed",
                spec.suite_skips_when_claimed.as_deref().unwrap_or("?")
            )),
            (None, None) if gone.is_some() => Outcome::Fail(gone.clone().unwrap_or_default()),
            (None, None) => match rt.block_on(run_test(&suite, spec)) {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(e),
            },
        };
        eprintln!(
            "{:<55} {} ({:.1}s)",
            spec.name,
            outcome.label(),
            t0.elapsed().as_secs_f64()
        );
        rows.push(Row {
            spec,
            outcome,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    if args.keep {
        let kept = dir.keep();
        eprintln!(
            "config kept in {} (each test's manifests in .kept/)",
            kept.display()
        );
    }
    Ok((rows, suite.waited.get()))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("weir-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports come from Gateways and ListenerSets at any depth, and from patches.
    #[test]
    fn listener_ports_of_objects_and_patches() {
        let mut ports = BTreeSet::new();
        listener_ports(
            &serde_json::json!([
                {"kind": "Gateway", "spec": {"listeners": [{"port": 80}, {"port": 443}]}},
                {"kind": "Service", "spec": {"ports": [{"port": 8080}]}},
            ]),
            &mut ports,
        );
        listener_ports(
            &serde_json::json!({"spec": {"listeners": [{"port": 8443}]}}),
            &mut ports,
        );
        assert_eq!(ports, BTreeSet::from([80, 443, 8443]));
    }

    #[test]
    fn status_diff_names_what_stays_differs_or_is_missing() {
        let item = |name: &str, attached: i64| {
            serde_json::json!({
                "kind": "Gateway",
                "metadata": {"namespace": "ns", "name": name},
                "status": {"listeners": [{"attachedRoutes": attached}]},
            })
        };
        let diff = status_diff(&[item("a", 0), item("b", 0)], &[item("a", 1), item("c", 0)]);
        assert!(diff.contains("\"a\") differs"), "{diff}");
        assert!(diff.contains("\"b\") is missing"), "{diff}");
        assert!(diff.contains("\"c\") is still there"), "{diff}");
    }
}
