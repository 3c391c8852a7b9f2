//! Gateway API's `XBackendTrafficPolicy` (`gateway.networking.x-k8s.io/v1alpha1`,
//! experimental channel): a Service's retry budget (`retryConstraint`, GEP-3388) and session
//! persistence (`sessionPersistence`, GEP-1619), compiled onto the engines Weir already has
//! (the retry budget of Weir's BackendTrafficPolicy `retry.budget`, and the rule-level
//! session persistence) and put on every route entry of our Gateways whose backendRefs name
//! a targeted Service.
//!
//! Decisions where the spec leaves room:
//! - Targets are core Services only (the CRD has no `sectionName`: a whole Service). A
//!   `targetRef` of any other kind makes the policy `Accepted=False`, `Invalid`, naming it.
//!   A policy whose Services do not exist is `TargetNotFound` (one whose Services partly
//!   exist applies to those that do).
//! - One policy per Service: the oldest (`creationTimestamp`, then namespace/name) wins it,
//!   every other one naming it is `Conflicted` (see [`attach`]).
//! - Precedence with the route: a rule's own `sessionPersistence` beats the Service's; a
//!   Weir BackendTrafficPolicy's `retry.budget` (on the rule, route or Gateway) beats the
//!   Service's `retryConstraint`. Gateway API's and Weir's route-side settings are the more
//!   specific ones, as a rule's policy beats its route's.
//! - `retryConstraint` only limits retries: it is placed only on entries that retry (a
//!   rule's `retry`, or a BackendTrafficPolicy's `retry`); other entries pay nothing. Its
//!   budget is counted per route rule (and attached BackendTrafficPolicy), not across every
//!   route to the Service: the retry budget engine keys its counters by the entry's policy.
//! - Traffic splitting (GEP-1619 leaves it to the implementation): a rule whose backendRefs
//!   name several Services, only some with session persistence, applies session
//!   persistence to all its backends equally, with the settings of the first backendRef (in
//!   rule order) whose Service has them; once a session is established it keeps its backend
//!   whatever the weights say. `retryConstraint` likewise: the first backendRef's Service
//!   with one gives the rule's budget.
//! - Session cookies carry no `Path` (GEP-1619: a Service-level policy leaves it unset, the
//!   client defaults it). Without `sessionName` the name is `weir-session-` and a hash of
//!   the Service. Sessions are valid across the rules that share the same backends (in the
//!   same order), as the session value names a backend by its index among them.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use weir_snapshot::{BackendTarget, RetryBudget, RouteAction, SessionPersistence};
use weir_store::gw::xbackendtrafficpolicies::XBackendTrafficPolicyTargetRefs;
use weir_store::{Kind, ObjectKey, Store, XBackendTrafficPolicy};

use crate::model::GatewayModel;
use crate::policy::attach::{self, Allowed, NotAccepted, Target, TargetRef};
use crate::policy::attached::{self, Attached};
use crate::policy::backend::traffic::{budget, BudgetFields};
use crate::refgrant::core_group;
use crate::session::Spec;
use crate::ObjectStatus;

const TARGETS: Allowed = Allowed {
    gateway: false,
    listener_set: false,
    routes: false,
    service: true,
};

/// What an XBackendTrafficPolicy's Services get.
struct Compiled {
    budget: Option<RetryBudget>,
    /// The session settings (scope and, without `sessionName`, name set per entry), and
    /// whether `sessionName` was given.
    session: Option<(SessionPersistence, bool)>,
    /// A hash of the policy's name and spec.
    id: u64,
}

type Model = attached::Model<XBackendTrafficPolicy, Compiled>;

/// Every XBackendTrafficPolicy, and which one holds each Service.
pub struct XBackendPolicies(Attached<XBackendTrafficPolicy, Compiled>);

impl XBackendPolicies {
    /// Evaluate every policy; `ours`: the Gateways of our classes.
    pub fn build(store: &Store, ours: &BTreeSet<ObjectKey>) -> Self {
        // The Gateways using each Service a policy names: its ancestors.
        let named: BTreeSet<ObjectKey> = store
            .x_backend_traffic_policies
            .iter()
            .flat_map(|(key, p)| p.spec.target_refs.iter().filter_map(|t| service(key, t)))
            .collect();
        let users = if named.is_empty() {
            BTreeMap::new()
        } else {
            users(store, ours, &named)
        };
        Self(Attached::build(store, "Service", |key, p| {
            evaluate(store, &users, key, p)
        }))
    }

    /// Put each Service's policy on the route entries of our Gateways that use it. Entries
    /// without any policy keep their action as is.
    pub fn place(&self, gateways: &mut [GatewayModel]) {
        if self.0.index().is_empty() {
            return;
        }
        let mut made: HashMap<*const RouteAction, Option<Arc<RouteAction>>> = HashMap::new();
        attached::each_action(gateways, |_, old| {
            made.entry(Arc::as_ptr(old))
                .or_insert_with(|| self.apply(old, &services(old)))
                .clone()
        });
    }

