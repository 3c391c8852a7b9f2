//! BackendTrafficPolicy translation: what reaches each route entry, precedence (rule >
//! route > Gateway), conflicts, invalid values, refused fields and the status ancestors.

use std::time::Duration;

use weir_snapshot::{
    AbortStatus, BackendPolicy, RetryBudget, RetryTriggers, Share, UpstreamConnection,
};
use weir_store::Kind;

use crate::policy::fixture::{self, action, gateway, routes, GW, ROUTE, RULE_A};
use crate::tests::{is, status};
use crate::Output;

/// Gateway `gw` (port 80); HTTPRoute `r` with rules `a` (/a) and `b` (/b) and a rule without
/// a name (/c); HTTPRoute `other` (/o).
const WORLD: &str = concat!(
    gateway!(),
    routes!(
        "    timeouts: {request: 7s}
",
        "  - matches: [{path: {type: PathPrefix, value: /c}}]
    backendRefs: [{name: svc, port: 80}]
"
    )
);

fn policy(name: &str, created: &str, target: &str, spec: &str) -> String {
    fixture::policy(
        Kind::BackendTrafficPolicy,
        name,
        created,
        &format!("[{target}]"),
        spec,
    )
}

fn translate(policies: &[String]) -> Output {
    fixture::translate(WORLD, policies)
}

fn policy_of<'a>(out: &'a Output, path: &str) -> Option<&'a BackendPolicy> {
    action(out, path).policy.as_deref()
}

fn accepted(out: &Output, name: &str) -> (String, String) {
    fixture::condition(out, Kind::BackendTrafficPolicy, name, "Accepted")
}

fn message(out: &Output, name: &str) -> String {
    fixture::message(out, Kind::BackendTrafficPolicy, name)
}

#[test]
fn every_field_compiles_onto_the_routes_of_a_gateway() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "
  retry:
    numRetries: 3
    retryOn: {triggers: [gateway-error, connect-failure, unavailable], httpStatusCodes: [429]}
    perRetry: {timeout: 250ms, backOff: {baseInterval: 10ms, maxInterval: 1s}}
  timeout: {http: {requestTimeout: 3s}, tcp: {connectTimeout: 2s}}
  circuitBreaker: {maxConnections: 10, maxPendingRequests: 5, maxParallelRequests: 20}
",
    )]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    for path in ["/a", "/b", "/c", "/o"] {
        let p = policy_of(&out, path).expect("a policy");
        assert_eq!(&*p.name, "ns/p");
        let r = p.retry.as_ref().unwrap();
        assert_eq!(r.num_retries, 3);
        let t = r.triggers;
        assert!(t.has(RetryTriggers::GATEWAY_ERROR));
        assert!(t.has(RetryTriggers::CONNECT_FAILURE));
        assert!(t.has(RetryTriggers::GRPC_UNAVAILABLE));
        assert!(
            t.has(RetryTriggers::STATUS_CODES),
            "codes imply the trigger"
        );
        assert!(!t.has(RetryTriggers::FIVE_XX));
        assert_eq!(&*r.status_codes, &[429]);
        assert_eq!(r.per_try_timeout, Some(Duration::from_millis(250)));
        assert_eq!(r.base_interval, Duration::from_millis(10));
        assert_eq!(r.max_interval, Duration::from_secs(1));
        assert_eq!(p.connect_timeout, Some(Duration::from_secs(2)));
        let cb = p.circuit_breaker.unwrap();
        assert_eq!(
            (
                cb.max_connections,
                cb.max_pending_requests,
                cb.max_parallel_requests
            ),
            (10, 5, 20)
        );
    }
    // requestTimeout where the rule sets none; the rule's own timeout wins.
    assert_eq!(
        action(&out, "/a").timeouts.request,
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        action(&out, "/b").timeouts.request,
        Some(Duration::from_secs(7))
    );
    let s = status(&out, Kind::BackendTrafficPolicy, "ns", "p");
    assert_eq!(s.status["ancestors"][0]["ancestorRef"]["name"], "gw");
    assert_eq!(
        s.status["ancestors"][0]["conditions"][0]["observedGeneration"],
        2
    );
}

