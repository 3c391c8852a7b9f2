//! The Gateway API Inference Extension's InferencePool (`inference.networking.k8s.io/v1`,
//! CRD vendored in charts/weir/files/crds/inference-extension-v1.6.0): a pool of model
//! server Pods (selected by labels, on `targetPorts`) and the endpoint picker (EPP) that
//! chooses one of them per request. Only the fields Weir reads are typed; `status` is
//! kept as JSON (`parents` entries, shared with other controllers like routes' parents).

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group of the Inference Extension.
pub const INFERENCE_GROUP: &str = "inference.networking.k8s.io";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "inference.networking.k8s.io",
    version = "v1",
    kind = "InferencePool",
    plural = "inferencepools",
    namespaced,
    status = "InferencePoolStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// The model server Pods: those whose labels include all of `matchLabels`.
    #[serde(default)]
    pub selector: PoolSelector,
    /// The ports of each selected Pod the pool serves on (one endpoint per Pod and port).
    #[serde(default)]
    pub target_ports: Vec<PortNumber>,
    /// `http` (HTTP/1.1, the default) or `kubernetes.io/h2c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_picker_ref: Option<EndpointPickerRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PortNumber {
    pub number: i32,
}

/// The endpoint picker: a Service (the only kind Weir supports) and its port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
    /// `FailOpen` or `FailClose` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<String>,
}

/// `status.parents`: one entry per Gateway (and controller), kept as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct InferencePoolStatus {
    #[serde(default)]
    pub parents: Vec<Value>,
}
