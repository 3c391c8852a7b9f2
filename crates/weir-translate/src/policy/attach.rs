//! Policy attachment (Gateway API GEP-713, direct attachment), one implementation for every
//! policy kind:
//!
//! - **Targets** ([`resolve`]): a `targetRef` names a Gateway (`sectionName`: a listener), a
//!   ListenerSet (a listener of it), an HTTPRoute or GRPCRoute (`sectionName`: a rule name)
//!   or a Service (`sectionName`: a port name), in the policy's own namespace. Each kind says
//!   which of these it accepts ([`Allowed`]); a reference to any other kind is not one of
//!   its targets (ignored, as the spec lets implementations do). A target that does not exist,
//!   or a section it does not have, is `TargetNotFound`.
//! - **Precedence** ([`settle`]): a more specific target (a section) beats a whole object;
//!   they do not conflict, lookups take the most specific ([`most_specific`]). Policies of one
//!   kind naming the *same* target conflict: the oldest (`creationTimestamp`, then
//!   namespace/name) wins it, every other one is `Conflicted`.
//! - **Status** ([`ancestor_status`]): `status.ancestors`, one entry per Gateway the policy
//!   affects, each with our `controllerName` and the policy's conditions.
//!
//! Translation compiles the effective policy into each listener, route entry or upstream,
//! so the proxy never merges policies per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_store::{Condition, Kind, ObjectKey, ObjectMeta, Store, GATEWAY_GROUP};

use crate::meta::created;
use crate::refgrant::core_group;

/// One `targetRef` as written (`LocalPolicyTargetReferenceWithSectionName`).
#[derive(Debug, Clone, Copy)]
pub struct TargetRef<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub section_name: Option<&'a str>,
}

/// The kinds a policy kind may target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed {
    pub gateway: bool,
    pub listener_set: bool,
    pub routes: bool,
    pub service: bool,
}

/// A resolved target: an object and, optionally, one section of it (listener, rule or port
/// name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub kind: Kind,
    pub key: ObjectKey,
    pub section: Option<Arc<str>>,
}

impl Target {
    pub fn new(kind: Kind, key: ObjectKey, section: Option<&str>) -> Self {
        Self {
            kind,
            key,
            section: section.filter(|s| !s.is_empty()).map(Arc::from),
        }
    }

    /// The whole object this target is (a section of).
    pub fn whole(&self) -> Target {
        Target {
            section: None,
            ..self.clone()
        }
    }
}

/// Why a policy is not accepted: the `Accepted=False` reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAccepted {
    pub reason: &'static str,
    pub message: String,
}

impl NotAccepted {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    fn not_found(message: String) -> Self {
        Self::new("TargetNotFound", message)
    }
}

/// One `targetRef`, resolved: the target, and why it is not usable when it (or its section)
/// does not exist.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub target: Target,
    pub not_found: Option<NotAccepted>,
}

/// Resolve one `targetRef` of a policy in `namespace`: `None` for a kind `allowed` does not
/// include (not one of this policy kind's targets).
pub fn resolve(
    store: &Store,
    namespace: &str,
    r: TargetRef<'_>,
    allowed: Allowed,
) -> Option<Resolved> {
    let (kind, key) = target_kind(namespace, r, allowed)?;
    let target = Target::new(kind, key, r.section_name);
    let not_found = check_exists(store, &target).err();
    Some(Resolved { target, not_found })
}

fn target_kind(namespace: &str, r: TargetRef<'_>, allowed: Allowed) -> Option<(Kind, ObjectKey)> {
    let group = core_group(r.group);
    let kind = match (group, r.kind) {
        (GATEWAY_GROUP, "Gateway") if allowed.gateway => Kind::Gateway,
        (GATEWAY_GROUP, "ListenerSet") if allowed.listener_set => Kind::ListenerSet,
        (GATEWAY_GROUP, "HTTPRoute") if allowed.routes => Kind::HttpRoute,
        (GATEWAY_GROUP, "GRPCRoute") if allowed.routes => Kind::GrpcRoute,
        ("", "Service") if allowed.service => Kind::Service,
        _ => return None,
    };
    Some((kind, ObjectKey::new(namespace, r.name)))
}