    /// The action with the Services' policies, `None` when they change nothing.
    fn apply(&self, old: &RouteAction, services: &[ObjectKey]) -> Option<Arc<RouteAction>> {
        let held = |want: fn(&Compiled) -> bool| {
            services.iter().find_map(|s| {
                let target = Target::new(Kind::Service, s.clone(), None);
                let i = *self.0.index().get(&target)?;
                let m = self.0.model(i);
                let compiled = m.compiled.as_ref()?;
                (!self.0.is_conflicted(i) && want(compiled)).then_some((s, m, compiled))
            })
        };
        let current = old.policy.as_deref();
        let retries = current.is_some_and(|p| p.retry.is_some());
        let has_budget = current.is_some_and(|p| p.retry_budget.is_some());
        let budget_from = (retries && !has_budget)
            .then(|| held(|m| m.budget.is_some()))
            .flatten();
        let has_session = current.is_some_and(|p| p.session.is_some());
        let session_from = (!has_session)
            .then(|| held(|m| m.session.is_some()))
            .flatten();
        if budget_from.is_none() && session_from.is_none() {
            return None;
        }
        let mut policy = current.cloned().unwrap_or_default();
        let mut h = DefaultHasher::new();
        ("xbackend", policy.id).hash(&mut h);
        let mut names = vec![policy.name.to_string()];
        if let Some((_, m, c)) = budget_from {
            policy.retry_budget = c.budget;
            c.id.hash(&mut h);
            names.push(m.key.to_string());
        }
        if let Some((service, m, c)) = session_from {
            if let Some((base, named)) = &c.session {
                let mut s = DefaultHasher::new();
                ("xbackend-session", &m.key).hash(&mut s);
                for b in old.backends.iter() {
                    match &b.target {
                        BackendTarget::Upstream(u) => u.name.hash(&mut s),
                        BackendTarget::Invalid(_) => "-".hash(&mut s),
                    }
                }
                let mut session = base.clone();
                session.scope = s.finish();
                if !named {
                    session.name = default_name(service).into();
                }
                policy.session = Some(Arc::new(session));
                c.id.hash(&mut h);
                if !names.contains(&m.key.to_string()) {
                    names.push(m.key.to_string());
                }
            }
        }
        names.retain(|n| !n.is_empty());
        policy.name = names.join(" with ").into();
        policy.id = h.finish();
        Some(Arc::new(RouteAction {
            policy: Some(Arc::new(policy.compiled())),
            ..attached::copy(old)
        }))
    }

    /// One status per policy: an ancestor entry per Gateway of ours using its Services.
    pub fn statuses(&self, controller: &str, now: &weir_store::Time) -> Vec<ObjectStatus> {
        self.0.statuses(controller, now)
    }
}

/// A backendRef's group, kind, name and namespace.
type BackendRefFields<'a> = (Option<&'a str>, Option<&'a str>, &'a str, Option<&'a str>);

/// The Gateways of ours whose HTTPRoutes and GRPCRoutes name each Service of `wanted` in a
/// backendRef (resolved or not: a policy for a Service that does not exist yet still has
/// an ancestor to report `TargetNotFound` under).
fn users(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    wanted: &BTreeSet<ObjectKey>,
) -> BTreeMap<ObjectKey, BTreeSet<ObjectKey>> {
    let mut out: BTreeMap<ObjectKey, BTreeSet<ObjectKey>> = BTreeMap::new();
    let mut add = |kind: Kind, route: &ObjectKey, refs: Vec<BackendRefFields<'_>>| {
        let mut gateways = None;
        for (group, k, name, ns) in refs {
            let service = core_group(group.unwrap_or_default()).is_empty()
                && k.unwrap_or("Service") == "Service";
            let key = ObjectKey::new(ns.unwrap_or(&route.namespace), name);
            if !service || !wanted.contains(&key) {
                continue;
            }
            let gateways = gateways.get_or_insert_with(|| {
                crate::policy::pending::route_gateways(store, kind, route, ours)
            });
            out.entry(key).or_default().extend(gateways.iter().cloned());
        }
    };
    for (key, r) in &store.http_routes {
        let refs = r.spec.rules.iter().flatten();
        let refs = refs.flat_map(|rule| rule.backend_refs.iter().flatten());
        let refs = refs.map(|b| {
            (
                b.group.as_deref(),
                b.kind.as_deref(),
                b.name.as_str(),
                b.namespace.as_deref(),
            )
        });
        add(Kind::HttpRoute, key, refs.collect());
    }
    for (key, r) in &store.grpc_routes {
        let refs = r.spec.rules.iter().flatten();
        let refs = refs.flat_map(|rule| rule.backend_refs.iter().flatten());
        let refs = refs.map(|b| {
            (
                b.group.as_deref(),
                b.kind.as_deref(),
                b.name.as_str(),
                b.namespace.as_deref(),
            )
        });
        add(Kind::GrpcRoute, key, refs.collect());
    }
    out
}

