//! The test API server, driven by the real kube-rs client over HTTP.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use weir_testkit::apiserver::{TestApiServer, TestApiServerOptions};

const WAIT: Duration = Duration::from_secs(5);

fn service(name: &str, port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"ports": [{"port": port}]},
    })
}

async fn next_event<S, K>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch event in time")
        .expect("the stream is open")
        .expect("a decodable event")
}

/// The next event that is not a BOOKMARK.
async fn next_change<S, K>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        match next_event(stream).await {
            WatchEvent::Bookmark(_) => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn list_get_create_patch_status_replace_delete() {
    let server = TestApiServer::start().await;
    server.apply(service("a", 80));
    let api: Api<Service> = Api::namespaced(server.client(), "default");

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let a = api.get("a").await.unwrap();
    assert_eq!(a.metadata.generation, Some(1));
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());

    let b: Service = serde_json::from_value(service("b", 81)).unwrap();
    let created = api.create(&PostParams::default(), &b).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("b"));
    let err = api.create(&PostParams::default(), &b).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );

    // Status patches change status only, and not the generation.
    let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
    let patched = api
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(1));
    let ingress = patched
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("10.0.0.1"));
    // Server-side apply of status is approximated as a merge.
    let apply = json!({"apiVersion": "v1", "kind": "Service",
        "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}});
    let applied = api
        .patch_status("a", &PatchParams::apply("test"), &Patch::Apply(&apply))
        .await
        .unwrap();
    let ingress = applied
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].hostname.as_deref(), Some("lb.example"));

    // A spec change bumps the generation; a stale resourceVersion conflicts.
    let mut a = api.get("a").await.unwrap();
    let stale = a.clone();
    a.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 8080;
    let replaced = api.replace("a", &PostParams::default(), &a).await.unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert!(replaced.status.is_some(), "replace keeps status");
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );

    api.delete("b", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("b").await.unwrap().is_none());
    assert!(server.get("", "services", "default", "b").is_none());
    let writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert!(writes
        .iter()
        .any(|r| r.method == "PATCH" && r.path.ends_with("/a/status")));
}

#[tokio::test]
async fn field_and_label_selectors_filter_lists() {
    let server = TestApiServer::start().await;
    for (name, ty) in [("tls", "kubernetes.io/tls"), ("opaque", "Opaque")] {
        server.apply(json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
            "metadata": {"name": name, "namespace": "ns1"}}));
    }
    server.apply(service("a", 80));
    server.apply(service("b", 80));
    let secrets: Api<Secret> = Api::all(server.client());
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    let names: Vec<_> = tls
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["tls"]);
    let services: Api<Service> = Api::all(server.client());
    let b = services
        .list(&ListParams::default().labels("app=b"))
        .await
        .unwrap();
    assert_eq!(b.items.len(), 1);
}

#[tokio::test]
async fn watch_streams_changes_and_bookmarks() {
    let server = TestApiServer::start_with(TestApiServerOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    server.apply(service("a", 80));
    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();

    server.apply(service("b", 80));
    assert!(
        matches!(next_change(&mut stream).await, WatchEvent::Added(s) if s.metadata.name.as_deref() == Some("b"))
    );
    server.apply(service("b", 81));
    assert!(matches!(
        next_change(&mut stream).await,
        WatchEvent::Modified(_)
    ));
    server.delete("", "services", "default", "a");
    assert!(
        matches!(next_change(&mut stream).await, WatchEvent::Deleted(s) if s.metadata.name.as_deref() == Some("a"))
    );

    // Bookmarks carry the latest version, even for changes to other kinds.
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    let latest = server.resource_version().to_string();
    loop {
        if let WatchEvent::Bookmark(b) = next_event(&mut stream).await {
            if b.metadata.resource_version == latest {
                break;
            }
        }
    }
    // ... but never the other kind's objects themselves.
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "y", "namespace": "default"}}));
    server.apply(service("c", 80));
    assert!(
        matches!(next_change(&mut stream).await, WatchEvent::Added(s) if s.metadata.name.as_deref() == Some("c"))
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410_gone() {
    let server = TestApiServer::start().await;
    server.apply(service("a", 80));
    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let old = server.resource_version().to_string();
    server.apply(service("b", 80));
    server.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // A relist gives a version that can be watched again.
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    server.apply(service("c", 80));
    assert!(matches!(
        next_change(&mut stream).await,
        WatchEvent::Added(_)
    ));
}

#[tokio::test]
async fn cut_watches_end_streams_and_refused_watches_fail() {
    let server = TestApiServer::start().await;
    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    server.cut_watches();
    let end = tokio::time::timeout(WAIT, async {
        while let Some(item) = stream.next().await {
            if let Ok(WatchEvent::Added(_) | WatchEvent::Modified(_)) = item {
                panic!("unexpected change");
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ended after the cut");

    server.refuse_watches(true);
    let mut refused = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let err = tokio::time::timeout(WAIT, refused.next()).await.unwrap();
    assert!(
        matches!(err, Some(Err(kube::Error::Api(ref s))) if s.code == 500),
        "{err:?}"
    );
    server.refuse_watches(false);
    // Resuming from the same version replays what happened meanwhile.
    server.apply(service("late", 80));
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        next_change(&mut stream).await,
        WatchEvent::Added(_)
    ));
}

#[tokio::test]
async fn watch_with_a_selector_sees_objects_leave_and_enter_it() {
    let server = TestApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "default");
    let rv = server.resource_version().to_string();
    let wp = WatchParams::default().fields("type=kubernetes.io/tls");
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let secret = |ty: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
        "metadata": {"name": "s", "namespace": "default"}})
    };
    server.apply(secret("Opaque"));
    server.apply(secret("kubernetes.io/tls"));
    assert!(matches!(
        next_change(&mut stream).await,
        WatchEvent::Added(_)
    ));
    server.apply(secret("Opaque"));
    assert!(matches!(
        next_change(&mut stream).await,
        WatchEvent::Deleted(_)
    ));
}

