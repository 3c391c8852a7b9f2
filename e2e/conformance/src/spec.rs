//! What each conformance test asserts, transcribed from the official Go tests into
//! `tests.yaml` (one entry per test, each citing its Go file).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The namespace bare object names default to (the suite's `InfrastructureNamespace`).
pub const INFRA_NS: &str = "gateway-conformance-infra";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Core,
    Extended,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Core => "core",
            Profile::Extended => "extended",
        }
    }
}

/// One conformance test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// The Go test's ShortName.
    pub name: String,
    /// The Go file the expectations come from (kubernetes-sigs/gateway-api v1.6.1).
    pub go: String,
    /// Files under conformance/tests/ the suite applies for this test.
    pub manifests: Vec<String>,
    pub profile: Profile,
    /// The features the Go test declares (its `Features` list).
    pub features: Vec<String>,
    /// The extended feature this test proves, shown in the table (defaults to the last
    /// feature that is not Gateway / HTTPRoute / ReferenceGrant).
    #[serde(default)]
    pub feature: Option<String>,
    /// Not replayed yet, and why.
    #[serde(default)]
    pub skip: Option<String>,
    /// The Go test returns at once, asserting nothing, when this feature is claimed (a
    /// "not supported" test): while Weir claims it, the test is shown as skipped the way the
    /// suite's own logic skips it; without the claim it would need steps.
    #[serde(default)]
    pub suite_skips_when_claimed: Option<String>,
    /// Whether Weir claims this test's features: a failure of a claimed test fails the run.
    #[serde(default = "yes")]
    pub claimed: bool,
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

impl TestSpec {
    /// Why the suite's own logic skips this test under Weir's claim, if it does.
    pub fn suite_skip(&self) -> Option<String> {
        let feature = self.suite_skips_when_claimed.as_deref()?;
        weir_translate::SUPPORTED_FEATURES
            .contains(&feature)
            .then(|| {
                format!("the Go test returns at once when {feature} is claimed, and Weir claims it")
            })
    }

    /// The feature column of the table.
    pub fn feature_label(&self) -> String {
        if let Some(f) = &self.feature {
            return f.clone();
        }
        let extra: Vec<&str> = self
            .features
            .iter()
            .map(String::as_str)
            .filter(|f| !matches!(*f, "Gateway" | "HTTPRoute" | "GRPCRoute" | "ReferenceGrant"))
            .collect();
        if extra.is_empty() {
            self.features.join(", ")
        } else {
            extra.join(", ")
        }
    }
}

/// `Type=Status (Reason)`; an empty reason matches any.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cond {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A listener as `GatewayStatusMustHaveListeners` expects it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerExpect {
    pub name: String,
    /// Route kinds (group gateway.networking.k8s.io); must match exactly.
    pub kinds: Vec<String>,
    pub attached: i64,
    #[serde(default)]
    pub conditions: Vec<Cond>,
}

/// One `RouteParentStatus` a route must have (see `Step::RouteParents`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentExpect {
    #[serde(default = "gateway_group")]
    pub group: String,
    #[serde(default = "gateway_kind")]
    pub kind: String,
    /// `ns/name`, or `name` in the infra namespace.
    pub name: String,
    pub conditions: Vec<Cond>,
}

fn gateway_group() -> String {
    "gateway.networking.k8s.io".into()
}

fn gateway_kind() -> String {
    "Gateway".into()
}

