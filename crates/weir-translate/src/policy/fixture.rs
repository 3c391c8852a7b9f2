//! What the policy kinds' tests share: the Gateway, Service and routes they attach to, a
//! policy manifest, the route entry a path reaches, and a policy's first condition.

use http::{HeaderMap, Method};
use weir_snapshot::{RequestView, RouteAction};
use weir_store::Kind;

use crate::tests::{cond, run, status, store_with_class};
use crate::Output;

/// Gateway `gw` (listener `http`, port 80) and Service `svc` (port 80), in `ns`: a literal,
/// for the tests' `concat!`.
macro_rules! gateway {
    () => {
        "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns, generation: 1}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ns}
spec: {ports: [{port: 80}]}
"
    };
}
pub(crate) use gateway;

/// HTTPRoute `r` on `gw`: rule `a` (/a), rule `b` (/b, then the lines `b` gives) and the
/// rules `more` gives; HTTPRoute `other` (/o). All to `svc`. A literal, as [`gateway`].
macro_rules! routes {
    ($b:literal, $more:literal) => {
        concat!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: a
    matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: svc, port: 80}]
  - name: b
    matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: svc, port: 80}]
",
            $b,
            $more,
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /o}}]
    backendRefs: [{name: svc, port: 80}]
"
        )
    };
}
pub(crate) use routes;

pub const GW: &str = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}";
pub const ROUTE: &str = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}";
pub const RULE_A: &str =
    "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: a}";

/// A policy of `kind` in `ns` (generation 2): `target_refs` as written after `targetRefs:`,
/// then the `spec` lines.
pub fn policy(kind: Kind, name: &str, created: &str, target_refs: &str, spec: &str) -> String {
    let api_version = kind.info().api_version;
    format!(
        "
---
apiVersion: {api_version}
kind: {kind}
metadata: {{name: {name}, namespace: ns, generation: 2, creationTimestamp: '{created}'}}
spec:
  targetRefs: {target_refs}
{spec}"
    )
}

/// Translate `world` and `extra` (policies) together.
pub fn translate(world: &str, extra: &[String]) -> Output {
    run(&store_with_class(&format!("{world}{}", extra.concat())))
}

/// The action of the route entry a GET of `path` reaches on port 80.
pub fn action<'a>(out: &'a Output, path: &str) -> &'a RouteAction {
    let socket = out.snapshot.socket(None, 80).expect("socket");
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        path,
        query: None,
        headers: &headers,
    };
    &socket.listeners[0]
        .find_route("x.example", &view)
        .expect("a route")
        .action
}

/// A policy's condition `type_` under Gateway `gw`: (status, reason).
pub fn condition(out: &Output, kind: Kind, name: &str, type_: &str) -> (String, String) {
    cond(status(out, kind, "ns", name), "parent ns/gw", type_)
}

/// The message of a policy's first condition.
pub fn message(out: &Output, kind: Kind, name: &str) -> String {
    status(out, kind, "ns", name).condition_lines()[0].4.clone()
}
