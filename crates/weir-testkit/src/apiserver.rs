//! A test API server: just enough of the Kubernetes API, over real HTTP, to drive the real
//! kube-rs client (and kube-runtime watchers) in tests. It is not a kube-apiserver: there is
//! no authentication, admission, validation, defaulting or field ownership.
//!
//! What it serves, for any resource (typed by URL, no discovery needed):
//! - `GET` list (`labelSelector` / `fieldSelector` equality, no paging: `limit` and
//!   `continue` are ignored and every item is returned) and get;
//! - metadata-only reads: a list, get or watch whose `Accept` asks for
//!   `as=PartialObjectMetadataList` / `as=PartialObjectMetadata` (`g=meta.k8s.io`, `v=v1`)
//!   gets `meta.k8s.io/v1` `PartialObjectMetadata` objects (metadata alone), as kube-rs'
//!   `metadata_watcher` expects;
//! - `GET ?watch=true`: newline-delimited watch events after `resourceVersion` from a bounded
//!   history (`410 Gone` as an `ERROR` event when it is older than the history), BOOKMARKs
//!   every [`TestApiServerOptions::bookmark_interval`] when `allowWatchBookmarks=true`, ends
//!   after `timeoutSeconds`; `resourceVersion` 0 / unset or `sendInitialEvents=true` replay
//!   the current state as ADDED first;
//! - `POST` create, `PUT` replace (a stale `metadata.resourceVersion` → 409 Conflict),
//!   `DELETE`;
//! - `PATCH` of the object or its `/status` with `application/merge-patch+json`,
//!   `application/apply-patch+yaml` (server-side apply approximated as a merge patch of a
//!   JSON body: no managed fields, no conflicts) and `application/json-patch+json`
//!   (add/replace/remove/test). A `metadata.resourceVersion` in a patch is a precondition.
//!
//! Like an API server it assigns `uid`, `creationTimestamp` and a global, monotonically
//! increasing `resourceVersion`, bumps `generation` when `spec` changes (status writes do not),
//! and keeps `status` out of main-resource writes (only `/status` changes it).
//!
//! Test controls ([`TestApiServer::apply`], [`delete`](TestApiServer::delete),
//! [`compact`](TestApiServer::compact), [`cut_watches`](TestApiServer::cut_watches),
//! [`refuse_watches`](TestApiServer::refuse_watches),
//! [`refuse_gets`](TestApiServer::refuse_gets), [`requests`](TestApiServer::requests),
//! [`full_reads`](TestApiServer::full_reads)) let a test change the world, break watches on
//! purpose, and see what a client read.

mod handler;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use store::{Key, Objects, Part, Resource};

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string.
    pub query: String,
    /// The `Accept` header (empty without one).
    pub accept: String,
}

impl RequestRecord {
    /// A write (`POST`, `PUT`, `PATCH`, `DELETE`).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    pub fn is_watch(&self) -> bool {
        self.method == "GET"
            && (self.query.contains("watch=true") || self.query.contains("watch=1"))
    }

    /// A read that asked for `PartialObjectMetadata` (metadata alone).
    pub fn is_metadata_only(&self) -> bool {
        handler::is_metadata_only(&self.accept)
    }
}

/// Tuning for [`TestApiServer::start_with`].
#[derive(Clone, Debug)]
pub struct TestApiServerOptions {
    /// How often open watches (that asked for them) get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How many events the history keeps; a watch from before the oldest gets 410 Gone.
    pub history_limit: usize,
    /// Resources this server does not serve (404 for every request): a plural, as for a CRD
    /// that is not installed (`tcproutes` in a cluster with only the v1.5 standard
    /// channel), or `plural/version` for one version a CRD does not serve (`tcproutes/v1`
    /// for a pre-v1.6 TCPRoute CRD, which serves only `v1alpha2`). Every other version of a
    /// served resource reads and writes the same objects, as with a CRD whose versions
    /// share one schema (conversion strategy `None`).
    pub unserved: Vec<String>,
}

impl Default for TestApiServerOptions {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(1),
            history_limit: 1000,
            unserved: Vec::new(),
        }
    }
}

/// State shared by the server's connections and the test controls.
pub(crate) struct Shared {
    objects: Mutex<Objects>,
    requests: Mutex<Vec<RequestRecord>>,
    /// How many times each object was sent in full (list item, get, watch event).
    full_reads: Mutex<BTreeMap<Key, usize>>,
    cut: tokio::sync::watch::Sender<u64>,
    refuse_watches: AtomicBool,
    refuse_gets: AtomicBool,
    bookmark_interval: Duration,
    pub(crate) unserved: Vec<String>,
}

