//! [`KubeSource`]: kube-runtime watchers for every kind Weir reads, feeding one object cache
//! that is sent on as whole [`Store`]s.
//!
//! The watchers are untyped (`DynamicObject`) and each object is converted to its typed form
//! here, so one object that does not deserialize costs only itself: a typed watcher would
//! fail the whole list and retry it forever.
//!
//! ConfigMaps and Secrets are watched by metadata alone and read in full only when the
//! other objects reference them ([`super::fetch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use weir_store::refs::{self, Reference};
use weir_store::{Kind, Location, Object, ObjectKey, Rejection, Store};

use super::fetch::{self, Fetches, Ticket, FETCHED};
use super::pods;
use super::{api_resource, KubeError};

/// After the first store, how long a batch of changes may wait for the first read of an
/// object it newly references (so a Gateway that starts naming an existing Secret is not
/// reported without it first); a read that takes longer does not hold up other changes.
const FETCH_HOLD: Duration = Duration::from_secs(2);

/// Watches the cluster and sends a [`Store`] of everything Weir reads.
pub struct KubeSource {
    client: Client,
    controller: String,
}

/// One event of a watch: a kind watched in full, or a kind watched by metadata.
enum Update {
    Full(Kind, Result<Event<DynamicObject>, watcher::Error>),
    Meta(
        Kind,
        Result<Event<PartialObjectMeta<DynamicObject>>, watcher::Error>,
    ),
    /// The Pods of one namespace with InferencePools ([`pods`]).
    Pods(Arc<str>, Result<Event<DynamicObject>, watcher::Error>),
}

impl Update {
    fn kind(&self) -> Kind {
        match self {
            Update::Full(kind, _) | Update::Meta(kind, _) => *kind,
            Update::Pods(..) => Kind::Pod,
        }
    }
}

/// A finished read of a referenced object.
type Fetched = (Reference, Ticket, Option<DynamicObject>);

impl KubeSource {
    /// A source for the GatewayClasses of `controller` (whose Gateways' and policies'
    /// references decide which ConfigMaps and Secrets are read in full).
    pub fn new(client: Client, controller: impl Into<String>) -> Self {
        Self {
            client,
            controller: controller.into(),
        }
    }

