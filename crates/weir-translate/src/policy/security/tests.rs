//! SecurityPolicy translation: what reaches each route entry, precedence, every refusal and
//! Invalid reason, fail closed, and the status ancestors.

use http::Method;
use weir_snapshot::{JwtKeys, KeySource, Security};
use weir_store::Kind;

use crate::policy::fixture::{self, action, gateway, routes, GW, ROUTE, RULE_A};
use crate::tests::{is, run, status, store_with_class};
use crate::Output;

/// Gateway `gw`; HTTPRoute `r` with rules `a` (/a) and `b` (/b); HTTPRoute `other` (/o);
/// Secrets `users` (.htpasswd) and `keys` (client → key) in `ns`, `far-users` in `far`.
const WORLD: &str = concat!(
    gateway!(),
    routes!("", ""),
    "---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: ns}
stringData:
  .htpasswd: |
    # comment
    alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
    bob:$2y$05$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY1
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: ns}
stringData: {client-1: key-one-SECRET, client-2: key-two-SECRET}
---
apiVersion: v1
kind: Secret
metadata: {name: far-users, namespace: far}
stringData:
  .htpasswd: 'carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g='
"
);

const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"}]}"#;

fn policy(name: &str, created: &str, target: &str, spec: &str) -> String {
    fixture::policy(
        Kind::SecurityPolicy,
        name,
        created,
        &format!("[{target}]"),
        spec,
    )
}

fn translate(policies: &[String]) -> Output {
    fixture::translate(WORLD, policies)
}

fn security<'a>(out: &'a Output, path: &str) -> Option<&'a Security> {
    action(out, path).security.as_deref()
}

fn accepted(out: &Output, name: &str) -> (String, String) {
    fixture::condition(out, Kind::SecurityPolicy, name, "Accepted")
}

fn message(out: &Output, name: &str) -> String {
    fixture::message(out, Kind::SecurityPolicy, name)
}

#[test]
fn every_mechanism_compiles_onto_the_targeted_routes_only() {
    let spec = format!(
        "  cors: {{allowOrigins: ['https://*.example.com'], allowMethods: [GET], maxAge: 10m}}
  basicAuth: {{users: {{name: users}}, forwardUsernameHeader: x-user}}
  apiKeyAuth:
    credentialRefs: [{{name: keys}}]
    extractFrom: [{{headers: [x-api-key]}}, {{params: [key], cookies: [k]}}]
    forwardClientIDHeader: x-client
    sanitize: true
  jwt:
    optional: true
    providers:
    - name: local
      issuer: https://issuer.example
      audiences: [api]
      localJWKS: {{type: Inline, inline: '{JWKS}'}}
      claimToHeaders: [{{header: x-sub, claim: sub}}]
      extractFrom: {{headers: [{{name: x-token, valuePrefix: 'Tok '}}], cookies: [jwt]}}
    - name: remote
      remoteJWKS: {{uri: 'http://127.0.0.1:9/jwks', cacheDuration: 30s}}
    - name: idp
      remoteJWKS: {{uri: 'https://idp.example/.well-known/jwks.json'}}
  authorization:
    defaultAction: Deny
    rules:
    - name: office
      action: Allow
      operation: {{methods: [GET]}}
      principal: {{clientCIDRs: [10.0.0.0/8], jwt: {{provider: local, scopes: [read], claims: [{{name: user.roles, valueType: StringArray, values: [admin]}}]}}}}
"
    );
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", ROUTE, &spec)]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let s = security(&out, "/a").expect("policy on /a");
    assert!(s.deny.is_none());
    assert_eq!(&*s.name, "ns/p");
    assert_eq!(s.cors.as_ref().unwrap().max_age.as_ref().unwrap(), "600");
    let basic = s.basic.as_ref().unwrap();
    assert_eq!(basic.users.0.len(), 2);
    assert_eq!(basic.forward_username_header.as_ref().unwrap(), "x-user");
    let keys = s.api_key.as_ref().unwrap();
    assert_eq!(keys.keys.0.len(), 2);
    assert!(keys.sanitize);
    assert_eq!(
        keys.sources,
        [
            KeySource::Header {
                name: http::HeaderName::from_static("x-api-key"),
                prefix: String::new()
            },
            KeySource::Param("key".into()),
            KeySource::Cookie("k".into())
        ]
    );
    let jwt = s.jwt.as_ref().unwrap();
    assert!(jwt.optional);
    assert!(matches!(&jwt.providers[0].keys, JwtKeys::Local(k) if k.0.len() == 1));
    assert!(matches!(&jwt.providers[1].keys,
        JwtKeys::Remote { cache_duration, .. } if cache_duration.as_secs() == 30));
    // https is fetched (verified against public roots and --jwks-ca).
    assert!(matches!(&jwt.providers[2].keys,
        JwtKeys::Remote { uri, .. } if &**uri == "https://idp.example/.well-known/jwks.json"));
    // The default token source of a provider without extractFrom.
    assert_eq!(
        jwt.providers[1].sources,
        [KeySource::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into()
        }]
    );
    let authz = s.authorization.as_ref().unwrap();
    assert!(!authz.default_allow);
    assert_eq!(
        authz.rules[0].jwt.as_ref().unwrap().claims[0].path,
        ["user", "roles"]
    );
    // Both rules of the route share it; the other route pays nothing.
    assert!(std::ptr::eq(s, security(&out, "/b").unwrap()));
    assert!(security(&out, "/o").is_none());
    // No credential reaches /debug/snapshot (the snapshot's Debug).
    let dump = format!("{:#?}", out.snapshot);
    for secret in ["key-one-SECRET", "W6ph5Mm5Pz8", "11qYAYKxCrfVS", "alice"] {
        assert!(!dump.contains(secret), "{secret} in the snapshot dump");
    }
}

