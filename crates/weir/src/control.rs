//! The control loop: each new store from a source is translated into a snapshot and
//! statuses, the snapshot is swapped into the proxy in one store, and the proxy's sockets are
//! brought in line with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::watch;
use weir_proxy::Proxy;
use weir_snapshot::{Snapshot, SnapshotHandle};
use weir_store::Store;
use weir_translate::{preserve_transition_times, translate_with, Input, Memo, ObjectStatus};

use crate::metrics::ControlMetrics;

/// The computed statuses, as served by `/status`. Serialized when `/status` is asked for,
/// not on every rebuild: rebuilds are on the propagation path, `/status` reads are rare.
#[derive(Debug, Default)]
pub struct StatusView {
    pub statuses: Vec<ObjectStatus>,
}

impl StatusView {
    /// `{"items": [...]}` in Kubernetes shape.
    pub fn to_json(&self) -> Bytes {
        let items: Vec<serde_json::Value> = self
            .statuses
            .iter()
            .map(ObjectStatus::to_resource_json)
            .collect();
        serde_json::to_vec_pretty(&serde_json::json!({ "items": items }))
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// State shared between the control loop, the proxy and the admin server.
pub struct Shared {
    pub snapshot: Arc<SnapshotHandle>,
    pub status: ArcSwap<StatusView>,
    /// True once the first snapshot is live and its sockets are bound; false again while
    /// shutting down.
    pub ready: AtomicBool,
    /// Bumped (to the snapshot generation) whenever `status` is replaced, for status writers.
    pub status_changed: watch::Sender<u64>,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            status: ArcSwap::from_pointee(StatusView::default()),
            ready: AtomicBool::new(false),
            status_changed: watch::channel(0).0,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Translation settings that do not change while running.
#[derive(Clone)]
pub struct Translator {
    pub controller_name: String,
    /// Whether a Gateway's static IPAddress can be served here (see
    /// `weir_translate::Input::address_usable`).
    pub address_usable: fn(std::net::IpAddr) -> bool,
    /// How Gateways that request no address get one (`--gateway-address-pool`).
    pub addressing: weir_translate::Addressing,
    /// Whether global rate limits have a Redis (`--rate-limit-redis`).
    pub rate_limit_redis: bool,
}

/// What the control loop rebuilds from: the latest store from the source, and the addresses
/// to report on Gateways (static in file mode; from a Service or the pod IP in a cluster).
pub struct Inputs {
    pub stores: watch::Receiver<Arc<Store>>,
    pub addresses: watch::Receiver<Vec<(String, String)>>,
}

/// One translation step's result, built off the async runtime.
struct Built {
    snapshot: Snapshot,
    statuses: Vec<ObjectStatus>,
    /// For the next translation: unchanged HTTPRoutes are replayed from it.
    memo: Memo,
}

impl Translator {
    fn build(
        &self,
        store: &Store,
        addresses: &[(String, String)],
        previous: &[ObjectStatus],
        memo: Memo,
    ) -> Built {
        let output = translate_with(
            &Input {
                store,
                controller_name: &self.controller_name,
                now: Time(k8s_openapi::jiff::Timestamp::now()),
                gateway_addresses: addresses,
                address_usable: &self.address_usable,
                addressing: &self.addressing,
                rate_limit_redis: self.rate_limit_redis,
            },
            memo,
        );
        let mut statuses = output.statuses;
        preserve_transition_times(previous, &mut statuses);
        Built {
            snapshot: output.snapshot,
            statuses,
            memo: output.memo,
        }
    }
}

/// Whether `ip` is an address of this host, i.e. one a Gateway's `spec.addresses` can bind:
/// binding a port-0 socket on it succeeds.
pub fn address_of_this_host(ip: std::net::IpAddr) -> bool {
    std::net::TcpListener::bind((ip, 0)).is_ok()
}

/// Rebuild whenever the store or the addresses change, until the store's sender is dropped.
pub async fn run(
    mut inputs: Inputs,
    translator: Translator,
    shared: Arc<Shared>,
    proxy: Arc<Proxy>,
    metrics: ControlMetrics,
) {
    let mut generation = 0u64;
    let mut memo = Memo::default();
    let mut have_store = false;
    let mut addresses_open = true;
    loop {
        // The store channel's initial value is an empty placeholder: build nothing before the
        // source's first complete read, so readiness means "serving the configuration".
        tokio::select! {
            changed = inputs.stores.changed() => {
                if changed.is_err() {
                    return;
                }
                have_store = true;
            }
            changed = inputs.addresses.changed(), if addresses_open => {
                if changed.is_err() {
                    addresses_open = false;
                    continue;
                }
                if !have_store {
                    continue;
                }
            }
        }
        let store = inputs.stores.borrow_and_update().clone();
        let addresses = inputs.addresses.borrow_and_update().clone();
        let previous = shared.status.load_full();
        let started = Instant::now();
        let translator_ = translator.clone();
        let memo_ = std::mem::take(&mut memo);
        let built = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let built = translator_.build(&store, &addresses, &previous.statuses, memo_);
            // Dropping the previous statuses is work too: do it here, off the runtime.
            drop(previous);
            (built, store, started.elapsed())
        })
        .await;
        let (built, store, translate_time) = match built {
            Ok(b) => b,
            Err(err) => {
                // A panic in translation must not take the proxy down: keep serving the last
                // good snapshot.
                tracing::error!(error = %err, "translation failed; serving the previous snapshot");
                metrics.reloads.with_label_values(&["failed"]).inc();
                continue;
            }
        };
        metrics
            .translation_seconds
            .observe(started.elapsed().as_secs_f64());
        generation += 1;
        memo = built.memo;
        let replayed = memo.replayed();
        let mut snapshot = built.snapshot;
        snapshot.generation = generation;
        let sockets = snapshot.sockets.len();
        let old_snapshot = shared.snapshot.swap(Arc::new(snapshot));
        let old_status = shared.status.swap(Arc::new(StatusView {
            statuses: built.statuses,
        }));
        shared.status_changed.send_replace(generation);
        metrics.snapshot_generation.set(generation as i64);
        metrics.objects.set(store.len() as i64);
        let source_ok = store.errors.is_empty() && store.rejected.is_empty();
        metrics
            .reloads
            .with_label_values(&[if source_ok { "ok" } else { "failed" }])
            .inc();
        for err in proxy.sync_listeners().await {
            tracing::error!(error = %err, "could not open listener socket");
        }
        tracing::info!(
            generation,
            sockets,
            objects = store.len(),
            translate_us = translate_time.as_micros() as u64,
            replayed_routes = replayed,
            total_us = started.elapsed().as_micros() as u64,
            "snapshot live"
        );
        // The old snapshot, statuses and store may be large: free them off the runtime
        // threads (requests still holding the old snapshot keep it alive until they end).
        tokio::task::spawn_blocking(move || drop((old_snapshot, old_status, store)));
        shared.ready.store(true, Ordering::Release);
    }
}
