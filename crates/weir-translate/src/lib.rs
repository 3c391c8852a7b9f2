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

pub mod addressing;
mod backend;
mod backendtls;
mod compile;
mod conditions;
mod error;
pub mod ext_auth;
mod filter;
mod frontend;
mod gateway;
mod grpcroute;
mod hostname;
mod inference;
mod listener;
mod listenerset;
mod memo;
mod meta;
mod model;
mod pattern;
mod policy;
mod refgrant;
mod route;
mod rule_policy;
pub mod services;
mod session;
mod sockets;
mod status;
mod tcproute;
mod tls;
mod tlsroute;
mod udproute;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use weir_store::{Kind, ObjectKey, ObjectMeta, WrittenStatus};

pub use addressing::{AddressPool, Addressing};
pub use error::TranslateError;
pub use ext_auth::{compile_ext_auth, ExtAuthConfig};
pub use memo::Memo;
pub use status::INVALID_MANIFEST;

/// The Gateway API features Weir supports, by the conformance suite's names (v1.6.1
/// `pkg/features`, and the Inference Extension's `SupportInferencePool`), sorted ascending as GatewayClass `status.supportedFeatures` must be. Our
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
    "HTTPRouteExternalAuthForwardBody",
    "HTTPRouteExternalAuthGRPC",
    "HTTPRouteExternalAuthHTTP",
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
    "HTTPRouteRetry",
    "HTTPRouteRetryBackendTimeout",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteSchemeRedirect",
    "ListenerSet",
    "ReferenceGrant",
    // The Gateway API Inference Extension's (InferencePool backends), proved by its own
    // suite's replay beside the Gateway API one (e2e/conformance/src/inference.rs).
    "SupportInferencePool",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
    "UDPRoute",
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
    /// How Gateways that request no address get one: the shared bind address
    /// (`gateway_addresses`), or each its own from a pool (see [`addressing`]).
    pub addressing: &'a Addressing,
    /// Whether global rate limits have a Redis to count in (`--rate-limit-redis`); without
    /// one a BackendTrafficPolicy with `rateLimit.global` is not accepted.
    pub rate_limit_redis: bool,
}

/// What a translation produces.
pub struct Output {
    /// Generation 0; the caller numbers it.
    pub snapshot: weir_snapshot::Snapshot,
    /// Sorted by (kind, key).
    pub statuses: Vec<ObjectStatus>,
    /// For the next translation ([`translate_with`]).
    pub memo: Memo,
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
                    // Routes: each parent.
                    (kind, false) if kind.status() == WrittenStatus::Parents => {
                        &["Accepted", "ResolvedRefs"]
                    }
                    // Policies: each ancestor.
                    (kind, false) if kind.status() == WrittenStatus::Ancestors => &["Accepted"],
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
    translate_with(input, Memo::default())
}