    /// Run one watcher per kind (with kube-runtime's default backoff; ConfigMaps and
    /// Secrets by metadata, the referenced ones read in full). After the first complete list
    /// of every kind, and the first read of every referenced object that exists, send a
    /// full [`Store`]; after that, one per batch of changes: a change after a quiet period
    /// (no send for `debounce`) is sent at once, later ones are batched, a batch ending
    /// `debounce` after its first change (see [`flush_due`]); a batch waits up to
    /// [`FETCH_HOLD`] for the objects it newly references. Runs until every receiver of
    /// `tx` is dropped.
    pub async fn run(
        self,
        debounce: Duration,
        tx: watch::Sender<Arc<Store>>,
    ) -> Result<(), KubeError> {
        let mut events: SelectAll<BoxStream<'static, Update>> =
            futures::stream::select_all(Kind::ALL.into_iter().filter(|k| *k != Kind::Pod).map(
                |kind| {
                    if FETCHED.contains(&kind) {
                        watch_metadata(self.client.clone(), kind)
                    } else {
                        watch_kind(self.client.clone(), kind)
                    }
                },
            ));
        let mut cache = Cache::new(self.controller);
        // The running Pod watches, by namespace ([`pods`]): started and stopped as the
        // InferencePools change.
        let mut pod_watches: BTreeMap<Arc<str>, futures::stream::AbortHandle> = BTreeMap::new();
        let mut fetches: JoinSet<Fetched> = JoinSet::new();
        let mut running: BTreeMap<Reference, AbortHandle> = BTreeMap::new();
        let mut flush_at: Option<Instant> = None;
        let mut last_flush: Option<Instant> = None;
        let mut pending_since: Option<Instant> = None;
        loop {
            for r in std::mem::take(&mut cache.cancel) {
                if let Some(handle) = running.remove(&r) {
                    handle.abort();
                }
            }
            for (r, ticket) in cache.fetches.start_due(&cache.store) {
                let client = self.client.clone();
                let (kind, key) = r.clone();
                tracing::debug!(%kind, object = %key, "reading a referenced object");
                let handle = fetches.spawn(async move {
                    let found = fetch::fetch(client, kind, key.clone()).await;
                    ((kind, key), ticket, found)
                });
                if let Some(old) = running.insert(r, handle) {
                    old.abort();
                }
            }
            let pending = cache.fetches.pending();
            pending_since = if pending {
                pending_since.or(Some(Instant::now()))
            } else {
                None
            };
            let deadline = match (cache.all_synced(), pending_since, last_flush) {
                (false, _, _) => None,
                (true, None, _) => flush_at,
                // The first store waits for every referenced object present at sync.
                (true, Some(_), None) => None,
                (true, Some(since), Some(_)) => flush_at.map(|at| at.max(since + FETCH_HOLD)),
            };
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = sleep_until(deadline), if deadline.is_some() => {
                    flush_at = None;
                    last_flush = Some(Instant::now());
                    if tx.send(Arc::new(cache.store.clone())).is_err() {
                        return Ok(());
                    }
                }
                Some(joined) = fetches.join_next(), if !fetches.is_empty() => {
                    let Ok((r, ticket, found)) = joined else {
                        // Cancelled (no longer wanted); a panic cannot happen in `fetch`.
                        continue;
                    };
                    if running.get(&r).is_some_and(|h| h.is_finished()) {
                        running.remove(&r);
                    }
                    if cache.fetched(&r, ticket, found) {
                        flush_at.get_or_insert_with(|| {
                            flush_due(Instant::now(), last_flush, debounce)
                        });
                    }
                }
                event = events.next() => match event {
                    None => return Err(KubeError::WatchesEnded),
                    Some(Update::Full(kind, Ok(event))) => {
                        let first_sync = !cache.all_synced();
                        let mut changed = cache.apply(kind, event);
                        if kind == Kind::InferencePool {
                            changed |= scope_pods(&self.client, &mut cache, &mut pod_watches, &mut events);
                        }
                        if changed {
                            flush_at.get_or_insert_with(|| {
                                flush_due(Instant::now(), last_flush, debounce)
                            });
                        }
                        if first_sync && cache.all_synced() {
                            tracing::info!(objects = cache.store.len(), "every watched kind has synced");
                        }
                    }
                    Some(Update::Pods(namespace, Ok(event))) => {
                        let first_sync = !cache.all_synced();
                        if cache.apply_pods(&namespace, event) {
                            flush_at.get_or_insert_with(|| {
                                flush_due(Instant::now(), last_flush, debounce)
                            });
                        }
                        if first_sync && cache.all_synced() {
                            tracing::info!(objects = cache.store.len(), "every watched kind has synced");
                        }
                    }
                    Some(Update::Meta(kind, Ok(event))) => {
                        let first_sync = !cache.all_synced();
                        if cache.apply_meta(kind, event) {
                            flush_at.get_or_insert_with(|| {
                                flush_due(Instant::now(), last_flush, debounce)
                            });
                        }
                        if first_sync && cache.all_synced() {
                            tracing::info!(objects = cache.store.len(), "every watched kind has synced");
                        }
                    }
                    Some(Update::Full(kind, Err(err))) if kind.is_optional() && is_not_served(&err) => {
                        // The cluster lacks this kind's CRD, or it does not serve the version
                        // Weir reads (TCPRoute: a v1.5 standard channel has none, a pre-v1.6
                        // CRD serves only v1alpha2): count it as an empty kind so the rest is
                        // served; the watcher keeps retrying, so installing or upgrading the
                        // CRD later brings its objects in.
                        if cache.mark_absent(kind) {
                            if kind == Kind::InferencePool {
                                scope_pods(&self.client, &mut cache, &mut pod_watches, &mut events);
                            }
                            tracing::info!(
                                %kind,
                                api_version = kind.api_version(),
                                "this kind is not served by the API server at the version weir reads (its CRD is not installed, or older); treating it as empty until it is"
                            );
                            if cache.all_synced() {
                                flush_at.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    Some(update) => {
                        let kind = update.kind();
                        let (Update::Full(_, Err(err))
                        | Update::Meta(_, Err(err))
                        | Update::Pods(_, Err(err))) = update
                        else {
                            continue;
                        };
                        tracing::warn!(
                            %kind,
                            error = %err,
                            "watch failed; retrying with backoff (check RBAC and that the Gateway API CRDs are installed)"
                        );
                    }
                },
            }
        }
    }
}

/// Start and stop Pod watches so that exactly the namespaces with InferencePools are
/// watched, each with its pools' selectors ([`pods`]); returns whether the store
/// changed (Pods of a namespace no longer watched left it).
fn scope_pods(
    client: &Client,
    cache: &mut Cache,
    watches: &mut BTreeMap<Arc<str>, futures::stream::AbortHandle>,
    events: &mut SelectAll<BoxStream<'static, Update>>,
) -> bool {
    let pods::Change {
        start,
        stop,
        store_changed: changed,
    } = cache.set_pod_scopes(pods::wanted(&cache.store));
    for namespace in stop {
        if let Some(handle) = watches.remove(&namespace) {
            handle.abort();
        }
    }
    for (namespace, selectors) in start {
        if let Some(old) = watches.remove(&namespace) {
            old.abort();
        }
        tracing::debug!(%namespace, "watching the Pods of a namespace with InferencePools");
        let (stream, handle) = futures::stream::abortable(watch_pods(
            client.clone(),
            namespace.clone(),
            pods::label_selector(&selectors),
        ));
        watches.insert(namespace, handle);
        events.push(stream.boxed());
    }
    changed
}

/// The running Pods of one namespace (with `labels` when given), default backoff,
/// managedFields stripped.
fn watch_pods(
    client: Client,
    namespace: Arc<str>,
    labels: Option<String>,
) -> BoxStream<'static, Update> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, &namespace, &api_resource(Kind::Pod));
    let mut config = watch_config(Kind::Pod);
    if let Some(labels) = &labels {
        config = config.labels(labels);
    }
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |event| {
            let event = event.map(|e| e.modify(|o| o.metadata.managed_fields = None));
            Update::Pods(namespace.clone(), event)
        })
        .boxed()
}

