//! BackendTrafficPolicy `healthCheck`: validated and compiled to
//! [`weir_snapshot::HealthCheck`]. Defaults are Envoy Gateway's; a value out of range is
//! `Invalid`, naming the field and the allowed range.

use std::sync::Arc;
use std::time::Duration;

use weir_snapshot::{ActiveHealth, HealthCheck, PassiveHealth, Probe};
use weir_store::policies::{self as store, ActiveHealthCheckPayload};

use super::{duration, invalid};
use crate::policy::attach::NotAccepted;

/// The paths of the `healthCheck` fields Weir does not implement.
pub(super) fn unsupported_fields(h: &store::HealthCheck, out: &mut Vec<String>) {
    let mut add = |path: &str, u: &store::Unsupported| {
        out.extend(u.keys().map(|k| format!("{path}.{k}")));
    };
    add("spec.healthCheck", &h.unsupported);
    if let Some(p) = &h.passive {
        add("spec.healthCheck.passive", &p.unsupported);
    }
    if let Some(a) = &h.active {
        add("spec.healthCheck.active", &a.unsupported);
        if let Some(http) = &a.http {
            add("spec.healthCheck.active.http", &http.unsupported);
        }
        if let Some(tcp) = &a.tcp {
            add("spec.healthCheck.active.tcp", &tcp.unsupported);
            if let Some(s) = &tcp.send {
                add("spec.healthCheck.active.tcp.send", &s.unsupported);
            }
            if let Some(r) = &tcp.receive {
                add("spec.healthCheck.active.tcp.receive", &r.unsupported);
            }
        }
        if let Some(grpc) = &a.grpc {
            add("spec.healthCheck.active.grpc", &grpc.unsupported);
        }
    }
}

/// A count field: `None` keeps `default`; else `min..=max`.
fn count(
    field: &str,
    v: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, NotAccepted> {
    match v {
        None => Ok(default),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| invalid(format!("{field} {n}: must be {min} to {max}"))),
    }
}

fn percent(field: &str, v: Option<i64>, default: u8) -> Result<u8, NotAccepted> {
    count(field, v, u32::from(default), 0, 100).map(|n| u8::try_from(n).unwrap_or(100))
}

fn duration_or(field: &str, v: Option<&str>, default: Duration) -> Result<Duration, NotAccepted> {
    Ok(duration(field, v)?.unwrap_or(default))
}

pub(super) fn compile(h: &store::HealthCheck) -> Result<HealthCheck, NotAccepted> {
    let mut out = HealthCheck {
        panic_threshold: percent(
            "spec.healthCheck.panicThreshold",
            h.panic_threshold,
            HealthCheck::default().panic_threshold,
        )?,
        ..HealthCheck::default()
    };
    if let Some(p) = &h.passive {
        out.passive = Some(passive(p)?);
    }
    if let Some(a) = &h.active {
        out.active = Some(Arc::new(active(a)?));
    }
    Ok(out)
}

fn passive(p: &store::PassiveHealthCheck) -> Result<PassiveHealth, NotAccepted> {
    const F: &str = "spec.healthCheck.passive";
    let d = PassiveHealth::default();
    Ok(PassiveHealth {
        consecutive_5xx: count(
            &format!("{F}.consecutive5XxErrors"),
            p.consecutive_5xx_errors,
            d.consecutive_5xx,
            0,
            u32::MAX,
        )?,
        consecutive_gateway: count(
            &format!("{F}.consecutiveGatewayErrors"),
            p.consecutive_gateway_errors,
            d.consecutive_gateway,
            0,
            u32::MAX,
        )?,
        consecutive_local_origin: count(
            &format!("{F}.consecutiveLocalOriginFailures"),
            p.consecutive_local_origin_failures,
            d.consecutive_local_origin,
            0,
            u32::MAX,
        )?,
        split_external_local_origin_errors: p
            .split_external_local_origin_errors
            .unwrap_or(d.split_external_local_origin_errors),
        interval: duration_or(&format!("{F}.interval"), p.interval.as_deref(), d.interval)?,
        base_ejection_time: duration_or(
            &format!("{F}.baseEjectionTime"),
            p.base_ejection_time.as_deref(),
            d.base_ejection_time,
        )?,
        max_ejection_percent: percent(
            &format!("{F}.maxEjectionPercent"),
            p.max_ejection_percent,
            d.max_ejection_percent,
        )?,
    })
}

