//! Gateways that request no address: sharing the bind address (overlapping listeners of
//! different Gateways are Conflicted) or each its own from `--gateway-address-pool`.

use weir_store::Kind;

use super::*;
use crate::{AddressPool, Addressing};

/// An HTTPRoute `name` with no hostname, attached to Gateway `gw`.
fn route_to(name: &str, gw: &str) -> String {
    format!(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: {gw}}}]
  rules:
  - backendRefs: [{{name: svc-a, port: 80}}]
"
    )
}

/// Gateway `name` created `created` (a date) with one listener on port 80.
fn gw(name: &str, created: &str, hostname: Option<&str>) -> String {
    let host = hostname
        .map(|h| format!(", hostname: '{h}'"))
        .unwrap_or_default();
    gateway(
        name,
        &format!("  - {{name: http, port: 80, protocol: HTTP{host}}}"),
    )
    .replace("2024-01-01", created)
}

/// The case: two Gateways with a catch-all HTTP listener on port 80, a route each.
fn two_gateways_on_80(h1: Option<&str>, h2: Option<&str>) -> Store {
    store_with_class(
        &[
            gw("first", "2024-01-01", h1),
            gw("second", "2024-06-01", h2),
            SERVICES.to_string(),
            route_to("r1", "first"),
            route_to("r2", "second"),
        ]
        .join("---\n"),
    )
}

fn pool() -> Addressing {
    Addressing::Pool("127.0.1.0/24".parse().expect("pool"))
}

fn address_of(out: &Output, name: &str) -> String {
    let s = status(out, Kind::Gateway, "default", name);
    let addrs = s.status["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(addrs.len(), 1, "{name}: {addrs:?}");
    assert_eq!(addrs[0]["type"], "IPAddress");
    addrs[0]["value"].as_str().unwrap_or_default().to_string()
}

/// The route a request for `host` on port 80 of `address` reaches.
fn hit_at(out: &Output, address: &str, host: &str) -> String {
    let ip: std::net::IpAddr = address.parse().expect("ip");
    let socket = out.snapshot.socket(Some(ip), 80).expect("socket");
    route_on(socket, &get(host, "/"))
        .map(|e| e.action.route.route.to_string())
        .unwrap_or_else(|| "404".into())
}

/// Shared address: the younger Gateway's overlapping listener is Conflicted and not
/// Programmed, its route says why, and `weir check` counts both as problems — never
/// Accepted and Programmed with a silent 404.
#[test]
fn shared_address_overlapping_listeners_are_conflicted_not_black_holes() {
    let out = run(&two_gateways_on_80(None, None));
    let first = status(&out, Kind::Gateway, "default", "first");
    assert_eq!(
        cond(first, "listener http", "Programmed"),
        is("True", "Programmed")
    );
    let second = status(&out, Kind::Gateway, "default", "second");
    assert_eq!(
        cond(second, "listener http", "Conflicted"),
        is("True", "HostnameConflict")
    );
    assert_eq!(
        cond(second, "listener http", "Programmed"),
        is("False", "HostnameConflict")
    );
    let message = &listener_json(second, "http")["conditions"][0]["message"];
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("default/first/http")),
        "{message}"
    );
    assert!(!second.problems().is_empty());
    assert_eq!(
        parent_cond(&out, ("default", "r2"), ("default", "second"), "Accepted"),
        is("False", "NotAllowedByListeners")
    );
    let r2 = status(&out, Kind::HttpRoute, "default", "r2");
    assert!(
        r2.problems().iter().any(|p| p.contains("Conflicted")),
        "{:?}",
        r2.problems()
    );
    // Only the first Gateway's listener is on the socket.
    assert_eq!(hit(&out, 80, &get("any.example", "/")), "default/r1#0");
    let socket = out.snapshot.socket(None, 80).expect("socket");
    assert_eq!(socket.listeners.len(), 1);
}

