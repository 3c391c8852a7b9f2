//! The response cache (BackendTrafficPolicy `responseCache`, Weir's addition): an in-memory
//! shared HTTP cache after RFC 9111, one per policy, kept in the proxy's registry beside the
//! snapshot (keyed by the policy id: it survives swaps that keep the policy, and a changed
//! or removed policy drops its entries).
//!
//! - **Lookup** ([`lookup`], the phase-3 slot; synchronous, an in-memory map): GET and HEAD
//!   only (another method invalidates the entries of its URL and is forwarded); a request
//!   with `Range` or `Cache-Control: no-store` bypasses the cache. The key is Host + path
//!   and query, then the request's values of the headers the stored response's `Vary` named
//!   (normalised: trimmed, lowercase names, sorted). A fresh entry answers (`Age`, and a
//!   304 when the request's `If-None-Match` / `If-Modified-Since` match it); a stale one
//!   (or any, when the request says `no-cache` / `max-age=0`) is revalidated: its
//!   `ETag` / `Last-Modified` go upstream as `If-None-Match` / `If-Modified-Since`, unless
//!   the client sent conditionals of its own.
//! - **Fill** ([`fill`], phase 7, on the upstream's response before the response filters,
//!   so the entry is the origin's response for every client): a 304 to a revalidation
//!   refreshes the entry and answers from it; a storable response has its body teed into a
//!   buffer of at most `maxBodySize` and is stored when the body ended completely (a larger
//!   body streams on, uncached; a failed or cut one is not stored).
//! - **Storable**: status 200, 203, 204, 300, 301, 308, 404, 405, 410, 414 or 501; no
//!   `no-store` or `private`; no `Set-Cookie`; no `Vary: *`; a request with
//!   `Authorization` only with `public`, `s-maxage` or `must-revalidate`; a freshness
//!   lifetime from `s-maxage`, `max-age`, `Expires` (against `Date`), or 10 % of the time
//!   since `Last-Modified` (at most a day); a response with no lifetime but a validator, or
//!   with `no-cache`, is stored and revalidated on every use.
//! - **Coalescing** ([`lookup_coalesced`]): the first GET that misses (or finds a stale
//!   entry) for a key becomes the key's *fill*; requests for the same key that arrive
//!   while it is in flight wait for it (at most [`FILL_WAIT`]) and are then answered from
//!   the entry it stored. When the fill stores nothing (the response is not storable, too
//!   large, failed or cut) or takes longer, the waiters go upstream themselves, each on
//!   its own (they never wait twice). A request with its own conditionals or `no-cache`
//!   waits but never leads (its answer would not fill the cache); a HEAD neither. At most
//!   [`MAX_FILLS`] keys per cache are in flight at once; beyond, misses go upstream
//!   uncoalesced.
//! - **Bounds**: `maxSize` bytes (body, headers, key), `maxEntries`; the least recently
//!   used entries are evicted first.
//! - **Purge by route**: an entry is stored with the version of the route that filled it
//!   ([`weir_snapshot::RouteRef::version`], which changes with the route object's spec) and
//!   only that version of the route is answered from it; after a snapshot swap, [`sync`]
//!   drops the entries of route versions the snapshot no longer has (a changed or removed
//!   route), and the caches of policies it no longer has.
//! - Every answer says what the cache did in `Cache-Status` (RFC 9211): `weir; hit`,
//!   `weir; fwd=uri-miss`, `fwd=vary-miss`, `fwd=stale`, `fwd=request` (the client asked
//!   to revalidate), with `fwd-status` and `stored`; and in `X-Cache`: `HIT`, `STALE` or
//!   `MISS`.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, DATE, ETAG, EXPIRES, HOST,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, PRAGMA, RANGE, SET_COOKIE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, SizeHint};
use prometheus::{opts, IntCounterVec, IntGauge, Registry};
use weir_snapshot::{ResponseCache, RouteRef, Snapshot};

use crate::body::{empty_body, BoxError, ProxyBody};

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// `weir_cache_hits_total{route}`, `weir_cache_misses_total{route}`,
/// `weir_cache_evictions_total{route}`, `weir_cache_bytes`.
pub(crate) struct CacheMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    evictions: IntCounterVec,
    bytes: IntGauge,
}

