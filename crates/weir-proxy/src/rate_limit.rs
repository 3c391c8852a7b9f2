//! BackendTrafficPolicy `rateLimit`: the local engine (phase 2, after authorization) and the
//! answers and headers both engines give (the global one, counting in Redis, is
//! [`global`]).
//!
//! **Local** limits count with the same algorithm as the global ones in Redis (see
//! [`global`] for why): a **sliding window counter** per (route rule, policy rule) — or per
//! policy rule with `shared: true` — kept in [`LocalLimits`] beside the snapshot, so they
//! survive swaps that keep the policy. A key counts its requests per fixed window of `unit`
//! (windows aligned to the wall clock, as Redis's are); a request is admitted while
//! `previous × (time left of the current window / unit) + current` (the weighted part
//! rounded down) stays below `requests`. So `requests` per `unit` is the sustained rate and
//! about `requests` pass in *any* interval of one `unit`; over `T` at twice the rate, about
//! `requests × T / unit` pass (at most half a window's quota more: a key seen for the first
//! time mid-window has no previous count). A token bucket (Envoy's local rate limit, and
//! this engine until it missed issue 22's 5 % accuracy) admits its whole burst and then the
//! refill: `requests × (T / unit + 1)`. Each rule's counters are one 128-bit atomic
//! (window number, previous count, current count) updated with a compare-and-swap, so the
//! hot path takes no lock. With `--rate-limit-replicas N` each replica admits its share,
//! `⌈requests / N⌉` ([`share`]).
//!
//! **Distinct** rules (a `Distinct` header or `sourceCIDR`) keep counters per client key in
//! a bounded map: [`DISTINCT_KEYS`] keys per rule and route rule at most, in
//! [`SHARDS`] shards with a mutex each (a request locks one shard, briefly). A key whose
//! windows have both passed counts nothing and is the same as no entry, so a full shard
//! first drops those (losing nothing) and otherwise evicts the key that counts least now.
//! An attacker cycling keys costs at most the map's size in memory and can at worst give
//! evicted clients their quota back early. Keys are hashed with a per-process random
//! SipHash key, so they cannot be chosen to collide; a rule keyed by the IPv4 client
//! address alone uses the address itself, through a bijection with a random offset
//! (no two addresses share a key, and no hash is computed).
//!
//! A request counts against every rule whose selectors it meets, in order; the first rule
//! over its limit refuses it (429, [`ProxyError::RateLimited`]). Routes without a
//! `rateLimit` never reach this module.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A local rule's `x-ratelimit-limit` value, made once per rule state (cloning it does
    /// not allocate); `None`: written from `limit`.
    pub(crate) limit_value: Option<HeaderValue>,
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
    ///
    /// Per admitted request this is the hot path of a limited route: the names are static,
    /// the local limit's value is the rule's precomputed one, and numbers below 1000 (the
    /// reset of any unit up to a quarter hour, a small remaining quota) come from a static
    /// table; only a larger `remaining` allocates its value.
    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        let limit = match (&self.limit_value, self.global) {
            (_, true) => global_limit_value(self.limit, self.window),
            (Some(v), false) => v.clone(),
            (None, false) => number_value(u64::from(self.limit)),
        };
        headers.insert(X_RATELIMIT_LIMIT.clone(), limit);
        headers.insert(
            X_RATELIMIT_REMAINING.clone(),
            number_value(u64::from(self.remaining)),
        );
        headers.insert(X_RATELIMIT_RESET.clone(), number_value(self.reset));
        if !self.allowed {
            headers.insert(
                http::header::RETRY_AFTER,
                number_value(self.retry_after.max(1)),
            );
        }
    }
}

/// The decimal digits of 0..1000, three per number (zero-padded): a number below 1000 is a
/// slice of this (its leading zeros cut), a `&'static str` a header value borrows.
static SMALL_NUMBERS: [u8; 3000] = {
    let mut table = [0u8; 3000];
    let mut i = 0;
    while i < 1000 {
        table[3 * i] = b'0' + (i / 100) as u8;
        table[3 * i + 1] = b'0' + (i / 10 % 10) as u8;
        table[3 * i + 2] = b'0' + (i % 10) as u8;
        i += 1;
    }
    table
};