fn active(a: &store::ActiveHealthCheck) -> Result<ActiveHealth, NotAccepted> {
    const F: &str = "spec.healthCheck.active";
    let timeout = duration_or(
        &format!("{F}.timeout"),
        a.timeout.as_deref(),
        Duration::from_secs(1),
    )?;
    let interval = duration_or(
        &format!("{F}.interval"),
        a.interval.as_deref(),
        Duration::from_secs(3),
    )?;
    let unhealthy_threshold = count(
        &format!("{F}.unhealthyThreshold"),
        a.unhealthy_threshold,
        3,
        1,
        u32::MAX,
    )?;
    let healthy_threshold = count(
        &format!("{F}.healthyThreshold"),
        a.healthy_threshold,
        1,
        1,
        u32::MAX,
    )?;
    let probe = match a.kind.as_deref() {
        Some("HTTP") => {
            let Some(http) = &a.http else {
                return Err(invalid(format!("{F}.http: required with type HTTP")));
            };
            let path = http.path.as_deref().unwrap_or_default();
            if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path).is_err() {
                return Err(invalid(format!(
                    "{F}.http.path {path:?}: must be an absolute path (starting with /)"
                )));
            }
            let method = match http.method.as_deref() {
                None | Some("") => http::Method::GET,
                Some(m) => match m {
                    "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "TRACE" | "PATCH" => {
                        http::Method::from_bytes(m.as_bytes()).unwrap_or(http::Method::GET)
                    }
                    _ => {
                        return Err(invalid(format!(
                            "{F}.http.method {m:?}: must be one of GET, HEAD, POST, PUT, \
                             DELETE, OPTIONS, TRACE, PATCH"
                        )))
                    }
                },
            };
            let hostname = match http.hostname.as_deref() {
                None | Some("") => None,
                Some(h) if http::HeaderValue::from_str(h).is_ok() => Some(Arc::from(h)),
                Some(h) => {
                    return Err(invalid(format!(
                        "{F}.http.hostname {h:?}: not a valid Host"
                    )))
                }
            };
            let expected_statuses: Vec<u16> = match &http.expected_statuses {
                None => vec![200],
                Some(list) if list.is_empty() => vec![200],
                Some(list) => list
                    .iter()
                    .map(|&c| {
                        u16::try_from(c)
                            .ok()
                            .filter(|c| (100..=599).contains(c))
                            .ok_or_else(|| {
                                invalid(format!(
                                    "{F}.http.expectedStatuses: {c} must be 100 to 599"
                                ))
                            })
                    })
                    .collect::<Result<_, _>>()?,
            };
            Probe::Http {
                path: Arc::from(path),
                method,
                hostname,
                expected_statuses: expected_statuses.into(),
            }
        }
        Some("TCP") => {
            let tcp = a.tcp.as_ref();
            Probe::Tcp {
                send: payload(&format!("{F}.tcp.send"), tcp.and_then(|t| t.send.as_ref()))?,
                receive: payload(
                    &format!("{F}.tcp.receive"),
                    tcp.and_then(|t| t.receive.as_ref()),
                )?,
            }
        }
        Some("GRPC") => Probe::Grpc {
            service: a
                .grpc
                .as_ref()
                .and_then(|g| g.service.as_deref())
                .filter(|s| !s.is_empty())
                .map(Arc::from),
        },
        Some(other) => {
            return Err(invalid(format!(
                "{F}.type {other:?}: must be HTTP, TCP or GRPC"
            )))
        }
        None => return Err(invalid(format!("{F}.type: required (HTTP, TCP or GRPC)"))),
    };
    Ok(ActiveHealth {
        probe,
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
    })
}

fn payload(
    field: &str,
    p: Option<&ActiveHealthCheckPayload>,
) -> Result<Option<Arc<[u8]>>, NotAccepted> {
    let Some(p) = p else { return Ok(None) };
    let bytes = match (p.kind.as_deref(), &p.text, &p.binary) {
        (Some("Text"), Some(text), _) => text.as_bytes().to_vec(),
        (Some("Binary"), _, Some(b64)) => base64_decode(b64)
            .ok_or_else(|| invalid(format!("{field}.binary: not valid base64")))?,
        (Some("Text"), None, _) => {
            return Err(invalid(format!("{field}.text: required with type Text")))
        }
        (Some("Binary"), _, None) => {
            return Err(invalid(format!(
                "{field}.binary: required with type Binary"
            )))
        }
        (other, _, _) => {
            return Err(invalid(format!(
                "{field}.type {:?}: must be Text or Binary",
                other.unwrap_or_default()
            )))
        }
    };
    if bytes.is_empty() {
        return Err(invalid(format!("{field}: must not be empty")));
    }
    Ok(Some(bytes.into()))
}

/// Standard base64 (with or without padding).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = ((acc << 6) | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("cGluZw==").as_deref(), Some(&b"ping"[..]));
        assert_eq!(base64_decode("cGluZw").as_deref(), Some(&b"ping"[..]));
        assert_eq!(base64_decode("AAEC").as_deref(), Some(&[0u8, 1, 2][..]));
        assert!(base64_decode("no!").is_none());
    }
}
