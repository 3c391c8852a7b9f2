//! The Service planner: names, labels, ports and their stability, class parameters, and
//! reading a Gateway's binding back from its Service.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weir_store::{Object, ObjectKey, Service, Store};

use super::*;
use crate::tests::{store_with_class, CONTROLLER};

fn settings(range: RangeInclusive<u16>) -> ServiceAddressing {
    ServiceAddressing {
        port_range: range,
        pod_selector: BTreeMap::from([("app.kubernetes.io/name".into(), "weir".into())]),
    }
}

fn gateway(name: &str, uid: &str, created: &str, ports: &[u16]) -> String {
    let listeners: Vec<String> = ports
        .iter()
        .map(|p| format!("  - {{name: l{p}, port: {p}, protocol: HTTP}}"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: ns, uid: {uid}, creationTimestamp: \"{created}\"}}
spec:
  gatewayClassName: weir
  listeners:
{}
---
",
        listeners.join("\n")
    )
}

/// What an API server would store for the plan: the desired Services (with a uid), minus the
/// stale ones.
fn apply(store: &mut Store, plan: &ServicePlan) {
    for key in &plan.stale {
        store.delete(weir_store::Kind::Service, key);
    }
    for d in &plan.desired {
        let mut svc = d.service.clone();
        svc.metadata.uid = Some(format!("svc-{}", d.gateway.name));
        store.apply(Object::Service(Arc::new(svc)));
    }
}

fn ports_of(plan: &ServicePlan, gateway: &str) -> BTreeMap<u16, u16> {
    plan.desired
        .iter()
        .find(|d| &*d.gateway.name == gateway)
        .map(|d| recorded(&d.service))
        .unwrap_or_default()
}

#[test]
fn names_are_dns_labels_and_long_ones_get_a_hash() {
    assert_eq!(service_name("web"), "weir-web");
    let dotted = service_name("a.b");
    assert!(dotted.starts_with("weir-a-b-"), "{dotted}");
    assert_ne!(dotted, service_name("a-b"));
    let long = "x".repeat(80);
    let n = service_name(&long);
    // The gateway-name label is left out (label values hold 63 characters at most).
    let store = store_with_class(&gateway(&long, "uid-l", "2025-01-01T00:00:00Z", &[80]));
    let plan = plan_gateway_services(&store, CONTROLLER, &settings(20000..=20001));
    let meta = &plan.desired[0].service.metadata;
    assert_eq!(meta.name.as_deref(), Some(n.as_str()));
    assert!(!meta
        .labels
        .as_ref()
        .unwrap()
        .contains_key(GATEWAY_NAME_LABEL));
    assert!(n.len() <= 63, "{n}");
    assert_ne!(n, service_name(&"x".repeat(81)));
    assert_eq!(n, service_name(&long));
}

#[test]
fn listener_ports_round_trip_and_reject_garbage() {
    let m = BTreeMap::from([(80, 20000), (443, 20001)]);
    assert_eq!(format_listener_ports(&m), "80:20000,443:20001");
    assert_eq!(parse_listener_ports("80:20000, 443:20001"), Some(m));
    assert_eq!(parse_listener_ports(""), Some(BTreeMap::new()));
    assert_eq!(parse_listener_ports("80"), None);
    assert_eq!(parse_listener_ports("80:x"), None);
    assert_eq!(parse_listener_ports("0:20000"), None);
}

#[test]
fn plan_gives_each_gateway_a_service_with_its_own_pod_ports() {
    let mut yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80, 443]);
    yaml += &gateway("b", "uid-b", "2025-01-01T00:00:01Z", &[80]);
    yaml += "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: ns, uid: uid-o}
spec:
  gatewayClassName: not-ours
  listeners: [{name: h, port: 80, protocol: HTTP}]
