//! A translation handed the previous one's memo gives exactly what a translation from
//! scratch gives: the same statuses and the same routing, on every conformance manifest
//! with HTTPRoutes, after the changes a memo is for (a route changed, added, removed) and
//! after those it must not be used across (anything else changed).

use std::collections::BTreeMap;

use super::conformance::conformance_store;
use super::*;

/// Everything the snapshot serves, comparable: per socket and listener, its route entries
/// (each bucket's order is its entries' ranks, which the dump holds).
pub(super) fn dump(out: &Output) -> Vec<String> {
    let mut lines = Vec::new();
    for socket in out.snapshot.sockets.iter() {
        lines.push(format!(
            "socket {:?}:{} tls={} passthrough={}",
            socket.address,
            socket.port,
            socket.tls,
            socket.passthrough.is_some()
        ));
        for l in socket.listeners.iter() {
            lines.push(format!(
                "  listener {} {} {:?}",
                l.gateway, l.name, l.hostname
            ));
            let mut entries: Vec<String> = l.routes.values().map(|e| format!("{e:?}")).collect();
            entries.sort();
            lines.extend(entries.into_iter().map(|e| format!("    {e}")));
        }
    }
    lines
}

fn assert_same(with_memo: &Output, fresh: &Output, what: &str) {
    assert_eq!(
        with_memo.statuses, fresh.statuses,
        "{what}: statuses differ from a translation from scratch"
    );
    assert_eq!(
        dump(with_memo),
        dump(fresh),
        "{what}: routing differs from a translation from scratch"
    );
}

/// The conformance test manifests that hold HTTPRoutes (and no GRPCRoutes, with which
/// nothing is replayed; `grpc_routes_turn_replay_off` covers those).
fn http_route_manifests() -> Vec<String> {
    let dir = format!(
        "{}/../../e2e/conformance/upstream/v1.6.1/conformance/tests",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .filter(|n| {
            let text = std::fs::read_to_string(format!("{dir}/{n}")).unwrap_or_default();
            text.contains("kind: HTTPRoute") && !text.contains("kind: GRPCRoute")
        })
        .collect();
    names.sort();
    names
}

/// A new version of one HTTPRoute, as a changed file gives: same identity, one more path.
fn changed(route: &HttpRoute) -> HttpRoute {
    let mut route = route.clone();
    route.metadata.generation = Some(route.metadata.generation.unwrap_or(1) + 1);
    if let Some(rule) = route.spec.rules.iter_mut().flatten().next() {
        let mut m = rule
            .matches
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default();
        m.path = Some(weir_store::gw::httproutes::HttpRouteRulesMatchesPath {
            r#type: Some(weir_store::gw::httproutes::HttpRouteRulesMatchesPathType::PathPrefix),
            value: Some("/memo-changed".into()),
        });
        rule.matches.get_or_insert_with(Vec::new).push(m);
    }
    route
}

use weir_store::HttpRoute;

#[test]
fn replaying_unchanged_routes_gives_what_translating_from_scratch_gives() {
    let manifests = http_route_manifests();
    assert!(
        manifests.len() > 40,
        "expected the conformance HTTPRoute manifests, found {}",
        manifests.len()
    );
    for manifest in manifests {
        let store = conformance_store(&[manifest.as_str()]);
        let keys: Vec<ObjectKey> = store.http_routes.keys().cloned().collect();
        let fresh = run(&store);

        // Nothing changed: every route is replayed.
        let first = run(&store);
        let again = run_with(&store, first.memo);
        assert_same(&again, &fresh, &format!("{manifest}, unchanged"));
        assert_eq!(
            again.memo.replayed(),
            keys.len(),
            "{manifest}: every unchanged route is replayed"
        );

        for key in &keys {
            // One route changed, then changed back.
            let mut other = store.clone();
            let route = changed(&store.http_routes[key]);
            other.http_routes.insert(key.clone(), Arc::new(route));
            let before = run(&other);
            let after = run_with(&store, run_with(&other, before.memo).memo);
            assert_same(&after, &fresh, &format!("{manifest}, {key} changed back"));
            assert_eq!(after.memo.replayed(), keys.len() - 1, "{manifest}, {key}");
            let changed_fresh = run(&other);
            let changed_memo = run_with(&other, run(&store).memo);
            assert_same(
                &changed_memo,
                &changed_fresh,
                &format!("{manifest}, {key} changed"),
            );

            // One route removed, then added again.
            let mut without = store.clone();
            without.http_routes.remove(key);
            let removed = run_with(&without, run(&store).memo);
            assert_same(
                &removed,
                &run(&without),
                &format!("{manifest}, {key} removed"),
            );
            let added = run_with(&store, removed.memo);
            assert_same(&added, &fresh, &format!("{manifest}, {key} added"));
        }
    }
}

/// A change to a store, for a table of them.
type Change = Box<dyn Fn(&mut Store)>;

#[test]
fn any_change_besides_http_routes_translates_everything() {
    let store = conformance_store(&["httproute-weight.yaml"]);
    assert!(!store.http_routes.is_empty());
    let changes: BTreeMap<&str, Change> = BTreeMap::from([
        (
            "a Service changed",
            Box::new(|s: &mut Store| {
                let (key, svc) = s
                    .services
                    .iter()
                    .next()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .expect("a service");
                let mut svc = (*svc).clone();
                if let Some(port) = svc
                    .spec
                    .as_mut()
                    .and_then(|spec| spec.ports.as_mut())
                    .and_then(|p| p.first_mut())
                {
                    port.port += 1;
                }
                s.services.insert(key, Arc::new(svc));
            }) as Change,
        ),
        (
            "an EndpointSlice added",
            Box::new(|s: &mut Store| {
                let slice = load(
                    "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: infra-backend-v1-memo
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: infra-backend-v1}
addressType: IPv4
ports: [{name: http, port: 3000, protocol: TCP}]
endpoints: [{addresses: [10.0.0.9], conditions: {ready: true}}]
",
                );
                s.endpoint_slices.extend(slice.endpoint_slices);
            }),
        ),
        (
            "a Gateway changed",
            Box::new(|s: &mut Store| {
                let (key, gw) = s
                    .gateways
                    .iter()
                    .next()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .expect("a gateway");
                let mut gw = (*gw).clone();
                gw.spec.listeners.truncate(1);
                s.gateways.insert(key, Arc::new(gw));
            }),
        ),
    ]);
    for (what, change) in &changes {
        let mut other = store.clone();
        change(&mut other);
        let with_memo = run_with(&other, run(&store).memo);
        assert_eq!(
            with_memo.memo.replayed(),
            0,
            "{what}: nothing may be replayed"
        );
        assert_same(&with_memo, &run(&other), what);
    }
}

#[test]
fn grpc_routes_turn_replay_off() {
    // An HTTPRoute and a GRPCRoute with intersecting hostnames: which one a listener takes
    // depends on the other, so neither is replayed.
    let store = conformance_store(&["grpcroute-listener-hostname-matching.yaml"]);
    let mut with_http = store.clone();
    let http = store_with_class(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-too, namespace: gateway-conformance-infra, creationTimestamp: '2020-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: same-namespace}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
",
    );
    with_http.http_routes.extend(http.http_routes);
    let again = run_with(&with_http, run(&with_http).memo);
    assert_eq!(again.memo.replayed(), 0);
    assert_same(&again, &run(&with_http), "with GRPCRoutes");
}
