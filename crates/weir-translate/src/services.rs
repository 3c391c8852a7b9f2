//! Kubernetes mode, one Service per Gateway (`Addressing::Services`): every Gateway of ours
//! gets a Service in its namespace that selects the (shared) Weir pods and maps each listener
//! port P to a pod port Weir assigns to that Gateway; every replica binds those pod ports.
//!
//! Two halves, both pure:
//! - [`plan_gateway_services`]: the Services the leader should keep (and the ones it should
//!   delete), from the store and the settings. Pod ports are deterministic and stable: a port
//!   recorded on the Gateway's own Service ([`LISTENER_PORTS_ANNOTATION`]) is kept; a new one
//!   is the lowest port of the range recorded on no Weir-managed Service.
//! - [`gateway_binding`]: during translation, which pod port each listener port of a Gateway
//!   is bound at, and the Gateway's status addresses, read from the Service the Gateway owns
//!   (by ownerReference uid, so a same-named user Service is never trusted).
//!
//! GatewayClass parameters (`spec.parametersRef` to a core ConfigMap, namespace required) are
//! read by [`class_params`]: keys `serviceType` (LoadBalancer, NodePort or ClusterIP),
//! `serviceAnnotations` and `serviceLabels` (YAML maps of strings). Anything else is
//! InvalidParameters.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};
use weir_store::{Gateway, GatewayClass, ObjectKey, Store, GATEWAY_GROUP};

use crate::error::TranslateError;
use crate::meta::created;

/// Annotation on a Gateway's Service recording which pod port serves each listener port:
/// `"80:20000,443:20001"` (listener port ascending). Every replica binds what it says.
pub const LISTENER_PORTS_ANNOTATION: &str = "weir.dev/listener-ports";
/// Annotation naming the controller that manages the Service, so that two Weir installations
/// with different controller names never delete each other's Services.
pub const CONTROLLER_ANNOTATION: &str = "weir.dev/controller";
/// Annotation listing the label keys Weir set from the class parameters and the Gateway's
/// spec.infrastructure (comma-separated), so that one dropped there is removed.
pub const MANAGED_LABELS_ANNOTATION: &str = "weir.dev/managed-labels";
/// The same for annotation keys.
pub const MANAGED_ANNOTATIONS_ANNOTATION: &str = "weir.dev/managed-annotations";
/// Label every Gateway Service carries: the Gateway's name (the label the spec suggests).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Label every Gateway Service carries, with value [`MANAGED_BY_VALUE`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "weir";

/// The Service types a GatewayClass may ask for.
const SERVICE_TYPES: &[&str] = &["LoadBalancer", "NodePort", "ClusterIP"];

/// Settings of the Services mode (from the command line in Kubernetes mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddressing {
    /// Pod ports assigned to Gateway listener ports (`--gateway-port-range`).
    pub port_range: RangeInclusive<u16>,
    /// The Weir pods' labels: every Gateway Service's selector (`--gateway-pod-selector`).
    pub pod_selector: BTreeMap<String, String>,
}

/// What a GatewayClass's parameters ConfigMap asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassParams {
    pub service_type: String,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl Default for ClassParams {
    fn default() -> Self {
        Self {
            service_type: "LoadBalancer".to_string(),
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
        }
    }
}

