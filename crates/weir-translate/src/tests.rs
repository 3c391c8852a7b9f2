//! Test helpers: YAML → Store, translate, and look at conditions and routing.

mod addressing;
mod conformance;
mod experimental;
mod filters;
mod frontend;
mod gateways;
mod grpc_routes;
mod inference;
mod listenersets;
mod memo;
mod refs;
mod routes;
mod routing;
mod tcp_routes;
mod tls_routes;
mod udp_routes;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use k8s_openapi::ByteString;
use serde::Deserialize;
use weir_snapshot::{BackendTarget, RequestView, RouteEntry};
use weir_store::{Kind, Object, ObjectKey, Secret, Store, Time};

use crate::{translate, translate_with, Input, Memo, ObjectStatus, Output};

pub const CONTROLLER: &str = "weir.dev/gateway-controller";

/// Our GatewayClass `weir`, prepended by [`store_with_class`].
pub const CLASS: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir, generation: 1}
spec: {controllerName: weir.dev/gateway-controller}
";

/// Parse multi-document YAML into a Store; documents of kinds Weir does not read are skipped.
pub fn load(yaml: &str) -> Store {
    let mut store = Store::default();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let value = serde_norway::Value::deserialize(doc).expect("yaml document");
        if value.is_null() {
            continue;
        }
        let api_version = value["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let Some(kind) = Kind::from_type(&api_version, &kind) else {
            continue;
        };
        let json = serde_json::to_value(&value).expect("yaml as json");
        let object = Object::from_value(kind, json).expect("typed object");
        store.apply(object);
    }
    store
}

/// `load` with our GatewayClass added.
pub fn store_with_class(yaml: &str) -> Store {
    load(&format!("{CLASS}\n---\n{yaml}"))
}

pub fn now() -> Time {
    Time("2025-01-01T00:00:00Z".parse().expect("timestamp"))
}

pub const ADDRESSES: &[(&str, &str)] = &[("IPAddress", "127.0.0.1")];

/// The addresses of the test "host" besides [`ADDRESSES`]: 127.0.0.2, ::1 and the block
/// 127.0.1.0/24 that the address-pool tests hand out.
pub fn host_address(ip: std::net::IpAddr) -> bool {
    ["127.0.0.2", "::1"].iter().any(|a| a.parse() == Ok(ip))
        || matches!(ip, std::net::IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 1])
}

pub fn run(store: &Store) -> Output {
    run_with(store, Memo::default())
}

/// [`run`], handing on a previous translation's memo.
pub fn run_with(store: &Store, memo: Memo) -> Output {
    run_addressing(store, memo, &crate::Addressing::Shared)
}

/// [`run_with`], with Gateways addressed as `addressing` says.
pub fn run_addressing(store: &Store, memo: Memo, addressing: &crate::Addressing) -> Output {
    run_full(store, memo, addressing, true)
}

/// [`run_addressing`], saying whether global rate limits have a Redis.
pub fn run_full(
    store: &Store,
    memo: Memo,
    addressing: &crate::Addressing,
    rate_limit_redis: bool,
) -> Output {
    let addresses: Vec<(String, String)> = ADDRESSES
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect();
    translate_with(
        &Input {
            store,
            controller_name: CONTROLLER,
            now: now(),
            gateway_addresses: &addresses,
            address_usable: &host_address,
            addressing,
            rate_limit_redis,
        },
        memo,
    )
}

pub fn run_yaml(yaml: &str) -> Output {
    run(&store_with_class(yaml))
}

/// A `kubernetes.io/tls` Secret with a fresh self-signed certificate for `hosts`.
pub fn add_tls_secret(store: &mut Store, ns: &str, name: &str, hosts: &[&str]) {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(hosts).expect("rcgen");
    add_secret(
        store,
        ns,
        name,
        ck.cert.pem().as_bytes(),
        ck.signing_key.serialize_pem().as_bytes(),
    );
}

pub fn add_secret(store: &mut Store, ns: &str, name: &str, crt: &[u8], key: &[u8]) {
    let mut secret = Secret::default();
    secret.metadata.namespace = Some(ns.into());
    secret.metadata.name = Some(name.into());
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(BTreeMap::from([
        ("tls.crt".to_string(), ByteString(crt.to_vec())),
        ("tls.key".to_string(), ByteString(key.to_vec())),
    ]));
    store.apply(Object::Secret(Arc::new(secret)));
}

pub fn status<'a>(out: &'a Output, kind: Kind, ns: &str, name: &str) -> &'a ObjectStatus {
    let key = ObjectKey::new(ns, name);
    out.statuses
        .iter()
        .find(|s| s.kind == kind && s.key == key)
        .unwrap_or_else(|| panic!("no status for {kind} {key}; have {:?}", keys(out)))
}

