//! The object cache: every source (files today, the Kubernetes API tomorrow) writes the
//! objects it sees into a [`Store`]; the translator reads a `Store` and nothing else.
//!
//! This is the one module that names upstream API types. Everything downstream of the
//! translator sees only `weir-snapshot` types. The store does no validation beyond what
//! deserialization already did: the translator decides what is valid. [`refs`] lists the
//! ConfigMaps and Secrets the other objects name (what Kubernetes mode fetches in full).

pub mod refs;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use gateway_api::backendtlspolicies::{BackendTlsPolicy, BackendTlsPolicyStatus};
pub use gateway_api::experimental::tcproutes::{TcpRoute, TcpRouteStatus};
pub use gateway_api::gatewayclasses::{GatewayClass, GatewayClassStatus};
pub use gateway_api::gateways::{Gateway, GatewayStatus};
pub use gateway_api::grpcroutes::{GrpcRoute, GrpcRouteStatus};
pub use gateway_api::httproutes::{HttpRoute, HttpRouteStatus};
pub use gateway_api::listenersets::{ListenerSet, ListenerSetStatus};
pub use gateway_api::referencegrants::ReferenceGrant;
pub use gateway_api::tlsroutes::{TlsRoute, TlsRouteStatus};
pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

/// Upstream Gateway API type modules, for code that needs the generated nested types.
pub mod gw {
    pub use gateway_api::backendtlspolicies;
    /// TCPRoute is served only by the experimental channel's CRD (`v1alpha2`).
    pub use gateway_api::experimental::tcproutes;
    pub use gateway_api::gatewayclasses;
    pub use gateway_api::gateways;
    pub use gateway_api::grpcroutes;
    pub use gateway_api::httproutes;
    pub use gateway_api::listenersets;
    pub use gateway_api::referencegrants;
    pub use gateway_api::tlsroutes;
}

/// The API group of Gateway API resources.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Identity of a namespaced (or, with an empty namespace, cluster-scoped) object.
///
/// The parts are shared strings: keys are copied into every map and status that names the
/// object (the store, its clones on each rescan, each translation's statuses), and a copy is
/// then two reference counts, not two allocations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl Default for ObjectKey {
    fn default() -> Self {
        Self::new("", "")
    }
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Key of a cluster-scoped object.
    pub fn cluster(name: impl Into<Arc<str>>) -> Self {
        Self::new("", name)
    }

    /// Key of any object from its metadata (namespace empty when absent).
    pub fn of(meta: &ObjectMeta) -> Self {
        Self::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The kinds Weir reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    ListenerSet,
    ReferenceGrant,
    BackendTlsPolicy,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
    Namespace,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::ListenerSet,
        Kind::ReferenceGrant,
        Kind::BackendTlsPolicy,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Namespace,
    ];

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::ListenerSet => "ListenerSet",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Namespace => "Namespace",
        }
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::GatewayClass
            | Kind::Gateway
            | Kind::HttpRoute
            | Kind::GrpcRoute
            | Kind::TlsRoute
            | Kind::TcpRoute
            | Kind::ListenerSet
            | Kind::ReferenceGrant
            | Kind::BackendTlsPolicy => GATEWAY_GROUP,
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::Service | Kind::Secret | Kind::ConfigMap | Kind::Namespace => "",
        }
    }

    /// The apiVersion Weir reports for this kind (the storage version).
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::GatewayClass
            | Kind::Gateway
            | Kind::HttpRoute
            | Kind::GrpcRoute
            | Kind::TlsRoute
            | Kind::ListenerSet
            | Kind::ReferenceGrant
            | Kind::BackendTlsPolicy => "gateway.networking.k8s.io/v1",
            Kind::TcpRoute => "gateway.networking.k8s.io/v1alpha2",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Service | Kind::Secret | Kind::ConfigMap | Kind::Namespace => "v1",
        }
    }

    pub fn is_cluster_scoped(self) -> bool {
        matches!(self, Kind::GatewayClass | Kind::Namespace)
    }

    /// Whether a cluster may lack this kind's CRD (TCPRoute is only in the experimental
    /// channel): Kubernetes mode then treats the kind as empty instead of waiting for it.
    pub fn is_optional(self) -> bool {
        matches!(self, Kind::TcpRoute)
    }

    /// Recognise an object by its `apiVersion` and `kind`: the versions the Gateway API v1.5.1
    /// CRDs serve. GatewayClass, Gateway and HTTPRoute in `v1` and `v1beta1`; `ReferenceGrant`
    /// also `v1alpha2`; GRPCRoute and ListenerSet only `v1` (their CRDs serve no other version); core kinds only
    /// in their `v1`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let k = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        if k.group() != group {
            return None;
        }
        let version_ok = match k {
            Kind::ReferenceGrant => matches!(version, "v1" | "v1beta1" | "v1alpha2"),
            // The v1.5.1 TLSRoute CRD serves v1, v1alpha2 and v1alpha3 (one schema for what
            // Weir reads: parentRefs, hostnames, rules[].backendRefs).
            Kind::TlsRoute => matches!(version, "v1" | "v1alpha2" | "v1alpha3"),
            // TCPRoute: only the experimental channel's v1alpha2.
            Kind::TcpRoute => version == "v1alpha2",
            // BackendTLSPolicy: v1 (standard), and v1alpha3 in the experimental channel.
            Kind::BackendTlsPolicy => matches!(version, "v1" | "v1alpha3"),
            Kind::GatewayClass | Kind::Gateway | Kind::HttpRoute => {
                matches!(version, "v1" | "v1beta1")
            }
            // GRPCRoute, ListenerSet and the core kinds.
            _ => version == "v1",
        };
        version_ok.then_some(k)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an object (or an error) came from, for messages a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct Location {
    /// The file it was read from; empty for objects from the Kubernetes API.
    pub file: PathBuf,
    /// 1-based line of the document (or of the error) in `file`; 0 when unknown.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A newer version of an object that a source could not accept. The store keeps serving the
/// last good version (if any) and remembers why the newer one was rejected, so status and
/// `weir check` can say so.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    pub location: Location,
    pub message: String,
}

