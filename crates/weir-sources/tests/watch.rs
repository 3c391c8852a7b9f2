//! `FileSource::watch` against a real directory: each change on disk shows up in the store
//! sent on the channel, within a bounded wait.

// Test helpers outside #[test] functions: panicking is how they fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_sources::{FileError, FileSource};
use weir_store::{ObjectKey, Store};

const DEBOUNCE: Duration = Duration::from_millis(50);
/// Generous: CI machines can be slow; a passing run waits far less.
const WAIT: Duration = Duration::from_secs(15);

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  ports:
  - port: 8080
";

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
spec:
  gatewayClassName: weir
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
"
    )
}

fn route(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
spec:
  parentRefs: [{{name: web}}]
"
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

fn port(store: &Store) -> Option<i32> {
    Some(store.gateways.get(&key("web"))?.spec.listeners[0].port)
}

fn start(
    dir: &Path,
) -> (
    watch::Receiver<Arc<Store>>,
    JoinHandle<Result<(), FileError>>,
) {
    let (tx, rx) = watch::channel(Arc::new(Store::default()));
    let source = FileSource::new(
        dir,
        Box::new(|| Time(Timestamp::from_second(1_700_000_000).unwrap())),
    );
    let task = tokio::spawn(source.watch(DEBOUNCE, tx));
    (rx, task)
}

/// The first store sent for which `check` holds; panics after `WAIT`.
async fn wait_for(
    rx: &mut watch::Receiver<Arc<Store>>,
    what: &str,
    check: impl Fn(&Store) -> bool,
) -> Arc<Store> {
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            let store = rx.borrow_and_update().clone();
            if check(&store) {
                return store;
            }
            rx.changed().await.expect("the watch ended");
        }
    })
    .await;
    match waited {
        Ok(store) => store,
        Err(_) => panic!(
            "timed out after {WAIT:?} waiting for: {what}; last store: {:?}",
            rx.borrow()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_every_kind_of_change_without_restart() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    fs::write(root.join("svc.yaml"), SERVICE).unwrap();
    let (mut rx, task) = start(root);
    wait_for(&mut rx, "the first scan", |s| {
        s.services.contains_key(&key("echo"))
    })
    .await;

    // A new file.
    fs::write(root.join("gw.yaml"), gateway(80)).unwrap();
    wait_for(&mut rx, "the created gateway", |s| port(s) == Some(80)).await;

    // Rewritten in place (same length, so only the content tells).
    fs::write(root.join("gw.yaml"), gateway(81)).unwrap();
    let store = wait_for(&mut rx, "the rewritten gateway", |s| port(s) == Some(81)).await;
    assert_eq!(
        store.gateways[&key("web")].metadata.generation,
        Some(2),
        "one bump per spec change"
    );

    // Written to a hidden temporary file, then renamed into place (new file and replacing).
    fs::write(root.join(".route.yaml.tmp"), route("first")).unwrap();
    fs::rename(root.join(".route.yaml.tmp"), root.join("route.yaml")).unwrap();
    wait_for(&mut rx, "the renamed-in route", |s| {
        s.http_routes.contains_key(&key("first"))
    })
    .await;
    fs::write(root.join(".gw.yaml.swp"), gateway(82)).unwrap();
    fs::rename(root.join(".gw.yaml.swp"), root.join("gw.yaml")).unwrap();
    wait_for(&mut rx, "the gateway replaced by rename", |s| {
        port(s) == Some(82)
    })
    .await;

    // Deleted.
    fs::remove_file(root.join("svc.yaml")).unwrap();
    wait_for(&mut rx, "the service gone", |s| s.services.is_empty()).await;

    // A new subdirectory tree, with a file written right after the directories appear.
    fs::create_dir_all(root.join("team/a")).unwrap();
    fs::write(root.join("team/a/route.yaml"), route("nested")).unwrap();
    wait_for(&mut rx, "the route in a new subdirectory", |s| {
        s.http_routes.contains_key(&key("nested"))
    })
    .await;
    // And a later file in that subdirectory (it is watched, not just scanned once).
    fs::write(root.join("team/a/second.yml"), route("second")).unwrap();
    wait_for(&mut rx, "the second nested route", |s| {
        s.http_routes.contains_key(&key("second"))
    })
    .await;

    // The subdirectory removed as a whole.
    fs::remove_dir_all(root.join("team")).unwrap();
    let store = wait_for(&mut rx, "the nested routes gone", |s| {
        !s.http_routes.contains_key(&key("nested")) && !s.http_routes.contains_key(&key("second"))
    })
    .await;
    assert!(store.http_routes.contains_key(&key("first")));

    // A broken edit keeps the object serving and is recorded.
    fs::write(root.join("gw.yaml"), "apiVersion: [\n").unwrap();
    let store = wait_for(&mut rx, "the rejection of the broken file", |s| {
        !s.rejected.is_empty()
    })
    .await;
    assert_eq!(port(&store), Some(82));

    // Every receiver gone: the watch ends cleanly.
    drop(rx);
    let ended = tokio::time::timeout(WAIT, task).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_directory_being_replaced() {
    let parent = TempDir::new().unwrap();
    let root = parent.path().join("config");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("svc.yaml"), SERVICE).unwrap();
    let (mut rx, _task) = start(&root);
    wait_for(&mut rx, "the first scan", |s| s.services.len() == 1).await;

    // Replaced the way `rm -rf config && cp -r new config` does it.
    fs::remove_dir_all(&root).unwrap();
    fs::create_dir(&root).unwrap();
    fs::write(root.join("gw.yaml"), gateway(80)).unwrap();
    wait_for(&mut rx, "the new directory's contents", |s| {
        s.services.is_empty() && port(s) == Some(80)
    })
    .await;

    // And the new directory is watched.
    fs::write(root.join("svc.yaml"), SERVICE).unwrap();
    wait_for(&mut rx, "a file in the new directory", |s| {
        s.services.len() == 1
    })
    .await;
}

#[tokio::test]
async fn refuses_a_missing_directory() {
    let parent = TempDir::new().unwrap();
    let (tx, _rx) = watch::channel(Arc::new(Store::default()));
    let source = FileSource::new(
        parent.path().join("missing"),
        Box::new(|| Time(Timestamp::from_second(0).unwrap())),
    );
    let err = source.watch(DEBOUNCE, tx).await.unwrap_err();
    assert!(matches!(err, FileError::DirNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
