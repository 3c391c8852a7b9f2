//! TCPRoute as Weir reads it: `gateway.networking.k8s.io/v1`.
//!
//! Gateway API v1.6 made TCPRoute standard: its CRD serves and stores `v1` in both channels
//! (the experimental channel also still serves `v1alpha2`, with the same schema and no
//! conversion webhook, so an object written as `v1alpha2` reads back unchanged as `v1`).
//! The `gateway-api` crate generates TCPRoute only from the experimental `v1alpha2`
//! schema; this root type carries the same spec and status types under `v1`, so
//! Kubernetes mode lists and watches `tcproutes.v1` and writes status there, and file mode
//! accepts manifests of either version ([`crate::Kind`]'s table).

use kube::CustomResource;
use serde::{Deserialize, Serialize};

pub use gateway_api::experimental::tcproutes::{
    TcpRouteParentRefs, TcpRouteRules, TcpRouteRulesBackendRefs, TcpRouteStatus,
    TcpRouteStatusParents, TcpRouteStatusParentsParentRef, TcpRouteUseDefaultGateways,
};

/// The spec of a TCPRoute: the fields of the upstream type, which `v1` and `v1alpha2`
/// share.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "TCPRoute",
    root = "TcpRoute",
    plural = "tcproutes",
    namespaced,
    status = "TcpRouteStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
pub struct TcpRouteSpec {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "parentRefs"
    )]
    pub parent_refs: Option<Vec<TcpRouteParentRefs>>,
    pub rules: Vec<TcpRouteRules>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "useDefaultGateways"
    )]
    pub use_default_gateways: Option<TcpRouteUseDefaultGateways>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn v1_and_v1alpha2_manifests_read_the_same() {
        let manifest = |version: &str| {
            serde_json::json!({
                "apiVersion": format!("gateway.networking.k8s.io/{version}"),
                "kind": "TCPRoute",
                "metadata": {"name": "r", "namespace": "ns"},
                "spec": {
                    "parentRefs": [{"name": "gw", "sectionName": "tcp", "port": 9000}],
                    "rules": [{"backendRefs": [{"name": "svc", "port": 3000, "weight": 7}]}]
                }
            })
        };
        let v1: TcpRoute = serde_json::from_value(manifest("v1")).unwrap();
        let alpha: TcpRoute = serde_json::from_value(manifest("v1alpha2")).unwrap();
        assert_eq!(v1, alpha);
        let parent = &v1.spec.parent_refs.as_deref().unwrap()[0];
        assert_eq!(parent.section_name.as_deref(), Some("tcp"));
        assert_eq!(parent.port, Some(9000));
        let backend = &v1.spec.rules[0].backend_refs[0];
        assert_eq!((backend.name.as_str(), backend.weight), ("svc", Some(7)));
        // Written back (status, `weir check`) as v1.
        let written = serde_json::to_value(&v1).unwrap();
        assert_eq!(written["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(written["kind"], "TCPRoute");
        assert_eq!(TcpRoute::api_version(&()), "gateway.networking.k8s.io/v1");
        assert_eq!(
            TcpRoute::url_path(&(), Some("ns")),
            "/apis/gateway.networking.k8s.io/v1/namespaces/ns/tcproutes"
        );
    }
}
