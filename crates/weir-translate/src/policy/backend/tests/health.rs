//! `healthCheck`: what compiles (and Envoy Gateway's defaults), and what is refused by name.

use std::time::Duration;

use weir_snapshot::{HealthCheck, PassiveHealth, Probe};

use super::*;

fn health_of(out: &Output, path: &str) -> HealthCheck {
    policy_of(out, path)
        .and_then(|p| p.health_check.as_deref())
        .cloned()
        .expect("a health check")
}

#[test]
fn passive_active_and_panic_threshold_compile() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "
  healthCheck:
    panicThreshold: 30
    passive:
      consecutive5XxErrors: 3
      consecutiveGatewayErrors: 2
      consecutiveLocalOriginFailures: 4
      splitExternalLocalOriginErrors: true
      interval: 2s
      baseEjectionTime: 10s
      maxEjectionPercent: 50
    active:
      type: HTTP
      interval: 500ms
      timeout: 200ms
      unhealthyThreshold: 2
      healthyThreshold: 3
      http: {path: /healthz, method: HEAD, hostname: probe.example, expectedStatuses: [200, 204]}
",
    )]);
    assert_eq!(
        accepted(&out, "p"),
        is("True", "Accepted"),
        "{}",
        message(&out, "p")
    );
    let h = health_of(&out, "/a");
    assert_eq!(h.panic_threshold, 30);
    assert_eq!(
        h.passive,
        Some(PassiveHealth {
            consecutive_5xx: 3,
            consecutive_gateway: 2,
            consecutive_local_origin: 4,
            split_external_local_origin_errors: true,
            interval: Duration::from_secs(2),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 50,
        })
    );
    let a = h.active.expect("active");
    assert_eq!(a.interval, Duration::from_millis(500));
    assert_eq!(a.timeout, Duration::from_millis(200));
    assert_eq!((a.unhealthy_threshold, a.healthy_threshold), (2, 3));
    match &a.probe {
        Probe::Http {
            path,
            method,
            hostname,
            expected_statuses,
        } => {
            assert_eq!(&**path, "/healthz");
            assert_eq!(method, http::Method::HEAD);
            assert_eq!(hostname.as_deref(), Some("probe.example"));
            assert_eq!(&**expected_statuses, &[200, 204]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults_are_envoy_gateways_and_tcp_grpc_compile() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "  healthCheck: {passive: {}, active: {type: TCP, tcp: {send: {type: Text, text: ping}, receive: {type: Binary, binary: cG9uZw==}}}}",
    )]);
    assert_eq!(
        accepted(&out, "p"),
        is("True", "Accepted"),
        "{}",
        message(&out, "p")
    );
    let h = health_of(&out, "/a");
    assert_eq!(h.panic_threshold, 50);
    assert_eq!(h.passive, Some(PassiveHealth::default()));
    let a = h.active.expect("active");
    assert_eq!(a.interval, Duration::from_secs(3));
    assert_eq!(a.timeout, Duration::from_secs(1));
    assert_eq!((a.unhealthy_threshold, a.healthy_threshold), (3, 1));
    match &a.probe {
        Probe::Tcp { send, receive } => {
            assert_eq!(send.as_deref(), Some(&b"ping"[..]));
            assert_eq!(receive.as_deref(), Some(&b"pong"[..]));
        }
        other => panic!("{other:?}"),
    }
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "  healthCheck: {active: {type: GRPC, grpc: {service: echo.Echo}}}",
    )]);
    let a = health_of(&out, "/a").active.expect("active");
    assert_eq!(
        a.probe,
        Probe::Grpc {
            service: Some("echo.Echo".into())
        }
    );
    assert!(health_of(&out, "/a").passive.is_none());
}

#[test]
fn invalid_health_values_are_refused_naming_the_field() {
    for (spec, needle) in [
        (
            "  healthCheck: {panicThreshold: 101}",
            "panicThreshold 101: must be 0 to 100",
        ),
        (
            "  healthCheck: {passive: {maxEjectionPercent: -1}}",
            "passive.maxEjectionPercent -1: must be 0 to 100",
        ),
        (
            "  healthCheck: {passive: {consecutive5XxErrors: -2}}",
            "consecutive5XxErrors",
        ),
        (
            "  healthCheck: {passive: {baseEjectionTime: 0s}}",
            "passive.baseEjectionTime",
        ),
        (
            "  healthCheck: {passive: {interval: often}}",
            "passive.interval",
        ),
        (
            "  healthCheck: {active: {type: UDP}}",
            "active.type \"UDP\"",
        ),
        ("  healthCheck: {active: {}}", "active.type: required"),
        (
            "  healthCheck: {active: {type: HTTP}}",
            "active.http: required",
        ),
        (
            "  healthCheck: {active: {type: HTTP, http: {path: healthz}}}",
            "active.http.path",
        ),
        (
            "  healthCheck: {active: {type: HTTP, http: {path: /h, expectedStatuses: [700]}}}",
            "expectedStatuses: 700 must be 100 to 599",
        ),
        (
            "  healthCheck: {active: {type: HTTP, http: {path: /h, method: BREW}}}",
            "active.http.method",
        ),
        (
            "  healthCheck: {active: {type: TCP, unhealthyThreshold: 0}}",
            "active.unhealthyThreshold 0: must be 1 to",
        ),
        (
            "  healthCheck: {active: {type: TCP, timeout: 0s}}",
            "active.timeout",
        ),
        (
            "  healthCheck: {active: {type: TCP, tcp: {send: {type: Binary, binary: '!!'}}}}",
            "active.tcp.send.binary",
        ),
        (
            "  healthCheck: {active: {type: TCP, tcp: {receive: {type: Hex}}}}",
            "active.tcp.receive.type",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(accepted(&out, "p"), is("False", "Invalid"), "{spec}");
        assert!(
            message(&out, "p").contains(needle),
            "{spec}: {}",
            message(&out, "p")
        );
        assert!(policy_of(&out, "/a").is_none(), "{spec}");
    }
}