/// `n` in decimal, a static slice (no allocation) below 1000.
fn small_number(n: u64) -> Option<&'static str> {
    let n = usize::try_from(n).ok().filter(|n| *n < 1000)?;
    let skip = match n {
        0..=9 => 2,
        10..=99 => 1,
        _ => 0,
    };
    let digits = SMALL_NUMBERS.get(3 * n + skip..3 * n + 3)?;
    std::str::from_utf8(digits).ok()
}

/// A number as a header value: below 1000 without an allocation, else one.
pub(crate) fn number_value(n: u64) -> HeaderValue {
    match small_number(n) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// The global `x-ratelimit-limit`, `N, N;w=SECONDS` (Envoy's rate limit filter's form),
/// written into a stack buffer (one allocation: the value's).
fn global_limit_value(limit: u32, window: u64) -> HeaderValue {
    let (mut l, mut w) = ([0u8; 20], [0u8; 20]);
    let limit = decimal(u64::from(limit), &mut l);
    let window = decimal(window, &mut w);
    let mut buf = [0u8; 72];
    let mut len = 0;
    for part in [limit, b", ", limit, b";w=", window] {
        if let Some(dst) = buf.get_mut(len..len + part.len()) {
            dst.copy_from_slice(part);
            len += part.len();
        }
    }
    // Digits and ", ;w=" are valid header bytes: the fallback is never taken.
    HeaderValue::from_bytes(buf.get(..len).unwrap_or_default())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `n`'s decimal digits, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

static X_RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");

/// Remove the `x-ratelimit-*` headers (`headers.disableRateLimitHeaders` of a
/// ClientTrafficPolicy); `retry-after` stays.
pub(crate) fn strip_headers(headers: &mut HeaderMap) {
    for name in [
        &X_RATELIMIT_LIMIT,
        &X_RATELIMIT_REMAINING,
        &X_RATELIMIT_RESET,
    ] {
        headers.remove(name);
    }
}

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

/// One rule's parameters: a sliding window of `unit` admitting `limit` requests.
#[derive(Debug, Clone, Copy)]
struct Sliding {
    /// The window's length in nanoseconds.
    unit: u64,
    /// Requests admitted per window on this replica: the rule's `requests`, or its share
    /// under `--rate-limit-replicas` (rounded up, at least 1).
    limit: u32,
    window: u64,
}

impl Sliding {
    fn new(limit: Limit, replicas: u32) -> Sliding {
        let unit = u64::try_from(limit.unit.as_nanos()).unwrap_or(u64::MAX);
        Sliding {
            unit: unit.max(1),
            limit: share(limit.requests, replicas),
            window: limit.window_secs(),
        }
    }

    /// Decide at `now` (nanoseconds of wall-clock time) for a key whose counters are
    /// `state`: the new counters when admitted.
    fn decide(&self, state: Window, now: u64) -> (Option<Window>, Decision) {
        let number = now / self.unit;
        let elapsed = now % self.unit;
        let (prev, cur) = if state.number == number {
            (state.prev, state.cur)
        } else if state.number.checked_add(1) == Some(number) {
            (state.cur, 0)
        } else {
            (0, 0)
        };
        let left = self.unit - elapsed;
        let weighted = weigh(prev, left, self.unit);
        let used = weighted.saturating_add(u64::from(cur));
        let limit = u64::from(self.limit);
        if used >= limit {
            // The previous window's weight falls as time passes: the request may pass
            // once `prev × left / unit` is below `limit − cur`, i.e. `left` is at most
            // `until` (if this window's count alone is not at the limit already; then at
            // the next window at the earliest).
            let wait = if prev > 0 && u64::from(cur) < limit {
                let room = u128::from(limit - u64::from(cur)) * u128::from(self.unit);
                let until = (room - 1) / u128::from(prev);
                u64::try_from(u128::from(left).saturating_sub(until))
                    .unwrap_or(left)
                    .max(1)
            } else {
                left
            };
            return (
                None,
                Decision {
                    allowed: false,
                    limit: self.limit,
                    remaining: 0,
                    reset: ceil_secs(left),
                    retry_after: ceil_secs(wait),
                    window: self.window,
                    global: false,
                    limit_value: None,
                },
            );
        }
        let next = Window {
            number,
            prev,
            cur: cur.saturating_add(1),
        };
        (
            Some(next),
            Decision {
                allowed: true,
                limit: self.limit,
                remaining: u32::try_from(limit - used - 1).unwrap_or(u32::MAX),
                reset: ceil_secs(left),
                retry_after: 0,
                window: self.window,
                global: false,
                limit_value: None,
            },
        )
    }

    /// Requests still counted against the key at `now` (eviction prefers the lowest).
    fn used(&self, state: Window, now: u64) -> u64 {
        let number = now / self.unit;
        let left = self.unit - now % self.unit;
        if state.number == number {
            weigh(state.prev, left, self.unit).saturating_add(u64::from(state.cur))
        } else if state.number.checked_add(1) == Some(number) {
            weigh(state.cur, left, self.unit)
        } else {
            0
        }
    }
}

/// `count × left / unit`, rounded down: a fraction of a request left over from the
/// previous window does not refuse a whole one (else each window admits one request less
/// than the limit at a steady rate). The global script rounds the same way.
fn weigh(count: u32, left: u64, unit: u64) -> u64 {
    // In 64 bits when the product fits (a count below 2^32 by a unit of up to ~4 s in
    // nanoseconds, or a small count): a 128-bit division is a library call.
    if count == 0 {
        return 0;
    }
    if let Some(product) = u64::from(count).checked_mul(left) {
        return product / unit.max(1);
    }
    let w = u128::from(count) * u128::from(left) / u128::from(unit.max(1));
    u64::try_from(w).unwrap_or(u64::MAX)
}

/// A replica's share of `requests` under `--rate-limit-replicas`: rounded up (so the
/// replicas together admit at least the limit, and less than `replicas` more), at least 1.
pub(crate) fn share(requests: u32, replicas: u32) -> u32 {
    requests.div_ceil(replicas.max(1)).max(1)
}

fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// One key's counters: the number of the window they belong to (`now / unit`), the count
/// of the window before it and of this one. All zero: never used (window 0 is 1970).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    number: u64,
    prev: u32,
    cur: u32,
}

impl Window {
    fn pack(self) -> u128 {
        (u128::from(self.number) << 64) | (u128::from(self.prev) << 32) | u128::from(self.cur)
    }

    fn unpack(v: u128) -> Window {
        Window {
            number: (v >> 64) as u64,
            prev: (v >> 32) as u32,
            cur: v as u32,
        }
    }
}

/// One non-distinct rule's counters, in one 128-bit atomic (a compare-and-swap per
/// request, no lock).
#[derive(Debug, Default)]
struct Bucket(portable_atomic::AtomicU128);

impl Bucket {
    fn take(&self, rule: &Sliding, now: u64) -> Decision {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let (next, decision) = rule.decide(Window::unpack(current), now);
            let Some(next) = next else { return decision };
            match self.0.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return decision,
                Err(seen) => current = seen,
            }
        }
    }
}

