//! Attachment on its own: which targetRefs resolve, precedence, the most specific lookup and
//! the ancestors status shape.

use std::collections::BTreeMap;

use weir_store::{Kind, ObjectKey, ObjectMeta, Time};

use super::*;
use crate::tests::{load, now};

const OBJECTS: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: weir
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  rules: [{name: first, backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: ns}
spec:
  rules: [{name: only}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ns}
spec:
  ports: [{name: http, port: 80}]
";

const ALL: Allowed = Allowed {
    gateway: true,
    listener_set: true,
    routes: true,
    service: true,
};

fn target_ref<'a>(
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    section: Option<&'a str>,
) -> TargetRef<'a> {
    TargetRef {
        group,
        kind,
        name,
        section_name: section,
    }
}

#[test]
fn targets_resolve_by_kind_name_and_section() {
    let store = load(OBJECTS);
    let gw = "gateway.networking.k8s.io";
    let ok = [
        (gw, "Gateway", "gw", None, Kind::Gateway),
        (gw, "Gateway", "gw", Some("http"), Kind::Gateway),
        (gw, "HTTPRoute", "r", Some("first"), Kind::HttpRoute),
        (gw, "GRPCRoute", "g", Some("only"), Kind::GrpcRoute),
        ("", "Service", "svc", Some("http"), Kind::Service),
        ("core", "Service", "svc", None, Kind::Service),
    ];
    for (group, kind, name, section, want) in ok {
        let r = resolve(&store, "ns", target_ref(group, kind, name, section), ALL)
            .unwrap_or_else(|| panic!("{kind} {name} is a target"));
        assert_eq!(r.not_found, None, "{kind} {name} {section:?}");
        assert_eq!(r.target.kind, want);
        assert_eq!(r.target.key, ObjectKey::new("ns", name));
        assert_eq!(r.target.section.as_deref(), section);
    }
    let missing = [
        (
            gw,
            "Gateway",
            "nope",
            None,
            "Gateway ns/nope does not exist",
        ),
        (
            gw,
            "Gateway",
            "gw",
            Some("https"),
            "Gateway ns/gw has no listener named https",
        ),
        (
            gw,
            "HTTPRoute",
            "r",
            Some("second"),
            "HTTPRoute ns/r has no rule named second",
        ),
        (
            "",
            "Service",
            "svc",
            Some("grpc"),
            "Service ns/svc has no port named grpc",
        ),
        (
            gw,
            "ListenerSet",
            "ls",
            None,
            "ListenerSet ns/ls does not exist",
        ),
    ];
    for (group, kind, name, section, message) in missing {
        let r =
            resolve(&store, "ns", target_ref(group, kind, name, section), ALL).expect("a target");
        assert_eq!(
            r.not_found,
            Some(NotAccepted::new("TargetNotFound", message)),
            "{kind} {name} {section:?}"
        );
    }
    // Another namespace's object is not found: targets are in the policy's namespace.
    let other =
        resolve(&store, "other", target_ref(gw, "Gateway", "gw", None), ALL).expect("a target");
    assert!(other.not_found.is_some());
    // A kind the policy kind does not take is not one of its targets.
    let services_only = Allowed {
        service: true,
        ..Allowed::default()
    };
    assert!(resolve(
        &store,
        "ns",
        target_ref(gw, "Gateway", "gw", None),
        services_only
    )
    .is_none());
    assert!(resolve(
        &store,
        "ns",
        target_ref("apps", "Deployment", "d", None),
        ALL
    )
    .is_none());
}

fn meta(created: &str) -> ObjectMeta {
    ObjectMeta {
        creation_timestamp: Some(Time(created.parse().expect("timestamp"))),
        ..ObjectMeta::default()
    }
}

#[test]
fn the_oldest_policy_holds_a_target_then_namespace_and_name() {
    let svc = Target::new(Kind::Service, ObjectKey::new("ns", "svc"), None);
    let port = Target::new(Kind::Service, ObjectKey::new("ns", "svc"), Some("http"));
    let (old, new) = (meta("2024-01-01T00:00:00Z"), meta("2024-06-01T00:00:00Z"));
    let keys = [
        ObjectKey::new("ns", "young"),
        ObjectKey::new("ns", "b-old"),
        ObjectKey::new("ns", "a-old"),
        ObjectKey::new("ns", "port"),
    ];
    let whole = [svc.clone()];
    let section = [port.clone()];
    let candidates = [
        Candidate {
            meta: &new,
            key: &keys[0],
            targets: &whole,
        },
        Candidate {
            meta: &old,
            key: &keys[1],
            targets: &whole,
        },
        Candidate {
            meta: &old,
            key: &keys[2],
            targets: &whole,
        },
        // Younger, but for the port only: more specific, no conflict.
        Candidate {
            meta: &new,
            key: &keys[3],
            targets: &section,
        },
    ];
    let settled = settle(&candidates);
    assert_eq!(
        settled.winners.get(&svc),
        Some(&2),
        "a-old: same age, first by name"
    );
    assert_eq!(settled.winners.get(&port), Some(&3));
    assert_eq!(settled.conflicted, vec![true, true, false, false]);

    // Lookups take the port's policy, then the Service's.
    let index: BTreeMap<Target, &str> = settled
        .winners
        .iter()
        .map(|(t, &i)| (t.clone(), &*keys[i].name))
        .collect();
    assert_eq!(most_specific(&index, &port), Some(&"port"));
    let other_port = Target::new(Kind::Service, ObjectKey::new("ns", "svc"), Some("grpc"));
    assert_eq!(most_specific(&index, &other_port), Some(&"a-old"));
    let other_svc = Target::new(Kind::Service, ObjectKey::new("ns", "x"), Some("http"));
    assert_eq!(most_specific(&index, &other_svc), None);
}

#[test]
fn ancestors_name_each_gateway_with_our_controller() {
    let c = crate::status::Conditions {
        generation: Some(3),
        now: &now(),
    };
    let accepted = c.make("Accepted", true, "Accepted", "Policy is accepted");
    let gateways = [ObjectKey::new("a", "gw1"), ObjectKey::new("b", "gw2")];
    let status = ancestor_status(&gateways, "weir.dev/gateway-controller", &[accepted]);
    let ancestors = status["ancestors"].as_array().expect("ancestors");
    assert_eq!(ancestors.len(), 2);
    assert_eq!(
        ancestors[1]["ancestorRef"],
        serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw2", "namespace": "b"})
    );
    assert_eq!(
        ancestors[0]["controllerName"],
        "weir.dev/gateway-controller"
    );
    assert_eq!(ancestors[0]["conditions"][0]["type"], "Accepted");
    assert_eq!(ancestors[0]["conditions"][0]["observedGeneration"], 3);
}
