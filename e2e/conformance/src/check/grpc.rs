//! gRPC steps, compared the way conformance/utils/grpc/grpc.go compares: one unary call to
//! the echo service (`Echo`, `EchoTwo` or `EchoThree`) over h2c, or h2 over TLS with SNI;
//! the status code must be the expected one and, for OK, the echoed fully qualified method,
//! the namespace (when given) and the pod name prefix (the backend) must match.
//! `MakeRequestAndExpectEventuallyConsistentResponse` is the expectation holding for
//! `CONSECUTIVE` calls in a row; `testGRPCDistribution` (grpcroute-weight.go) is 500 calls,
//! ten at a time, each backend within 5 percentage points of its weight, only the weighted
//! backends answering, ten attempts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weir_testkit::grpc::{self, code_by_name, code_name, Call, Reply};

use super::{join_all, target, Env, CONSECUTIVE, REQUEST_TIMEOUT, STEP_TIMEOUT};
use crate::spec::GrpcCase;

struct Prepared {
    addr: SocketAddr,
    https: bool,
    server_name: String,
    authority: String,
    code: u32,
}

async fn prepare(env: &Env<'_>, case: &GrpcCase) -> Result<Prepared, String> {
    let https = case.scheme.as_deref() == Some("https");
    let (port, ip, addr) = target(env, &case.gateway, case.port, https).await?;
    // grpc.NewClient(gwAddr): the authority is the target address, unless set.
    let authority = case
        .authority
        .clone()
        .unwrap_or_else(|| SocketAddr::new(ip, port).to_string());
    let code_text = case.code.as_deref().unwrap_or("OK");
    let code = code_by_name(code_text).ok_or_else(|| format!("unknown gRPC code {code_text:?}"))?;
    Ok(Prepared {
        addr,
        https,
        server_name: case.server_name.clone().unwrap_or_else(|| {
            authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(h, _)| h)
                .to_string()
        }),
        authority,
        code,
    })
}

