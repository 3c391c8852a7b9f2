//! BackendTrafficPolicy `rateLimit`: the local engine (phase 2, after authorization) and the
//! answers and headers both engines give (the global one, counting in Redis, is
//! [`global`]).
//!
//! **Local** limits are token buckets, one per (route rule, policy rule) — or per policy rule
//! with `shared: true` — kept in [`LocalLimits`] beside the snapshot, so they survive
//! swaps that keep the policy. A bucket holds `requests` tokens and refills at `requests`
//! per `unit` continuously (Envoy's local rate limit: `max_tokens` = `tokens_per_fill` =
//! `requests`, `fill_interval` = `unit`). Each bucket is one `AtomicU64` in GCRA form: the
//! "theoretical arrival time" (TAT) of the next request, updated with a compare-and-swap,
//! so the hot path takes no lock.
//!
//! **Distinct** rules (a `Distinct` header or `sourceCIDR`) keep a bucket per client key in
//! a bounded map: [`DISTINCT_KEYS`] keys per rule and route rule at most, in
//! [`SHARDS`] shards with a mutex each (a request locks one shard, briefly). A key's entry
//! holds only its TAT; an entry whose bucket has refilled completely is the same as no
//! entry, so a full shard first drops those (losing nothing) and otherwise evicts the
//! entry closest to full. An attacker cycling keys costs at most the map's size in memory
//! and can at worst give evicted clients a full bucket back early. Keys are hashed with a
//! per-process random SipHash key, so they cannot be chosen to collide.
//!
//! A request counts against every rule whose selectors it meets, in order; the first rule
//! over its limit refuses it (429, [`ProxyError::RateLimited`]). Routes without a
//! `rateLimit` never reach this module.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Response};
use weir_snapshot::rate_limit::Client;
use weir_snapshot::{Limit, RateLimit, RateLimitRule, Snapshot};

use crate::body::{text_body, ProxyBody};
use crate::error::ProxyError;
use crate::state::{IdHasher, IdMap};

pub(crate) mod global;

/// Keys one distinct rule keeps buckets for (per route rule, or per policy rule when
/// `shared`): Envoy Gateway's `max_dynamic_descriptors` default, 10k.
pub(crate) const DISTINCT_KEYS: usize = 10_000;
/// Shards of a distinct rule's map (a request locks one).
pub(crate) const SHARDS: usize = 16;
const PER_SHARD: usize = DISTINCT_KEYS / SHARDS;

/// What a rate limit decided for a request, and what its headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    /// `requests` of the rule.
    pub(crate) limit: u32,
    /// Requests still admitted now.
    pub(crate) remaining: u32,
    /// Seconds until the quota is whole again (`x-ratelimit-reset`).
    pub(crate) reset: u64,
    /// Seconds until a refused request may succeed (`retry-after`).
    pub(crate) retry_after: u64,
    /// The rule's unit in seconds (the `w=` of the global `x-ratelimit-limit`).
    pub(crate) window: u64,
    /// Whether a global rule decided (its `x-ratelimit-limit` names the window, as Envoy's
    /// rate limit filter writes it).
    pub(crate) global: bool,
}

impl Decision {
    /// Of two decisions, the one the headers show: a refusal, else the tighter.
    pub(crate) fn tighter(self, other: Decision) -> Decision {
        match (self.allowed, other.allowed) {
            (false, _) => self,
            (true, false) => other,
            _ if other.remaining < self.remaining => other,
            _ => self,
        }
    }

    /// `x-ratelimit-limit`, `-remaining`, `-reset` (Envoy's draft-03 headers: a plain
    /// number for a local limit, `N, N;w=SECONDS` for a global one); on a refusal also
    /// `retry-after`.
    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        let limit = if self.global {
            HeaderValue::from_str(&format!("{0}, {0};w={1}", self.limit, self.window))
                .unwrap_or_else(|_| HeaderValue::from(self.limit))
        } else {
            HeaderValue::from(self.limit)
        };
        headers.insert(X_RATELIMIT_LIMIT.clone(), limit);
        headers.insert(
            X_RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        headers.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(self.reset));
        if !self.allowed {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(self.retry_after.max(1)),
            );
        }
    }
}

static X_RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");

