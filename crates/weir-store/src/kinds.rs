//! The kind table: one row per kind Weir reads, from which [`Kind`], [`Object`], the
//! [`Store`]'s maps and every per-kind list in the workspace are derived, so that a kind
//! cannot be left out of one of them (a hand-written list once forgot three kinds in the
//! file source's change check, and edits to only those kinds were dropped).
//!
//! Adding a kind is one row in the `kinds!` invocation below plus its types (see
//! docs/ARCHITECTURE.md, "Adding a kind"). Code elsewhere that needs the kinds iterates
//! [`Kind::ALL`], asks a kind for a property ([`Kind::status`], [`Kind::field_selector`],
//! ...), or runs generic code for a kind's Rust type with [`Kind::visit`]; it does not name
//! kinds in a list.
//!
//! Model: kube-rs's multi-kind reflector, one cache keyed by group/version/kind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::policies::{
    BackendTrafficPolicy, ClientTrafficPolicy, ExtensionPolicy, SecurityPolicy, POLICY_GROUP,
};
use crate::{
    BackendTlsPolicy, ConfigMap, EndpointSlice, Gateway, GatewayClass, GrpcRoute, HttpRoute,
    InferencePool, ListenerSet, Location, Namespace, ObjectKey, ObjectMeta, Pod, ReferenceGrant,
    Rejection, Secret, Service, TcpRoute, TlsRoute, UdpRoute, XBackendTrafficPolicy, GATEWAY_GROUP,
    INFERENCE_GROUP, X_GATEWAY_GROUP,
};

/// The status Weir writes for a kind (its status subresource), and how it shares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum WrittenStatus {
    /// Weir writes no status for this kind.
    None,
    /// The whole status is Weir's (GatewayClass, Gateway, ListenerSet): replaced wholesale.
    Whole,
    /// `status.parents`, shared with other controllers (routes): Weir replaces only its own
    /// entries, matched by `parentRef`.
    Parents,
    /// `status.ancestors`, shared with other controllers (policies): Weir replaces only its
    /// own entries, matched by `ancestorRef`.
    Ancestors,
}

impl WrittenStatus {
    /// For a status shared with other controllers: the list Weir writes its entries into
    /// and the field that identifies an entry.
    pub fn shared_list(self) -> Option<(&'static str, &'static str)> {
        match self {
            WrittenStatus::Parents => Some(("parents", "parentRef")),
            WrittenStatus::Ancestors => Some(("ancestors", "ancestorRef")),
            WrittenStatus::None | WrittenStatus::Whole => None,
        }
    }
}

/// One row of the kind table (see [`Kind::info`]).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindInfo {
    /// The Kubernetes `kind` string.
    pub kind: &'static str,
    /// The API group (empty for the core group).
    pub group: &'static str,
    /// The versions accepted in manifests ([`Kind::from_type`]): those the CRDs Weir
    /// supports serve (Gateway API v1.6.1), or `v1` for the built-in kinds.
    pub versions: &'static [&'static str],
    /// The apiVersion Weir reads, watches and reports (the storage version).
    pub api_version: &'static str,
    /// The resource name in API paths and RBAC rules.
    pub plural: &'static str,
    pub cluster_scoped: bool,
    /// Whether a cluster may lack this kind's CRD: Kubernetes mode then treats the kind as
    /// empty instead of waiting for it.
    pub optional: bool,
    /// The status Weir writes.
    pub status: WrittenStatus,
    /// Whether the API server keeps a `status` written in a manifest (file mode drops it
    /// where the status is a subresource that only controllers write).
    pub manifest_status: bool,
    /// The field selector Kubernetes mode watches this kind with, if any.
    pub field_selector: Option<&'static str>,
}

/// A Rust type that is one of the kinds in the table: what generic per-kind code
/// ([`Kind::visit`]) may rely on.
pub trait KindType:
    kube::Resource<DynamicType = ()>
    + DeserializeOwned
    + Serialize
    + Clone
    + Default
    + PartialEq
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    /// Wrap into an [`Object`].
    fn into_object(object: Arc<Self>) -> Object;
    /// The store's map of this kind.
    fn objects(store: &Store) -> &BTreeMap<ObjectKey, Arc<Self>>;
    fn objects_mut(store: &mut Store) -> &mut BTreeMap<ObjectKey, Arc<Self>>;
}