/// Translate the whole store, reusing what `memo` (the previous translation's
/// [`Output::memo`]) still holds: the same output as [`translate`], with work in proportion
/// to what changed when only HTTPRoutes did (see `memo`).
pub fn translate_with(input: &Input<'_>, memo: Memo) -> Output {
    let store = input.store;
    let classes = gateway::our_classes(store, input.controller_name);
    let addresses = gateway::Addresses {
        served: input.gateway_addresses,
        usable: input.address_usable,
        mode: input.addressing,
    };
    let mut gateways = gateway::build(store, &classes, &addresses);
    let index: BTreeMap<ObjectKey, usize> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (g.key.clone(), i))
        .collect();
    let mut statuses = Vec::with_capacity(store.len());

    for class in store.gateway_classes.values() {
        if !classes.contains(class.metadata.name.as_deref().unwrap_or("")) {
            continue;
        }
        let c = status::Conditions {
            generation: class.metadata.generation,
            now: &input.now,
        };
        // Services mode reads the class's parameters (the Service type and metadata).
        let params = match input.addressing {
            Addressing::Services(_) => services::class_params(store, class).err(),
            _ => None,
        };
        let s = status::gateway_class_status(&c, params.as_ref());
        statuses.push(ObjectStatus::new(
            Kind::GatewayClass,
            &class.metadata,
            to_json(&s),
        ));
    }

    let json = status::JsonBuilder::new(&input.now);
    let mut policies = backendtls::Policies::build(store);
    let mut upstreams = backend::Upstreams::with_tls(policies.index());
    let world = memo::World::of(
        store,
        input.controller_name,
        input.gateway_addresses,
        &gateways,
    );
    let (mut routes, table) = memo::Routes::start(memo, &world, store, &mut gateways);
    upstreams.seed(table);
    let mut placed = Vec::new();
    // What the routes' regular expressions cost together, charged in attach order.
    let mut regexes = pattern::Budget::default();
    let order = route_order(store);
    // Route statuses by the route's position in key order (`route_order`'s slot), so that
    // they come out sorted without a sort by key.
    let mut http_statuses: Vec<Option<ObjectStatus>> = vec![None; store.http_routes.len()];
    let mut grpc_statuses: Vec<Option<ObjectStatus>> = vec![None; store.grpc_routes.len()];
    for (_, route, slot) in order {
        // `http_route`: the HTTPRoute, to record for the next translation.
        let (meta, compiled, parents, http_route) = match route {
            AnyRoute::Grpc(route) => {
                let compiled = grpcroute::compile_route(store, route, &mut upstreams, &mut regexes);
                let refs = grpcroute::parent_refs(route);
                let parents = route::attach_parents(
                    store,
                    grpcroute::KIND,
                    &refs,
                    &compiled,
                    &mut gateways,
                    &index,
                    &mut placed,
                );
                (&route.metadata, compiled, parents, None)
            }
            AnyRoute::Http(route) => {
                // (A route with regular expressions depends on the routes before it through
                // their budget: always compiled.)
                if !compile::uses_regex(route) {
                    if let Some(status) = routes.replay(route, &mut gateways) {
                        http_statuses[slot] = status;
                        continue;
                    }
                }
                let compiled = compile::compile_route(store, route, &mut upstreams, &mut regexes);
                let parents =
                    route::attach(store, route, &compiled, &mut gateways, &index, &mut placed);
                (&route.metadata, compiled, parents, Some(route))
            }
        };
        if parents.is_empty() {
            if let Some(route) = http_route {
                routes.record(route, &placed, &gateways, None);
            }
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
        let kind = match route {
            AnyRoute::Http(_) => Kind::HttpRoute,
            AnyRoute::Grpc(_) => Kind::GrpcRoute,
        };
        let status = ObjectStatus::new(kind, meta, s);
        if let Some(route) = http_route {
            routes.record(route, &placed, &gateways, Some(&status));
            http_statuses[slot] = Some(status);
        } else {
            grpc_statuses[slot] = Some(status);
        }
    }
    statuses.extend(http_statuses.into_iter().flatten());
    statuses.extend(grpc_statuses.into_iter().flatten());

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

    // Stream routes: TLSRoutes, TCPRoutes, then UDPRoutes (they never share a listener).
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
    for route in store.udp_routes.values() {
        let compiled = udproute::compile(store, route, &mut upstreams);
        let parents = udproute::attach(store, route, &compiled, &mut gateways, &index);
        if !parents.is_empty() {
            let s = stream_status(&route.metadata, &compiled, parents);
            statuses.push(ObjectStatus::new(Kind::UdpRoute, &route.metadata, s));
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

    // InferencePools: status.parents per Gateway whose routes use the pool.
    statuses.extend(inference::statuses(
        store,
        &gateways,
        input.controller_name,
        &input.now,
    ));
    // Policy kinds: ClientTrafficPolicy goes onto the sockets; the kinds whose fields are
    // still to come only get their status.
    let ours: BTreeSet<ObjectKey> = gateways.iter().map(|g| g.key.clone()).collect();
    // SecurityPolicies are evaluated before the upstream table goes to the memo: their
    // `extAuth` Services resolve into it like the routes' backendRefs.
    let security_policies = policy::security::build(store, &ours, &mut upstreams);
    // ExtensionPolicies too: their processor Services.
    let extension_policies = policy::extension::build(store, &ours, &mut upstreams);
    let memo = routes.finish(world, upstreams.into_table(), &gateways);
    let mut client_policies = policy::client::ClientPolicies::build(store, &ours);
    // BackendTrafficPolicy onto the route entries (after the memo recorded them: a replayed
    // route gets its policy again from whatever policies exist now).
    let backend_policies =
        policy::backend::BackendPolicies::build(store, &ours, input.rate_limit_redis);
    backend_policies.place(&mut gateways);
    statuses.extend(backend_policies.statuses(input.controller_name, &input.now));
    // XBackendTrafficPolicy (a Service's retry budget and session persistence) after them:
    // what the rule and its BackendTrafficPolicy set beats what the Service's policy sets.
    let x_backend_policies = policy::xbackend::XBackendPolicies::build(store, &ours);
    x_backend_policies.place(&mut gateways);
    statuses.extend(x_backend_policies.statuses(input.controller_name, &input.now));
    // SecurityPolicy onto the route entries too (a policy that cannot be applied holds its
    // targets with a deny-all: fail closed).
    policy::security::place(&security_policies, &mut gateways);
    statuses.extend(security_policies.statuses(input.controller_name, &input.now));
    // ExtensionPolicy onto the route entries (one that cannot be applied answers 500).
    policy::extension::place(&extension_policies, &mut gateways);
    statuses.extend(extension_policies.statuses(input.controller_name, &input.now));
    let mut snapshot = sockets::build(&mut gateways);
    client_policies.place(&mut snapshot);
    statuses.extend(client_policies.statuses(input.controller_name, &input.now));

    for s in statuses.iter_mut().filter(|_| !store.rejected.is_empty()) {
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
    // Each kind's statuses come in key order: this sort merges a few sorted runs.
    statuses.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    Output {
        snapshot,
        statuses,
        memo,
    }
}

/// An HTTPRoute or a GRPCRoute, as stored.
#[derive(Clone, Copy)]
enum AnyRoute<'a> {
    Http(&'a Arc<weir_store::HttpRoute>),
    Grpc(&'a Arc<weir_store::GrpcRoute>),
}

/// HTTPRoutes and GRPCRoutes in the order they attach: oldest first, then by
/// namespace/name, then kind (HTTPRoute first), whichever their kind: on a listener, of an
/// HTTPRoute and a GRPCRoute with intersecting hostnames the older one is accepted (see
/// `route::attach_parents`). With each one's position in its kind's key order.
///
/// Both maps iterate in key order, so merging them by key and then sorting stably by
/// creation time alone gives that order with integer compares only (and routes read in one
/// scan, which share their creation time, in one pass).
fn route_order(store: &weir_store::Store) -> Vec<((i64, u32), AnyRoute<'_>, usize)> {
    let mut order = Vec::with_capacity(store.http_routes.len() + store.grpc_routes.len());
    let mut http = store.http_routes.iter().enumerate().peekable();
    let mut grpc = store.grpc_routes.iter().enumerate().peekable();
    loop {
        let take_http = match (http.peek(), grpc.peek()) {
            (Some((_, (a, _))), Some((_, (b, _)))) => a <= b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_http {
            if let Some((slot, (_, r))) = http.next() {
                order.push((crate::meta::created(&r.metadata), AnyRoute::Http(r), slot));
            }
        } else if let Some((slot, (_, r))) = grpc.next() {
            order.push((crate::meta::created(&r.metadata), AnyRoute::Grpc(r), slot));
        }
    }
    order.sort_by_key(|o| o.0);
    order
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