/// The 429 (or, from [`global`], a fail-closed 500) for a refused request: status and body
/// from the one error table, the decision's headers, and the access-log flag.
pub(crate) fn refusal(err: &ProxyError, decision: Option<&Decision>) -> Response<ProxyBody> {
    let class = err.classify();
    let mut response = Response::new(text_body(class.body));
    *response.status_mut() = class.status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(class.body.len()),
    );
    if let Some(d) = decision {
        d.write(headers);
    }
    response
        .extensions_mut()
        .insert(crate::fault::FaultFlag(class.label));
    response
}

/// One rule's parameters in GCRA form.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Nanoseconds between two requests at the limit (the emission interval).
    interval: u64,
    /// How far ahead of now the TAT may be and still admit (the burst: `requests` − 1
    /// intervals).
    tolerance: u64,
    limit: u32,
    window: u64,
}

impl Gcra {
    fn new(limit: Limit) -> Gcra {
        let unit = u64::try_from(limit.unit.as_nanos()).unwrap_or(u64::MAX);
        let requests = u64::from(limit.requests.max(1));
        let interval = (unit / requests).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(requests - 1),
            limit: limit.requests,
            window: limit.window_secs(),
        }
    }

    /// Decide at `now` for a bucket whose TAT is `tat`: the new TAT when admitted.
    fn decide(&self, tat: u64, now: u64) -> (Option<u64>, Decision) {
        let tat = tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            let wait = ahead - self.tolerance;
            return (
                None,
                Decision {
                    allowed: false,
                    limit: self.limit,
                    remaining: 0,
                    reset: ceil_secs(ahead),
                    retry_after: ceil_secs(wait),
                    window: self.window,
                    global: false,
                },
            );
        }
        let next = tat.saturating_add(self.interval);
        let ahead = next - now;
        let room = (self.tolerance + self.interval).saturating_sub(ahead) / self.interval;
        (
            Some(next),
            Decision {
                allowed: true,
                limit: self.limit,
                remaining: u32::try_from(room).unwrap_or(u32::MAX),
                reset: ceil_secs(ahead),
                retry_after: 0,
                window: self.window,
                global: false,
            },
        )
    }
}

fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// One token bucket: its TAT in nanoseconds since the engine's epoch (0: full).
#[derive(Debug, Default)]
struct Bucket(AtomicU64);

impl Bucket {
    fn take(&self, gcra: &Gcra, now: u64) -> Decision {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let (next, decision) = gcra.decide(current, now);
            let Some(next) = next else { return decision };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return decision,
                Err(seen) => current = seen,
            }
        }
    }
}

/// A distinct rule's buckets, by client key (see the module docs for the bound).
struct DistinctBuckets {
    shards: Box<[Mutex<IdMap<u64, u64>>]>,
}

