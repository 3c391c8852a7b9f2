//! ClientTrafficPolicy translation: what reaches each socket, precedence, conflicts,
//! TargetNotFound, refused fields and the status ancestors. (The policy kinds whose fields
//! are still to come are checked here too: they share the unsupported-field rule.)

use std::time::Duration;

use weir_snapshot::{ClientIpDetection, ClientPolicy, RequestIdMode, TlsVersion};
use weir_store::Kind;

use crate::policy::fixture::{self, GW};
use crate::tests::{cond, has_status, is, run, status, store_with_class};
use crate::Output;

/// Gateway `gw`: listeners `http` (80), `other` (80, another hostname) and `admin` (8080);
/// Gateway `gw2` (of another class) on 9090.
const GATEWAYS: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns, generation: 1}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: a.example}
  - {name: other, port: 80, protocol: HTTP, hostname: b.example}
  - {name: admin, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: ns}
spec:
  gatewayClassName: someone-else
  listeners:
  - {name: http, port: 9090, protocol: HTTP}
";

fn policy(name: &str, created: &str, target: &str, spec: &str) -> String {
    fixture::policy(
        Kind::ClientTrafficPolicy,
        name,
        created,
        &format!("[{target}]"),
        spec,
    )
}

fn translate(policies: &[String]) -> Output {
    fixture::translate(GATEWAYS, policies)
}

fn socket_policy(out: &Output, port: u16) -> Option<&ClientPolicy> {
    out.snapshot
        .socket(None, port)
        .expect("socket")
        .client_policy
        .as_deref()
}

fn accepted(out: &Output, name: &str) -> (String, String) {
    fixture::condition(out, Kind::ClientTrafficPolicy, name, "Accepted")
}

#[test]
fn a_gateway_policy_compiles_onto_every_socket_of_the_gateway() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "
  clientIPDetection: {xForwardedFor: {trustedCIDRs: [10.0.0.0/8, 192.0.2.1]}}
  proxyProtocol: {optional: true}
  headers: {maxRequestHeaderLimit: 16Ki, requestID: Generate, disableRateLimitHeaders: true}
  timeout: {http: {requestReceivedTimeout: 5s, idleTimeout: 1m}, tcp: {idleTimeout: 30s}}
  connection: {connectionLimit: {value: 100}, bufferLimit: 32768}
  tls: {minVersion: '1.3', alpnProtocols: [http/1.1]}
  http2: {maxConcurrentStreams: 50, initialStreamWindowSize: 1Mi}
",
    )]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    for port in [80, 8080] {
        let p = socket_policy(&out, port).expect("a policy");
        assert_eq!(&*p.name, "ns/p");
        let Some(ClientIpDetection::TrustedCidrs(cidrs)) = &p.client_ip else {
            panic!("trusted CIDRs: {:?}", p.client_ip);
        };
        assert_eq!(cidrs.len(), 2);
        assert!(cidrs[1].contains("192.0.2.1".parse().unwrap()));
        assert!(p.proxy_protocol.unwrap().optional);
        assert_eq!(p.max_request_header_bytes, Some(16 * 1024));
        assert_eq!(p.request_id, Some(RequestIdMode::Generate));
        assert!(p.disable_rate_limit_headers);
        assert_eq!(p.request_received_timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.http_idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(p.tcp_idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(p.connection_limit, Some(100));
        assert_eq!(p.buffer_limit, Some(32768));
        let tls = p.tls.as_ref().unwrap();
        assert_eq!(tls.min_version, Some(TlsVersion::V1_3));
        assert_eq!(tls.alpn_protocols.len(), 1);
        let h2 = p.http2.unwrap();
        assert_eq!(h2.max_concurrent_streams, Some(50));
        assert_eq!(h2.initial_stream_window_size, Some(1 << 20));
    }
    // The ancestors entry: our Gateway, our controller, the policy's generation.
    let s = status(&out, Kind::ClientTrafficPolicy, "ns", "p");
    let ancestor = &s.status["ancestors"][0];
    assert_eq!(ancestor["ancestorRef"]["name"], "gw");
    assert_eq!(ancestor["conditions"][0]["observedGeneration"], 2);
    assert_eq!(s.status["ancestors"].as_array().unwrap().len(), 1);
}

#[test]
fn no_policy_leaves_sockets_without_one() {
    let out = translate(&[]);
    assert!(socket_policy(&out, 80).is_none());
    assert!(socket_policy(&out, 8080).is_none());
}

#[test]
fn a_listener_policy_beats_the_gateway_policy() {
    let admin = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: admin}";
    let out = translate(&[
        policy(
            "whole",
            "2024-01-01T00:00:00Z",
            GW,
            "  connection: {connectionLimit: {value: 10}}",
        ),
        policy(
            "admin",
            "2024-02-01T00:00:00Z",
            admin,
            "  connection: {connectionLimit: {value: 2}}",
        ),
    ]);
    assert_eq!(socket_policy(&out, 80).unwrap().connection_limit, Some(10));
    assert_eq!(socket_policy(&out, 8080).unwrap().connection_limit, Some(2));
    assert_eq!(accepted(&out, "whole"), is("True", "Accepted"));
    assert_eq!(accepted(&out, "admin"), is("True", "Accepted"));
}

