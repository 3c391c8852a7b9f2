//! ConfigMaps and Secrets: watched by metadata alone, read in full only when referenced.
//!
//! A cluster holds many ConfigMaps (some of megabytes) and, with cert-manager, many TLS
//! Secrets; Weir uses the few that its Gateways, GatewayClasses and policies name
//! ([`weir_store::refs::referenced`]). So the kube source watches these two kinds as
//! `PartialObjectMetadata` (cluster-wide: small, and it still sees every change and
//! deletion), and [`Fetches`] decides which objects to GET in full: a referenced object the
//! metadata shows, again whenever its resourceVersion changes. An object that stops being
//! referenced leaves the store; a referenced one that does not exist stays absent (the
//! translator reports the missing reference); a deleted one leaves the store.
//!
//! [`Fetches`] is the bookkeeping alone (no IO, unit-tested here); the source runs the GETs
//! ([`fetch`]: retried with backoff until they answer, logs rate-limited) and hands each
//! answer back to [`Fetches::done`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use weir_store::refs::Reference;
use weir_store::{Kind, Object, ObjectKey, Rejection, Store};

/// The kinds watched by metadata and read in full only when referenced.
pub(crate) const FETCHED: [Kind; 2] = [Kind::ConfigMap, Kind::Secret];

/// A started fetch: which object, and its ticket (see [`Fetches::done`]).
pub(crate) type Ticket = u64;

/// What the metadata watches show, what the store references, and which full reads are
/// under way (see the module docs).
#[derive(Default)]
pub(crate) struct Fetches {
    /// The resourceVersion of every watched object, from the metadata watches.
    meta: BTreeMap<Reference, String>,
    /// A metadata relist in progress, by kind (replaces that kind's entries when complete).
    relists: BTreeMap<Kind, BTreeMap<ObjectKey, String>>,
    /// What the store's objects reference.
    wanted: BTreeSet<Reference>,
    /// Fetches under way, by their ticket.
    in_flight: BTreeMap<Reference, Ticket>,
    /// The resourceVersion the metadata showed when the key's last fetch started: a fetch
    /// answers with that version or a newer one, so the same one is not fetched again.
    fetched_for: BTreeMap<Reference, String>,
    /// Referenced keys whose fetch has answered since they became referenced (found,
    /// absent, or not deserializable): nothing is pending for them.
    resolved: BTreeSet<Reference>,
    next_ticket: Ticket,
}

impl Fetches {
    /// Replace the referenced set. Objects no longer referenced leave the store (returns
    /// whether it changed); their fetches under way are returned, to be cancelled.
    pub(crate) fn set_wanted(
        &mut self,
        wanted: BTreeSet<Reference>,
        store: &mut Store,
    ) -> (bool, Vec<Reference>) {
        let mut changed = false;
        let mut cancel = Vec::new();
        let dropped: Vec<Reference> = self.wanted.difference(&wanted).cloned().collect();
        for r in dropped {
            changed |= self.forget(&r, store, &mut cancel);
        }
        self.wanted = wanted;
        (changed, cancel)
    }

    /// Forget everything about `r` and take it out of the store.
    fn forget(&mut self, r: &Reference, store: &mut Store, cancel: &mut Vec<Reference>) -> bool {
        self.resolved.remove(r);
        self.fetched_for.remove(r);
        if self.in_flight.remove(r).is_some() {
            cancel.push(r.clone());
        }
        store.delete(r.0, &r.1)
    }

