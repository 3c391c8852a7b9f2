//! Everything the translator can find wrong with a configuration. Each error knows the Gateway
//! API condition reason it is reported with, and its message says what to fix.

/// A problem found while translating one object. Reported in that object's status (never
/// returned to the caller: translation always produces a snapshot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    // ---- listeners ----
    #[error("protocol {0:?} is not supported (supported: HTTP, HTTPS, TLS)")]
    UnsupportedProtocol(String),
    #[error("port {0} is outside 1-65535")]
    InvalidPort(i32),
    #[error("tls.mode {0} is not supported on an HTTPS listener; use Terminate")]
    UnsupportedTlsMode(String),
    #[error("route kind {group}/{kind} is not supported on this listener (supported: gateway.networking.k8s.io/{supported})")]
    InvalidRouteKind {
        group: String,
        kind: String,
        supported: &'static str,
    },
    #[error("HTTPS listener has no tls.certificateRefs")]
    NoCertificateRefs,
    #[error("certificateRef {group}/{kind} {name} is not a core Secret")]
    CertificateRefKind {
        group: String,
        kind: String,
        name: String,
    },
    #[error("Secret {0} does not exist")]
    CertificateNotFound(String),
    #[error("Secret {0} is in another namespace and no ReferenceGrant there allows this Gateway to use it")]
    CertificateNotPermitted(String),
    #[error("Secret {secret} does not hold a usable certificate: {detail}")]
    CertificateInvalid { secret: String, detail: String },
    #[error("caCertificateRef {group}/{kind} {name} is not a core ConfigMap")]
    CaCertificateRefKind {
        group: String,
        kind: String,
        name: String,
    },
    #[error("CA ConfigMap {0} does not exist")]
    CaCertificateNotFound(String),
    #[error("CA ConfigMap {0} is in another namespace and no ReferenceGrant there allows this Gateway to use it")]
    CaCertificateNotPermitted(String),
    #[error("CA ConfigMap {config_map} does not hold a usable CA certificate: {detail}")]
    CaCertificateInvalid { config_map: String, detail: String },
    #[error("no caCertificateRef of this port's frontend validation is usable, so client certificates cannot be validated; fix the references (see ResolvedRefs)")]
    NoValidCaCertificate,
    #[error("port {port} is already used with protocol {protocol} by listener {owner}")]
    PortInUse {
        port: u16,
        protocol: String,
        owner: String,
    },
    #[error("address type {0:?} is not supported (supported: IPAddress; file mode binds sockets, so a name has nothing to map to)")]
    UnsupportedAddress(String),
    #[error("address {0} is not an address of this host; use one Weir can bind, or leave the value empty to use the --bind address")]
    AddressNotUsable(String),
    #[error("address {0:?} is not an IP address; IPAddress values look like 10.0.0.1 or fd00::1")]
    InvalidIpAddress(String),
    #[error("every address of the pool {0} (--gateway-address-pool) is taken by another Gateway; use a larger pool")]
    PoolExhausted(String),

    // ---- routes ----
    #[error("backendRef {group}/{kind} {name} is not a core Service")]
    BackendKind {
        group: String,
        kind: String,
        name: String,
    },
    #[error("Service {service} is in another namespace and no ReferenceGrant there allows this {route_kind} to use it")]
    BackendNotPermitted {
        service: String,
        route_kind: &'static str,
    },
    #[error("Service {0} does not exist")]
    BackendNotFound(String),
    #[error("InferencePool {0} does not exist")]
    InferencePoolNotFound(String),
    #[error("InferencePool {pool} is in another namespace and no ReferenceGrant there allows this {route_kind} to use it")]
    InferencePoolNotPermitted {
        pool: String,
        route_kind: &'static str,
    },
    #[error("the endpoint picker of InferencePool {pool} does not resolve: {detail}")]
    InferencePickerNotFound { pool: String, detail: String },
    #[error("backendRef to Service {0} needs a port")]
    BackendPortMissing(String),
    #[error("Service {service} has no port {port}")]
    BackendPortNotFound { service: String, port: i32 },
    #[error("invalid match in rule {rule}: {detail}")]
    InvalidMatch { rule: usize, detail: String },
    #[error("invalid filter in rule {rule}: {detail}")]
    InvalidFilter { rule: usize, detail: String },
    #[error(
        "filter {filter} in rule {rule} is not supported yet; requests matching the rule get 500"
    )]
    UnsupportedFilter { rule: usize, filter: String },
    #[error("invalid timeout in rule {rule}: {detail}")]
    InvalidTimeout { rule: usize, detail: String },
    #[error("invalid retry in rule {rule}: {detail}")]
    InvalidRetry { rule: usize, detail: String },
    #[error("invalid sessionPersistence in rule {rule}: {detail}")]
    InvalidSessionPersistence { rule: usize, detail: String },
    #[error("spec.{field} {value} is not supported yet, so the route is not served (remove the field, or set it to None)")]
    UnsupportedRouteField { field: &'static str, value: String },

    // ---- backend TLS ----
    #[error("caCertificateRef {group}/{kind} {name} is not a core ConfigMap")]
    PolicyCaCertificateRefKind {
        group: String,
        kind: String,
        name: String,
    },
    #[error("caCertificateRef ConfigMap {config_map} is not usable: {detail}")]
    CaCertificateRefInvalid { config_map: String, detail: String },
    #[error("clientCertificateRef {group}/{kind} {name} is not a core Secret")]
    ClientCertificateRefKind {
        group: String,
        kind: String,
        name: String,
    },
    #[error("clientCertificateRef Secret {0} is in another namespace and no ReferenceGrant there allows this Gateway to use it")]
    ClientCertificateNotPermitted(String),
    #[error("clientCertificateRef Secret {secret} is not usable: {detail}")]
    ClientCertificateInvalid { secret: String, detail: String },

    // ---- Kubernetes mode, one Service per Gateway (see `services`) ----
    #[error("{0}")]
    InvalidParameters(String),
    #[error("address type {0:?} is not supported (supported: IPAddress, asked of the Gateway's Service as its loadBalancerIP)")]
    UnsupportedServiceAddress(String),
    #[error("{0}")]
    ServicePending(String),
    #[error("{0}")]
    AddressNotAssigned(String),
    #[error("requested address {address} is not among the addresses of Service {service}; check that its load balancer can assign it")]
    AddressNotInService { address: String, service: String },
}