pub fn has_status(out: &Output, kind: Kind, ns: &str, name: &str) -> bool {
    let key = ObjectKey::new(ns, name);
    out.statuses.iter().any(|s| s.kind == kind && s.key == key)
}

fn keys(out: &Output) -> Vec<String> {
    out.statuses
        .iter()
        .map(|s| format!("{} {}", s.kind, s.key))
        .collect()
}

/// (status, reason) of a condition in a scope ("" for the object, "listener x", "parent ns/gw").
pub fn cond(s: &ObjectStatus, scope: &str, type_: &str) -> (String, String) {
    s.condition_lines()
        .into_iter()
        .find(|(sc, t, _, _, _)| sc == scope && t == type_)
        .map(|(_, _, status, reason, _)| (status, reason))
        .unwrap_or_else(|| {
            panic!(
                "no {type_} in scope {scope:?} of {} {}: {:#?}",
                s.kind,
                s.key,
                s.condition_lines()
            )
        })
}

pub fn is(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

/// Condition of a Gateway route parent ("parent ns/gw").
pub fn parent_cond(
    out: &Output,
    route: (&str, &str),
    gw: (&str, &str),
    type_: &str,
) -> (String, String) {
    let s = status(out, Kind::HttpRoute, route.0, route.1);
    let prefix = format!("parent {}/{}", gw.0, gw.1);
    s.condition_lines()
        .into_iter()
        .find(|(sc, t, _, _, _)| {
            (sc == &prefix || sc.starts_with(&format!("{prefix}/"))) && t == type_
        })
        .map(|(_, _, status, reason, _)| (status, reason))
        .unwrap_or_else(|| panic!("no {type_} for {prefix}: {:#?}", s.condition_lines()))
}

pub fn listener_json<'a>(s: &'a ObjectStatus, name: &str) -> &'a serde_json::Value {
    s.status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name}"))
}

pub fn attached(out: &Output, ns: &str, gw: &str, listener: &str) -> i64 {
    let s = status(out, Kind::Gateway, ns, gw);
    listener_json(s, listener)["attachedRoutes"]
        .as_i64()
        .unwrap_or(-1)
}

/// A request: method, host, path (with optional ?query) and headers.
pub struct Req<'a> {
    pub method: Method,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
}

pub fn get<'a>(host: &'a str, path: &'a str) -> Req<'a> {
    Req {
        method: Method::GET,
        host,
        path,
        headers: Vec::new(),
    }
}

/// Route a request on a port of the shared bind address the way the proxy does: socket →
/// listener by host → first entry.
pub fn route<'o>(out: &'o Output, port: u16, req: &Req<'_>) -> Option<&'o Arc<RouteEntry>> {
    route_on(out.snapshot.socket(None, port)?, req)
}

/// Route a request that arrived on `socket`: listener by host → first entry.
pub fn route_on<'o>(
    socket: &'o weir_snapshot::SocketConfig,
    req: &Req<'_>,
) -> Option<&'o Arc<RouteEntry>> {
    let listener = socket.listener_for_host(req.host)?;
    let mut headers = HeaderMap::new();
    for (n, v) in &req.headers {
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    let (path, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path, None),
    };
    let view = RequestView {
        method: &req.method,
        path,
        query,
        headers: &headers,
    };
    listener.find_route(req.host, &view)
}

/// "ns/route#rule" of the entry a request routes to, or "404".
pub fn hit(out: &Output, port: u16, req: &Req<'_>) -> String {
    match route(out, port, req) {
        Some(e) => format!("{}#{}", e.action.route.route, e.action.route.rule),
        None => "404".into(),
    }
}

/// Backends of the entry a request routes to: (upstream name or "invalid", weight).
pub fn backends(out: &Output, port: u16, req: &Req<'_>) -> Vec<(String, u32)> {
    let e = route(out, port, req).expect("a route");
    e.action
        .backends
        .iter()
        .map(|b| {
            let name = match &b.target {
                BackendTarget::Upstream(u) => u.name.to_string(),
                BackendTarget::Invalid(_) => "invalid".into(),
            };
            (name, b.weight)
        })
        .collect()
}

/// A Gateway `gw` in `default` with the given listeners YAML (indented list items).
pub fn gateway(name: &str, listeners: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default, generation: 3, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec:
  gatewayClassName: weir
  listeners:
{listeners}
"
    )
}

pub const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: svc-a, namespace: default}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: svc-b, namespace: default}
spec:
  ports:
  - {port: 80, targetPort: 9090, appProtocol: kubernetes.io/h2c}
";