impl Shared {
    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, record: RequestRecord) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    fn count_full_read(&self, key: &Key) {
        *self
            .full_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
    }

    fn cut_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cut.subscribe()
    }

    fn watches_refused(&self) -> bool {
        self.refuse_watches.load(Ordering::SeqCst)
    }

    fn gets_refused(&self) -> bool {
        self.refuse_gets.load(Ordering::SeqCst)
    }
}

/// The test API server (see the module docs). Stops when dropped.
pub struct TestApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TestApiServer {
    /// Serve on 127.0.0.1 on a free port, with default options.
    pub async fn start() -> TestApiServer {
        Self::start_with(TestApiServerOptions::default()).await
    }

    pub async fn start_with(options: TestApiServerOptions) -> TestApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test API server: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("test API server: local addr");
        let shared = Arc::new(Shared {
            objects: Mutex::new(Objects::new(options.history_limit)),
            requests: Mutex::new(Vec::new()),
            full_reads: Mutex::new(BTreeMap::new()),
            cut: tokio::sync::watch::channel(0).0,
            refuse_watches: AtomicBool::new(false),
            refuse_gets: AtomicBool::new(false),
            bookmark_interval: options.bookmark_interval,
            unserved: options.unserved,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        TestApiServer {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file in `dir` pointing at this server (no auth), for `weir run
    /// --kubeconfig`.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\nusers:\n- name: test\n  user: {{}}\n",
                self.url()
            ),
        )
        .expect("writing the kubeconfig");
        path
    }

    /// A real kube-rs client talking to this server (no auth, namespace `default`).
    pub fn client(&self) -> kube::Client {
        let uri: http::Uri = self.url().parse().expect("test API server url");
        kube::Client::try_from(kube::Config::new(uri)).expect("kube client for the test API server")
    }

    /// Create or replace an object (everything, including `status`), as a test fixture.
    /// `apiVersion`, `kind` and `metadata.name` are required. Returns the stored object.
    pub fn apply(&self, object: Value) -> Value {
        let (resource, _version) =
            Resource::of(&object).expect("apply: object needs apiVersion and kind");
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .expect("apply: object needs metadata.name")
            .to_string();
        let namespace = if resource.is_cluster_scoped() {
            String::new()
        } else {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        };
        let key = Key {
            resource,
            namespace,
            name,
        };
        let mut objects = self.shared.objects();
        let mut object = object;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let stored = if objects.get(&key).is_some() {
            objects.replace(&key, object, Part::All)
        } else {
            objects.create(key, object)
        };
        stored.expect("apply: store the object")
    }

    fn key(group: &str, plural: &str, namespace: &str, name: &str) -> Key {
        let resource = Resource::new(group, plural);
        Key {
            namespace: if resource.is_cluster_scoped() {
                String::new()
            } else {
                namespace.to_string()
            },
            resource,
            name: name.to_string(),
        }
    }

    /// Delete an object (`namespace` is ignored for cluster-scoped resources); returns the
    /// deleted object if it existed.
    pub fn delete(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .objects()
            .delete(&Self::key(group, plural, namespace, name))
            .ok()
    }

    /// The stored object, without `apiVersion`/`kind` guarantees.
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .objects()
            .get(&Self::key(group, plural, namespace, name))
            .cloned()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.objects().resource_version()
    }

    /// Drop the event history: a watch from any resourceVersion before now gets 410 Gone
    /// (a list returns a newer resourceVersion, so a relist recovers).
    pub fn compact(&self) {
        self.shared.objects().compact();
    }

    /// End every open watch stream now (clients should resume from their last version).
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// While `true`, new watch requests get 500 (watchers back off and retry).
    pub fn refuse_watches(&self, refuse: bool) {
        self.shared.refuse_watches.store(refuse, Ordering::SeqCst);
    }

    /// While `true`, reads of one named object in full (`GET .../NAME`, not
    /// metadata-only) get 500.
    pub fn refuse_gets(&self, refuse: bool) {
        self.shared.refuse_gets.store(refuse, Ordering::SeqCst);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times the object was sent to a client in full: as a list item, a get or a
    /// watch event (metadata-only reads do not count). `namespace` is ignored for
    /// cluster-scoped resources.
    pub fn full_reads(&self, group: &str, plural: &str, namespace: &str, name: &str) -> usize {
        self.shared
            .full_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::key(group, plural, namespace, name))
            .copied()
            .unwrap_or(0)
    }

    /// Forget the request log (so a test can assert on what follows).
    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in the set, so stopping the server (aborting this task) ends them.
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handler::handle(shared.clone(), req));
            // A client going away mid-request is not the server's problem.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
