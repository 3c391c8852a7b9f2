//! `weir check DIR`: read a directory once, print every object's computed status conditions
//! (as `nginx -t` prints its verdict), and exit non-zero on parse errors or when one of our
//! Gateways or routes is not accepted or has unresolved references.

use std::io::Write;
use std::process::ExitCode;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_translate::{translate, Addressing, Input};

use crate::cli::CheckArgs;

pub fn run(args: &CheckArgs, out: &mut dyn Write) -> ExitCode {
    match check(args, out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("weir check: {err}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether everything is fine.
fn check(args: &CheckArgs, out: &mut dyn Write) -> std::io::Result<bool> {
    if !args.dir.is_dir() {
        writeln!(out, "error: {}: not a directory", args.dir.display())?;
        return Ok(false);
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let report = weir_sources::load_dir(&args.dir, now.clone());
    for err in &report.errors {
        writeln!(out, "error: {err}")?;
    }
    let addressing = match &args.gateway_address_pool {
        Some(pool) => Addressing::Pool(pool.clone()),
        None => Addressing::Shared,
    };
    let output = translate(&Input {
        store: &report.store,
        controller_name: &args.gateway_class_controller,
        now,
        gateway_addresses: &[],
        address_usable: &crate::control::address_of_this_host,
        addressing: &addressing,
        rate_limit_redis: args
            .rate_limit_redis
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty()),
    });
    let mut problems = 0usize;
    for status in &output.statuses {
        writeln!(out, "{} {}", status.kind, status.key)?;
        for (scope, kind, state, reason, message) in status.condition_lines() {
            let scope = if scope.is_empty() {
                String::new()
            } else {
                format!("{scope}: ")
            };
            writeln!(out, "  {scope}{kind}={state} ({reason}) {message}")?;
        }
        for problem in status.problems() {
            problems += 1;
            writeln!(out, "  problem: {problem}")?;
        }
    }
    let ok = report.errors.is_empty() && problems == 0;
    writeln!(
        out,
        "{}: {} objects with status, {} parse errors, {} problems",
        if ok { "ok" } else { "failed" },
        output.statuses.len(),
        report.errors.len(),
        problems
    )?;
    Ok(ok)
}