/// Generic code to run for the Rust type of a kind chosen at run time ([`Kind::visit`]).
pub trait KindVisitor {
    type Output;
    fn visit<T: KindType>(self) -> Self::Output;
}

/// Generates everything per kind from the rows below.
macro_rules! kinds {
    ($(
        $(#[$doc:meta])*
        $variant:ident($ty:ty) {
            kind: $kind:literal,
            group: $group:expr,
            versions: [$($version:literal),+ $(,)?],
            api_version: $api_version:literal,
            plural: $plural:literal,
            field: $field:ident,
            cluster_scoped: $cluster_scoped:literal,
            optional: $optional:literal,
            status: $status:ident,
            manifest_status: $manifest_status:literal,
            field_selector: $field_selector:expr $(,)?
        }
    ),+ $(,)?) => {
        /// The kinds Weir reads (one per row of the kind table).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        pub enum Kind {
            $($(#[$doc])* $variant,)+
        }

        impl Kind {
            /// How many kinds there are.
            pub const COUNT: usize = [$(Kind::$variant),+].len();

            /// Every kind, in table order.
            pub const ALL: [Kind; Kind::COUNT] = [$(Kind::$variant),+];

            const INFO: [KindInfo; Kind::COUNT] = [$(
                KindInfo {
                    kind: $kind,
                    group: $group,
                    versions: &[$($version),+],
                    api_version: $api_version,
                    plural: $plural,
                    cluster_scoped: $cluster_scoped,
                    optional: $optional,
                    status: WrittenStatus::$status,
                    manifest_status: $manifest_status,
                    field_selector: $field_selector,
                },
            )+];

            /// Run `visitor` for this kind's Rust type.
            pub fn visit<V: KindVisitor>(self, visitor: V) -> V::Output {
                match self {
                    $(Kind::$variant => visitor.visit::<$ty>(),)+
                }
            }
        }

        $(
            impl KindType for $ty {
                const KIND: Kind = Kind::$variant;
                fn into_object(object: Arc<Self>) -> Object {
                    Object::$variant(object)
                }
                fn objects(store: &Store) -> &BTreeMap<ObjectKey, Arc<Self>> {
                    &store.$field
                }
                fn objects_mut(store: &mut Store) -> &mut BTreeMap<ObjectKey, Arc<Self>> {
                    &mut store.$field
                }
            }
        )+

        /// Any object Weir reads, shared cheaply.
        #[derive(Clone, Debug)]
        pub enum Object {
            $($variant(Arc<$ty>),)+
        }

        impl Object {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$variant(_) => Kind::$variant,)+
                }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Object::$variant(o) => &o.metadata,)+
                }
            }

            /// Whether both are the same allocation (the same version of the same object,
            /// as long as one of them is held).
            pub fn same_allocation(&self, other: &Object) -> bool {
                match (self, other) {
                    $((Object::$variant(a), Object::$variant(b)) => Arc::ptr_eq(a, b),)+
                    _ => false,
                }
            }

            /// The object's JSON form.
            pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self {
                    $(Object::$variant(o) => serde_json::to_value(&**o),)+
                }
            }

            /// Replace the object by a copy with its metadata changed by `change` (a new
            /// allocation: the previous version, which a store may still serve, is never
            /// changed under it).
            pub fn with_meta(&mut self, change: impl FnOnce(&mut ObjectMeta)) {
                match self {
                    $(Object::$variant(o) => {
                        let mut copy = (**o).clone();
                        change(&mut copy.metadata);
                        *o = Arc::new(copy);
                    })+
                }
            }
        }

        /// Everything the translator needs, by kind, ordered by key (so iteration is
        /// deterministic).
        #[derive(Clone, Debug, Default)]
        pub struct Store {
            $(pub $field: BTreeMap<ObjectKey, Arc<$ty>>,)+
            /// Newer versions a source rejected, by kind and key (see [`Rejection`]).
            pub rejected: BTreeMap<(Kind, ObjectKey), Rejection>,
            /// Where each object was read from (file mode), for messages. Shared between
            /// versions of the store while no object moves (copied on write with
            /// `Arc::make_mut`).
            pub locations: Arc<BTreeMap<(Kind, ObjectKey), Location>>,
            /// Problems of the latest read that no single object owns (a file that is not
            /// YAML at all, say). The objects such a file held before keep serving.
            pub errors: Vec<Rejection>,
        }

        impl Store {
            /// Insert or replace an object.
            pub fn apply(&mut self, object: Object) {
                let key = object.key();
                match object {
                    $(Object::$variant(o) => drop(self.$field.insert(key, o)),)+
                }
            }

            /// Remove an object's version (not what the store remembers about it); returns
            /// whether it was present.
            fn remove(&mut self, kind: Kind, key: &ObjectKey) -> bool {
                match kind {
                    $(Kind::$variant => self.$field.remove(key).is_some(),)+
                }
            }

            /// Look an object up by kind and key.
            pub fn get(&self, kind: Kind, key: &ObjectKey) -> Option<Object> {
                match kind {
                    $(Kind::$variant => self.$field.get(key).cloned().map(Object::$variant),)+
                }
            }

            /// How many objects of `kind` are held.
            pub fn len_of(&self, kind: Kind) -> usize {
                match kind {
                    $(Kind::$variant => self.$field.len(),)+
                }
            }

            /// Remove the objects of `kind` (not what the store remembers about them).
            fn clear_objects(&mut self, kind: Kind) {
                match kind {
                    $(Kind::$variant => self.$field.clear(),)+
                }
            }

            /// Every object, kind by kind in table order, each kind ordered by key.
            pub fn objects(&self) -> impl Iterator<Item = Object> + '_ {
                std::iter::empty()
                    $(.chain(self.$field.values().cloned().map(Object::$variant)))+
            }

            /// Whether both hold the same objects (by key, and the same allocation or an
            /// equal value), kind by kind. Rejections, locations and errors are not compared.
            pub fn same_objects(&self, other: &Store) -> bool {
                fn same<T: PartialEq>(
                    a: &BTreeMap<ObjectKey, Arc<T>>,
                    b: &BTreeMap<ObjectKey, Arc<T>>,
                ) -> bool {
                    a.len() == b.len()
                        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
                            ka == kb && (Arc::ptr_eq(va, vb) || va == vb)
                        })
                }
                true $(&& same(&self.$field, &other.$field))+
            }
        }
    };
}