#[test]
fn fault_buffer_connection_and_budget_blocks_compile() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "
  retry:
    numRetries: 3
    budget: {percent: 25, interval: 5s, minRetryRate: {count: 2, interval: 2s}}
  timeout: {http: {connectionIdleTimeout: 30s}}
  circuitBreaker: {maxParallelRetries: 4, maxRequestsPerConnection: 100}
  faultInjection:
    delay: {fixedDelay: 20ms, percentage: 12.5}
    abort: {grpcStatus: 14}
  requestBuffer: {limit: 100Ki}
",
    )]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let p = policy_of(&out, "/a").expect("a policy");
    let f = p.fault.expect("fault");
    let d = f.delay.expect("delay");
    assert_eq!(d.fixed_delay, Duration::from_millis(20));
    assert_eq!(d.share, Share(125_000));
    let a = f.abort.expect("abort");
    assert_eq!(a.status, AbortStatus::Grpc(14));
    assert_eq!(a.share, Share::ALL, "percentage defaults to 100");
    assert_eq!(p.request_buffer, Some(100 * 1024));
    assert_eq!(
        p.connection,
        Some(UpstreamConnection {
            idle_timeout: Some(Duration::from_secs(30)),
            max_requests: Some(100),
        })
    );
    let cb = p.circuit_breaker.unwrap();
    assert_eq!(cb.max_parallel_retries, 4);
    assert_eq!(cb.max_parallel_requests, 1024, "the others keep defaults");
    assert_eq!(
        p.retry_budget,
        Some(RetryBudget {
            percent: 25,
            interval: Duration::from_secs(5),
            min_count: 2,
            min_interval: Duration::from_secs(2),
        })
    );
    // Plain byte counts, HTTP aborts, and Gateway API's budget defaults.
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "  requestBuffer: {limit: 2048}\n  faultInjection: {abort: {httpStatus: 418, percentage: 0.5}}\n  retry: {budget: {}}\n",
    )]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let p = policy_of(&out, "/a").expect("a policy");
    assert_eq!(p.request_buffer, Some(2048));
    let a = p.fault.unwrap().abort.unwrap();
    assert_eq!((a.status, a.share), (AbortStatus::Http(418), Share(5_000)));
    assert_eq!(p.retry_budget, Some(RetryBudget::default()));
    assert_eq!(p.connection, None);
}

#[test]
fn defaults_follow_envoy_gateway() {
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, "  retry: {}")]);
    let r = policy_of(&out, "/a").unwrap().retry.clone().unwrap();
    assert_eq!(r.num_retries, 2);
    assert!(r.triggers.has(RetryTriggers::CONNECT_FAILURE));
    assert_eq!(&*r.status_codes, &[503]);
    assert_eq!(r.base_interval, Duration::from_millis(25));
    assert_eq!(r.max_interval, Duration::from_millis(250));
    assert!(policy_of(&out, "/a").unwrap().circuit_breaker.is_none());
}

#[test]
fn no_policy_costs_routes_nothing() {
    let out = translate(&[]);
    for path in ["/a", "/b", "/o"] {
        assert!(policy_of(&out, path).is_none());
    }
    assert_eq!(action(&out, "/a").timeouts.request, None);
}

#[test]
fn rule_beats_route_beats_gateway() {
    let out = translate(&[
        policy("gw", "2024-01-01T00:00:00Z", GW, "  retry: {numRetries: 1}"),
        policy(
            "route",
            "2024-03-01T00:00:00Z",
            ROUTE,
            "  retry: {numRetries: 2}",
        ),
        policy(
            "rule",
            "2024-05-01T00:00:00Z",
            RULE_A,
            "  retry: {numRetries: 3}",
        ),
    ]);
    let n = |path| {
        policy_of(&out, path)
            .unwrap()
            .retry
            .as_ref()
            .unwrap()
            .num_retries
    };
    assert_eq!(n("/a"), 3, "the rule's own policy");
    assert_eq!(n("/b"), 2, "the route's policy");
    assert_eq!(n("/c"), 2, "a rule without a name: the route's");
    assert_eq!(n("/o"), 1, "another route: the Gateway's");
    for name in ["gw", "route", "rule"] {
        assert_eq!(accepted(&out, name), is("True", "Accepted"), "{name}");
    }
}