impl CacheMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let hits = IntCounterVec::new(
            opts!(
                "weir_cache_hits_total",
                "Requests answered from the response cache (fresh entries), by route."
            ),
            &["route"],
        )?;
        let misses = IntCounterVec::new(
            opts!(
                "weir_cache_misses_total",
                "GET and HEAD requests of cached routes forwarded (no entry, or a stale one), by route."
            ),
            &["route"],
        )?;
        let evictions = IntCounterVec::new(
            opts!(
                "weir_cache_evictions_total",
                "Entries the response cache evicted for room (maxSize, maxEntries), by the route that made room."
            ),
            &["route"],
        )?;
        let bytes = IntGauge::with_opts(opts!(
            "weir_cache_bytes",
            "Bytes the response caches hold (bodies, headers, keys)."
        ))?;
        registry.register(Box::new(hits.clone()))?;
        registry.register(Box::new(misses.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        Ok(Self {
            hits,
            misses,
            evictions,
            bytes,
        })
    }
}

/// One stored response (immutable; a refresh replaces it).
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// When it was received (or last refreshed).
    at: Instant,
    /// Its age when received (RFC 9111 §4.2.3 `corrected_initial_age`).
    initial_age: Duration,
    /// Its freshness lifetime (§4.2.1).
    lifetime: Duration,
    /// `no-cache` in the response: revalidated on every use.
    always_revalidate: bool,
}

impl Stored {
    fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.at)
    }
}

struct Slot {
    stored: Arc<Stored>,
    size: u64,
    tick: u64,
    /// The version of the route that stored it ([`RouteRef::version`]).
    route: u64,
}

#[derive(Default)]
struct Inner {
    /// Full key (primary + varied values) → entry.
    entries: HashMap<String, Slot>,
    /// Primary key → the request headers its responses vary on (lowercase, sorted).
    vary: HashMap<String, Arc<[HeaderName]>>,
    /// Use order: tick → full key (the first is the least recently used).
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: u64,
    /// Entries per route version (so that a swap that keeps every version costs no walk).
    routes: crate::state::IdMap<u64, usize>,
}

/// How long a request waits for another request's fill of the same key before it goes
/// upstream itself.
pub(crate) const FILL_WAIT: Duration = Duration::from_secs(5);
/// Keys whose fill is in flight, per cache, at most (the coalescing map's bound).
pub(crate) const MAX_FILLS: usize = 4096;

/// The fills in flight: full key → (the fill's number, a receiver that ends when it does).
#[derive(Default)]
struct Fills {
    next: u64,
    by_key: HashMap<String, (u64, tokio::sync::watch::Receiver<()>)>,
}

/// Held by the request that fills a key (inside its [`Pending`]): dropping it — the entry
/// stored, or the response found not storable, failed or cut — ends the fill, and its
/// waiters look again.
struct FillGuard {
    cache: Arc<Cache>,
    key: String,
    id: u64,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut fills = self.cache.fills();
        if fills
            .by_key
            .get(&self.key)
            .is_some_and(|(id, _)| *id == self.id)
        {
            fills.by_key.remove(&self.key);
        }
    }
}

/// One policy's cache.
pub(crate) struct Cache {
    cfg: ResponseCache,
    inner: Mutex<Inner>,
    /// Coalescing: the keys being filled now (bounded by [`MAX_FILLS`]).
    fills: Mutex<Fills>,
    /// `weir_cache_bytes`, given back when the cache is dropped.
    gauge: IntGauge,
    evictions: IntCounterVec,
}

