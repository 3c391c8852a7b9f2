//! Steps of the UDPRoute tests: the datagram exchanges of conformance/utils/udp
//! (`ExpectEchoResponse`, `ExpectEchoResponseFromBackend`), `udpEchoSendOnce` samples and
//! their weighted distribution (udproute-weighted-routing.go, udproute-multiple-routes-
//! attachment.go), and the DNS query of udproute-simple.go (`dns.Exchange`: any response
//! with the query's ID).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::net::UdpSocket;

use super::traffic::join_all;
use super::{eventually, gateway_address, Env, STEP_TIMEOUT};
use crate::spec::Step;

/// The probe `ExpectEchoResponseFromBackend` sends.
const ECHO_PROBE: &str = "gateway-api-conformance-udp-echo";
/// The probe `udpEchoSendOnce` sends.
const WEIGHT_PROBE: &str = "gateway-api-conformance-udp-weight\n";
/// The Go helpers' per-datagram deadline.
const DATAGRAM_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run_step(env: &Env<'_>, step: &Step) -> Result<(), String> {
    match step {
        Step::UdpEcho {
            gateway,
            port,
            service,
            namespace,
        } => {
            let addr = socket(env, gateway, *port).await?;
            eventually(STEP_TIMEOUT, || {
                expect_echo(addr, service.as_deref(), namespace.as_deref())
            })
            .await
        }
        Step::UdpSamples {
            gateway,
            port,
            count,
            backend,
        } => {
            let addr = socket(env, gateway, *port).await?;
            // Polled while probes fail; a probe answered by another backend fails at once.
            let mut last = String::new();
            let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
            'poll: while tokio::time::Instant::now() < deadline {
                for i in 0..*count {
                    match send_once(addr).await {
                        Ok(pod) => {
                            let got = extract_backend_name(&pod);
                            if got != *backend {
                                return Err(format!(
                                    "UDP traffic reached unexpected backend {got:?} (pod {pod:?}); only {backend} should receive traffic"
                                ));
                            }
                        }
                        Err(e) => {
                            last = format!("UDP probe {} failed: {e}", i + 1);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue 'poll;
                        }
                    }
                }
                return Ok(());
            }
            Err(format!("UDP traffic verification failed: {last}"))
        }
        Step::UdpWeights {
            gateway,
            port,
            weights,
        } => {
            let addr = socket(env, gateway, *port).await?;
            eventually(STEP_TIMEOUT, || expect_echo(addr, None, None)).await?;
            weighted(addr, weights).await
        }
        Step::Dns {
            gateway,
            port,
            name,
        } => {
            let addr = socket(env, gateway, *port).await?;
            eventually(STEP_TIMEOUT, || dns_exchange(addr, name)).await
        }
        other => Err(format!("not a UDP step: {other:?}")),
    }
}

/// The UDP socket serving a configured port of a Gateway, at its status address.
async fn socket(env: &Env<'_>, gateway: &str, port: u16) -> Result<SocketAddr, String> {
    let ip = gateway_address(env, gateway).await?;
    Ok(SocketAddr::new(ip, env.weir.listener(port).port()))
}

/// `net.Dial("udp", addr)`: a socket that receives only from `addr`.
async fn dial(addr: SocketAddr) -> Result<UdpSocket, String> {
    let any = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))
        .await
        .map_err(|e| format!("binding a UDP socket: {e}"))?;
    s.connect(addr)
        .await
        .map_err(|e| format!("failed to dial UDP {addr}: {e}"))?;
    Ok(s)
}

/// Send one datagram and read one answer within the Go helpers' 2 s deadline.
async fn exchange(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let s = dial(addr).await?;
    s.send(payload)
        .await
        .map_err(|e| format!("failed to write UDP probe: {e}"))?;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(DATAGRAM_TIMEOUT, s.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(buf)
        }
        Ok(Err(e)) => Err(format!("failed to read UDP echo response: {e}")),
        Err(_) => Err(format!(
            "no UDP answer from {addr} within {DATAGRAM_TIMEOUT:?}"
        )),
    }
}