#[test]
fn the_most_specific_policy_wins_and_the_oldest_holds_a_target() {
    let cors = "  cors: {allowOrigins: ['*']}\n";
    let out = translate(&[
        policy("gateway", "2024-01-01T00:00:00Z", GW, cors),
        policy("rule", "2024-01-02T00:00:00Z", RULE_A, cors),
        policy("late", "2024-01-03T00:00:00Z", RULE_A, cors),
    ]);
    assert_eq!(&*security(&out, "/a").unwrap().name, "ns/rule");
    assert_eq!(&*security(&out, "/b").unwrap().name, "ns/gateway");
    assert_eq!(&*security(&out, "/o").unwrap().name, "ns/gateway");
    assert_eq!(accepted(&out, "late"), is("False", "Conflicted"));
    assert_eq!(accepted(&out, "rule"), is("True", "Accepted"));
}

/// Every way a policy is refused: the reason, the field named, and the targets failing
/// closed (a deny-all on their entries) rather than serving unauthenticated.
#[test]
fn refused_policies_fail_closed() {
    let cases: &[(&str, &str, &str)] = &[
        ("  extAuth: {http: {backendRefs: [{name: nope, port: 80}]}}\n", "Invalid", "spec.extAuth.http.backendRef: Service ns/nope"),
        ("  extAuth: {grpc: {backendRef: {name: svc}}}\n", "Invalid", "spec.extAuth.grpc.backendRef"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 81}]}}\n", "Invalid", "81"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80, namespace: far}]}}\n", "Invalid", "ReferenceGrant"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80, kind: Backend, group: gateway.envoyproxy.io}]}}\n", "Invalid", "is not a Service"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80}]}, grpc: {backendRefs: [{name: svc, port: 80}]}}\n", "Invalid", "exactly one of http and grpc"),
        ("  extAuth: {headersToExtAuth: [x-a]}\n", "Invalid", "exactly one of http and grpc"),
        ("  extAuth: {http: {}}\n", "Invalid", "a backendRef is required"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80}, {name: svc, port: 80}]}}\n", "UnsupportedValue", "more than one backendRef"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80, fallback: true}]}}\n", "UnsupportedValue", "spec.extAuth.http.backendRefs[0].fallback"),
        ("  extAuth: {grpc: {backendRefs: [{name: svc, port: 80}]}, recomputeRoute: true}\n", "UnsupportedValue", "spec.extAuth.recomputeRoute"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80}], backendSettings: {}}}\n", "UnsupportedValue", "spec.extAuth.http.backendSettings"),
        ("  extAuth: {grpc: {backendRefs: [{name: svc, port: 80}]}, bodyToExtAuth: {maxRequestBytes: 1, x: 1}}\n", "UnsupportedValue", "spec.extAuth.bodyToExtAuth.x"),
        ("  extAuth: {grpc: {backendRefs: [{name: svc, port: 80}]}, bodyToExtAuth: {maxRequestBytes: 0}}\n", "Invalid", "maxRequestBytes"),
        ("  extAuth: {grpc: {backendRefs: [{name: svc, port: 80}]}, timeout: soon}\n", "Invalid", "spec.extAuth.timeout"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80}], path: 'no-slash'}}\n", "Invalid", "http.path"),
        ("  extAuth: {http: {backendRefs: [{name: svc, port: 80}], headersToBackend: ['bad header']}}\n", "Invalid", "bad header"),
        ("  oidc: {provider: {issuer: x}}\n", "UnsupportedValue", "spec.oidc"),
        ("  basicAuth: {users: {name: users}, realm: x}\n", "UnsupportedValue", "spec.basicAuth.realm"),
        ("  authorization: {rules: [{action: Allow, principal: {sourceCIDRs: [x]}}]}\n", "UnsupportedValue", "spec.authorization.rules[0].principal.sourceCIDRs"),
        ("  basicAuth: {users: {name: nope}}\n", "Invalid", "Secret ns/nope does not exist"),
        ("  basicAuth: {users: {name: keys}}\n", "Invalid", "no .htpasswd key"),
        ("  basicAuth: {users: {name: far-users, namespace: far}}\n", "Invalid", "no ReferenceGrant"),
        ("  apiKeyAuth: {credentialRefs: [{name: keys}]}\n", "Invalid", "extractFrom"),
        ("  apiKeyAuth: {credentialRefs: [{name: gone}], extractFrom: [{headers: [k]}]}\n", "Invalid", "Secret ns/gone does not exist"),
        ("  jwt: {providers: []}\n", "Invalid", "at least one provider"),
        ("  jwt: {providers: [{name: x, localJWKS: {inline: 'not json'}}]}\n", "Invalid", "not a JSON Web Key Set"),
        ("  jwt: {providers: [{name: x, localJWKS: {type: ValueRef, valueRef: {kind: ConfigMap, name: nope}}}]}\n", "Invalid", "ConfigMap ns/nope does not exist"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'ftp://idp.example/jwks'}}]}\n", "Invalid", "not an http:// or https:// URL"),
        ("  authorization: {rules: [{action: Allow, principal: {clientCIDRs: [10.0.0.0/8]}, operation: {paths: [{type: RegularExpression, value: '/a/(unclosed'}]}}]}\n", "Invalid", "spec.authorization.rules[0].operation.paths[0].value"),
        ("  authorization: {rules: [{action: Allow, principal: {clientCIDRs: [10.0.0.0/8]}, operation: {paths: [{value: /b}, {type: Exact, value: a}]}}]}\n", "Invalid", "paths[1].value \"a\" must start with '/'"),
        ("  authorization: {rules: [{action: Allow, principal: {clientCIDRs: [10.0.0.0/8]}, operation: {paths: [{type: Glob, value: /a}]}}]}\n", "Invalid", "paths[0].type \"Glob\""),
        ("  authorization: {rules: [{action: Allow, principal: {clientCIDRs: [10.0.0.0/8]}, operation: {paths: [{value: '/a%2Fb'}]}}]}\n", "Invalid", "encoded slash"),
        ("  authorization: {rules: [{action: Allow, principal: {clientCIDRs: [10.0.0.0/8]}, operation: {paths: [{value: /a, ignoreCase: true}]}}]}\n", "UnsupportedValue", "spec.authorization.rules[0].operation.paths[0].ignoreCase"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', backendRefs: [{name: nope, port: 80}]}}]}\n", "Invalid", "spec.jwt.providers[0].remoteJWKS.backendRefs[0]: Service ns/nope"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', backendRefs: [{name: svc, port: 81}]}}]}\n", "Invalid", "81"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', backendRefs: [{name: svc, port: 80, namespace: far}]}}]}\n", "Invalid", "ReferenceGrant"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'https://idp/jwks', backendRefs: [{name: svc, port: 80}]}}]}\n", "Invalid", "no BackendTLSPolicy targets Service ns/svc:80"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', backendRefs: [{name: svc, port: 80}, {name: svc, port: 80}]}}]}\n", "UnsupportedValue", "more than one backendRef"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', backendRef: {name: svc, port: 80}}}]}\n", "UnsupportedValue", "spec.jwt.providers[0].remoteJWKS.backendRef"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', backendRefs: [{name: svc, port: 80}], backendSettings: {retry: {}}}}]}\n", "UnsupportedValue", "spec.jwt.providers[0].remoteJWKS.backendSettings"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', backendRefs: [{name: svc, port: 80, kind: Backend, group: gateway.envoyproxy.io}]}}]}\n", "Invalid", "is not a Service"),
        ("  jwt: {providers: [{name: x, remoteJWKS: {uri: 'http://idp/jwks', cacheDuration: soon}}]}\n", "Invalid", "cacheDuration"),
        ("  authorization: {defaultAction: Maybe}\n", "Invalid", "defaultAction"),
        ("  authorization: {rules: [{action: Allow, principal: {jwt: {provider: nobody, scopes: [a]}}}]}\n", "Invalid", "not a provider"),
        ("  authorization: {rules: [{action: Allow, principal: {clientCIDRs: [10.0.0.0/33]}}]}\n", "Invalid", "clientCIDRs"),
        ("  cors: {allowOrigins: ['ftp://x']}\n", "Invalid", "allowOrigins"),
    ];
    for (spec, reason, needle) in cases {
        let out = translate(&[policy("p", "2024-01-01T00:00:00Z", ROUTE, spec)]);
        assert_eq!(accepted(&out, "p"), is("False", reason), "{spec}");
        let msg = message(&out, "p");
        assert!(msg.contains(needle), "{spec}: {msg}");
        let s = security(&out, "/a").unwrap_or_else(|| panic!("{spec}: not fail-closed"));
        assert!(s.deny.is_some(), "{spec}: not fail-closed");
        assert!(security(&out, "/o").is_none());
    }
}

