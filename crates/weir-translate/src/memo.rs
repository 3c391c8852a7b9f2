//! What one translation hands the next, so that changing a few HTTPRoutes among thousands
//! costs in proportion to the change: each unchanged HTTPRoute's placed entries and status
//! are replayed instead of compiled, attached and built again.
//!
//! This is sound because, while nothing but HTTPRoutes changed, an HTTPRoute's outcome
//! depends only on itself and that unchanged rest (its [`World`]):
//! - compiling reads the route and the backend objects (Services, EndpointSlices,
//!   ReferenceGrants, BackendTLSPolicies); upstreams are interned by (Service, port), and the
//!   table is carried over, so replayed and newly compiled entries share one upstream each;
//! - attaching reads the Gateway models (built from everything but routes) and, for the
//!   HTTPRoute/GRPCRoute hostname rule only, the other kind's entries: so nothing is
//!   replayed while any GRPCRoute exists;
//! - the status reads the compiled route, the attachment, the generation, and `now` only for
//!   lastTransitionTime, which [`crate::preserve_transition_times`] settles as it would for a
//!   rebuilt status.
//!
//! Except for an HTTPRoute with a RegularExpression match: what its patterns may use depends
//! on the routes before it (the translation's [`crate::pattern::Budget`]), so it is compiled
//! every time and never replayed.
//!
//! Objects are compared by allocation: the memo holds them, so an address stays theirs.
//! The outcome is the same as without a memo (the tests check it on the conformance
//! manifests); only the work differs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use foldhash::fast::RandomState;
use weir_snapshot::{HostPattern, RouteEntry, Upstream};
use weir_store::{HttpRoute, Kind, Object, ObjectKey, Store};

use crate::model::GatewayModel;
use crate::route::Placement;
use crate::ObjectStatus;

/// Handed from one translation to the next (see the module docs). Opaque; the default is
/// an empty memo, with which a translation does all the work.
#[derive(Default)]
pub struct Memo {
    world: World,
    pub(crate) upstreams: BTreeMap<(ObjectKey, i32), Arc<Upstream>>,
    /// By the address of the route as stored.
    routes: HashMap<usize, CachedRoute, RandomState>,
    /// Which translation this is (see `CachedRoute::seen`).
    stamp: u64,
    /// Route entries per listener of each Gateway model, to reserve room for them.
    entries: Vec<Vec<usize>>,
    /// How many HTTPRoutes the translation that made this memo replayed.
    replayed: usize,
}

impl Memo {
    /// How many HTTPRoutes the translation that made this memo replayed from the previous
    /// one (the rest were compiled and attached).
    pub fn replayed(&self) -> usize {
        self.replayed
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("objects", &self.world.objects.len())
            .field("routes", &self.routes.len())
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}

/// Everything besides HTTPRoutes that an HTTPRoute's outcome may depend on.
#[derive(Default)]
pub(crate) struct World {
    controller_name: String,
    addresses: Vec<(String, String)>,
    /// Every object but HTTPRoutes, kind by kind in store order.
    objects: Vec<Object>,
    /// Per Gateway model: (accepted, serving), which also depend on the host's addresses.
    gateways: Vec<(bool, bool)>,
}

impl PartialEq for World {
    fn eq(&self, other: &Self) -> bool {
        self.controller_name == other.controller_name
            && self.addresses == other.addresses
            && self.gateways == other.gateways
            && self.objects.len() == other.objects.len()
            && self
                .objects
                .iter()
                .zip(&other.objects)
                .all(|(a, b)| a.same_allocation(b))
    }
}

impl World {
    pub(crate) fn of(
        store: &Store,
        controller_name: &str,
        addresses: &[(String, String)],
        gateways: &[GatewayModel],
    ) -> Self {
        // Every kind of the table, so that a new kind is part of the world without a change
        // here (a kind left out would let a change to it replay stale routes).
        let objects = store
            .objects()
            .filter(|o| o.kind() != Kind::HttpRoute)
            .collect();
        Self {
            controller_name: controller_name.to_owned(),
            addresses: addresses.to_vec(),
            objects,
            gateways: gateways
                .iter()
                .map(|g| (g.accepted(), g.serving()))
                .collect(),
        }
    }
}

/// One HTTPRoute's outcome: where its entries went and its status (none: not ours).
pub(crate) struct CachedRoute {
    /// Held so that its address is not reused while it is a key.
    _held: Arc<HttpRoute>,
    /// The stamp of the last translation that had this route (older ones are dropped when
    /// it finishes). Entries stay in place: a rebuild after one change moves nothing.
    seen: u64,
    placed: Vec<PlacedEntries>,
    status: Option<ObjectStatus>,
}

struct PlacedEntries {
    gateway: usize,
    listener: usize,
    entries: Vec<(Option<HostPattern>, Arc<RouteEntry>)>,
}

/// The routes of one translation: taken from the previous memo where they can be replayed,
/// recorded for the next.
pub(crate) struct Routes {
    routes: HashMap<usize, CachedRoute, RandomState>,
    stamp: u64,
    /// False while GRPCRoutes exist (see the module docs): nothing is replayed or recorded.
    enabled: bool,
    replayed: usize,
}

impl Routes {
    /// Start a translation of `store` in `world` from the previous memo. Returns the
    /// upstream table to start from too (the previous one when the world is unchanged).
    pub(crate) fn start(
        memo: Memo,
        world: &World,
        store: &Store,
        gateways: &mut [GatewayModel],
    ) -> (Self, BTreeMap<(ObjectKey, i32), Arc<Upstream>>) {
        let enabled = store.grpc_routes.is_empty();
        let same = enabled && memo.world == *world;
        let capacity = if enabled { store.http_routes.len() } else { 0 };
        let (routes, upstreams, stamp) = if same {
            (memo.routes, memo.upstreams, memo.stamp + 1)
        } else {
            (
                HashMap::with_capacity_and_hasher(capacity, RandomState::default()),
                BTreeMap::new(),
                1,
            )
        };
        if same {
            // As many entries as last time, give or take the change: grow each list once.
            for (g, counts) in gateways.iter_mut().zip(&memo.entries) {
                for (l, &n) in g.listeners.iter_mut().zip(counts) {
                    l.entries.reserve(n);
                }
            }
        }
        let routes = Self {
            routes,
            stamp,
            enabled,
            replayed: 0,
        };
        (routes, upstreams)
    }

