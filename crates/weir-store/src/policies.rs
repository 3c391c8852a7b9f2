//! Weir's policy kinds, group `gateway.weir.dev`, version `v1alpha1`: ClientTrafficPolicy,
//! BackendTrafficPolicy and SecurityPolicy, with Envoy Gateway's field names and meaning for
//! every field Weir implements, so a manifest moves from Envoy Gateway by changing its
//! `apiVersion` (design: docs/ARCHITECTURE.md, "Policies").
//!
//! The fields Weir implements are typed. Every level of a spec also keeps the fields it does
//! not know (`unsupported`): the CRDs preserve unknown fields instead of pruning them, so
//! translation can refuse a policy that asks for something Weir does not do yet
//! (`Accepted=False`, reason `UnsupportedValue`, naming the field) instead of ignoring it.

use std::collections::BTreeMap;

pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group of Weir's policy kinds.
pub const POLICY_GROUP: &str = "gateway.weir.dev";

/// Fields of one level of a spec that Weir does not implement, by name.
pub type Unsupported = BTreeMap<String, Value>;

/// A `targetRef` (Gateway API `LocalPolicyTargetReferenceWithSectionName`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// What every policy kind's spec starts with: its targets. Envoy Gateway's singular
/// `targetRef` (deprecated there) is read too.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetRef>,
}

impl PolicyTargets {
    /// Every target, `targetRef` first.
    pub fn all(&self) -> impl Iterator<Item = &PolicyTargetRef> {
        self.target_ref.iter().chain(&self.target_refs)
    }
}

/// `status` of every policy kind: Gateway API's `PolicyStatus` (`ancestors`, each with an
/// `ancestorRef`, `controllerName` and `conditions`), kept as JSON: Weir writes only its own
/// entries and leaves other controllers' as they are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PolicyStatus {
    #[serde(default)]
    pub ancestors: Vec<Value>,
}

// ---------------------------------------------------------------------------------------
// ClientTrafficPolicy