    /// Apply one metadata watch event of `kind`. Returns whether the store changed (an object
    /// was deleted), whether the kind's first list is now complete, and the fetches to cancel.
    pub(crate) fn apply_meta(
        &mut self,
        kind: Kind,
        event: Event<PartialObjectMeta<DynamicObject>>,
        store: &mut Store,
    ) -> MetaApplied {
        let mut out = MetaApplied::default();
        match event {
            Event::Init => {
                self.relists.insert(kind, BTreeMap::new());
            }
            Event::InitApply(m) => {
                let (key, rv) = key_rv(&m);
                self.relists.entry(kind).or_default().insert(key, rv);
            }
            Event::InitDone => {
                let listed = self.relists.remove(&kind).unwrap_or_default();
                let gone: Vec<Reference> = self
                    .meta
                    .keys()
                    .filter(|(k, key)| *k == kind && !listed.contains_key(key))
                    .cloned()
                    .collect();
                for r in gone {
                    self.meta.remove(&r);
                    out.store_changed |= self.forget(&r, store, &mut out.cancel);
                }
                // Copies whose object is no longer listed (deleted while the watch was
                // down, or no longer a TLS Secret) leave too.
                let stale: Vec<Reference> = stored_keys(store, kind)
                    .filter(|key| !listed.contains_key(key))
                    .map(|key| (kind, key))
                    .collect();
                for r in stale {
                    out.store_changed |= self.forget(&r, store, &mut out.cancel);
                }
                for (key, rv) in listed {
                    self.meta.insert((kind, key), rv);
                }
                out.listed = true;
            }
            Event::Apply(m) => {
                let (key, rv) = key_rv(&m);
                self.meta.insert((kind, key), rv);
            }
            Event::Delete(m) => {
                let (key, _) = key_rv(&m);
                let r = (kind, key);
                self.meta.remove(&r);
                out.store_changed |= self.forget(&r, store, &mut out.cancel);
            }
        }
        out
    }

    /// The fetches to start now: referenced objects the metadata shows whose version the
    /// store does not hold and that no fetch is reading or has read. Each gets a ticket.
    pub(crate) fn start_due(&mut self, store: &Store) -> Vec<(Reference, Ticket)> {
        let mut start = Vec::new();
        for r in &self.wanted {
            let Some(rv) = self.meta.get(r) else {
                continue;
            };
            if self.in_flight.contains_key(r) || self.fetched_for.get(r) == Some(rv) {
                continue;
            }
            let held = store
                .get(r.0, &r.1)
                .and_then(|o| o.meta().resource_version.clone());
            if held.as_ref() == Some(rv) {
                continue;
            }
            self.next_ticket += 1;
            start.push((r.clone(), self.next_ticket));
        }
        for (r, ticket) in &start {
            let rv = self.meta.get(r).cloned().unwrap_or_default();
            self.fetched_for.insert(r.clone(), rv);
            self.in_flight.insert(r.clone(), *ticket);
        }
        start
    }

    /// A fetch answered: `Ok(Some)` the object, `Ok(None)` it does not exist, `Err` it does
    /// not deserialize (the last good copy stays). An answer for a fetch that was cancelled
    /// or superseded is ignored. Returns whether the store changed.
    pub(crate) fn done(
        &mut self,
        r: &Reference,
        ticket: Ticket,
        answer: Result<Option<Object>, Rejection>,
        store: &mut Store,
    ) -> bool {
        if self.in_flight.get(r) != Some(&ticket) {
            return false;
        }
        self.in_flight.remove(r);
        if !self.wanted.contains(r) || !self.meta.contains_key(r) {
            return false;
        }
        self.resolved.insert(r.clone());
        match answer {
            Ok(Some(object)) => {
                store.rejected.remove(r);
                store.apply(object);
                true
            }
            // Gone since the metadata showed it; its deletion event follows.
            Ok(None) => store.delete(r.0, &r.1),
            Err(rejection) => {
                store.rejected.insert(r.clone(), rejection);
                true
            }
        }
    }

    /// Whether a referenced object the metadata shows has not been read yet (its first
    /// fetch is under way): a store sent now would report it missing.
    pub(crate) fn pending(&self) -> bool {
        self.wanted
            .iter()
            .any(|r| self.meta.contains_key(r) && !self.resolved.contains(r))
    }
}

/// What applying a metadata event did.
#[derive(Default, Debug)]
pub(crate) struct MetaApplied {
    pub(crate) store_changed: bool,
    /// The kind's (re)list is complete.
    pub(crate) listed: bool,
    pub(crate) cancel: Vec<Reference>,
}

fn key_rv(m: &PartialObjectMeta<DynamicObject>) -> (ObjectKey, String) {
    (
        ObjectKey::of(&m.metadata),
        m.metadata.resource_version.clone().unwrap_or_default(),
    )
}

