//! Running one test's steps against a live Weir: status from the admin `/status`, traffic
//! over real sockets, each with a bounded wait (the file source applies changes
//! asynchronously), compared the way conformance/utils/http/http.go and
//! conformance/utils/kubernetes/helpers.go compare.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_testkit::client::{h2c, http1, https_with, ClientCert, Reply, Req};
use weir_testkit::process::Weir;

mod tls;

use crate::cluster::{ConfigDir, CONTROLLER_NAME};
use crate::spec::{split_name, Accepted, Cond, HttpCase, ListenerExpect, Step};

mod backendtls;
mod extended;
mod grpc;
pub mod listenerset;
mod websocket;

/// How long a status or traffic expectation may take to hold.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// The suite's RequiredConsecutiveSuccesses default.
const CONSECUTIVE: usize = 3;
/// The suite's per-request timeout default (RequestTimeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Env<'a> {
    pub weir: &'a Weir,
    pub cluster: &'a crate::cluster::Cluster,
    /// The objects Weir serves; patch steps change them.
    pub dir: &'a RefCell<ConfigDir>,
    pub ca_pem: &'a str,
}

/// Poll `check` until it succeeds or `timeout` passes; the last error explains the failure.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    eventually_every(timeout, Duration::from_millis(50), check).await
}

/// [`eventually`], polling every `interval`.
pub(crate) async fn eventually_every<F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("after {timeout:?}: {last}"));
        }
        tokio::time::sleep(interval).await;
    }
}

pub async fn run_step(env: &Env<'_>, step: &Step) -> Result<(), String> {
    match step {
        Step::Accepted(a) => eventually(STEP_TIMEOUT, || accepted(env, a)).await,
        Step::ResolvedRefs { gateway, routes } => {
            for r in routes {
                let cond = Cond {
                    type_: "ResolvedRefs".into(),
                    status: "True".into(),
                    reason: None,
                };
                eventually(STEP_TIMEOUT, || route_condition(env, r, gateway, &cond)).await?;
            }
            Ok(())
        }
        Step::RouteCondition {
            route,
            gateway,
            condition,
        } => {
            eventually(STEP_TIMEOUT, || {
                route_condition(env, route, gateway, condition)
            })
            .await
        }
        Step::NoAcceptedParents { route } => {
            eventually(STEP_TIMEOUT, || no_accepted_parents(env, route)).await
        }
        Step::ZeroRoutes { gateway } => {
            eventually(STEP_TIMEOUT, || zero_routes(env, gateway)).await
        }
        Step::Listeners { gateway, listeners } => {
            eventually(STEP_TIMEOUT, || gateway_listeners(env, gateway, listeners)).await
        }
        Step::GatewayCondition { gateway, condition } => {
            eventually(STEP_TIMEOUT, || gateway_condition(env, gateway, condition)).await
        }
        Step::Patch { kind, name, merge } => {
            // The API server bumps the generation as it takes the patch; in file mode the
            // generation becomes visible with the status computed from the new file, so
            // wait for it before the next step reads any status (else a step could pass on
            // the status of the old spec).
            let before = status_of(env, kind, name)
                .await
                .ok()
                .map(|o| o["metadata"]["generation"].clone());
            let (ns, short) = split_name(name);
            env.dir
                .borrow_mut()
                .patch(kind, &ns, &short, merge)
                .map_err(|e| format!("{e:#}"))?;
            let Some(before) = before else {
                return Ok(());
            };
            eventually(STEP_TIMEOUT, || async {
                let now = status_of(env, kind, name).await?;
                if now["metadata"]["generation"] == before {
                    return Err(format!(
                        "{kind} {name}: the patch did not change the generation ({before}); does it change the spec?"
                    ));
                }
                Ok(())
            })
            .await
        }
        Step::FillEndpointSlices { deployment, slices } => {
            let (ns, deployment) = split_name(deployment);
            let pods = env.cluster.pods_of(&ns, &deployment, 3000);
            if pods.is_empty() {
                return Err(format!("Deployment {ns}/{deployment} has no pods"));
            }
            for slice in slices {
                let (sns, sname) = split_name(slice);
                env.dir
                    .borrow_mut()
                    .fill_endpoint_slice(&sns, &sname, &pods)
                    .map_err(|e| format!("{e:#}"))?;
            }
            Ok(())
        }
        Step::LatestConditions { kind, name } if kind == "BackendTLSPolicy" => {
            eventually(STEP_TIMEOUT, || backendtls::latest_conditions(env, name)).await
        }
        Step::LatestConditions { kind, name } => {
            eventually(STEP_TIMEOUT, || latest_conditions(env, kind, name)).await
        }
        Step::PolicyCondition {
            policy,
            gateway,
            condition,
        } => {
            eventually(STEP_TIMEOUT, || {
                backendtls::policy_condition(env, policy, gateway, condition)
            })
            .await
        }
        Step::Generation { kind, name, value } => {
            eventually(STEP_TIMEOUT, || async {
                let obj = status_of(env, kind, name).await?;
                if obj["metadata"]["generation"] != *value {
                    return Err(format!(
                        "{kind} {name}: generation {}, want {value}",
                        obj["metadata"]["generation"]
                    ));
                }
                Ok(())
            })
            .await
        }
        Step::ClassCondition { class, condition } => {
            eventually(STEP_TIMEOUT, || async {
                let gwc = status_of(env, "GatewayClass", class).await?;
                let what = format!("GatewayClass {class}");
                let conds = &gwc["status"]["conditions"];
                conditions_match(std::slice::from_ref(condition), conds, &what)?;
                latest_generation(conds, &gwc["metadata"]["generation"], &what)
            })
            .await
        }
        Step::GatewayAddress { gateway } => {
            eventually(STEP_TIMEOUT, || async {
                gateway_address(env, gateway).await.map(|_| ())
            })
            .await
        }
        Step::StatusAddresses { gateway, addresses } => {
            eventually(STEP_TIMEOUT, || status_addresses(env, gateway, addresses)).await
        }
        Step::Http(case) => consistent(env, case).await,
        Step::TlsFailure(case) => tls_failure(env, case).await,
        Step::Grpc(case) => grpc::consistent(env, case).await,
        Step::GrpcWeights { call, weights } => grpc::distribution(env, call, weights).await,
        Step::TlsAccepted(_)
        | Step::TlsResolvedRefs { .. }
        | Step::TlsRouteCondition { .. }
        | Step::TlsNoAcceptedParents { .. }
        | Step::Tcp(_)
        | Step::TlsReset { .. } => tls::run_step(env, step).await,
        Step::Weights {
            gateway,
            host,
            path,
            weights,
        } => distribution(env, gateway, host.as_deref(), path, weights).await,
        Step::BackendHeaderNamesPod {
            gateway,
            path,
            header,
            requests,
        } => extended::backend_header_names_pod(env, gateway, path, header, *requests).await,
        Step::Mirrored { request, to } => extended::mirrored(env, request, to).await,
        Step::MirrorShare {
            request,
            to,
            percent,
        } => extended::mirror_share(env, request, to, *percent).await,
        Step::Cors(case) => extended::cors(env, case).await,
        Step::WebSocket { gateway, path } => websocket::websocket(env, gateway, path).await,
        Step::ListenerSet(s) => listenerset::run(env, s).await,
    }
}

