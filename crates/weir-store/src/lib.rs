//! The object cache: every source (files today, the Kubernetes API tomorrow) writes the
//! objects it sees into a [`Store`]; the translator reads a `Store` and nothing else.
//!
//! This is the one module that names upstream API types. Everything downstream of the
//! translator sees only `weir-snapshot` types. The store does no validation beyond what
//! deserialization already did: the translator decides what is valid. [`refs`] lists the
//! ConfigMaps and Secrets the other objects name (what Kubernetes mode fetches in full).

pub mod inference;
pub mod policies;
pub mod refs;
pub mod tcproute;
pub mod udproute;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use gateway_api::backendtlspolicies::{BackendTlsPolicy, BackendTlsPolicyStatus};
pub use gateway_api::experimental::grpcroutes::{GrpcRoute, GrpcRouteStatus};
pub use gateway_api::experimental::httproutes::{HttpRoute, HttpRouteStatus};
pub use gateway_api::experimental::xbackendtrafficpolicies::{
    XBackendTrafficPolicy, XBackendTrafficPolicyStatus,
};
pub use gateway_api::gatewayclasses::{GatewayClass, GatewayClassStatus};
pub use gateway_api::gateways::{Gateway, GatewayStatus};
pub use gateway_api::listenersets::{ListenerSet, ListenerSetStatus};
pub use gateway_api::referencegrants::ReferenceGrant;
pub use gateway_api::tlsroutes::{TlsRoute, TlsRouteStatus};
pub use inference::{InferencePool, InferencePoolStatus, INFERENCE_GROUP};
pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
pub use policies::{
    BackendTrafficPolicy, ClientTrafficPolicy, ExtensionPolicy, PolicyStatus, SecurityPolicy,
    POLICY_GROUP,
};
pub use tcproute::{TcpRoute, TcpRouteStatus};
pub use udproute::{UdpRoute, UdpRouteStatus};

/// Upstream Gateway API type modules, for code that needs the generated nested types.
pub mod gw {
    /// TCPRoute's nested types (the root type is Weir's own, at `v1`: see [`crate::tcproute`]).
    pub use crate::tcproute as tcproutes;
    /// UDPRoute's nested types (the root type is Weir's own, at `v1`: see [`crate::udproute`]).
    pub use crate::udproute as udproutes;
    pub use gateway_api::backendtlspolicies;
    pub use gateway_api::experimental::grpcroutes;
    pub use gateway_api::experimental::httproutes;
    pub use gateway_api::experimental::xbackendtrafficpolicies;
    pub use gateway_api::gatewayclasses;
    pub use gateway_api::gateways;
    pub use gateway_api::listenersets;
    pub use gateway_api::referencegrants;
    pub use gateway_api::tlsroutes;
}

/// The kind table (one row per kind; see docs/ARCHITECTURE.md, "Adding a kind").
mod kinds;
pub use kinds::{Kind, KindInfo, KindType, KindVisitor, Object, Store, WrittenStatus};

/// The API group of Gateway API resources.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The API group of Gateway API's experimental-only `X` kinds (XBackendTrafficPolicy).
pub const X_GATEWAY_GROUP: &str = "gateway.networking.x-k8s.io";

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

impl Store {
    /// Labels of a namespace (empty when the namespace object is unknown).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectKey::cluster(namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
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
        // The v1.6.1 GRPCRoute CRD serves only v1.
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
        // TCPRoute: v1 (standard since v1.6) and v1alpha2 (still served by the experimental
        // channel's CRD); never another version.
        for version in ["v1", "v1alpha2"] {
            assert_eq!(
                Kind::from_type(&format!("gateway.networking.k8s.io/{version}"), "TCPRoute"),
                Some(Kind::TcpRoute)
            );
        }
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1alpha3", "TCPRoute"),
            None
        );
        assert_eq!(Kind::TcpRoute.api_version(), "gateway.networking.k8s.io/v1");
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