    /// Replay `route` if the previous translation saw this very version: its entries go
    /// back onto the same listeners and its status (if any) is returned. `None`: translate
    /// it.
    pub(crate) fn replay(
        &mut self,
        route: &Arc<HttpRoute>,
        gateways: &mut [GatewayModel],
    ) -> Option<Option<ObjectStatus>> {
        let cached = self.routes.get_mut(&(Arc::as_ptr(route) as usize))?;
        cached.seen = self.stamp;
        for p in &cached.placed {
            let l = &mut gateways[p.gateway].listeners[p.listener];
            // As `route::attach` does.
            l.attached_routes += 1;
            if !l.entry_kinds.contains(&"HTTPRoute") {
                l.entry_kinds.push("HTTPRoute");
            }
            l.entries.extend(p.entries.iter().cloned());
        }
        self.replayed += 1;
        Some(cached.status.clone())
    }

    /// Record a translated route: where `route::attach` placed it and its status.
    pub(crate) fn record(
        &mut self,
        route: &Arc<HttpRoute>,
        placed: &[Placement],
        gateways: &[GatewayModel],
        status: Option<&ObjectStatus>,
    ) {
        if !self.enabled {
            return;
        }
        let placed = placed
            .iter()
            .map(|p| PlacedEntries {
                gateway: p.gateway,
                listener: p.listener,
                entries: gateways[p.gateway].listeners[p.listener].entries[p.start..].to_vec(),
            })
            .collect();
        self.routes.insert(
            Arc::as_ptr(route) as usize,
            CachedRoute {
                _held: route.clone(),
                seen: self.stamp,
                placed,
                status: status.cloned(),
            },
        );
    }

    /// The memo for the next translation, given the Gateway models with all routes
    /// attached.
    pub(crate) fn finish(
        mut self,
        world: World,
        upstreams: BTreeMap<(ObjectKey, i32), Arc<Upstream>>,
        gateways: &[GatewayModel],
    ) -> Memo {
        // Routes changed or gone since the previous translation.
        let stamp = self.stamp;
        self.routes.retain(|_, c| c.seen == stamp);
        Memo {
            world,
            upstreams,
            routes: self.routes,
            stamp,
            entries: gateways
                .iter()
                .map(|g| g.listeners.iter().map(|l| l.entries.len()).collect())
                .collect(),
            replayed: self.replayed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to an object of any kind but HTTPRoutes is a change of the world (else
    /// HTTPRoutes depending on it would be replayed stale).
    #[test]
    fn the_world_holds_every_kind_but_httproutes() {
        for kind in Kind::ALL {
            let mut store = Store::default();
            let before = World::of(&store, "c", &[], &[]);
            store.apply(Object::empty(kind, &ObjectKey::new("ns", "a")));
            let after = World::of(&store, "c", &[], &[]);
            assert_eq!(before == after, kind == Kind::HttpRoute, "{kind}");
        }
    }
}