/// The Services of an action's backends, in rule order (each once).
fn services(action: &RouteAction) -> Vec<ObjectKey> {
    let mut out: Vec<ObjectKey> = Vec::new();
    for b in action.backends.iter() {
        let BackendTarget::Upstream(u) = &b.target else {
            continue;
        };
        // `namespace/service:port`.
        let service = u.name.rsplit_once(':').map_or(&*u.name, |(s, _)| s);
        let Some((ns, name)) = service.split_once('/') else {
            continue;
        };
        let key = ObjectKey::new(ns, name);
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// The session name of a Service's policy without `sessionName`.
fn default_name(service: &ObjectKey) -> String {
    let mut h = DefaultHasher::new();
    ("service-session", service).hash(&mut h);
    format!("weir-session-{:08x}", h.finish() as u32)
}

fn invalid(message: impl Into<String>) -> NotAccepted {
    NotAccepted::new("Invalid", message)
}

/// The Service a policy's `targetRef` names, when it names a core Service.
fn service(policy: &ObjectKey, t: &XBackendTrafficPolicyTargetRefs) -> Option<ObjectKey> {
    (core_group(&t.group).is_empty() && t.kind == "Service")
        .then(|| ObjectKey::new(policy.namespace.clone(), t.name.as_str()))
}

/// Evaluate one policy; `users`: the Gateways of ours using each Service policies name.
fn evaluate(
    store: &Store,
    users: &BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    key: &ObjectKey,
    p: &Arc<XBackendTrafficPolicy>,
) -> Model {
    let mut ancestors = BTreeSet::new();
    let mut targets = Vec::new();
    let mut not_found = None;
    let mut bad_target = None;
    for (i, t) in p.spec.target_refs.iter().enumerate() {
        let r = TargetRef {
            group: &t.group,
            kind: &t.kind,
            name: &t.name,
            section_name: None,
        };
        let resolved =
            service(key, t).and_then(|_| attach::resolve(store, &key.namespace, r, TARGETS));
        let Some(resolved) = resolved else {
            bad_target = bad_target.or(Some(invalid(format!(
                "spec.targetRefs[{i}]: {} {:?} {}: an XBackendTrafficPolicy can only target a \
                 core Service",
                if t.group.is_empty() { "core" } else { &t.group },
                t.kind,
                t.name
            ))));
            continue;
        };
        if let Some(gateways) = users.get(&resolved.target.key) {
            ancestors.extend(gateways.iter().cloned());
        }
        match resolved.not_found {
            Some(n) => not_found = not_found.or(Some(n)),
            None => targets.push(resolved.target),
        }
    }
    let compiled = match bad_target {
        Some(n) => Err(n),
        None => compile(key, &p.spec),
    };
    let (compiled, not_accepted) = match compiled {
        Err(n) => (None, Some(n)),
        Ok(_) if targets.is_empty() => (
            None,
            Some(not_found.unwrap_or_else(|| {
                NotAccepted::new("TargetNotFound", "spec.targetRefs names no Service")
            })),
        ),
        Ok(compiled) => (Some(compiled), None),
    };
    if not_accepted.is_some() {
        targets.clear();
    }
    Model {
        key: key.clone(),
        policy: p.clone(),
        targets,
        ancestors,
        not_accepted,
        also: Vec::new(),
        compiled,
    }
}

fn compile(
    key: &ObjectKey,
    spec: &weir_store::gw::xbackendtrafficpolicies::XBackendTrafficPolicySpec,
) -> Result<Compiled, NotAccepted> {
    let budget = match &spec.retry_constraint {
        None => None,
        Some(r) => {
            let b = r.budget.as_ref();
            let rate = r.min_retry_rate.as_ref();
            if let Some(c) = rate.and_then(|r| r.count) {
                if !(1..=1_000_000).contains(&c) {
                    return Err(invalid(format!(
                        "spec.retryConstraint.minRetryRate.count {c}: must be 1 to 1000000"
                    )));
                }
            }
            Some(budget(
                "spec.retryConstraint.budget",
                "spec.retryConstraint.minRetryRate",
                BudgetFields {
                    percent: b.and_then(|b| b.percent),
                    interval: b.and_then(|b| b.interval.as_deref()),
                    min_count: rate.and_then(|r| r.count),
                    min_interval: rate.and_then(|r| r.interval.as_deref()),
                },
            )?)
        }
    };
    let session = match &spec.session_persistence {
        None => None,
        Some(s) => {
            let settings = Spec::xbackend(s)
                .settings(0, String::new(), None)
                .map_err(|e| invalid(format!("spec.sessionPersistence: {e}")))?;
            Some((settings, s.session_name.is_some()))
        }
    };
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    Ok(Compiled {
        budget,
        session,
        id: h.finish(),
    })
}

#[cfg(test)]
mod tests;