";
    let mut store = store_with_class(&yaml);
    // Infrastructure labels and annotations go onto the Service.
    let key = ObjectKey::new("ns", "b");
    let mut b = (*store.gateways[&key]).clone();
    b.spec.infrastructure = Some(weir_store::gw::gateways::GatewayInfrastructure {
        labels: Some(BTreeMap::from([("team".into(), "blue".into())])),
        annotations: Some(BTreeMap::from([("note".into(), "hi".into())])),
        parameters_ref: None,
    });
    store.apply(Object::Gateway(Arc::new(b)));

    let plan = plan_gateway_services(&store, CONTROLLER, &settings(20000..=20010));
    assert_eq!(plan.desired.len(), 2);
    assert!(plan.stale.is_empty() && plan.problems.is_empty());
    assert_eq!(
        ports_of(&plan, "a"),
        BTreeMap::from([(80, 20000), (443, 20001)])
    );
    assert_eq!(ports_of(&plan, "b"), BTreeMap::from([(80, 20002)]));

    let svc = &plan.desired[1].service;
    let meta = &svc.metadata;
    assert_eq!(meta.name.as_deref(), Some("weir-b"));
    assert_eq!(meta.namespace.as_deref(), Some("ns"));
    let labels = meta.labels.clone().unwrap();
    assert_eq!(labels[GATEWAY_NAME_LABEL], "b");
    assert_eq!(labels[MANAGED_BY_LABEL], "weir");
    assert_eq!(labels["team"], "blue");
    let annotations = meta.annotations.clone().unwrap();
    assert_eq!(annotations["note"], "hi");
    assert_eq!(annotations[LISTENER_PORTS_ANNOTATION], "80:20002");
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Gateway", "b", "uid-b")
    );
    assert_eq!(owner.controller, Some(true));
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        spec.selector.as_ref().unwrap()["app.kubernetes.io/name"],
        "weir"
    );
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 80);
    assert_eq!(port.target_port, Some(IntOrString::Int(20002)));
}

#[test]
fn assignments_are_stable_across_restarts_and_new_gateways() {
    let yaml = gateway("b", "uid-b", "2025-01-01T00:00:05Z", &[80, 8080]);
    let mut store = store_with_class(&yaml);
    let s = settings(20000..=20010);
    let first = plan_gateway_services(&store, CONTROLLER, &s);
    apply(&mut store, &first);
    // A restart: the same store plans the same Services, and nothing needs patching.
    let again = plan_gateway_services(&store, CONTROLLER, &s);
    assert_eq!(first, again);
    for d in &again.desired {
        let existing = &store.services[&ObjectKey::of(&d.service.metadata)];
        assert_eq!(service_patch(existing, &d.service), None);
    }
    // An OLDER Gateway appears: it takes free ports, never b's.
    let older = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]);
    for o in crate::tests::load(&older).gateways.into_values() {
        store.apply(Object::Gateway(o));
    }
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    assert_eq!(ports_of(&plan, "b"), ports_of(&first, "b"));
    assert_eq!(ports_of(&plan, "a"), BTreeMap::from([(80, 20002)]));
    apply(&mut store, &plan);
    // b drops a listener, then gets a new one: 80 keeps its port; the freed one is not
    // reused while b's Service still records it, the new listener takes the lowest free.
    let key = ObjectKey::new("ns", "b");
    let mut b = (*store.gateways[&key]).clone();
    b.spec.listeners.retain(|l| l.port == 80);
    let mut extra = b.spec.listeners[0].clone();
    extra.name = "l9090".into();
    extra.port = 9090;
    b.spec.listeners.push(extra);
    store.apply(Object::Gateway(Arc::new(b)));
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    assert_eq!(ports_of(&plan, "b")[&80], ports_of(&first, "b")[&80]);
    assert_eq!(ports_of(&plan, "b")[&9090], 20003);
    assert_eq!(ports_of(&plan, "a"), BTreeMap::from([(80, 20002)]));
}

