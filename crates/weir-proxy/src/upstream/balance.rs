//! Phase 4, inside one backend: which endpoint of an upstream a request of a route with a
//! BackendTrafficPolicy `loadBalancer` goes to first (`weir_snapshot::LoadBalancer`). The
//! attempt loop then tries that endpoint and, while connecting fails, the others in ring
//! order. Routes without a `loadBalancer` never come here (today's round robin in
//! `Upstream::attempts_from(None)`).
//!
//! - RoundRobin: smooth weighted round robin (nginx's); all weights are equal unless slow
//!   start lowers a new endpoint's, and then a plain cursor is used.
//! - Random: uniform, or weighted by the slow-start weights.
//! - LeastRequest: power of two choices: two endpoints drawn (by weight), the one with fewer
//!   requests in flight wins. In flight: from the attempt's start to its response body's
//!   end (or drop), counted per endpoint address ([`EndpointState`]), shared by every
//!   policy and route that reaches the endpoint.
//! - ConsistentHash: a Maglev table (Eisenbud et al., NSDI 2016) of a prime size over the
//!   upstream's endpoints, built once per (policy, endpoint set) and kept in the
//!   [`Balancers`] registry; when one of N endpoints leaves, only about 1/N of the keys
//!   move. Keys: the client address (the ClientTrafficPolicy-detected one when there is
//!   one), a header's value (absent: a random endpoint), or a cookie's value (absent: a
//!   random value is issued with `Set-Cookie` and hashed).
//! - Zone preference (`zoneAware.preferLocal`): before the algorithm, a request is sent
//!   to the local zone's endpoints or to the others ([`Zones::side`]).
//! - Slow start: an endpoint first seen (by the proxy, across snapshot swaps) less than
//!   `window` ago gets weight `max(10%, age / window)` of a settled one's.
//!
//! Health (`healthCheck`) decides which endpoints are eligible; this module only orders
//! them: every pick takes an `eligible` predicate over endpoint indices (today: all).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request};
use hyper::body::{Body, Frame, SizeHint};
use weir_snapshot::{HashCookie, HashOn, LbKind, LoadBalancer, PreferLocal, Snapshot, Upstream};

use crate::state::StateRegistry;

/// Full weight of a settled endpoint; a new one under slow start has less.
const FULL: u64 = 1000;
/// The least weight slow start gives (Envoy's `min_weight_percent` default, 10%).
const MIN_RAMP: u64 = FULL / 10;

/// What the proxy knows about one endpoint address while it runs.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// Requests (attempts) in flight to it, under a `loadBalancer` policy.
    in_flight: AtomicUsize,
    /// When a snapshot first had it; `None`: it was there from the proxy's first snapshot
    /// (no ramp at start-up).
    first_seen: Option<Instant>,
}

impl EndpointState {
    #[cfg(test)]
    fn new(first_seen: Option<Instant>) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            first_seen,
        }
    }

    /// Weight in `MIN_RAMP..=FULL`: linear over the slow-start window.
    fn weight(&self, window: Option<Duration>, now: Instant) -> u64 {
        let (Some(window), Some(seen)) = (window, self.first_seen) else {
            return FULL;
        };
        let age = now.saturating_duration_since(seen);
        if age >= window {
            return FULL;
        }
        let share = u64::try_from(age.as_micros() * u128::from(FULL) / window.as_micros().max(1))
            .unwrap_or(FULL);
        share.clamp(MIN_RAMP, FULL)
    }
}

/// Endpoint states by address (runtime state, beside the snapshot).
#[derive(Default)]
pub(crate) struct Endpoints {
    states: StateRegistry<SocketAddr, EndpointState>,
    /// Set after the first snapshot was seen: endpoints of the first snapshot do not ramp.
    started: AtomicBool,
}

impl Endpoints {
    fn state(&self, addr: SocketAddr) -> Arc<EndpointState> {
        let first_seen = self.started.load(Ordering::Relaxed).then(Instant::now);
        let made = self.states.get_or_try_insert(&addr, || {
            Ok::<_, std::convert::Infallible>(EndpointState {
                in_flight: AtomicUsize::new(0),
                first_seen,
            })
        });
        match made {
            Ok(s) => s,
            Err(never) => match never {},
        }
    }
}