#[test]
fn the_oldest_policy_wins_a_target_and_the_others_are_conflicted() {
    let out = translate(&[
        policy(
            "newer",
            "2024-03-01T00:00:00Z",
            GW,
            "  connection: {connectionLimit: {value: 3}}",
        ),
        policy(
            "older",
            "2024-01-01T00:00:00Z",
            GW,
            "  connection: {connectionLimit: {value: 7}}",
        ),
    ]);
    assert_eq!(socket_policy(&out, 80).unwrap().connection_limit, Some(7));
    assert_eq!(accepted(&out, "older"), is("True", "Accepted"));
    assert_eq!(accepted(&out, "newer"), is("False", "Conflicted"));
}

#[test]
fn listeners_sharing_a_port_cannot_get_different_policies() {
    let http = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}";
    let out = translate(&[
        policy(
            "whole",
            "2024-01-01T00:00:00Z",
            GW,
            "  connection: {connectionLimit: {value: 10}}",
        ),
        policy(
            "one-listener",
            "2024-02-01T00:00:00Z",
            http,
            "  connection: {connectionLimit: {value: 1}}",
        ),
    ]);
    // Port 80 is shared by `http` and `other`: the Gateway's policy applies to it.
    assert_eq!(socket_policy(&out, 80).unwrap().connection_limit, Some(10));
    let s = status(&out, Kind::ClientTrafficPolicy, "ns", "one-listener");
    let lines = s.condition_lines();
    assert_eq!(accepted(&out, "one-listener"), is("False", "Conflicted"));
    assert!(lines[0].4.contains("shares port 80"), "{lines:?}");
}

#[test]
fn targets_that_do_not_exist_are_target_not_found() {
    let missing_listener =
        "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: nope}";
    let out = translate(&[
        policy(
            "no-listener",
            "2024-01-01T00:00:00Z",
            missing_listener,
            "  connection: {connectionLimit: {value: 1}}",
        ),
        policy(
            "no-gateway",
            "2024-01-01T00:00:00Z",
            "{group: gateway.networking.k8s.io, kind: Gateway, name: ghost}",
            "",
        ),
    ]);
    assert_eq!(accepted(&out, "no-listener"), is("False", "TargetNotFound"));
    assert!(socket_policy(&out, 80).is_none());
    let s = status(&out, Kind::ClientTrafficPolicy, "ns", "no-gateway");
    assert_eq!(
        cond(s, "parent ns/ghost", "Accepted"),
        is("False", "TargetNotFound")
    );
}

#[test]
fn a_gateway_of_another_controller_gets_no_ancestor_entry() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        "{group: gateway.networking.k8s.io, kind: Gateway, name: foreign}",
        "  connection: {connectionLimit: {value: 1}}",
    )]);
    let s = status(&out, Kind::ClientTrafficPolicy, "ns", "p");
    assert_eq!(s.status["ancestors"].as_array().unwrap().len(), 0);
}