#[test]
fn deleted_gateways_services_are_stale_and_foreign_services_are_never_trusted() {
    let mut yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]);
    yaml += &gateway("b", "uid-b", "2025-01-01T00:00:01Z", &[80]);
    let mut store = store_with_class(&yaml);
    let s = settings(20000..=20010);
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    apply(&mut store, &plan);
    store.delete(weir_store::Kind::Gateway, &ObjectKey::new("ns", "a"));
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    assert_eq!(plan.stale, vec![ObjectKey::new("ns", "weir-a")]);
    assert_eq!(plan.desired.len(), 1);

    // A user's Service named like a Gateway's: not ours to change, and never bound.
    let user = crate::tests::load(
        "apiVersion: v1
kind: Service
metadata:
  name: weir-c
  namespace: ns
  annotations: {weir.dev/listener-ports: \"80:20009\"}
spec:
  ports: [{port: 80, targetPort: 20009}]
",
    );
    for svc in user.services.into_values() {
        store.apply(Object::Service(svc));
    }
    for g in crate::tests::load(&gateway("c", "uid-c", "2025-01-01T00:00:02Z", &[80]))
        .gateways
        .into_values()
    {
        store.apply(Object::Gateway(g));
    }
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    assert!(plan.desired.iter().all(|d| &*d.gateway.name != "c"));
    assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
    assert!(!plan.stale.contains(&ObjectKey::new("ns", "weir-c")));
    let c = store.gateways[&ObjectKey::new("ns", "c")].clone();
    let binding = gateway_binding(
        &store,
        &ObjectKey::new("ns", "c"),
        &c,
        &BTreeSet::from([80]),
        &mut BTreeSet::new(),
    );
    assert!(binding.pod_ports.is_empty());
    assert_eq!(binding.error.map(|e| e.reason()), Some("Pending"));
}

#[test]
fn range_exhaustion_is_a_problem_not_a_panic() {
    let mut yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80, 81]);
    yaml += &gateway("b", "uid-b", "2025-01-01T00:00:01Z", &[80]);
    let store = store_with_class(&yaml);
    let plan = plan_gateway_services(&store, CONTROLLER, &settings(20000..=20001));
    assert_eq!(ports_of(&plan, "a").len(), 2);
    assert!(ports_of(&plan, "b").is_empty());
    assert_eq!(plan.problems.len(), 1);
    assert_eq!(&*plan.problems[0].0.name, "b");
}

#[test]
fn class_parameters_from_a_configmap() {
    let yaml = "apiVersion: v1
kind: ConfigMap
metadata: {name: params, namespace: weir}
data:
  serviceType: NodePort
  serviceAnnotations: |
    cloud.example/lb: internal
  serviceLabels: |
    tier: edge
";
    let mut store = store_with_class(yaml);
    let class_key = ObjectKey::cluster("weir");
    let mut class = (*store.gateway_classes[&class_key]).clone();
    class.spec.parameters_ref = Some(weir_store::gw::gatewayclasses::GatewayClassParametersRef {
        group: String::new(),
        kind: "ConfigMap".into(),
        name: "params".into(),
        namespace: Some("weir".into()),
    });
    store.apply(Object::GatewayClass(Arc::new(class.clone())));
    let params = class_params(&store, &class).unwrap();
    assert_eq!(params.service_type, "NodePort");
    assert_eq!(params.annotations["cloud.example/lb"], "internal");
    assert_eq!(params.labels["tier"], "edge");

    for g in crate::tests::load(&gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]))
        .gateways
        .into_values()
    {
        store.apply(Object::Gateway(g));
    }
    let plan = plan_gateway_services(&store, CONTROLLER, &settings(20000..=20010));
    let svc = &plan.desired[0].service;
    assert_eq!(
        svc.spec.as_ref().unwrap().type_.as_deref(),
        Some("NodePort")
    );
    assert_eq!(svc.metadata.labels.as_ref().unwrap()["tier"], "edge");

    // Invalid parameters: InvalidParameters, and the class's Gateways' Services are left
    // alone (neither planned nor stale).
    apply(&mut store, &plan);
    for bad in [
        "serviceType: Headless",
        "serviceAnnotations: \"[not, a, map]\"",
        "typo: 1",
    ] {
        let mut cm = (*store.config_maps[&ObjectKey::new("weir", "params")]).clone();
        let (k, v) = bad.split_once(": ").unwrap();
        cm.data = Some(BTreeMap::from([(
            k.to_string(),
            v.trim_matches('"').to_string(),
        )]));
        let mut s2 = store.clone();
        s2.apply(Object::ConfigMap(Arc::new(cm)));
        let err = class_params(&s2, &class).unwrap_err();
        assert_eq!(err.reason(), "InvalidParameters", "{bad}");
        let plan = plan_gateway_services(&s2, CONTROLLER, &settings(20000..=20010));
        assert!(plan.desired.is_empty() && plan.stale.is_empty(), "{bad}");
    }
    class.spec.parameters_ref.as_mut().unwrap().namespace = None;
    assert!(class_params(&store, &class).is_err());
}