kinds! {
    GatewayClass(GatewayClass) {
        kind: "GatewayClass",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1beta1"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "gatewayclasses",
        field: gateway_classes,
        cluster_scoped: true,
        optional: false,
        status: Whole,
        manifest_status: false,
        field_selector: None,
    },
    Gateway(Gateway) {
        kind: "Gateway",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1beta1"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "gateways",
        field: gateways,
        cluster_scoped: false,
        optional: false,
        status: Whole,
        manifest_status: false,
        field_selector: None,
    },
    HttpRoute(HttpRoute) {
        kind: "HTTPRoute",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1beta1"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "httproutes",
        field: http_routes,
        cluster_scoped: false,
        optional: false,
        status: Parents,
        manifest_status: false,
        field_selector: None,
    },
    /// The v1.6.1 GRPCRoute CRD serves only `v1`.
    GrpcRoute(GrpcRoute) {
        kind: "GRPCRoute",
        group: GATEWAY_GROUP,
        versions: ["v1"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "grpcroutes",
        field: grpc_routes,
        cluster_scoped: false,
        optional: false,
        status: Parents,
        manifest_status: false,
        field_selector: None,
    },
    /// The v1.6.1 TLSRoute CRD serves v1 (standard channel), and v1alpha2 and v1alpha3 in
    /// the experimental channel (one schema for what Weir reads: parentRefs, hostnames,
    /// rules[].backendRefs).
    TlsRoute(TlsRoute) {
        kind: "TLSRoute",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1alpha2", "v1alpha3"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "tlsroutes",
        field: tls_routes,
        cluster_scoped: false,
        optional: false,
        status: Parents,
        manifest_status: false,
        field_selector: None,
    },
    /// Standard since v1.6: the v1.6.1 CRD serves and stores `v1` in both channels, and
    /// the experimental channel still serves `v1alpha2` (same schema, no conversion).
    /// Kubernetes mode watches `v1`, which every v1.6 CRD serves and which returns objects
    /// written as `v1alpha2` too; a cluster whose TCPRoute CRD predates v1.6 (`v1alpha2`
    /// only) does not serve it, and TCPRoute then counts as not installed (`optional`)
    /// until the CRDs are upgraded. A cluster may lack the CRD altogether (the v1.5
    /// standard channel has none).
    TcpRoute(TcpRoute) {
        kind: "TCPRoute",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1alpha2"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "tcproutes",
        field: tcp_routes,
        cluster_scoped: false,
        optional: true,
        status: Parents,
        manifest_status: false,
        field_selector: None,
    },
    /// UDPRoute: like TCPRoute, `v1` since Gateway API v1.6 (the experimental channel also
    /// serves `v1alpha2`); optional, as a cluster may lack its CRD or serve it only at
    /// `v1alpha2` (before v1.6).
    UdpRoute(UdpRoute) {
        kind: "UDPRoute",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1alpha2"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "udproutes",
        field: udp_routes,
        cluster_scoped: false,
        optional: true,
        status: Parents,
        manifest_status: false,
        field_selector: None,
    },
    /// The v1.6.1 ListenerSet CRD serves only `v1`.
    ListenerSet(ListenerSet) {
        kind: "ListenerSet",
        group: GATEWAY_GROUP,
        versions: ["v1"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "listenersets",
        field: listener_sets,
        cluster_scoped: false,
        optional: false,
        status: Whole,
        manifest_status: false,
        field_selector: None,
    },
    ReferenceGrant(ReferenceGrant) {
        kind: "ReferenceGrant",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1beta1", "v1alpha2"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "referencegrants",
        field: reference_grants,
        cluster_scoped: false,
        optional: false,
        status: None,
        manifest_status: true,
        field_selector: None,
    },
    /// `v1` (standard channel), and `v1alpha3` in the experimental channel.
    BackendTlsPolicy(BackendTlsPolicy) {
        kind: "BackendTLSPolicy",
        group: GATEWAY_GROUP,
        versions: ["v1", "v1alpha3"],
        api_version: "gateway.networking.k8s.io/v1",
        plural: "backendtlspolicies",
        field: backend_tls_policies,
        cluster_scoped: false,
        optional: false,
        status: Ancestors,
        manifest_status: false,
        field_selector: None,
    },
    /// Gateway API's experimental `XBackendTrafficPolicy` (`gateway.networking.x-k8s.io`,
    /// experimental channel only): optional, as a cluster with the standard channel has no
    /// CRD for it.
    XBackendTrafficPolicy(XBackendTrafficPolicy) {
        kind: "XBackendTrafficPolicy",
        group: X_GATEWAY_GROUP,
        versions: ["v1alpha1"],
        api_version: "gateway.networking.x-k8s.io/v1alpha1",
        plural: "xbackendtrafficpolicies",
        field: x_backend_traffic_policies,
        cluster_scoped: false,
        optional: true,
        status: Ancestors,
        manifest_status: false,
        field_selector: None,
    },
    /// Weir's own policy kinds (`gateway.weir.dev`, see `policies`): optional, as a cluster
    /// without Weir's CRDs installed has none.
    ClientTrafficPolicy(ClientTrafficPolicy) {
        kind: "ClientTrafficPolicy",
        group: POLICY_GROUP,
        versions: ["v1alpha1"],
        api_version: "gateway.weir.dev/v1alpha1",
        plural: "clienttrafficpolicies",
        field: client_traffic_policies,
        cluster_scoped: false,
        optional: true,
        status: Ancestors,
        manifest_status: false,
        field_selector: None,
    },
    BackendTrafficPolicy(BackendTrafficPolicy) {
        kind: "BackendTrafficPolicy",
        group: POLICY_GROUP,
        versions: ["v1alpha1"],
        api_version: "gateway.weir.dev/v1alpha1",
        plural: "backendtrafficpolicies",
        field: backend_traffic_policies,
        cluster_scoped: false,
        optional: true,
        status: Ancestors,
        manifest_status: false,
        field_selector: None,
    },
    SecurityPolicy(SecurityPolicy) {
        kind: "SecurityPolicy",
        group: POLICY_GROUP,
        versions: ["v1alpha1"],
        api_version: "gateway.weir.dev/v1alpha1",
        plural: "securitypolicies",
        field: security_policies,
        cluster_scoped: false,
        optional: true,
        status: Ancestors,
        manifest_status: false,
        field_selector: None,
    },
    ExtensionPolicy(ExtensionPolicy) {
        kind: "ExtensionPolicy",
        group: POLICY_GROUP,
        versions: ["v1alpha1"],
        api_version: "gateway.weir.dev/v1alpha1",
        plural: "extensionpolicies",
        field: extension_policies,
        cluster_scoped: false,
        optional: true,
        status: Ancestors,
        manifest_status: false,
        field_selector: None,
    },
    /// The Gateway API Inference Extension's pool of model servers (`inference`):
    /// optional, as most clusters have no Inference Extension CRDs. Its `status.parents`
    /// has the routes' shape (one entry per Gateway, matched by `parentRef`).
    InferencePool(InferencePool) {
        kind: "InferencePool",
        group: INFERENCE_GROUP,
        versions: ["v1"],
        api_version: "inference.networking.k8s.io/v1",
        plural: "inferencepools",
        field: inference_pools,
        cluster_scoped: false,
        optional: true,
        status: Parents,
        manifest_status: false,
        field_selector: None,
    },
    Service(Service) {
        kind: "Service",
        group: "",
        versions: ["v1"],
        api_version: "v1",
        plural: "services",
        field: services,
        cluster_scoped: false,
        optional: false,
        status: None,
        manifest_status: false,
        field_selector: None,
    },
    EndpointSlice(EndpointSlice) {
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        versions: ["v1"],
        api_version: "discovery.k8s.io/v1",
        plural: "endpointslices",
        field: endpoint_slices,
        cluster_scoped: false,
        optional: false,
        status: None,
        manifest_status: true,
        field_selector: None,
    },
    /// Pods, for InferencePool endpoints only (labels, `status.podIP`, the Ready
    /// condition): Kubernetes mode watches running Pods alone (`status.phase=Running`), and
    /// only in namespaces with InferencePools, those the pools select (weir-sources
    /// `kube/pods.rs`).
    /// File mode keeps a manifest's `status` (that is where `podIP` is).
    Pod(Pod) {
        kind: "Pod",
        group: "",
        versions: ["v1"],
        api_version: "v1",
        plural: "pods",
        field: pods,
        cluster_scoped: false,
        optional: false,
        status: None,
        manifest_status: true,
        field_selector: Some("status.phase=Running"),
    },
    /// Only TLS Secrets are watched (listener certificates).
    Secret(Secret) {
        kind: "Secret",
        group: "",
        versions: ["v1"],
        api_version: "v1",
        plural: "secrets",
        field: secrets,
        cluster_scoped: false,
        optional: false,
        status: None,
        manifest_status: true,
        field_selector: Some("type=kubernetes.io/tls"),
    },
    ConfigMap(ConfigMap) {
        kind: "ConfigMap",
        group: "",
        versions: ["v1"],
        api_version: "v1",
        plural: "configmaps",
        field: config_maps,
        cluster_scoped: false,
        optional: false,
        status: None,
        manifest_status: true,
        field_selector: None,
    },
    Namespace(Namespace) {
        kind: "Namespace",
        group: "",
        versions: ["v1"],
        api_version: "v1",
        plural: "namespaces",
        field: namespaces,
        cluster_scoped: true,
        optional: false,
        status: None,
        manifest_status: true,
        field_selector: None,
    },
}

impl Kind {
    /// This kind's row of the table.
    pub fn info(self) -> &'static KindInfo {
        &Kind::INFO[self as usize]
    }

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        self.info().kind
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        self.info().group
    }

    /// The apiVersion Weir reads, watches and reports for this kind (the storage version).
    pub fn api_version(self) -> &'static str {
        self.info().api_version
    }

    /// The version part of [`Kind::api_version`].
    pub fn version(self) -> &'static str {
        let api_version = self.api_version();
        api_version
            .rsplit_once('/')
            .map_or(api_version, |(_, version)| version)
    }

    /// The resource name in API paths and RBAC rules (`httproutes`).
    pub fn plural(self) -> &'static str {
        self.info().plural
    }

    pub fn is_cluster_scoped(self) -> bool {
        self.info().cluster_scoped
    }

    /// Whether a cluster may lack this kind's CRD (TCPRoute: the v1.5 standard channel has
    /// none, and a pre-v1.6 one does not serve `v1`): Kubernetes mode then treats the kind as empty instead of waiting for it.
    pub fn is_optional(self) -> bool {
        self.info().optional
    }

    /// The status Weir writes for this kind.
    pub fn status(self) -> WrittenStatus {
        self.info().status
    }

    /// The field selector Kubernetes mode watches this kind with (Secrets: TLS only).
    pub fn field_selector(self) -> Option<&'static str> {
        self.info().field_selector
    }

    /// Recognise an object by its `apiVersion` and `kind`: the kind's group, in one of the
    /// versions its table row accepts.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let k = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        (k.group() == group && k.info().versions.contains(&version)).then_some(k)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Object {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::of(self.meta())
    }

    /// An object of `kind` with nothing set but its name and (unless the kind is
    /// cluster-scoped) namespace: for tests that must cover every kind.
    pub fn empty(kind: Kind, key: &ObjectKey) -> Object {
        struct Empty<'a>(&'a ObjectKey);
        impl KindVisitor for Empty<'_> {
            type Output = Object;
            fn visit<T: KindType>(self) -> Object {
                let mut o = T::default();
                let meta = o.meta_mut();
                meta.name = Some(self.0.name.to_string());
                if !T::KIND.is_cluster_scoped() {
                    meta.namespace = Some(self.0.namespace.to_string());
                }
                T::into_object(Arc::new(o))
            }
        }
        kind.visit(Empty(key))
    }

    /// The typed object of `kind` from its JSON form (what both sources deserialize).
    pub fn from_value(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
        struct FromValue(serde_json::Value);
        impl KindVisitor for FromValue {
            type Output = Result<Object, serde_json::Error>;
            fn visit<T: KindType>(self) -> Self::Output {
                serde_json::from_value::<T>(self.0).map(|o| T::into_object(Arc::new(o)))
            }
        }
        kind.visit(FromValue(value))
    }
}