/// A GatewayClass's parameters: the defaults without `parametersRef`, else the referenced
/// ConfigMap's (see the module docs); an unusable reference or value is InvalidParameters.
pub fn class_params(store: &Store, class: &GatewayClass) -> Result<ClassParams, TranslateError> {
    let Some(r) = &class.spec.parameters_ref else {
        return Ok(ClassParams::default());
    };
    let invalid = |why: String| Err(TranslateError::InvalidParameters(why));
    if !r.group.is_empty() || r.kind != "ConfigMap" {
        return invalid(format!(
            "parametersRef {}/{} is not supported; use a core ConfigMap (group \"\", kind ConfigMap)",
            r.group, r.kind
        ));
    }
    let Some(namespace) = r.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return invalid(format!(
            "parametersRef ConfigMap {} needs a namespace",
            r.name
        ));
    };
    let key = ObjectKey::new(namespace, r.name.as_str());
    let Some(cm) = store.config_maps.get(&key) else {
        return invalid(format!("ConfigMap {key} does not exist"));
    };
    let mut params = ClassParams::default();
    let map = |key: &str, text: &str| -> Result<BTreeMap<String, String>, TranslateError> {
        if text.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        serde_norway::from_str::<BTreeMap<String, String>>(text).map_err(|e| {
            TranslateError::InvalidParameters(format!(
                "ConfigMap {}/{}: {key} is not a YAML map of strings: {e}",
                namespace, r.name
            ))
        })
    };
    for (k, v) in cm.data.iter().flatten() {
        match k.as_str() {
            "serviceType" => {
                let t = v.trim();
                if !SERVICE_TYPES.contains(&t) {
                    return invalid(format!(
                        "ConfigMap {key}: serviceType {t:?} is not one of {}",
                        SERVICE_TYPES.join(", ")
                    ));
                }
                params.service_type = t.to_string();
            }
            "serviceAnnotations" => params.annotations = map(k, v)?,
            "serviceLabels" => params.labels = map(k, v)?,
            other => {
                return invalid(format!(
                    "ConfigMap {key}: unknown key {other:?} (known: serviceType, serviceAnnotations, serviceLabels)"
                ))
            }
        }
    }
    Ok(params)
}

/// The Service name of a Gateway: `weir-<gateway>`, a DNS label (dots become dashes). When
/// that is longer than 63 characters or differs from the Gateway name beyond the prefix, it
/// is cut to 54 characters and suffixed with `-` and a hash of the Gateway name, so distinct
/// Gateways never share a name.
pub fn service_name(gateway: &str) -> String {
    let plain = format!("weir-{gateway}");
    let label: String = plain
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    if label == plain && label.len() <= 63 {
        return label;
    }
    let hash = fnv1a(gateway.as_bytes());
    let cut: String = label.chars().take(54).collect();
    format!("{}-{hash:08x}", cut.trim_end_matches('-'))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `"80:20000,443:20001"` → {80: 20000, 443: 20001}; `None` when malformed.
pub fn parse_listener_ports(text: &str) -> Option<BTreeMap<u16, u16>> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (port, pod) = item.split_once(':')?;
        let port: u16 = port.trim().parse().ok()?;
        let pod: u16 = pod.trim().parse().ok()?;
        if port == 0 || pod == 0 {
            return None;
        }
        out.insert(port, pod);
    }
    Some(out)
}

/// {80: 20000, 443: 20001} → `"80:20000,443:20001"`.
pub fn format_listener_ports(ports: &BTreeMap<u16, u16>) -> String {
    ports
        .iter()
        .map(|(p, pod)| format!("{p}:{pod}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Service named for Gateway `key` if the Gateway owns it (an ownerReference of kind
/// Gateway with the Gateway's uid). A same-named Service of someone else is `Err` with it.
fn owned_service<'s>(
    store: &'s Store,
    key: &ObjectKey,
    gateway: &Gateway,
) -> Option<Result<&'s Arc<Service>, &'s Arc<Service>>> {
    let name = service_name(&key.name);
    let svc = store
        .services
        .get(&ObjectKey::new(key.namespace.clone(), name.as_str()))?;
    Some(if owned_by(svc, gateway) {
        Ok(svc)
    } else {
        Err(svc)
    })
}

fn owned_by(svc: &Service, gateway: &Gateway) -> bool {
    let Some(uid) = gateway.metadata.uid.as_deref() else {
        return false;
    };
    svc.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "Gateway"
            && o.api_version.split('/').next() == Some(GATEWAY_GROUP)
            && o.uid == uid
    })
}

/// A Service this controller manages: our labels and controller annotation.
fn managed_by_us(svc: &Service, controller: &str) -> bool {
    let meta = &svc.metadata;
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONTROLLER_ANNOTATION))
            .is_some_and(|v| v == controller)
}

/// The pod ports a Service records (empty when it records none or garbage).
fn recorded(svc: &Service) -> BTreeMap<u16, u16> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LISTENER_PORTS_ANNOTATION))
        .and_then(|t| parse_listener_ports(t))
        .unwrap_or_default()
}

