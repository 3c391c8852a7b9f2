//! The translator: a [`weir_store::Store`] of Gateway API objects in, a routing
//! [`weir_snapshot::Snapshot`] and the statuses of our objects out.
//!
//! It owns the Gateway API semantics: which GatewayClasses, Gateways and routes are ours,
//! listener validation and conflicts, route attachment (sectionName/port, allowedRoutes,
//! hostname intersection), ReferenceGrants, backend resolution, match precedence, filters, and
//! every condition and reason reported in status, and which Gateway API features Weir claims
//! ([`SUPPORTED_FEATURES`]). HTTPRoutes and GRPCRoutes compile into the same route entries.
//! TLSRoutes attach to TLS listeners and TCPRoutes to TCP listeners; both become the
//! snapshot's passthrough section (spliced byte streams: TLS by SNI, TCP as they come).
//! BackendTLSPolicies decide which Service ports are reached over TLS and how their
//! certificates are verified (see `backendtls`); their statuses come out with the others.
//!
//! It must stay pure: no IO, no async runtime, no clock (time comes in through [`Input`]),
//! no logging side effects that matter. The same `Store` always gives the same `Output`.
//! Upstream generated types stop here: the snapshot it returns holds only `weir-snapshot`
//! types.

mod backend;
mod backendtls;
mod compile;
mod error;
mod filter;
mod frontend;
mod gateway;
mod grpcroute;
mod hostname;
mod listenerset;
mod refgrant;
mod route;
mod sockets;
mod status;
mod tcproute;
mod tls;
mod tlsroute;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use weir_store::{Kind, ObjectKey, ObjectMeta};

pub use error::TranslateError;
pub use status::INVALID_MANIFEST;

/// The Gateway API features Weir supports, by the conformance suite's names (v1.5.1
/// `pkg/features`), sorted ascending as GatewayClass `status.supportedFeatures` must be. Our
/// GatewayClasses report exactly this list, and the conformance replay (e2e/conformance)
/// fails unless it is exactly the set of features all of whose replayed tests pass: add a
/// feature here only with its passing conformance tests.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "GRPCRouteRequestHeaderModifier",
    "Gateway",
    "GatewayAddressEmpty",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendRequestRedirect",
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendURLRewrite",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ListenerSet",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
];

/// Everything a translation needs.
pub struct Input<'a> {
    pub store: &'a weir_store::Store,
    /// Our controller name, e.g. "weir.dev/gateway-controller".
    pub controller_name: &'a str,
    /// Now, for condition lastTransitionTime.
    pub now: Time,
    /// Addresses to report in Gateway status.addresses (file mode: the bind address), as
    /// (type, value) e.g. ("IPAddress", "127.0.0.1").
    pub gateway_addresses: &'a [(String, String)],
    /// Whether an IP is an address of this host, so that a Gateway's `spec.addresses` can be
    /// bound (the binary tries to bind it; tests answer from a list). Only asked about
    /// addresses Gateways request that are not in `gateway_addresses`.
    pub address_usable: &'a dyn Fn(std::net::IpAddr) -> bool,
}

/// What a translation produces.
pub struct Output {
    /// Generation 0; the caller numbers it.
    pub snapshot: weir_snapshot::Snapshot,
    /// Sorted by (kind, key).
    pub statuses: Vec<ObjectStatus>,
}

/// The status Weir computed for one of its objects.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObjectStatus {
    pub kind: Kind,
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub creation_timestamp: Option<Time>,
    /// The object's status in Kubernetes JSON shape. Shared: objects whose statuses are
    /// equal (routes of one Gateway, alike) and statuses unchanged since the previous
    /// translation hold one value (see `status::JsonBuilder`, [`preserve_transition_times`]).
    pub status: Arc<Value>,
}

impl ObjectStatus {
    fn new(kind: Kind, meta: &ObjectMeta, status: impl Into<Arc<Value>>) -> Self {
        Self {
            kind,
            key: ObjectKey::of(meta),
            generation: meta.generation,
            creation_timestamp: meta.creation_timestamp.clone(),
            status: status.into(),
        }
    }

    /// `{"apiVersion","kind","metadata":{"namespace","name","generation","creationTimestamp"},"status"}`
    pub fn to_resource_json(&self) -> Value {
        let mut meta = serde_json::Map::new();
        if !self.key.namespace.is_empty() {
            meta.insert("namespace".into(), json!(self.key.namespace));
        }
        meta.insert("name".into(), json!(self.key.name));
        if let Some(g) = self.generation {
            meta.insert("generation".into(), json!(g));
        }
        if let Some(t) = &self.creation_timestamp {
            meta.insert(
                "creationTimestamp".into(),
                serde_json::to_value(t).unwrap_or(Value::Null),
            );
        }
        json!({
            "apiVersion": self.kind.api_version(),
            "kind": self.kind.as_str(),
            "metadata": meta,
            "status": *self.status,
        })
    }