impl Balancers {
    /// `weir_upstream_endpoint_requests_in_flight{endpoint}`, read at scrape time.
    pub(crate) fn in_flight_metric(&self) -> Result<InFlightMetric, prometheus::Error> {
        let opts = prometheus::Opts::new(
            "weir_upstream_endpoint_requests_in_flight",
            "Requests in flight to an endpoint under a BackendTrafficPolicy loadBalancer, by \
             endpoint address.",
        );
        Ok(InFlightMetric {
            desc: prometheus::core::Desc::new(
                opts.fq_name(),
                opts.help.clone(),
                vec!["endpoint".into()],
                Default::default(),
            )?,
            opts,
            endpoints: self.endpoints.clone(),
        })
    }
}

/// The per-endpoint in-flight gauge: one sample per endpoint the proxy keeps state for
/// (bounded by the snapshot's endpoints).
pub(crate) struct InFlightMetric {
    desc: prometheus::core::Desc,
    opts: prometheus::Opts,
    endpoints: Arc<Endpoints>,
}

impl prometheus::core::Collector for InFlightMetric {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Ok(gauge) = prometheus::IntGaugeVec::new(self.opts.clone(), &["endpoint"]) else {
            return Vec::new();
        };
        for (addr, state) in self.endpoints.states.entries() {
            let n = state.in_flight.load(Ordering::Relaxed);
            gauge
                .with_label_values(&[addr.to_string().as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        prometheus::core::Collector::collect(&gauge)
    }
}

/// One policy's balancer over one upstream's endpoint set.
pub(crate) struct Balancer {
    lb: LoadBalancer,
    /// Indexed like the upstream's endpoints.
    endpoints: Box<[Arc<EndpointState>]>,
    /// ConsistentHash: the Maglev table (endpoint indices), built at the first pick (outside
    /// the registry's lock; concurrent first picks wait for the one building it).
    table: OnceLock<Box<[u32]>>,
    /// The endpoints' addresses, to build the table from.
    addrs: Box<[SocketAddr]>,
    cursor: AtomicUsize,
    /// When it was built: the instant [`Balancer::pick`] passes when no slow start reads it.
    made: Instant,
    /// Smooth weighted round robin's current weights (only while some endpoint ramps).
    current: Mutex<Vec<i64>>,
    /// `zoneAware.preferLocal` with a known zone: which endpoints are local.
    zones: Option<Zones>,
}

/// Which endpoints are in Weir's zone, and how many zones the upstream spans.
struct Zones {
    local: Box<[bool]>,
    zone_count: u64,
    prefer: PreferLocal,
}

impl Zones {
    /// `None` unless the policy prefers local endpoints, Weir knows its zone and the
    /// upstream's endpoints have zones.
    fn new(lb: &LoadBalancer, upstream: &Upstream, zone: Option<&str>) -> Option<Zones> {
        let prefer = lb.prefer_local?;
        let zone = zone?;
        if upstream.zones.len() != upstream.endpoints.len() {
            return None;
        }
        let mut names = std::collections::BTreeSet::new();
        for z in upstream.zones.iter() {
            names.insert(z.zone.as_deref());
        }
        Some(Zones {
            local: upstream.zones.iter().map(|z| z.serves(zone)).collect(),
            zone_count: names.len() as u64,
            prefer,
        })
    }

    /// Which side this request goes to: `Some(true)` only local endpoints, `Some(false)`
    /// only the others, `None` all (no preference: too few endpoints, or none local).
    ///
    /// Envoy's zone-aware routing sends the local zone as much traffic as its endpoints
    /// can take while every endpoint keeps about the same load, from the share of the
    /// proxy's own replicas in each zone. Weir does not know where its other replicas run;
    /// it assumes they spread evenly over the upstream's zones (as a topology spread
    /// constraint makes them): the local zone should take 1/zones of the traffic, so when
    /// its share of the endpoints is at least that, everything stays local; otherwise the
    /// local endpoints get `local × zones / all` of the requests and the rest go to the
    /// other zones. `force` keeps everything local while at least its number of local
    /// endpoints is eligible.
    fn side(&self, eligible: &dyn Fn(usize) -> bool, roll: u64) -> Option<bool> {
        let (mut all, mut local) = (0u64, 0u64);
        for (i, &l) in self.local.iter().enumerate() {
            if eligible(i) {
                all += 1;
                local += u64::from(l);
            }
        }
        if all < self.prefer.min_endpoints || local == 0 {
            return None;
        }
        if local == all {
            return Some(true);
        }
        if self
            .prefer
            .force_min_local
            .is_some_and(|min| local >= u64::from(min))
        {
            return Some(true);
        }
        let carried = local.saturating_mul(self.zone_count.max(1));
        if carried >= all {
            return Some(true);
        }
        Some(roll % all < carried)
    }
}

/// Balancers by (policy id, upstream id), and the endpoint states they share.
#[derive(Default)]
pub(crate) struct Balancers {
    balancers: StateRegistry<(u64, u64), Balancer>,
    endpoints: Arc<Endpoints>,
    /// The zone Weir runs in (`zoneAware`).
    zone: Option<Arc<str>>,
}

impl Balancers {
    pub(crate) fn new(zone: Option<Arc<str>>) -> Self {
        Self {
            zone,
            ..Self::default()
        }
    }

    /// The balancer of `policy_id`'s `lb` over `upstream` (built on first use).
    pub(crate) fn get(
        &self,
        policy_id: u64,
        lb: &LoadBalancer,
        upstream: &Upstream,
    ) -> Arc<Balancer> {
        let made = self
            .balancers
            .get_or_try_insert(&(policy_id, upstream.id), || {
                let zones = Zones::new(lb, upstream, self.zone.as_deref());
                Ok::<_, std::convert::Infallible>(
                    Balancer::new(
                        lb.clone(),
                        upstream.endpoints.iter().map(|e| e.addr),
                        |addr| self.endpoints.state(addr),
                    )
                    .with_zones(zones),
                )
            });
        match made {
            Ok(b) => b,
            Err(never) => match never {},
        }
    }

    /// After a swap: note when each endpoint of an upstream under a `loadBalancer` policy
    /// was first seen, and drop the state of those the snapshot no longer has.
    pub(crate) fn sync(&self, snapshot: &Snapshot) {
        let mut live_balancers = std::collections::HashSet::new();
        let mut live_endpoints = std::collections::HashSet::new();
        for socket in snapshot.sockets.iter() {
            for listener in socket.listeners.iter() {
                for entry in listener.routes.values() {
                    let Some(policy) = &entry.action.policy else {
                        continue;
                    };
                    if policy.load_balancer.is_none() {
                        continue;
                    }
                    for backend in entry.action.backends.iter() {
                        let weir_snapshot::BackendTarget::Upstream(up) = &backend.target else {
                            continue;
                        };
                        live_balancers.insert((policy.id, up.id));
                        for e in up.endpoints.iter() {
                            if live_endpoints.insert(e.addr) {
                                self.endpoints.state(e.addr);
                            }
                        }
                    }
                }
            }
        }
        self.endpoints.started.store(true, Ordering::Relaxed);
        self.balancers.retain(|k| live_balancers.contains(k));
        self.endpoints.states.retain(|a| live_endpoints.contains(a));
    }
}

impl Balancer {
    fn new(
        lb: LoadBalancer,
        addrs: impl Iterator<Item = SocketAddr>,
        state: impl Fn(SocketAddr) -> Arc<EndpointState>,
    ) -> Self {
        let addrs: Box<[SocketAddr]> = addrs.collect();
        Self {
            lb,
            endpoints: addrs.iter().map(|&a| state(a)).collect(),
            table: OnceLock::new(),
            addrs,
            cursor: AtomicUsize::new(0),
            made: Instant::now(),
            current: Mutex::new(Vec::new()),
            zones: None,
        }
    }

    fn with_zones(mut self, zones: Option<Zones>) -> Self {
        self.zones = zones;
        self
    }

    /// The endpoint (index) to try first among those `eligible` accepts, for a request
    /// whose hash key is `key` (ConsistentHash); `None` when none is eligible.
    pub(crate) fn pick(&self, key: Option<u64>, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        // The clock only when an endpoint may be ramping (slow start); without a window
        // every weight is full and the instant is not read. The draws come from fastrand's
        // thread-local generator (a few instructions; `rand::random` spent ~40 per draw,
        // two draws per LeastRequest pick: bench/results/2026-12-07-policies-4.md).
        let now = match self.lb.slow_start {
            Some(_) => Instant::now(),
            None => self.made,
        };
        self.pick_with(key, eligible, now, &mut || fastrand::u64(..))
    }

    fn pick_with(
        &self,
        key: Option<u64>,
        eligible: impl Fn(usize) -> bool,
        now: Instant,
        roll: &mut dyn FnMut() -> u64,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        // Zone preference narrows the eligible set to one side.
        let side = match &self.zones {
            None => None,
            Some(z) => z.side(&eligible, roll()),
        };
        let eligible = |i: usize| {
            eligible(i)
                && side.is_none_or(|want| {
                    self.zones
                        .as_ref()
                        .and_then(|z| z.local.get(i))
                        .is_some_and(|&l| l == want)
                })
        };
        let weight = |i: usize| match self.endpoints.get(i) {
            Some(e) if eligible(i) => e.weight(self.lb.slow_start, now),
            _ => 0,
        };
        match &self.lb.kind {
            LbKind::RoundRobin => {
                let ramping = self.lb.slow_start.is_some()
                    && (0..n).any(|i| weight(i) != FULL && weight(i) != 0);
                if ramping {
                    self.smooth(n, &weight)
                } else {
                    let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                    (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
                }
            }
            LbKind::Random => self.draw(n, &eligible, &weight, roll()),
            LbKind::LeastRequest => {
                let a = self.draw(n, &eligible, &weight, roll())?;
                let b = self.draw(n, &eligible, &weight, roll())?;
                let load = |i: usize| {
                    self.endpoints
                        .get(i)
                        .map_or(usize::MAX, |e| e.in_flight.load(Ordering::Relaxed))
                };
                Some(if load(b) < load(a) { b } else { a })
            }
            LbKind::ConsistentHash { table_size, .. } => {
                let Some(key) = key else {
                    return weighted_random(n, &|i| u64::from(eligible(i)), roll());
                };
                let table = self.table.get_or_init(|| maglev(&self.addrs, *table_size));
                let m = table.len();
                if m == 0 {
                    return None;
                }
                let at = usize::try_from(key % m as u64).unwrap_or(0);
                (0..m)
                    .filter_map(|k| table.get((at + k) % m))
                    .map(|&i| i as usize)
                    .find(|&i| i < n && eligible(i))
            }
        }
    }

    /// A random eligible endpoint, by weight: without slow start (equal weights) one
    /// uniform draw, kept when eligible (the usual case, O(1)); else a weighted draw over
    /// all, which is still uniform over the eligible ones when weights are equal.
    fn draw(
        &self,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
        weight: &dyn Fn(usize) -> u64,
        roll: u64,
    ) -> Option<usize> {
        if self.lb.slow_start.is_none() {
            let i = usize::try_from(roll % n as u64).unwrap_or(0);
            if eligible(i) {
                return Some(i);
            }
        }
        weighted_random(n, weight, roll >> 17)
    }

    /// Smooth weighted round robin over the weights (0: not eligible).
    fn smooth(&self, n: usize, weight: &dyn Fn(usize) -> u64) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.resize(n, 0);
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, c) in current.iter_mut().enumerate() {
            let w = i64::try_from(weight(i)).unwrap_or(0);
            if w == 0 {
                continue;
            }
            *c += w;
            total += w;
            if best.is_none_or(|(_, max)| *c > max) {
                best = Some((i, *c));
            }
        }
        let (best, _) = best?;
        if let Some(c) = current.get_mut(best) {
            *c -= total;
        }
        Some(best)
    }

    /// One attempt to endpoint `i` starts: it counts as in flight until the returned value
    /// is dropped.
    pub(crate) fn begin(&self, i: usize) -> Option<Outstanding> {
        let e = self.endpoints.get(i)?;
        e.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Outstanding(e.clone()))
    }