#[test]
fn binding_reads_ports_and_addresses_from_the_owned_service() {
    let yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]);
    let mut store = store_with_class(&yaml);
    let key = ObjectKey::new("ns", "a");
    let gw = store.gateways[&key].clone();
    let none = gateway_binding(
        &store,
        &key,
        &gw,
        &BTreeSet::from([80]),
        &mut BTreeSet::new(),
    );
    assert_eq!(none.error.map(|e| e.reason()), Some("Pending"));

    let plan = plan_gateway_services(&store, CONTROLLER, &settings(20000..=20010));
    apply(&mut store, &plan);
    let b = gateway_binding(
        &store,
        &key,
        &gw,
        &BTreeSet::from([80]),
        &mut BTreeSet::new(),
    );
    assert_eq!(b.pod_ports, BTreeMap::from([(80, 20000)]));
    assert_eq!(b.error.map(|e| e.reason()), Some("AddressNotAssigned"));
    assert!(b.status.is_empty());

    // The load balancer's ingress becomes the address; another Gateway holding the pod port
    // first keeps it.
    let skey = ObjectKey::new("ns", "weir-a");
    let mut svc: Service = (*store.services[&skey]).clone();
    svc.status = Some(
        serde_json::from_value(serde_json::json!({
            "loadBalancer": {"ingress": [{"ip": "10.0.0.7"}, {"hostname": "lb.example"}]}
        }))
        .unwrap(),
    );
    store.apply(Object::Service(Arc::new(svc.clone())));
    let b = gateway_binding(
        &store,
        &key,
        &gw,
        &BTreeSet::from([80]),
        &mut BTreeSet::new(),
    );
    assert_eq!(b.error, None);
    assert_eq!(
        b.status,
        vec![
            ("IPAddress".to_string(), "10.0.0.7".to_string()),
            ("Hostname".to_string(), "lb.example".to_string())
        ]
    );
    let b = gateway_binding(
        &store,
        &key,
        &gw,
        &BTreeSet::from([80]),
        &mut BTreeSet::from([20000]),
    );
    assert!(b.pod_ports.is_empty());
    assert_eq!(b.error.map(|e| e.reason()), Some("Pending"));

    // A requested address the load balancer did not give: AddressNotUsable; a name type:
    // UnsupportedAddress.
    let mut g2 = (*gw).clone();
    g2.spec.addresses = Some(vec![serde_json::from_value(
        serde_json::json!({"type": "IPAddress", "value": "10.0.0.9"}),
    )
    .unwrap()]);
    let b = gateway_binding(
        &store,
        &key,
        &g2,
        &BTreeSet::from([80]),
        &mut BTreeSet::new(),
    );
    assert_eq!(b.error.map(|e| e.reason()), Some("AddressNotUsable"));
    g2.spec.addresses = Some(vec![serde_json::from_value(
        serde_json::json!({"type": "Hostname", "value": "x.example"}),
    )
    .unwrap()]);
    let b = gateway_binding(
        &store,
        &key,
        &g2,
        &BTreeSet::from([80]),
        &mut BTreeSet::new(),
    );
    assert_eq!(b.error.map(|e| e.reason()), Some("UnsupportedAddress"));
    // Not accepted, so no Service: its old one is stale.
    let mut s2 = store.clone();
    s2.apply(Object::Gateway(Arc::new(g2.clone())));
    let plan = plan_gateway_services(&s2, CONTROLLER, &settings(20000..=20010));
    assert!(plan.desired.is_empty());
    assert_eq!(plan.stale, vec![ObjectKey::new("ns", "weir-a")]);

    // ClusterIP Services report their cluster IPs.
    svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    svc.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.5".into()]);
    store.apply(Object::Service(Arc::new(svc)));
    let b = gateway_binding(
        &store,
        &key,
        &gw,
        &BTreeSet::from([80]),
        &mut BTreeSet::new(),
    );
    assert_eq!(
        b.status,
        vec![("IPAddress".to_string(), "10.96.0.5".to_string())]
    );
}