    /// Human-readable problems for `weir check`; empty when the object is healthy. Gateway
    /// classes: Accepted. Gateways: Accepted and Programmed, and each listener Accepted,
    /// ResolvedRefs and Programmed True and not Conflicted. Routes (HTTPRoute, GRPCRoute):
    /// every parent of ours Accepted and ResolvedRefs True and not PartiallyInvalid.
    /// `weir.dev/InvalidManifest` is not a problem here (it is printed by
    /// [`Self::condition_lines`]).
    pub fn problems(&self) -> Vec<String> {
        self.condition_lines()
            .into_iter()
            .filter(|(scope, type_, status, _, _)| {
                let must_be_true = match (self.kind, scope.is_empty()) {
                    (Kind::GatewayClass, true) => ["Accepted"].as_slice(),
                    (Kind::Gateway, true) => &["Accepted", "Programmed"],
                    (Kind::Gateway, false) => &["Accepted", "Programmed", "ResolvedRefs"],
                    (
                        Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute | Kind::TcpRoute,
                        false,
                    ) => &["Accepted", "ResolvedRefs"],
                    (Kind::ListenerSet, true) => &["Accepted", "Programmed"],
                    (Kind::ListenerSet, false) => &["Accepted", "Programmed", "ResolvedRefs"],
                    _ => &[],
                };
                let must_be_false = ["Conflicted", "PartiallyInvalid"];
                (must_be_true.contains(&type_.as_str()) && status != "True")
                    || (must_be_false.contains(&type_.as_str()) && status == "True")
            })
            .map(|(scope, type_, status, reason, message)| {
                let prefix = if scope.is_empty() {
                    String::new()
                } else {
                    format!("{scope}: ")
                };
                format!("{prefix}{type_} is {status} ({reason}): {message}")
            })
            .collect()
    }

    /// Conditions flattened as (scope, type, status, reason, message); scope is "" for the
    /// object, "listener <name>" or "parent <ns>/<name>[/<section>]".
    pub fn condition_lines(&self) -> Vec<(String, String, String, String, String)> {
        let mut out = Vec::new();
        for (scope, list) in status::scoped_lists(&self.status) {
            for c in list {
                out.push((
                    scope.clone(),
                    status::str_at(c, "type").to_string(),
                    status::str_at(c, "status").to_string(),
                    status::str_at(c, "reason").to_string(),
                    status::str_at(c, "message").to_string(),
                ));
            }
        }
        out
    }
}