/// Whether `target` (and its section) exists.
fn check_exists(store: &Store, target: &Target) -> Result<(), NotAccepted> {
    let kind = target.kind;
    let section = target.section.as_deref();
    let missing = || {
        Err(NotAccepted::not_found(format!(
            "{kind} {} does not exist",
            target.key
        )))
    };
    // The names of the object's sections (listeners, rules, ports); `None`: no such object.
    let key = &target.key;
    let sections: Option<Vec<&str>> = match kind {
        Kind::Gateway => store
            .gateways
            .get(key)
            .map(|g| g.spec.listeners.iter().map(|l| l.name.as_str()).collect()),
        Kind::ListenerSet => store
            .listener_sets
            .get(key)
            .map(|l| l.spec.listeners.iter().map(|l| l.name.as_str()).collect()),
        Kind::HttpRoute => store.http_routes.get(key).map(|r| {
            let rules = r.spec.rules.iter().flatten();
            rules.filter_map(|rule| rule.name.as_deref()).collect()
        }),
        Kind::GrpcRoute => store.grpc_routes.get(key).map(|r| {
            let rules = r.spec.rules.iter().flatten();
            rules.filter_map(|rule| rule.name.as_deref()).collect()
        }),
        Kind::Service => store.services.get(key).map(|svc| {
            let ports = svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
            ports.filter_map(|p| p.name.as_deref()).collect()
        }),
        _ => return Ok(()),
    };
    let Some(sections) = sections else {
        return missing();
    };
    let has_section = section.is_none_or(|s| sections.contains(&s));
    if has_section {
        Ok(())
    } else {
        let what = match kind {
            Kind::Gateway | Kind::ListenerSet => "listener",
            Kind::Service => "port",
            _ => "rule",
        };
        Err(NotAccepted::not_found(format!(
            "{kind} {} has no {what} named {}",
            target.key,
            section.unwrap_or_default()
        )))
    }
}

/// One policy of a kind, for [`settle`].
pub struct Candidate<'a> {
    pub meta: &'a ObjectMeta,
    pub key: &'a ObjectKey,
    pub targets: &'a [Target],
}

/// Which policy holds each target, and which policies lost one.
#[derive(Debug, Default)]
pub struct Settled {
    /// Target → index (in the slice given to [`settle`]) of the policy that holds it.
    pub winners: BTreeMap<Target, usize>,
    /// Per policy: another one holds one of its targets.
    pub conflicted: Vec<bool>,
}

/// Precedence among the policies of one kind: each target goes to the oldest policy naming
/// it (`creationTimestamp`, then namespace/name); every later one naming it is conflicted.
pub fn settle(candidates: &[Candidate<'_>]) -> Settled {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        (created(a.meta), a.key).cmp(&(created(b.meta), b.key))
    });
    let mut settled = Settled {
        winners: BTreeMap::new(),
        conflicted: vec![false; candidates.len()],
    };
    for i in order {
        for t in candidates[i].targets {
            if settled.winners.contains_key(t) {
                settled.conflicted[i] = true;
            } else {
                settled.winners.insert(t.clone(), i);
            }
        }
    }
    settled
}

/// [`settle`] over the models of one policy kind, for those that `candidate` puts forward
/// (the accepted ones: a refused policy holds nothing): winners and `conflicted` are indexed
/// like `models`.
pub fn settle_where<'a, M>(
    models: &'a [M],
    candidate: impl Fn(&'a M) -> Option<Candidate<'a>>,
) -> Settled {
    let (positions, candidates): (Vec<usize>, Vec<Candidate<'a>>) = models
        .iter()
        .enumerate()
        .filter_map(|(i, m)| candidate(m).map(|c| (i, c)))
        .unzip();
    let settled = settle(&candidates);
    let mut conflicted = vec![false; models.len()];
    for (c, lost) in settled.conflicted.into_iter().enumerate() {
        conflicted[positions[c]] = lost;
    }
    Settled {
        winners: settled
            .winners
            .into_iter()
            .map(|(t, c)| (t, positions[c]))
            .collect(),
        conflicted,
    }
}

/// The policy in effect for a route entry of `gateway` (a route-level kind: the rule's,
/// then the route's, then the Gateway's), from a kind's index of winners.
pub fn effective<T: Copy>(
    index: &BTreeMap<Target, T>,
    gateway: &ObjectKey,
    action: &weir_snapshot::RouteAction,
) -> Option<T> {
    if index.is_empty() {
        return None;
    }
    let kind = match action.route.kind {
        "HTTPRoute" => Kind::HttpRoute,
        "GRPCRoute" => Kind::GrpcRoute,
        _ => return None,
    };
    let route = action
        .route
        .route
        .split_once('/')
        .map(|(ns, name)| ObjectKey::new(ns, name));
    let from_route = route.and_then(|key| {
        let target = Target::new(kind, key, action.route.rule_name.as_deref());
        most_specific(index, &target).copied()
    });
    from_route.or_else(|| {
        index
            .get(&Target::new(Kind::Gateway, gateway.clone(), None))
            .copied()
    })
}

/// The value for the most specific of `target`'s chain held in `index`: the target itself
/// (with its section), then the whole object.
pub fn most_specific<'a, T>(index: &'a BTreeMap<Target, T>, target: &Target) -> Option<&'a T> {
    index.get(target).or_else(|| {
        target
            .section
            .as_ref()
            .and_then(|_| index.get(&target.whole()))
    })
}