/// The distinct listener ports a Gateway serves: its own listeners' and those of the
/// ListenerSets it admits (they are served on the Gateway's address too).
fn listener_ports(store: &Store, key: &ObjectKey, gateway: &Gateway) -> BTreeSet<u16> {
    let valid = |p: i32| u16::try_from(p).ok().filter(|p| *p > 0);
    let mut ports: BTreeSet<u16> = gateway
        .spec
        .listeners
        .iter()
        .filter_map(|l| valid(l.port))
        .collect();
    for (set_key, set) in &store.listener_sets {
        if crate::listenerset::names_gateway(set_key, set, key)
            && crate::listenerset::admits(store, gateway, &key.namespace, &set_key.namespace)
        {
            ports.extend(set.spec.listeners.iter().filter_map(|l| valid(l.port)));
        }
    }
    ports
}

/// The listener ports of a Gateway (as [`listener_ports`]) that UDP listeners use, and those
/// other listeners (TCP-based) use: the Service gets a UDP port, a TCP port, or both.
fn port_transports(
    store: &Store,
    key: &ObjectKey,
    gateway: &Gateway,
) -> BTreeMap<u16, (bool, bool)> {
    let mut out: BTreeMap<u16, (bool, bool)> = BTreeMap::new();
    let mut add = |port: i32, protocol: &str| {
        if let Some(p) = u16::try_from(port).ok().filter(|p| *p > 0) {
            let e = out.entry(p).or_default();
            if protocol == "UDP" {
                e.1 = true;
            } else {
                e.0 = true;
            }
        }
    };
    for l in &gateway.spec.listeners {
        add(l.port, &l.protocol);
    }
    for (set_key, set) in &store.listener_sets {
        if crate::listenerset::names_gateway(set_key, set, key)
            && crate::listenerset::admits(store, gateway, &key.namespace, &set_key.namespace)
        {
            for l in &set.spec.listeners {
                add(l.port, &l.protocol);
            }
        }
    }
    out
}

/// One Service the leader should keep for a Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredService {
    pub gateway: ObjectKey,
    /// Namespace, name, labels, annotations, ownerReferences and spec as they should be.
    pub service: Service,
}

/// What the leader should make true in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePlan {
    /// One per Gateway of ours, oldest Gateway first.
    pub desired: Vec<DesiredService>,
    /// Services this controller manages whose Gateway is gone or no longer ours.
    pub stale: Vec<ObjectKey>,
    /// Gateways that get no (complete) Service, and why: the name is taken by a Service the
    /// Gateway does not own, or the port range is exhausted.
    pub problems: Vec<(ObjectKey, String)>,
}

