//! The Kubernetes source, status writer and leader election against the test API server
//! (weir-testkit), through the real kube-rs client over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use weir_sources::kube::{
    watch_service_addresses, write_services, KubeSource, LeaderElection, StatusUpdate, StatusWriter,
};
use weir_store::{Kind, ObjectKey, Store};
use weir_testkit::apiserver::TestApiServer;
use weir_testkit::assert_eventually;

const GW: &str = "gateway.networking.k8s.io";
const OURS: &str = "weir.dev/gateway-controller";
const WAIT: Duration = Duration::from_secs(15);
const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2025-06-01T12:00:00Z";

fn gateway_class(name: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": name}, "spec": {"controllerName": OURS}})
}

fn gateway(name: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "infra",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {"gatewayClassName": "weir",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
}

fn route(name: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}})
}

fn grpc_route(name: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}],
            "rules": [{"matches": [{"method": {"service": "echo.Echo"}}],
                "backendRefs": [{"name": "web", "port": 80}]}]}})
}

fn tls_route(name: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}],
            "hostnames": ["abc.example.com"],
            "rules": [{"backendRefs": [{"name": "web", "port": 443}]}]}})
}

fn tcp_route(name: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 9000}]}]}})
}

fn secret(name: &str, ty: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
        "metadata": {"name": name, "namespace": "infra"}, "data": {}})
}

/// A Gateway with an HTTPS listener per Secret name (in its namespace).
fn gateway_with_certs(name: &str, certs: &[&str]) -> Value {
    let mut gw = gateway(name);
    if let Some(listeners) = gw["spec"]["listeners"].as_array_mut() {
        for (i, cert) in certs.iter().enumerate() {
            listeners.push(json!({"name": format!("https-{i}"), "port": 443 + i,
                "protocol": "HTTPS", "hostname": format!("h{i}.example.com"),
                "tls": {"certificateRefs": [{"name": cert}]}}));
        }
    }
    gw
}

fn every_kind() -> Vec<Value> {
    vec![
        gateway_class("weir"),
        gateway_with_certs("gw", &["cert", "password"]),
        route("web"),
        grpc_route("rpc"),
        tls_route("passthrough"),
        tcp_route("raw"),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
            "metadata": {"name": "web-tls", "namespace": "apps"},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                "validation": {"hostname": "web.example.com",
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ca", "namespace": "apps"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"}}),
        json!({"apiVersion": "gateway.networking.x-k8s.io/v1alpha1",
            "kind": "XBackendTrafficPolicy",
            "metadata": {"name": "web-sticky", "namespace": "apps"},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                "sessionPersistence": {"sessionName": "sid"}}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
            "metadata": {"name": "rg", "namespace": "apps"},
            "spec": {"from": [{"group": GW, "kind": "HTTPRoute", "namespace": "other"}],
                "to": [{"group": "", "kind": "Service"}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"ports": [{"port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "apps",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}}],
            "ports": [{"port": 8080}]}),
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "apps", "labels": {"team": "a"}}}),
        secret("cert", "kubernetes.io/tls"),
        secret("password", "Opaque"),
    ]
}

fn start_source(server: &TestApiServer) -> watch::Receiver<Arc<Store>> {
    let (tx, rx) = watch::channel(Arc::new(Store::default()));
    let source = KubeSource::new(server.client(), OURS);
    tokio::spawn(async move {
        if let Err(err) = source.run(Duration::from_millis(20), tx).await {
            panic!("kube source failed: {err}");
        }
    });
    rx
}

/// Wait until the latest store satisfies `check`.
async fn store_where(
    rx: &watch::Receiver<Arc<Store>>,
    what: &str,
    check: impl Fn(&Store) -> bool,
) -> Arc<Store> {
    assert_eventually(what, WAIT, || {
        let store = rx.borrow().clone();
        let ok = check(&store);
        async move {
            if ok {
                Ok(store)
            } else {
                Err(format!("store has {} objects", store.len()))
            }
        }
    })
    .await
}

fn has(store: &Store, kind: Kind, ns: &str, name: &str) -> bool {
    store.get(kind, &ObjectKey::new(ns, name)).is_some()
}

fn list_requests(server: &TestApiServer, plural: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.is_watch() && r.path.ends_with(plural))
        .count()
}