#[test]
fn a_bad_htpasswd_is_invalid_without_showing_a_password() {
    let yaml = "
---
apiVersion: v1
kind: Secret
metadata: {name: plain, namespace: ns}
stringData: {.htpasswd: 'dave:hunter2-plain'}
";
    let out = run(&store_with_class(&format!(
        "{WORLD}{yaml}{}",
        policy(
            "p",
            "2024-01-01T00:00:00Z",
            ROUTE,
            "  basicAuth: {users: {name: plain}}\n"
        )
    )));
    assert_eq!(accepted(&out, "p"), is("False", "Invalid"));
    let msg = message(&out, "p");
    assert!(msg.contains("dave") && !msg.contains("hunter2"), "{msg}");
    assert!(security(&out, "/a").unwrap().deny.is_some());
}

#[test]
fn a_reference_grant_lets_a_policy_read_another_namespaces_secret() {
    let grant = "
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: far}
spec:
  from: [{group: gateway.weir.dev, kind: SecurityPolicy, namespace: ns}]
  to: [{group: '', kind: Secret}]
";
    let out = run(&store_with_class(&format!(
        "{WORLD}{grant}{}",
        policy(
            "p",
            "2024-01-01T00:00:00Z",
            ROUTE,
            "  basicAuth: {users: {name: far-users, namespace: far}}\n"
        )
    )));
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    assert_eq!(
        security(&out, "/a")
            .unwrap()
            .basic
            .as_ref()
            .unwrap()
            .users
            .0
            .len(),
        1
    );
}