/// How Weir treats the client side of a Gateway's (or one listener's) connections.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.weir.dev",
    version = "v1alpha1",
    kind = "ClientTrafficPolicy",
    plural = "clienttrafficpolicies",
    namespaced,
    status = "PolicyStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ClientTrafficPolicySpec {
    #[serde(flatten)]
    pub targets: PolicyTargets,
    #[serde(
        default,
        rename = "clientIPDetection",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ip_detection: Option<ClientIpDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ClientTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ClientConnection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<Http2Settings>,
    /// Weir's own field (Envoy Gateway has none): the Inference Extension's Body-Based
    /// Routing, the `model` of a JSON request body copied into `X-Gateway-Model-Name`
    /// before routes are matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_based_routing: Option<BodyBasedRouting>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `bodyBasedRouting` of a ClientTrafficPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BodyBasedRouting {
    /// The largest body read to find the model: bytes, or a quantity (`1Mi`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<IntOrString>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_forwarded_for: Option<XForwardedFor>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct XForwardedFor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_trusted_hops: Option<i64>,
    #[serde(
        default,
        rename = "trustedCIDRs",
        skip_serializing_if = "Option::is_none"
    )]
    pub trusted_cidrs: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSettings {
    /// Largest request header section: bytes, or a quantity (`64Ki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_header_limit: Option<IntOrString>,
    /// `PreserveOrGenerate`, `Preserve`, `Generate` or `Disable`.
    #[serde(default, rename = "requestID", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Leave out the `x-ratelimit-*` headers a BackendTrafficPolicy rate limit adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_rate_limit_headers: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpClientTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpClientTimeout>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpClientTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_received_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpClientTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<ConnectionLimit>,
    /// Bytes buffered per connection: bytes, or a quantity (`32Ki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_limit: Option<IntOrString>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// `Auto`, `1.0`, `1.1`, `1.2` or `1.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn_protocols: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Http2Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i64>,
    /// Bytes, or a quantity (`64Ki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_stream_window_size: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_connection_window_size: Option<IntOrString>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

// ---------------------------------------------------------------------------------------
// BackendTrafficPolicy

/// How Weir treats the backends of a Gateway's or route's traffic. Typed: `retry` (with
/// Weir's `budget`), `timeout` (`http.requestTimeout`, `http.connectionIdleTimeout`,
/// `tcp.connectTimeout`), `circuitBreaker` (`maxConnections`, `maxPendingRequests`,
/// `maxParallelRequests`, `maxParallelRetries`, `maxRequestsPerConnection`),
/// `faultInjection`, `requestBuffer.limit`, `healthCheck`, `compression` and `loadBalancer` (`type`, `consistentHash`,
/// `slowStart`, `zoneAware.preferLocal`); everything else is kept in `unsupported` and
/// refused.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.weir.dev",
    version = "v1alpha1",
    kind = "BackendTrafficPolicy",
    plural = "backendtrafficpolicies",
    namespaced,
    status = "PolicyStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct BackendTrafficPolicySpec {
    #[serde(flatten)]
    pub targets: PolicyTargets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<BackendTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<FaultInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_buffer: Option<RequestBuffer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// `compression[]`: the response codings, in order of preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Vec<Compression>>,
    /// Weir's addition: `responseCache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_cache: Option<ResponseCache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `rateLimit`: `local` (per replica) and `global` (Redis, shared by the replicas) rules;
/// Envoy Gateway's deprecated `type` names the block that must be there.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<RateLimitRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<RateLimitRules>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `rateLimit.local` / `rateLimit.global`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRules {
    #[serde(default)]
    pub rules: Vec<RateLimitRule>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// One rule: `clientSelectors` (all must hold) and its `limit`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_selectors: Vec<RateLimitSelectCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<RateLimitValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSelectCondition {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RateLimitHeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<RateLimitMethodMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RateLimitPathMatch>,
    #[serde(
        default,
        rename = "sourceCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_cidr: Option<RateLimitSourceMatch>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `headers[]`: `type` Exact (default), RegularExpression or Distinct.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitHeaderMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitMethodMatch {
    #[serde(default)]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `path`: `type` Exact, PathPrefix (default) or RegularExpression.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPathMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `sourceCIDR`: `type` Exact (default) or Distinct.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSourceMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub value: String,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `limit`: `requests` per `unit` (Second, Minute, Hour, Day, Month, Year).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `responseCache` (Weir's): an in-memory HTTP cache for the policy's routes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResponseCache {
    /// Bytes in all: a quantity (`64Mi`) or a byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<IntOrString>,
    /// The largest response stored: a quantity or a byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `maxBodySize` (the name issue 22 gives it; `maxEntrySize` is read too).
    #[serde(rename = "maxBodySize", alias = "maxEntrySize")]
    pub max_entry_size: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// One `compression[]` entry (Envoy Gateway's `Compression`): `type` (`Gzip`, `Brotli`,
/// `Zstd`), its settings block, `minContentLength`; `contentTypes` is Weir's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Compression {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<GzipCompressor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brotli: Option<BrotliCompressor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstd: Option<ZstdCompressor>,
    /// A quantity (`1Ki`) or a byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_content_length: Option<IntOrString>,
    /// Weir's extension: the media types compressed (`type/subtype` or `type/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_types: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GzipCompressor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrotliCompressor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZstdCompressor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<RetryOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_retry: Option<PerRetry>,
    /// Weir's extension (Envoy Gateway has none): Gateway API's
    /// `XBackendTrafficPolicy.retryConstraint`, as `budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `retry.budget`: `percent` of the requests of the last `interval` may be retries; at
/// least `minRetryRate.count` retries per `minRetryRate.interval` are allowed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_rate: Option<MinRetryRate>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MinRetryRate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `faultInjection`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultInjectionDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultInjectionAbort>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjectionDelay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    /// 0–100 (a float), default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjectionAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `requestBuffer`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestBuffer {
    /// A quantity (`1Mi`, `100Ki`) or a byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<IntOrString>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryOn {
    /// `5xx`, `gateway-error`, `reset`, `connect-failure`, `retriable-4xx`,
    /// `retriable-status-codes`, and the gRPC ones (`cancelled`, `deadline-exceeded`,
    /// `internal`, `resource-exhausted`, `unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status_codes: Option<Vec<i64>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PerRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpBackendTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpBackendTimeout>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_idle_timeout: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpBackendTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `loadBalancer`: how a request picks an endpoint of its backend (Envoy Gateway's
/// `LoadBalancer`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// `RoundRobin`, `Random`, `LeastRequest` or `ConsistentHash`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware: Option<ZoneAware>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `loadBalancer.zoneAware`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneAware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_local: Option<PreferLocalZone>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `loadBalancer.zoneAware.preferLocal`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreferLocalZone {
    /// Fewer endpoints (all zones) than this: no zone preference (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_endpoints_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<ForceLocalZone>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `loadBalancer.zoneAware.preferLocal.force`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ForceLocalZone {
    /// Local endpoints needed for all traffic to stay local (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_endpoints_in_zone_threshold: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `loadBalancer.consistentHash`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    /// `SourceIP`, `Header` or `Cookie`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HashHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashCookie>,
    /// The Maglev table's size: a prime (default 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HashHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HashCookie {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `loadBalancer.slowStart`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlowStart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `healthCheck` (Envoy Gateway's `HealthCheck`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `healthCheck.passive` (outlier detection).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<i64>,
    #[serde(
        default,
        rename = "consecutive5XxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `healthCheck.active`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<i64>,
    /// `HTTP`, `TCP` or `GRPC`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpActiveHealthChecker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpActiveHealthChecker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcActiveHealthChecker>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpActiveHealthChecker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<i64>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpActiveHealthChecker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<ActiveHealthCheckPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<ActiveHealthCheckPayload>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// A probe payload: `type: Text` with `text`, or `type: Binary` with `binary` (base64).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveHealthCheckPayload {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrpcActiveHealthChecker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

// ---------------------------------------------------------------------------------------
// SecurityPolicy

/// Authentication and authorization of a Gateway's, route's or rule's requests. Typed:
/// `cors`, `basicAuth`, `apiKeyAuth`, `jwt` and `authorization`; everything else (`extAuth`,
/// `oidc`, ...) is kept in `unsupported` and refused.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.weir.dev",
    version = "v1alpha1",
    kind = "SecurityPolicy",
    plural = "securitypolicies",
    namespaced,
    status = "PolicyStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPolicySpec {
    #[serde(flatten)]
    pub targets: PolicyTargets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<SecurityCors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(
        default,
        rename = "apiKeyAuth",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_key_auth: Option<ApiKeyAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<ExtAuth>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `extAuth`: an HTTP or gRPC auth service (Envoy Gateway's `ExtAuth`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpExtAuthService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcExtAuthService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_to_ext_auth: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_to_ext_auth: Option<BodyToExtAuth>,
    /// A duration (`10s`, `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `extAuth.http`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpExtAuthService {
    /// The older single reference (still in Envoy Gateway's API, deprecated there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<PolicyBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<PolicyBackendRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_to_backend: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `extAuth.grpc`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrpcExtAuthService {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<PolicyBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<PolicyBackendRef>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `extAuth.bodyToExtAuth`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BodyToExtAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<i64>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// A policy's reference to a backend (Gateway API `BackendObjectReference`; Envoy
/// Gateway's `BackendRef` adds `fallback`, kept in `unsupported`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `cors` (Envoy Gateway's `CORS`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityCors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    /// A duration (`10s`, `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// A reference to a Secret (Gateway API `SecretObjectReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to an object in the policy's namespace (`LocalObjectReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// `basicAuth`: users from a Secret's `.htpasswd` key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<SecretObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_username_header: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `apiKeyAuth`: client ID → key Secrets, where keys are read from, what is forwarded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_refs: Option<Vec<SecretObjectRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_from: Option<Vec<ExtractFrom>>,
    #[serde(
        default,
        rename = "forwardClientIDHeader",
        skip_serializing_if = "Option::is_none"
    )]
    pub forward_client_id_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanitize: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// One `apiKeyAuth.extractFrom` entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtractFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `jwt`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Jwt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<JwtProvider>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// One `jwt.providers[]` entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtProvider {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    #[serde(
        default,
        rename = "remoteJWKS",
        skip_serializing_if = "Option::is_none"
    )]
    pub remote_jwks: Option<RemoteJwks>,
    #[serde(default, rename = "localJWKS", skip_serializing_if = "Option::is_none")]
    pub local_jwks: Option<LocalJwks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_to_headers: Option<Vec<ClaimToHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_from: Option<JwtExtractor>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `remoteJWKS`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwks {
    #[serde(default)]
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<String>,
    /// Where the key set is fetched from instead of the URI's host (Envoy Gateway's
    /// `BackendCluster`): a Service port; the URI still gives the path and the Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<PolicyBackendRef>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `localJWKS`: `type` `Inline` (the JWKS in `inline`) or `ValueRef` (a ConfigMap's or
/// Secret's `jwks` key).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalJwks {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_ref: Option<LocalObjectRef>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// One `claimToHeaders` entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `jwt.providers[].extractFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtExtractor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<JwtHeaderExtractor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtHeaderExtractor {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_prefix: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `authorization`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// `Allow` or `Deny` (default `Deny`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<AuthorizationRule>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Allow` or `Deny`.
    #[serde(default)]
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    #[serde(default)]
    pub principal: Principal,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Weir's extension beside Envoy Gateway's `methods`: the request path matches one of
    /// these (HTTPRoute's path match shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<AuthorizationPathMatch>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `operation.paths[]`: `type` `Exact`, `PathPrefix` (the default) or `RegularExpression`,
/// and `value`, as an HTTPRoute path match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPathMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub value: String,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    #[serde(
        default,
        rename = "clientCIDRs",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_cidrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPrincipal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<AuthorizationHeaderMatch>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtPrincipal {
    #[serde(default)]
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Vec<JwtClaim>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtClaim {
    /// The claim's name; nested claims with `.` (`user.roles`).
    #[serde(default)]
    pub name: String,
    /// `String` (default) or `StringArray`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationHeaderMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fields_are_typed_and_unknown_ones_kept() {
        let p: ClientTrafficPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.weir.dev/v1alpha1",
            "kind": "ClientTrafficPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
                "clientIPDetection": {"xForwardedFor": {"numTrustedHops": 2}},
                "headers": {"requestID": "Generate", "withUnderscoresAction": "Allow"},
                "connection": {"bufferLimit": "32Ki"},
                "tcpKeepalive": {"idleTime": "20m"}
            }
        }))
        .unwrap();
        let spec = &p.spec;
        assert_eq!(spec.targets.all().count(), 1);
        let xff = spec
            .client_ip_detection
            .as_ref()
            .unwrap()
            .x_forwarded_for
            .as_ref();
        assert_eq!(xff.unwrap().num_trusted_hops, Some(2));
        let headers = spec.headers.as_ref().unwrap();
        assert_eq!(headers.request_id.as_deref(), Some("Generate"));
        assert!(headers.unsupported.contains_key("withUnderscoresAction"));
        assert!(spec.unsupported.contains_key("tcpKeepalive"));
        assert!(!spec.unsupported.contains_key("targetRefs"));
        assert_eq!(
            spec.connection.as_ref().unwrap().buffer_limit,
            Some(IntOrString::String("32Ki".into()))
        );
        // Round trip: what the store serves back is what was written.
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["spec"]["tcpKeepalive"]["idleTime"], "20m");
        assert_eq!(
            back["spec"]["clientIPDetection"]["xForwardedFor"]["numTrustedHops"],
            2
        );
    }

    #[test]
    fn backend_and_security_policies_keep_every_field() {
        let p: BackendTrafficPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.weir.dev/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"},
                "retry": {"numRetries": 3, "retryOn": {"triggers": ["5xx"]}, "perRetry": {"backOff": {"baseInterval": "10ms"}}},
                "circuitBreaker": {"maxParallelRequests": 5, "maxParallelRetries": 2, "maxRetries": 1},
                "faultInjection": {"abort": {"grpcStatus": 14, "percentage": 0.5}, "delay": {"fixedDelay": "1s"}},
                "requestBuffer": {"limit": "1Mi"},
                "loadBalancer": {"type": "Random", "zoneAware": {"weightedZones": []}},
                "compression": [{"type": "Gzip", "gzip": {"compressionLevel": 9, "windowBits": 12}}],
                "responseOverride": []
            }
        }))
        .unwrap();
        assert_eq!(p.spec.targets.all().count(), 1);
        let retry = p.spec.retry.as_ref().unwrap();
        assert_eq!(retry.num_retries, Some(3));
        let back_off = retry.per_retry.as_ref().unwrap().back_off.as_ref().unwrap();
        assert_eq!(back_off.base_interval.as_deref(), Some("10ms"));
        let breaker = p.spec.circuit_breaker.as_ref().unwrap();
        assert_eq!(breaker.max_parallel_requests, Some(5));
        assert_eq!(breaker.max_parallel_retries, Some(2));
        assert!(breaker.unsupported.contains_key("maxRetries"));
        let fault = p.spec.fault_injection.as_ref().unwrap();
        let abort = fault.abort.as_ref().unwrap();
        assert_eq!((abort.grpc_status, abort.percentage), (Some(14), Some(0.5)));
        assert_eq!(
            fault.delay.as_ref().unwrap().fixed_delay.as_deref(),
            Some("1s")
        );
        assert_eq!(
            p.spec.request_buffer.as_ref().unwrap().limit,
            Some(IntOrString::String("1Mi".into()))
        );
        let lb = p.spec.load_balancer.as_ref().unwrap();
        assert_eq!(lb.type_.as_deref(), Some("Random"));
        let zone_aware = lb.zone_aware.as_ref().unwrap();
        assert!(zone_aware.unsupported.contains_key("weightedZones"));
        let gzip = &p.spec.compression.as_ref().unwrap()[0];
        assert_eq!(gzip.type_.as_deref(), Some("Gzip"));
        let settings = gzip.gzip.as_ref().unwrap();
        assert_eq!(settings.compression_level, Some(9));
        assert!(settings.unsupported.contains_key("windowBits"));
        assert_eq!(
            p.spec.unsupported.keys().collect::<Vec<_>>(),
            ["responseOverride"]
        );
        let s: SecurityPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.weir.dev/v1alpha1",
            "kind": "SecurityPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"targetRefs": [], "cors": {"allowOrigins": ["*"]}, "oidc": {},
                "extAuth": {"http": {"backendRefs": [{"name": "auth", "port": 80, "fallback": true}],
                    "path": "/check", "headersToBackend": ["x-user"]},
                    "bodyToExtAuth": {"maxRequestBytes": 64}, "timeout": "2s", "failOpen": true,
                    "recomputeRoute": true}}
        }))
        .unwrap();
        assert!(s.spec.cors.is_some());
        assert_eq!(s.spec.unsupported.keys().collect::<Vec<_>>(), ["oidc"]);
        let e = s.spec.ext_auth.as_ref().unwrap();
        let h = e.http.as_ref().unwrap();
        let r = &h.backend_refs.as_ref().unwrap()[0];
        assert_eq!((r.name.as_str(), r.port), ("auth", Some(80)));
        assert!(r.unsupported.contains_key("fallback"));
        assert_eq!(h.path.as_deref(), Some("/check"));
        assert_eq!(
            e.body_to_ext_auth.as_ref().unwrap().max_request_bytes,
            Some(64)
        );
        assert_eq!(
            (e.timeout.as_deref(), e.fail_open),
            (Some("2s"), Some(true))
        );
        assert!(e.unsupported.contains_key("recomputeRoute"));
    }
}