/// A parent a route must have in status (`kubernetes.NewGatewayRef(gw, sections...)`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    pub gateway: String,
    /// The routes' kind: `HTTPRoute` (default) or `GRPCRoute`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub routes: Vec<String>,
    /// Listener names of the parentRefs (one parent each); none means one parent without
    /// sectionName.
    #[serde(default)]
    pub sections: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// `GatewayAndHTTPRoutesMustBeAccepted`: the Gateway is Accepted and Programmed with an
    /// address, each route's parents are exactly this Gateway (and sections) with
    /// Accepted=True at the latest generation.
    Accepted(Accepted),
    /// `HTTPRouteMustHaveResolvedRefsConditionsTrue`.
    ResolvedRefs {
        gateway: String,
        routes: Vec<String>,
    },
    /// `HTTPRouteMustHaveCondition`.
    RouteCondition {
        route: String,
        gateway: String,
        condition: Cond,
    },
    /// `HTTPRouteMustHaveNoAcceptedParents`.
    NoAcceptedParents { route: String },
    /// `GatewayMustHaveZeroRoutes`.
    ZeroRoutes { gateway: String },
    /// `GatewayStatusMustHaveListeners`.
    Listeners {
        gateway: String,
        listeners: Vec<ListenerExpect>,
    },
    /// A Gateway-level condition.
    GatewayCondition { gateway: String, condition: Cond },
    /// `MakeRequestAndExpectEventuallyConsistentResponse`.
    Http(Box<HttpCase>),
    /// `client.Patch(ctx, obj, client.MergeFrom(orig))`: a JSON merge patch of one object
    /// (lists replaced whole), written back to its file; the file source bumps the
    /// generation when the spec changes.
    Patch {
        kind: String,
        /// `ns/name`, `name` in the infra namespace; the name alone for cluster-scoped kinds.
        name: String,
        merge: serde_json::Value,
    },
    /// `GatewayMustHaveLatestConditions` / `HTTPRouteMustHaveLatestConditions` /
    /// `GatewayClassConditionsHaveLatestObservedGeneration`: every condition of the object
    /// (each parent's, for routes) has observedGeneration equal to metadata.generation.
    LatestConditions { kind: String, name: String },
    /// metadata.generation is this value (the suite's `NotEqual(original.Generation,
    /// updated.Generation)` after one patch of a freshly created object: 1 → 2).
    Generation {
        kind: String,
        name: String,
        value: i64,
    },
    /// `BackendTLSPolicyMustHaveCondition`: a condition under the policy's ancestor entry
    /// (ours) for the Gateway, at the latest generation.
    PolicyCondition {
        policy: String,
        gateway: String,
        condition: Cond,
    },
    /// A GatewayClass condition at the latest generation (`GWCMustHaveAcceptedConditionTrue`).
    ClassCondition { class: String, condition: Cond },
    /// httproute-service-types.go `setupEndpointSlices`: fill hand-written IPv4
    /// EndpointSlices with the pods of a Deployment (container port 3000).
    FillEndpointSlices {
        deployment: String,
        slices: Vec<String>,
    },
    /// `WaitForGatewayAddress`: conditions at the latest generation and an IPAddress in
    /// status.addresses.
    GatewayAddress { gateway: String },
    /// status.addresses exactly these (type, value) pairs, in order.
    StatusAddresses {
        gateway: String,
        addresses: Vec<(String, String)>,
    },
    /// `GatewayAndTLSRoutesMustBeAccepted` (as `accepted`, for TLSRoutes; `kind: TCPRoute`
    /// checks TCPRoutes the same way).
    TlsAccepted(Accepted),
    /// `TLSRouteMustHaveResolvedRefsConditionsTrue`.
    TlsResolvedRefs {
        gateway: String,
        routes: Vec<String>,
        /// TLSRoute (default) or TCPRoute.
        #[serde(default)]
        kind: Option<String>,
    },
    /// `TLSRouteMustHaveCondition`: a TLSRoute parent condition.
    TlsRouteCondition {
        route: String,
        gateway: String,
        condition: Cond,
        /// TLSRoute (default) or TCPRoute.
        #[serde(default)]
        kind: Option<String>,
    },
    /// `TLSRouteMustHaveNoAcceptedParents`.
    TlsNoAcceptedParents {
        route: String,
        /// TLSRoute (default) or TCPRoute.
        #[serde(default)]
        kind: Option<String>,
    },
    /// `tcp.MakeTCPRequestAndExpectEventuallyValidResponse` (see `check::tls`).
    Tcp(Box<TcpCase>),
    /// `weight.TestWeightedDistribution` over `tcp.EchoSendOnce` (tcproute-weighted-routing.go,
    /// after `tcp.ExpectAddressBeAvailable`): 500 connections, 10 at a time, each the welcome
    /// line and `TEST`, answered by a pod; each backend's share within ±5 points of its
    /// weight, up to 10 tries.
    TcpWeights {
        gateway: String,
        /// Configured listener port.
        port: u16,
        weights: BTreeMap<String, f64>,
    },
    /// `RouteMustHaveParents` (`TCPRouteMustHaveParents`, `HTTPRouteMustHaveParents`): for
    /// each expected parent, a parent of ours in the route's status with exactly this group
    /// and kind (both set), this name, this namespace (or none, unless `namespace_required`),
    /// and the conditions.
    RouteParents {
        kind: String,
        route: String,
        parents: Vec<ParentExpect>,
        /// `namespaceRequired`: the status parentRef must name the namespace.
        #[serde(default)]
        namespace_required: bool,
    },
    /// `count` connections one after another, each `tcp.EchoSendOnce`, every one answered by
    /// a pod of `backend` (tcproute-multiple-routes-attachment.go: only the oldest route of a
    /// listener is bound).
    TcpSamples {
        gateway: String,
        port: u16,
        count: usize,
        backend: String,
    },
    /// `udp.ExpectEchoResponse` / `ExpectEchoResponseFromBackend` (conformance/utils/udp):
    /// polled until a datagram to the listener is answered (by a JSON answer naming this
    /// service and namespace, when given).
    UdpEcho {
        gateway: String,
        /// Configured listener port.
        port: u16,
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        namespace: Option<String>,
    },
    /// `count` `udpEchoSendOnce` probes, each answered by a pod of `backend`
    /// (`extractBackendName`), polled while probes fail (udproute-multiple-routes-attachment.go).
    UdpSamples {
        gateway: String,
        port: u16,
        count: usize,
        backend: String,
    },
    /// `ExpectEchoResponse`, then `weight.TestWeightedDistribution` over `udpEchoSendOnce`
    /// (udproute-weighted-routing.go).
    UdpWeights {
        gateway: String,
        port: u16,
        weights: BTreeMap<String, f64>,
    },
    /// udproute-simple.go: `dns.Exchange` of an A query for `name`, polled until a response
    /// comes.
    Dns {
        gateway: String,
        port: u16,
        name: String,
    },
    /// `MustApplyObjectsWithCleanup` in the middle of a test: the objects join the test's
    /// file (and go with it). `wait_ms` first: the suite sleeps a second so that the new
    /// objects' creationTimestamp (second precision) is later than the test's.
    Create {
        #[serde(default)]
        wait_ms: u64,
        objects: Vec<serde_json::Value>,
    },
    /// `client.Delete` of one object of the test (`name`: `ns/name`, or `name` in the infra
    /// namespace); waits until `/status` no longer lists it where it would.
    Delete { kind: String, name: String },
    /// `tls.MakeTLSRequestAndExpectEventuallyConnectionReset`: a TLS handshake with this SNI
    /// is closed by the Gateway.
    TlsReset {
        gateway: String,
        port: u16,
        server_name: String,
    },
    /// `tls.MakeTLSRequestAndExpectFailureResponse`: one HTTPS request (presenting
    /// `client_cert`, if given) that must fail in the transport (handshake or first read),
    /// not with any HTTP answer; when a certificate is given, the Gateway must have asked
    /// for it.
    TlsFailure(Box<HttpCase>),
    /// `testDistribution` of httproute-weight.go: 500 requests, each backend within ±5 points.
    /// A unary gRPC call (see `check/grpc.rs`).
    Grpc(Box<GrpcCase>),
    /// The weighted distribution of gRPC calls over backends (grpcroute-weight.go).
    GrpcWeights {
        call: Box<GrpcCase>,
        weights: BTreeMap<String, f64>,
    },
    Weights {
        gateway: String,
        #[serde(default)]
        host: Option<String>,
        path: String,
        weights: BTreeMap<String, f64>,
    },
    /// httproute-request-header-modifier-backend-weights.go: `requests` round trips, each
    /// backend request carrying exactly one `header` whose value the answering pod's name
    /// starts with (each backendRef's filter named its own backend).
    BackendHeaderNamesPod {
        gateway: String,
        path: String,
        header: String,
        requests: usize,
    },
    /// `MakeRequestAndExpectEventuallyConsistentResponse`, then `ExpectMirroredRequest`
    /// (conformance/utils/http/mirror.go): every Deployment in `to` logs
    /// `Echoing back request made to <path> to client` within the request timeout.
    Mirrored {
        request: Box<HttpCase>,
        to: Vec<String>,
    },
    /// httproute-request-percentage-mirror.go: after a consistent answer, 500 requests (10
    /// at a time); the mirror Deployment `to` logs the path `percent`% of 500 times, within 3
    /// binomial standard deviations (v1.6.1); up to 5 tries.
    MirrorShare {
        request: Box<HttpCase>,
        to: String,
        percent: f64,
    },
    /// A CORS case of httproute-cors.go (`MakeRequestAndExpectEventuallyConsistentResponse`
    /// with `StatusCodes`, `ValidHeaderValues` compared ignoring whitespace, `Headers`,
    /// `AbsentHeaders`); preflight answers come from the gateway, so their body is not read.
    Cors(Box<CorsCase>),
    /// httproute-backend-protocol-websocket.go: dial `ws://<gateway><path>`, send a text and
    /// a binary message, each comes back; three times in a row.
    #[serde(rename = "websocket")]
    WebSocket { gateway: String, path: String },
    /// The ListenerSet steps (`listener_set_condition`, `attached_listener_sets`, ...): see
    /// [`crate::check::listenerset::LsStep`].
    #[serde(untagged)]
    ListenerSet(crate::check::listenerset::LsStep),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsCase {
    pub gateway: String,
    pub path: String,
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Acceptable status codes (default 200).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// Each header must be present with one of these values.
    #[serde(default)]
    pub valid_headers: BTreeMap<String, Vec<String>>,
    /// Each header must be present with exactly this value.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent_response_headers: Vec<String>,
    /// When set, a 200 must be the echo JSON of a pod in this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A request and what must come back (`http.ExpectedResponse`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCase {
    pub gateway: String,
    /// Configured listener port (default: the Gateway's first HTTP, else HTTPS, listener).
    #[serde(default)]
    pub port: Option<u16>,
    /// `https` for TLS requests (the SNI is `server_name`, else the host).
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
    /// `h2c` for HTTP/2 with prior knowledge (the suite's H2CPriorKnowledgeProtocol).
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body (Weir's ExternalAuth forwardBody test).
    #[serde(default)]
    pub body: Option<String>,
    /// Headers the echo backend sets on its answer (`X-Echo-Set-Header`).
    #[serde(default)]
    pub backend_set_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// What the backend must see; by default the request itself (path, method, host, headers).
    #[serde(default)]
    pub expected_request: Option<ExpectedRequest>,
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent_response_headers: Vec<String>,
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Time allowed for an answer (timeouts tests).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// HTTPS: present the client certificate of this Secret (in the infra namespace) when
    /// the Gateway asks for one (frontend validation tests).
    #[serde(default)]
    pub client_cert: Option<String>,
    /// `Response.StatusCodes`: any of these (instead of `status`).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// `MakeRequestAndExpectFailure`: every try must fail (no answer, or not a 2xx), as many
    /// times in a row as a consistent answer needs.
    #[serde(default)]
    pub fails: bool,
    /// Each try adds a new `uuid` query parameter to `path` (the retry tests: the echo
    /// server counts attempts per uuid).
    #[serde(default)]
    pub fresh_uuid: bool,
    /// The TLS server name the backend saw (`ExpectedRequest.SNI`, else `Request.SNI` of a
    /// request to a backend reached over TLS).
    #[serde(default)]
    pub backend_sni: Option<String>,
    /// `Request.ClientCert`: the backend saw this generated Secret's (`ns/name` or `name`)
    /// certificate as the client's (the Gateway's backend client certificate).
    #[serde(default)]
    pub backend_client_cert: Option<String>,
}

/// One gRPC call and its expected answer (`grpc.ExpectedResponse`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcCase {
    pub gateway: String,
    #[serde(default)]
    pub port: Option<u16>,
    /// `https`: h2 over TLS; otherwise h2c.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
    /// `Echo`, `EchoTwo` or `EchoThree`.
    pub method: String,
    /// `RequestMetadata.Authority`; default the Gateway address.
    #[serde(default)]
    pub authority: Option<String>,
    /// `RequestMetadata.Metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Expected status code by name (`OK` when not given).
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// Headers the backend must have seen with exactly these values (names lowercase), as
    /// `ExpectedRequest.Headers` does for HTTP.
    #[serde(default)]
    pub seen_headers: BTreeMap<String, String>,
    /// Headers the backend must not have seen (`ExpectedRequest.AbsentHeaders`).
    #[serde(default)]
    pub absent_headers: Vec<String>,
}