// ---------------------------------------------------------------------------------------
// Status

/// What the suite reads before any test: every GatewayClass of ours (the only ones with a
/// status) reports `status.supportedFeatures` = [`weir_translate::SUPPORTED_FEATURES`], in
/// that (ascending) order.
pub async fn classes_list_supported_features(weir: &Weir) -> Result<(), String> {
    eventually(STEP_TIMEOUT, || async {
        let reply = http1(weir.admin, &Req::get("admin", "/status")).await?;
        let doc: Value =
            serde_json::from_slice(&reply.body).map_err(|e| format!("/status: {e}"))?;
        let classes: Vec<&Value> = doc["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["kind"] == "GatewayClass")
            .collect();
        if classes.is_empty() {
            return Err("no GatewayClass in /status".into());
        }
        for class in classes {
            let names: Vec<&str> = class["status"]["supportedFeatures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["name"].as_str())
                .collect();
            if names != weir_translate::SUPPORTED_FEATURES {
                return Err(format!(
                    "GatewayClass {} status.supportedFeatures is {names:?}, want \
                     weir_translate::SUPPORTED_FEATURES {:?}",
                    class["metadata"]["name"],
                    weir_translate::SUPPORTED_FEATURES
                ));
            }
        }
        Ok(())
    })
    .await
}

pub(crate) async fn status_of(env: &Env<'_>, kind: &str, name: &str) -> Result<Value, String> {
    let (ns, name) = split_name(name);
    let reply = http1(env.weir.admin, &Req::get("admin", "/status")).await?;
    let doc: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("/status: {e}"))?;
    doc["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i["kind"] == kind
                && i["metadata"]["name"] == name.as_str()
                && (kind == "GatewayClass" || i["metadata"]["namespace"] == ns.as_str())
        })
        .cloned()
        .ok_or_else(|| format!("{kind} {ns}/{name} has no status"))
}

