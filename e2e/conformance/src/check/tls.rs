//! Steps of the TLSRoute tests: route status as `GatewayAndTLSRoutesMustBeAccepted`,
//! `TLSRouteMustHaveResolvedRefsConditionsTrue` and `TLSRouteMustHaveCondition` check it
//! (conformance/utils/kubernetes/helpers.go), the TCP line protocol exchange of
//! `tcp.MakeTCPRequestAndExpectEventuallyValidResponse` (conformance/utils/tcp/tcp.go), and
//! the connection reset of `tls.MakeTLSRequestAndExpectEventuallyConnectionReset`. The
//! status steps take `kind: TCPRoute` for Weir's own TCPRoute tests (same shape of status).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weir_testkit::client::tls_connect;

use super::traffic::join_all;
use super::{
    conditions_match, eventually, gateway_address, gateway_ready, latest_generation, our_parents,
    parent_is, status_of, Env, REQUEST_TIMEOUT, STEP_TIMEOUT,
};
use crate::spec::{split_name, Accepted, Cond, ParentExpect, Step, TcpCase};

const TLS_ROUTE: &str = "TLSRoute";

fn kind_or_tls(kind: &Option<String>) -> &str {
    kind.as_deref().unwrap_or(TLS_ROUTE)
}
/// echo-basic tcpserver's `WelcomeMessage`.
const WELCOME: &str = "Gateway API Test TCP Server\n";
/// Time for one line-protocol exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run_step(env: &Env<'_>, step: &Step) -> Result<(), String> {
    match step {
        Step::TlsAccepted(a) => eventually(STEP_TIMEOUT, || accepted(env, a)).await,
        Step::TlsResolvedRefs {
            gateway,
            routes,
            kind,
        } => {
            for r in routes {
                let cond = Cond {
                    type_: "ResolvedRefs".into(),
                    status: "True".into(),
                    reason: None,
                };
                eventually(STEP_TIMEOUT, || {
                    route_condition(env, kind_or_tls(kind), r, gateway, &cond)
                })
                .await?;
            }
            Ok(())
        }
        Step::TlsRouteCondition {
            route,
            gateway,
            condition,
            kind,
        } => {
            eventually(STEP_TIMEOUT, || {
                route_condition(env, kind_or_tls(kind), route, gateway, condition)
            })
            .await
        }
        Step::TlsNoAcceptedParents { route, kind } => {
            eventually(STEP_TIMEOUT, || {
                no_accepted_parents(env, kind_or_tls(kind), route)
            })
            .await
        }
        Step::Tcp(case) => eventually(STEP_TIMEOUT, || tcp_exchange(env, case)).await,
        Step::TlsReset {
            gateway,
            port,
            server_name,
        } => eventually(STEP_TIMEOUT, || reset(env, gateway, *port, server_name)).await,
        Step::RouteParents {
            kind,
            route,
            parents,
            namespace_required,
        } => {
            eventually(STEP_TIMEOUT, || {
                route_parents(env, kind, route, parents, *namespace_required)
            })
            .await
        }
        Step::TcpWeights {
            gateway,
            port,
            weights,
        } => tcp_weights(env, gateway, *port, weights).await,
        Step::TcpSamples {
            gateway,
            port,
            count,
            backend,
        } => {
            let addr = socket(env, gateway, *port).await?;
            for i in 0..*count {
                let pod = echo_send_once(addr)
                    .await
                    .map_err(|e| format!("TCP echo request {}/{count} failed: {e}", i + 1))?;
                if !pod.starts_with(&format!("{backend}-")) {
                    return Err(format!(
                        "request {}/{count} reached unexpected backend {pod:?}; expected a pod of {backend:?}",
                        i + 1
                    ));
                }
            }
            Ok(())
        }
        other => Err(format!("not a TLS step: {other:?}")),
    }
}