#[test]
fn unimplemented_fields_are_refused_by_name() {
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        GW,
        "
  tcpKeepalive: {idleTime: 20m}
  headers: {requestID: Preserve, withUnderscoresAction: RejectRequest}
  connection: {connectionLimit: {value: 5}}
",
    )]);
    assert_eq!(accepted(&out, "p"), is("False", "UnsupportedValue"));
    let lines = status(&out, Kind::ClientTrafficPolicy, "ns", "p").condition_lines();
    let message = &lines[0].4;
    assert!(message.contains("spec.tcpKeepalive"), "{message}");
    assert!(
        message.contains("spec.headers.withUnderscoresAction"),
        "{message}"
    );
    // Refused: none of it applies, not even the fields Weir has.
    assert!(socket_policy(&out, 80).is_none());
}

#[test]
fn invalid_values_are_refused() {
    for spec in [
        "  timeout: {http: {idleTimeout: 0s}}",
        "  timeout: {http: {idleTimeout: soon}}",
        "  headers: {maxRequestHeaderLimit: 10}",
        "  headers: {requestID: Sometimes}",
        "  clientIPDetection: {xForwardedFor: {trustedCIDRs: [not-a-block]}}",
        "  clientIPDetection: {xForwardedFor: {numTrustedHops: 1, trustedCIDRs: [10.0.0.0/8]}}",
        "  tls: {minVersion: '1.3', maxVersion: '1.2'}",
        "  tls: {maxVersion: '1.1'}",
        "  tls: {ciphers: [ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER]}",
        "  connection: {connectionLimit: {value: 0}}",
        "  connection: {bufferLimit: 2Ti}",
    ] {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, spec)]);
        assert_eq!(accepted(&out, "p"), is("False", "Invalid"), "{spec}");
        assert!(socket_policy(&out, 80).is_none(), "{spec}");
    }
}

#[test]
fn a_changed_spec_is_a_new_identity_and_an_unchanged_one_keeps_it() {
    let spec = |n: u32| format!("  connection: {{connectionLimit: {{value: {n}}}}}");
    let id = |n| {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", GW, &spec(n))]);
        socket_policy(&out, 80).unwrap().id
    };
    assert_eq!(id(5), id(5));
    assert_ne!(id(5), id(6));
}

#[test]
fn backend_and_security_policies_refuse_every_field_until_implemented() {
    let yaml = format!(
        "{GATEWAYS}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: ns}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
---
apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: retries, namespace: ns}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  tcpKeepalive: {{probes: 3}}
---
apiVersion: gateway.weir.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: nothing, namespace: ns}}
spec:
  targetRef: {{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}
---
apiVersion: gateway.weir.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: jwt, namespace: ns}}
spec:
  targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}
  oidc: {{provider: {{issuer: x}}}}
"
    );
    let out = run(&store_with_class(&yaml));
    let backend = status(&out, Kind::BackendTrafficPolicy, "ns", "retries");
    // The route's Gateway is the ancestor.
    assert_eq!(
        cond(backend, "parent ns/gw", "Accepted"),
        is("False", "UnsupportedValue")
    );
    assert!(backend.condition_lines()[0].4.contains("spec.tcpKeepalive"));
    let nothing = status(&out, Kind::SecurityPolicy, "ns", "nothing");
    assert_eq!(
        cond(nothing, "parent ns/gw", "Accepted"),
        is("True", "Accepted")
    );
    let jwt = status(&out, Kind::SecurityPolicy, "ns", "jwt");
    assert_eq!(
        cond(jwt, "parent ns/gw", "Accepted"),
        is("False", "UnsupportedValue")
    );
    assert!(jwt.condition_lines()[0].4.contains("spec.oidc"));
    assert!(has_status(&out, Kind::SecurityPolicy, "ns", "jwt"));
}
