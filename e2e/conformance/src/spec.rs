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
    /// The Go file the expectations come from (kubernetes-sigs/gateway-api v1.5.x).
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
    /// Whether Weir claims this test's features: a failure of a claimed test fails the run.
    #[serde(default = "yes")]
    pub claimed: bool,
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

impl TestSpec {
    /// The feature column of the table.
    pub fn feature_label(&self) -> String {
        if let Some(f) = &self.feature {
            return f.clone();
        }
        let extra: Vec<&str> = self
            .features
            .iter()
            .map(String::as_str)
            .filter(|f| !matches!(*f, "Gateway" | "HTTPRoute" | "ReferenceGrant"))
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

/// A parent a route must have in status (`kubernetes.NewGatewayRef(gw, sections...)`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    pub gateway: String,
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
    /// `testDistribution` of httproute-weight.go: 500 requests, each backend within ±5 points.
    Weights {
        gateway: String,
        #[serde(default)]
        host: Option<String>,
        path: String,
        weights: BTreeMap<String, f64>,
    },
    /// The ListenerSet steps (`listener_set_condition`, `attached_listener_sets`, ...): see
    /// [`crate::check::listenerset::LsStep`].
    #[serde(untagged)]
    ListenerSet(crate::check::listenerset::LsStep),
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
    /// v1.5.1 suite.
    #[test]
    fn tests_yaml_names_existing_manifests() {
        let specs =
            load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests.yaml")).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for s in &specs {
            assert!(names.insert(s.name.clone()), "{} listed twice", s.name);
            assert!(
                s.skip.is_some() || !s.steps.is_empty(),
                "{} has no steps",
                s.name
            );
            for m in &s.manifests {
                let path = crate::cluster::suite_dir().join("tests").join(m);
                assert!(path.exists(), "{}: {} missing", s.name, path.display());
            }
        }
    }
}