/// One poll of `ExpectEchoResponseFromBackend`: an answer; when a service or namespace is
/// expected, a JSON answer naming them.
async fn expect_echo(
    addr: SocketAddr,
    service: Option<&str>,
    namespace: Option<&str>,
) -> Result<(), String> {
    let answer = exchange(addr, ECHO_PROBE.as_bytes()).await?;
    if service.is_none() && namespace.is_none() {
        return Ok(());
    }
    let resp: Value = serde_json::from_slice(&answer)
        .map_err(|e| format!("failed to decode UDP echo response from {addr}: {e}"))?;
    for (field, want) in [("service", service), ("namespace", namespace)] {
        if let Some(want) = want {
            let got = resp[field].as_str().unwrap_or_default();
            if got != want {
                return Err(format!(
                    "UDP echo response {field}={got:?} did not match expected {want:?} (pod {})",
                    resp["pod"]
                ));
            }
        }
    }
    Ok(())
}

/// `udpEchoSendOnce`: the answering pod's name.
async fn send_once(addr: SocketAddr) -> Result<String, String> {
    let answer = exchange(addr, WEIGHT_PROBE.as_bytes()).await?;
    let resp: Value = serde_json::from_slice(&answer).map_err(|e| {
        format!(
            "decoding UDP echo response {:?}: {e}",
            String::from_utf8_lossy(&answer)
        )
    })?;
    match resp["pod"].as_str() {
        Some(pod) if !pod.is_empty() => Ok(pod.to_string()),
        _ => Err(format!(
            "UDP echo response missing pod name: {:?}",
            String::from_utf8_lossy(&answer)
        )),
    }
}

/// udproute-multiple-routes-attachment.go `extractBackendName`: the pod name without its
/// last two dash-separated parts (ReplicaSet hash and pod suffix).
fn extract_backend_name(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() < 3 {
        return pod.to_string();
    }
    parts[..parts.len() - 2].join("-")
}

/// `weight.TestWeightedDistribution` over `udpEchoSendOnce`: 500 samples, 10 at a time,
/// each backend's share within ±5 points of its weight, up to `weight.MaxTestRetries` (10)
/// attempts; a failed sample or one from another backend fails the attempt.
async fn weighted(addr: SocketAddr, weights: &BTreeMap<String, f64>) -> Result<(), String> {
    const TOTAL: usize = 500;
    const CONCURRENT: usize = 10;
    const TOLERANCE: f64 = 0.05;
    let mut last = String::new();
    for attempt in 1..=10 {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut error = None;
        for _batch in 0..TOTAL / CONCURRENT {
            let batch: Vec<_> = (0..CONCURRENT).map(|_| Box::pin(send_once(addr))).collect();
            for answer in join_all(batch).await {
                match answer {
                    Ok(pod) => {
                        let backend = extract_backend_name(&pod);
                        if weights.contains_key(&backend) {
                            *seen.entry(backend).or_default() += 1;
                        } else {
                            error = Some(format!(
                                "request was handled by an unexpected pod {pod:?} (extracted backend: {backend:?})"
                            ));
                        }
                    }
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
                let got = *seen.get(backend).unwrap_or(&0) as f64 / TOTAL as f64;
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
        "UDP weighted distribution did not converge within tolerance: {last}"
    ))
}

/// `dns.Exchange(msg, addr)` for `msg.SetQuestion(name, dns.TypeA)`: a response with the
/// query's ID that parses as a DNS message (header, the one question).
async fn dns_exchange(addr: SocketAddr, name: &str) -> Result<(), String> {
    let id: u16 = rand_id();
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len()).map_err(|_| format!("label {label:?}"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    let r = exchange(addr, &q).await?;
    if r.len() < 12 || r[..2] != q[..2] {
        return Err(format!(
            "failed to perform a UDP query: bad DNS response {r:?}"
        ));
    }
    if r[2] & 0x80 == 0 {
        return Err("failed to perform a UDP query: not a response".into());
    }
    if r.get(12..q.len()) != q.get(12..) {
        return Err("failed to perform a UDP query: question not echoed".into());
    }
    Ok(())
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_drop_the_last_two_parts() {
        assert_eq!(
            extract_backend_name("udp-attach-backend-1-7d9f-x2kq"),
            "udp-attach-backend-1"
        );
        assert_eq!(extract_backend_name("a-b"), "a-b");
    }
}