impl Store {
    /// Remove an object (and what the store remembers about it); returns whether it was
    /// present.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        if self.locations.contains_key(&(kind, key.clone())) {
            Arc::make_mut(&mut self.locations).remove(&(kind, key.clone()));
        }
        self.rejected.remove(&(kind, key.clone()));
        self.remove(kind, key)
    }

    /// Remove every object of `kind` (and what the store remembers about them).
    pub fn clear_kind(&mut self, kind: Kind) {
        self.clear_objects(kind);
        self.rejected.retain(|(k, _), _| *k != kind);
        if self.locations.keys().any(|(k, _)| *k == kind) {
            Arc::make_mut(&mut self.locations).retain(|(k, _), _| *k != kind);
        }
    }

    /// Total number of objects held.
    pub fn len(&self) -> usize {
        Kind::ALL.into_iter().map(|kind| self.len_of(kind)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: Kind, name: &str) -> Object {
        Object::empty(kind, &ObjectKey::new("ns", name))
    }

    #[test]
    fn the_table_matches_the_rust_types() {
        struct Check(Kind);
        impl KindVisitor for Check {
            type Output = ();
            fn visit<T: KindType>(self) {
                let kind = self.0;
                assert_eq!(T::KIND, kind);
                assert_eq!(T::kind(&()), kind.as_str(), "{kind}");
                assert_eq!(T::group(&()), kind.group(), "{kind}");
                assert_eq!(T::version(&()), kind.version(), "{kind}");
                assert_eq!(T::api_version(&()), kind.api_version(), "{kind}");
                assert_eq!(T::plural(&()), kind.plural(), "{kind}");
            }
        }
        for kind in Kind::ALL {
            kind.visit(Check(kind));
            assert_eq!(Kind::ALL[kind as usize], kind);
            assert!(kind.info().versions.contains(&kind.version()), "{kind}");
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_type_strings() {
        for kind in Kind::ALL {
            assert_eq!(
                Kind::from_type(kind.api_version(), kind.as_str()),
                Some(kind)
            );
            assert_eq!(kind.to_string(), kind.as_str());
            for version in kind.info().versions {
                let api_version = if kind.group().is_empty() {
                    (*version).to_owned()
                } else {
                    format!("{}/{version}", kind.group())
                };
                assert_eq!(Kind::from_type(&api_version, kind.as_str()), Some(kind));
            }
        }
    }

    /// Every store operation covers every kind: an object of each kind is stored, found,
    /// counted, compared, listed, cleared and deleted.
    #[test]
    fn the_store_covers_every_kind() {
        let mut store = Store::default();
        for kind in Kind::ALL {
            let o = object(kind, "a");
            assert_eq!(o.kind(), kind);
            store.apply(o.clone());
            let found = store.get(kind, &o.key()).map(|f| f.same_allocation(&o));
            assert_eq!(found, Some(true), "{kind}");
            assert_eq!(store.len_of(kind), 1, "{kind}");
        }
        assert_eq!(store.len(), Kind::COUNT);
        let kinds: Vec<Kind> = store.objects().map(|o| o.kind()).collect();
        assert_eq!(kinds, Kind::ALL);

        // The change check sees a change to any one kind.
        for kind in Kind::ALL {
            let mut changed = store.clone();
            assert!(changed.same_objects(&store));
            let mut o = object(kind, "a");
            o.with_meta(|m| m.labels = Some([("x".to_owned(), "y".to_owned())].into()));
            changed.apply(o);
            assert!(!changed.same_objects(&store), "{kind}");
            assert!(!store.same_objects(&changed), "{kind}");
            let mut added = store.clone();
            added.apply(object(kind, "b"));
            assert!(!added.same_objects(&store), "{kind}");
        }

        for kind in Kind::ALL {
            let mut cleared = store.clone();
            cleared.rejected.insert(
                (kind, ObjectKey::new("ns", "a")),
                Rejection {
                    location: Location::default(),
                    message: String::new(),
                },
            );
            cleared.clear_kind(kind);
            assert_eq!(cleared.len_of(kind), 0, "{kind}");
            assert_eq!(cleared.len(), Kind::COUNT - 1, "{kind}");
            assert!(cleared.rejected.is_empty());
        }

        for kind in Kind::ALL {
            let key = object(kind, "a").key();
            assert!(store.delete(kind, &key), "{kind}");
            assert!(!store.delete(kind, &key), "{kind}");
        }
        assert!(store.is_empty());
    }

    #[test]
    fn every_kind_converts_from_json() {
        for kind in Kind::ALL {
            let o = object(kind, "a");
            let value = o.to_value().ok();
            let back = value.and_then(|v| Object::from_value(kind, v).ok());
            assert_eq!(
                back.map(|b| (b.kind(), b.key())),
                Some((kind, o.key())),
                "{kind}"
            );
        }
    }
}