#[tokio::test]
async fn every_kind_flows_into_the_store_and_deletions_follow() {
    let server = TestApiServer::start().await;
    for object in every_kind() {
        server.apply(object);
    }
    let rx = start_source(&server);
    let store = store_where(&rx, "the first full store", |s| !s.is_empty()).await;
    // The first store is only sent once every kind has been listed, so it is complete.
    assert!(has(&store, Kind::GatewayClass, "", "weir"));
    assert!(has(&store, Kind::Gateway, "infra", "gw"));
    assert!(has(&store, Kind::HttpRoute, "apps", "web"));
    assert!(has(&store, Kind::GrpcRoute, "apps", "rpc"));
    let rpc = &store.grpc_routes[&ObjectKey::new("apps", "rpc")];
    assert_eq!(rpc.spec.parent_refs.as_ref().map(Vec::len), Some(1));
    assert!(has(&store, Kind::TlsRoute, "apps", "passthrough"));
    let tls = &store.tls_routes[&ObjectKey::new("apps", "passthrough")];
    assert_eq!(tls.spec.hostnames, ["abc.example.com"]);
    assert!(has(&store, Kind::TcpRoute, "apps", "raw"));
    assert!(has(&store, Kind::BackendTlsPolicy, "apps", "web-tls"));
    let policy = &store.backend_tls_policies[&ObjectKey::new("apps", "web-tls")];
    assert_eq!(policy.spec.validation.hostname, "web.example.com");
    assert!(has(&store, Kind::ConfigMap, "apps", "ca"));
    let x = &store.x_backend_traffic_policies[&ObjectKey::new("apps", "web-sticky")];
    let session = x.spec.session_persistence.as_ref();
    assert_eq!(session.and_then(|s| s.session_name.as_deref()), Some("sid"));
    assert!(has(&store, Kind::ReferenceGrant, "apps", "rg"));
    assert!(has(&store, Kind::Service, "apps", "web"));
    assert!(has(&store, Kind::EndpointSlice, "apps", "web-1"));
    assert!(has(&store, Kind::Namespace, "", "apps"));
    assert!(has(&store, Kind::Secret, "infra", "cert"));
    assert!(
        !has(&store, Kind::Secret, "infra", "password"),
        "only TLS secrets"
    );
    let gw = &store.gateways[&ObjectKey::new("infra", "gw")];
    assert!(
        gw.metadata.managed_fields.is_none(),
        "managedFields stripped"
    );
    assert!(gw.metadata.uid.is_some());
    let secret_watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/secrets"))
        .collect();
    assert!(secret_watches
        .iter()
        .all(|r| r.query.contains("fieldSelector=type%3Dkubernetes.io%2Ftls")));

    // A Secret that becomes a TLS Secret appears; one that stops being one disappears.
    server.apply(secret("password", "kubernetes.io/tls"));
    server.apply(secret("cert", "Opaque"));
    store_where(&rx, "the secrets' type changes", |s| {
        has(s, Kind::Secret, "infra", "password") && !has(s, Kind::Secret, "infra", "cert")
    })
    .await;

    server.delete(GW, "gateways", "infra", "gw");
    server.delete(GW, "grpcroutes", "apps", "rpc");
    server.delete(GW, "tlsroutes", "apps", "passthrough");
    server.apply(route("second"));
    server.apply(grpc_route("rpc-2"));
    store_where(&rx, "the deletions and the new routes", |s| {
        !has(s, Kind::Gateway, "infra", "gw")
            && has(s, Kind::HttpRoute, "apps", "second")
            && !has(s, Kind::GrpcRoute, "apps", "rpc")
            && has(s, Kind::GrpcRoute, "apps", "rpc-2")
            && !has(s, Kind::TlsRoute, "apps", "passthrough")
            // Nothing references the Secret any more: its full copy is dropped.
            && !has(s, Kind::Secret, "infra", "password")
    })
    .await;
}

#[tokio::test]
async fn a_kind_whose_crd_is_not_installed_counts_as_empty() {
    // A cluster with only the standard channel has no TCPRoute CRD: everything else must
    // still be served, not wait forever for a kind that cannot sync.
    let server = TestApiServer::start_with(weir_testkit::apiserver::TestApiServerOptions {
        unserved: vec!["tcproutes".into()],
        ..Default::default()
    })
    .await;
    for object in every_kind() {
        if object["kind"] != "TCPRoute" {
            server.apply(object);
        }
    }
    let rx = start_source(&server);
    let store = store_where(&rx, "the first store without TCPRoutes", |s| !s.is_empty()).await;
    assert!(has(&store, Kind::HttpRoute, "apps", "web"));
    assert!(store.tcp_routes.is_empty());
    // A required kind that is not served is an error, not an empty kind: the source waits.
    let server = TestApiServer::start_with(weir_testkit::apiserver::TestApiServerOptions {
        unserved: vec!["httproutes".into()],
        ..Default::default()
    })
    .await;
    server.apply(gateway_class("weir"));
    let rx = start_source(&server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rx.borrow().is_empty(),
        "no store is sent while a required kind cannot be listed"
    );
}

#[tokio::test]
async fn tcproutes_are_read_at_v1_whichever_version_wrote_them() {
    // A v1.6 experimental-channel CRD serves v1 and v1alpha2: Weir watches v1, which also
    // returns what was written as v1alpha2. Serving v1 alone (the standard channel) is
    // enough: with v1alpha2 unserved, both routes still arrive.
    let server = TestApiServer::start_with(weir_testkit::apiserver::TestApiServerOptions {
        unserved: vec!["tcproutes/v1alpha2".into()],
        ..Default::default()
    })
    .await;
    for object in every_kind() {
        if object["kind"] != "TCPRoute" {
            server.apply(object);
        }
    }
    let mut alpha = tcp_route("written-as-v1alpha2");
    alpha["apiVersion"] = json!("gateway.networking.k8s.io/v1alpha2");
    let mut v1 = tcp_route("written-as-v1");
    v1["apiVersion"] = json!("gateway.networking.k8s.io/v1");
    server.apply(alpha);
    server.apply(v1);
    let rx = start_source(&server);
    let store = store_where(&rx, "both TCPRoutes", |s| {
        has(s, Kind::TcpRoute, "apps", "written-as-v1alpha2")
            && has(s, Kind::TcpRoute, "apps", "written-as-v1")
    })
    .await;
    let route = store
        .tcp_routes
        .values()
        .find(|r| r.metadata.name.as_deref() == Some("written-as-v1alpha2"))
        .map(|r| r.spec.rules[0].backend_refs[0].port);
    assert_eq!(route, Some(Some(9000)));

    // A pre-v1.6 TCPRoute CRD serves only v1alpha2: Weir does not fall back to it; TCPRoute
    // counts as not installed (logged), and everything else is served.
    let server = TestApiServer::start_with(weir_testkit::apiserver::TestApiServerOptions {
        unserved: vec!["tcproutes/v1".into()],
        ..Default::default()
    })
    .await;
    for object in every_kind() {
        server.apply(object);
    }
    let rx = start_source(&server);
    let store = store_where(&rx, "the first store", |s| !s.is_empty()).await;
    assert!(has(&store, Kind::HttpRoute, "apps", "web"));
    assert!(store.tcp_routes.is_empty());
}

