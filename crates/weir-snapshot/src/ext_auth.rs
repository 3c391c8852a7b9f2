//! External authorization: a request is checked by an auth service before it goes further
//! (Gateway API's HTTPRoute `ExternalAuth` filter, GEP-1494; SecurityPolicy `extAuth`, Envoy
//! Gateway's field names). Both compile to one [`ExtAuth`] on the route action; the proxy's
//! `ext_auth` module runs it in phase 3.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::backend::BackendTarget;

/// Envoy Gateway's default for `extAuth.timeout` (and ours for the filter, which has none).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One compiled external authorization.
#[derive(Debug)]
pub struct ExtAuth {
    /// Identifies this configuration across snapshots (a hash of the settings and the auth
    /// service's upstream): keys runtime state such as the gRPC channel.
    pub id: u64,
    /// The auth service. `Invalid` (an unresolved backendRef): requests fail closed with
    /// 500 rather than skipping the check.
    pub service: BackendTarget,
    pub protocol: ExtAuthProtocol,
    /// Client request headers sent to the auth service: `None` is the protocol's default
    /// (HTTP: none beyond the always-sent ones; gRPC: all), `Some` only these (HTTP: on top
    /// of Host, Method, Path, Content-Length and Authorization). Names are lowercase.
    pub allowed_headers: Option<Arc<[HeaderName]>>,
    /// Send up to this many bytes of the client's body (`forwardBody.maxSize`,
    /// `bodyToExtAuth.maxRequestBytes`); 0 sends none. A longer body is refused with 413.
    pub body_max: u32,
    /// How long the check may take (connect included).
    pub timeout: Duration,
    /// On an auth service failure (unreachable, timeout, malformed answer): let the request
    /// through (`true`) or refuse it with 403 (`false`, Envoy's `status_on_error`).
    pub fail_open: bool,
}

/// How to talk to the auth service.
#[derive(Debug)]
pub enum ExtAuthProtocol {
    /// Plain HTTP: the client request's method and `path_prefix` + path, the allowed
    /// headers, no body unless forwarded. A 2xx lets the request through; anything else is
    /// the client's answer.
    Http {
        /// Prepended to the client's path (`http.path`); empty: none.
        path_prefix: Arc<str>,
        /// The auth answer's headers copied onto the upstream request: `None` copies every
        /// header but Host/`:authority` and framing/hop-by-hop ones (GEP-1494's empty list);
        /// `Some` only these (Envoy Gateway's `headersToBackend`).
        response_headers: Option<Arc<[HeaderName]>>,
    },
    /// Envoy's `envoy.service.auth.v3.Authorization/Check` over HTTP/2.
    Grpc,
}

impl ExtAuth {
    /// A stable identity from the parts that make up the configuration.
    pub fn compute_id(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match &self.service {
            BackendTarget::Upstream(u) => {
                u.id.hash(&mut h);
                if let Some(crate::backend::BackendTls::Verify(t)) = &u.tls {
                    t.id.hash(&mut h);
                }
            }
            BackendTarget::Invalid(why) => why.hash(&mut h),
        }
        match &self.protocol {
            ExtAuthProtocol::Http {
                path_prefix,
                response_headers,
            } => {
                0u8.hash(&mut h);
                path_prefix.hash(&mut h);
                response_headers.hash(&mut h);
            }
            ExtAuthProtocol::Grpc => 1u8.hash(&mut h),
        }
        self.allowed_headers.hash(&mut h);
        self.body_max.hash(&mut h);
        self.timeout.hash(&mut h);
        self.fail_open.hash(&mut h);
        h.finish()
    }

    /// Whether the protocol is gRPC.
    pub fn is_grpc(&self) -> bool {
        matches!(self.protocol, ExtAuthProtocol::Grpc)
    }
}