impl Cache {
    pub(crate) fn new(cfg: ResponseCache, metrics: &CacheMetrics) -> Cache {
        Cache {
            cfg,
            inner: Mutex::new(Inner::default()),
            fills: Mutex::new(Fills::default()),
            gauge: metrics.bytes.clone(),
            evictions: metrics.evictions.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fills(&self) -> std::sync::MutexGuard<'_, Fills> {
        self.fills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys being filled now (tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.fills().by_key.len()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.gauge.sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

impl Inner {
    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(slot) = self.entries.get_mut(key) {
            self.order.remove(&slot.tick);
            slot.tick = tick;
            self.order.insert(tick, key.to_string());
        }
    }

    fn remove(&mut self, key: &str) -> u64 {
        match self.entries.remove(key) {
            Some(slot) => {
                self.order.remove(&slot.tick);
                self.unlinked(&slot)
            }
            None => 0,
        }
    }

    /// Account for `slot`, taken out of `entries` (its `order` tick already gone).
    fn unlinked(&mut self, slot: &Slot) -> u64 {
        self.bytes -= slot.size;
        if let Some(n) = self.routes.get_mut(&slot.route) {
            *n -= 1;
            if *n == 0 {
                self.routes.remove(&slot.route);
            }
        }
        slot.size
    }
}

impl Cache {
    /// Drop the entries of route versions `live` refuses (after a swap). Free when every
    /// version with entries is live.
    fn purge(&self, live: impl Fn(u64) -> bool) {
        let mut inner = self.lock();
        if inner.routes.keys().all(|v| live(*v)) {
            return;
        }
        let dead: Vec<String> = inner
            .entries
            .iter()
            .filter(|(_, slot)| !live(slot.route))
            .map(|(k, _)| k.clone())
            .collect();
        let mut freed = 0;
        for k in dead {
            freed += inner.remove(&k);
        }
        let Inner { vary, entries, .. } = &mut *inner;
        vary.retain(|primary, _| {
            entries
                .keys()
                .any(|k| k.split('\0').next() == Some(primary.as_str()))
        });
        drop(inner);
        self.gauge.sub(i64::try_from(freed).unwrap_or(i64::MAX));
    }
}

/// After a snapshot swap: the caches of policies no route has any more go; the others drop
/// the entries of route versions no route entry with that policy has (the route changed or
/// is gone), so a changed route is never answered with what its old version stored.
pub(crate) fn sync(caches: &crate::state::StateRegistry<u64, Cache>, snapshot: &Snapshot) {
    let mut live: crate::state::IdMap<u64, Vec<u64>> = Default::default();
    for socket in snapshot.sockets.iter() {
        for listener in socket.listeners.iter() {
            for entry in listener.routes.values() {
                let Some(p) = entry.action.policy.as_deref() else {
                    continue;
                };
                if p.response_cache.is_none() {
                    continue;
                }
                let versions = live.entry(p.id).or_default();
                if !versions.contains(&entry.action.route.version) {
                    versions.push(entry.action.route.version);
                }
            }
        }
    }
    caches.retain(|id| live.contains_key(id));
    for (id, cache) in caches.entries() {
        if let Some(versions) = live.get(&id) {
            cache.purge(|v| versions.contains(&v));
        }
    }
}

/// A request's cache directives or a response's: `name` or `name=value`, any case.
fn directive<'h>(headers: &'h HeaderMap, name: &str) -> Option<Option<&'h str>> {
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            if k.eq_ignore_ascii_case(name) {
                return Some(v);
            }
        }
    }
    None
}

fn has(headers: &HeaderMap, name: &str) -> bool {
    directive(headers, name).is_some()
}

fn seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    directive(headers, name)
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// The primary key: Host and path with query, as the request goes upstream.
fn primary_key(parts: &http::request::Parts) -> String {
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{}\n{target}", host.to_ascii_lowercase())
}

/// The full key: the primary one and the request's values of the varied headers.
fn full_key(primary: &str, names: &[HeaderName], request: &HeaderMap) -> String {
    let mut key = primary.to_string();
    for name in names {
        key.push('\0');
        key.push_str(name.as_str());
        key.push('=');
        let mut first = true;
        for v in request.get_all(name) {
            for item in String::from_utf8_lossy(v.as_bytes()).split(',') {
                if !first {
                    key.push(',');
                }
                first = false;
                key.push_str(item.trim());
            }
        }
    }
    key
}