#[tokio::test]
async fn a_cut_watch_resumes_without_relisting_or_losing_changes() {
    let server = TestApiServer::start().await;
    server.apply(route("kept"));
    server.apply(route("doomed"));
    let rx = start_source(&server);
    store_where(&rx, "the first store", |s| {
        has(s, Kind::HttpRoute, "apps", "doomed")
    })
    .await;
    let lists = list_requests(&server, "/httproutes");

    // Changes made while no watch is open arrive once the watches come back.
    server.refuse_watches(true);
    server.cut_watches();
    server.apply(route("added-while-cut"));
    server.delete(GW, "httproutes", "apps", "doomed");
    server.refuse_watches(false);
    store_where(&rx, "the changes made while cut", |s| {
        has(s, Kind::HttpRoute, "apps", "added-while-cut")
            && !has(s, Kind::HttpRoute, "apps", "doomed")
            && has(s, Kind::HttpRoute, "apps", "kept")
    })
    .await;
    assert_eq!(
        list_requests(&server, "/httproutes"),
        lists,
        "resumed from the last resourceVersion, no relist"
    );
}

#[tokio::test]
async fn gone_410_relists_and_loses_nothing() {
    let server = TestApiServer::start().await;
    server.apply(route("kept"));
    server.apply(route("doomed"));
    let rx = start_source(&server);
    store_where(&rx, "the first store", |s| {
        has(s, Kind::HttpRoute, "apps", "doomed")
    })
    .await;
    let lists = list_requests(&server, "/httproutes");

    server.refuse_watches(true);
    server.cut_watches();
    server.apply(route("added-while-cut"));
    server.delete(GW, "httproutes", "apps", "doomed");
    server.compact();
    server.refuse_watches(false);
    store_where(&rx, "the relisted routes", |s| {
        has(s, Kind::HttpRoute, "apps", "added-while-cut")
            && !has(s, Kind::HttpRoute, "apps", "doomed")
            && has(s, Kind::HttpRoute, "apps", "kept")
    })
    .await;
    assert!(
        list_requests(&server, "/httproutes") > lists,
        "the 410 made the watcher relist; requests: {:#?}",
        server
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/httproutes"))
            .collect::<Vec<_>>()
    );
    // And it keeps watching after the relist.
    server.apply(route("after"));
    store_where(&rx, "a change after the relist", |s| {
        has(s, Kind::HttpRoute, "apps", "after")
    })
    .await;
}

#[tokio::test]
async fn a_malformed_object_is_skipped_and_its_last_good_version_kept() {
    let server = TestApiServer::start().await;
    server.apply(gateway("gw"));
    let mut broken = gateway("broken");
    broken["spec"]["listeners"] = json!("not a list");
    server.apply(broken.clone());
    let rx = start_source(&server);
    let store = store_where(&rx, "the first store", |s| {
        has(s, Kind::Gateway, "infra", "gw")
    })
    .await;
    assert!(!has(&store, Kind::Gateway, "infra", "broken"));
    assert!(store
        .rejected
        .contains_key(&(Kind::Gateway, ObjectKey::new("infra", "broken"))));

    // Breaking a good object keeps its last good version; the stream goes on.
    let mut gw = gateway("gw");
    gw["spec"]["listeners"] = json!(7);
    server.apply(gw);
    server.apply(route("later"));
    // Each kind has its own watch, so the route may arrive before the broken Gateway (and,
    // with the leading-edge debounce, in a store of its own): wait for both.
    let store = store_where(&rx, "the route and the rejected update", |s| {
        has(s, Kind::HttpRoute, "apps", "later")
            && s.rejected
                .contains_key(&(Kind::Gateway, ObjectKey::new("infra", "gw")))
    })
    .await;
    assert!(
        has(&store, Kind::Gateway, "infra", "gw"),
        "last good version kept"
    );
}

fn condition(ty: &str, status: &str, generation: i64, time: &str) -> Value {
    json!({"type": ty, "status": status, "reason": ty, "message": "",
        "observedGeneration": generation, "lastTransitionTime": time})
}