/// Any object Weir reads, shared cheaply.
#[derive(Clone, Debug)]
pub enum Object {
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HttpRoute(Arc<HttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
    TlsRoute(Arc<TlsRoute>),
    TcpRoute(Arc<TcpRoute>),
    ListenerSet(Arc<ListenerSet>),
    ReferenceGrant(Arc<ReferenceGrant>),
    BackendTlsPolicy(Arc<BackendTlsPolicy>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    ConfigMap(Arc<ConfigMap>),
    Namespace(Arc<Namespace>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::BackendTlsPolicy(_) => Kind::BackendTlsPolicy,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::ListenerSet(_) => Kind::ListenerSet,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::TlsRoute(o) => &o.metadata,
            Object::TcpRoute(o) => &o.metadata,
            Object::BackendTlsPolicy(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::ListenerSet(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::of(self.meta())
    }

    /// Whether both are the same allocation (the same version of the same object, as long as
    /// one of them is held).
    pub fn same_allocation(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::GatewayClass(a), Object::GatewayClass(b)) => Arc::ptr_eq(a, b),
            (Object::Gateway(a), Object::Gateway(b)) => Arc::ptr_eq(a, b),
            (Object::HttpRoute(a), Object::HttpRoute(b)) => Arc::ptr_eq(a, b),
            (Object::GrpcRoute(a), Object::GrpcRoute(b)) => Arc::ptr_eq(a, b),
            (Object::TlsRoute(a), Object::TlsRoute(b)) => Arc::ptr_eq(a, b),
            (Object::TcpRoute(a), Object::TcpRoute(b)) => Arc::ptr_eq(a, b),
            (Object::BackendTlsPolicy(a), Object::BackendTlsPolicy(b)) => Arc::ptr_eq(a, b),
            (Object::ConfigMap(a), Object::ConfigMap(b)) => Arc::ptr_eq(a, b),
            (Object::ListenerSet(a), Object::ListenerSet(b)) => Arc::ptr_eq(a, b),
            (Object::ReferenceGrant(a), Object::ReferenceGrant(b)) => Arc::ptr_eq(a, b),
            (Object::Service(a), Object::Service(b)) => Arc::ptr_eq(a, b),
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => Arc::ptr_eq(a, b),
            (Object::Secret(a), Object::Secret(b)) => Arc::ptr_eq(a, b),
            (Object::Namespace(a), Object::Namespace(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Everything the translator needs, by kind, ordered by key (so iteration is deterministic).
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub gateway_classes: BTreeMap<ObjectKey, Arc<GatewayClass>>,
    pub gateways: BTreeMap<ObjectKey, Arc<Gateway>>,
    pub http_routes: BTreeMap<ObjectKey, Arc<HttpRoute>>,
    pub grpc_routes: BTreeMap<ObjectKey, Arc<GrpcRoute>>,
    pub tls_routes: BTreeMap<ObjectKey, Arc<TlsRoute>>,
    pub tcp_routes: BTreeMap<ObjectKey, Arc<TcpRoute>>,
    pub backend_tls_policies: BTreeMap<ObjectKey, Arc<BackendTlsPolicy>>,
    pub config_maps: BTreeMap<ObjectKey, Arc<ConfigMap>>,
    pub listener_sets: BTreeMap<ObjectKey, Arc<ListenerSet>>,
    pub reference_grants: BTreeMap<ObjectKey, Arc<ReferenceGrant>>,
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    pub namespaces: BTreeMap<ObjectKey, Arc<Namespace>>,
    /// Newer versions a source rejected, by kind and key (see [`Rejection`]).
    pub rejected: BTreeMap<(Kind, ObjectKey), Rejection>,
    /// Where each object was read from (file mode), for messages. Shared between versions
    /// of the store while no object moves (copied on write with `Arc::make_mut`).
    pub locations: Arc<BTreeMap<(Kind, ObjectKey), Location>>,
    /// Problems of the latest read that no single object owns (a file that is not YAML at
    /// all, say). The objects such a file held before keep serving.
    pub errors: Vec<Rejection>,
}

impl Store {
    /// Insert or replace an object.
    pub fn apply(&mut self, object: Object) {
        let key = object.key();
        match object {
            Object::GatewayClass(o) => self.gateway_classes.insert(key, o).map(drop),
            Object::Gateway(o) => self.gateways.insert(key, o).map(drop),
            Object::HttpRoute(o) => self.http_routes.insert(key, o).map(drop),
            Object::GrpcRoute(o) => self.grpc_routes.insert(key, o).map(drop),
            Object::TlsRoute(o) => self.tls_routes.insert(key, o).map(drop),
            Object::TcpRoute(o) => self.tcp_routes.insert(key, o).map(drop),
            Object::BackendTlsPolicy(o) => self.backend_tls_policies.insert(key, o).map(drop),
            Object::ConfigMap(o) => self.config_maps.insert(key, o).map(drop),
            Object::ListenerSet(o) => self.listener_sets.insert(key, o).map(drop),
            Object::ReferenceGrant(o) => self.reference_grants.insert(key, o).map(drop),
            Object::Service(o) => self.services.insert(key, o).map(drop),
            Object::EndpointSlice(o) => self.endpoint_slices.insert(key, o).map(drop),
            Object::Secret(o) => self.secrets.insert(key, o).map(drop),
            Object::Namespace(o) => self.namespaces.insert(key, o).map(drop),
        };
    }

    /// Remove an object; returns whether it was present.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        if self.locations.contains_key(&(kind, key.clone())) {
            Arc::make_mut(&mut self.locations).remove(&(kind, key.clone()));
        }
        self.rejected.remove(&(kind, key.clone()));
        match kind {
            Kind::GatewayClass => self.gateway_classes.remove(key).is_some(),
            Kind::Gateway => self.gateways.remove(key).is_some(),
            Kind::HttpRoute => self.http_routes.remove(key).is_some(),
            Kind::GrpcRoute => self.grpc_routes.remove(key).is_some(),
            Kind::TlsRoute => self.tls_routes.remove(key).is_some(),
            Kind::TcpRoute => self.tcp_routes.remove(key).is_some(),
            Kind::BackendTlsPolicy => self.backend_tls_policies.remove(key).is_some(),
            Kind::ConfigMap => self.config_maps.remove(key).is_some(),
            Kind::ListenerSet => self.listener_sets.remove(key).is_some(),
            Kind::ReferenceGrant => self.reference_grants.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::Secret => self.secrets.remove(key).is_some(),
            Kind::Namespace => self.namespaces.remove(key).is_some(),
        }
    }

    /// Look an object up by kind and key.
    pub fn get(&self, kind: Kind, key: &ObjectKey) -> Option<Object> {
        Some(match kind {
            Kind::GatewayClass => Object::GatewayClass(self.gateway_classes.get(key)?.clone()),
            Kind::Gateway => Object::Gateway(self.gateways.get(key)?.clone()),
            Kind::HttpRoute => Object::HttpRoute(self.http_routes.get(key)?.clone()),
            Kind::GrpcRoute => Object::GrpcRoute(self.grpc_routes.get(key)?.clone()),
            Kind::TlsRoute => Object::TlsRoute(self.tls_routes.get(key)?.clone()),
            Kind::TcpRoute => Object::TcpRoute(self.tcp_routes.get(key)?.clone()),
            Kind::BackendTlsPolicy => {
                Object::BackendTlsPolicy(self.backend_tls_policies.get(key)?.clone())
            }
            Kind::ConfigMap => Object::ConfigMap(self.config_maps.get(key)?.clone()),
            Kind::ListenerSet => Object::ListenerSet(self.listener_sets.get(key)?.clone()),
            Kind::ReferenceGrant => Object::ReferenceGrant(self.reference_grants.get(key)?.clone()),
            Kind::Service => Object::Service(self.services.get(key)?.clone()),
            Kind::EndpointSlice => Object::EndpointSlice(self.endpoint_slices.get(key)?.clone()),
            Kind::Secret => Object::Secret(self.secrets.get(key)?.clone()),
            Kind::Namespace => Object::Namespace(self.namespaces.get(key)?.clone()),
        })
    }

    /// Labels of a namespace (empty when the namespace object is unknown).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectKey::cluster(namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Total number of objects held.
    pub fn len(&self) -> usize {
        self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.tls_routes.len()
            + self.tcp_routes.len()
            + self.backend_tls_policies.len()
            + self.config_maps.len()
            + self.listener_sets.len()
            + self.reference_grants.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.namespaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_api_versions() {
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
            Some(Kind::HttpRoute)
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1", "Gateway"),
            Some(Kind::Gateway)
        );
        assert_eq!(Kind::from_type("v1", "Service"), Some(Kind::Service));
        assert_eq!(
            Kind::from_type("discovery.k8s.io/v1", "EndpointSlice"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1", "GRPCRoute"),
            Some(Kind::GrpcRoute)
        );
        // The v1.5.1 GRPCRoute CRD serves only v1.
        for version in ["v1beta1", "v1alpha2"] {
            assert_eq!(
                Kind::from_type(&format!("gateway.networking.k8s.io/{version}"), "GRPCRoute"),
                None
            );
        }
        for version in ["v1", "v1alpha2", "v1alpha3"] {
            assert_eq!(
                Kind::from_type(&format!("gateway.networking.k8s.io/{version}"), "TLSRoute"),
                Some(Kind::TlsRoute)
            );
        }
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1", "ListenerSet"),
            Some(Kind::ListenerSet)
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
            Some(Kind::TcpRoute)
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1", "TCPRoute"),
            None
        );
        for version in ["v1", "v1alpha3"] {
            assert_eq!(
                Kind::from_type(
                    &format!("gateway.networking.k8s.io/{version}"),
                    "BackendTLSPolicy"
                ),
                Some(Kind::BackendTlsPolicy)
            );
        }
        assert_eq!(Kind::from_type("v1", "ConfigMap"), Some(Kind::ConfigMap));
        assert_eq!(Kind::from_type("apps/v1", "Deployment"), None);
        assert_eq!(Kind::from_type("v1", "HTTPRoute"), None);
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v2", "Gateway"),
            None
        );
    }

    #[test]
    fn apply_and_delete() {
        let mut store = Store::default();
        let mut svc = Service::default();
        svc.metadata.namespace = Some("ns".into());
        svc.metadata.name = Some("a".into());
        store.apply(Object::Service(Arc::new(svc)));
        let key = ObjectKey::new("ns", "a");
        assert!(store.get(Kind::Service, &key).is_some());
        assert_eq!(store.len(), 1);
        assert!(store.delete(Kind::Service, &key));
        assert!(!store.delete(Kind::Service, &key));
        assert!(store.is_empty());
    }
}