/// Plan the Services of every Gateway of ours (see the module docs). Gateways of a class
/// with invalid parameters are left alone: their Services are neither changed nor deleted.
pub fn plan_gateway_services(
    store: &Store,
    controller: &str,
    settings: &ServiceAddressing,
) -> ServicePlan {
    let mut plan = ServicePlan::default();
    // Class name → its parameters (Err: leave its Gateways alone).
    let classes: BTreeMap<&str, Result<ClassParams, TranslateError>> = store
        .gateway_classes
        .iter()
        .filter(|(_, c)| c.spec.controller_name == controller)
        .map(|(k, c)| (&*k.name, class_params(store, c)))
        .collect();
    let mut gateways: Vec<(&ObjectKey, &Arc<Gateway>)> = store
        .gateways
        .iter()
        .filter(|(_, g)| classes.contains_key(g.spec.gateway_class_name.as_str()))
        .collect();
    gateways.sort_by(|a, b| (created(&a.1.metadata), a.0).cmp(&(created(&b.1.metadata), b.0)));

    // Every pod port any Service of ours records is taken, until that Service is gone.
    let ours: Vec<(&ObjectKey, &Arc<Service>)> = store
        .services
        .iter()
        .filter(|(_, s)| managed_by_us(s, controller))
        .collect();
    let mut used: BTreeSet<u16> = ours
        .iter()
        .flat_map(|(_, s)| recorded(s).into_values())
        .collect();
    // Assigned in this plan (older Gateways first): a port recorded twice goes to the older.
    let mut taken: BTreeSet<u16> = BTreeSet::new();
    let mut kept: BTreeSet<ObjectKey> = BTreeSet::new();

    for (key, gateway) in gateways {
        let params = match classes.get(gateway.spec.gateway_class_name.as_str()) {
            Some(Ok(params)) => params,
            _ => {
                if let Some(Ok(svc)) = owned_service(store, key, gateway) {
                    kept.insert(ObjectKey::of(&svc.metadata));
                }
                continue;
            }
        };
        // A Gateway asking for an address type a Service cannot get is not accepted
        // (UnsupportedAddress): it gets no Service (an old one is deleted as stale).
        if unsupported_address(gateway).is_some() {
            continue;
        }
        let existing = match owned_service(store, key, gateway) {
            Some(Err(svc)) => {
                plan.problems.push((
                    key.clone(),
                    format!(
                        "Service {}/{} exists and is not owned by this Gateway; delete or rename it",
                        key.namespace,
                        svc.metadata.name.as_deref().unwrap_or("")
                    ),
                ));
                continue;
            }
            Some(Ok(svc)) => Some(svc),
            None => None,
        };
        let before = existing.map(|s| recorded(s)).unwrap_or_default();
        let mut ports = BTreeMap::new();
        let mut exhausted = Vec::new();
        for port in listener_ports(store, key, gateway) {
            let keep = before
                .get(&port)
                .copied()
                .filter(|pod| settings.port_range.contains(pod) && !taken.contains(pod));
            let pod = keep.or_else(|| {
                settings
                    .port_range
                    .clone()
                    .find(|p| !used.contains(p) && !taken.contains(p))
            });
            match pod {
                Some(pod) => {
                    taken.insert(pod);
                    used.insert(pod);
                    ports.insert(port, pod);
                }
                None => exhausted.push(port),
            }
        }
        if !exhausted.is_empty() {
            plan.problems.push((
                key.clone(),
                format!(
                    "no free pod port in {}-{} for listener ports {exhausted:?}; widen --gateway-port-range",
                    settings.port_range.start(),
                    settings.port_range.end()
                ),
            ));
        }
        let transports = port_transports(store, key, gateway);
        let service = desired_service(
            key,
            gateway,
            params,
            &ports,
            &transports,
            controller,
            settings,
        );
        kept.insert(ObjectKey::of(&service.metadata));
        plan.desired.push(DesiredService {
            gateway: key.clone(),
            service,
        });
    }
    plan.stale = ours
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !kept.contains(*k))
        .cloned()
        .collect();
    plan
}