fn route_parent(controller: &str, gateway: &str, time: &str) -> Value {
    json!({"parentRef": {"group": GW, "kind": "Gateway", "namespace": "infra", "name": gateway},
        "controllerName": controller,
        "conditions": [condition("Accepted", "True", 1, time)]})
}

fn updates(generation: i64, time: &str) -> Vec<StatusUpdate> {
    vec![
        StatusUpdate {
            kind: Kind::GatewayClass,
            key: ObjectKey::cluster("weir"),
            status: json!({"conditions": [condition("Accepted", "True", generation, time)]}).into(),
        },
        StatusUpdate {
            kind: Kind::Gateway,
            key: ObjectKey::new("infra", "gw"),
            status: json!({
                "conditions": [condition("Programmed", "True", generation, time)],
                "listeners": [{"name": "http", "attachedRoutes": 1, "supportedKinds": [],
                    "conditions": [condition("Accepted", "True", generation, time)]}],
            })
            .into(),
        },
        StatusUpdate {
            kind: Kind::HttpRoute,
            key: ObjectKey::new("apps", "web"),
            status: json!({"parents": [route_parent(OURS, "gw", time)]}).into(),
        },
    ]
}

fn patches(server: &TestApiServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect()
}

#[tokio::test]
async fn status_is_written_only_when_it_changed() {
    let server = TestApiServer::start().await;
    server.apply(gateway_class("weir"));
    server.apply(gateway("gw"));
    let mut web = route("web");
    web["status"] = json!({"parents": [route_parent("example.com/other", "theirs", T0)]});
    server.apply(web);

    let mut writer = StatusWriter::new(server.client(), OURS.to_string());
    assert_eq!(writer.write(&updates(1, T0)).await, 3);
    let class = server.get(GW, "gatewayclasses", "", "weir").unwrap();
    assert_eq!(class["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(
        class["metadata"]["generation"], 1,
        "status writes keep generation"
    );
    let gw = server.get(GW, "gateways", "infra", "gw").unwrap();
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
    let web = server.get(GW, "httproutes", "apps", "web").unwrap();
    let parents = web["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_eq!(
        parents[0]["controllerName"], "example.com/other",
        "theirs kept"
    );
    assert_eq!(parents[1]["controllerName"], OURS);

    // The same statuses computed later (new times) are no change: no PATCH at all, from this
    // writer (which remembers) or a fresh one (which reads).
    server.clear_requests();
    assert_eq!(writer.write(&updates(1, T1)).await, 0);
    let mut fresh = StatusWriter::new(server.client(), OURS.to_string());
    assert_eq!(fresh.write(&updates(1, T1)).await, 0);
    assert_eq!(patches(&server), Vec::<String>::new());

    // A new generation is a change; the unchanged conditions keep their time.
    assert_eq!(writer.write(&updates(2, T1)).await, 2);
    let class = server.get(GW, "gatewayclasses", "", "weir").unwrap();
    assert_eq!(class["status"]["conditions"][0]["observedGeneration"], 2);
    assert_eq!(class["status"]["conditions"][0]["lastTransitionTime"], T0);
    let gw = server.get(GW, "gateways", "infra", "gw").unwrap();
    assert_eq!(
        gw["status"]["listeners"][0]["conditions"][0]["lastTransitionTime"],
        T0
    );

    // A route we no longer have a parent for loses our entry, keeps theirs.
    let none = vec![StatusUpdate {
        kind: Kind::HttpRoute,
        key: ObjectKey::new("apps", "web"),
        status: json!({"parents": []}).into(),
    }];
    assert_eq!(writer.write(&none).await, 1);
    let web = server.get(GW, "httproutes", "apps", "web").unwrap();
    let parents = web["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0]["controllerName"], "example.com/other");

    // A missing object is skipped without failing the rest.
    let mut missing = updates(3, T1);
    missing[1].key = ObjectKey::new("infra", "missing");
    assert_eq!(writer.write(&missing).await, 2);
}

#[tokio::test]
async fn grpc_route_status_keeps_other_controllers_parents() {
    let server = TestApiServer::start().await;
    let mut rpc = grpc_route("rpc");
    rpc["status"] = json!({"parents": [route_parent("example.com/other", "theirs", T0)]});
    server.apply(rpc);
    let mut ours = route_parent(OURS, "gw", T0);
    ours["conditions"] = json!([
        {"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners",
            "message": "", "observedGeneration": 1, "lastTransitionTime": T0},
        condition("ResolvedRefs", "True", 1, T0),
    ]);
    let update = |parents: Value| {
        vec![StatusUpdate {
            kind: Kind::GrpcRoute,
            key: ObjectKey::new("apps", "rpc"),
            status: json!({ "parents": parents }).into(),
        }]
    };
    let mut writer = StatusWriter::new(server.client(), OURS.to_string());
    assert_eq!(writer.write(&update(json!([ours.clone()]))).await, 1);
    let written = patches(&server);
    assert!(
        written.iter().all(|p| p.starts_with(
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/grpcroutes/rpc/status"
        )),
        "{written:?}"
    );
    let rpc = server.get(GW, "grpcroutes", "apps", "rpc").unwrap();
    let parents = rpc["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_eq!(
        parents[0]["controllerName"], "example.com/other",
        "theirs kept first"
    );
    assert_eq!(parents[1]["controllerName"], OURS);
    assert_eq!(
        parents[1]["conditions"][0]["reason"],
        "NotAllowedByListeners"
    );

    // Unchanged: no patch. No longer ours: our entry goes, theirs stays.
    server.clear_requests();
    assert_eq!(writer.write(&update(json!([ours]))).await, 0);
    assert_eq!(patches(&server), Vec::<String>::new());
    assert_eq!(writer.write(&update(json!([]))).await, 1);
    let rpc = server.get(GW, "grpcroutes", "apps", "rpc").unwrap();
    let parents = rpc["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0]["controllerName"], "example.com/other");
}

#[tokio::test]
async fn tls_route_status_is_written_and_keeps_other_controllers_parents() {
    let server = TestApiServer::start().await;
    let mut passthrough = tls_route("passthrough");
    passthrough["status"] = json!({"parents": [route_parent("example.com/other", "theirs", T0)]});
    server.apply(passthrough);
    let mut ours = route_parent(OURS, "gw", T0);
    ours["conditions"] = json!([
        condition("Accepted", "True", 1, T0),
        condition("ResolvedRefs", "True", 1, T0),
    ]);
    let update = vec![StatusUpdate {
        kind: Kind::TlsRoute,
        key: ObjectKey::new("apps", "passthrough"),
        status: json!({ "parents": [ours] }).into(),
    }];
    let mut writer = StatusWriter::new(server.client(), OURS.to_string());
    assert_eq!(writer.write(&update).await, 1);
    let written = patches(&server);
    assert!(
        written.iter().all(|p| p.starts_with(
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/tlsroutes/passthrough/status"
        )),
        "{written:?}"
    );
    let route = server.get(GW, "tlsroutes", "apps", "passthrough").unwrap();
    let parents = route["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_eq!(parents[0]["controllerName"], "example.com/other");
    assert_eq!(parents[1]["controllerName"], OURS);
    assert_eq!(parents[1]["conditions"][0]["type"], "Accepted");
}

async fn wait_leader(rx: &watch::Receiver<bool>, want: bool, within: Duration) -> Duration {
    let started = Instant::now();
    let mut rx = rx.clone();
    tokio::time::timeout(within, rx.wait_for(|l| *l == want))
        .await
        .unwrap_or_else(|_| panic!("leader={want} not reached within {within:?}"))
        .unwrap_or_else(|_| panic!("leader election stopped"));
    started.elapsed()
}

fn holder(server: &TestApiServer) -> Option<String> {
    server
        .get("coordination.k8s.io", "leases", "weir", "weir-leader")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

fn elect(
    server: &TestApiServer,
    identity: &str,
    lease: Duration,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let election = LeaderElection::new(
        server.client(),
        "weir".into(),
        "weir-leader".into(),
        identity.into(),
        lease,
    );
    (rx, tokio::spawn(election.run(tx)))
}

#[tokio::test]
async fn exactly_one_replica_leads_and_the_next_takes_over() {
    let server = TestApiServer::start().await;
    let lease = Duration::from_secs(2);
    let (a, a_task) = elect(&server, "a", lease);
    wait_leader(&a, true, WAIT).await;
    let (b, b_task) = elect(&server, "b", lease);
    // b keeps checking for several lease periods and never leads while a renews.
    for _ in 0..8 {
        tokio::time::sleep(lease / 3).await;
        assert!(*a.borrow() && !*b.borrow());
        assert_eq!(holder(&server).as_deref(), Some("a"));
    }

    // a stops cleanly (its receivers are gone): it releases, and b takes over at its next
    // check, well within the lease duration.
    drop(a);
    a_task.await.unwrap();
    let took = wait_leader(&b, true, WAIT).await;
    assert!(took < lease, "took over after {took:?}");
    assert_eq!(holder(&server).as_deref(), Some("b"));

    // b dies without releasing: c takes over once b's lease expired.
    let (c, _c_task) = elect(&server, "c", lease);
    tokio::time::sleep(lease / 2).await;
    assert!(!*c.borrow());
    b_task.abort();
    let took = wait_leader(&c, true, WAIT).await;
    assert!(took <= lease * 2, "took over after {took:?}");
    assert_eq!(holder(&server).as_deref(), Some("c"));
    drop(b);
}

/// A replica as the binary wires it: status is written only while leading.
fn replica(
    server: &TestApiServer,
    identity: &'static str,
    statuses: watch::Receiver<Vec<StatusUpdate>>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (leading, election) = elect(server, identity, Duration::from_secs(2));
    let mut writer =
        StatusWriter::new(server.client(), OURS.to_string()).with_field_manager(identity);
    let mut is_leader = leading.clone();
    let mut statuses = statuses;
    let writing = tokio::spawn(async move {
        loop {
            if is_leader.wait_for(|l| *l).await.is_err() {
                return;
            }
            writer.forget();
            let current = statuses.borrow_and_update().clone();
            writer.write(&current).await;
            tokio::select! {
                r = statuses.changed() => if r.is_err() { return },
                r = is_leader.changed() => if r.is_err() { return },
            }
        }
    });
    drop(election);
    (leading, writing)
}

#[tokio::test]
async fn only_the_leader_writes_status() {
    let server = TestApiServer::start().await;
    server.apply(gateway_class("weir"));
    server.apply(gateway("gw"));
    server.apply(route("web"));
    let (statuses_tx, statuses) = watch::channel(updates(1, T0));
    let (a, a_writer) = replica(&server, "replica-a", statuses.clone());
    wait_leader(&a, true, WAIT).await;
    let (b, b_writer) = replica(&server, "replica-b", statuses);
    assert_eventually("the leader's patches", WAIT, || {
        let n = patches(&server).len();
        async move { (n == 3).then_some(()).ok_or(format!("{n} patches")) }
    })
    .await;
    statuses_tx.send_replace(updates(2, T1));
    assert_eventually("the leader's second patches", WAIT, || {
        let n = patches(&server).len();
        async move { (n == 5).then_some(()).ok_or(format!("{n} patches")) }
    })
    .await;
    assert!(!*b.borrow());
    assert!(patches(&server)
        .iter()
        .all(|p| p.contains("fieldManager=replica-a")));

    // The leader goes away (its election stops with it); b takes over and writes.
    a_writer.abort();
    drop(a);
    wait_leader(&b, true, WAIT).await;
    statuses_tx.send_replace(updates(3, T1));
    assert_eventually("the new leader's patches", WAIT, || {
        let n = patches(&server)
            .iter()
            .filter(|p| p.contains("fieldManager=replica-b"))
            .count();
        async move { (n == 2).then_some(()).ok_or(format!("{n} patches from b")) }
    })
    .await;
    b_writer.abort();
}

#[tokio::test]
async fn gateway_addresses_follow_the_load_balancer_service() {
    let server = TestApiServer::start().await;
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(watch_service_addresses(
        server.client(),
        "weir".into(),
        "weir-lb".into(),
        tx,
    ));
    let service = |ingress: Value| {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "weir-lb", "namespace": "weir"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": ingress}}})
    };
    let wait = |want: Vec<(&'static str, &'static str)>| {
        let rx = rx.clone();
        async move {
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(t, v)| (t.to_string(), v.to_string()))
                .collect();
            assert_eventually("the addresses", WAIT, || {
                let have = rx.borrow().clone();
                let want = want.clone();
                async move { (have == want).then_some(()).ok_or(format!("have {have:?}")) }
            })
            .await
        }
    };
    server.apply(service(json!([{"ip": "203.0.113.7"}])));
    wait(vec![("IPAddress", "203.0.113.7")]).await;
    server.apply(service(
        json!([{"hostname": "lb.example.com"}, {"ip": "203.0.113.8"}]),
    ));
    wait(vec![
        ("Hostname", "lb.example.com"),
        ("IPAddress", "203.0.113.8"),
    ])
    .await;
    server.delete("", "services", "weir", "weir-lb");
    wait(vec![]).await;
}

/// The leader's Service writes: create, merge-patch (other fields kept), delete; a create
/// of a Service that exists (our watch had not seen it) and a delete of one already gone
/// are not errors.
#[tokio::test]
async fn gateway_services_are_created_patched_and_deleted() {
    let api = TestApiServer::start().await;
    let client = api.client();
    let svc: weir_store::Service = serde_json::from_value(json!({
        "metadata": {"name": "weir-gw", "namespace": "infra",
            "labels": {"app.kubernetes.io/managed-by": "weir"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": "weir"},
            "ports": [{"name": "port-80", "port": 80, "targetPort": 20000}]}}))
    .unwrap();
    let key = ObjectKey::new("infra", "weir-gw");
    let w = write_services(&client, "weir", std::slice::from_ref(&svc), &[], &[]).await;
    assert_eq!((w.written, w.errors.len()), (1, 0));
    let stored = api.get("", "services", "infra", "weir-gw").unwrap();
    assert_eq!(stored["spec"]["ports"][0]["targetPort"], 20000);
    assert_eq!(
        stored["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "weir"
    );

    // Again: 409, not an error, nothing written.
    let w = write_services(&client, "weir", std::slice::from_ref(&svc), &[], &[]).await;
    assert_eq!((w.written, w.errors.len()), (0, 0));

    let patch = json!({"metadata": {"annotations": {"weir.dev/listener-ports": "80:20001"}},
        "spec": {"ports": [{"name": "port-80", "port": 80, "targetPort": 20001}]}});
    let w = write_services(&client, "weir", &[], &[(key.clone(), patch)], &[]).await;
    assert_eq!((w.written, w.errors.len()), (1, 0));
    let stored = api.get("", "services", "infra", "weir-gw").unwrap();
    assert_eq!(stored["spec"]["ports"][0]["targetPort"], 20001);
    assert_eq!(stored["spec"]["selector"]["app"], "weir");
    assert_eq!(
        stored["metadata"]["annotations"]["weir.dev/listener-ports"],
        "80:20001"
    );

    let w = write_services(&client, "weir", &[], &[], std::slice::from_ref(&key)).await;
    assert_eq!((w.written, w.errors.len()), (1, 0));
    assert!(api.get("", "services", "infra", "weir-gw").is_none());
    let w = write_services(&client, "weir", &[], &[], std::slice::from_ref(&key)).await;
    assert_eq!((w.written, w.errors.len()), (0, 0));
}

fn config_map(ns: &str, name: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": {"ca.crt": data}})
}

fn tls_secret(name: &str, crt: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "infra"},
        "data": {"tls.crt": crt, "tls.key": "a2V5"}})
}

fn secret_data(store: &Store, name: &str) -> Option<Vec<u8>> {
    store
        .secrets
        .get(&ObjectKey::new("infra", name))
        .and_then(|s| s.data.as_ref()?.get("tls.crt").map(|b| b.0.clone()))
}

/// ConfigMaps and Secrets are watched by metadata; only the ones a Gateway, our
/// GatewayClass or a BackendTLSPolicy names are read in full, again when they change, and
/// dropped when no longer named or deleted.
#[tokio::test]
async fn only_referenced_config_maps_and_secrets_are_read_in_full() {
    let server = TestApiServer::start().await;
    let big = "x".repeat(1 << 20);
    // 1 MiB of base64 ("xxx" and "yyy"): Secret data must decode.
    let (big_secret, big_secret_2) = ("eHh4".repeat(1 << 18), "eXl5".repeat(1 << 18));
    server.apply(gateway_class("weir"));
    let mut their_class = gateway_class("theirs");
    their_class["spec"]["controllerName"] = json!("example.com/other");
    server.apply(their_class);
    server.apply(gateway_with_certs("gw", &["used"]));
    let mut theirs = gateway_with_certs("their-gw", &["their-cert"]);
    theirs["spec"]["gatewayClassName"] = json!("theirs");
    server.apply(theirs);
    server.apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
        "metadata": {"name": "web-tls", "namespace": "apps"},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "validation": {"hostname": "web.example.com",
                "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]}}}),
    );
    server.apply(config_map("apps", "ca", "CA-1"));
    server.apply(config_map("apps", "big", &big));
    server.apply(tls_secret("used", "Y2VydC0x")); // cert-1
    server.apply(tls_secret("unused", &big_secret));
    server.apply(tls_secret("their-cert", "dGhlaXJz"));

    let rx = start_source(&server);
    // (the startup gate) The first store already holds what is referenced.
    let store = store_where(&rx, "the first store", |s| !s.is_empty()).await;
    assert_eq!(secret_data(&store, "used").as_deref(), Some(&b"cert-1"[..]));
    assert!(has(&store, Kind::ConfigMap, "apps", "ca"));
    assert!(!has(&store, Kind::ConfigMap, "apps", "big"));
    assert!(!has(&store, Kind::Secret, "infra", "unused"));
    assert!(
        !has(&store, Kind::Secret, "infra", "their-cert"),
        "another controller's Gateway makes us read nothing"
    );
    // Changes to unreferenced objects are seen as metadata only.
    server.apply(config_map("apps", "big", &format!("{big}y")));
    server.apply(tls_secret("unused", &big_secret_2));

    // (b) The referenced Secret changes: the new data arrives.
    server.apply(tls_secret("used", "Y2VydC0y")); // cert-2
    store_where(&rx, "the new certificate", |s| {
        secret_data(s, "used").as_deref() == Some(&b"cert-2"[..])
    })
    .await;

    // (c) A Gateway starts referencing an existing Secret: it is read, and the first store
    // with the new listener already holds it (the batch waits for the read).
    let mut changes = rx.clone();
    changes.mark_unchanged();
    server.apply(gateway_with_certs("gw", &["used", "unused"]));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the new listener never arrived");
        tokio::time::timeout(WAIT, changes.changed())
            .await
            .expect("a store in time")
            .expect("source running");
        let store = changes.borrow_and_update().clone();
        let listeners = store.gateways[&ObjectKey::new("infra", "gw")]
            .spec
            .listeners
            .len();
        if listeners == 3 {
            assert!(
                has(&store, Kind::Secret, "infra", "unused"),
                "the store with the new listener holds its Secret"
            );
            break;
        }
    }
    // (d) The referenced Secret is deleted: it leaves the store.
    server.delete("", "secrets", "infra", "unused");
    store_where(&rx, "the deleted Secret gone", |s| {
        !has(s, Kind::Secret, "infra", "unused")
    })
    .await;
    // No longer referenced: dropped; referenced again: read again.
    server.apply(gateway_with_certs("gw", &[]));
    store_where(&rx, "the unreferenced Secret dropped", |s| {
        !has(s, Kind::Secret, "infra", "used")
    })
    .await;
    server.apply(gateway_with_certs("gw", &["used"]));
    store_where(&rx, "the Secret referenced again", |s| {
        secret_data(s, "used").as_deref() == Some(&b"cert-2"[..])
    })
    .await;

    // (a) What nothing references was never sent in full, however often it changed.
    assert_eq!(server.full_reads("", "configmaps", "apps", "big"), 0);
    assert_eq!(server.full_reads("", "secrets", "infra", "their-cert"), 0);
    // "unused" was read once while referenced, never before.
    assert_eq!(server.full_reads("", "secrets", "infra", "unused"), 1);
    assert!(server.full_reads("", "secrets", "infra", "used") >= 3);
    let full_lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| {
            (r.path.ends_with("/secrets") || r.path.ends_with("/configmaps"))
                && !r.is_metadata_only()
        })
        .collect();
    assert!(full_lists.is_empty(), "{full_lists:#?}");
}

/// While reads of single objects fail, the source sends no first store (a Gateway would
/// start out without its certificate); once they succeed, the first store holds it.
#[tokio::test]
async fn the_first_store_waits_for_referenced_objects() {
    let server = TestApiServer::start().await;
    server.apply(gateway_class("weir"));
    server.apply(gateway_with_certs("gw", &["used"]));
    server.apply(tls_secret("used", "Y2VydC0x"));
    server.apply(tls_secret("unused", "Y2VydC0x"));
    server.refuse_gets(true);
    let rx = start_source(&server);
    assert_eventually("a read of the Secret was tried", WAIT, || async {
        let tried = server
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/secrets/used"));
        tried.then_some(()).ok_or_else(|| "no read yet".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.borrow().is_empty(), "no store before the Secret is read");
    server.refuse_gets(false);
    let store = store_where(&rx, "the first store", |s| !s.is_empty()).await;
    assert_eq!(secret_data(&store, "used").as_deref(), Some(&b"cert-1"[..]));
    assert!(!has(&store, Kind::Secret, "infra", "unused"));
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pool(ns: &str, name: &str, app: &str) -> Value {
    json!({"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": app}},
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": "epp", "port": {"number": 9002}}}})
}

/// The Pod reads: (path, query) of each list or watch of Pods.
fn pod_reads(server: &TestApiServer) -> Vec<(String, String)> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/pods"))
        .map(|r| (r.path, r.query))
        .collect()
}

/// Pods matter only as InferencePool endpoints: only namespaces with pools are watched (with
/// the pool's labels), Pods no pool selects are not kept, and the watch follows the pools.
#[tokio::test]
async fn pods_are_watched_only_where_inference_pools_select_them() {
    let server = TestApiServer::start().await;
    server.apply(gateway_class("weir"));
    server.apply(pool("models", "llm", "llm"));
    server.apply(pod("models", "llm-0", "llm", "10.0.0.1"));
    server.apply(pod("models", "web-0", "web", "10.0.0.2"));
    server.apply(pod("apps", "llm-1", "llm", "10.0.0.3"));
    server.apply(pod("busy", "noise-0", "noise", "10.0.0.4"));
    let rx = start_source(&server);
    let store = store_where(&rx, "the pool's Pod", |s| {
        has(s, Kind::InferencePool, "models", "llm") && has(s, Kind::Pod, "models", "llm-0")
    })
    .await;
    assert_eq!(
        store.pods.len(),
        1,
        "only the selected Pod: {:?}",
        store.pods.keys()
    );
    let reads = pod_reads(&server);
    assert!(
        reads
            .iter()
            .all(|(path, query)| path == "/api/v1/namespaces/models/pods"
                && query.contains("labelSelector=app%3Dllm")),
        "no cluster-wide or unselected Pod read: {reads:?}"
    );

    // A second pool in `models` with another selector: the namespace is relisted, and both
    // pools' Pods are kept (the unselected `noise` namespace still is not read).
    server.apply(pool("models", "web", "web"));
    store_where(&rx, "the second pool's Pod", |s| {
        has(s, Kind::Pod, "models", "web-0")
    })
    .await;
    // A pool in `apps`: its Pods come in.
    server.apply(pool("apps", "llm", "llm"));
    let store = store_where(&rx, "Pods of a namespace that gained a pool", |s| {
        has(s, Kind::Pod, "apps", "llm-1")
    })
    .await;
    assert_eq!(store.pods.len(), 3, "{:?}", store.pods.keys());
    // A Pod relabelled out of every pool leaves.
    server.apply(pod("apps", "llm-1", "other", "10.0.0.3"));
    store_where(&rx, "the relabelled Pod gone", |s| {
        !has(s, Kind::Pod, "apps", "llm-1")
    })
    .await;
    // The pools of `models` go: so do its Pods.
    server.delete(INFERENCE, "inferencepools", "models", "llm");
    server.delete(INFERENCE, "inferencepools", "models", "web");
    let store = store_where(&rx, "models' Pods gone", |s| {
        !has(s, Kind::Pod, "models", "llm-0") && !has(s, Kind::Pod, "models", "web-0")
    })
    .await;
    assert!(store.pods.is_empty(), "{:?}", store.pods.keys());
    assert!(
        pod_reads(&server)
            .iter()
            .all(|(path, _)| path.starts_with("/api/v1/namespaces/models/")
                || path.starts_with("/api/v1/namespaces/apps/")),
        "{:?}",
        pod_reads(&server)
    );
}

const INFERENCE: &str = "inference.networking.k8s.io";

/// Without the InferencePool CRD there is nothing Pods could serve: no Pod is read, and
/// the rest is served.
#[tokio::test]
async fn without_the_inference_pool_crd_no_pod_is_read() {
    let server = TestApiServer::start_with(weir_testkit::apiserver::TestApiServerOptions {
        unserved: vec!["inferencepools".into()],
        ..Default::default()
    })
    .await;
    server.apply(gateway_class("weir"));
    server.apply(pod("models", "llm-0", "llm", "10.0.0.1"));
    let rx = start_source(&server);
    let store = store_where(&rx, "the first store", |s| !s.is_empty()).await;
    assert!(store.pods.is_empty());
    assert!(pod_reads(&server).is_empty(), "{:?}", pod_reads(&server));
}