/// A TCP line-protocol exchange and what must come back (`tcp.ExpectedResponse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCase {
    pub gateway: String,
    /// Configured listener port.
    pub port: u16,
    /// Connect over TLS with this SNI (trusting the harness CA); plain TCP when absent.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The backend's answer to `IS_TLS`.
    pub backend_is_tls: bool,
    /// Pod name prefix (`<backend>-`).
    pub backend: String,
    pub namespace: String,
    /// The SNI the backend saw (its TLS assertions); not checked when absent.
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRequest {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub absent_headers: Vec<String>,
}

/// `roundtripper.RedirectRequest`: empty fields take the suite's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

/// `ns/name`, or `name` in the infra namespace.
pub fn split_name(s: &str) -> (String, String) {
    match s.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (INFRA_NS.to_string(), s.to_string()),
    }
}

pub fn load(path: &std::path::Path) -> anyhow::Result<Vec<TestSpec>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let text = crate::cluster::fill_templates(&text);
    // Through JSON values so that steps can be written as `- kind: {...}` maps.
    let value: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?;
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    /// tests.yaml parses, names each test once, and every manifest it names exists in the
    /// v1.6.1 suite.
    #[test]
    fn tests_yaml_names_existing_manifests() {
        let specs =
            load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests.yaml")).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for s in &specs {
            assert!(names.insert(s.name.clone()), "{} listed twice", s.name);
            assert!(
                s.skip.is_some() || s.suite_skip().is_some() || !s.steps.is_empty(),
                "{} has no steps",
                s.name
            );
            for m in &s.manifests {
                let path = crate::cluster::manifest_path(m);
                assert!(path.exists(), "{}: {} missing", s.name, path.display());
            }
        }
    }
}