// ---------------------------------------------------------------------------------------
// ExtensionPolicy

/// External processing of a Gateway's or route's requests and responses (Envoy Gateway's
/// EnvoyExtensionPolicy, its `extProc` list): each processor is an Envoy ext_proc gRPC
/// service. Typed: `extProc[].backendRef(s)`, `processingMode`, `messageTimeout`,
/// `failOpen`; everything else (`wasm`, `lua`, `extProc[].metadata`, ...) is kept in
/// `unsupported` and refused.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.weir.dev",
    version = "v1alpha1",
    kind = "ExtensionPolicy",
    plural = "extensionpolicies",
    namespaced,
    status = "PolicyStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionPolicySpec {
    #[serde(flatten)]
    pub targets: PolicyTargets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_proc: Option<Vec<ExtProc>>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// One `extProc` processor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtProc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<PolicyBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<PolicyBackendRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_mode: Option<ExtProcProcessingMode>,
    /// A Gateway API duration (`200ms`, `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `processingMode`: a present `request` / `response` sends that side's headers, and its
/// body as `body` says.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtProcProcessingMode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ExtProcModeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ExtProcModeOptions>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// `processingMode.request` / `.response`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtProcModeOptions {
    /// `Streamed`, `Buffered`, `BufferedPartial`, `FullDuplexStreamed`; unset: no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}
