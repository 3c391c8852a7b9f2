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
mod status;
mod traffic;
mod udp;
mod websocket;

pub use status::classes_list_supported_features;
use status::*;
use traffic::*;

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
        | Step::TcpWeights { .. }
        | Step::TcpSamples { .. }
        | Step::RouteParents { .. }
        | Step::TlsReset { .. } => tls::run_step(env, step).await,
        Step::UdpEcho { .. }
        | Step::UdpSamples { .. }
        | Step::UdpWeights { .. }
        | Step::Dns { .. } => udp::run_step(env, step).await,
        Step::Create { wait_ms, objects } => {
            tokio::time::sleep(Duration::from_millis(*wait_ms)).await;
            let before = env.dir.borrow().store_objects();
            env.dir
                .borrow_mut()
                .create(objects)
                .map_err(|e| format!("{e:#}"))?;
            let want = env.dir.borrow().store_objects();
            // Like the apply of a test's file: the next step reads a status computed with
            // the new objects (the store gauge counts them).
            eventually(STEP_TIMEOUT, || async {
                let got = crate::store_objects(env.weir).await?;
                if got != want {
                    return Err(format!(
                        "Weir's store holds {got} objects, want {want} (was {before})"
                    ));
                }
                Ok(())
            })
            .await
        }
        Step::Delete { kind, name } => {
            let (ns, short) = split_name(name);
            env.dir
                .borrow_mut()
                .delete(kind, &ns, &short)
                .map_err(|e| format!("{e:#}"))?;
            let want = env.dir.borrow().store_objects();
            eventually(STEP_TIMEOUT, || async {
                let got = crate::store_objects(env.weir).await?;
                if got != want {
                    return Err(format!("Weir's store holds {got} objects, want {want}"));
                }
                Ok(())
            })
            .await
        }
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