fn stored_keys(store: &Store, kind: Kind) -> impl Iterator<Item = ObjectKey> + '_ {
    let (config_maps, secrets) = match kind {
        Kind::ConfigMap => (Some(&store.config_maps), None),
        Kind::Secret => (None, Some(&store.secrets)),
        _ => (None, None),
    };
    let a = config_maps.into_iter().flat_map(|m| m.keys().cloned());
    let b = secrets.into_iter().flat_map(|m| m.keys().cloned());
    a.chain(b).collect::<Vec<_>>().into_iter()
}

/// GET one object in full (`None`: it does not exist). Errors are retried with backoff
/// (0.2 s doubling to 30 s) until it answers; the caller cancels a fetch it no longer needs.
/// A failing fetch logs its first error and then at most one a minute.
pub(crate) async fn fetch(
    client: kube::Client,
    kind: Kind,
    key: ObjectKey,
) -> Option<DynamicObject> {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);
    const LOG_EVERY: Duration = Duration::from_secs(60);
    let api = super::dynamic_api(client, kind, &key);
    let mut delay = FIRST;
    let mut failures = 0u64;
    let mut logged: Option<tokio::time::Instant> = None;
    loop {
        match api.get_opt(&key.name).await {
            Ok(found) => {
                if failures > 0 {
                    tracing::info!(%kind, object = %key, failures, "read after failures");
                }
                return found.map(|mut o| {
                    o.metadata.managed_fields = None;
                    o
                });
            }
            Err(err) => {
                failures += 1;
                if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    logged = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        %kind,
                        object = %key,
                        failures,
                        error = %err,
                        "cannot read a referenced object; retrying with backoff, the last good copy (if any) keeps serving (check that weir may get {})",
                        kind.plural()
                    );
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_store::{Location, Secret};

    use super::*;

    fn meta(name: &str, rv: &str) -> PartialObjectMeta<DynamicObject> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv},
        }))
        .expect("test metadata")
    }

    fn secret(name: &str, rv: &str) -> Object {
        let mut s = Secret::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some(rv.into());
        Object::Secret(Arc::new(s))
    }

    fn r(name: &str) -> Reference {
        (Kind::Secret, ObjectKey::new("ns", name))
    }

    fn list(f: &mut Fetches, store: &mut Store, items: &[(&str, &str)]) -> MetaApplied {
        f.apply_meta(Kind::Secret, Event::Init, store);
        for (name, rv) in items {
            f.apply_meta(Kind::Secret, Event::InitApply(meta(name, rv)), store);
        }
        f.apply_meta(Kind::Secret, Event::InitDone, store)
    }

    fn rv_of(store: &Store, name: &str) -> Option<String> {
        store
            .secrets
            .get(&ObjectKey::new("ns", name))
            .and_then(|s| s.metadata.resource_version.clone())
    }

    #[test]
    fn only_referenced_objects_are_fetched_and_again_on_a_new_version() {
        let mut f = Fetches::default();
        let mut store = Store::default();
        assert!(list(&mut f, &mut store, &[("used", "1"), ("unused", "2")]).listed);
        f.set_wanted([r("used"), r("missing")].into(), &mut store);
        let start = f.start_due(&store);
        assert_eq!(
            start.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
            [r("used")],
            "the unreferenced one and the absent one are not read"
        );
        assert!(f.pending(), "a referenced object is being read");
        assert!(
            f.start_due(&store).is_empty(),
            "one fetch at a time per object"
        );
        let (_, ticket) = start[0].clone();
        assert!(f.done(
            &r("used"),
            ticket,
            Ok(Some(secret("used", "1"))),
            &mut store
        ));
        assert!(!f.pending());
        assert_eq!(rv_of(&store, "used").as_deref(), Some("1"));
        assert!(f.start_due(&store).is_empty(), "nothing new to read");

        // A new version in the metadata: read again; the old copy serves meanwhile.
        f.apply_meta(Kind::Secret, Event::Apply(meta("used", "5")), &mut store);
        let start = f.start_due(&store);
        assert_eq!(start.len(), 1);
        assert!(!f.pending(), "an update of a copy we hold holds nothing up");
        assert_eq!(rv_of(&store, "used").as_deref(), Some("1"));
        f.done(
            &r("used"),
            start[0].1,
            Ok(Some(secret("used", "5"))),
            &mut store,
        );
        assert_eq!(rv_of(&store, "used").as_deref(), Some("5"));
        // A change to an unreferenced object reads nothing.
        f.apply_meta(Kind::Secret, Event::Apply(meta("unused", "6")), &mut store);
        assert!(f.start_due(&store).is_empty());

        // The referenced-but-absent one is created: read it.
        f.apply_meta(Kind::Secret, Event::Apply(meta("missing", "7")), &mut store);
        let start = f.start_due(&store);
        assert_eq!(start[0].0, r("missing"));
        assert!(f.pending());
        f.done(
            &r("missing"),
            start[0].1,
            Ok(Some(secret("missing", "7"))),
            &mut store,
        );
        assert!(store.secrets.contains_key(&ObjectKey::new("ns", "missing")));
    }

    #[test]
    fn deleted_or_no_longer_referenced_objects_leave_the_store() {
        let mut f = Fetches::default();
        let mut store = Store::default();
        list(&mut f, &mut store, &[("a", "1"), ("b", "2")]);
        f.set_wanted([r("a"), r("b")].into(), &mut store);
        for (r, t) in f.start_due(&store) {
            let name = r.1.name.to_string();
            let rv = if name == "a" { "1" } else { "2" };
            f.done(&r, t, Ok(Some(secret(&name, rv))), &mut store);
        }
        assert_eq!(store.secrets.len(), 2);
        let applied = f.apply_meta(Kind::Secret, Event::Delete(meta("a", "3")), &mut store);
        assert!(applied.store_changed);
        assert!(!store.secrets.contains_key(&ObjectKey::new("ns", "a")));
        let (changed, _) = f.set_wanted([r("a")].into(), &mut store);
        assert!(changed, "b is no longer referenced");
        assert!(store.secrets.is_empty());
        // Referenced again later: read again.
        f.set_wanted([r("a"), r("b")].into(), &mut store);
        assert_eq!(f.start_due(&store).len(), 1);
    }

    #[test]
    fn stale_answers_and_failures_are_handled() {
        let mut f = Fetches::default();
        let mut store = Store::default();
        list(&mut f, &mut store, &[("a", "1")]);
        f.set_wanted([r("a")].into(), &mut store);
        let (_, first) = f.start_due(&store)[0].clone();
        // Unreferenced and referenced again while the first fetch runs: its answer is stale.
        let (_, cancel) = f.set_wanted(BTreeSet::new(), &mut store);
        assert_eq!(cancel, [r("a")]);
        f.set_wanted([r("a")].into(), &mut store);
        let (_, second) = f.start_due(&store)[0].clone();
        assert!(!f.done(&r("a"), first, Ok(Some(secret("a", "0"))), &mut store));
        assert!(store.secrets.is_empty());
        // A version that does not deserialize keeps the last good copy (none yet) and is
        // recorded; it resolves the reference (the translator reports it).
        let rejection = Rejection {
            location: Location::default(),
            message: "bad".into(),
        };
        assert!(f.done(&r("a"), second, Err(rejection.clone()), &mut store));
        assert!(!f.pending());
        assert_eq!(store.rejected.get(&r("a")), Some(&rejection));
        // Gone when read: stays absent.
        f.apply_meta(Kind::Secret, Event::Apply(meta("a", "2")), &mut store);
        let (_, t) = f.start_due(&store)[0].clone();
        f.done(&r("a"), t, Ok(None), &mut store);
        assert!(store.secrets.is_empty());
    }

    #[test]
    fn a_relist_drops_what_is_no_longer_listed() {
        let mut f = Fetches::default();
        let mut store = Store::default();
        list(&mut f, &mut store, &[("a", "1"), ("b", "1")]);
        f.set_wanted([r("a"), r("b")].into(), &mut store);
        for (r, t) in f.start_due(&store) {
            let name = r.1.name.to_string();
            f.done(&r, t, Ok(Some(secret(&name, "1"))), &mut store);
        }
        // b was deleted while the watch was down; a changed.
        let applied = list(&mut f, &mut store, &[("a", "4")]);
        assert!(applied.store_changed && applied.listed);
        assert!(!store.secrets.contains_key(&ObjectKey::new("ns", "b")));
        let start = f.start_due(&store);
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].0, r("a"));
    }
}