#[test]
fn the_oldest_policy_wins_a_target_and_the_other_is_conflicted() {
    let out = translate(&[
        policy(
            "young",
            "2024-06-01T00:00:00Z",
            ROUTE,
            "  retry: {numRetries: 4}",
        ),
        policy(
            "old",
            "2024-01-01T00:00:00Z",
            ROUTE,
            "  retry: {numRetries: 1}",
        ),
    ]);
    assert_eq!(accepted(&out, "old"), is("True", "Accepted"));
    assert_eq!(accepted(&out, "young"), is("False", "Conflicted"));
    let n = policy_of(&out, "/a")
        .unwrap()
        .retry
        .as_ref()
        .unwrap()
        .num_retries;
    assert_eq!(n, 1);
}

#[test]
fn invalid_values_are_refused_and_apply_nowhere() {
    for (spec, needle) in [
        ("  retry: {numRetries: -1}", "numRetries"),
        ("  retry: {numRetries: 11}", "numRetries"),
        ("  retry: {retryOn: {triggers: [sometimes]}}", "sometimes"),
        (
            "  retry: {retryOn: {triggers: [refused-stream]}}",
            "refused-stream",
        ),
        (
            "  retry: {retryOn: {triggers: [retriable-status-codes]}}",
            "httpStatusCodes",
        ),
        ("  retry: {retryOn: {httpStatusCodes: [42]}}", "42"),
        ("  retry: {perRetry: {timeout: soon}}", "perRetry.timeout"),
        (
            "  retry: {perRetry: {backOff: {baseInterval: 1s, maxInterval: 10ms}}}",
            "maxInterval",
        ),
        ("  timeout: {tcp: {connectTimeout: 0s}}", "connectTimeout"),
        (
            "  circuitBreaker: {maxParallelRequests: 0}",
            "maxParallelRequests",
        ),
        (
            "  circuitBreaker: {maxParallelRetries: 0}",
            "spec.circuitBreaker.maxParallelRetries",
        ),
        (
            "  circuitBreaker: {maxRequestsPerConnection: 0}",
            "spec.circuitBreaker.maxRequestsPerConnection",
        ),
        (
            "  timeout: {http: {connectionIdleTimeout: later}}",
            "spec.timeout.http.connectionIdleTimeout",
        ),
        (
            "  faultInjection: {abort: {httpStatus: 99}}",
            "spec.faultInjection.abort.httpStatus",
        ),
        (
            "  faultInjection: {abort: {grpcStatus: 17}}",
            "spec.faultInjection.abort.grpcStatus",
        ),
        (
            "  faultInjection: {abort: {httpStatus: 503, grpcStatus: 14}}",
            "exactly one of httpStatus and grpcStatus",
        ),
        (
            "  faultInjection: {abort: {httpStatus: 503, percentage: 100.5}}",
            "spec.faultInjection.abort.percentage",
        ),
        (
            "  faultInjection: {delay: {fixedDelay: 1s, percentage: -1}}",
            "spec.faultInjection.delay.percentage",
        ),
        (
            "  faultInjection: {delay: {percentage: 10}}",
            "spec.faultInjection.delay.fixedDelay",
        ),
        ("  faultInjection: {}", "spec.faultInjection"),
        ("  requestBuffer: {limit: 1Xi}", "spec.requestBuffer.limit"),
        ("  requestBuffer: {limit: 0}", "spec.requestBuffer.limit"),
        ("  requestBuffer: {limit: 2Gi}", "spec.requestBuffer.limit"),
        (
            "  retry: {budget: {percent: 101}}",
            "spec.retry.budget.percent",
        ),
        (
            "  retry: {budget: {interval: 100ms}}",
            "spec.retry.budget.interval",
        ),
        (
            "  retry: {budget: {minRetryRate: {count: -1}}}",
            "spec.retry.budget.minRetryRate.count",
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

#[test]
fn fields_not_implemented_are_still_refused_by_name() {
    for (spec, field) in [
        (
            "  loadBalancer: {type: Random, zoneAware: {weightedZones: []}}",
            "spec.loadBalancer.zoneAware.weightedZones",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: QueryParams, queryParams: []}}",
            "spec.loadBalancer.consistentHash.queryParams",
        ),
        (
            "  retry: {numRetries: 1, retryBudget: {}}",
            "spec.retry.retryBudget",
        ),
        (
            "  requestBuffer: {limit: 1Mi, mode: LimitOnly}",
            "spec.requestBuffer.mode",
        ),
        (
            "  faultInjection: {abort: {httpStatus: 503, headerAbort: true}}",
            "spec.faultInjection.abort.headerAbort",
        ),
        (
            "  retry: {budget: {percent: 10, burst: 3}}",
            "spec.retry.budget.burst",
        ),
        (
            "  healthCheck: {active: {type: HTTP, http: {path: /h, expectedResponse: {}}}}",
            "spec.healthCheck.active.http.expectedResponse",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(
            accepted(&out, "p"),
            is("False", "UnsupportedValue"),
            "{spec}"
        );
        assert!(
            message(&out, "p").contains(field),
            "{spec}: {}",
            message(&out, "p")
        );
        assert!(policy_of(&out, "/a").is_none(), "{spec}");
    }
}

#[test]
fn a_missing_target_or_rule_is_target_not_found() {
    let missing = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: zzz}";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", missing, "  retry: {}")]);
    assert_eq!(accepted(&out, "p"), is("False", "TargetNotFound"));
    assert!(policy_of(&out, "/a").is_none());
}