/// Overlap is any host both would match: a wildcard covering an exact name, or a wider
/// wildcard; disjoint names share the socket as before.
#[test]
fn shared_address_conflict_is_decided_by_hostname_overlap() {
    for (h1, h2, conflicted) in [
        (Some("*.example.com"), Some("foo.example.com"), true),
        (Some("foo.example.com"), Some("*.example.com"), true),
        (Some("*.example.com"), Some("*.a.example.com"), true),
        (Some("a.example.com"), None, true),
        (Some("a.example.com"), Some("a.example.com"), true),
        (Some("a.example.com"), Some("b.example.com"), false),
        (Some("*.a.example.com"), Some("*.b.example.com"), false),
    ] {
        let out = run(&two_gateways_on_80(h1, h2));
        let second = status(&out, Kind::Gateway, "default", "second");
        let want = if conflicted {
            is("True", "HostnameConflict")
        } else {
            is("False", "NoConflicts")
        };
        assert_eq!(
            cond(second, "listener http", "Conflicted"),
            want,
            "{h1:?} {h2:?}"
        );
        let first = status(&out, Kind::Gateway, "default", "first");
        assert_eq!(
            cond(first, "listener http", "Conflicted"),
            is("False", "NoConflicts"),
            "the older Gateway keeps its listener: {h1:?} {h2:?}"
        );
    }
    // Disjoint: each Gateway's route answers its own host on the shared socket.
    let out = run(&two_gateways_on_80(Some("a.example"), Some("b.example")));
    assert_eq!(hit(&out, 80, &get("a.example", "/")), "default/r1#0");
    assert_eq!(hit(&out, 80, &get("b.example", "/")), "default/r2#0");
}

/// With a pool, each Gateway gets its own address, reported in status and bound with its
/// own sockets; both routes answer, each at its Gateway's address.
#[test]
fn pool_gives_each_gateway_its_own_address() {
    let out = run_addressing(&two_gateways_on_80(None, None), Memo::default(), &pool());
    let (a1, a2) = (address_of(&out, "first"), address_of(&out, "second"));
    assert_ne!(a1, a2);
    for (name, addr) in [("first", &a1), ("second", &a2)] {
        assert!(addr.starts_with("127.0.1."), "{addr}");
        let s = status(&out, Kind::Gateway, "default", name);
        assert_eq!(cond(s, "", "Programmed"), is("True", "Programmed"));
        assert_eq!(
            cond(s, "listener http", "Conflicted"),
            is("False", "NoConflicts")
        );
    }
    assert_eq!(hit_at(&out, &a1, "any.example"), "default/r1");
    assert_eq!(hit_at(&out, &a2, "any.example"), "default/r2");
    assert!(out.snapshot.socket(None, 80).is_none(), "nothing on --bind");
    assert_eq!(out.snapshot.sockets.len(), 2);
}

/// The address depends on the Gateway's namespace/name only: the same on every
/// translation, and a Gateway created later never moves an older one's.
#[test]
fn pool_addresses_are_stable() {
    let store = two_gateways_on_80(None, None);
    let out = run_addressing(&store, Memo::default(), &pool());
    let before = (address_of(&out, "first"), address_of(&out, "second"));
    let again = run_addressing(&store, Memo::default(), &pool());
    assert_eq!(
        before,
        (address_of(&again, "first"), address_of(&again, "second"))
    );
    // Twenty younger Gateways later, the first two keep their addresses.
    let mut docs = vec![
        gw("first", "2024-01-01", None),
        gw("second", "2024-06-01", None),
        SERVICES.to_string(),
    ];
    docs.extend((0..20).map(|i| gw(&format!("later{i}"), "2025-01-01", None)));
    let out = run_addressing(
        &store_with_class(&docs.join("---\n")),
        Memo::default(),
        &pool(),
    );
    assert_eq!(
        before,
        (address_of(&out, "first"), address_of(&out, "second"))
    );
    let mut all: Vec<String> = (0..20)
        .map(|i| address_of(&out, &format!("later{i}")))
        .chain([before.0.clone(), before.1.clone()])
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 22, "every Gateway has an address of its own");
}

/// Requested addresses are kept and never handed to another Gateway; a pool with no free
/// address leaves the Gateway unprogrammed with AddressNotAssigned.
#[test]
fn pool_respects_requested_addresses_and_reports_exhaustion() {
    let one: AddressPool = "127.0.1.7/32".parse().expect("pool");
    let requested = gw("first", "2024-01-01", None).replace(
        "  gatewayClassName: weir",
        "  gatewayClassName: weir\n  addresses: [{value: 127.0.1.7}]",
    );
    let store = store_with_class(&[requested, gw("second", "2024-06-01", None)].join("---\n"));
    let out = run_addressing(&store, Memo::default(), &Addressing::Pool(one));
    assert_eq!(address_of(&out, "first"), "127.0.1.7");
    let second = status(&out, Kind::Gateway, "default", "second");
    assert_eq!(
        cond(second, "", "Programmed"),
        is("False", "AddressNotAssigned")
    );
    assert_eq!(out.snapshot.sockets.len(), 1);
}