/// `conditionsMatch`: each expected condition is present with that status (and reason when
/// one is given).
pub(crate) fn conditions_match(
    expected: &[Cond],
    actual: &Value,
    what: &str,
) -> Result<(), String> {
    for e in expected {
        let found = actual
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == e.type_.as_str());
        let Some(c) = found else {
            return Err(format!("{what}: no {} condition in {actual}", e.type_));
        };
        let reason_ok = e
            .reason
            .as_deref()
            .is_none_or(|r| r.is_empty() || c["reason"] == r);
        if c["status"] != e.status.as_str() || !reason_ok {
            return Err(format!(
                "{what}: want {}={} ({}), got {}={} ({})",
                e.type_,
                e.status,
                e.reason.as_deref().unwrap_or("any"),
                e.type_,
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    Ok(())
}

/// Every condition reflects the object's latest generation.
pub(crate) fn latest_generation(
    conditions: &Value,
    generation: &Value,
    what: &str,
) -> Result<(), String> {
    for c in conditions.as_array().into_iter().flatten() {
        if c["observedGeneration"] != *generation {
            return Err(format!(
                "{what}: condition {} has observedGeneration {} but generation is {generation}",
                c["type"], c["observedGeneration"]
            ));
        }
    }
    Ok(())
}

pub(crate) async fn gateway_ready(env: &Env<'_>, gateway: &str) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let conds = &gw["status"]["conditions"];
    conditions_match(
        &[
            Cond {
                type_: "Accepted".into(),
                status: "True".into(),
                reason: None,
            },
            Cond {
                type_: "Programmed".into(),
                status: "True".into(),
                reason: None,
            },
        ],
        conds,
        &format!("Gateway {gateway}"),
    )?;
    latest_generation(
        conds,
        &gw["metadata"]["generation"],
        &format!("Gateway {gateway}"),
    )?;
    if gw["status"]["addresses"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        return Err(format!("Gateway {gateway} has no status.addresses"));
    }
    Ok(())
}

/// The parents of `route` set by our controller.
pub(crate) fn our_parents(route: &Value) -> Vec<&Value> {
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == CONTROLLER_NAME)
        .collect()
}

/// `parentsForRouteMatch` of conformance/utils/kubernetes/helpers.go compares group, kind,
/// name and namespace (which may be left out when the route is in the Gateway's namespace),
/// not the sectionName.
fn parent_is(p: &Value, gateway: &str, route_ns: &str) -> bool {
    let (ns, name) = split_name(gateway);
    let r = &p["parentRef"];
    let ns_ok = match r["namespace"].as_str() {
        Some(n) => n == ns,
        None => route_ns == ns,
    };
    r["name"] == name.as_str()
        && ns_ok
        && r["kind"].as_str().unwrap_or("Gateway") == "Gateway"
        && r["group"].as_str().unwrap_or("gateway.networking.k8s.io") == "gateway.networking.k8s.io"
}

async fn accepted(env: &Env<'_>, a: &Accepted) -> Result<(), String> {
    gateway_ready(env, &a.gateway).await?;
    // One expected parent per listener name given (one when none is).
    let expected = a.sections.len().max(1);
    let kind = a.kind.as_deref().unwrap_or("HTTPRoute");
    for r in &a.routes {
        let route = status_of(env, kind, r).await?;
        let parents = our_parents(&route);
        if parents.len() != expected {
            return Err(format!(
                "{kind} {r}: want {expected} parent(s), got {}",
                serde_json::to_string(&route["status"]["parents"]).unwrap_or_default()
            ));
        }
        let (route_ns, _) = split_name(r);
        for p in &parents {
            if !parent_is(p, &a.gateway, &route_ns) {
                return Err(format!(
                    "{kind} {r}: parent {} is not Gateway {}",
                    p["parentRef"], a.gateway
                ));
            }
            let what = format!("{kind} {r} parent {}", a.gateway);
            conditions_match(
                &[Cond {
                    type_: "Accepted".into(),
                    status: "True".into(),
                    reason: None,
                }],
                &p["conditions"],
                &what,
            )?;
            latest_generation(&p["conditions"], &route["metadata"]["generation"], &what)?;
        }
    }
    Ok(())
}

async fn route_condition(
    env: &Env<'_>,
    route: &str,
    gateway: &str,
    cond: &Cond,
) -> Result<(), String> {
    let r = status_of(env, "HTTPRoute", route).await?;
    let parents = our_parents(&r);
    let (gns, gname) = split_name(gateway);
    let Some(p) = parents.iter().find(|p| {
        p["parentRef"]["name"] == gname.as_str() && p["parentRef"]["namespace"] == gns.as_str()
    }) else {
        return Err(format!("HTTPRoute {route}: no parent {gateway} in status"));
    };
    let what = format!("HTTPRoute {route} parent {gateway}");
    conditions_match(std::slice::from_ref(cond), &p["conditions"], &what)?;
    latest_generation(&p["conditions"], &r["metadata"]["generation"], &what)
}

/// `HTTPRouteMustHaveNoAcceptedParents`: no parents, or only parents with Accepted=False.
async fn no_accepted_parents(env: &Env<'_>, route: &str) -> Result<(), String> {
    let r = status_of(env, "HTTPRoute", route).await.unwrap_or_default();
    for p in our_parents(&r) {
        let accepted = p["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True");
        if accepted {
            return Err(format!("HTTPRoute {route}: accepted by {}", p["parentRef"]));
        }
    }
    Ok(())
}

async fn zero_routes(env: &Env<'_>, gateway: &str) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    for l in gw["status"]["listeners"].as_array().into_iter().flatten() {
        if l["attachedRoutes"].as_i64() != Some(0) {
            return Err(format!(
                "Gateway {gateway} listener {}: attachedRoutes {}",
                l["name"], l["attachedRoutes"]
            ));
        }
    }
    Ok(())
}

/// `listenersMatch`: same listener count; per listener the supported kinds, attached routes
/// and conditions.
async fn gateway_listeners(
    env: &Env<'_>,
    gateway: &str,
    expected: &[ListenerExpect],
) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let actual = gw["status"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if actual.len() != expected.len() {
        return Err(format!(
            "Gateway {gateway}: want {} listeners, got {}",
            expected.len(),
            actual.len()
        ));
    }
    for e in expected {
        let Some(a) = actual.iter().find(|l| l["name"] == e.name.as_str()) else {
            return Err(format!("Gateway {gateway}: no listener {}", e.name));
        };
        let kinds: Vec<&str> = a["supportedKinds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| {
                k["group"].as_str().unwrap_or("gateway.networking.k8s.io")
                    == "gateway.networking.k8s.io"
            })
            .filter_map(|k| k["kind"].as_str())
            .collect();
        // listenersMatch: an empty expected list needs an empty actual one; otherwise every
        // expected kind must be present ("the implementation might support more Kinds than
        // defined in the test").
        let mut want: Vec<&str> = e.kinds.iter().map(String::as_str).collect();
        let mut got = kinds.clone();
        want.sort_unstable();
        got.sort_unstable();
        let matches = if want.is_empty() {
            got.is_empty()
        } else {
            want.iter().all(|k| got.contains(k))
        };
        if !matches {
            return Err(format!(
                "Gateway {gateway} listener {}: supportedKinds {got:?}, want {want:?}",
                e.name
            ));
        }
        if a["attachedRoutes"].as_i64() != Some(e.attached) {
            return Err(format!(
                "Gateway {gateway} listener {}: attachedRoutes {}, want {}",
                e.name, a["attachedRoutes"], e.attached
            ));
        }
        conditions_match(
            &e.conditions,
            &a["conditions"],
            &format!("Gateway {gateway} listener {}", e.name),
        )?;
    }
    Ok(())
}