#[test]
fn a_listener_or_service_target_is_not_implemented() {
    let listener = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", listener, "  retry: {}")]);
    assert_eq!(accepted(&out, "p"), is("False", "UnsupportedValue"));
    assert!(policy_of(&out, "/a").is_none());
}

#[test]
fn a_grpc_route_rule_gets_its_policy() {
    let world = concat!(
        gateway!(),
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: echo
    matches: [{method: {service: pkg.Echo}}]
    backendRefs: [{name: svc, port: 80}]
  - matches: [{method: {service: pkg.Other}}]
    backendRefs: [{name: svc, port: 80}]
"
    );
    let rule = "{group: gateway.networking.k8s.io, kind: GRPCRoute, name: g, sectionName: echo}";
    let out = fixture::translate(
        world,
        &[policy(
            "p",
            "2024-01-01T00:00:00Z",
            rule,
            "  retry: {numRetries: 4}",
        )],
    );
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let n = |path| policy_of(&out, path).map(|p| p.retry.as_ref().unwrap().num_retries);
    assert_eq!(n("/pkg.Echo/Say"), Some(4));
    assert_eq!(n("/pkg.Other/Say"), None, "another rule of the route");
}

// ---------------------------------------------------------------------------------------
// loadBalancer

#[test]
fn load_balancer_types_compile_to_the_snapshot() {
    use weir_snapshot::{HashOn, LbKind};
    let lb = |spec: &str| {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(
            accepted(&out, "p"),
            is("True", "Accepted"),
            "{spec}: {}",
            message(&out, "p")
        );
        policy_of(&out, "/a")
            .unwrap()
            .load_balancer
            .clone()
            .unwrap()
    };
    let l = lb("  loadBalancer: {type: RoundRobin, slowStart: {window: 30s}}");
    assert_eq!(l.kind, LbKind::RoundRobin);
    assert_eq!(l.slow_start, Some(Duration::from_secs(30)));
    assert_eq!(lb("  loadBalancer: {type: Random}").kind, LbKind::Random);
    assert_eq!(
        lb("  loadBalancer: {type: LeastRequest}").kind,
        LbKind::LeastRequest
    );
    assert_eq!(
        lb("  loadBalancer: {type: ConsistentHash, consistentHash: {type: SourceIP}}").kind,
        LbKind::ConsistentHash {
            on: HashOn::SourceIp,
            table_size: 65_537
        }
    );
    assert_eq!(
        lb("  loadBalancer: {type: ConsistentHash, consistentHash: {type: Header, header: {name: X-User}, tableSize: 101}}").kind,
        LbKind::ConsistentHash {
            on: HashOn::Header(http::HeaderName::from_static("x-user")),
            table_size: 101
        }
    );
    let l = lb("  loadBalancer: {type: ConsistentHash, consistentHash: {type: Cookie, cookie: {name: sticky, ttl: 1h, attributes: {SameSite: Strict, Path: /}}}}");
    let LbKind::ConsistentHash {
        on: HashOn::Cookie(c),
        ..
    } = l.kind
    else {
        panic!("{l:?}")
    };
    assert_eq!(&*c.name, "sticky");
    assert_eq!(c.ttl, Some(Duration::from_secs(3600)));
    let l = lb("  loadBalancer: {type: LeastRequest, zoneAware: {preferLocal: {}}}");
    assert_eq!(
        l.prefer_local,
        Some(weir_snapshot::PreferLocal {
            min_endpoints: 6,
            force_min_local: None
        })
    );
    let l = lb("  loadBalancer: {type: RoundRobin, zoneAware: {preferLocal: {minEndpointsThreshold: 2, force: {minEndpointsInZoneThreshold: 3}}}}");
    assert_eq!(
        l.prefer_local,
        Some(weir_snapshot::PreferLocal {
            min_endpoints: 2,
            force_min_local: Some(3)
        })
    );
    assert_eq!(
        &*c.attributes,
        &[
            ("Path".to_string(), "/".to_string()),
            ("SameSite".to_string(), "Strict".to_string())
        ]
    );
}