fn desired_service(
    key: &ObjectKey,
    gateway: &Gateway,
    params: &ClassParams,
    ports: &BTreeMap<u16, u16>,
    // Per listener port: (TCP-based listeners use it, UDP listeners use it).
    transports: &BTreeMap<u16, (bool, bool)>,
    controller: &str,
    settings: &ServiceAddressing,
) -> Service {
    let infra = gateway.spec.infrastructure.as_ref();
    let mut labels = params.labels.clone();
    labels.extend(infra.and_then(|i| i.labels.clone()).unwrap_or_default());
    // A label value holds at most 63 characters; a longer Gateway name (up to 253) is left
    // out rather than cut into something that could name another Gateway.
    if key.name.len() <= 63 {
        labels.insert(GATEWAY_NAME_LABEL.into(), key.name.to_string());
    }
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut annotations = params.annotations.clone();
    annotations.extend(
        infra
            .and_then(|i| i.annotations.clone())
            .unwrap_or_default(),
    );
    let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>().join(",");
    let managed_labels = keys(&labels);
    let managed_annotations = keys(&annotations);
    annotations.insert(MANAGED_LABELS_ANNOTATION.into(), managed_labels);
    annotations.insert(MANAGED_ANNOTATIONS_ANNOTATION.into(), managed_annotations);
    annotations.insert(
        LISTENER_PORTS_ANNOTATION.into(),
        format_listener_ports(ports),
    );
    annotations.insert(CONTROLLER_ANNOTATION.into(), controller.into());
    // The first requested IP is asked of the load balancer; the status reports whether it
    // got it (and any other requested address is AddressNotUsable).
    let load_balancer_ip = gateway
        .spec
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.r#type.as_deref().unwrap_or("IPAddress") == "IPAddress")
        .filter_map(|a| a.value.clone().filter(|v| !v.is_empty()))
        .next()
        .filter(|_| params.service_type == "LoadBalancer");
    Service {
        metadata: ObjectMeta {
            namespace: Some(key.namespace.to_string()),
            name: Some(service_name(&key.name)),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{GATEWAY_GROUP}/v1"),
                kind: "Gateway".into(),
                name: key.name.to_string(),
                uid: gateway.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(params.service_type.clone()),
            selector: Some(settings.pod_selector.clone()),
            load_balancer_ip,
            ports: Some(
                ports
                    .iter()
                    .flat_map(|(port, pod)| {
                        // A port UDP listeners use gets a UDP Service port (named apart: a
                        // TCP and a UDP listener may share the number, one pod port each way).
                        let (tcp, udp) = transports.get(port).copied().unwrap_or((true, false));
                        let service_port = move |protocol: &str, name: String| ServicePort {
                            name: Some(name),
                            port: i32::from(*port),
                            target_port: Some(IntOrString::Int(i32::from(*pod))),
                            protocol: Some(protocol.into()),
                            ..ServicePort::default()
                        };
                        let tcp = tcp.then(|| service_port("TCP", format!("port-{port}")));
                        let udp = udp.then(|| service_port("UDP", format!("port-{port}-udp")));
                        tcp.into_iter().chain(udp)
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The merge patch (RFC 7396) that makes `existing` what `desired` asks for, or `None` when
/// it already is. Only what Weir owns is compared and written: its labels and annotations
/// (others' keys stay), the Gateway's ownerReference (others stay), the type, the selector,
/// the ports (a port keeps the nodePort the API server gave it) and loadBalancerIP.
pub fn service_patch(existing: &Service, desired: &Service) -> Option<Value> {
    let mut meta = Map::new();
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>|
     -> Option<Value> {
        let want = want.as_ref()?;
        let missing: Map<String, Value> = want
            .iter()
            .filter(|(k, v)| have.as_ref().and_then(|h| h.get(*k)) != Some(*v))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        (!missing.is_empty()).then_some(Value::Object(missing))
    };
    let (d, e) = (&desired.metadata, &existing.metadata);
    // Keys Weir set before (recorded on the Service) that it no longer sets: removed.
    let dropped = |list: &str,
                   want: &Option<BTreeMap<String, String>>,
                   have: &Option<BTreeMap<String, String>>|
     -> Map<String, Value> {
        let recorded = e
            .annotations
            .as_ref()
            .and_then(|a| a.get(list))
            .map(String::as_str)
            .unwrap_or("");
        recorded
            .split(',')
            .filter(|k| !k.is_empty())
            .filter(|k| want.as_ref().is_none_or(|w| !w.contains_key(*k)))
            .filter(|k| have.as_ref().is_some_and(|h| h.contains_key(*k)))
            .map(|k| (k.to_string(), Value::Null))
            .collect()
    };
    for (field, list, want, have) in [
        ("labels", MANAGED_LABELS_ANNOTATION, &d.labels, &e.labels),
        (
            "annotations",
            MANAGED_ANNOTATIONS_ANNOTATION,
            &d.annotations,
            &e.annotations,
        ),
    ] {
        let mut changes = dropped(list, want, have);
        if let Some(Value::Object(set)) = subset(want, have) {
            changes.extend(set);
        }
        if !changes.is_empty() {
            meta.insert(field.into(), Value::Object(changes));
        }
    }
    let ours = d.owner_references.iter().flatten().next();
    if let Some(ours) = ours {
        let have =
            e.owner_references.iter().flatten().any(|o| {
                o.uid == ours.uid && o.kind == ours.kind && o.controller == ours.controller
            });
        if !have {
            let mut refs: Vec<OwnerReference> = e
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.uid != ours.uid)
                .cloned()
                .collect();
            refs.push(ours.clone());
            meta.insert("ownerReferences".into(), json!(refs));
        }
    }

    let mut spec = Map::new();
    let empty = ServiceSpec::default();
    let ds = desired.spec.as_ref().unwrap_or(&empty);
    let es = existing.spec.as_ref().unwrap_or(&empty);
    if ds.type_.is_some() && ds.type_ != es.type_ {
        spec.insert("type".into(), json!(ds.type_));
    }
    let want_selector = ds.selector.clone().unwrap_or_default();
    let have_selector = es.selector.clone().unwrap_or_default();
    if want_selector != have_selector {
        let mut sel: Map<String, Value> = have_selector
            .keys()
            .filter(|k| !want_selector.contains_key(*k))
            .map(|k| (k.clone(), Value::Null))
            .collect();
        sel.extend(want_selector.iter().map(|(k, v)| (k.clone(), json!(v))));
        spec.insert("selector".into(), Value::Object(sel));
    }
    let shape = |p: &ServicePort| {
        (
            p.port,
            p.target_port.clone(),
            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            p.name.clone(),
        )
    };
    let want_ports: Vec<_> = ds.ports.iter().flatten().map(shape).collect();
    let have_ports: Vec<_> = es.ports.iter().flatten().map(shape).collect();
    if want_ports != have_ports {
        let ports: Vec<ServicePort> = ds
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let node_port = es
                    .ports
                    .iter()
                    .flatten()
                    .find(|h| h.port == p.port)
                    .and_then(|h| h.node_port)
                    .filter(|_| ds.type_.as_deref() != Some("ClusterIP"));
                ServicePort {
                    node_port,
                    ..p.clone()
                }
            })
            .collect();
        spec.insert("ports".into(), json!(ports));
    }
    if ds.load_balancer_ip != es.load_balancer_ip {
        spec.insert("loadBalancerIP".into(), json!(ds.load_balancer_ip));
    }

    if meta.is_empty() && spec.is_empty() {
        return None;
    }
    let mut patch = Map::new();
    if !meta.is_empty() {
        patch.insert("metadata".into(), Value::Object(meta));
    }
    if !spec.is_empty() {
        patch.insert("spec".into(), Value::Object(spec));
    }
    Some(Value::Object(patch))
}

/// The writes that make the cluster match a plan, given the Services in `store`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceChanges {
    pub create: Vec<Service>,
    /// Merge patches (see [`service_patch`]) by Service key.
    pub patch: Vec<(ObjectKey, Value)>,
    pub delete: Vec<ObjectKey>,
}

impl ServiceChanges {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.patch.is_empty() && self.delete.is_empty()
    }
}

/// What to create, patch and delete so that the cluster's Services match `plan`.
pub fn service_changes(store: &Store, plan: &ServicePlan) -> ServiceChanges {
    let mut out = ServiceChanges {
        delete: plan.stale.clone(),
        ..ServiceChanges::default()
    };
    for d in &plan.desired {
        match store.services.get(&ObjectKey::of(&d.service.metadata)) {
            None => out.create.push(d.service.clone()),
            Some(existing) => {
                if let Some(patch) = service_patch(existing, &d.service) {
                    out.patch.push((ObjectKey::of(&d.service.metadata), patch));
                }
            }
        }
    }
    out
}

/// Where a Gateway's listeners are bound in Services mode, and what its status says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Binding {
    /// Listener port → pod port, from the Gateway's own Service (only entries its spec.ports
    /// also map that way, and pod ports no older Gateway holds).
    pub pod_ports: BTreeMap<u16, u16>,
    /// status.addresses as (type, value).
    pub status: Vec<(String, String)>,
    /// Why the Gateway is not Programmed: Pending (no Service, or a listener port without
    /// a pod port yet), AddressNotAssigned (no address yet), AddressNotUsable (a requested
    /// address the Service did not get), UnsupportedAddress (a type other than IPAddress).
    pub error: Option<TranslateError>,
}