/// `GatewayAndTLSRoutesMustBeAccepted`: the Gateway is ready, and each TLSRoute has exactly
/// the expected parents, all this Gateway, Accepted=True at the latest generation.
async fn accepted(env: &Env<'_>, a: &Accepted) -> Result<(), String> {
    gateway_ready(env, &a.gateway).await?;
    let kind = kind_or_tls(&a.kind);
    let expected = a.sections.len().max(1);
    for r in &a.routes {
        let route = status_of(env, kind, r).await?;
        let parents = our_parents(&route);
        if parents.len() != expected {
            return Err(format!(
                "{kind} {r}: want {expected} parent(s), got {}",
                serde_json::to_string(&route["status"]["parents"]).unwrap_or_default()
            ));
        }
        let (route_ns, _) = split_name(r);
        for p in &parents {
            if !parent_is(p, &a.gateway, &route_ns) {
                return Err(format!(
                    "{kind} {r}: parent {} is not Gateway {}",
                    p["parentRef"], a.gateway
                ));
            }
            let what = format!("{kind} {r} parent {}", a.gateway);
            conditions_match(
                &[Cond {
                    type_: "Accepted".into(),
                    status: "True".into(),
                    reason: None,
                }],
                &p["conditions"],
                &what,
            )?;
            latest_generation(&p["conditions"], &route["metadata"]["generation"], &what)?;
        }
    }
    Ok(())
}

async fn route_condition(
    env: &Env<'_>,
    kind: &str,
    route: &str,
    gateway: &str,
    cond: &Cond,
) -> Result<(), String> {
    let r = status_of(env, kind, route).await?;
    let (route_ns, _) = split_name(route);
    let parents = our_parents(&r);
    let Some(p) = parents.iter().find(|p| parent_is(p, gateway, &route_ns)) else {
        return Err(format!("{kind} {route}: no parent {gateway} in status"));
    };
    let what = format!("{kind} {route} parent {gateway}");
    conditions_match(std::slice::from_ref(cond), &p["conditions"], &what)?;
    latest_generation(&p["conditions"], &r["metadata"]["generation"], &what)
}

/// `TLSRouteMustHaveNoAcceptedParents`: no parents, or only parents with Accepted=False.
async fn no_accepted_parents(env: &Env<'_>, kind: &str, route: &str) -> Result<(), String> {
    let r = status_of(env, kind, route).await.unwrap_or_default();
    for p in our_parents(&r) {
        let accepted = p["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True");
        if accepted {
            return Err(format!("{kind} {route}: accepted by {}", p["parentRef"]));
        }
    }
    Ok(())
}

/// The socket serving a configured port of a Gateway, at its status address.
async fn socket(env: &Env<'_>, gateway: &str, port: u16) -> Result<SocketAddr, String> {
    let ip = gateway_address(env, gateway).await?;
    Ok(SocketAddr::new(ip, env.weir.listener(port).port()))
}

/// One dial of `WaitForValidTCPResponse`: the welcome line, `PING` → `PONG`, `IS_TLS` → the
/// expected answer, `TEST` → the assertions JSON (namespace, pod prefix, SNI seen).
async fn tcp_exchange(env: &Env<'_>, case: &TcpCase) -> Result<(), String> {
    let addr = socket(env, &case.gateway, case.port).await?;
    let test_line = match &case.server_name {
        Some(sni) => {
            let (stream, _) = tls_connect(addr, sni, env.ca_pem, &[]).await?;
            converse(stream, case.backend_is_tls).await?
        }
        None => {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            converse(stream, case.backend_is_tls).await?
        }
    };
    validate(&test_line, case)
}

async fn converse<S>(stream: S, backend_is_tls: bool) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<String, String> {
        let mut line = String::new();
        r.read_line(&mut line).await.map_err(|e| e.to_string())?;
        Ok(line)
    }
    async fn send<W: AsyncWrite + Unpin>(w: &mut W, cmd: &str) -> Result<(), String> {
        w.write_all(cmd.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())
    }
    let exchange = async {
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let welcome = line(&mut read).await?;
        if welcome != WELCOME {
            return Err(format!(
                "TCP server welcome message does not match: got {welcome:?}"
            ));
        }
        send(&mut write, "PING\n").await?;
        let pong = line(&mut read).await?;
        if pong != "PONG\n" {
            return Err(format!(
                "TCP server PING response does not match: got {pong:?}"
            ));
        }
        send(&mut write, "IS_TLS\n").await?;
        let is_tls = line(&mut read).await?;
        if is_tls.trim_end_matches('\n') != backend_is_tls.to_string() {
            return Err(format!(
                "TCP server TLS response does not match: got {is_tls:?}"
            ));
        }
        send(&mut write, "TEST\n").await?;
        line(&mut read).await
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no complete exchange within {EXCHANGE_TIMEOUT:?}"))?
}

