//! Errors. A request error says whose fault it was and [`ProxyError::classify`] picks its
//! status code, metric label and response body in one place.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// Why a request could not be served (or, for [`ProxyError::Metrics`], why the proxy could
/// not be built).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // ---- downstream: the client's request is at fault (4xx) ----
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    /// A Host header (or request authority) that is not `host[:port]` (RFC 3986 §3.2), e.g.
    /// with userinfo, a path or spaces.
    #[error("the Host header or the request authority is not a valid host[:port]")]
    InvalidHost,
    /// More than one Host header (RFC 9112 §3.2).
    #[error("more than one Host header")]
    DuplicateHost,
    /// An HTTP/2 Host header naming another host than `:authority` (RFC 9113 §8.3.1).
    /// (One string, `host` vs `authority`: two would make every `ProxyError` larger.)
    #[error("the Host header disagrees with :authority: {0}")]
    HostMismatch(String),
    /// `*` as the target of another method than OPTIONS (RFC 9112 §3.2.4).
    #[error("the asterisk-form target is only for OPTIONS")]
    AsteriskTarget,
    /// The client's request body failed while it was streamed upstream (a malformed chunk).
    #[error("{0}")]
    ClientBody(String),
    /// The client sent nothing of its request body for this long (`--idle-timeout`).
    #[error("the client sent nothing of its request body for {0:?}")]
    ClientBodyTimeout(std::time::Duration),
    /// The request body is larger than the route's BackendTrafficPolicy allows
    /// (`requestBuffer.limit`).
    #[error("the request body is larger than the limit of {0} bytes")]
    BodyTooLarge(u64),
    /// A path normalisation refuses (see `weir-snapshot/src/path.rs`).
    #[error("bad request path: {0}")]
    BadPath(weir_snapshot::path::PathError),
    #[error(
        "request header section is {size} bytes, over the {limit}-byte limit (max_header_bytes)"
    )]
    HeadersTooLarge { size: usize, limit: usize },
    /// A SecurityPolicy's authentication refused the request (401). `why` is a fixed text,
    /// never a credential.
    #[error("authentication failed ({scheme:?}): {why}")]
    Unauthenticated {
        scheme: AuthScheme,
        why: &'static str,
    },
    /// A SecurityPolicy's authorization denied the request (403): the deciding rule's name.
    #[error("authorization denied the request (rule {0})")]
    Forbidden(Arc<str>),
    /// Over a BackendTrafficPolicy `rateLimit` (local or global).
    #[error("over the route's rate limit")]
    RateLimited,

    // ---- not routed (404) ----
    #[error("this socket is not in the current snapshot any more")]
    SocketGone,
    #[error("no listener on this socket accepts host {0:?}")]
    NoListener(String),
    #[error("no route matches the request")]
    NoRoute,
    #[error("host {host:?} belongs to another listener than the TLS server name {sni:?} chose")]
    Misdirected { host: String, sni: Arc<str> },

    // ---- internal: the configuration cannot serve the request (500) ----
    #[error("the matched rule has no backend with a non-zero weight")]
    NoBackend,
    #[error("the picked backend is invalid: {0}")]
    InvalidBackend(Arc<str>),
    #[error("a filter produced an invalid {what}: {value:?}")]
    InvalidFilterResult { what: &'static str, value: String },
    /// The route's ext auth service is not usable (an unresolved backendRef): the request
    /// fails closed.
    #[error("the external authorization service is invalid: {0}")]
    ExtAuthInvalid(Arc<str>),

    // ---- ext auth: the auth service failed (unreachable, timeout, malformed answer) ----
    /// With `failOpen: false` the request is refused with 403, as Envoy's ext_authz does
    /// (`status_on_error`).
    #[error("the external authorization service failed: {0}")]
    ExtAuthFailed(Arc<str>),
    /// An ExtensionPolicy's external processor failed (unreachable, unresolved, timed out,
    /// malformed answer) with `failOpen: false`, or the policy could not be applied: 500,
    /// as Envoy's ext_proc filter answers.
    #[error("external processor: {0}")]
    ExtProcFailed(Arc<str>),
    /// The route's SecurityPolicy could not be applied: it fails closed (500).
    #[error("{0}: refusing the request (fail closed)")]
    SecurityPolicyInvalid(Arc<str>),
    /// A global rate limit got no answer from Redis and fails closed
    /// (`--rate-limit-fail-closed`; Envoy Gateway's `failClosed` answers 500 too).
    #[error("the global rate limit's Redis did not answer (failing closed)")]
    RateLimitUnavailable,

    // ---- upstream: the backend is at fault (502/503/504) ----
    /// An InferencePool's endpoint picker could not be reached, failed or timed out, and
    /// the pool fails closed.
    #[error("endpoint picker of {pool}: {detail}")]
    PickerUnavailable { pool: Arc<str>, detail: String },
    /// The endpoint picker named an address that is malformed or not an endpoint of its
    /// pool (never connected to).
    #[error("endpoint picker of {pool} chose an endpoint outside the pool: {detail}")]
    PickerEndpoint { pool: Arc<str>, detail: String },
    #[error("upstream {0} has no ready endpoints")]
    NoHealthyUpstream(Arc<str>),
    /// The picked endpoint has its `--upstream-max-connections` open and its queue
    /// (`--upstream-max-pending`) full.
    #[error("upstream {0}: the endpoint's connection limit is reached and its queue is full")]
    UpstreamOverflow(Arc<str>),
    #[error("could not connect to any endpoint of upstream {upstream}: {source}")]
    UpstreamConnect {
        upstream: Arc<str>,
        source: ConnectError,
    },
    #[error("request to upstream {upstream} failed: {source}")]
    UpstreamRequest {
        upstream: Arc<str>,
        source: hyper::Error,
    },
    /// The backend broke the protocol (an unsolicited 101, a 101 to another protocol).
    #[error("upstream {upstream} sent {what}")]
    UpstreamProtocol {
        upstream: Arc<str>,
        what: &'static str,
    },
    #[error("upstream {upstream} did not answer within the backend request timeout ({limit:?})")]
    BackendTimeout { upstream: Arc<str>, limit: Duration },
    #[error("the request did not complete within the route's request timeout ({0:?})")]
    RequestTimeout(Duration),

    // ---- setup ----
    #[error("could not register proxy metrics (is a second Proxy using the same registry?): {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("could not start the access log writer: {0}")]
    AccessLog(std::io::Error),
    #[error("could not start tracing: {0}")]
    Tracing(String),
    #[error("could not make a session key: {0}")]
    SessionKey(String),
    #[error("could not set up global rate limits: {0}")]
    RateLimitConfig(String),
    #[error("could not set up the remote JWKS trust store (--jwks-ca): {0}")]
    JwksCa(String),
}