async fn gateway_condition(env: &Env<'_>, gateway: &str, cond: &Cond) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let what = format!("Gateway {gateway}");
    conditions_match(
        std::slice::from_ref(cond),
        &gw["status"]["conditions"],
        &what,
    )?;
    latest_generation(
        &gw["status"]["conditions"],
        &gw["metadata"]["generation"],
        &what,
    )
}

async fn latest_conditions(env: &Env<'_>, kind: &str, name: &str) -> Result<(), String> {
    let obj = status_of(env, kind, name).await?;
    let generation = &obj["metadata"]["generation"];
    let what = format!("{kind} {name}");
    if obj["status"]["conditions"].as_array().is_some() {
        latest_generation(&obj["status"]["conditions"], generation, &what)?;
    }
    for p in our_parents(&obj) {
        latest_generation(&p["conditions"], generation, &what)?;
    }
    if kind != "HTTPRoute"
        && obj["status"]["conditions"]
            .as_array()
            .is_none_or(|c| c.is_empty())
    {
        return Err(format!("{what} has no conditions"));
    }
    Ok(())
}

/// `WaitForGatewayAddress`: the Gateway's conditions are at its latest generation and
/// status.addresses holds an IPAddress; that address.
async fn gateway_address(env: &Env<'_>, gateway: &str) -> Result<IpAddr, String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    latest_generation(
        &gw["status"]["conditions"],
        &gw["metadata"]["generation"],
        &format!("Gateway {gateway}"),
    )?;
    gw["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "IPAddress")
        .and_then(|a| a["value"].as_str())
        .ok_or_else(|| format!("Gateway {gateway} has no IPAddress in status.addresses"))?
        .parse()
        .map_err(|e| format!("Gateway {gateway}: status address: {e}"))
}