#[test]
fn a_policy_without_its_target_holds_nothing() {
    let missing = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: gone}";
    let out = translate(&[policy(
        "p",
        "2024-01-01T00:00:00Z",
        missing,
        "  basicAuth: {users: {name: nope}}\n",
    )]);
    let s = status(&out, Kind::SecurityPolicy, "ns", "p");
    assert!(s.condition_lines().is_empty() || message(&out, "p").contains("does not exist"));
    assert!(security(&out, "/a").is_none() && security(&out, "/o").is_none());
}

#[test]
fn a_changed_htpasswd_changes_the_identity() {
    let id = |hash: &str| {
        let yaml = format!(
            "
---
apiVersion: v1
kind: Secret
metadata: {{name: u2, namespace: ns}}
stringData: {{.htpasswd: 'eve:{hash}'}}
"
        );
        let out = run(&store_with_class(&format!(
            "{WORLD}{yaml}{}",
            policy(
                "p",
                "2024-01-01T00:00:00Z",
                ROUTE,
                "  basicAuth: {users: {name: u2}}\n"
            )
        )));
        security(&out, "/a").unwrap().id
    };
    let a = id("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=");
    assert_eq!(a, id("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
    assert_ne!(a, id("{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="));
}

#[test]
fn ext_auth_compiles_onto_the_targeted_routes_only() {
    let spec = "  extAuth:
    http:
      backendRefs: [{name: svc, port: 80}]
      path: /check/
      headersToBackend: [x-user]
    headersToExtAuth: [x-token]
    bodyToExtAuth: {maxRequestBytes: 64}
    timeout: 250ms
    failOpen: true
";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", ROUTE, spec)]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let a = action(&out, "/a");
    let auth = a.ext_auth.as_deref().expect("ext auth on /a");
    assert!(a.needs_async(), "phase 3 runs it");
    assert!(a.security.as_ref().is_some_and(|s| s.deny.is_none()));
    match &auth.service {
        weir_snapshot::BackendTarget::Upstream(u) => assert_eq!(&*u.name, "ns/svc:80"),
        weir_snapshot::BackendTarget::Invalid(why) => panic!("unresolved: {why}"),
    }
    match &auth.protocol {
        weir_snapshot::ExtAuthProtocol::Http {
            path_prefix,
            response_headers,
        } => {
            assert_eq!(&**path_prefix, "/check");
            assert_eq!(
                response_headers.as_deref(),
                Some(&[http::HeaderName::from_static("x-user")][..])
            );
        }
        weir_snapshot::ExtAuthProtocol::Grpc => panic!("not gRPC"),
    }
    assert_eq!(
        auth.allowed_headers.as_deref(),
        Some(&[http::HeaderName::from_static("x-token")][..])
    );
    assert_eq!(auth.body_max, 64);
    assert_eq!(auth.timeout, std::time::Duration::from_millis(250));
    assert!(auth.fail_open);
    // Both rules share one; the other route pays nothing.
    assert!(std::ptr::eq(
        auth,
        action(&out, "/b").ext_auth.as_deref().unwrap()
    ));
    assert!(action(&out, "/o").ext_auth.is_none());

    // gRPC, Envoy Gateway's defaults: closed, 10 s, no body; `headersToBackend` unset
    // copies nothing (HTTP) — here gRPC, whose answer names its own header changes.
    let spec = "  extAuth: {grpc: {backendRef: {name: svc, port: 80}}}\n";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", RULE_A, spec)]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let auth = action(&out, "/a")
        .ext_auth
        .clone()
        .expect("ext auth on rule a");
    assert!(auth.is_grpc() && !auth.fail_open && auth.body_max == 0);
    assert_eq!(auth.timeout, weir_snapshot::ext_auth::DEFAULT_TIMEOUT);
    assert!(action(&out, "/b").ext_auth.is_none());
    let spec = "  extAuth: {http: {backendRef: {name: svc, port: 80}}}\n";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", RULE_A, spec)]);
    let auth = action(&out, "/a")
        .ext_auth
        .clone()
        .expect("ext auth on rule a");
    assert!(matches!(&auth.protocol,
        weir_snapshot::ExtAuthProtocol::Http { response_headers: Some(l), .. } if l.is_empty()));
}