/// Why a connection to one upstream endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connect failed: {0}")]
    Tcp(#[source] std::io::Error),
    #[error("TCP connect did not complete within {0:?}")]
    Timeout(Duration),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("TLS handshake with the backend failed: {0}")]
    Tls(#[source] std::io::Error),
}

impl From<crate::outbound::TcpConnectError> for ConnectError {
    fn from(err: crate::outbound::TcpConnectError) -> Self {
        match err {
            crate::outbound::TcpConnectError::Timeout(limit) => ConnectError::Timeout(limit),
            crate::outbound::TcpConnectError::Io(e) => ConnectError::Tcp(e),
        }
    }
}

/// Which authentication refused a request: the challenge its 401 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `WWW-Authenticate: Basic realm="<host>"`.
    Basic,
    /// `WWW-Authenticate: Bearer realm="<host>", error="invalid_token"` (RFC 6750).
    Bearer,
    /// No challenge (Envoy's API key filter sends none).
    ApiKey,
}

impl ProxyError {
    /// The `WWW-Authenticate` value of a 401, for the request's `host`.
    pub(crate) fn challenge(&self, host: &str) -> Option<http::HeaderValue> {
        let ProxyError::Unauthenticated { scheme, .. } = self else {
            return None;
        };
        let realm = host.replace(['"', '\\'], "");
        let value = match scheme {
            AuthScheme::Basic => format!("Basic realm=\"{realm}\""),
            AuthScheme::Bearer => {
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
            }
            AuthScheme::ApiKey => return None,
        };
        http::HeaderValue::from_str(&value).ok()
    }
}

