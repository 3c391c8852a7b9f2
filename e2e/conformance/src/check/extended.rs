//! Steps of the GATEWAY-HTTP extended tests that the core steps do not cover (backend
//! header modifiers per backendRef, …), kept apart from check.rs so merges stay easy.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{consistent, join_all, prepare, send, Env, REQUEST_TIMEOUT};
use crate::cluster::PodLog;
use crate::spec::{split_name, CorsCase, HttpCase};

/// The line the echo server logs for each request it serves (mirror.go's regexp, which
/// escapes only the path's leading '/').
fn mirror_line(path: &str) -> String {
    format!("Echoing back request made to {path} to client")
}

fn logs_of(env: &Env<'_>, deployment: &str) -> Result<Vec<PodLog>, String> {
    let (ns, name) = split_name(deployment);
    let logs = env.cluster.pod_logs(&ns, &name);
    if logs.is_empty() {
        return Err(format!("Deployment {ns}/{name} has no pods"));
    }
    Ok(logs)
}

/// `ExpectMirroredRequest`: after a consistent answer, each mirror backend has logged the
/// request's path (looked for from just before the request, polled every second).
pub(super) async fn mirrored(
    env: &Env<'_>,
    request: &HttpCase,
    to: &[String],
) -> Result<(), String> {
    let logs = to
        .iter()
        .map(|d| logs_of(env, d).map(|l| (d, l)))
        .collect::<Result<Vec<_>, _>>()?;
    let marks: Vec<Vec<usize>> = logs
        .iter()
        .map(|(_, pods)| pods.iter().map(PodLog::len).collect())
        .collect();
    consistent(env, request).await?;
    let needle = mirror_line(&request.path);
    for ((deployment, pods), marks) in logs.iter().zip(&marks) {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let seen: usize = pods
                .iter()
                .zip(marks)
                .map(|(p, m)| p.count_since(*m, &needle))
                .sum();
            if seen > 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "couldn't find mirrored request {:?} in {deployment} logs",
                    request.path
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// httproute-request-percentage-mirror.go (v1.6.1): 500 requests per try (10 at a time),
/// then the mirror's log count must be within 3 standard deviations of the binomial
/// expectation (`n·p ± 3·sqrt(n·p·(1−p))`, `toleranceStdDevs`); 5 tries.
pub(super) async fn mirror_share(
    env: &Env<'_>,
    request: &HttpCase,
    to: &str,
    percent: f64,
) -> Result<(), String> {
    const TOTAL: usize = 500;
    const CONCURRENT: usize = 10;
    const TOLERANCE_STD_DEVS: f64 = 3.0;
    const TRIES: usize = 5;
    consistent(env, request).await?;
    let p = prepare(env, request).await?;
    let pods = logs_of(env, to)?;
    let needle = mirror_line(&request.path);
    let (n, share) = (TOTAL as f64, percent / 100.0);
    let expected = n * share;
    let margin = TOLERANCE_STD_DEVS * (n * share * (1.0 - share)).sqrt();
    let (min, max) = (expected - margin, expected + margin);
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let marks: Vec<usize> = pods.iter().map(PodLog::len).collect();
        for _ in 0..TOTAL / CONCURRENT {
            let batch = (0..CONCURRENT)
                .map(|_| Box::pin(send(env, &p, &request.path, REQUEST_TIMEOUT)))
                .collect();
            for reply in join_all(batch).await {
                let reply = reply?;
                super::compare(request, &p, &reply)?;
            }
        }
        // Mirror copies are fire-and-forget: count once the log stops growing.
        let count = |pods: &[PodLog]| -> usize {
            pods.iter()
                .zip(&marks)
                .map(|(p, m)| p.count_since(*m, &needle))
                .sum()
        };
        let settle = Instant::now() + Duration::from_secs(5);
        let mut actual = count(&pods);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = count(&pods);
            if now == actual || Instant::now() >= settle {
                actual = now;
                break;
            }
            actual = now;
        }
        let actual = actual as f64;
        if (min..=max).contains(&actual) {
            return Ok(());
        }
        last = format!(
            "try {attempt}/{TRIES}: {to} logged {actual} mirrored requests, expected between {min} and {max}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(last)
}

/// httproute-request-header-modifier-backend-weights.go: after the route answers
/// consistently, `requests` round trips; each must reach a pod whose name starts with the
/// one value of `header` the backend saw.
pub(super) async fn backend_header_names_pod(
    env: &Env<'_>,
    gateway: &str,
    path: &str,
    header: &str,
    requests: usize,
) -> Result<(), String> {
    let case = HttpCase {
        gateway: gateway.to_string(),
        path: path.to_string(),
        ..HttpCase::default()
    };
    consistent(env, &case).await?;
    let p = prepare(env, &case).await?;
    for i in 0..requests {
        let reply = send(env, &p, path, REQUEST_TIMEOUT).await?;
        let echo: Value = serde_json::from_slice(&reply.body).map_err(|e| {
            format!(
                "request {i}: answer is not echo JSON ({e}): {}",
                reply.text()
            )
        })?;
        let values = header_list(&echo["headers"], header);
        let [value] = values.as_slice() else {
            return Err(format!(
                "request {i}: expected a single {header:?} header to have been set, got {}",
                values.len()
            ));
        };
        let pod = echo["pod"].as_str().unwrap_or_default();
        if !pod.starts_with(value.as_str()) {
            return Err(format!(
                "request {i}: the backendRef's filter set {header}: {value} but pod {pod:?} answered"
            ));
        }
    }
    Ok(())
}

/// One CORS case, 3 consecutive matching answers within the step timeout.
pub(super) async fn cors(env: &Env<'_>, case: &CorsCase) -> Result<(), String> {
    let request = HttpCase {
        gateway: case.gateway.clone(),
        path: case.path.clone(),
        method: Some(case.method.clone()),
        headers: case.headers.clone(),
        ..HttpCase::default()
    };
    let p = prepare(env, &request).await?;
    let deadline = Instant::now() + super::STEP_TIMEOUT + REQUEST_TIMEOUT;
    let mut successes = 0;
    loop {
        let outcome = match send(env, &p, &case.path, REQUEST_TIMEOUT).await {
            Ok(reply) => compare_cors(case, &reply),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                successes += 1;
                if successes >= 3 {
                    return Ok(());
                }
                continue;
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{} {}: {e}", case.method, case.path))
            }
            Err(_) => successes = 0,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn compare_cors(case: &CorsCase, reply: &weir_testkit::client::Reply) -> Result<(), String> {
    let status = reply.status.as_u16();
    let statuses = if case.statuses.is_empty() {
        vec![200]
    } else {
        case.statuses.clone()
    };
    if !statuses.contains(&status) {
        return Err(format!(
            "expected status code to be one of {statuses:?}, got {status}"
        ));
    }
    let no_space = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    for (name, want) in &case.response_headers {
        match super::response_header(reply, name) {
            Some(got) if got == *want => {}
            got => {
                return Err(format!(
                    "expected response header {name} to be {want}, got {got:?}"
                ))
            }
        }
    }
    for (name, valid) in &case.valid_headers {
        let Some(got) = super::response_header(reply, name) else {
            return Err(format!("expected response header {name} to be set"));
        };
        if !valid.iter().any(|v| no_space(v) == no_space(&got)) {
            return Err(format!(
                "expected response header {name} to be one of {valid:?}, got {got:?}"
            ));
        }
    }
    for name in &case.absent_response_headers {
        if let Some(v) = super::response_header(reply, name) {
            return Err(format!(
                "expected response header {name} to not be set, got {v}"
            ));
        }
    }
    if let Some(ns) = case.namespace.as_deref().filter(|_| status == 200) {
        let echo: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("answer is not echo JSON ({e}): {}", reply.text()))?;
        if echo["namespace"] != ns {
            return Err(format!(
                "expected namespace to be {ns}, got {}",
                echo["namespace"]
            ));
        }
    }
    Ok(())
}

/// Every value of `name` (case-insensitive) in the echo's `headers` object.
fn header_list(headers: &Value, name: &str) -> Vec<String> {
    headers
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    #[test]
    fn header_list_is_case_insensitive_and_counts_values() {
        let h = serde_json::json!({"Backend": ["infra-backend-v1"], "Other": ["a", "b"]});
        assert_eq!(header_list(&h, "backend"), ["infra-backend-v1"]);
        assert_eq!(header_list(&h, "other").len(), 2);
        assert!(header_list(&h, "missing").is_empty());
    }
}
