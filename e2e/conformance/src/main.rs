//! `weir-conformance`: replays the Gateway API v1.5.1 conformance suite's manifests against
//! Weir in file mode and checks what each official test asserts.
//!
//! Per test: the base manifests (minus base Gateways the test does not use, see below) and
//! the test's manifests with the suite's rewrites, the Secrets the suite creates in code, and
//! EndpointSlices pointing at `weir-echo` processes (one per Deployment replica, started once
//! for the run) are written to a fresh directory; one `weir run --config-dir` serves it; the
//! steps transcribed into `tests.yaml` from the Go tests run against it.
//!
//! Why each Gateway gets its own loopback address: in file mode every Gateway without
//! `spec.addresses` shares the `--bind` address, so two Gateways listening on port 80 would
//! share one socket and a Host would reach only the oldest Gateway's catch-all listener. In a
//! cluster each Gateway has its own address, and the suite sends each request to the address
//! in the Gateway's status. So the harness writes `spec.addresses: [127.0.0.N]` into every
//! Gateway that requests none (Weir binds its listeners there) and sends traffic to the
//! address Weir reports in status. Gateways that request addresses themselves (the static
//! address tests) keep theirs. A fresh Weir per test gives each test the clean API server
//! state the suite's cleanup gives it.
//!
//! Before its steps, each test checks that our GatewayClasses report
//! `status.supportedFeatures` = `weir_translate::SUPPORTED_FEATURES` (what the suite reads to
//! choose its tests); after the run, that this list is exactly the set of features whose
//! replayed tests all pass ([`features`]).
//!
//! Usage: `weir-conformance [--only NAME[,NAME]] [--markdown PATH] [--tests FILE]`; the
//! markdown path may also come from `WEIR_CONFORMANCE_MARKDOWN`. Exits 1 when a test whose
//! features Weir claims fails, or when `SUPPORTED_FEATURES` differs from what passes. Needs
//! `cargo build --bins` first.

mod check;
mod cluster;
mod features;
mod profiles;
mod report;
mod spec;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use weir_testkit::client::{http1, Req};

use crate::report::{Outcome, Row};
use crate::spec::TestSpec;

struct Args {
    only: Vec<String>,
    markdown: Option<PathBuf>,
    tests: PathBuf,
    keep: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        only: Vec::new(),
        markdown: std::env::var_os("WEIR_CONFORMANCE_MARKDOWN").map(PathBuf::from),
        tests: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests.yaml"),
        keep: false,
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
            "-h" | "--help" => {
                println!("usage: weir-conformance [--only NAME[,NAME]] [--markdown PATH] [--tests FILE] [--keep]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

async fn wait_ready(weir: &weir_testkit::process::Weir) -> Result<(), String> {
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

async fn run_test(cluster: &cluster::Cluster, spec: &TestSpec, keep: bool) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("weir-conformance-{}-", spec.name))
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut objects = Vec::new();
    for m in &spec.manifests {
        objects.extend(
            cluster::read_manifests(&cluster::manifest_path(m)).map_err(|e| format!("{e:#}"))?,
        );
    }
    let test_dir = cluster
        .write_test_dir(dir.path(), &objects)
        .map_err(|e| format!("{e:#}"))?;
    let mut ports: Vec<u16> = test_dir
        .gateways()
        .values()
        .flatten()
        .map(|(p, _)| *p)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let weir = weir_testkit::process::weir(dir.path(), &ports, &[]);
    wait_ready(&weir).await?;
    check::classes_list_supported_features(&weir)
        .await
        .map_err(|e| format!("GatewayClass supportedFeatures: {e}"))?;
    let env = check::Env {
        weir: &weir,
        cluster,
        dir: std::cell::RefCell::new(test_dir),
        ca_pem: &cluster.ca_pem,
    };
    let mut result = Ok(());
    for (i, step) in spec.steps.iter().enumerate() {
        if let Err(e) = check::run_step(&env, step).await {
            result = Err(format!("step {}: {e}", i + 1));
            break;
        }
    }
    if keep {
        let kept = dir.keep();
        eprintln!("{}: config kept in {}", spec.name, kept.display());
    }
    result
}

fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    let specs = spec::load(&args.tests)?;
    for name in &args.only {
        anyhow::ensure!(
            specs.iter().any(|s| &s.name == name),
            "no test named {name} in {}",
            args.tests.display()
        );
    }
    let selected: Vec<&TestSpec> = specs
        .iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&s.name))
        .collect();
    let started = Instant::now();
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for spec in selected {
        let t0 = Instant::now();
        let outcome = match (&spec.skip, spec.suite_skip()) {
            (Some(why), _) => Outcome::Skip(why.clone()),
            (None, Some(why)) => Outcome::SuiteSkip(why),
            (None, None) if spec.steps.is_empty() => Outcome::Fail(format!(
                "the official suite runs this test now ({} is not claimed), but no steps are \
                 transcribed",
                spec.suite_skips_when_claimed.as_deref().unwrap_or("?")
            )),
            (None, None) => match rt.block_on(run_test(&cluster, spec, args.keep)) {
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
    let features = features::FeatureCheck::new(&rows, args.only.is_empty());
    print!("{}", report::text(&rows));
    print!("{}", features.text());
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.markdown {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, report::markdown(&rows, &features))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("markdown written to {}", path.display());
    }
    let claimed_failures = rows
        .iter()
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
