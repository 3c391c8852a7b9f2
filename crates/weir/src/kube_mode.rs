//! Kubernetes mode wiring: the kube source feeding the store, Gateway addresses from a
//! Service or the pod IP (shared mode, `--gateway-service`), leader election, and what only
//! the leader runs: the status writer and (without `--gateway-service`) the writer of one
//! Service per Gateway.

use std::sync::Arc;

use anyhow::Context;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_sources::kube::{
    connect, watch_service_addresses, write_services, KubeSource, LeaderElection, StatusUpdate,
    StatusWriter,
};

use weir_store::{Service, Store};
use weir_translate::services::{self, ServiceAddressing};

use crate::cli::RunArgs;
use crate::control::Shared;

/// The channels the control loop reads in Kubernetes mode, and the tasks behind them.
pub struct KubeInputs {
    pub stores: watch::Receiver<Arc<Store>>,
    pub addresses: watch::Receiver<Vec<(String, String)>>,
    /// Background tasks; aborted on shutdown.
    pub tasks: Vec<JoinHandle<()>>,
    /// The leader-election task: on shutdown it releases the Lease, so it is awaited.
    pub election: JoinHandle<()>,
}

/// Connect to the cluster and start the source, the address watch, leader election and the
/// status writer. `stop` turning true releases the Lease.
pub async fn start(
    args: &RunArgs,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    registry: &prometheus::Registry,
) -> anyhow::Result<KubeInputs> {
    let metrics = StatusMetrics::register(registry).context("registering metrics")?;
    let client = connect(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API (use --config-dir for file mode)")?;
    let mut tasks = Vec::new();

    let (store_tx, stores) = watch::channel(Arc::new(Store::default()));
    let source = KubeSource::new(client.clone(), args.gateway_class_controller.clone());
    let debounce = args.debounce;
    tasks.push(tokio::spawn(async move {
        if let Err(err) = source.run(debounce, store_tx).await {
            tracing::error!(error = %err, "Kubernetes source stopped; serving the last good snapshot");
        }
    }));

    let (addresses_tx, addresses) = watch::channel(pod_addresses());
    match args.gateway_service.clone() {
        Some((namespace, name)) => {
            let (ingress_tx, ingress) = watch::channel(Vec::new());
            tasks.push(tokio::spawn(watch_service_addresses(
                client.clone(),
                namespace.clone(),
                name.clone(),
                ingress_tx,
            )));
            tasks.push(tokio::spawn(choose_addresses(
                ingress,
                stores.clone(),
                namespace,
                name,
                addresses_tx,
            )));
        }
        // No Service to follow: the pod IP stays the address (the sender may go).
        None => drop(addresses_tx),
    }

    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| env("POD_NAMESPACE"))
        .unwrap_or_else(|| "default".to_string());
    let identity = identity();
    tracing::info!(%namespace, lease = %args.leader_election_id, %identity, "leader election");
    let (leader_tx, leader_rx) = watch::channel(false);
    let election = LeaderElection::new(
        client.clone(),
        namespace,
        args.leader_election_id.clone(),
        identity,
        args.lease_duration,
    );
    let mut stop_election = stop;
    let election = tokio::spawn(election.run_until(leader_tx, async move {
        let _ = stop_election.wait_for(|s| *s).await;
    }));
    if let Some(settings) = service_addressing(args) {
        tasks.push(tokio::spawn(write_gateway_services(
            client.clone(),
            args.gateway_class_controller.clone(),
            settings,
            stores.clone(),
            leader_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(write_status(
        StatusWriter::new(client, args.gateway_class_controller.clone()),
        shared,
        leader_rx,
        metrics,
    )));
    Ok(KubeInputs {
        stores,
        addresses,
        tasks,
        election,
    })
}

/// Gateway addresses with `--gateway-service`: its load balancer ingress when it has one,
/// else the ready endpoints of that Service (the pod IPs of the Weir replicas behind it),
/// else this pod's IP.
async fn choose_addresses(
    mut ingress: watch::Receiver<Vec<(String, String)>>,
    mut stores: watch::Receiver<Arc<Store>>,
    namespace: String,
    name: String,
    tx: watch::Sender<Vec<(String, String)>>,
) {
    let mut ingress_open = true;
    loop {
        let from_ingress = ingress.borrow_and_update().clone();
        let store = stores.borrow_and_update().clone();
        let chosen = if !from_ingress.is_empty() {
            from_ingress
        } else {
            let replicas = replica_addresses(&store, &namespace, &name);
            if replicas.is_empty() {
                pod_addresses()
            } else {
                replicas
            }
        };
        tx.send_if_modified(|current| {
            let changed = *current != chosen;
            if changed {
                tracing::info!(addresses = ?chosen, "gateway addresses");
                *current = chosen;
            }
            changed
        });
        tokio::select! {
            r = ingress.changed(), if ingress_open => if r.is_err() { ingress_open = false },
            r = stores.changed() => if r.is_err() { return },
        }
    }
}

/// Without `--rate-limit-replicas`, with `--gateway-service`: split local rate limits
/// across the ready endpoints of that Service (the Weir Pods behind it, at least 1), and
/// again whenever that count changes. `None` when the flag was given or there is no
/// Service to count.
pub fn follow_replicas(
    args: &RunArgs,
    stores: &watch::Receiver<Arc<Store>>,
    proxy: &Arc<weir_proxy::Proxy>,
) -> Option<JoinHandle<()>> {
    if args.rate_limit_replicas.is_some() {
        return None;
    }
    let (namespace, name) = args.gateway_service.clone()?;
    let mut stores = stores.clone();
    let proxy = proxy.clone();
    Some(tokio::spawn(async move {
        loop {
            let store = stores.borrow_and_update().clone();
            let ready = replica_addresses(&store, &namespace, &name).len();
            let replicas = u32::try_from(ready).unwrap_or(u32::MAX).clamp(1, 10_000);
            if proxy.set_rate_limit_replicas(replicas) {
                tracing::info!(
                    replicas,
                    service = %format!("{namespace}/{name}"),
                    "local rate limits split across the ready Pods behind --gateway-service"
                );
            }
            if stores.changed().await.is_err() {
                return;
            }
        }
    }))
}

/// Ready endpoint IPs of Service `namespace/name`, sorted and unique.
fn replica_addresses(store: &Store, namespace: &str, name: &str) -> Vec<(String, String)> {
    let mut ips: Vec<String> = store
        .endpoint_slices
        .iter()
        .filter(|(key, slice)| {
            *key.namespace == *namespace
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .is_some_and(|s| s == name)
        })
        .flat_map(|(_, slice)| slice.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| ("IPAddress".to_string(), ip))
        .collect()
}

/// Kubernetes mode without `--gateway-service`: one Service per Gateway, with these pod
/// ports and this selector. `None` in shared mode.
pub fn service_addressing(args: &RunArgs) -> Option<ServiceAddressing> {
    if args.gateway_service.is_some() {
        return None;
    }
    Some(ServiceAddressing {
        port_range: args.gateway_port_range.clone(),
        pod_selector: args.gateway_pod_selector.clone(),
    })
}

/// Services this leader wrote (or deleted) that its store may not show yet. Planning from a
/// store that lags our own writes could hand a pod port we just recorded for one Gateway to
/// another (an older Gateway appearing in the same batch), so plans see these instead until
/// the store shows the same resourceVersion (or the deletion), or for [`Self::TRUST`] at most.
#[derive(Default)]
struct RecentWrites {
    /// `None`: deleted.
    services: std::collections::HashMap<weir_store::ObjectKey, (Option<Arc<Service>>, Instant)>,
}

impl RecentWrites {
    const TRUST: Duration = Duration::from_secs(30);

    fn record(&mut self, writes: &weir_sources::kube::ServiceWrites) {
        let now = Instant::now();
        for svc in &writes.stored {
            let key = weir_store::ObjectKey::of(&svc.metadata);
            self.services
                .insert(key, (Some(Arc::new(svc.clone())), now));
        }
        for key in &writes.deleted {
            self.services.insert(key.clone(), (None, now));
        }
    }

    /// `store` with our recent writes it does not show yet.
    fn overlay(&mut self, store: &Arc<Store>) -> Arc<Store> {
        self.services.retain(|key, (svc, at)| {
            let caught_up = match svc {
                Some(svc) => store
                    .services
                    .get(key)
                    .is_some_and(|s| s.metadata.resource_version == svc.metadata.resource_version),
                None => !store.services.contains_key(key),
            };
            !caught_up && at.elapsed() < Self::TRUST
        });
        if self.services.is_empty() {
            return store.clone();
        }
        let mut view = (**store).clone();
        for (key, (svc, _)) in &self.services {
            match svc {
                Some(svc) => view.apply(weir_store::Object::Service(svc.clone())),
                None => {
                    view.delete(weir_store::Kind::Service, key);
                }
            }
        }
        Arc::new(view)
    }
}

/// While we lead, keep one Service per Gateway of ours: after every store change (and on
/// becoming leader), plan the Services from the store (with our writes it does not show
/// yet) and write what differs. Failed writes are retried after a few seconds even when
/// nothing changes.
async fn write_gateway_services(
    client: weir_sources::kube::Client,
    controller: String,
    settings: ServiceAddressing,
    mut stores: watch::Receiver<Arc<Store>>,
    mut leader: watch::Receiver<bool>,
) {
    const RETRY: Duration = Duration::from_secs(5);
    let mut synced = false;
    let mut retry = false;
    let mut recent = RecentWrites::default();
    loop {
        let leading = *leader.borrow_and_update();
        let store = stores.borrow_and_update().clone();
        let store = recent.overlay(&store);
        // The channel's first value is an empty placeholder: plan nothing (and delete
        // nothing) before the source's first complete store.
        if leading && synced {
            let plan = services::plan_gateway_services(&store, &controller, &settings);
            for (gateway, problem) in &plan.problems {
                tracing::warn!(%gateway, problem, "gateway Service");
            }
            let changes = services::service_changes(&store, &plan);
            retry = false;
            if !changes.is_empty() {
                let writes = write_services(
                    &client,
                    "weir",
                    &changes.create,
                    &changes.patch,
                    &changes.delete,
                )
                .await;
                for err in &writes.errors {
                    tracing::warn!(error = %err, "gateway Service not written; retrying");
                }
                retry = !writes.errors.is_empty();
                recent.record(&writes);
            }
        }
        tokio::select! {
            r = stores.changed() => {
                if r.is_err() { return }
                synced = true;
            }
            r = leader.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RETRY), if retry => {}
        }
    }
}

/// While we lead, write every new set of statuses (the writer patches only what changed).
async fn write_status(
    mut writer: StatusWriter,
    shared: Arc<Shared>,
    mut leader: watch::Receiver<bool>,
    metrics: StatusMetrics,
) {
    let mut changed = shared.status_changed.subscribe();
    let mut was_leading = false;
    loop {
        let leading = *leader.borrow_and_update();
        let generation = *changed.borrow_and_update();
        if leading && !was_leading {
            // Another replica may have written since we last looked: read before writing.
            writer.forget();
            tracing::info!("became leader: writing status");
        }
        was_leading = leading;
        metrics.leader.set(i64::from(leading));
        if leading && generation > 0 {
            let view = shared.status.load_full();
            let updates: Vec<StatusUpdate> = view
                .statuses
                .iter()
                .map(|s| StatusUpdate {
                    kind: s.kind,
                    key: s.key.clone(),
                    status: s.status.clone(),
                })
                .collect();
            let patched = writer.write(&updates).await;
            metrics.patches.inc_by(patched as u64);
            tracing::debug!(patched, generation, "status written");
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
        }
    }
}

/// Leadership and status writes, so operators (and tests) see which replica writes.
#[derive(Clone)]
struct StatusMetrics {
    leader: prometheus::IntGauge,
    patches: prometheus::IntCounter,
}

impl StatusMetrics {
    fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let leader = prometheus::IntGauge::new(
            "weir_leader",
            "1 while this replica holds the leader Lease and writes status, else 0.",
        )?;
        let patches = prometheus::IntCounter::new(
            "weir_status_patches_total",
            "Status subresource patches this replica sent (only the leader sends any).",
        )?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(patches.clone()))?;
        Ok(Self { leader, patches })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// This replica's address, from the downward API's $POD_IP.
fn pod_addresses() -> Vec<(String, String)> {
    env("POD_IP")
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(|ip| vec![("IPAddress".to_string(), ip)])
        .unwrap_or_default()
}

/// Lease holder identity: $POD_NAME, else $HOSTNAME, else weir-<pid>.
fn identity() -> String {
    env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| format!("weir-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use weir_store::{Kind, Object, ObjectKey};

    fn service(name: &str, rv: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}
        }))
        .unwrap()
    }

    #[test]
    fn plans_see_our_writes_until_the_store_does() {
        let mut recent = RecentWrites::default();
        let mut store = Store::default();
        store.apply(Object::Service(Arc::new(service("old", "1"))));
        recent.record(&weir_sources::kube::ServiceWrites {
            written: 2,
            stored: vec![service("new", "7")],
            deleted: vec![ObjectKey::new("ns", "old")],
            errors: Vec::new(),
        });
        let store = Arc::new(store);
        let view = recent.overlay(&store);
        assert!(view.services.contains_key(&ObjectKey::new("ns", "new")));
        assert!(!view.services.contains_key(&ObjectKey::new("ns", "old")));

        // The watch caught up: the store is used as it is.
        let mut caught_up = (*store).clone();
        caught_up.apply(Object::Service(Arc::new(service("new", "7"))));
        caught_up.delete(Kind::Service, &ObjectKey::new("ns", "old"));
        let caught_up = Arc::new(caught_up);
        let view = recent.overlay(&caught_up);
        assert!(Arc::ptr_eq(&view, &caught_up));
        assert!(recent.services.is_empty());
    }
}