async fn status_addresses(
    env: &Env<'_>,
    gateway: &str,
    want: &[(String, String)],
) -> Result<(), String> {
    let gw = status_of(env, "Gateway", gateway).await?;
    let got: Vec<(String, String)> = gw["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["type"].as_str().unwrap_or_default().to_string(),
                a["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if got != want {
        return Err(format!(
            "Gateway {gateway}: status.addresses {got:?}, want {want:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Traffic

/// The configured port a case targets, the Gateway's address (from its status, as the suite
/// takes it) and the socket serving that port there.
async fn target(
    env: &Env<'_>,
    gateway: &str,
    port: Option<u16>,
    https: bool,
) -> Result<(u16, IpAddr, SocketAddr), String> {
    let (ns, name) = split_name(gateway);
    let key = format!("{ns}/{name}");
    let gateways = env.dir.borrow().gateways();
    let listeners = gateways
        .get(&key)
        .ok_or_else(|| format!("Gateway {key} is neither a base Gateway nor one of this test's"))?;
    let want = if https { "HTTPS" } else { "HTTP" };
    let port = match port {
        Some(p) => p,
        None => listeners
            .iter()
            .find(|(_, proto)| proto == want)
            .map(|(p, _)| *p)
            .ok_or_else(|| format!("Gateway {key} has no {want} listener"))?,
    };
    let ip = gateway_address(env, gateway).await?;
    Ok((
        port,
        ip,
        SocketAddr::new(ip, env.weir.listener(port).port()),
    ))
}

/// `CalculateHost`: the Gateway address, without the port when it is the scheme's default.
fn default_host(ip: IpAddr, port: u16, https: bool) -> String {
    if (!https && port == 80) || (https && port == 443) {
        ip.to_string()
    } else {
        SocketAddr::new(ip, port).to_string()
    }
}

struct Prepared {
    addr: SocketAddr,
    https: bool,
    h2c: bool,
    server_name: String,
    host: String,
    method: String,
    headers: Vec<(String, String)>,
    client_cert: Option<ClientCert>,
}

async fn prepare(env: &Env<'_>, case: &HttpCase) -> Result<Prepared, String> {
    let https = case.scheme.as_deref() == Some("https");
    let (port, ip, addr) = target(env, &case.gateway, case.port, https).await?;
    let host = case
        .host
        .clone()
        .unwrap_or_else(|| default_host(ip, port, https));
    let mut headers: Vec<(String, String)> = case
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let set: Vec<String> = case
        .backend_set_headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    headers.push(("X-Echo-Set-Header".into(), set.join(",")));
    Ok(Prepared {
        addr,
        https,
        h2c: case.protocol.as_deref() == Some("h2c"),
        server_name: case
            .server_name
            .clone()
            .unwrap_or_else(|| host.split(':').next().unwrap_or_default().to_string()),
        host,
        method: case.method.clone().unwrap_or_else(|| "GET".into()),
        headers,
        client_cert: match &case.client_cert {
            None => None,
            Some(name) => {
                let leaf =
                    env.cluster.client_certs.get(name).ok_or_else(|| {
                        format!("no generated client certificate Secret {name:?}")
                    })?;
                Some(ClientCert::new(&leaf.cert_pem, &leaf.key_pem))
            }
        },
    })
}

/// `tls.MakeTLSRequestAndExpectFailureResponse`: one request, which must not be answered.
async fn tls_failure(env: &Env<'_>, case: &HttpCase) -> Result<(), String> {
    let p = prepare(env, case).await?;
    if !p.https {
        return Err("tls_failure needs scheme https".into());
    }
    match send(env, &p, &case.path, REQUEST_TIMEOUT).await {
        Ok(reply) => Err(format!(
            "https {} (host {}, SNI {}): answered {} but the request should fail",
            case.path, p.host, p.server_name, reply.status
        )),
        Err(_) => match &p.client_cert {
            Some(c) if !c.was_asked() => Err(format!(
                "https {} (SNI {}): failed, but the Gateway never asked for the client certificate",
                case.path, p.server_name
            )),
            _ => Ok(()),
        },
    }
}

async fn send(env: &Env<'_>, p: &Prepared, path: &str, timeout: Duration) -> Result<Reply, String> {
    let req = Req {
        method: &p.method,
        host: &p.host,
        path,
        headers: p
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    let fut = async {
        if p.https {
            https_with(
                p.addr,
                &p.server_name,
                env.ca_pem,
                p.client_cert.as_ref(),
                &req,
            )
            .await
        } else if p.h2c {
            h2c(p.addr, &req).await
        } else {
            http1(p.addr, &req).await
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// `MakeRequestAndExpectEventuallyConsistentResponse`: the expectation must hold for
/// `CONSECUTIVE` requests in a row within the step timeout.
async fn consistent(env: &Env<'_>, case: &HttpCase) -> Result<(), String> {
    let p = prepare(env, case).await?;
    let timeout = case
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(REQUEST_TIMEOUT);
    let deadline = Instant::now() + STEP_TIMEOUT + timeout;
    let mut successes = 0;
    loop {
        let outcome = match send(env, &p, &case.path, timeout).await {
            Ok(reply) if case.fails => match reply.status.as_u16() {
                200..=299 => Err(format!(
                    "expected the request to fail, got {}",
                    reply.status.as_u16()
                )),
                _ => Ok(()),
            },
            Err(_) if case.fails => Ok(()),
            Ok(reply) => compare(case, &p, &reply).and_then(|()| backend_tls(env, case, &reply)),
            Err(e) if case.status == Some(504) && e.starts_with("no answer") => Ok(()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                successes += 1;
                if successes >= CONSECUTIVE {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                successes = 0;
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{} {}{} (host {}): {e}",
                        p.method,
                        if p.https { "https " } else { "" },
                        case.path,
                        p.host
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header_values(map: &Value, name: &str) -> Option<String> {
    let obj = map.as_object()?;
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
}

fn response_header(reply: &Reply, name: &str) -> Option<String> {
    let values: Vec<&str> = reply
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// What the backend saw of its TLS connection from the Gateway (`tls` of the echo JSON):
/// the server name, and the Gateway's client certificate.
fn backend_tls(env: &Env<'_>, case: &HttpCase, reply: &Reply) -> Result<(), String> {
    if case.backend_sni.is_none() && case.backend_client_cert.is_none() {
        return Ok(());
    }
    let echo: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("backend answer is not echo JSON ({e}): {}", reply.text()))?;
    let tls = &echo["tls"];
    if tls.is_null() {
        return Err("the backend was not reached over TLS".into());
    }
    if let Some(want) = &case.backend_sni {
        if tls["serverName"] != want.as_str() {
            return Err(format!(
                "expected the backend to see SNI {want}, got {}",
                tls["serverName"]
            ));
        }
    }
    if let Some(secret) = &case.backend_client_cert {
        let (ns, name) = crate::spec::split_name(secret);
        let want = env
            .cluster
            .certificate_pem(&ns, &name)
            .ok_or_else(|| format!("no generated certificate {ns}/{name}"))?;
        let got = tls["peerCertificates"][0].as_str().unwrap_or_default();
        // PEM line wrapping may differ; the certificate is the same when the text without
        // whitespace is.
        let squash = |pem: &str| pem.split_whitespace().collect::<String>();
        if squash(got) != squash(want) {
            return Err(format!(
                "expected the backend to see client certificate {ns}/{name}, got {:?}",
                tls["peerCertificates"]
            ));
        }
    }
    Ok(())
}

/// `CompareRequest` of conformance/utils/http/http.go.
fn compare(case: &HttpCase, p: &Prepared, reply: &Reply) -> Result<(), String> {
    let got_status = reply.status.as_u16();
    let want_status = match case.statuses.as_slice() {
        [] => case.status.unwrap_or(200),
        allowed if allowed.contains(&got_status) => got_status,
        allowed => {
            return Err(format!(
                "expected status code to be one of {allowed:?}, got {got_status}"
            ))
        }
    };
    if reply.status.as_u16() != want_status {
        return Err(format!(
            "expected status code to be {want_status}, got {}",
            reply.status.as_u16()
        ));
    }
    if want_status == 200 {
        let echo: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("backend answer is not echo JSON ({e}): {}", reply.text()))?;
        let exp = case.expected_request.clone().unwrap_or_default();
        let default_request = case.expected_request.is_none();
        let want_host = if default_request {
            case.host.clone()
        } else {
            exp.host.clone()
        };
        if let Some(h) = want_host.filter(|h| !h.is_empty()) {
            if echo["host"] != h.as_str() {
                return Err(format!("expected host to be {h}, got {}", echo["host"]));
            }
        }
        let want_path = exp.path.clone().unwrap_or_else(|| case.path.clone());
        if echo["path"] != want_path.as_str() {
            return Err(format!(
                "expected path to be {want_path}, got {}",
                echo["path"]
            ));
        }
        let want_method = if default_request {
            p.method.clone()
        } else {
            exp.method.clone().unwrap_or_else(|| "GET".into())
        };
        if echo["method"] != want_method.as_str() {
            return Err(format!(
                "expected method to be {want_method}, got {}",
                echo["method"]
            ));
        }
        // The Go suite compares the namespace even when a case leaves it empty; the few
        // cases that do (timeouts) would fail against any real backend, so only given
        // namespaces are compared.
        if let Some(want_ns) = case
            .namespace
            .as_deref()
            .filter(|ns| echo["namespace"] != *ns)
        {
            return Err(format!(
                "expected namespace to be {want_ns}, got {}",
                echo["namespace"]
            ));
        }
        let want_headers = if default_request {
            (!case.headers.is_empty()).then(|| case.headers.clone())
        } else {
            exp.headers.clone()
        };
        for (name, want) in want_headers.iter().flatten() {
            match header_values(&echo["headers"], name) {
                None => {
                    return Err(format!(
                        "expected {name} header to be set, actual headers: {}",
                        echo["headers"]
                    ))
                }
                Some(got) if got != *want => {
                    return Err(format!(
                        "expected {name} header to be set to {want}, got {got}"
                    ))
                }
                Some(_) => {}
            }
        }
        for (name, want) in &case.response_headers {
            match response_header(reply, name) {
                None => return Err(format!("expected response header {name} to be set")),
                Some(got) if got != *want => {
                    return Err(format!(
                        "expected response header {name} to be {want}, got {got}"
                    ))
                }
                Some(_) => {}
            }
        }
        for name in &case.absent_response_headers {
            if let Some(v) = response_header(reply, name) {
                return Err(format!(
                    "expected response header {name} to not be set, got {v}"
                ));
            }
        }
        for name in &exp.absent_headers {
            if let Some(v) = header_values(&echo["headers"], name) {
                return Err(format!("expected {name} header to not be set, got {v}"));
            }
        }
        let backend = case.backend.clone().unwrap_or_default();
        let pod = echo["pod"].as_str().unwrap_or_default();
        if !pod.starts_with(&backend) {
            return Err(format!(
                "expected pod name to start with {backend}, got {pod}"
            ));
        }
    } else if matches!(want_status, 300..=399) {
        let Some(want) = &case.redirect else {
            return Ok(());
        };
        let location = response_header(reply, "location")
            .ok_or_else(|| "redirect without a Location header".to_string())?;
        let uri: http::Uri = location
            .parse()
            .map_err(|e| format!("Location {location:?} is not a URI: {e}"))?;
        let got_scheme = uri.scheme_str().unwrap_or_default().to_string();
        let got_host = uri.host().unwrap_or_default().to_string();
        let got_port = uri.port_u16().map(|p| p.to_string()).unwrap_or_default();
        let got_path = uri.path().to_string();
        let want_host = want.host.clone().unwrap_or_else(|| got_host.clone());
        if want_host != got_host {
            return Err(format!(
                "expected redirected hostname to be {want_host:?}, got {got_host:?} (Location {location})"
            ));
        }
        match want.port.as_deref() {
            None | Some("") => {
                let s = got_scheme.to_ascii_lowercase();
                if s == "http" && !(got_port == "80" || got_port.is_empty()) {
                    return Err(format!(
                        "for http scheme, expected redirected port to be 80 or not set, got {got_port:?} (Location {location})"
                    ));
                }
                if s == "https" && !(got_port == "443" || got_port.is_empty()) {
                    return Err(format!(
                        "for https scheme, expected redirected port to be 443 or not set, got {got_port:?} (Location {location})"
                    ));
                }
            }
            Some(port) if port != got_port => {
                return Err(format!(
                "expected redirected port to be {port:?}, got {got_port:?} (Location {location})"
            ))
            }
            Some(_) => {}
        }
        let want_scheme = want
            .scheme
            .clone()
            .unwrap_or_else(|| if p.https { "https" } else { "http" }.into());
        if want_scheme != got_scheme {
            return Err(format!(
                "expected redirected scheme to be {want_scheme:?}, got {got_scheme:?} (Location {location})"
            ));
        }
        let want_path = want
            .path
            .clone()
            .unwrap_or_else(|| case.path.split('?').next().unwrap_or_default().to_string());
        if want_path != got_path {
            return Err(format!(
                "expected redirected path to be {want_path:?}, got {got_path:?} (Location {location})"
            ));
        }
    }
    Ok(())
}

/// `testDistribution` of httproute-weight.go: 500 requests, ten at a time; each backend's
/// share within 5 percentage points of its weight, and only the weighted backends answer.
async fn distribution(
    env: &Env<'_>,
    gateway: &str,
    host: Option<&str>,
    path: &str,
    weights: &BTreeMap<String, f64>,
) -> Result<(), String> {
    const TOTAL: usize = 500;
    const TOLERANCE: f64 = 0.05;
    let case = HttpCase {
        gateway: gateway.to_string(),
        host: host.map(str::to_string),
        path: path.to_string(),
        ..HttpCase::default()
    };
    // The suite first waits for the route to answer consistently.
    consistent(env, &case).await?;
    let p = prepare(env, &case).await?;
    let mut last = String::new();
    for _attempt in 0..10 {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut error = None;
        for _batch in 0..TOTAL / 10 {
            let mut batch = Vec::new();
            for _ in 0..10 {
                batch.push(send(env, &p, path, REQUEST_TIMEOUT));
            }
            for reply in join_all(batch.into_iter().map(Box::pin).collect()).await {
                match reply {
                    Ok(r) if r.status == 200 => {
                        let pod = serde_json::from_slice::<Value>(&r.body)
                            .ok()
                            .and_then(|v| v["pod"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        match weights.keys().find(|b| pod.starts_with(b.as_str())) {
                            Some(b) => *seen.entry(b.clone()).or_default() += 1,
                            None => error = Some(format!("unexpected pod {pod:?}")),
                        }
                    }
                    Ok(r) => error = Some(format!("status {}", r.status)),
                    Err(e) => error = Some(e),
                }
            }
        }
        if let Some(e) = error {
            last = e;
            continue;
        }
        let mut errs = Vec::new();
        for (backend, want) in weights {
            let got = *seen.get(backend).unwrap_or(&0) as f64 / TOTAL as f64;
            if (got - want).abs() > TOLERANCE {
                errs.push(format!("{backend}: {got:.3} not within {want}±{TOLERANCE}"));
            }
        }
        if errs.is_empty() {
            return Ok(());
        }
        last = errs.join("; ");
    }
    Err(format!("weighted distribution failed 10 times: {last}"))
}

/// A minimal `join_all`: polls every future on each wake.
async fn join_all<T, F: std::future::Future<Output = T> + Unpin>(mut futs: Vec<F>) -> Vec<T> {
    use std::task::Poll;
    let mut results: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match std::pin::Pin::new(f).poll(cx) {
                Poll::Ready(v) => results[i] = Some(v),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(results.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        Reply {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.to_string().into(),
            alpn: None,
        }
    }

    fn prepared() -> Prepared {
        Prepared {
            addr: "127.0.0.1:1".parse().unwrap(),
            https: false,
            h2c: false,
            server_name: String::new(),
            host: "127.0.0.1".into(),
            method: "GET".into(),
            headers: Vec::new(),
            client_cert: None,
        }
    }

    #[test]
    fn default_host_drops_the_scheme_port() {
        let ip: IpAddr = "127.0.0.10".parse().unwrap();
        assert_eq!(default_host(ip, 80, false), "127.0.0.10");
        assert_eq!(default_host(ip, 443, true), "127.0.0.10");
        assert_eq!(default_host(ip, 8080, false), "127.0.0.10:8080");
    }

    #[test]
    fn backend_prefix_namespace_and_headers_are_compared() {
        let case = HttpCase {
            path: "/".into(),
            backend: Some("infra-backend-v1".into()),
            namespace: Some("ns".into()),
            headers: [("Version".to_string(), "one".to_string())].into(),
            ..HttpCase::default()
        };
        let good = r#"{"path":"/","host":"127.0.0.1","method":"GET","namespace":"ns","pod":"infra-backend-v1-abc-x","headers":{"Version":["one"]}}"#;
        assert_eq!(compare(&case, &prepared(), &reply(200, &[], good)), Ok(()));
        let other_pod = good.replace("infra-backend-v1", "infra-backend-v2");
        assert!(compare(&case, &prepared(), &reply(200, &[], &other_pod)).is_err());
        let no_header = good.replace(r#""Version":["one"]"#, "");
        assert!(compare(&case, &prepared(), &reply(200, &[], &no_header)).is_err());
        assert!(compare(&case, &prepared(), &reply(404, &[], "")).is_err());
    }

    #[test]
    fn redirect_defaults_follow_the_suite() {
        let case = HttpCase {
            path: "/port".into(),
            status: Some(302),
            redirect: Some(crate::spec::Redirect {
                port: Some("8083".into()),
                ..Default::default()
            }),
            ..HttpCase::default()
        };
        let ok = reply(302, &[("location", "http://127.0.0.1:8083/port")], "");
        assert_eq!(compare(&case, &prepared(), &ok), Ok(()));
        let wrong = reply(302, &[("location", "http://127.0.0.1:8080/port")], "");
        assert!(compare(&case, &prepared(), &wrong).is_err());
        // No expected port: http may only redirect to 80 or no port.
        let case = HttpCase {
            redirect: Some(crate::spec::Redirect {
                scheme: Some("http".into()),
                ..Default::default()
            }),
            ..case
        };
        let implicit = reply(302, &[("location", "http://127.0.0.1/port")], "");
        assert_eq!(compare(&case, &prepared(), &implicit), Ok(()));
        assert!(compare(&case, &prepared(), &wrong).is_err());
    }
}