impl TranslateError {
    /// Address problems under which a Gateway's listeners are still bound (Services mode:
    /// its Service routes to the pod ports whatever address the load balancer gives it).
    pub fn still_serves(&self) -> bool {
        matches!(
            self,
            TranslateError::AddressNotAssigned(_) | TranslateError::AddressNotInService { .. }
        )
    }

    /// The condition reason this error is reported with.
    pub fn reason(&self) -> &'static str {
        use TranslateError as E;
        match self {
            E::UnsupportedProtocol(_) => "UnsupportedProtocol",
            E::InvalidPort(_) | E::PortInUse { .. } => "PortUnavailable",
            E::UnsupportedTlsMode(_) => "UnsupportedValue",
            E::InvalidRouteKind { .. } => "InvalidRouteKinds",
            E::NoCertificateRefs
            | E::CertificateRefKind { .. }
            | E::CertificateNotFound(_)
            | E::CertificateInvalid { .. } => "InvalidCertificateRef",
            E::CertificateNotPermitted(_)
            | E::BackendNotPermitted { .. }
            | E::InferencePoolNotPermitted { .. }
            | E::CaCertificateNotPermitted(_)
            | E::ClientCertificateNotPermitted(_) => "RefNotPermitted",
            E::CaCertificateRefKind { .. } => "InvalidCACertificateKind",
            E::CaCertificateNotFound(_) | E::CaCertificateInvalid { .. } => {
                "InvalidCACertificateRef"
            }
            E::NoValidCaCertificate => "NoValidCACertificate",
            E::PolicyCaCertificateRefKind { .. } => "InvalidKind",
            E::CaCertificateRefInvalid { .. } => "InvalidCACertificateRef",
            E::ClientCertificateRefKind { .. } | E::ClientCertificateInvalid { .. } => {
                "InvalidClientCertificateRef"
            }
            E::UnsupportedAddress(_) | E::UnsupportedServiceAddress(_) => "UnsupportedAddress",
            E::InvalidParameters(_) => "InvalidParameters",
            E::ServicePending(_) => "Pending",
            E::AddressNotAssigned(_) => "AddressNotAssigned",
            E::AddressNotInService { .. } => "AddressNotUsable",
            E::AddressNotUsable(_) | E::InvalidIpAddress(_) => "AddressNotUsable",
            E::PoolExhausted(_) => "AddressNotAssigned",
            E::BackendKind { .. } => "InvalidKind",
            E::BackendNotFound(_)
            | E::BackendPortMissing(_)
            | E::BackendPortNotFound { .. }
            | E::InferencePoolNotFound(_)
            | E::InferencePickerNotFound { .. } => "BackendNotFound",
            E::InvalidMatch { .. }
            | E::InvalidFilter { .. }
            | E::UnsupportedFilter { .. }
            | E::InvalidTimeout { .. }
            | E::InvalidRetry { .. }
            | E::InvalidSessionPersistence { .. }
            | E::UnsupportedRouteField { .. } => "UnsupportedValue",
        }
    }
}
