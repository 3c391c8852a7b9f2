//! The Kubernetes API as a source, and everything Weir writes back to it.
//!
//! - [`KubeSource`]: one kube-runtime watcher per kind of the kind table
//!   ([`weir_store::Kind::ALL`], each with its field selector) feeding one cache;
//!   ConfigMaps and Secrets (of type `kubernetes.io/tls` only) are watched by metadata
//!   alone and only those our objects reference are read in full (`fetch`); after every
//!   kind's first complete list (and the first read of every referenced object) it sends a
//!   whole [`weir_store::Store`], then one per debounced batch of changes.
//! - [`StatusWriter`]: patches the status subresource of every kind whose table row says
//!   Weir writes a status ([`weir_store::Kind::status`]) when (and only when) what Weir
//!   computed differs from the cluster, keeping condition times and other controllers'
//!   route parent and policy ancestor entries.
//! - [`LeaderElection`]: a `coordination.k8s.io/v1` Lease decides which replica writes status.
//! - [`watch_service_addresses`]: Gateway addresses from a LoadBalancer Service.
//! - [`write_services`]: the leader's writes of per-Gateway Services (one Service per
//!   Gateway, planned by the translator).
//!
//! Watch errors are retried with kube-runtime's default backoff; a `410 Gone` makes the
//! watcher relist, and the relisted kind replaces its cached objects at once, so nothing is
//! lost. An object that does not deserialize is logged and skipped: its last good version
//! keeps serving and the store records a [`weir_store::Rejection`] for it.

mod address;
mod fetch;
mod lease;
mod pods;
mod services;
mod source;
mod status;

use std::path::Path;

pub use ::kube::Client;
pub use address::watch_service_addresses;
pub use k8s_openapi::api::coordination::v1::Lease;
pub use lease::LeaderElection;
pub use services::{write_services, ServiceWrites};
pub use source::KubeSource;
pub use status::{StatusUpdate, StatusWriter};

use weir_store::{Kind, ObjectKey};

/// What went wrong talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot find Kubernetes credentials: {0}; run inside a cluster (in-cluster service \
         account), set KUBECONFIG, or pass --kubeconfig"
    )]
    InferConfig(#[source] ::kube::config::InferConfigError),
    #[error("cannot read kubeconfig {path}: {source}; check the path and its contents")]
    Kubeconfig {
        path: String,
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    #[error("cannot build a Kubernetes client: {0}; check the cluster URL and certificates in the kubeconfig")]
    Client(#[source] ::kube::Error),
    #[error("every watch stream ended; this is a bug in weir, please report it")]
    WatchesEnded,
    #[error(
        "cannot {verb} {kind} {key}: {source}; check that the Gateway API CRDs are installed \
         and that weir's ClusterRole allows it"
    )]
    Api {
        verb: &'static str,
        kind: Kind,
        key: ObjectKey,
        #[source]
        source: ::kube::Error,
    },
    #[error("{kind} {key} kept changing while writing its status; it is retried with the next status update")]
    StatusConflict { kind: Kind, key: ObjectKey },
    #[error("cannot {verb} Lease {namespace}/{name}: {source}; check that weir may get, create and update leases in {namespace}")]
    Lease {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: ::kube::Error,
    },
}

/// A client for the cluster: `kubeconfig` if given, else in-cluster config, else
/// `$KUBECONFIG` / `~/.kube/config`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<::kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| KubeError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = ::kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            ::kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => ::kube::Config::infer()
            .await
            .map_err(KubeError::InferConfig)?,
    };
    ::kube::Client::try_from(config).map_err(KubeError::Client)
}

/// The API resource (group, version, kind, plural) Weir uses for a kind, from the kind table.
fn api_resource(kind: Kind) -> ::kube::api::ApiResource {
    ::kube::api::ApiResource {
        group: kind.group().to_owned(),
        version: kind.version().to_owned(),
        api_version: kind.api_version().to_owned(),
        kind: kind.as_str().to_owned(),
        plural: kind.plural().to_owned(),
    }
}

/// An untyped API for one object's kind, scoped to its namespace when it has one.
fn dynamic_api(
    client: ::kube::Client,
    kind: Kind,
    key: &ObjectKey,
) -> ::kube::Api<::kube::api::DynamicObject> {
    let resource = api_resource(kind);
    if kind.is_cluster_scoped() {
        ::kube::Api::all_with(client, &resource)
    } else {
        ::kube::Api::namespaced_with(client, &key.namespace, &resource)
    }
}
