//! BackendTrafficPolicy `responseCache` over real sockets, with an origin that counts what
//! reaches it and numbers its answers (so a body shows which origin fetch it came from):
//! hits without the backend, `max-age` expiry, what is never stored (`no-store`,
//! `private`, `Set-Cookie`, `Authorization`), `Vary`, 304s from the cache, revalidation
//! with the origin, LRU eviction under `maxSize`, bodies over `maxBodySize` streamed
//! uncached, a cached response compressed per client, and concurrent misses coalesced
//! into one origin request (and not, when the response is not storable).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use tokio::sync::mpsc;
use weir_snapshot::{BackendPolicy, Coding, ResponseCache};

use crate::compression::{compression, decode, text};
use crate::origin::{fetch, Origin, TestBody};
use crate::support::*;

fn cache(max_size: u64, max_entry_size: u64) -> ResponseCache {
    ResponseCache {
        max_size,
        max_entry_size,
        max_entries: 10_000,
    }
}

fn policy(c: ResponseCache) -> BackendPolicy {
    BackendPolicy {
        name: "ns/p".into(),
        id: 31,
        response_cache: Some(c),
        ..BackendPolicy::default()
    }
    .compiled()
}

fn reply(headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<TestBody> {
    let body = body.into();
    let mut r = Response::builder();
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.header("content-length", body.len())
        .body(TestBody::full(body))
        .unwrap()
}

/// The origin: the path picks the answer; bodies end with the origin's request number.
async fn origin() -> Origin {
    let n = Arc::new(AtomicUsize::new(0));
    Origin::start(move |req| {
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        let path = req.uri.path().strip_prefix("/p").unwrap_or_default();
        let numbered = format!("{path} #{n}");
        let plain = ("content-type", "text/plain");
        match path {
            "/max1" => reply(&[plain, ("cache-control", "max-age=1")], numbered),
            "/nostore" => reply(&[plain, ("cache-control", "no-store")], numbered),
            "/private" => reply(&[plain, ("cache-control", "private, max-age=60")], numbered),
            "/cookie" => reply(
                &[
                    plain,
                    ("cache-control", "max-age=60"),
                    ("set-cookie", "s=1"),
                ],
                numbered,
            ),
            "/public-auth" => reply(&[plain, ("cache-control", "public, max-age=60")], numbered),
            "/vary" => {
                let lang = req
                    .headers
                    .get("x-lang")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none");
                reply(
                    &[plain, ("cache-control", "max-age=60"), ("vary", "X-Lang")],
                    format!("{lang} {numbered}"),
                )
            }
            "/reval" => {
                let matches = req
                    .headers
                    .get("if-none-match")
                    .is_some_and(|v| v == "\"r1\"");
                if matches {
                    Response::builder()
                        .status(304)
                        .header("etag", "\"r1\"")
                        .header("cache-control", "max-age=60")
                        .header("x-refreshed", "yes")
                        .body(TestBody::Full(None))
                        .unwrap()
                } else {
                    reply(
                        &[plain, ("cache-control", "max-age=1"), ("etag", "\"r1\"")],
                        numbered,
                    )
                }
            }
            "/big" => reply(&[plain, ("cache-control", "max-age=60")], text(5_000)),
            "/bigchunked" => {
                let (tx, rx) = mpsc::channel(8);
                tokio::spawn(async move {
                    for chunk in text(5_000).chunks(700) {
                        let _ = tx.send(Bytes::copy_from_slice(chunk)).await;
                    }
                });
                Response::builder()
                    .header("content-type", "text/plain")
                    .header("cache-control", "max-age=60")
                    .body(TestBody::Chan(rx))
                    .unwrap()
            }
            "/text" => reply(
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "max-age=60"),
                ],
                text(20_000),
            ),
            // Slow: the headers at once, the body 400 ms later (a fill in flight).
            "/slow" | "/slow-nostore" => {
                let cc = if path == "/slow" {
                    "max-age=60"
                } else {
                    "no-store"
                };
                let (tx, rx) = mpsc::channel(1);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    let _ = tx.send(Bytes::from(numbered)).await;
                });
                Response::builder()
                    .header("content-type", "text/plain")
                    .header("cache-control", cc)
                    .body(TestBody::Chan(rx))
                    .unwrap()
            }
            p if p.starts_with("/item/") => reply(
                &[plain, ("cache-control", "max-age=60")],
                format!("{numbered:<600}"),
            ),
            // `/max60`, `/etag` and the rest: fresh for a minute, with an ETag.
            _ => reply(
                &[plain, ("cache-control", "max-age=60"), ("etag", "\"e1\"")],
                numbered,
            ),
        }
    })
    .await
}

