//! ExtensionPolicy `extProc` (Envoy Gateway's EnvoyExtensionPolicy field names): external
//! processors, Envoy ext_proc gRPC services, that see a route's request and response headers
//! (and the request body, buffered) and may change them or answer the request themselves.
//! The proxy's `ext_proc` module runs them (request side in phase 3, response side after
//! the upstream answered) on the endpoint picker's ext_proc client.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::BackendTarget;

/// Envoy Gateway's default `messageTimeout`.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_millis(200);

/// The processors of the ExtensionPolicy in effect on a route, in order.
#[derive(Debug)]
pub struct ExtProc {
    /// `namespace/name` of the policy (logs, errors).
    pub name: Arc<str>,
    /// Set when the policy could not be applied (an unsupported field, an invalid value): its
    /// targets answer 500 rather than skip processing they were configured with.
    pub deny: Option<Arc<str>>,
    pub processors: Vec<ExtProcessor>,
}

/// One `extProc` entry.
#[derive(Debug)]
pub struct ExtProcessor {
    /// The processor's Service (gRPC over h2c); `Invalid` when it does not resolve: every
    /// request is a processor failure (`fail_open` decides).
    pub service: BackendTarget,
    /// `processingMode.request`: `None` sends nothing of the request.
    pub request: Option<BodyMode>,
    /// `processingMode.response`: whether the response headers are sent.
    pub response: bool,
    /// `messageTimeout`: each answer waits at most this.
    pub timeout: Duration,
    /// `failOpen`: on a failure go on without the processor instead of answering 500.
    pub fail_open: bool,
    /// The most bytes of request body buffered for `Buffered` (413 above).
    pub body_max: u64,
}

/// How much of a body goes to the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Headers only.
    None,
    /// The body read whole, in one message after the headers; the processor may replace it.
    Buffered,
}

impl ExtProc {
    /// Whether any processor sees the response.
    pub fn has_response(&self) -> bool {
        self.processors.iter().any(|p| p.response)
    }
}
