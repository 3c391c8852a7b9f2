//! An InferencePool behind an upstream (Gateway API Inference Extension): the upstream's
//! endpoints are the pool's (ready Pods × `targetPorts`), and each request first asks the
//! pool's endpoint picker (EPP, an Envoy ext_proc gRPC service) which of them serves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The pool-specific part of an [`crate::Upstream`] that a backendRef to an InferencePool
/// resolved to.
#[derive(Debug)]
pub struct InferencePool {
    /// The pool's namespace and name (status, logs).
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub picker: PickerState,
}

/// The pool's endpoint picker as translation found it.
#[derive(Debug)]
pub enum PickerState {
    /// No `endpointPickerRef`: requests are balanced over the pool's endpoints like a
    /// Service's (round robin), without a picker.
    None,
    /// The picker Service and port resolved.
    Ready(Picker),
    /// The picker reference did not resolve (missing Service or port, unsupported kind):
    /// requests to the pool get 500. The string says why.
    Unresolved(Arc<str>),
}

/// Where the endpoint picker runs and what to do when it cannot answer.
#[derive(Debug)]
pub struct Picker {
    /// `namespace/service:port`, for logs and metrics.
    pub service: Arc<str>,
    /// The picker Service's ready endpoints (the proxy keeps one gRPC channel per address).
    pub endpoints: Arc<[SocketAddr]>,
    /// `failureMode: FailOpen`: when the picker cannot be reached or fails, the request goes
    /// to a pool endpoint of Weir's choosing; otherwise (FailClose, the default) it gets 503.
    pub fail_open: bool,
    /// How long each picker message may take (the headers response, the response-headers
    /// response).
    pub timeout: Duration,
    /// The most request body bytes sent to the picker (the model name is in the body);
    /// a longer body gets 413.
    pub max_body: usize,
}

/// Default per-message picker timeout.
pub const PICKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default request body limit for picker requests (the reference picker's is 10 MiB).
pub const PICKER_MAX_BODY: usize = 10 * 1024 * 1024;

impl InferencePool {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