impl DistinctBuckets {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(IdMap::default())).collect(),
        }
    }

    fn take(&self, gcra: &Gcra, key: u64, now: u64) -> Decision {
        let shard = usize::try_from(key >> 60).unwrap_or(0) % SHARDS;
        let Some(shard) = self.shards.get(shard) else {
            return gcra.decide(0, now).1;
        };
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = map.get(&key).copied().unwrap_or(0);
        let (next, decision) = gcra.decide(tat, now);
        if let Some(next) = next {
            if map.len() >= PER_SHARD && !map.contains_key(&key) {
                evict(&mut map, now);
            }
            map.insert(key, next);
        }
        decision
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Make room in a full shard: drop the buckets that have refilled (no information lost);
/// if none has, the one closest to full.
fn evict(map: &mut IdMap<u64, u64>, now: u64) {
    map.retain(|_, tat| *tat > now);
    if map.len() < PER_SHARD {
        return;
    }
    if let Some(oldest) = map.iter().min_by_key(|(_, tat)| **tat).map(|(k, _)| *k) {
        map.remove(&oldest);
    }
}

enum Buckets {
    One(Bucket),
    Distinct(DistinctBuckets),
}

/// One rule's state for one scope.
struct RuleState {
    gcra: Gcra,
    buckets: Buckets,
}

/// (scope, rule id) of a rule's state: the scope is the route rule's, or 0 for a `shared`
/// rule (one state for every route the policy applies to).
type StateKey = (u64, u64);

fn state_key(rl: &RateLimit, rule: &RateLimitRule) -> StateKey {
    (if rule.shared { 0 } else { rl.scope }, rule.id)
}

/// Every local rule's buckets, beside the snapshot. Reads are lock-free (an `ArcSwap` of
/// the map); a rule seen for the first time is added under `adding`.
pub(crate) struct LocalLimits {
    states: ArcSwap<IdMap<StateKey, Arc<RuleState>>>,
    adding: Mutex<()>,
    epoch: Instant,
    keys: RandomState,
}

impl Default for LocalLimits {
    fn default() -> Self {
        Self {
            states: ArcSwap::from_pointee(IdMap::default()),
            adding: Mutex::new(()),
            epoch: Instant::now(),
            keys: RandomState::new(),
        }
    }
}

impl LocalLimits {
    /// Nanoseconds since the epoch (at least 1: a TAT of 0 is a full bucket).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Phase 2: count the request against every local rule it meets. `None`: no rule
    /// selected it.
    pub(crate) fn check(&self, rl: &RateLimit, client: &Client<'_>) -> Option<Decision> {
        self.check_at(rl, client, self.now())
    }

    fn check_at(&self, rl: &RateLimit, client: &Client<'_>, now: u64) -> Option<Decision> {
        let mut shown: Option<Decision> = None;
        for rule in rl.local.iter() {
            let mut hasher = self.keys.build_hasher();
            let mut distinct = false;
            let selected = rule.select(client, &mut |part| {
                distinct = true;
                hasher.write_usize(part.len());
                hasher.write(part);
            });
            if !selected {
                continue;
            }
            let state = self.state(rl, rule);
            let decision = match &state.buckets {
                Buckets::One(b) => b.take(&state.gcra, now),
                Buckets::Distinct(d) if distinct => d.take(&state.gcra, hasher.finish(), now),
                // A distinct rule always yields key parts when it selects.
                Buckets::Distinct(d) => d.take(&state.gcra, 0, now),
            };
            shown = Some(match shown {
                None => decision,
                Some(s) => s.tighter(decision),
            });
            if !decision.allowed {
                break;
            }
        }
        shown
    }

    fn state(&self, rl: &RateLimit, rule: &RateLimitRule) -> Arc<RuleState> {
        let key = state_key(rl, rule);
        if let Some(s) = self.states.load().get(&key) {
            return s.clone();
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.states.load_full();
        if let Some(s) = current.get(&key) {
            return s.clone();
        }
        let state = Arc::new(RuleState {
            gcra: Gcra::new(rule.limit),
            buckets: if rule.is_distinct() {
                Buckets::Distinct(DistinctBuckets::new())
            } else {
                Buckets::One(Bucket::default())
            },
        });
        let mut next = (*current).clone();
        next.insert(key, state.clone());
        self.states.store(Arc::new(next));
        state
    }

    /// After a swap: drop the state of rules the snapshot no longer has.
    pub(crate) fn retain_live(&self, snapshot: &Snapshot) {
        let mut live =
            std::collections::HashSet::<StateKey, BuildHasherDefault<IdHasher>>::default();
        for socket in snapshot.sockets.iter() {
            for listener in socket.listeners.iter() {
                for entry in listener.routes.values() {
                    let Some(rl) = entry
                        .action
                        .policy
                        .as_deref()
                        .and_then(|p| p.rate_limit.as_ref())
                    else {
                        continue;
                    };
                    for rule in rl.local.iter() {
                        live.insert(state_key(rl, rule));
                    }
                }
            }
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.states.load_full();
        if current.keys().all(|k| live.contains(k)) {
            return;
        }
        let next: IdMap<StateKey, Arc<RuleState>> = current
            .iter()
            .filter(|(k, _)| live.contains(*k))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        self.states.store(Arc::new(next));
    }

    /// Rule states held (tests).
    #[cfg(test)]
    fn rules(&self) -> usize {
        self.states.load().len()
    }
}

/// The client address rate limits see: ClientTrafficPolicy's `clientIPDetection` result,
/// else the connection's peer.
pub(crate) fn client_address(extensions: &http::Extensions, peer: IpAddr) -> IpAddr {
    extensions
        .get::<crate::client_policy::ClientAddr>()
        .map_or(peer, |c| c.0.ip())
}

/// A distinct map's size now (tests).
#[cfg(test)]
fn distinct_len(limits: &LocalLimits, rl: &RateLimit, rule: &RateLimitRule) -> usize {
    match &limits.state(rl, rule).buckets {
        Buckets::Distinct(d) => d.len(),
        Buckets::One(_) => 0,
    }
}

#[cfg(test)]
mod tests;