/// Read Gateway `key`'s binding from the Service it owns. `claimed` holds the pod ports of
/// older Gateways (this one's are added): a pod port recorded twice serves only the older.
pub fn gateway_binding(
    store: &Store,
    key: &ObjectKey,
    gateway: &Gateway,
    own_ports: &BTreeSet<u16>,
    claimed: &mut BTreeSet<u16>,
) -> Binding {
    let mut out = Binding::default();
    if let Some(kind) = unsupported_address(gateway) {
        out.error = Some(TranslateError::UnsupportedServiceAddress(kind.to_string()));
        return out;
    }
    let name = service_name(&key.name);
    let svc = match owned_service(store, key, gateway) {
        Some(Ok(svc)) => svc,
        Some(Err(_)) => {
            out.error = Some(TranslateError::ServicePending(format!(
                "Service {}/{name} exists and is not owned by this Gateway; delete or rename it",
                key.namespace
            )));
            return out;
        }
        None => {
            out.error = Some(TranslateError::ServicePending(format!(
                "waiting for Service {}/{name} to be created",
                key.namespace
            )));
            return out;
        }
    };
    let spec_ports: BTreeMap<i32, Option<&IntOrString>> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| (p.port, p.target_port.as_ref()))
        .collect();
    for (port, pod) in recorded(svc) {
        let mapped = spec_ports.get(&i32::from(port)).copied().flatten()
            == Some(&IntOrString::Int(i32::from(pod)));
        if mapped && !claimed.contains(&pod) && !out.pod_ports.values().any(|p| *p == pod) {
            out.pod_ports.insert(port, pod);
        }
    }
    claimed.extend(out.pod_ports.values().copied());
    let missing: Vec<u16> = own_ports
        .iter()
        .filter(|p| !out.pod_ports.contains_key(p))
        .copied()
        .collect();
    out.status = service_addresses(svc);
    if !missing.is_empty() {
        out.error = Some(TranslateError::ServicePending(format!(
            "Service {}/{name} has no pod port for listener ports {missing:?} yet",
            key.namespace
        )));
        return out;
    }
    if out.status.is_empty() {
        out.error = Some(TranslateError::AddressNotAssigned(format!(
            "Service {}/{name} has no address yet (a LoadBalancer Service waits for its load balancer's ingress)",
            key.namespace
        )));
        return out;
    }
    for value in gateway
        .spec
        .addresses
        .iter()
        .flatten()
        .filter_map(|a| a.value.as_deref().filter(|v| !v.is_empty()))
    {
        if !out.status.iter().any(|(_, v)| v == value) {
            out.error = Some(TranslateError::AddressNotInService {
                address: value.to_string(),
                service: format!("{}/{name}", key.namespace),
            });
            break;
        }
    }
    out
}