    /// ConsistentHash by what, when it is.
    pub(crate) fn hash_on(&self) -> Option<&HashOn> {
        match &self.lb.kind {
            LbKind::ConsistentHash { on, .. } => Some(on),
            _ => None,
        }
    }

    #[cfg(test)]
    fn in_flight(&self, i: usize) -> usize {
        self.endpoints[i].in_flight.load(Ordering::Relaxed)
    }
}

/// An attempt in flight to an endpoint (see [`Balancer::begin`]); goes up beside the
/// response to the response body ([`Holding`]).
pub(crate) struct Outstanding(Arc<EndpointState>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body holding `G` until the body ends or is dropped.
pub(crate) struct Holding<B, G> {
    body: B,
    guard: Option<G>,
}

impl<B, G> Holding<B, G> {
    pub(crate) fn new(body: B, guard: G) -> Self {
        Self {
            body,
            guard: Some(guard),
        }
    }
}

impl<B, G> Body for Holding<B, G>
where
    B: Body<Data = Bytes> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.body.is_end_stream() {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A weighted random index (weights 0 are never drawn); `None` when all are 0.
fn weighted_random(n: usize, weight: &dyn Fn(usize) -> u64, roll: u64) -> Option<usize> {
    let total: u64 = (0..n).map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut r = roll % total;
    for i in 0..n {
        let w = weight(i);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// A 64-bit hash, the same for the same input and seed for the process's life (SipHash
/// with fixed keys).
fn hash64(v: impl Hash, seed: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    v.hash(&mut h);
    h.finish()
}

/// The Maglev lookup table of size `m` (a prime) over `addrs`: each slot holds an index
/// into `addrs`. Endpoints fill it in address order, each from its own permutation of the
/// slots (offset and skip from two hashes of its address), so the table depends only on
/// the set of addresses, and removing one changes few slots beyond its own.
fn maglev(addrs: &[SocketAddr], m: u32) -> Box<[u32]> {
    let n = addrs.len();
    let m = m as usize;
    if n == 0 || m == 0 {
        return Box::new([]);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| addrs.get(i).copied());
    let m64 = m as u64;
    let perm: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let a = addrs.get(i);
            let offset = hash64(a, 1) % m64;
            let skip = if m64 > 1 {
                hash64(a, 2) % (m64 - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (k, &i) in order.iter().enumerate() {
            let (offset, skip) = perm[k];
            loop {
                let slot = ((offset + next[k] * skip) % m64) as usize;
                next[k] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break 'fill;
            }
        }
    }
    table.into()
}

/// The hash key of a request for a ConsistentHash `on`, and the cookie to issue (a
/// `Set-Cookie` value) when a Cookie key was absent. `client`: the client address as the
/// proxy sees it.
pub(crate) fn request_key<B>(
    on: &HashOn,
    req: &Request<B>,
    client: Option<IpAddr>,
) -> (Option<u64>, Option<HeaderValue>) {
    match on {
        HashOn::SourceIp => (client.map(|ip| hash64(ip, 0)), None),
        HashOn::Header(name) => (
            req.headers().get(name).map(|v| hash64(v.as_bytes(), 0)),
            None,
        ),
        HashOn::Cookie(cookie) => match cookie_value(req.headers(), &cookie.name) {
            Some(v) => (Some(hash64(v.as_bytes(), 0)), None),
            None => {
                let value = format!("{:032x}", rand::random::<u128>());
                let key = hash64(value.as_bytes(), 0);
                (Some(key), set_cookie(cookie, &value))
            }
        },
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn set_cookie(cookie: &HashCookie, value: &str) -> Option<HeaderValue> {
    let mut s = format!("{}={value}", cookie.name);
    if let Some(ttl) = cookie.ttl {
        s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    for (n, v) in cookie.attributes.iter() {
        if v.is_empty() {
            s.push_str(&format!("; {n}"));
        } else {
            s.push_str(&format!("; {n}={v}"));
        }
    }
    HeaderValue::try_from(s).ok()
}

/// Append the issued cookie to a response's headers.
pub(crate) fn issue(headers: &mut HeaderMap, cookie: HeaderValue) {
    headers.append(SET_COOKIE, cookie);
}

/// The client's IP from the ClientTrafficPolicy-detected address, else from the peer's
/// `X-Forwarded-For` value the proxy computed.
pub(crate) fn client_ip<B>(req: &Request<B>, peer: &HeaderValue) -> Option<IpAddr> {
    if let Some(c) = req.extensions().get::<crate::client_policy::ClientAddr>() {
        return Some(c.0.ip());
    }
    peer.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_snapshot::HashOn;

    /// xorshift64*: a seeded generator for the statistical tests.
    fn rng(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            s.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], 8000 + p)))
            .collect()
    }

    fn balancer(
        kind: LbKind,
        slow_start: Option<Duration>,
        states: Vec<Arc<EndpointState>>,
    ) -> Balancer {
        let n = states.len() as u16;
        let states = std::cell::RefCell::new(states.into_iter());
        Balancer::new(
            LoadBalancer {
                kind,
                slow_start,
                prefer_local: None,
            },
            addrs(n).into_iter(),
            |_| states.borrow_mut().next().unwrap(),
        )
    }

    fn settled(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n).map(|_| Arc::new(EndpointState::new(None))).collect()
    }

    #[test]
    fn maglev_fills_evenly_and_moves_about_one_nth_when_one_leaves() {
        let a = addrs(10);
        let t = maglev(&a, 65_537);
        assert!(t.iter().all(|&i| (i as usize) < 10));
        let mut counts = [0usize; 10];
        for &i in t.iter() {
            counts[i as usize] += 1;
        }
        // Maglev's balance: every endpoint within a few percent of M/N.
        for c in counts {
            assert!((6200..=6900).contains(&c), "{counts:?}");
        }
        // The same set in another order gives the same endpoint per slot.
        let mut rev = a.clone();
        rev.reverse();
        let t2 = maglev(&rev, 65_537);
        assert!(t
            .iter()
            .zip(t2.iter())
            .all(|(&x, &y)| a[x as usize] == rev[y as usize]));
        // Endpoint 3 leaves: its slots move, and few others.
        let mut fewer = a.clone();
        fewer.remove(3);
        let t3 = maglev(&fewer, 65_537);
        let moved = t
            .iter()
            .zip(t3.iter())
            .filter(|(&x, &y)| a[x as usize] != fewer[y as usize])
            .count();
        let share = moved as f64 / 65_537.0;
        assert!(share < 0.1 * 1.5, "moved {share}");
        assert!(
            share >= 0.09,
            "at least the leaving endpoint's slots: {share}"
        );
    }

    #[test]
    fn consistent_hash_skips_endpoints_not_eligible() {
        let b = balancer(
            LbKind::ConsistentHash {
                on: HashOn::SourceIp,
                table_size: 101,
            },
            None,
            settled(3),
        );
        let mut r = rng(1);
        for key in 0..200u64 {
            let first = b
                .pick_with(Some(key), |_| true, Instant::now(), &mut r)
                .unwrap();
            assert_eq!(
                b.pick_with(Some(key), |_| true, Instant::now(), &mut r),
                Some(first)
            );
            let other = b
                .pick_with(Some(key), |i| i != first, Instant::now(), &mut r)
                .unwrap();
            assert_ne!(other, first);
        }
        assert_eq!(
            b.pick_with(Some(1), |_| false, Instant::now(), &mut r),
            None
        );
    }

    #[test]
    fn round_robin_cycles_and_random_spreads_within_binomial_bounds() {
        let b = balancer(LbKind::RoundRobin, None, settled(3));
        let mut r = rng(2);
        let picks: Vec<usize> = (0..6)
            .map(|_| b.pick_with(None, |_| true, Instant::now(), &mut r).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(
            b.pick_with(None, |i| i == 1, Instant::now(), &mut r),
            Some(1)
        );

        let b = balancer(LbKind::Random, None, settled(4));
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[b.pick_with(None, |_| true, Instant::now(), &mut r).unwrap()] += 1;
        }
        // Binomial(4000, 1/4): mean 1000, sd ≈ 27; ±6 sd.
        for c in counts {
            assert!((840..=1160).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn least_request_prefers_the_endpoint_with_fewer_in_flight() {
        let b = balancer(LbKind::LeastRequest, None, settled(3));
        let busy: Vec<_> = (0..10).map(|_| b.begin(0)).collect();
        assert_eq!(b.in_flight(0), 10);
        let mut r = rng(3);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[b.pick_with(None, |_| true, Instant::now(), &mut r).unwrap()] += 1;
        }
        // Endpoint 0 wins only when both draws are it: 1/9 of the time.
        assert!(counts[0] < 500, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
        drop(busy);
        assert_eq!(b.in_flight(0), 0);
        // The outstanding attempt is counted until it goes.
        let o = b.begin(2).unwrap();
        assert_eq!(b.in_flight(2), 1);
        drop(o);
        assert_eq!(b.in_flight(2), 0);
    }

    #[test]
    fn slow_start_ramps_a_new_endpoints_share() {
        let now = Instant::now();
        let window = Duration::from_secs(100);
        let new = |age: u64| Arc::new(EndpointState::new(Some(now - Duration::from_secs(age))));
        assert_eq!(new(0).weight(Some(window), now), MIN_RAMP);
        assert_eq!(new(50).weight(Some(window), now), FULL / 2);
        assert_eq!(new(150).weight(Some(window), now), FULL);
        assert_eq!(new(0).weight(None, now), FULL);
        for kind in [LbKind::RoundRobin, LbKind::Random, LbKind::LeastRequest] {
            let mut states = settled(3);
            states.push(new(25));
            let b = balancer(kind.clone(), Some(window), states);
            let mut r = rng(4);
            let mut counts = [0u32; 4];
            for _ in 0..3250 {
                counts[b.pick_with(None, |_| true, now, &mut r).unwrap()] += 1;
            }
            // Weights 1000, 1000, 1000, 250: the new one gets about 250 of 3250.
            assert!(counts[3] < 450, "{kind:?}: {counts:?}");
            assert!(counts[3] > 100, "{kind:?}: {counts:?}");
        }
    }

    #[test]
    fn zone_preference_keeps_local_what_local_endpoints_can_carry() {
        let zones =
            |local: &[bool], zone_count: u64, min_endpoints: u64, force: Option<u32>| Zones {
                local: local.into(),
                zone_count,
                prefer: PreferLocal {
                    min_endpoints,
                    force_min_local: force,
                },
            };
        let all = |_: usize| true;
        // Half the endpoints in our zone of two: everything stays local.
        let z = zones(&[true, true, false, false], 2, 1, None);
        assert_eq!(z.side(&all, 7), Some(true));
        // Too few endpoints in all: no preference.
        let z = zones(&[true, true, false, false], 2, 6, None);
        assert_eq!(z.side(&all, 7), None);
        // One of three local, two zones: the local one takes 2/3 of the requests.
        let z = zones(&[true, false, false], 2, 1, None);
        let local = (0..3000u64)
            .filter(|&r| z.side(&all, r) == Some(true))
            .count();
        assert_eq!(local, 2000);
        // force: every request local while enough local endpoints are eligible…
        let z = zones(&[true, false, false], 2, 1, Some(1));
        assert_eq!(z.side(&all, 2), Some(true));
        let z = zones(&[true, false, false], 2, 1, Some(2));
        assert_eq!(
            z.side(&all, 2),
            Some(false),
            "below force's threshold: shares"
        );
        // …and none local (or none eligible there): no preference, the others take it all.
        assert_eq!(z.side(&|i| i != 0, 2), None);
        let b = balancer(LbKind::RoundRobin, None, settled(3)).with_zones(Some(zones(
            &[true, false, false],
            2,
            1,
            Some(1),
        )));
        let mut r = rng(5);
        for _ in 0..10 {
            assert_eq!(b.pick_with(None, |_| true, Instant::now(), &mut r), Some(0));
        }
        let fallback = b.pick_with(None, |i| i != 0, Instant::now(), &mut r);
        assert!(matches!(fallback, Some(1 | 2)));
    }

    #[test]
    fn keys_come_from_the_source_ip_a_header_or_a_cookie() {
        let req = Request::builder()
            .header("x-user", "alice")
            .header(COOKIE, "a=1; sticky=abc")
            .body(())
            .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (k1, none) = request_key(&HashOn::SourceIp, &req, Some(ip));
        assert!(k1.is_some() && none.is_none());
        let h = HashOn::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(
            request_key(&h, &req, None).0,
            Some(hash64(b"alice".as_slice(), 0))
        );
        let missing = HashOn::Header(http::HeaderName::from_static("x-none"));
        assert_eq!(request_key(&missing, &req, None).0, None);
        let cookie = Arc::new(HashCookie {
            name: "sticky".into(),
            ttl: Some(Duration::from_secs(60)),
            attributes: vec![
                ("Path".into(), "/".into()),
                ("HttpOnly".into(), String::new()),
            ]
            .into(),
        });
        let (k, issued) = request_key(&HashOn::Cookie(cookie.clone()), &req, None);
        assert_eq!(k, Some(hash64(b"abc".as_slice(), 0)));
        assert!(issued.is_none());
        let bare = Request::new(());
        let (k, issued) = request_key(&HashOn::Cookie(cookie), &bare, None);
        let issued = issued.unwrap();
        let s = issued.to_str().unwrap();
        assert!(s.starts_with("sticky="), "{s}");
        assert!(s.ends_with("; Max-Age=60; Path=/; HttpOnly"), "{s}");
        let value = &s["sticky=".len()..s.find(';').unwrap()];
        assert_eq!(k, Some(hash64(value.as_bytes(), 0)));
    }
}