/// The header names a response's `Vary` lists (lowercase, sorted, once each); `None` for
/// `Vary: *` (never stored).
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for v in headers.get_all(VARY) {
        let Ok(v) = v.to_str() else { return None };
        for item in v.split(',') {
            let item = item.trim();
            if item == "*" {
                return None;
            }
            if item.is_empty() {
                continue;
            }
            names.push(HeaderName::from_bytes(item.to_ascii_lowercase().as_bytes()).ok()?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// What the lookup decided.
pub(crate) enum Lookup {
    /// Answered from the cache.
    Hit(Response<ProxyBody>),
    /// Forwarded; the response side stores or refreshes (see [`fill`]).
    Forward(Box<Pending>),
    /// Not for the cache (another method, `Range`, `no-store`).
    Bypass,
    /// Another request is filling this key: wait for it, then look again.
    Wait(tokio::sync::watch::Receiver<()>),
}

/// The phase-3 slot: [`lookup`], and when another request is filling the key, wait for
/// that fill (at most [`FILL_WAIT`]) and look again — then without waiting a second time.
pub(crate) async fn lookup_coalesced(
    cache: &Arc<Cache>,
    metrics: &CacheMetrics,
    route: &RouteRef,
    parts: &mut http::request::Parts,
) -> Lookup {
    match lookup(cache, metrics, route, parts, true) {
        Lookup::Wait(mut done) => {
            // Ends (Err) when the fill's guard is dropped; nothing is ever sent.
            let _ = tokio::time::timeout(FILL_WAIT, done.changed()).await;
            lookup(cache, metrics, route, parts, false)
        }
        other => other,
    }
}

/// What the response side needs to store a forwarded request's response.
pub(crate) struct Pending {
    cache: Arc<Cache>,
    route: Arc<str>,
    /// The route's version: what the entry is stored under.
    version: u64,
    primary: String,
    /// The request's headers (for the key of the response's `Vary`).
    request: HeaderMap,
    head: bool,
    authorization: bool,
    /// The stale entry whose validators went upstream: a 304 refreshes it.
    revalidating: Option<Arc<Stored>>,
    /// `Cache-Status`'s `fwd` value.
    fwd: &'static str,
    sent: SystemTime,
    /// This request fills its key for waiting requests (dropped when the fill ends).
    _fill: Option<FillGuard>,
}

/// Look the request up in `cache`. `coalesce`: a miss waits for another request's fill
/// of the same key ([`Lookup::Wait`]) or becomes the key's fill.
pub(crate) fn lookup(
    cache: &Arc<Cache>,
    metrics: &CacheMetrics,
    route_ref: &RouteRef,
    parts: &mut http::request::Parts,
    coalesce: bool,
) -> Lookup {
    let route = &route_ref.route;
    if parts.method != Method::GET && parts.method != Method::HEAD {
        if !parts.method.is_safe() {
            // RFC 9111 §4.4: an unsafe request invalidates what is stored for its URL.
            let primary = primary_key(parts);
            let mut inner = cache.lock();
            let keys: Vec<String> = inner
                .entries
                .keys()
                .filter(|k| k.split('\0').next() == Some(primary.as_str()))
                .cloned()
                .collect();
            let mut freed = 0;
            for k in keys {
                freed += inner.remove(&k);
            }
            inner.vary.remove(&primary);
            drop(inner);
            cache.gauge.sub(i64::try_from(freed).unwrap_or(i64::MAX));
        }
        return Lookup::Bypass;
    }
    let headers = &parts.headers;
    if headers.contains_key(RANGE) || has(headers, "no-store") {
        return Lookup::Bypass;
    }
    let primary = primary_key(parts);
    let now = Instant::now();
    let (found, key) = {
        let mut inner = cache.lock();
        let names = inner.vary.get(&primary).cloned();
        let key = match &names {
            Some(names) => full_key(&primary, names, headers),
            None => primary.clone(),
        };
        // An entry another version of the route stored is not this route's answer.
        let stored = inner
            .entries
            .get(&key)
            .filter(|s| s.route == route_ref.version)
            .map(|s| s.stored.clone());
        if stored.is_some() {
            inner.touch(&key);
        }
        ((stored, names.is_some()), key)
    };
    let request_no_cache = has(headers, "no-cache")
        || seconds(headers, "max-age") == Some(Duration::ZERO)
        || (!headers.contains_key(CACHE_CONTROL)
            && headers
                .get(PRAGMA)
                .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"no-cache")));
    let mut fwd = "uri-miss";
    let mut revalidating = None;
    match &found {
        (Some(stored), _) => {
            let age = stored.age(now);
            let max_age = seconds(headers, "max-age");
            let fresh = !stored.always_revalidate
                && age < stored.lifetime
                && max_age.is_none_or(|m| age <= m);
            if fresh && !request_no_cache {
                metrics.hits.with_label_values(&[route]).inc();
                let ttl = stored.lifetime.saturating_sub(age).as_secs();
                return Lookup::Hit(answer(stored, parts, age, &format!("weir; hit; ttl={ttl}")));
            }
            fwd = if request_no_cache { "request" } else { "stale" };
        }
        (None, true) => fwd = "vary-miss",
        (None, false) => {}
    }
    let conditional =
        headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE);
    // Coalescing: wait for a fill of this key in flight, or become its fill (a GET whose
    // answer will be the origin's whole response: no conditionals of its own, no
    // `no-cache`).
    let mut fill = None;
    if coalesce && !request_no_cache {
        let mut fills = cache.fills();
        if let Some((_, done)) = fills.by_key.get(&key) {
            return Lookup::Wait(done.clone());
        }
        if parts.method == Method::GET && !conditional && fills.by_key.len() < MAX_FILLS {
            fills.next += 1;
            let id = fills.next;
            let (tx, rx) = tokio::sync::watch::channel(());
            fills.by_key.insert(key.clone(), (id, rx));
            fill = Some(FillGuard {
                cache: cache.clone(),
                key,
                id,
                _done: tx,
            });
        }
    }
    if let (Some(stored), _) = found {
        let etag = stored.headers.get(ETAG).cloned();
        let modified = stored.headers.get(LAST_MODIFIED).cloned();
        if !conditional && (etag.is_some() || modified.is_some()) {
            if let Some(etag) = etag {
                parts.headers.insert(IF_NONE_MATCH, etag);
            }
            if let Some(modified) = modified {
                parts.headers.insert(IF_MODIFIED_SINCE, modified);
            }
            revalidating = Some(stored);
        }
    }
    metrics.misses.with_label_values(&[route]).inc();
    Lookup::Forward(Box::new(Pending {
        cache: cache.clone(),
        route: route.clone(),
        version: route_ref.version,
        primary,
        request: parts.headers.clone(),
        head: parts.method == Method::HEAD,
        authorization: parts.headers.contains_key(AUTHORIZATION),
        revalidating,
        fwd,
        sent: SystemTime::now(),
        _fill: fill,
    }))
}