#[test]
fn patch_touches_only_what_weir_owns() {
    let yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]);
    let mut store = store_with_class(&yaml);
    let s = settings(20000..=20010);
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    apply(&mut store, &plan);
    let skey = ObjectKey::new("ns", "weir-a");
    let mut svc: Service = (*store.services[&skey]).clone();
    // Another controller's label and a nodePort the API server gave: no patch.
    svc.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("other".into(), "x".into());
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(31000);
    assert_eq!(service_patch(&svc, &plan.desired[0].service), None);
    // A changed type and a lost selector key: patched, the nodePort kept.
    svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    svc.spec.as_mut().unwrap().selector = Some(BTreeMap::from([("x".into(), "y".into())]));
    let mut desired = plan.desired[0].service.clone();
    desired.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port =
        Some(IntOrString::Int(20005));
    let patch = service_patch(&svc, &desired).unwrap();
    assert_eq!(patch["spec"]["type"], "LoadBalancer");
    assert_eq!(patch["spec"]["selector"]["x"], serde_json::Value::Null);
    assert_eq!(patch["spec"]["selector"]["app.kubernetes.io/name"], "weir");
    assert_eq!(patch["spec"]["ports"][0]["nodePort"], 31000);
    assert_eq!(patch["spec"]["ports"][0]["targetPort"], 20005);
    assert!(patch.get("metadata").is_none());
}

#[test]
fn changes_create_then_nothing_then_delete() {
    let mut store = store_with_class(&gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]));
    let s = settings(20000..=20010);
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    let c = service_changes(&store, &plan);
    assert_eq!((c.create.len(), c.patch.len(), c.delete.len()), (1, 0, 0));
    apply(&mut store, &plan);
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    assert!(service_changes(&store, &plan).is_empty());
    store.delete(weir_store::Kind::Gateway, &ObjectKey::new("ns", "a"));
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    let c = service_changes(&store, &plan);
    assert_eq!(c.delete, vec![ObjectKey::new("ns", "weir-a")]);
}

/// The case in Services mode: two Gateways with a catch-all listener on port 80, a
/// route each; once the leader's Services exist, each Gateway has its own socket (its pod
/// port) and its own route, and its addresses are its Service's.
#[test]
fn translation_binds_each_gateway_at_its_own_pod_ports() {
    let route = |name: &str, gw: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: ns}}
spec:
  parentRefs: [{{name: {gw}}}]
  rules:
  - backendRefs: [{{name: echo, port: 80}}]
---
"
        )
    };
    let mut yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]);
    yaml += &gateway("b", "uid-b", "2025-01-01T00:00:01Z", &[80]);
    yaml += &route("ra", "a");
    yaml += &route("rb", "b");
    yaml += "apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ns}
spec:
  ports: [{port: 80, targetPort: 8080}]
";
    let mut store = store_with_class(&yaml);
    let s = settings(20000..=20010);
    let addressing = crate::Addressing::Services(s.clone());
    let run =
        |store: &Store| crate::tests::run_addressing(store, crate::Memo::default(), &addressing);

    // Before the leader wrote the Services: nothing bound, Programmed=False Pending.
    let out = run(&store);
    assert!(out.snapshot.sockets.is_empty());
    let a = crate::tests::status(&out, weir_store::Kind::Gateway, "ns", "a");
    assert_eq!(
        crate::tests::cond(a, "", "Programmed"),
        crate::tests::is("False", "Pending")
    );

    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    apply(&mut store, &plan);
    let out = run(&store);
    let keys: Vec<_> = out.snapshot.sockets.iter().map(|s| s.key()).collect();
    assert_eq!(keys, vec![(None, 20000), (None, 20001)]);
    for (pod, gw, route) in [(20000, "ns/a", "ns/ra"), (20001, "ns/b", "ns/rb")] {
        let socket = out.snapshot.socket(None, pod).unwrap();
        assert_eq!((socket.port, socket.bind_port), (80, Some(pod)));
        assert_eq!(socket.listeners.len(), 1);
        assert_eq!(&*socket.listeners[0].gateway, gw);
        let hit = crate::tests::route_on(socket, &crate::tests::get("any.example", "/"))
            .map(|e| e.action.route.route.to_string());
        assert_eq!(hit.as_deref(), Some(route));
    }
    // No load balancer address yet: AddressNotAssigned, listeners programmed, no conflict.
    let b = crate::tests::status(&out, weir_store::Kind::Gateway, "ns", "b");
    assert_eq!(
        crate::tests::cond(b, "", "Programmed"),
        crate::tests::is("False", "AddressNotAssigned")
    );
    assert_eq!(
        crate::tests::cond(b, "listener l80", "Conflicted"),
        crate::tests::is("False", "NoConflicts")
    );

    // The load balancer answers: b's address is its own.
    let skey = ObjectKey::new("ns", "weir-b");
    let mut svc: Service = (*store.services[&skey]).clone();
    svc.status = Some(
        serde_json::from_value(
            serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.2"}]}}),
        )
        .unwrap(),
    );
    store.apply(Object::Service(Arc::new(svc)));
    let out = run(&store);
    let b = crate::tests::status(&out, weir_store::Kind::Gateway, "ns", "b");
    assert_eq!(
        crate::tests::cond(b, "", "Programmed"),
        crate::tests::is("True", "Programmed")
    );
    assert_eq!(
        b.status["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": "203.0.113.2"}])
    );
}