#[tokio::test]
async fn leases_use_optimistic_concurrency() {
    let server = TestApiServer::start().await;
    let api: Api<Lease> = Api::namespaced(server.client(), "weir");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "weir", "namespace": "weir"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 2},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let updated = api
        .replace("weir", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_eq!(updated.spec.unwrap().holder_identity.as_deref(), Some("b"));
    let mut theirs = created;
    theirs.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = api
        .replace("weir", &PostParams::default(), &theirs)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
}

/// kube-rs' metadata reads (list_metadata, get_metadata, and a watcher of
/// `PartialObjectMeta`) get `PartialObjectMetadata`: metadata without the data,
/// honouring field selectors, and none of them counts as a full read.
#[tokio::test]
async fn metadata_only_reads_carry_no_data() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let server = TestApiServer::start().await;
    let big = "x".repeat(64 * 1024);
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "ns1", "labels": {"a": "b"}},
        "data": {"blob": big}}));
    for (name, ty) in [("tls", "kubernetes.io/tls"), ("opaque", "Opaque")] {
        server.apply(json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
            "metadata": {"name": name, "namespace": "ns1"}, "data": {"k": "dmFsdWU="}}));
    }
    let cms: Api<ConfigMap> = Api::all(server.client());
    let list = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(item.metadata.name.as_deref(), Some("big"));
    assert_eq!(
        item.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("a"))
            .map(String::as_str),
        Some("b")
    );
    assert!(item.metadata.resource_version.is_some());
    let ns1: Api<ConfigMap> = Api::namespaced(server.client(), "ns1");
    let meta = ns1.get_metadata("big").await.unwrap();
    assert_eq!(meta.metadata.uid, item.metadata.uid);
    // The raw answers hold no data at all.
    let raw = server
        .client()
        .request_text(
            http::Request::get("/api/v1/namespaces/ns1/configmaps/big")
                .header(
                    "accept",
                    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
                )
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        !raw.contains("blob") && raw.contains("\"kind\":\"PartialObjectMetadata\""),
        "{raw}"
    );
    assert_eq!(server.full_reads("", "configmaps", "ns1", "big"), 0);

    let secrets: Api<Secret> = Api::all(server.client());
    let tls = secrets
        .list_metadata(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    let names: Vec<_> = tls
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["tls"]);

    // The metadata watcher (a watcher of `PartialObjectMeta`): the initial list, then a
    // change, as metadata.
    let metas: Api<kube::core::PartialObjectMeta<ConfigMap>> = Api::all(server.client());
    let mut events =
        kube::runtime::watcher::watcher(metas, kube::runtime::watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(kube::runtime::watcher::Event::InitDone)) {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an event in time")
            .expect("open")
            .expect("decodable");
        seen.push(event);
    }
    assert!(seen.iter().any(|e| matches!(e,
        kube::runtime::watcher::Event::InitApply(m) if m.metadata.name.as_deref() == Some("big"))));
    let before = item.metadata.resource_version.clone();
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "ns1"}, "data": {"blob": "changed"}}));
    let changed = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("the change in time")
        .expect("open")
        .expect("decodable");
    match changed {
        kube::runtime::watcher::Event::Apply(m) => {
            assert_ne!(m.metadata.resource_version, before);
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    assert_eq!(server.full_reads("", "configmaps", "ns1", "big"), 0);
    assert!(server
        .requests()
        .iter()
        .all(|r| r.path.ends_with("/big") || r.is_metadata_only()));

    // A full get counts.
    ns1.get("big").await.unwrap();
    assert_eq!(server.full_reads("", "configmaps", "ns1", "big"), 1);
}