async fn send(
    env: &Env<'_>,
    p: &Prepared,
    case: &GrpcCase,
    timeout: Duration,
) -> Result<Reply, String> {
    let call = Call {
        method: &case.method,
        authority: &p.authority,
        metadata: case
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    let fut = async {
        if p.https {
            grpc::h2(p.addr, &p.server_name, env.ca_pem, &call).await
        } else {
            grpc::h2c(p.addr, &call).await
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// `compareResponse`.
fn compare(case: &GrpcCase, p: &Prepared, reply: &Reply) -> Result<(), String> {
    if reply.code != p.code {
        return Err(format!(
            "expected status code {} ({}), got {} ({}): {}",
            code_name(p.code),
            p.code,
            code_name(reply.code),
            reply.code,
            reply.message
        ));
    }
    if reply.code != 0 {
        return Ok(());
    }
    let r = reply
        .response
        .as_ref()
        .ok_or("an OK answer without a message")?;
    let want = format!("/{}/{}", grpc::SERVICE, case.method);
    if r.fully_qualified_method != want {
        return Err(format!(
            "expected path {want}, got {}",
            r.fully_qualified_method
        ));
    }
    if let Some(ns) = &case.namespace {
        if &r.namespace != ns {
            return Err(format!("expected namespace {ns}, got {}", r.namespace));
        }
    }
    let backend = case.backend.as_deref().unwrap_or("");
    if !r.pod.starts_with(backend) {
        return Err(format!(
            "expected pod name to start with {backend}, got {}",
            r.pod
        ));
    }
    for (name, want) in &case.seen_headers {
        let seen = r.header(name);
        if seen != [want.as_str()] {
            return Err(format!(
                "expected the backend to see header {name}: {want}, it saw {seen:?}"
            ));
        }
    }
    for name in &case.absent_headers {
        let seen = r.header(name);
        if !seen.is_empty() {
            return Err(format!(
                "expected the backend not to see header {name}, it saw {seen:?}"
            ));
        }
    }
    Ok(())
}

pub async fn consistent(env: &Env<'_>, case: &GrpcCase) -> Result<(), String> {
    let p = prepare(env, case).await?;
    let deadline = Instant::now() + STEP_TIMEOUT + REQUEST_TIMEOUT;
    let mut successes = 0;
    loop {
        let outcome = match send(env, &p, case, REQUEST_TIMEOUT).await {
            Ok(reply) => compare(case, &p, &reply),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                successes += 1;
                if successes >= CONSECUTIVE {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                successes = 0;
                if Instant::now() >= deadline {
                    return Err(format!(
                        "gRPC {} to {}{}: {e}",
                        case.method,
                        if p.https { "https " } else { "" },
                        p.authority
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn distribution(
    env: &Env<'_>,
    case: &GrpcCase,
    weights: &BTreeMap<String, f64>,
) -> Result<(), String> {
    const TOTAL: usize = 500;
    const TOLERANCE: f64 = 0.05;
    // "Assert request succeeds before doing our distribution check".
    consistent(env, case).await?;
    let p = prepare(env, case).await?;
    let mut last = String::new();
    for _attempt in 0..10 {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut error = None;
        for _batch in 0..TOTAL / 10 {
            let batch: Vec<_> = (0..10)
                .map(|_| Box::pin(send(env, &p, case, REQUEST_TIMEOUT)))
                .collect();
            for reply in join_all(batch).await {
                match reply {
                    Ok(r) if r.code == 0 => {
                        let pod = r.response.map(|m| m.pod).unwrap_or_default();
                        match weights.keys().find(|b| pod.starts_with(b.as_str())) {
                            Some(b) => *seen.entry(b.clone()).or_default() += 1,
                            None => error = Some(format!("unexpected pod {pod:?}")),
                        }
                    }
                    Ok(r) => error = Some(format!("expected OK, got {}", code_name(r.code))),
                    Err(e) => error = Some(e),
                }
            }
        }
        if let Some(e) = error {
            last = e;
            continue;
        }
        let mut errs = Vec::new();
        let receiving = weights.values().filter(|w| **w > 0.0).count();
        if seen.len() != receiving {
            errs.push(format!(
                "expected only {receiving} backends to receive traffic, got {seen:?}"
            ));
        }
        for (backend, want) in weights {
            let got = *seen.get(backend).unwrap_or(&0) as f64 / TOTAL as f64;
            if (got - want).abs() > TOLERANCE {
                errs.push(format!("{backend}: {got:.3} not within {want}±{TOLERANCE}"));
            }
        }
        if errs.is_empty() {
            return Ok(());
        }
        last = errs.join("; ");
    }
    Err(format!("weighted distribution failed 10 times: {last}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;
    use weir_testkit::grpc::EchoResponse;

    fn prepared(code: u32) -> Prepared {
        Prepared {
            addr: "127.0.0.1:80".parse().unwrap(),
            https: false,
            server_name: String::new(),
            authority: String::new(),
            code,
        }
    }

    fn ok(method: &str, pod: &str, ns: &str) -> Reply {
        Reply {
            code: 0,
            message: String::new(),
            http_status: 200,
            response: Some(EchoResponse {
                fully_qualified_method: format!("/{}/{method}", grpc::SERVICE),
                pod: pod.into(),
                namespace: ns.into(),
                ..EchoResponse::default()
            }),
        }
    }

    #[test]
    fn code_method_namespace_and_backend_are_compared() {
        let case = GrpcCase {
            method: "Echo".into(),
            backend: Some("grpc-infra-backend-v1".into()),
            namespace: Some("ns".into()),
            ..GrpcCase::default()
        };
        let p = prepared(0);
        assert!(compare(&case, &p, &ok("Echo", "grpc-infra-backend-v1-abc", "ns")).is_ok());
        assert!(compare(&case, &p, &ok("EchoTwo", "grpc-infra-backend-v1-abc", "ns")).is_err());
        assert!(compare(&case, &p, &ok("Echo", "grpc-infra-backend-v2-abc", "ns")).is_err());
        assert!(compare(&case, &p, &ok("Echo", "grpc-infra-backend-v1-abc", "other")).is_err());
        let unimplemented = Reply {
            code: 12,
            ..Reply::default()
        };
        assert!(compare(&case, &p, &unimplemented).is_err());
        assert!(compare(&case, &prepared(12), &unimplemented).is_ok());
        assert!(compare(
            &case,
            &prepared(12),
            &ok("Echo", "grpc-infra-backend-v1", "ns")
        )
        .is_err());
    }

    #[test]
    fn seen_and_absent_headers_are_compared() {
        let case = GrpcCase {
            method: "Echo".into(),
            seen_headers: [("x-set".to_string(), "route".to_string())].into(),
            absent_headers: vec!["x-remove".into()],
            ..GrpcCase::default()
        };
        let with = |headers: &[(&str, &str)]| {
            let mut reply = ok("Echo", "pod", "ns");
            if let Some(r) = reply.response.as_mut() {
                r.headers = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            }
            reply
        };
        let p = prepared(0);
        assert!(compare(&case, &p, &with(&[("x-set", "route")])).is_ok());
        assert!(compare(&case, &p, &with(&[("x-set", "client")])).is_err());
        assert!(compare(&case, &p, &with(&[("x-set", "route"), ("x-set", "client")])).is_err());
        assert!(compare(&case, &p, &with(&[])).is_err());
        assert!(compare(&case, &p, &with(&[("x-set", "route"), ("x-remove", "1")])).is_err());
    }
}