/// Translate the whole store.
pub fn translate(input: &Input<'_>) -> Output {
    let store = input.store;
    let classes = gateway::our_classes(store, input.controller_name);
    let addresses = gateway::Addresses {
        served: input.gateway_addresses,
        usable: input.address_usable,
    };
    let mut gateways = gateway::build(store, &classes, &addresses);
    let index: BTreeMap<ObjectKey, usize> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (g.key.clone(), i))
        .collect();
    let mut statuses = Vec::new();

    for class in store.gateway_classes.values() {
        if !classes.contains(class.metadata.name.as_deref().unwrap_or("")) {
            continue;
        }
        let c = status::Conditions {
            generation: class.metadata.generation,
            now: &input.now,
        };
        let s = status::gateway_class_status(&c);
        statuses.push(ObjectStatus::new(
            Kind::GatewayClass,
            &class.metadata,
            to_json(&s),
        ));
    }

    let json = status::JsonBuilder::new(&input.now);
    let mut policies = backendtls::Policies::build(store);
    let mut upstreams = backend::Upstreams::with_tls(policies.index());
    // Routes attach oldest first (then by namespace/name), whichever their kind: on a
    // listener, of an HTTPRoute and a GRPCRoute with intersecting hostnames the older one
    // is accepted (see `route::attach_parents`).
    let mut order: Vec<((i64, u32), &ObjectKey, Kind)> = store
        .http_routes
        .iter()
        .map(|(k, r)| (compile::created(&r.metadata), k, Kind::HttpRoute))
        .chain(
            store
                .grpc_routes
                .iter()
                .map(|(k, r)| (compile::created(&r.metadata), k, Kind::GrpcRoute)),
        )
        .collect();
    order.sort();
    for (_, key, kind) in order {
        let (meta, compiled, parents, status) = match kind {
            Kind::GrpcRoute => {
                let Some(route) = store.grpc_routes.get(key) else {
                    continue;
                };
                let compiled = grpcroute::compile_route(store, route, &mut upstreams);
                let refs = grpcroute::parent_refs(route);
                let parents = route::attach_parents(
                    store,
                    grpcroute::KIND,
                    &refs,
                    &compiled,
                    &mut gateways,
                    &index,
                );
                (&route.metadata, compiled, parents, Kind::GrpcRoute)
            }
            _ => {
                let Some(route) = store.http_routes.get(key) else {
                    continue;
                };
                let compiled = compile::compile_route(store, route, &mut upstreams);
                let parents = route::attach(store, route, &compiled, &mut gateways, &index);
                (&route.metadata, compiled, parents, Kind::HttpRoute)
            }
        };
        if parents.is_empty() {
            continue;
        }
        let c = status::Conditions {
            generation: meta.generation,
            now: &input.now,
        };
        // GRPCRoute statuses have the HTTPRoute shape (see `status::JsonBuilder`).
        let s = json.shared_route_status(status::route_status(
            input.controller_name,
            &compiled,
            parents,
            &c,
        ));
        statuses.push(ObjectStatus::new(status, meta, s));
    }

    // BackendTLSPolicy ancestors: the Gateways whose HTTP and gRPC routes use a Service.
    {
        let services = upstreams.services();
        for g in &gateways {
            for l in &g.listeners {
                for (_, entry) in &l.entries {
                    for b in entry.action.backends.iter() {
                        if let weir_snapshot::BackendTarget::Upstream(u) = &b.target {
                            if let Some(svc) = services.get(&Arc::as_ptr(u)) {
                                policies.used_by(svc, &g.key);
                            }
                        }
                    }
                }
            }
        }
    }
    statuses.extend(policies.statuses(input.controller_name, &input.now));

    // Stream routes: TLSRoutes, then TCPRoutes (they never share a listener).
    let stream_status = |meta: &ObjectMeta, compiled: &tlsroute::CompiledTlsRoute, parents| {
        let c = status::Conditions {
            generation: meta.generation,
            now: &input.now,
        };
        json.shared_route_status(status::parents_status(
            input.controller_name,
            compiled.unresolved.as_ref(),
            None,
            parents,
            &c,
        ))
    };
    for route in store.tls_routes.values() {
        let compiled = tlsroute::compile(store, route, &mut upstreams);
        let parents = tlsroute::attach(store, route, &compiled, &mut gateways, &index);
        if !parents.is_empty() {
            let s = stream_status(&route.metadata, &compiled, parents);
            statuses.push(ObjectStatus::new(Kind::TlsRoute, &route.metadata, s));
        }
    }
    for route in store.tcp_routes.values() {
        let compiled = tcproute::compile(store, route, &mut upstreams);
        let parents = tcproute::attach(store, route, &compiled, &mut gateways, &index);
        if !parents.is_empty() {
            let s = stream_status(&route.metadata, &compiled, parents);
            statuses.push(ObjectStatus::new(Kind::TcpRoute, &route.metadata, s));
        }
    }

    for (_, (g, set)) in listenerset::all(&gateways) {
        let c = status::Conditions {
            generation: set.set.metadata.generation,
            now: &input.now,
        };
        let s = listenerset::status(g, set, &c);
        statuses.push(ObjectStatus::new(
            Kind::ListenerSet,
            &set.set.metadata,
            to_json(&s),
        ));
    }

    for g in &gateways {
        let c = status::Conditions {
            generation: g.gateway.metadata.generation,
            now: &input.now,
        };
        let s = status::gateway_status(g, &c);
        statuses.push(ObjectStatus::new(
            Kind::Gateway,
            &g.gateway.metadata,
            to_json(&s),
        ));
    }

    let snapshot = sockets::build(&mut gateways);

    for s in statuses.iter_mut() {
        if let Some(rejection) = store.rejected.get(&(s.kind, s.key.clone())) {
            let c = status::Conditions {
                generation: s.generation,
                now: &input.now,
            };
            let mut condition = c.make(
                INVALID_MANIFEST,
                true,
                "ParseError",
                format!(
                    "{}: {}; serving the last good version",
                    rejection.location, rejection.message
                ),
            );
            condition.observed_generation = s.generation;
            status::add_condition(s.kind, Arc::make_mut(&mut s.status), &condition);
        }
    }
    statuses.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    Output { snapshot, statuses }
}

/// Keep lastTransitionTime of conditions whose (type, status) did not change since `previous`
/// (objects matched by kind and key, conditions by scope and type), so rebuilding does not
/// churn times.
pub fn preserve_transition_times(previous: &[ObjectStatus], next: &mut [ObjectStatus]) {
    status::preserve(previous, next);
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
