//! UDPRoute as Weir reads it: `gateway.networking.k8s.io/v1`.
//!
//! Gateway API v1.6 made UDPRoute standard, as it did TCPRoute ([`crate::tcproute`]): its
//! CRD serves and stores `v1` (the experimental channel also serves `v1alpha2`, same schema,
//! no conversion). The `gateway-api` crate generates UDPRoute only from the experimental
//! `v1alpha2` schema; this root type carries the same spec and status types under `v1`.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

pub use gateway_api::experimental::udproutes::{
    UdpRouteParentRefs, UdpRouteRules, UdpRouteRulesBackendRefs, UdpRouteStatus,
    UdpRouteStatusParents, UdpRouteStatusParentsParentRef, UdpRouteUseDefaultGateways,
};

/// The spec of a UDPRoute: the fields of the upstream type, which `v1` and `v1alpha2`
/// share.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "UDPRoute",
    root = "UdpRoute",
    plural = "udproutes",
    namespaced,
    status = "UdpRouteStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
pub struct UdpRouteSpec {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "parentRefs"
    )]
    pub parent_refs: Option<Vec<UdpRouteParentRefs>>,
    pub rules: Vec<UdpRouteRules>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "useDefaultGateways"
    )]
    pub use_default_gateways: Option<UdpRouteUseDefaultGateways>,
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
                "kind": "UDPRoute",
                "metadata": {"name": "r", "namespace": "ns"},
                "spec": {
                    "parentRefs": [{"name": "gw", "sectionName": "udp", "port": 5300}],
                    "rules": [{"backendRefs": [{"name": "dns", "port": 53, "weight": 7}]}]
                }
            })
        };
        let v1: UdpRoute = serde_json::from_value(manifest("v1")).unwrap();
        let alpha: UdpRoute = serde_json::from_value(manifest("v1alpha2")).unwrap();
        assert_eq!(v1, alpha);
        let parent = &v1.spec.parent_refs.as_deref().unwrap()[0];
        assert_eq!(parent.section_name.as_deref(), Some("udp"));
        assert_eq!(parent.port, Some(5300));
        let backend = &v1.spec.rules[0].backend_refs[0];
        assert_eq!((backend.name.as_str(), backend.weight), ("dns", Some(7)));
        let written = serde_json::to_value(&v1).unwrap();
        assert_eq!(written["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(written["kind"], "UDPRoute");
        assert_eq!(
            UdpRoute::url_path(&(), Some("ns")),
            "/apis/gateway.networking.k8s.io/v1/namespaces/ns/udproutes"
        );
    }
}