async fn start(p: BackendPolicy) -> (Origin, TestProxy, std::net::SocketAddr) {
    let o = origin().await;
    let up = upstream("svc", &[o.addr]);
    let (proxy, addr) = crate::fault::start(&up, p).await;
    (o, proxy, addr)
}

fn body(r: &crate::origin::Raw) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test]
async fn a_fresh_entry_answers_without_the_backend() {
    let (o, proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    let first = fetch(addr, "GET", "/p/max60", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(body(&first), "/max60 #1");
    assert_eq!(
        first.header("cache-status"),
        Some("weir; fwd=uri-miss; fwd-status=200; stored")
    );
    assert_eq!(first.header("x-cache"), Some("MISS"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = fetch(addr, "GET", "/p/max60", &[]).await;
    assert_eq!(body(&second), "/max60 #1");
    assert_eq!(o.hits(), 1, "the hit never reached the backend");
    assert!(second
        .header("cache-status")
        .unwrap()
        .starts_with("weir; hit; ttl=5"));
    assert_eq!(second.header("x-cache"), Some("HIT"));
    let age: u64 = second.header("age").unwrap().parse().unwrap();
    assert!((1..=2).contains(&age), "age {age}");
    assert_eq!(second.header("content-length"), Some("9"));
    assert_eq!(second.header("etag"), Some("\"e1\""));
    // HEAD is answered from the GET's entry, without a body.
    let head = fetch(addr, "HEAD", "/p/max60", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(o.hits(), 1);
    let labels = [("route", "ns/r")];
    assert_eq!(proxy.metric("weir_cache_hits_total", &labels), 2.0);
    assert_eq!(proxy.metric("weir_cache_misses_total", &labels), 1.0);
    assert!(proxy.metric("weir_cache_bytes", &[]) > 0.0);
    // The route without the policy is never cached.
    fetch(addr, "GET", "/max60", &[]).await;
    let again = fetch(addr, "GET", "/max60", &[]).await;
    assert_eq!(o.hits(), 3);
    assert!(again.header("cache-status").is_none());
    // Another method invalidates the URL's entry.
    fetch(addr, "POST", "/p/max60", &[]).await;
    let after = fetch(addr, "GET", "/p/max60", &[]).await;
    assert_eq!(body(&after), "/max60 #5");
}

#[tokio::test]
async fn an_entry_expires_after_max_age() {
    let (o, _proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    assert_eq!(body(&fetch(addr, "GET", "/p/max1", &[]).await), "/max1 #1");
    assert_eq!(body(&fetch(addr, "GET", "/p/max1", &[]).await), "/max1 #1");
    assert_eq!(o.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = fetch(addr, "GET", "/p/max1", &[]).await;
    assert_eq!(body(&r), "/max1 #2");
    assert_eq!(
        r.header("cache-status"),
        Some("weir; fwd=stale; fwd-status=200; stored")
    );
    assert_eq!(r.header("x-cache"), Some("STALE"));
    // A request that asks for revalidation is forwarded even with a fresh entry.
    let r = fetch(addr, "GET", "/p/max1", &[("cache-control", "no-cache")]).await;
    assert_eq!(body(&r), "/max1 #3");
    assert_eq!(o.hits(), 3);
}

#[tokio::test]
async fn no_store_private_set_cookie_and_authorization_are_not_cached() {
    let (o, _proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    for path in ["/p/nostore", "/p/private", "/p/cookie"] {
        let a = fetch(addr, "GET", path, &[]).await;
        let b = fetch(addr, "GET", path, &[]).await;
        assert_ne!(body(&a), body(&b), "{path}");
        assert!(
            b.header("cache-status").unwrap().contains("fwd=uri-miss"),
            "{path}"
        );
        assert!(
            !b.header("cache-status").unwrap().contains("stored"),
            "{path}"
        );
    }
    assert_eq!(o.hits(), 6);
    // With Authorization: only a `public` (or s-maxage, must-revalidate) response.
    let auth = [("authorization", "Bearer x")];
    let a = fetch(addr, "GET", "/p/max60", &auth).await;
    let b = fetch(addr, "GET", "/p/max60", &auth).await;
    assert_ne!(body(&a), body(&b));
    let a = fetch(addr, "GET", "/p/public-auth", &auth).await;
    let b = fetch(addr, "GET", "/p/public-auth", &auth).await;
    assert_eq!(body(&a), body(&b));
    // A request with no-store is neither answered nor stored.
    let c = fetch(
        addr,
        "GET",
        "/p/public-auth",
        &[("cache-control", "no-store")],
    )
    .await;
    assert_ne!(body(&a), body(&c));
}

#[tokio::test]
async fn vary_keeps_one_entry_per_value_of_the_varied_header() {
    let (o, _proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    let de = fetch(addr, "GET", "/p/vary", &[("x-lang", "de")]).await;
    let fr = fetch(addr, "GET", "/p/vary", &[("x-lang", "fr")]).await;
    assert_eq!(body(&de), "de /vary #1");
    assert_eq!(body(&fr), "fr /vary #2");
    assert!(fr.header("cache-status").unwrap().contains("fwd=vary-miss"));
    assert_eq!(
        body(&fetch(addr, "GET", "/p/vary", &[("x-lang", " de")]).await),
        "de /vary #1"
    );
    assert_eq!(
        body(&fetch(addr, "GET", "/p/vary", &[("x-lang", "fr")]).await),
        "fr /vary #2"
    );
    let none = fetch(addr, "GET", "/p/vary", &[]).await;
    assert_eq!(body(&none), "none /vary #3");
    assert_eq!(o.hits(), 3);
}

#[tokio::test]
async fn a_matching_conditional_gets_304_from_the_cache() {
    let (o, _proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    fetch(addr, "GET", "/p/etag", &[]).await;
    let r = fetch(addr, "GET", "/p/etag", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"e1\""));
    assert!(r.header("cache-status").unwrap().contains("hit"));
    let r = fetch(addr, "GET", "/p/etag", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body(&r), "/etag #1");
    assert_eq!(o.hits(), 1);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_it() {
    let (o, _proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    assert_eq!(
        body(&fetch(addr, "GET", "/p/reval", &[]).await),
        "/reval #1"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = fetch(addr, "GET", "/p/reval", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body(&r), "/reval #1", "the stored body, not refetched");
    assert_eq!(
        r.header("cache-status"),
        Some("weir; fwd=stale; fwd-status=304")
    );
    assert_eq!(r.header("x-refreshed"), Some("yes"));
    assert_eq!(o.hits(), 2);
    let sent = o.seen.lock().unwrap()[1].headers.clone();
    assert_eq!(sent["if-none-match"], "\"r1\"");
    // Refreshed with the 304's max-age=60: a hit now.
    let r = fetch(addr, "GET", "/p/reval", &[]).await;
    assert_eq!(body(&r), "/reval #1");
    assert!(r.header("cache-status").unwrap().starts_with("weir; hit"));
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn the_least_recently_used_entry_is_evicted_under_max_size() {
    // Each entry is about 880 bytes accounted (a 600-byte body, its headers, its key):
    // three fit in 3,000, a fourth does not.
    let (o, proxy, addr) = start(policy(cache(3_000, 1_000))).await;
    for i in 1..=3 {
        fetch(addr, "GET", &format!("/p/item/{i}"), &[]).await;
    }
    // Item 1 is used again: item 2 is now the least recently used.
    assert!(body(&fetch(addr, "GET", "/p/item/1", &[]).await).starts_with("/item/1 #1"));
    assert_eq!(o.hits(), 3);
    fetch(addr, "GET", "/p/item/4", &[]).await;
    assert_eq!(o.hits(), 4);
    assert_eq!(
        proxy.metric("weir_cache_evictions_total", &[("route", "ns/r")]),
        1.0
    );
    assert!(proxy.metric("weir_cache_bytes", &[]) <= 3_000.0);
    for (i, cached) in [(1, true), (3, true), (4, true), (2, false)] {
        let before = o.hits();
        fetch(addr, "GET", &format!("/p/item/{i}"), &[]).await;
        assert_eq!(o.hits() == before, cached, "item {i}");
    }
}

#[tokio::test]
async fn a_body_over_max_entry_size_streams_through_uncached() {
    let (o, _proxy, addr) = start(policy(cache(1 << 20, 1_000))).await;
    for path in ["/p/big", "/p/bigchunked"] {
        let a = fetch(addr, "GET", path, &[]).await;
        let b = fetch(addr, "GET", path, &[]).await;
        assert_eq!(a.body, text(5_000), "{path}");
        assert_eq!(b.body, text(5_000), "{path}");
        assert!(!b.header("cache-status").unwrap().contains("hit"), "{path}");
    }
    assert_eq!(o.hits(), 4);
}

#[tokio::test]
async fn a_cached_response_is_compressed_for_each_client() {
    let p = BackendPolicy {
        compression: Some(Arc::new(compression(&[Coding::Brotli, Coding::Gzip], 30))),
        ..policy(cache(1 << 20, 1 << 16))
    }
    .compiled();
    let (o, _proxy, addr) = start(p).await;
    let gz = fetch(addr, "GET", "/p/text", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &gz.body).await, text(20_000));
    let br = fetch(addr, "GET", "/p/text", &[("accept-encoding", "br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert!(br.header("cache-status").unwrap().contains("hit"));
    assert_eq!(decode("br", &br.body).await, text(20_000));
    let plain = fetch(addr, "GET", "/p/text", &[]).await;
    assert!(plain.header("content-encoding").is_none());
    assert_eq!(plain.body, text(20_000));
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(o.hits(), 1, "one origin fetch served three encodings");
}

/// The snapshot `crate::fault::start` builds, on `port`, with `p` on `/p`.
fn snap(
    port: u16,
    up: &Arc<weir_snapshot::Upstream>,
    p: BackendPolicy,
) -> Arc<weir_snapshot::Snapshot> {
    crate::fault::policy_snapshot(2, port, up, p, None)
}

#[tokio::test]
async fn entries_survive_a_swap_that_keeps_the_policy_and_go_with_it() {
    let o = origin().await;
    let up = upstream("svc", &[o.addr]);
    let (proxy, addr) = crate::fault::start(&up, policy(cache(1 << 20, 1 << 16))).await;
    fetch(addr, "GET", "/p/max60", &[]).await;
    assert!(proxy.metric("weir_cache_bytes", &[]) > 0.0);
    // The same policy (same id) in a new snapshot: still a hit.
    proxy.swap(snap(addr.port(), &up, policy(cache(1 << 20, 1 << 16))));
    proxy.proxy.sync_listeners().await;
    let r = fetch(addr, "GET", "/p/max60", &[]).await;
    assert_eq!(body(&r), "/max60 #1");
    assert_eq!(o.hits(), 1);
    // A changed policy (a new id) starts empty, and the old entries are dropped.
    let changed = BackendPolicy {
        id: 32,
        ..policy(cache(2 << 20, 1 << 16))
    }
    .compiled();
    proxy.swap(snap(addr.port(), &up, changed));
    proxy.proxy.sync_listeners().await;
    assert_eq!(proxy.metric("weir_cache_bytes", &[]), 0.0);
    let r = fetch(addr, "GET", "/p/max60", &[]).await;
    assert_eq!(body(&r), "/max60 #2");
}

/// `n` GETs of `path` at once, each on its own connection: their bodies and the time all
/// took.
async fn at_once(addr: std::net::SocketAddr, path: &str, n: usize) -> (Vec<String>, Duration) {
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let path = path.to_string();
        tasks.spawn(async move {
            let r = fetch(addr, "GET", &path, &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            body(&r)
        });
    }
    let mut bodies = Vec::new();
    while let Some(b) = tasks.join_next().await {
        bodies.push(b.unwrap());
    }
    (bodies, started.elapsed())
}

#[tokio::test]
async fn concurrent_misses_for_one_key_make_one_origin_request() {
    let (o, proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    let (bodies, _) = at_once(addr, "/p/slow", 20).await;
    assert_eq!(o.hits(), 1, "one origin request for 20 concurrent misses");
    assert!(bodies.iter().all(|b| b == "/slow #1"), "{bodies:?}");
    let labels = [("route", "ns/r")];
    // The fill was a miss; the requests that waited for it were answered from its entry.
    assert_eq!(proxy.metric("weir_cache_misses_total", &labels), 1.0);
    assert_eq!(proxy.metric("weir_cache_hits_total", &labels), 19.0);
    // Another key is its own fill.
    let (bodies, _) = at_once(addr, "/p/slow?b", 5).await;
    assert_eq!(o.hits(), 2);
    assert!(bodies.iter().all(|b| b == "/slow #2"), "{bodies:?}");
}

#[tokio::test]
async fn when_the_fill_stores_nothing_the_waiters_go_upstream_at_once() {
    let (o, _proxy, addr) = start(policy(cache(1 << 20, 1 << 16))).await;
    let (bodies, took) = at_once(addr, "/p/slow-nostore", 20).await;
    // Each waiter went upstream itself once the fill's response said no-store (at its
    // headers, not after its body), all in parallel: about one slow body, not 20.
    assert_eq!(o.hits(), 20);
    let mut numbers: Vec<&str> = bodies.iter().map(|b| b.as_str()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 20, "each got its own origin response");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
