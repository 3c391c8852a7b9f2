//! backendRefs to Gateway API Inference Extension InferencePools
//! (`inference.networking.k8s.io/v1`): the pool's endpoints (ready Pods matching
//! `spec.selector`, × `spec.targetPorts`; the backendRef's port is ignored), its protocol
//! (`appProtocol`), and its endpoint picker (`endpointPickerRef`, a Service port); and the
//! pools' `status.parents`: one entry per Gateway whose routes use the pool, `Accepted` and
//! `ResolvedRefs` (reason `InvalidExtensionRef` when the picker does not resolve).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use weir_snapshot::inference::{PICKER_MAX_BODY, PICKER_TIMEOUT};
use weir_snapshot::{AppProtocol, BackendTarget, Endpoint, Picker, PickerState, Upstream};
use weir_store::inference::InferencePool;
use weir_store::{Kind, ObjectKey, Store, GATEWAY_GROUP};

use crate::model::GatewayModel;
use crate::ObjectStatus;

/// The kind a backendRef names for a pool, in [`weir_store::INFERENCE_GROUP`].
pub const KIND: &str = "InferencePool";

/// Whether a Pod serves: it has an IP, is not being deleted, and its Ready condition (when
/// it has one) is True.
fn pod_ready(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// The pool's endpoints: each ready selected Pod's IP on each target port, sorted.
pub fn endpoints(store: &Store, key: &ObjectKey, pool: &InferencePool) -> Vec<Endpoint> {
    let labels = &pool.spec.selector.match_labels;
    let ports: Vec<u16> = pool
        .spec
        .target_ports
        .iter()
        .filter_map(|p| u16::try_from(p.number).ok().filter(|p| *p != 0))
        .collect();
    let mut out = BTreeSet::new();
    // Pods are keyed by namespace first: only the pool's namespace is scanned. An empty
    // selector selects nothing (the CRD requires one; an empty one is not "all Pods").
    if labels.is_empty() {
        return Vec::new();
    }
    let from = ObjectKey::new(key.namespace.clone(), "");
    for (pod_key, pod) in store.pods.range(from..) {
        if pod_key.namespace != key.namespace {
            break;
        }
        let pod_labels = pod.metadata.labels.as_ref();
        let selected = labels
            .iter()
            .all(|(k, v)| pod_labels.and_then(|l| l.get(k)) == Some(v));
        if !selected {
            continue;
        }
        if let Some(ip) = pod_ready(pod) {
            for port in &ports {
                out.insert(SocketAddr::new(ip, *port));
            }
        }
    }
    out.into_iter().map(|addr| Endpoint { addr }).collect()
}

/// The pool's protocol to its model servers.
fn app_protocol(pool: &InferencePool) -> AppProtocol {
    match pool.spec.app_protocol.as_deref() {
        Some("kubernetes.io/h2c") => AppProtocol::H2c,
        _ => AppProtocol::Http1,
    }
}

/// The upstream for a pool. `picker` resolves the picker Service's port (in the pool's
/// namespace) to its upstream, as a Service backendRef would.
pub fn upstream(
    key: &ObjectKey,
    pool: &InferencePool,
    endpoints: Vec<Endpoint>,
    picker: impl FnOnce(&ObjectKey, i32) -> Result<Arc<Upstream>, crate::TranslateError>,
) -> Upstream {
    let state = match &pool.spec.endpoint_picker_ref {
        None => PickerState::None,
        Some(r) => {
            let group = crate::refgrant::core_group(r.group.as_deref().unwrap_or(""));
            let kind = r.kind.as_deref().unwrap_or("Service");
            let epp = ObjectKey::new(key.namespace.clone(), r.name.as_str());
            if !group.is_empty() || kind != "Service" {
                PickerState::Unresolved(
                    format!(
                        "endpointPickerRef {group}/{kind} {} is not a Service",
                        r.name
                    )
                    .into(),
                )
            } else {
                match r.port.as_ref().map(|p| p.number) {
                    None => PickerState::Unresolved(
                        format!("endpointPickerRef to Service {epp} needs a port").into(),
                    ),
                    Some(port) => match picker(&epp, port) {
                        Err(e) => PickerState::Unresolved(format!("endpoint picker: {e}").into()),
                        Ok(u) => PickerState::Ready(Picker {
                            service: u.name.clone(),
                            endpoints: u.endpoints.iter().map(|e| e.addr).collect(),
                            fail_open: r.failure_mode.as_deref() == Some("FailOpen"),
                            timeout: PICKER_TIMEOUT,
                            max_body: PICKER_MAX_BODY,
                        }),
                    },
                }
            }
        }
    };
    Upstream::new(format!("{key}"), app_protocol(pool), endpoints).with_inference(
        weir_snapshot::InferencePool {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            picker: state,
        },
    )
}

/// The InferencePools' statuses: for each pool some route of a Gateway of ours uses, one
/// `status.parents` entry per such Gateway (sorted by Gateway). Pools no route of ours
/// uses get an empty list (so entries written before are removed).
pub fn statuses(
    store: &Store,
    gateways: &[GatewayModel],
    controller_name: &str,
    now: &Time,
) -> Vec<ObjectStatus> {
    if store.inference_pools.is_empty() {
        return Vec::new();
    }
    // Pool → Gateways (with whether its picker resolved), from the placed route entries.
    let mut used: BTreeMap<ObjectKey, BTreeMap<ObjectKey, Option<Arc<str>>>> = BTreeMap::new();
    for g in gateways {
        for l in &g.listeners {
            for (_, entry) in &l.entries {
                for b in entry.action.backends.iter() {
                    let BackendTarget::Upstream(u) = &b.target else {
                        continue;
                    };
                    let Some(pool) = &u.inference else { continue };
                    let why = match &pool.picker {
                        PickerState::Unresolved(why) => Some(why.clone()),
                        PickerState::None | PickerState::Ready(_) => None,
                    };
                    used.entry(ObjectKey::new(pool.namespace.clone(), pool.name.clone()))
                        .or_default()
                        .insert(g.key.clone(), why);
                }
            }
        }
    }
    let time = serde_json::to_value(now).unwrap_or(Value::Null);
    store
        .inference_pools
        .iter()
        .map(|(key, pool)| {
            let generation = pool.metadata.generation;
            let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
                json!({
                    "type": type_,
                    "status": if ok { "True" } else { "False" },
                    "reason": reason,
                    "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": time,
                })
            };
            let parents: Vec<Value> = used
                .get(key)
                .into_iter()
                .flatten()
                .map(|(gateway, why)| {
                    let resolved = match why {
                        None => condition("ResolvedRefs", true, "ResolvedRefs", "references resolved"),
                        Some(why) => condition("ResolvedRefs", false, "InvalidExtensionRef", why),
                    };
                    json!({
                        "parentRef": {
                            "group": GATEWAY_GROUP,
                            "kind": "Gateway",
                            "namespace": gateway.namespace,
                            "name": gateway.name,
                        },
                        "controllerName": controller_name,
                        "conditions": [
                            condition("Accepted", true, "Accepted", "a route of this Gateway uses the pool"),
                            resolved,
                        ],
                    })
                })
                .collect();
            ObjectStatus::new(Kind::InferencePool, &pool.metadata, json!({ "parents": parents }))
        })
        .collect()
}