#[test]
fn an_ext_auth_service_of_another_namespace_needs_a_reference_grant() {
    let far = "
---
apiVersion: v1
kind: Service
metadata: {name: auth, namespace: far}
spec: {ports: [{port: 9000}]}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: far}
spec:
  from: [{group: gateway.weir.dev, kind: SecurityPolicy, namespace: ns}]
  to: [{group: '', kind: Service}]
";
    let spec = "  extAuth: {grpc: {backendRefs: [{name: auth, namespace: far, port: 9000}]}}\n";
    let out = run(&store_with_class(&format!(
        "{WORLD}{far}{}",
        policy("p", "2024-01-01T00:00:00Z", ROUTE, spec)
    )));
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    assert!(action(&out, "/a").ext_auth.is_some());
}

/// A rule with its own ExternalAuth filter keeps it; the policy's extAuth covers the rest,
/// and the policy's other mechanisms apply to that rule too.
#[test]
fn the_external_auth_filter_wins_over_the_policy_ext_auth() {
    let route = "
---
apiVersion: v1
kind: Service
metadata: {name: filter-auth, namespace: ns}
spec: {ports: [{port: 70}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: f, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /f}}]
    filters:
    - type: ExternalAuth
      externalAuth: {protocol: HTTP, backendRef: {name: filter-auth, port: 70}}
    backendRefs: [{name: svc, port: 80}]