#[test]
fn invalid_class_parameters_are_reported_on_the_class_in_services_mode() {
    let mut store = store_with_class("");
    let key = ObjectKey::cluster("weir");
    let mut class = (*store.gateway_classes[&key]).clone();
    class.spec.parameters_ref = Some(weir_store::gw::gatewayclasses::GatewayClassParametersRef {
        group: String::new(),
        kind: "ConfigMap".into(),
        name: "missing".into(),
        namespace: Some("weir".into()),
    });
    store.apply(Object::GatewayClass(Arc::new(class)));
    let addressing = crate::Addressing::Services(settings(20000..=20010));
    let out = crate::tests::run_addressing(&store, crate::Memo::default(), &addressing);
    let c = crate::tests::status(&out, weir_store::Kind::GatewayClass, "", "weir");
    assert_eq!(
        crate::tests::cond(c, "", "Accepted"),
        crate::tests::is("False", "InvalidParameters")
    );
    // Other modes do not read the parameters.
    let out = crate::tests::run(&store);
    let c = crate::tests::status(&out, weir_store::Kind::GatewayClass, "", "weir");
    assert_eq!(
        crate::tests::cond(c, "", "Accepted"),
        crate::tests::is("True", "Accepted")
    );
}

/// Two Services recording one pod port (written from a lagging store): the older Gateway
/// keeps it, the younger is moved, and translation never puts both on one socket.
#[test]
fn a_pod_port_recorded_twice_goes_to_the_older_gateway() {
    let mut yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]);
    yaml += &gateway("b", "uid-b", "2025-01-01T00:00:01Z", &[80]);
    let mut store = store_with_class(&yaml);
    let s = settings(20000..=20010);
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    apply(&mut store, &plan);
    let skey = ObjectKey::new("ns", "weir-b");
    let mut b: Service = (*store.services[&skey]).clone();
    b.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(LISTENER_PORTS_ANNOTATION.into(), "80:20000".into());
    b.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(20000));
    store.apply(Object::Service(Arc::new(b)));

    let addressing = crate::Addressing::Services(s.clone());
    let out = crate::tests::run_addressing(&store, crate::Memo::default(), &addressing);
    let socket = out.snapshot.socket(None, 20000).unwrap();
    assert_eq!(socket.listeners.len(), 1);
    assert_eq!(&*socket.listeners[0].gateway, "ns/a");
    let gb = crate::tests::status(&out, weir_store::Kind::Gateway, "ns", "b");
    assert_eq!(
        crate::tests::cond(gb, "", "Programmed"),
        crate::tests::is("False", "Pending")
    );

    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    assert_eq!(ports_of(&plan, "a"), BTreeMap::from([(80, 20000)]));
    assert_eq!(ports_of(&plan, "b"), BTreeMap::from([(80, 20001)]));
}