/// `status.ancestors` of a policy: one entry per Gateway in `gateways`, each with our
/// `controller` and `conditions` (Gateway API `PolicyAncestorStatus`).
pub fn ancestor_status<'a>(
    gateways: impl IntoIterator<Item = &'a ObjectKey>,
    controller: &str,
    conditions: &[Condition],
) -> serde_json::Value {
    let ancestors: Vec<serde_json::Value> = gateways
        .into_iter()
        .map(|g| {
            serde_json::json!({
                "ancestorRef": {
                    "group": GATEWAY_GROUP,
                    "kind": "Gateway",
                    "name": &*g.name,
                    "namespace": &*g.namespace,
                },
                "conditions": conditions,
                "controllerName": controller,
            })
        })
        .collect();
    serde_json::json!({ "ancestors": ancestors })
}

#[cfg(test)]
mod tests;

/// What a policy's `targetRefs` came to, for the kinds that attach to Gateways and routes
/// (BackendTrafficPolicy, SecurityPolicy): the targets found, the Gateways they reach (the
/// status ancestors), the first target that does not exist, and the first target Weir
/// does not implement (a Gateway listener, or a kind `allowed` lets through that neither
/// kind handles yet).
pub struct Gathered {
    pub targets: Vec<Target>,
    pub ancestors: std::collections::BTreeSet<ObjectKey>,
    pub not_found: Option<NotAccepted>,
    pub unsupported_target: Option<String>,
}

/// Resolve every `targetRef` of a policy in `namespace` (see [`Gathered`]). Targets on
/// Gateways of other controllers are left out.
pub fn gather<'a>(
    store: &Store,
    namespace: &str,
    ours: &std::collections::BTreeSet<ObjectKey>,
    refs: impl Iterator<Item = &'a weir_store::policies::PolicyTargetRef>,
    allowed: Allowed,
) -> Gathered {
    let mut out = Gathered {
        targets: Vec::new(),
        ancestors: std::collections::BTreeSet::new(),
        not_found: None,
        unsupported_target: None,
    };
    for t in refs {
        let r = TargetRef {
            group: &t.group,
            kind: &t.kind,
            name: &t.name,
            section_name: t.section_name.as_deref(),
        };
        let Some(resolved) = resolve(store, namespace, r, allowed) else {
            continue;
        };
        let target = &resolved.target;
        match target.kind {
            Kind::Gateway => {
                let exists = store.gateways.contains_key(&target.key);
                if exists && !ours.contains(&target.key) {
                    continue;
                }
                out.ancestors.insert(target.key.clone());
                if target.section.is_some() {
                    out.unsupported_target = out.unsupported_target.take().or(Some(format!(
                        "a Gateway listener (sectionName {:?} of Gateway {}) as a target: \
                         target the Gateway, a route or a rule",
                        t.section_name.as_deref().unwrap_or_default(),
                        target.key
                    )));
                }
            }
            Kind::HttpRoute | Kind::GrpcRoute => {
                out.ancestors.extend(crate::policy::pending::route_gateways(
                    store,
                    target.kind,
                    &target.key,
                    ours,
                ));
            }
            _ => {
                out.unsupported_target = out.unsupported_target.take().or(Some(format!(
                    "a {} ({}) as a target",
                    target.kind, target.key
                )));
                continue;
            }
        }
        match resolved.not_found {
            Some(n) => out.not_found = out.not_found.take().or(Some(n)),
            None => out.targets.push(resolved.target),
        }
    }
    out
}