#[test]
fn invalid_load_balancer_values_are_refused_naming_the_field() {
    for (spec, needle) in [
        ("  loadBalancer: {type: Fastest}", "spec.loadBalancer.type"),
        ("  loadBalancer: {slowStart: {window: 1s}}", "spec.loadBalancer.type"),
        ("  loadBalancer: {type: ConsistentHash}", "spec.loadBalancer.consistentHash"),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: SourceIP, tableSize: 65536}}",
            "spec.loadBalancer.consistentHash.tableSize",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: SourceIP, tableSize: 5000021}}",
            "spec.loadBalancer.consistentHash.tableSize",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Header}}",
            "spec.loadBalancer.consistentHash.header.name",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Header, header: {name: 'a b'}}}",
            "spec.loadBalancer.consistentHash.header.name",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Cookie}}",
            "spec.loadBalancer.consistentHash.cookie.name",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Cookie, cookie: {name: c, attributes: {Path: 'a;b'}}}}",
            "spec.loadBalancer.consistentHash.cookie.attributes",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Cookie, cookie: {name: c, ttl: never}}}",
            "spec.loadBalancer.consistentHash.cookie.ttl",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Everything}}",
            "spec.loadBalancer.consistentHash.type",
        ),
        (
            "  loadBalancer: {type: Random, consistentHash: {type: SourceIP}}",
            "spec.loadBalancer.consistentHash",
        ),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: SourceIP}, slowStart: {window: 1s}}",
            "spec.loadBalancer.slowStart",
        ),
        ("  loadBalancer: {type: RoundRobin, slowStart: {window: 0s}}", "spec.loadBalancer.slowStart.window"),
        ("  loadBalancer: {type: RoundRobin, slowStart: {}}", "spec.loadBalancer.slowStart.window"),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: SourceIP}, zoneAware: {preferLocal: {}}}",
            "spec.loadBalancer.zoneAware.preferLocal",
        ),
        (
            "  loadBalancer: {type: Random, zoneAware: {preferLocal: {minEndpointsThreshold: 0}}}",
            "spec.loadBalancer.zoneAware.preferLocal.minEndpointsThreshold",
        ),
        (
            "  loadBalancer: {type: Random, zoneAware: {preferLocal: {force: {minEndpointsInZoneThreshold: -1}}}}",
            "minEndpointsInZoneThreshold",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(accepted(&out, "p"), is("False", "Invalid"), "{spec}: {}", message(&out, "p"));
        assert!(message(&out, "p").contains(needle), "{spec}: {}", message(&out, "p"));
        assert!(policy_of(&out, "/a").is_none(), "{spec}");
    }
}

mod health;