/// Whose fault an error is, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Downstream,
    NotRouted,
    Internal,
    Upstream,
}

/// Everything the response and the metrics need to know about an error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Classified {
    pub(crate) status: StatusCode,
    /// `reason` label of `weir_request_errors_total`.
    pub(crate) label: &'static str,
    /// Short response body.
    pub(crate) body: &'static str,
    pub(crate) fault: Fault,
}

impl ProxyError {
    /// Status code, metric label, response body and fault of this error: the one place that
    /// decides them.
    pub(crate) fn classify(&self) -> Classified {
        use Fault::*;
        let (status, label, body, fault) = match self {
            ProxyError::MissingHost => (
                StatusCode::BAD_REQUEST,
                "missing_host",
                "missing Host header\n",
                Downstream,
            ),
            ProxyError::InvalidHost => (
                StatusCode::BAD_REQUEST,
                "invalid_host",
                "invalid Host header\n",
                Downstream,
            ),
            ProxyError::DuplicateHost => (
                StatusCode::BAD_REQUEST,
                "duplicate_host",
                "more than one Host header\n",
                Downstream,
            ),
            ProxyError::HostMismatch(_) => (
                StatusCode::BAD_REQUEST,
                "host_mismatch",
                "Host header disagrees with :authority\n",
                Downstream,
            ),
            ProxyError::AsteriskTarget => (
                StatusCode::BAD_REQUEST,
                "bad_target",
                "the * target is only for OPTIONS\n",
                Downstream,
            ),
            ProxyError::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "client_body",
                "invalid request body\n",
                Downstream,
            ),
            ProxyError::ClientBodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "client_body_timeout",
                "request body timeout\n",
                Downstream,
            ),
            ProxyError::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body too large\n",
                Downstream,
            ),
            ProxyError::BadPath(_) => (
                StatusCode::BAD_REQUEST,
                "bad_path",
                "invalid request path\n",
                Downstream,
            ),
            ProxyError::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "request header fields too large\n",
                Downstream,
            ),
            ProxyError::Unauthenticated { .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unauthorized\n",
                Downstream,
            ),
            ProxyError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "forbidden\n",
                Downstream,
            ),
            ProxyError::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests\n",
                Downstream,
            ),
            ProxyError::SocketGone => (
                StatusCode::NOT_FOUND,
                "no_socket",
                "no listener\n",
                NotRouted,
            ),
            ProxyError::NoListener(_) => (
                StatusCode::NOT_FOUND,
                "no_listener",
                "no listener for host\n",
                NotRouted,
            ),
            ProxyError::NoRoute => (
                StatusCode::NOT_FOUND,
                "no_route",
                "route not found\n",
                NotRouted,
            ),
            ProxyError::Misdirected { .. } => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                "misdirected request\n",
                Downstream,
            ),
            ProxyError::NoBackend => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_backend",
                "no backend\n",
                Internal,
            ),
            ProxyError::InvalidBackend(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid_backend",
                "invalid backend\n",
                Internal,
            ),
            ProxyError::ExtAuthInvalid(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ext_auth_invalid",
                "invalid external authorization\n",
                Internal,
            ),
            ProxyError::ExtProcFailed(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ext_proc_error",
                "external processing failed\n",
                Upstream,
            ),
            ProxyError::ExtAuthFailed(_) => (
                StatusCode::FORBIDDEN,
                "ext_auth_error",
                "external authorization failed\n",
                Upstream,
            ),
            ProxyError::InvalidFilterResult { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid_filter_result",
                "internal error\n",
                Internal,
            ),
            ProxyError::SecurityPolicyInvalid(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "security_policy_invalid",
                "internal error\n",
                Internal,
            ),
            ProxyError::RateLimitUnavailable => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rate_limit_unavailable",
                "rate limit service unavailable\n",
                Internal,
            ),
            ProxyError::Metrics(_)
            | ProxyError::AccessLog(_)
            | ProxyError::Tracing(_)
            | ProxyError::SessionKey(_)
            | ProxyError::RateLimitConfig(_)
            | ProxyError::JwksCa(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error\n",
                Internal,
            ),
            ProxyError::NoHealthyUpstream(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_healthy_upstream",
                "no healthy upstream\n",
                Upstream,
            ),
            ProxyError::PickerUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "endpoint_picker_unavailable",
                "endpoint picker unavailable\n",
                Upstream,
            ),
            ProxyError::PickerEndpoint { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "endpoint_picker_bad_endpoint",
                "endpoint picker chose no endpoint of the pool\n",
                Upstream,
            ),
            ProxyError::UpstreamOverflow(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_overflow",
                "upstream overloaded\n",
                Upstream,
            ),
            ProxyError::UpstreamConnect { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_connect",
                "upstream connect error\n",
                Upstream,
            ),
            ProxyError::UpstreamRequest { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_request",
                "upstream request error\n",
                Upstream,
            ),
            ProxyError::UpstreamProtocol { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_protocol",
                "upstream protocol error\n",
                Upstream,
            ),
            ProxyError::BackendTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "backend_timeout",
                "upstream request timeout\n",
                Upstream,
            ),
            ProxyError::RequestTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                "request timeout\n",
                Upstream,
            ),
        };
        Classified {
            status,
            label,
            body,
            fault,
        }
    }
}

