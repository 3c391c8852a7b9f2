//! The one attachment path of the policy kinds Weir compiles (BackendTrafficPolicy,
//! XBackendTrafficPolicy, SecurityPolicy, ExtensionPolicy, ClientTrafficPolicy): a kind
//! evaluates each of its policies into a [`Model`] (its targets, the Gateways it reports
//! under, why it is not accepted, what it compiled to) and [`Attached`] does the rest, the
//! same for every kind:
//!
//! - precedence: the policies that compiled compete for their targets, oldest first
//!   (`creationTimestamp`, then namespace/name: [`attach::settle_where`]), and every other
//!   one naming a target already held is `Conflicted`;
//! - the winners by target, and the policy in effect for a route entry (the rule's, the
//!   route's, then the Gateway's: [`attach::effective`]), put onto the entries by
//!   [`Attached::place`] with what the kind makes of its compiled value;
//! - `status.ancestors`, one status per policy in precedence order ([`Attached::statuses`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use weir_snapshot::{RouteAction, RouteEntry};
use weir_store::policies::PolicyTargetRef;
use weir_store::{KindType, ObjectKey, ObjectMeta, Store};

use crate::conditions::Conditions;
use crate::model::GatewayModel;
use crate::policy::attach::{self, Allowed, Candidate, NotAccepted, Target};
use crate::ObjectStatus;

/// A policy kind's stored object (the kinds' Rust types are generated: this names their
/// metadata field for generic code).
pub trait Policy: KindType {
    fn metadata(&self) -> &ObjectMeta;
}

macro_rules! policies {
    ($($kind:ident),*) => {
        $(impl Policy for weir_store::$kind {
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
        })*
    };
}

policies!(
    BackendTrafficPolicy,
    XBackendTrafficPolicy,
    SecurityPolicy,
    ExtensionPolicy,
    ClientTrafficPolicy
);

/// A condition a kind reports after `Accepted` (ExtensionPolicy's `ResolvedRefs`).
pub struct Also {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Also {
    pub fn new(
        type_: &'static str,
        ok: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            ok,
            reason,
            message: message.into(),
        }
    }
}

/// One policy, evaluated by its kind: `C` is what its targets get.
pub struct Model<P, C> {
    pub key: ObjectKey,
    pub policy: Arc<P>,
    /// The targets it holds when it wins them.
    pub targets: Vec<Target>,
    /// The Gateways it reports status under.
    pub ancestors: BTreeSet<ObjectKey>,
    /// Why it is not accepted (other than a conflict).
    pub not_accepted: Option<NotAccepted>,
    /// Conditions after `Accepted`.
    pub also: Vec<Also>,
    /// What its targets get; `None`: it competes for none (a refused policy holds nothing,
    /// unless its kind fails closed and holds them with a deny).
    pub compiled: Option<C>,
}

/// Every policy of one kind, in precedence order, and which one holds each target.
pub struct Attached<P, C> {
    models: Vec<Model<P, C>>,
    /// Per policy: why it does not apply to a target it names (`Conflicted`).
    conflicted: Vec<Option<String>>,
    /// Target → index into `models` of the policy that holds it.
    index: BTreeMap<Target, usize>,
}

impl<P: Policy, C> Attached<P, C> {
    /// Evaluate every policy of the kind in `store` and settle which one holds each target;
    /// `same`: what two policies name alike to conflict (the `Conflicted` message's end).
    pub fn build(
        store: &Store,
        same: &str,
        mut evaluate: impl FnMut(&ObjectKey, &Arc<P>) -> Model<P, C>,
    ) -> Self {
        let mut models: Vec<Model<P, C>> = P::objects(store)
            .iter()
            .map(|(key, p)| evaluate(key, p))
            .collect();
        // Status in precedence order: oldest first, then namespace/name.
        models.sort_by(|a, b| {
            let created = |m: &Model<P, C>| crate::meta::created(m.policy.metadata());
            (created(a), &a.key).cmp(&(created(b), &b.key))
        });
        let settled = attach::settle_where(&models, |m| {
            m.compiled.is_some().then(|| Candidate {
                meta: m.policy.metadata(),
                key: &m.key,
                targets: &m.targets,
            })
        });
        let conflicted = settled
            .conflicted
            .into_iter()
            .map(|lost| {
                lost.then(|| {
                    format!(
                        "an older {} (or one first by namespace/name) targets the same {same}",
                        P::KIND
                    )
                })
            })
            .collect();
        Self {
            models,
            conflicted,
            index: settled.winners,
        }
    }

    /// Target → index of the policy that holds it.
    pub fn index(&self) -> &BTreeMap<Target, usize> {
        &self.index
    }

    pub fn model(&self, i: usize) -> &Model<P, C> {
        &self.models[i]
    }

    /// Whether policy `i` does not apply to a target it names.
    pub fn is_conflicted(&self, i: usize) -> bool {
        self.conflicted[i].is_some()
    }