/// The first requested address type other than IPAddress (the only one a Service's
/// loadBalancerIP can ask for).
fn unsupported_address(gateway: &Gateway) -> Option<&str> {
    gateway
        .spec
        .addresses
        .iter()
        .flatten()
        .map(|a| a.r#type.as_deref().unwrap_or("IPAddress"))
        .find(|&kind| kind != "IPAddress")
}

/// A Service's addresses: its load balancer ingress (IP → IPAddress, hostname → Hostname)
/// for type LoadBalancer; its cluster IPs for ClusterIP and NodePort.
fn service_addresses(svc: &Service) -> Vec<(String, String)> {
    let spec = svc.spec.as_ref();
    let ty = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
    let mut out: Vec<(String, String)> = Vec::new();
    if ty == "LoadBalancer" {
        for ingress in svc
            .status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
        {
            if let Some(ip) = ingress.ip.as_ref().filter(|v| !v.is_empty()) {
                out.push(("IPAddress".into(), ip.clone()));
            } else if let Some(host) = ingress.hostname.as_ref().filter(|v| !v.is_empty()) {
                out.push(("Hostname".into(), host.clone()));
            }
        }
    } else {
        let ips = spec
            .and_then(|s| s.cluster_ips.clone())
            .filter(|ips| !ips.is_empty())
            .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
            .unwrap_or_default();
        out.extend(
            ips.into_iter()
                .filter(|ip| !ip.is_empty() && ip != "None")
                .map(|ip| ("IPAddress".to_string(), ip)),
        );
    }
    let mut seen = BTreeSet::new();
    out.retain(|a| seen.insert(a.clone()));
    out
}

#[cfg(test)]
mod tests;