/// A distinct rule's counters, by client key (see the module docs for the bound).
struct DistinctBuckets {
    shards: Box<[Mutex<IdMap<u64, Window>>]>,
}

impl DistinctBuckets {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(IdMap::default())).collect(),
        }
    }

    fn take(&self, rule: &Sliding, key: u64, now: u64) -> Decision {
        let shard = usize::try_from(key >> 60).unwrap_or(0) % SHARDS;
        let Some(shard) = self.shards.get(shard) else {
            return rule.decide(Window::default(), now).1;
        };
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        // A key seen before (every request of a client after its first): one lookup.
        if let Some(state) = map.get_mut(&key) {
            let (next, decision) = rule.decide(*state, now);
            if let Some(next) = next {
                *state = next;
            }
            return decision;
        }
        let (next, decision) = rule.decide(Window::default(), now);
        if let Some(next) = next {
            if map.len() >= PER_SHARD {
                evict(&mut map, rule, now);
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

/// Make room in a full shard: drop the keys that count nothing any more (no information
/// lost); if none does, the one that counts least now.
fn evict(map: &mut IdMap<u64, Window>, rule: &Sliding, now: u64) {
    map.retain(|_, w| rule.used(*w, now) > 0);
    if map.len() < PER_SHARD {
        return;
    }
    if let Some(least) = map
        .iter()
        .min_by_key(|(_, w)| rule.used(**w, now))
        .map(|(k, _)| *k)
    {
        map.remove(&least);
    }
}

enum Buckets {
    One(Bucket),
    Distinct(DistinctBuckets),
}

/// One rule's state for one scope.
struct RuleState {
    rule: Sliding,
    buckets: Buckets,
    /// `x-ratelimit-limit`'s value, made once (each admitted request clones it).
    limit_value: HeaderValue,
}

impl RuleState {
    /// Count a request at `now`; `key`: a distinct rule's client key.
    fn take(&self, key: Option<u64>, now: u64) -> Decision {
        let mut decision = match &self.buckets {
            Buckets::One(b) => b.take(&self.rule, now),
            // A distinct rule always yields key parts when it selects.
            Buckets::Distinct(d) => d.take(&self.rule, key.unwrap_or(0), now),
        };
        decision.limit_value = Some(self.limit_value.clone());
        decision
    }
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
    /// The monotonic clock at start, and the wall clock then (nanoseconds since 1970): the
    /// windows are aligned to the wall clock (a `Second` window starts at a whole second,
    /// as the global limit's windows do on Redis's clock), and counted on the monotonic
    /// clock so a clock step does not reset them.
    epoch: Instant,
    wall: u64,
    keys: RandomState,
    /// Added to an IPv4 address before [`mix`] ([`LocalLimits::address_key`]): random per
    /// process, so where an address lands is not known from outside.
    address_offset: u64,
    /// `--rate-limit-replicas` (or the ready Pods behind `--gateway-service`, see
    /// [`LocalLimits::set_replicas`]): each rule admits its share (see [`share`]).
    replicas: AtomicU32,
}

impl Default for LocalLimits {
    fn default() -> Self {
        Self::new(1)
    }
}

impl LocalLimits {
    /// The engine of one of `replicas` replicas sharing each local limit.
    pub(crate) fn new(replicas: u32) -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let keys = RandomState::new();
        Self {
            states: ArcSwap::from_pointee(IdMap::default()),
            adding: Mutex::new(()),
            epoch: Instant::now(),
            wall,
            address_offset: keys.hash_one(0x5eed_u64),
            keys,
            replicas: AtomicU32::new(replicas.max(1)),
        }
    }

    /// From now on split each rule across `replicas` (at least 1). A change drops every
    /// rule's state, so the rules restart their windows with the new share (once per
    /// change of the replica count); the same count again changes nothing. Whether it
    /// changed.
    pub(crate) fn set_replicas(&self, replicas: u32) -> bool {
        let replicas = replicas.max(1);
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        if self.replicas.swap(replicas, Ordering::Relaxed) == replicas {
            return false;
        }
        self.states.store(Arc::new(IdMap::default()));
        true
    }

    /// Nanoseconds of wall-clock time, advancing with the monotonic clock.
    fn now(&self) -> u64 {
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wall.saturating_add(since)
    }

    /// Phase 2: count the request against every local rule it meets. `None`: no rule
    /// selected it.
    pub(crate) fn check(&self, rl: &RateLimit, client: &Client<'_>) -> Option<Decision> {
        self.check_with(rl, client, || self.now())
    }

    #[cfg(test)]
    fn check_at(&self, rl: &RateLimit, client: &Client<'_>, now: u64) -> Option<Decision> {
        self.check_with(rl, client, || now)
    }

    /// The hot path of an admitted request: a rule whose selectors do not hold costs only
    /// its selectors; the clock is read once, at the first rule that holds, and the state
    /// map loaded once (no lock, no `Arc` count); a rule without a `Distinct` selector
    /// hashes nothing and counts in one atomic.
    fn check_with(
        &self,
        rl: &RateLimit,
        client: &Client<'_>,
        clock: impl Fn() -> u64,
    ) -> Option<Decision> {
        let mut shown: Option<Decision> = None;
        let mut now: Option<u64> = None;
        let mut states = None;
        for rule in rl.local.iter() {
            let mut hasher = None;
            let by_address = by_address_only(rule);
            let selected = if by_address {
                rule.select(client, &mut |_| {})
            } else {
                rule.select(client, &mut |part| {
                    let hasher = hasher.get_or_insert_with(|| self.keys.build_hasher());
                    hasher.write_usize(part.len());
                    hasher.write(part);
                })
            };
            if !selected {
                continue;
            }
            let now = *now.get_or_insert_with(&clock);
            let key = if by_address {
                Some(self.address_key(client.address))
            } else {
                hasher.map(|h| h.finish())
            };
            let states = states.get_or_insert_with(|| self.states.load());
            let decision = match states.get(&state_key(rl, rule)) {
                Some(state) => state.take(key, now),
                None => self.add(rl, rule).take(key, now),
            };
            let allowed = decision.allowed;
            shown = Some(match shown {
                None => decision,
                Some(s) => s.tighter(decision),
            });
            if !allowed {
                break;
            }
        }
        shown
    }

    #[cfg(test)]
    fn state(&self, rl: &RateLimit, rule: &RateLimitRule) -> Arc<RuleState> {
        match self.states.load().get(&state_key(rl, rule)) {
            Some(s) => s.clone(),
            None => self.add(rl, rule),
        }
    }

    /// The key of a client address for a rule keyed by the address alone
    /// ([`by_address_only`]). An IPv4 address (or an IPv4-mapped IPv6 one) goes through a
    /// bijection of 64-bit integers with a per-process random offset: no hashing (a
    /// SipHash of the parts cost ~230 instructions per request), and two addresses never
    /// share a key, which no hash can promise. Other IPv6 addresses are hashed as the
    /// parts are.
    fn address_key(&self, address: IpAddr) -> u64 {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match address {
            IpAddr::V4(a) => mix(u64::from(u32::from(a)).wrapping_add(self.address_offset)),
            IpAddr::V6(a) => {
                let mut hasher = self.keys.build_hasher();
                hasher.write(&a.octets());
                hasher.finish()
            }
        }
    }

    /// A rule seen for the first time: its state, added to the map (under `adding`).
    fn add(&self, rl: &RateLimit, rule: &RateLimitRule) -> Arc<RuleState> {
        let key = state_key(rl, rule);
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.states.load_full();
        if let Some(s) = current.get(&key) {
            return s.clone();
        }
        let rule_limit = Sliding::new(rule.limit, self.replicas.load(Ordering::Relaxed));
        let state = Arc::new(RuleState {
            limit_value: number_value(u64::from(rule_limit.limit)),
            rule: rule_limit,
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

/// Whether a rule's key is the client address alone: a `sourceCIDR` `Distinct` selector
/// and no `Distinct` header ([`LocalLimits::address_key`]).
fn by_address_only(rule: &RateLimitRule) -> bool {
    rule.selectors
        .iter()
        .any(|s| s.source.is_some_and(|c| c.distinct))
        && rule.selectors.iter().all(|s| {
            !s.headers
                .iter()
                .any(|h| matches!(h, weir_snapshot::HeaderSelector::Distinct(_)))
        })
}

/// A bijection of `u64` (SplitMix64's finalizer): spreads neighbouring addresses over the
/// whole range, so the shard (the top bits) and the map's buckets see them apart.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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