    /// Policy `i` does not apply to a target it names, for `why`.
    pub fn set_conflicted(&mut self, i: usize, why: String) {
        self.conflicted[i] = Some(why);
    }

    /// Put the policy in effect (the rule's, the route's, then the Gateway's) on every route
    /// entry of our Gateways: `apply` makes the entry's action from its old one and the
    /// policy's compiled value. Entries that share an action and get the same policy keep
    /// sharing one.
    pub fn place(
        &self,
        gateways: &mut [GatewayModel],
        apply: impl Fn(&RouteAction, &C) -> RouteAction,
    ) {
        if self.index.is_empty() {
            return;
        }
        let mut made: HashMap<(*const RouteAction, usize), Arc<RouteAction>> = HashMap::new();
        each_action(gateways, |gateway, old| {
            let i = attach::effective(&self.index, gateway, old)?;
            let compiled = self.models[i].compiled.as_ref()?;
            let action = made
                .entry((Arc::as_ptr(old), i))
                .or_insert_with(|| Arc::new(apply(old, compiled)));
            Some(action.clone())
        });
    }

    /// One status per policy: an ancestor entry per Gateway it reports under.
    pub fn statuses(&self, controller: &str, now: &weir_store::Time) -> Vec<ObjectStatus> {
        self.models
            .iter()
            .zip(&self.conflicted)
            .map(|(m, conflicted)| {
                let meta = m.policy.metadata();
                let c = Conditions {
                    generation: meta.generation,
                    now,
                };
                let accepted = if let Some(n) = &m.not_accepted {
                    c.make("Accepted", false, n.reason, n.message.clone())
                } else if let Some(why) = conflicted {
                    c.make("Accepted", false, "Conflicted", why.clone())
                } else {
                    c.make("Accepted", true, "Accepted", "Policy has been accepted")
                };
                let mut conditions = vec![accepted];
                conditions.extend(
                    m.also
                        .iter()
                        .map(|a| c.make(a.type_, a.ok, a.reason, a.message.clone())),
                );
                ObjectStatus::new(
                    P::KIND,
                    meta,
                    attach::ancestor_status(&m.ancestors, controller, &conditions),
                )
            })
            .collect()
    }
}

/// One policy of a kind that attaches to Gateways and routes (its targets:
/// [`attach::gather`]), compiled by `compile` unless it names a target Weir does not
/// implement. A policy that cannot be applied holds its targets with what `deny` makes of
/// why (a kind that fails closed) or, without `deny`, nothing; one whose targets all do
/// not exist holds nothing.
pub fn evaluate<'r, P, C>(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    (key, policy): (&ObjectKey, &Arc<P>),
    refs: impl Iterator<Item = &'r PolicyTargetRef>,
    allowed: Allowed,
    compile: impl FnOnce() -> Result<C, NotAccepted>,
    deny: Option<&dyn Fn(&NotAccepted) -> C>,
) -> Model<P, C> {
    let attach::Gathered {
        targets,
        ancestors,
        not_found,
        unsupported_target,
    } = attach::gather(store, &key.namespace, ours, refs, allowed);
    let compiled = match unsupported_target {
        Some(what) => Err(NotAccepted::new(
            "UnsupportedValue",
            format!("Weir does not implement {what} (yet)"),
        )),
        None => compile(),
    };
    let (not_accepted, compiled) = match compiled {
        Ok(_) if targets.is_empty() && not_found.is_some() => (not_found, None),
        Ok(c) => (None, Some(c)),
        Err(n) => {
            let held = deny.filter(|_| !targets.is_empty()).map(|deny| deny(&n));
            (Some(n), held)
        }
    };
    Model {
        key: key.clone(),
        policy: policy.clone(),
        targets,
        ancestors,
        not_accepted,
        also: Vec::new(),
        compiled,
    }
}

/// Give every route entry of `gateways` the action `action` makes of its gateway and old
/// action; `None` keeps the entry as it is.
pub fn each_action(
    gateways: &mut [GatewayModel],
    mut action: impl FnMut(&ObjectKey, &Arc<RouteAction>) -> Option<Arc<RouteAction>>,
) {
    for g in gateways.iter_mut() {
        for l in g.listeners.iter_mut() {
            for (_, entry) in l.entries.iter_mut() {
                let Some(action) = action(&g.key, &entry.action) else {
                    continue;
                };
                *entry = Arc::new(RouteEntry {
                    rank: entry.rank.clone(),
                    matcher: entry.matcher.clone(),
                    action,
                });
            }
        }
    }
}

/// A copy of `old`, for a policy kind to change the fields it sets.
pub fn copy(old: &RouteAction) -> RouteAction {
    RouteAction {
        route: old.route.clone(),
        filters: old.filters.clone(),
        backends: old.backends.clone(),
        total_weight: old.total_weight,
        timeouts: old.timeouts,
        policy: old.policy.clone(),
        ext_auth: old.ext_auth.clone(),
        security: old.security.clone(),
        ext_proc: old.ext_proc.clone(),
    }
}