/// `RouteMustHaveParents` / `parentsForRouteMatch`: group and kind compared as set values (a
/// parentRef echoed without them does not match), the namespace when the status names one
/// or `namespace_required`; every condition at the route's latest generation.
async fn route_parents(
    env: &Env<'_>,
    kind: &str,
    route: &str,
    expected: &[ParentExpect],
    namespace_required: bool,
) -> Result<(), String> {
    let r = status_of(env, kind, route).await?;
    let parents = our_parents(&r);
    for p in &parents {
        latest_generation(
            &p["conditions"],
            &r["metadata"]["generation"],
            &format!("{kind} {route} parent {}", p["parentRef"]),
        )?;
    }
    for e in expected {
        let (ns, name) = split_name(&e.name);
        let what = format!("{kind} {route} parent {} {}", e.kind, e.name);
        let mut last = format!("{what}: no such parent in {}", r["status"]["parents"]);
        let matched = parents.iter().any(|p| {
            let pr = &p["parentRef"];
            if pr["group"].as_str() != Some(e.group.as_str())
                || pr["kind"].as_str() != Some(e.kind.as_str())
                || pr["name"].as_str() != Some(name.as_str())
                || match pr["namespace"].as_str() {
                    Some(n) => n != ns,
                    None => namespace_required,
                }
            {
                return false;
            }
            match conditions_match(&e.conditions, &p["conditions"], &what) {
                Ok(()) => true,
                Err(err) => {
                    last = err;
                    false
                }
            }
        });
        if !matched {
            return Err(last);
        }
    }
    Ok(())
}

/// `tcp.EchoSendOnce`: one connection, the welcome line, `TEST`, and the answering pod's
/// name from the assertions JSON.
async fn echo_send_once(addr: SocketAddr) -> Result<String, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dialing TCP {addr}: {e}"))?;
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let mut welcome = String::new();
        read.read_line(&mut welcome)
            .await
            .map_err(|e| format!("reading TCP welcome message: {e}"))?;
        if welcome != WELCOME {
            return Err(format!("unexpected TCP welcome message: {welcome:?}"));
        }
        write
            .write_all(b"TEST\n")
            .await
            .map_err(|e| format!("writing TEST: {e}"))?;
        let mut line = String::new();
        read.read_line(&mut line)
            .await
            .map_err(|e| format!("reading TEST response: {e}"))?;
        let payload: Value = serde_json::from_str(&line)
            .map_err(|e| format!("decoding TCP echo response {line:?}: {e}"))?;
        match payload["pod"].as_str() {
            Some(pod) if !pod.is_empty() => Ok(pod.to_string()),
            _ => Err(format!("TCP echo response missing pod name: {line:?}")),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no TCP echo answer within {REQUEST_TIMEOUT:?}"))?
}

/// tcproute-weighted-routing.go: `tcp.ExpectAddressBeAvailable`, then
/// `weight.TestWeightedDistribution` (500 samples, 10 at a time, each backend within ±5
/// points of its weight; a sample from another pod or a failed one fails the attempt) up to
/// `weight.MaxTestRetries` (10) times.
async fn tcp_weights(
    env: &Env<'_>,
    gateway: &str,
    port: u16,
    weights: &BTreeMap<String, f64>,
) -> Result<(), String> {
    const TOTAL: usize = 500;
    const CONCURRENT: usize = 10;
    const TOLERANCE: f64 = 0.05;
    let addr = socket(env, gateway, port).await?;
    eventually(STEP_TIMEOUT, || async {
        TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("failed to establish TCP connection to {addr}: {e}"))
    })
    .await?;
    let mut last = String::new();
    for attempt in 1..=10 {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut error = None;
        for _batch in 0..TOTAL / CONCURRENT {
            let batch: Vec<_> = (0..CONCURRENT)
                .map(|_| Box::pin(echo_send_once(addr)))
                .collect();
            for answer in join_all(batch).await {
                match answer {
                    Ok(pod) => match weights.keys().find(|b| pod.starts_with(&format!("{b}-"))) {
                        Some(b) => *seen.entry(b.as_str()).or_default() += 1,
                        None => {
                            error =
                                Some(format!("request was handled by an unexpected pod {pod:?}"))
                        }
                    },
                    Err(e) => error = Some(e),
                }
            }
        }
        if let Some(e) = error {
            last = format!("attempt {attempt}: error while sending requests: {e}");
            continue;
        }
        let errs: Vec<String> = weights
            .iter()
            .filter_map(|(backend, want)| {
                let got = *seen.get(backend.as_str()).unwrap_or(&0) as f64 / TOTAL as f64;
                ((got - want).abs() > TOLERANCE)
                    .then(|| format!("{backend}: {got:.3} not within {want}±{TOLERANCE}"))
            })
            .collect();
        if errs.is_empty() {
            return Ok(());
        }
        last = format!("attempt {attempt}: {}", errs.join("; "));
    }
    Err(format!(
        "TCP weighted distribution did not converge within tolerance: {last}"
    ))
}