/// A socket the snapshot asks for that could not be opened. The other sockets keep working.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "configured port {port} plus port offset {offset} is above 65535; lower the port offset"
    )]
    PortOverflow {
        address: Option<IpAddr>,
        port: u16,
        offset: u16,
    },
    #[error(
        "cannot listen on {addr} (configured port {port}): {source}; is another process using \
         the port, or does a port below 1024 need privileges (see the port offset)?"
    )]
    Io {
        address: Option<IpAddr>,
        port: u16,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the TLS configuration for configured port {port}: {source}")]
    Tls {
        address: Option<IpAddr>,
        port: u16,
        source: rustls::Error,
    },
}

impl BindError {
    /// The socket as configured: (address, port).
    pub fn socket(&self) -> (Option<IpAddr>, u16) {
        match self {
            BindError::PortOverflow { address, port, .. }
            | BindError::Io { address, port, .. }
            | BindError::Tls { address, port, .. } => (*address, *port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_fault() {
        let cases = [
            (ProxyError::MissingHost, 400),
            (ProxyError::HeadersTooLarge { size: 10, limit: 5 }, 431),
            (ProxyError::NoRoute, 404),
            (ProxyError::RateLimited, 429),
            (ProxyError::RateLimitUnavailable, 500),
            (ProxyError::NoBackend, 500),
            (ProxyError::NoHealthyUpstream("a".into()), 503),
            (
                ProxyError::BackendTimeout {
                    upstream: "a".into(),
                    limit: Duration::from_secs(1),
                },
                504,
            ),
            (ProxyError::RequestTimeout(Duration::from_secs(1)), 504),
            (
                ProxyError::Unauthenticated {
                    scheme: AuthScheme::Bearer,
                    why: "x",
                },
                401,
            ),
            (ProxyError::Forbidden("r".into()), 403),
            (ProxyError::SecurityPolicyInvalid("p".into()), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.classify().status.as_u16(), status, "{err}");
        }
    }
}