#[test]
fn compression_compiles_in_order_with_levels_and_lengths() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        ROUTE,
        "
  compression:
  - type: Zstd
    zstd: {compressionLevel: 5}
  - type: Brotli
    minContentLength: 1Ki
  - type: Gzip
    gzip: {compressionLevel: 9}
    minContentLength: 100
    contentTypes: [application/json, Text/*]",
    )]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let c = policy_of(&out, "/a")
        .and_then(|p| p.compression.clone())
        .expect("compression");
    let got: Vec<_> = c
        .compressors
        .iter()
        .map(|c| (c.coding, c.level, c.min_content_length))
        .collect();
    assert_eq!(
        got,
        [
            (weir_snapshot::Coding::Zstd, Some(5), 30),
            (weir_snapshot::Coding::Brotli, None, 1024),
            (weir_snapshot::Coding::Gzip, Some(9), 100),
        ]
    );
    let types = c.compressors[2].content_types.as_deref().expect("types");
    assert_eq!(
        types.iter().map(|t| &**t).collect::<Vec<_>>(),
        ["application/json", "text/*"]
    );
    assert!(c.compressors[0].content_types.is_none());
    // A route without the policy has none.
    assert!(policy_of(&out, "/o").is_none());
}

#[test]
fn compression_refuses_bad_values_naming_the_field() {
    for (spec, field) in [
        ("  compression: []", "spec.compression"),
        ("  compression: [{type: Lz4}]", "spec.compression[0].type"),
        (
            "  compression: [{minContentLength: 50}]",
            "spec.compression[0].type",
        ),
        (
            "  compression: [{type: Gzip}, {type: Gzip}]",
            "spec.compression[1].type",
        ),
        (
            "  compression: [{type: Gzip, brotli: {quality: 3}}]",
            "spec.compression[0].brotli",
        ),
        (
            "  compression: [{type: Gzip, gzip: {compressionLevel: 10}}]",
            "spec.compression[0].gzip.compressionLevel",
        ),
        (
            "  compression: [{type: Brotli, brotli: {quality: 12}}]",
            "spec.compression[0].brotli.quality",
        ),
        (
            "  compression: [{type: Zstd, zstd: {compressionLevel: 0}}]",
            "spec.compression[0].zstd.compressionLevel",
        ),
        (
            "  compression: [{type: Gzip, minContentLength: 10}]",
            "spec.compression[0].minContentLength",
        ),
        (
            "  compression: [{type: Gzip, minContentLength: lots}]",
            "spec.compression[0].minContentLength",
        ),
        (
            "  compression: [{type: Gzip, contentTypes: [html]}]",
            "spec.compression[0].contentTypes",
        ),
        (
            "  compression: [{type: Gzip, contentTypes: []}]",
            "spec.compression[0].contentTypes",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(accepted(&out, "p"), is("False", "Invalid"), "{spec}");
        assert!(
            message(&out, "p").contains(field),
            "{spec}: {}",
            message(&out, "p")
        );
        assert!(policy_of(&out, "/a").is_none(), "{spec}");
    }
    for (spec, field) in [
        (
            "  compression: [{type: Gzip, gzip: {windowBits: 12}}]",
            "spec.compression[0].gzip.windowBits",
        ),
        (
            "  compression: [{type: Brotli, brotli: {encoderMode: Text}}]",
            "spec.compression[0].brotli.encoderMode",
        ),
        (
            "  compression: [{type: Zstd, zstd: {strategy: Fast}}]",
            "spec.compression[0].zstd.strategy",
        ),
        (
            "  compression: [{type: Gzip, chunkSize: 4096}]",
            "spec.compression[0].chunkSize",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(
            accepted(&out, "p"),
            is("False", "UnsupportedValue"),
            "{spec}"
        );
        assert!(
            message(&out, "p").contains(field),
            "{spec}: {}",
            message(&out, "p")
        );
    }
}

#[test]
fn response_cache_compiles_with_defaults_and_refuses_bad_bounds() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        ROUTE,
        "  responseCache: {maxSize: 8Mi, maxEntrySize: 64Ki, maxEntries: 500}",
    )]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let c = policy_of(&out, "/a")
        .and_then(|p| p.response_cache)
        .expect("cache");
    assert_eq!(
        (c.max_size, c.max_entry_size, c.max_entries),
        (8 << 20, 64 << 10, 500)
    );
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        ROUTE,
        "  responseCache: {}",
    )]);
    let c = policy_of(&out, "/a")
        .and_then(|p| p.response_cache)
        .expect("cache");
    assert_eq!(
        (c.max_size, c.max_entry_size, c.max_entries),
        (64 << 20, 1 << 20, 10_000)
    );
    for (spec, field, reason) in [
        (
            "  responseCache: {maxSize: 1Mi, maxBodySize: 2Mi}",
            "spec.responseCache.maxBodySize",
            "Invalid",
        ),
        (
            "  responseCache: {maxSize: 12}",
            "spec.responseCache.maxSize",
            "Invalid",
        ),
        (
            "  responseCache: {maxEntries: 0}",
            "spec.responseCache.maxEntries",
            "Invalid",
        ),
        (
            "  responseCache: {ttl: 10s}",
            "spec.responseCache.ttl",
            "UnsupportedValue",
        ),
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(accepted(&out, "p"), is("False", reason), "{spec}");
        assert!(
            message(&out, "p").contains(field),
            "{spec}: {}",
            message(&out, "p")
        );
    }
}
mod rate_limit;