/// `validateTestMessage`.
fn validate(test_line: &str, case: &TcpCase) -> Result<(), String> {
    let payload: Value =
        serde_json::from_str(test_line).map_err(|e| format!("TEST answer {test_line:?}: {e}"))?;
    let namespace = payload["namespace"].as_str().unwrap_or_default();
    if namespace != case.namespace {
        return Err(format!(
            "namespace does not match: got {namespace:?}, want {:?}",
            case.namespace
        ));
    }
    let pod = payload["pod"].as_str().unwrap_or_default();
    if !pod.starts_with(&format!("{}-", case.backend)) {
        return Err(format!(
            "backend name does not match with pod prefix: pod={pod:?} backend={:?}",
            case.backend
        ));
    }
    if let Some(hostname) = case.hostname.as_deref().filter(|h| !h.is_empty()) {
        let Some(seen) = payload["tls"]["serverName"].as_str() else {
            return Err(format!(
                "TLS server name does not match: no TLS assertions received, want {hostname:?}"
            ));
        };
        if seen != hostname {
            return Err(format!(
                "TLS server name does not match: got {seen:?}, want {hostname:?}"
            ));
        }
    }
    Ok(())
}

/// A TLS handshake with `server_name` must end with the connection closed or reset by the
/// Gateway (no certificate is presented at all).
async fn reset(env: &Env<'_>, gateway: &str, port: u16, server_name: &str) -> Result<(), String> {
    let addr = socket(env, gateway, port).await?;
    match tls_connect(addr, server_name, env.ca_pem, &[]).await {
        Ok(_) => Err(format!(
            "TLS handshake with SNI {server_name} to {addr} succeeded; want the connection reset"
        )),
        Err(e) => {
            let lower = e.to_lowercase();
            if lower.contains("reset") || lower.contains("eof") || lower.contains("closed") {
                Ok(())
            } else {
                Err(format!(
                    "TLS handshake with SNI {server_name} failed, but not by a reset: {e}"
                ))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    fn case(hostname: Option<&str>) -> TcpCase {
        TcpCase {
            gateway: "gw".into(),
            port: 443,
            server_name: None,
            backend_is_tls: true,
            backend: "tcp-backend".into(),
            namespace: "gateway-conformance-infra".into(),
            hostname: hostname.map(str::to_string),
        }
    }

    #[test]
    fn the_test_payload_is_compared_like_validate_test_message() {
        let line = r#"{"namespace":"gateway-conformance-infra","pod":"tcp-backend-abc-1","isTLS":true,"tls":{"serverName":"abc.example.com"}}"#;
        assert!(validate(line, &case(Some("abc.example.com"))).is_ok());
        assert!(validate(line, &case(None)).is_ok());
        assert!(validate(line, &case(Some("other.example.com"))).is_err());
        let other_pod = line.replace("tcp-backend-abc", "tls-backend-abc");
        assert!(validate(&other_pod, &case(None)).is_err());
        let other_ns = line.replace("conformance-infra", "conformance-web-backend");
        assert!(validate(&other_ns, &case(None)).is_err());
        let plain =
            r#"{"namespace":"gateway-conformance-infra","pod":"tcp-backend-abc-1","isTLS":false}"#;
        assert!(validate(plain, &case(Some("abc.example.com"))).is_err());
    }
}