/// When a batch whose first change came at `now` is sent: at once when nothing was sent for
/// `debounce` (the leading edge: a single change waits for nothing), else `debounce` later,
/// so that a burst of changes becomes one store (the trailing edge).
fn flush_due(now: Instant, last_flush: Option<Instant>, debounce: Duration) -> Instant {
    match last_flush {
        Some(last) if now.duration_since(last) < debounce => now + debounce,
        _ => now,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a watch failed because the API server does not serve the resource at all.
fn is_not_served(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(::kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(::kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

/// The watcher of one kind, cluster-wide, with default backoff, managedFields stripped.
fn watch_kind(client: Client, kind: Kind) -> BoxStream<'static, Update> {
    let api: Api<DynamicObject> = Api::all_with(client, &api_resource(kind));
    watcher::watcher(api, watch_config(kind))
        .default_backoff()
        .map(move |event| {
            let event = event.map(|e| e.modify(|o| o.metadata.managed_fields = None));
            Update::Full(kind, event)
        })
        .boxed()
}

/// The metadata-only watcher of one kind (`PartialObjectMetadata`), cluster-wide, with
/// default backoff, managedFields stripped.
fn watch_metadata(client: Client, kind: Kind) -> BoxStream<'static, Update> {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &api_resource(kind));
    watcher::watcher(api, watch_config(kind))
        .default_backoff()
        .map(move |event| {
            let event = event.map(|e| e.modify(|o| o.metadata.managed_fields = None));
            Update::Meta(kind, event)
        })
        .boxed()
}

/// The kind's watch: with its field selector from the kind table (Secrets: TLS only).
fn watch_config(kind: Kind) -> watcher::Config {
    let config = watcher::Config::default();
    match kind.field_selector() {
        Some(selector) => config.fields(selector),
        None => config,
    }
}

/// The objects the watchers have delivered, kind by kind, and the referenced ConfigMaps and
/// Secrets read so far.
#[derive(Default)]
pub(crate) struct Cache {
    pub(crate) store: Store,
    /// Kinds whose first list is complete.
    synced: BTreeSet<Kind>,
    /// Objects of a relist in progress, by kind; they replace the kind's objects when the
    /// list is complete.
    relists: BTreeMap<Kind, Relist>,
    /// The controller whose GatewayClasses' references count.
    controller: String,
    pub(crate) fetches: Fetches,
    /// Reads to cancel (their object is no longer referenced, or was deleted).
    pub(crate) cancel: Vec<Reference>,
    /// The namespaces whose Pods are watched, with their pools' selectors ([`pods`]).
    pod_scopes: pods::Scopes,
    /// Those whose Pod watch has listed once.
    pod_listed: BTreeSet<Arc<str>>,
    /// Pods of a namespace's relist in progress.
    pod_relists: BTreeMap<Arc<str>, Relist>,
}

#[derive(Default)]
struct Relist {
    objects: Vec<Object>,
    rejected: Vec<(ObjectKey, Rejection)>,
}

impl Cache {
    pub(crate) fn new(controller: String) -> Self {
        Self {
            controller,
            ..Self::default()
        }
    }

    /// Recompute what the store references after `kind` changed (only a referring kind can
    /// change it); returns whether the store changed (objects no longer referenced left).
    fn rereference(&mut self, kind: Kind) -> bool {
        if !refs::REFERRERS.contains(&kind) {
            return false;
        }
        let wanted = refs::referenced(&self.store, &self.controller);
        let (changed, cancel) = self.fetches.set_wanted(wanted, &mut self.store);
        self.cancel.extend(cancel);
        changed
    }

    /// Apply one metadata watch event of a [`FETCHED`] kind; returns whether the store
    /// changed.
    pub(crate) fn apply_meta(
        &mut self,
        kind: Kind,
        event: Event<PartialObjectMeta<DynamicObject>>,
    ) -> bool {
        let applied = self.fetches.apply_meta(kind, event, &mut self.store);
        self.cancel.extend(applied.cancel);
        if applied.listed && self.synced.insert(kind) {
            tracing::debug!(%kind, "first metadata list complete");
        }
        applied.store_changed
    }

    /// A read of a referenced object answered; returns whether the store changed.
    pub(crate) fn fetched(
        &mut self,
        r: &Reference,
        ticket: Ticket,
        found: Option<DynamicObject>,
    ) -> bool {
        let answer = match found {
            None => Ok(None),
            Some(object) => convert(r.0, object).map(Some),
        };
        self.fetches.done(r, ticket, answer, &mut self.store)
    }

    pub(crate) fn all_synced(&self) -> bool {
        self.synced.len() == Kind::ALL.len()
    }

    /// Count `kind` as synced and empty because the API server does not serve it; returns
    /// whether that is news (it was not synced before).
    pub(crate) fn mark_absent(&mut self, kind: Kind) -> bool {
        self.relists.remove(&kind);
        self.synced.insert(kind)
    }

    /// Set the namespaces whose Pods are watched to `wanted`: returns the watches to
    /// start (new namespaces, and those whose selectors changed: a relist), the namespaces
    /// to stop watching, and whether the store changed (their Pods left it).
    pub(crate) fn set_pod_scopes(&mut self, wanted: pods::Scopes) -> pods::Change {
        let mut start = Vec::new();
        let mut stop = Vec::new();
        let mut changed = false;
        for (namespace, selectors) in &self.pod_scopes {
            if wanted.get(namespace) != Some(selectors) {
                self.pod_relists.remove(namespace);
                self.pod_listed.remove(namespace);
                if !wanted.contains_key(namespace) {
                    stop.push(namespace.clone());
                    changed |= pods::clear_namespace(&mut self.store, namespace);
                }
            }
        }
        for (namespace, selectors) in &wanted {
            if self.pod_scopes.get(namespace) != Some(selectors) {
                start.push((namespace.clone(), selectors.clone()));
            }
        }
        self.pod_scopes = wanted;
        self.pods_synced();
        pods::Change {
            start,
            stop,
            store_changed: changed,
        }
    }

    /// Pods count as listed once InferencePools have and every namespace watch has.
    fn pods_synced(&mut self) {
        if self.synced.contains(&Kind::InferencePool)
            && self
                .pod_scopes
                .keys()
                .all(|ns| self.pod_listed.contains(ns))
            && self.synced.insert(Kind::Pod)
        {
            tracing::debug!("first Pod lists complete");
        }
    }

    /// Apply one event of a namespace's Pod watch; returns whether the store changed.
    pub(crate) fn apply_pods(&mut self, namespace: &Arc<str>, event: Event<DynamicObject>) -> bool {
        let Some(selectors) = self.pod_scopes.get(namespace) else {
            // (A watch just stopped.)
            return false;
        };
        match event {
            Event::Init => {
                self.pod_relists
                    .insert(namespace.clone(), Relist::default());
                false
            }
            Event::InitApply(object) => {
                let key = key_of(&object);
                let converted = convert(Kind::Pod, object);
                let relist = self.pod_relists.entry(namespace.clone()).or_default();
                match converted {
                    Ok(object) if pods::keep(selectors, &object) => relist.objects.push(object),
                    Ok(_) => {}
                    Err(rejection) => {
                        if let Some(old) = self.store.get(Kind::Pod, &key) {
                            relist.objects.push(old);
                        }
                        relist.rejected.push((key, rejection));
                    }
                }
                false
            }
            Event::InitDone => {
                let relist = self.pod_relists.remove(namespace).unwrap_or_default();
                pods::clear_namespace(&mut self.store, namespace);
                for object in relist.objects {
                    self.store.apply(object);
                }
                for (key, rejection) in relist.rejected {
                    self.store.rejected.insert((Kind::Pod, key), rejection);
                }
                self.pod_listed.insert(namespace.clone());
                self.pods_synced();
                true
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                match convert(Kind::Pod, object) {
                    Ok(object) if pods::keep(selectors, &object) => {
                        self.store.rejected.remove(&(Kind::Pod, key));
                        self.store.apply(object);
                        true
                    }
                    // Its labels no longer match any pool.
                    Ok(_) => self.store.delete(Kind::Pod, &key),
                    Err(rejection) => {
                        self.store.rejected.insert((Kind::Pod, key), rejection);
                        true
                    }
                }
            }
            Event::Delete(object) => self.store.delete(Kind::Pod, &key_of(&object)),
        }
    }

    /// Apply one watcher event; returns whether the store changed.
    pub(crate) fn apply(&mut self, kind: Kind, event: Event<DynamicObject>) -> bool {
        match event {
            Event::Init => {
                self.relists.insert(kind, Relist::default());
                false
            }
            Event::InitApply(object) => {
                let key = key_of(&object);
                let converted = convert(kind, object);
                let relist = self.relists.entry(kind).or_default();
                match converted {
                    Ok(object) => relist.objects.push(object),
                    Err(rejection) => {
                        // Keep serving the last good version, as the file source does.
                        if let Some(old) = self.store.get(kind, &key) {
                            relist.objects.push(old);
                        }
                        relist.rejected.push((key, rejection));
                    }
                }
                false
            }
            Event::InitDone => {
                let relist = self.relists.remove(&kind).unwrap_or_default();
                self.store.clear_kind(kind);
                for object in relist.objects {
                    self.store.apply(object);
                }
                for (key, rejection) in relist.rejected {
                    self.store.rejected.insert((kind, key), rejection);
                }
                if self.synced.insert(kind) {
                    tracing::debug!(%kind, "first list complete");
                }
                self.rereference(kind);
                true
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                match convert(kind, object) {
                    Ok(object) => {
                        self.store.rejected.remove(&(kind, key));
                        self.store.apply(object);
                    }
                    Err(rejection) => {
                        self.store.rejected.insert((kind, key), rejection);
                    }
                }
                self.rereference(kind);
                true
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                self.store.delete(kind, &key);
                self.rereference(kind);
                true
            }
        }
    }
}

fn key_of(object: &DynamicObject) -> ObjectKey {
    ObjectKey::of(&object.metadata)
}

/// The typed object, or why it is not one (logged here, once per delivery).
fn convert(kind: Kind, object: DynamicObject) -> Result<Object, Rejection> {
    let key = key_of(&object);
    let result = serde_json::to_value(&object).and_then(|value| Object::from_value(kind, value));
    result.map_err(|err| {
        tracing::warn!(
            %kind,
            object = %key,
            error = %err,
            "skipping an object that does not deserialize; its last good version (if any) keeps serving"
        );
        Rejection {
            location: Location {
                file: PathBuf::from(format!("{kind} {key}")),
                line: 0,
            },
            message: format!("does not deserialize: {err}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway(name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1",
                "managedFields": [{"manager": "kubectl"}]},
            "spec": spec,
        }))
        .unwrap()
    }

    fn good(name: &str) -> DynamicObject {
        gateway(
            name,
            json!({"gatewayClassName": "weir", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}),
        )
    }

    fn bad(name: &str) -> DynamicObject {
        gateway(name, json!({"gatewayClassName": 7}))
    }

    #[test]
    fn a_change_after_a_quiet_period_is_sent_at_once_and_a_burst_is_batched() {
        let debounce = Duration::from_millis(50);
        let t0 = Instant::now();
        // Nothing sent yet (the first sync), or the last send a debounce ago: at once.
        assert_eq!(flush_due(t0, None, debounce), t0);
        let later = t0 + debounce;
        assert_eq!(flush_due(later, Some(t0), debounce), later);
        // Within a debounce of the last send: part of a burst, sent a debounce later.
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(flush_due(soon, Some(t0), debounce), soon + debounce);
    }

    #[test]
    fn syncs_only_after_every_kind_listed() {
        let mut cache = Cache::default();
        for kind in Kind::ALL {
            assert!(!cache.all_synced());
            if FETCHED.contains(&kind) {
                cache.apply_meta(kind, Event::Init);
                cache.apply_meta(kind, Event::InitDone);
            } else {
                cache.apply(kind, Event::Init);
                cache.apply(kind, Event::InitDone);
            }
        }
        assert!(cache.all_synced());
    }

    #[test]
    fn a_malformed_update_keeps_the_last_good_version() {
        let mut cache = Cache::default();
        cache.apply(Kind::Gateway, Event::Init);
        cache.apply(Kind::Gateway, Event::InitApply(good("a")));
        cache.apply(Kind::Gateway, Event::InitApply(bad("b")));
        cache.apply(Kind::Gateway, Event::InitDone);
        let a = ObjectKey::new("ns", "a");
        let b = ObjectKey::new("ns", "b");
        assert!(cache.store.gateways.contains_key(&a));
        assert!(!cache.store.gateways.contains_key(&b));
        assert!(cache.store.rejected.contains_key(&(Kind::Gateway, b)));

        cache.apply(Kind::Gateway, Event::Apply(bad("a")));
        assert!(
            cache.store.gateways.contains_key(&a),
            "last good version kept"
        );
        assert!(cache
            .store
            .rejected
            .contains_key(&(Kind::Gateway, a.clone())));
        // A relist that still sees it broken keeps the good version too.
        cache.apply(Kind::Gateway, Event::Init);
        cache.apply(Kind::Gateway, Event::InitApply(bad("a")));
        cache.apply(Kind::Gateway, Event::InitDone);
        assert!(cache.store.gateways.contains_key(&a));
        cache.apply(Kind::Gateway, Event::Apply(good("a")));
        assert!(!cache.store.rejected.contains_key(&(Kind::Gateway, a)));
    }

    #[test]
    fn a_relist_replaces_the_kind() {
        let mut cache = Cache::default();
        cache.apply(Kind::Gateway, Event::Init);
        cache.apply(Kind::Gateway, Event::InitApply(good("a")));
        cache.apply(Kind::Gateway, Event::InitDone);
        cache.apply(Kind::Gateway, Event::Init);
        cache.apply(Kind::Gateway, Event::InitApply(good("b")));
        // Until the relist is complete, the old objects keep serving.
        assert!(cache
            .store
            .gateways
            .contains_key(&ObjectKey::new("ns", "a")));
        cache.apply(Kind::Gateway, Event::InitDone);
        let keys: Vec<_> = cache.store.gateways.keys().cloned().collect();
        assert_eq!(keys, [ObjectKey::new("ns", "b")]);
        cache.apply(Kind::Gateway, Event::Delete(good("b")));
        assert!(cache.store.gateways.is_empty());
    }
}