/// Whether a stored response's validators match the request's conditionals (RFC 9110
/// §13.1.2, §13.1.3: `If-None-Match` with weak comparison, else `If-Modified-Since`).
fn not_modified(stored: &HeaderMap, request: &HeaderMap) -> bool {
    let tag = |v: &str| v.trim().trim_start_matches("W/").to_string();
    if let Some(inm) = request.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let etag = tag(etag);
        return inm.split(',').any(|t| t.trim() == "*" || tag(t) == etag);
    }
    match (
        date(request, IF_MODIFIED_SINCE),
        date(stored, LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// The response a stored entry makes for this request: a 304 when the request's
/// conditionals match, else the whole response (no body for HEAD).
fn answer(
    stored: &Stored,
    parts: &http::request::Parts,
    age: Duration,
    status_line: &str,
) -> Response<ProxyBody> {
    let mut headers = stored.headers.clone();
    headers.insert(AGE, HeaderValue::from(age.as_secs()));
    append_status(&mut headers, status_line);
    let (status, body) = if not_modified(&stored.headers, &parts.headers) {
        headers.remove(CONTENT_LENGTH);
        (StatusCode::NOT_MODIFIED, empty_body())
    } else if parts.method == Method::HEAD {
        (stored.status, empty_body())
    } else {
        (
            stored.status,
            Full::new(stored.body.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
        .extensions_mut()
        .insert(crate::fault::FaultFlag("cache_hit"));
    response
}

/// Append Weir's member to `Cache-Status` (after the origin's: the last is nearest the
/// client, RFC 9211 §2).
fn append_status(headers: &mut HeaderMap, member: &str) {
    let merged = match headers.get(&CACHE_STATUS).and_then(|v| v.to_str().ok()) {
        Some(old) if !old.trim().is_empty() => format!("{old}, {member}"),
        _ => member.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&merged) {
        headers.insert(CACHE_STATUS.clone(), v);
    }
    // The same in the `X-Cache` form the issue names (and CDNs use): HIT, STALE (a stale
    // entry revalidated with the origin) or MISS.
    let x_cache = if member.starts_with("weir; hit") {
        "HIT"
    } else if member.contains("fwd=stale") {
        "STALE"
    } else {
        "MISS"
    };
    headers.insert(X_CACHE.clone(), HeaderValue::from_static(x_cache));
}

/// Statuses cacheable by default (RFC 9110 §15.1).
fn cacheable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The freshness of a storable response, or `None` when it may not be stored.
fn freshness(p: &Pending, status: StatusCode, headers: &HeaderMap) -> Option<(Duration, bool)> {
    if !cacheable_status(status)
        || has(headers, "no-store")
        || has(headers, "private")
        || headers.contains_key(SET_COOKIE)
        || headers.contains_key(http::header::CONTENT_RANGE)
        || has(&p.request, "no-store")
    {
        return None;
    }
    let s_maxage = seconds(headers, "s-maxage");
    if p.authorization
        && !(has(headers, "public") || s_maxage.is_some() || has(headers, "must-revalidate"))
    {
        return None;
    }
    let no_cache = has(headers, "no-cache");
    let date_value = date(headers, DATE).unwrap_or(p.sent);
    let lifetime = s_maxage
        .or_else(|| seconds(headers, "max-age"))
        .or_else(|| {
            date(headers, EXPIRES).map(|e| e.duration_since(date_value).unwrap_or_default())
        })
        .or_else(|| {
            // Heuristic (§4.2.2): 10 % of the time since Last-Modified, at most a day.
            date(headers, LAST_MODIFIED).map(|m| {
                (date_value.duration_since(m).unwrap_or_default() / 10)
                    .min(Duration::from_secs(86_400))
            })
        });
    let validated = headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED);
    match lifetime {
        Some(l) if !no_cache && !l.is_zero() => Some((l, false)),
        _ if validated => Some((lifetime.unwrap_or_default(), no_cache)),
        _ => None,
    }
}

/// RFC 9111 §4.2.3: the response's age when it arrived.
fn initial_age(headers: &HeaderMap, sent: SystemTime) -> Duration {
    let now = SystemTime::now();
    let apparent = date(headers, DATE)
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or_default();
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    let delay = now.duration_since(sent).unwrap_or_default();
    apparent.max(age + delay)
}

/// Phase 7 (first, on the upstream's response as it came): refresh on a 304 to a
/// revalidation, else mark the response and tee a storable body into the cache.
pub(crate) fn fill(p: Pending, mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    let status = response.status();
    if let (Some(stale), StatusCode::NOT_MODIFIED) = (&p.revalidating, status) {
        let fresh = refresh(&p, stale, response.headers());
        let line = "weir; fwd=stale; fwd-status=304";
        return answer_refreshed(&fresh, p.head, line);
    }
    let Some((lifetime, always_revalidate)) = freshness(&p, status, response.headers()) else {
        append_status(
            response.headers_mut(),
            &format!("weir; fwd={}; fwd-status={}", p.fwd, status.as_u16()),
        );
        return response;
    };
    let length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = length.is_some_and(|n| n > p.cache.cfg.max_entry_size);
    let Some(names) = vary_names(response.headers()).filter(|_| !too_large && !p.head) else {
        append_status(
            response.headers_mut(),
            &format!("weir; fwd={}; fwd-status={}", p.fwd, status.as_u16()),
        );
        return response;
    };
    let mut headers = response.headers().clone();
    headers.remove(AGE);
    let stored = Stored {
        status,
        initial_age: initial_age(&headers, p.sent),
        headers,
        body: Bytes::new(),
        at: Instant::now(),
        lifetime,
        always_revalidate,
    };
    append_status(
        response.headers_mut(),
        &format!(
            "weir; fwd={}; fwd-status={}; stored",
            p.fwd,
            status.as_u16()
        ),
    );
    let limit = usize::try_from(p.cache.cfg.max_entry_size).unwrap_or(usize::MAX);
    response.map(|inner| {
        Fill {
            inner,
            buf: Some(BytesMut::new()),
            limit,
            store: Some(Box::new((p, names, stored))),
        }
        .boxed_unsync()
    })
}

/// The stale entry with the 304's headers (RFC 9111 §4.3.4), stored again.
fn refresh(p: &Pending, stale: &Arc<Stored>, update: &HeaderMap) -> Arc<Stored> {
    let mut headers = stale.headers.clone();
    for name in update.keys() {
        if name == CONTENT_LENGTH || name == AGE {
            continue;
        }
        headers.remove(name);
        for v in update.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let mut fresh = Stored {
        status: stale.status,
        initial_age: initial_age(update, p.sent),
        headers,
        body: stale.body.clone(),
        at: Instant::now(),
        lifetime: Duration::ZERO,
        always_revalidate: stale.always_revalidate,
    };
    if let Some((lifetime, always)) = freshness(p, stale.status, &fresh.headers) {
        fresh.lifetime = lifetime;
        fresh.always_revalidate = always;
    }
    let fresh = Arc::new(fresh);
    let names = vary_names(&fresh.headers).unwrap_or_default();
    insert(p, names, fresh.clone());
    fresh
}

fn answer_refreshed(stored: &Stored, head: bool, line: &str) -> Response<ProxyBody> {
    let mut headers = stored.headers.clone();
    headers.insert(AGE, HeaderValue::from(stored.initial_age.as_secs()));
    append_status(&mut headers, line);
    let body = if head {
        empty_body()
    } else {
        Full::new(stored.body.clone())
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    let mut response = Response::new(body);
    *response.status_mut() = stored.status;
    *response.headers_mut() = headers;
    response
}

/// Store `stored` under the request's key, evicting the least recently used entries for
/// room. Too large for the entry or the cache: not stored.
fn insert(p: &Pending, names: Vec<HeaderName>, stored: Arc<Stored>) {
    let cache = &p.cache;
    let key = full_key(&p.primary, &names, &p.request);
    let header_bytes: usize = stored
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let size = (stored.body.len() + header_bytes + key.len() * 2 + 128) as u64;
    if size > cache.cfg.max_size || stored.body.len() as u64 > cache.cfg.max_entry_size {
        return;
    }
    let mut inner = cache.lock();
    let mut freed = inner.remove(&key);
    let mut evicted = 0u64;
    while inner.bytes + size > cache.cfg.max_size
        || inner.entries.len() >= cache.cfg.max_entries as usize
    {
        let Some((_, oldest)) = inner.order.pop_first() else {
            break;
        };
        if let Some(slot) = inner.entries.remove(&oldest) {
            freed += inner.unlinked(&slot);
            evicted += 1;
        }
    }
    inner.tick += 1;
    let tick = inner.tick;
    inner.order.insert(tick, key.clone());
    inner.entries.insert(
        key,
        Slot {
            stored,
            size,
            tick,
            route: p.version,
        },
    );
    inner.bytes += size;
    *inner.routes.entry(p.version).or_default() += 1;
    if names.is_empty() {
        inner.vary.remove(&p.primary);
    } else {
        inner.vary.insert(p.primary.clone(), names.into());
    }
    // Vary specs of primaries with no entry left would pile up: drop them with the last.
    if inner.vary.len() > inner.entries.len() * 2 + 16 {
        let Inner { vary, entries, .. } = &mut *inner;
        vary.retain(|primary, _| {
            entries
                .keys()
                .any(|k| k.split('\0').next() == Some(primary.as_str()))
        });
    }
    drop(inner);
    let delta = i64::try_from(size).unwrap_or(i64::MAX) - i64::try_from(freed).unwrap_or(0);
    cache.gauge.add(delta);
    if evicted > 0 {
        cache
            .evictions
            .with_label_values(&[&p.route])
            .inc_by(evicted);
    }
}

/// A storable response's body: passed on frame by frame, and copied into a buffer of at
/// most `maxBodySize` bytes that is stored when the body ended completely.
struct Fill {
    inner: ProxyBody,
    /// `None` once the body outgrew the limit (or carried trailers): nothing is stored.
    buf: Option<BytesMut>,
    limit: usize,
    store: Option<Box<(Pending, Vec<HeaderName>, Stored)>>,
}

impl Fill {
    /// The body ended completely: store it (unless it outgrew the limit).
    fn store(&mut self) {
        if let (Some(buf), Some(store)) = (self.buf.take(), self.store.take()) {
            let (p, names, mut stored) = *store;
            stored.body = buf.freeze();
            insert(&p, names, Arc::new(stored));
        }
    }
}

impl Body for Fill {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    let over = this
                        .buf
                        .as_ref()
                        .is_some_and(|b| b.len() + data.len() > this.limit);
                    if over {
                        // Nothing will be stored: waiters need not wait for the rest.
                        this.buf = None;
                        this.store = None;
                    } else if let Some(buf) = &mut this.buf {
                        buf.extend_from_slice(data);
                    }
                    // The server stops polling a body that says it ended: store now.
                    if this.inner.is_end_stream() {
                        this.store();
                    }
                }
                None => {
                    this.buf = None;
                    this.store = None;
                }
            },
            Poll::Ready(Some(Err(_))) => {
                this.buf = None;
                this.store = None;
            }
            Poll::Ready(None) => this.store(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