/// A ListenerSet's listeners are served on its Gateway's address: their ports get pod ports
/// on the Gateway's Service too (only for ListenerSets the Gateway admits).
#[test]
fn admitted_listener_sets_add_their_ports() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns, uid: uid-gw, creationTimestamp: '2025-01-01T00:00:00Z'}
spec:
  gatewayClassName: weir
  allowedListeners: {namespaces: {from: Same}}
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: extra, namespace: ns, creationTimestamp: '2025-01-01T00:00:00Z'}
spec:
  parentRef: {name: gw}
  listeners: [{name: alt, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: foreign, namespace: other, creationTimestamp: '2025-01-01T00:00:00Z'}
spec:
  parentRef: {name: gw, namespace: ns}
  listeners: [{name: alt, port: 9090, protocol: HTTP}]
";
    let mut store = store_with_class(yaml);
    let s = settings(20000..=20010);
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    assert_eq!(
        ports_of(&plan, "gw"),
        BTreeMap::from([(80, 20000), (8080, 20001)])
    );
    apply(&mut store, &plan);
    let addressing = crate::Addressing::Services(s);
    let out = crate::tests::run_addressing(&store, crate::Memo::default(), &addressing);
    let socket = out.snapshot.socket(None, 20001).unwrap();
    assert_eq!((socket.port, &*socket.listeners[0].name), (8080, "alt"));
}

/// A label or annotation dropped from spec.infrastructure is removed from the Service;
/// other controllers' keys stay.
#[test]
fn dropped_infrastructure_metadata_is_removed() {
    let yaml = gateway("a", "uid-a", "2025-01-01T00:00:00Z", &[80]);
    let mut store = store_with_class(&yaml);
    let key = ObjectKey::new("ns", "a");
    let mut gw = (*store.gateways[&key]).clone();
    gw.spec.infrastructure = Some(weir_store::gw::gateways::GatewayInfrastructure {
        labels: Some(BTreeMap::from([("team".into(), "a".into())])),
        annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
        parameters_ref: None,
    });
    store.apply(Object::Gateway(Arc::new(gw.clone())));
    let s = settings(20000..=20010);
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    apply(&mut store, &plan);
    let skey = ObjectKey::new("ns", "weir-a");
    let mut svc: Service = (*store.services[&skey]).clone();
    svc.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("theirs".into(), "y".into());
    store.apply(Object::Service(Arc::new(svc)));

    gw.spec.infrastructure = None;
    store.apply(Object::Gateway(Arc::new(gw)));
    let plan = plan_gateway_services(&store, CONTROLLER, &s);
    let patch = service_patch(&store.services[&skey], &plan.desired[0].service).unwrap();
    assert_eq!(patch["metadata"]["labels"]["team"], serde_json::Value::Null);
    assert_eq!(
        patch["metadata"]["annotations"]["note"],
        serde_json::Value::Null
    );
    assert!(patch["metadata"]["labels"].get("theirs").is_none());
    assert!(patch["metadata"]["labels"]
        .get(GATEWAY_NAME_LABEL)
        .is_none());
    assert!(patch.get("spec").is_none());
}

#[test]
fn udp_listeners_get_udp_service_ports_beside_tcp_ones() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: dns, namespace: ns, uid: uid-d, creationTimestamp: \"2025-01-01T00:00:00Z\"}
spec:
  gatewayClassName: weir
  listeners:
  - {name: udp, port: 53, protocol: UDP}
  - {name: tcp, port: 53, protocol: TCP}
  - {name: only-udp, port: 5300, protocol: UDP}
  - {name: http, port: 80, protocol: HTTP}
";
    let store = store_with_class(yaml);
    let plan = plan_gateway_services(&store, CONTROLLER, &settings(20000..=20010));
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    let svc = &plan.desired[0].service;
    let ports: Vec<(String, i32, String, Option<IntOrString>)> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            (
                p.name.unwrap_or_default(),
                p.port,
                p.protocol.unwrap_or_default(),
                p.target_port,
            )
        })
        .collect();
    let pod = ports_of(&plan, "dns");
    let target = |p: u16| Some(IntOrString::Int(i32::from(pod[&p])));
    assert_eq!(
        ports,
        vec![
            ("port-53".into(), 53, "TCP".into(), target(53)),
            ("port-53-udp".into(), 53, "UDP".into(), target(53)),
            ("port-80".into(), 80, "TCP".into(), target(80)),
            ("port-5300-udp".into(), 5300, "UDP".into(), target(5300)),
        ]
    );
}