";
    let spec = "  cors: {allowOrigins: ['*']}\n  extAuth: {http: {backendRefs: [{name: svc, port: 80}]}}\n";
    let out = run(&store_with_class(&format!(
        "{WORLD}{route}{}",
        policy("p", "2024-01-01T00:00:00Z", GW, spec)
    )));
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let name = |path: &str| match &action(&out, path)
        .ext_auth
        .as_ref()
        .expect("ext auth")
        .service
    {
        weir_snapshot::BackendTarget::Upstream(u) => u.name.to_string(),
        weir_snapshot::BackendTarget::Invalid(why) => panic!("unresolved: {why}"),
    };
    assert_eq!(name("/f"), "ns/filter-auth:70");
    assert_eq!(name("/o"), "ns/svc:80");
    assert!(security(&out, "/f").is_some_and(|s| s.cors.is_some()));
}

#[test]
fn authorization_paths_compile_as_route_path_matches() {
    let spec = "  authorization:
    rules:
    - action: Deny
      principal: {clientCIDRs: [0.0.0.0/0]}
      operation:
        methods: [POST]
        paths:
        - {type: Exact, value: /a/./admin}
        - {value: /a/docs/}
        - {type: RegularExpression, value: '/a/v[0-9]+/.*'}
";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", ROUTE, spec)]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let a = security(&out, "/a")
        .unwrap()
        .authorization
        .as_ref()
        .unwrap();
    let paths = &a.rules[0].paths;
    assert_eq!(paths.len(), 3);
    // Normalised as route values are; PathPrefix by path elements, the default type.
    assert!(paths[0].matches("/a/admin") && !paths[0].matches("/a/admin/x"));
    assert!(paths[1].matches("/a/docs") && paths[1].matches("/a/docs/x"));
    assert!(!paths[1].matches("/a/docsx"));
    // Anchored at both ends.
    assert!(paths[2].matches("/a/v2/x") && !paths[2].matches("/b/a/v2/x"));
    assert_eq!(a.rules[0].methods, [Method::POST]);
}

#[test]
fn a_remote_key_set_through_a_backend_ref_resolves_to_the_service() {
    let spec = "  jwt:
    providers:
    - name: idp
      remoteJWKS:
        uri: http://idp.example/.well-known/jwks.json
        backendRefs: [{name: svc, port: 80}]
";
    let out = translate(&[policy("p", "2024-01-01T00:00:00Z", ROUTE, spec)]);
    assert_eq!(accepted(&out, "p"), is("True", "Accepted"));
    let s = security(&out, "/a").unwrap();
    match &s.jwt.as_ref().unwrap().providers[0].keys {
        JwtKeys::Remote { uri, backend, .. } => {
            assert_eq!(&**uri, "http://idp.example/.well-known/jwks.json");
            assert_eq!(&*backend.as_ref().expect("the Service").name, "ns/svc:80");
        }
        other => panic!("{other:?}"),
    }
}
