use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn get(path: &str) -> http::request::Parts {
    http::Request::get(path)
        .header("host", "h")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[tokio::test]
async fn a_miss_fills_its_key_for_waiters_until_its_pending_goes() {
    let (metrics, cache) = small_cache();
    let route = route(1);
    let Lookup::Forward(fill) = lookup(&cache, &metrics, &route, &mut get("/x"), true) else {
        panic!("a miss is forwarded");
    };
    assert_eq!(cache.in_flight(), 1);
    let Lookup::Wait(mut done) = lookup(&cache, &metrics, &route, &mut get("/x"), true) else {
        panic!("a second miss waits");
    };
    // Looking again after a wait never waits twice; another key is its own fill.
    let again = lookup(&cache, &metrics, &route, &mut get("/x"), false);
    assert!(matches!(again, Lookup::Forward(_)));
    let other = lookup(&cache, &metrics, &route, &mut get("/y"), true);
    assert!(matches!(other, Lookup::Forward(_)));
    assert_eq!(cache.in_flight(), 2);
    drop(other);
    // The fill's end (here: its pending dropped, as when nothing is stored) wakes the
    // waiters and forgets the key.
    drop(fill);
    assert!(done.changed().await.is_err());
    assert_eq!(cache.in_flight(), 0);
    // HEAD and conditional requests never lead.
    let head = &mut get("/z");
    head.method = Method::HEAD;
    let _h = lookup(&cache, &metrics, &route, head, true);
    let cond = &mut get("/z");
    cond.headers
        .insert(IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
    let _c = lookup(&cache, &metrics, &route, cond, true);
    assert_eq!(cache.in_flight(), 0);
}

#[test]
fn the_fills_in_flight_are_bounded() {
    let (metrics, cache) = small_cache();
    let route = route(1);
    let held: Vec<Lookup> = (0..MAX_FILLS + 10)
        .map(|i| lookup(&cache, &metrics, &route, &mut get(&format!("/{i}")), true))
        .collect();
    assert!(held.iter().all(|l| matches!(l, Lookup::Forward(_))));
    assert_eq!(cache.in_flight(), MAX_FILLS);
    drop(held);
    assert_eq!(cache.in_flight(), 0);
}

#[test]
fn directives_are_found_in_any_case_and_field() {
    let h = headers(&[
        ("cache-control", "Public, MAX-AGE=60"),
        ("cache-control", "s-maxage=\"30\""),
    ]);
    assert!(has(&h, "public"));
    assert_eq!(seconds(&h, "max-age"), Some(Duration::from_secs(60)));
    assert_eq!(seconds(&h, "s-maxage"), Some(Duration::from_secs(30)));
    assert!(!has(&h, "no-store"));
}

#[test]
fn vary_names_are_normalised_and_star_refuses() {
    let h = headers(&[("vary", "X-Lang, accept-encoding"), ("vary", "x-lang")]);
    let names: Vec<_> = vary_names(&h)
        .unwrap()
        .iter()
        .map(|n| n.as_str().to_string())
        .collect();
    assert_eq!(names, ["accept-encoding", "x-lang"]);
    assert!(vary_names(&headers(&[("vary", "Origin, *")])).is_none());
    let names = vary_names(&h).unwrap();
    let a = full_key(
        "p",
        &names,
        &headers(&[("x-lang", " de "), ("accept-encoding", "gzip")]),
    );
    let b = full_key(
        "p",
        &names,
        &headers(&[("accept-encoding", "gzip"), ("x-lang", "de")]),
    );
    assert_eq!(a, b);
    let c = full_key("p", &names, &headers(&[("x-lang", "fr")]));
    assert_ne!(a, c);
}

#[test]
fn conditionals_use_weak_etags_then_dates() {
    let stored = headers(&[
        ("etag", "\"v1\""),
        ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
    ]);
    assert!(not_modified(
        &stored,
        &headers(&[("if-none-match", "W/\"v1\"")])
    ));
    assert!(not_modified(
        &stored,
        &headers(&[("if-none-match", "\"x\", \"v1\"")])
    ));
    assert!(not_modified(&stored, &headers(&[("if-none-match", "*")])));
    assert!(!not_modified(
        &stored,
        &headers(&[("if-none-match", "\"v2\"")])
    ));
    // If-None-Match wins over If-Modified-Since.
    assert!(!not_modified(
        &stored,
        &headers(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Wed, 02 Dec 2026 10:00:00 GMT")
        ])
    ));
    assert!(not_modified(
        &stored,
        &headers(&[("if-modified-since", "Wed, 02 Dec 2026 10:00:00 GMT")])
    ));
    assert!(!not_modified(
        &stored,
        &headers(&[("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT")])
    ));
}

fn route(version: u64) -> RouteRef {
    RouteRef {
        kind: "HTTPRoute",
        route: "ns/r".into(),
        rule: 0,
        rule_name: None,
        version,
    }
}

fn stored(body: &'static str) -> Arc<Stored> {
    Arc::new(Stored {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from_static(body.as_bytes()),
        at: Instant::now(),
        initial_age: Duration::ZERO,
        lifetime: Duration::from_secs(60),
        always_revalidate: false,
    })
}

#[test]
fn an_entry_answers_only_its_route_version_and_a_purge_drops_dead_versions() {
    let (metrics, cache) = small_cache();
    let (v1, v2) = (route(1), route(2));
    for path in ["/a", "/b"] {
        let Lookup::Forward(p) = lookup(&cache, &metrics, &v1, &mut get(path), false) else {
            panic!("a miss is forwarded");
        };
        insert(&p, Vec::new(), stored("one"));
    }
    assert!(matches!(
        lookup(&cache, &metrics, &v1, &mut get("/a"), false),
        Lookup::Hit(_)
    ));
    // The route changed: its new version does not see the old version's answer.
    let Lookup::Forward(p) = lookup(&cache, &metrics, &v2, &mut get("/a"), false) else {
        panic!("another version of the route misses");
    };
    insert(&p, Vec::new(), stored("two"));
    assert!(metrics.bytes.get() > 0);
    // A swap that keeps both versions purges nothing; one that keeps only v2 drops v1's.
    cache.purge(|v| v == 1 || v == 2);
    assert_eq!(cache.lock().entries.len(), 2);
    cache.purge(|v| v == 2);
    assert_eq!(cache.lock().entries.len(), 1);
    assert_eq!(cache.lock().routes.len(), 1);
    assert!(matches!(
        lookup(&cache, &metrics, &v2, &mut get("/a"), false),
        Lookup::Hit(_)
    ));
    assert!(matches!(
        lookup(&cache, &metrics, &v1, &mut get("/b"), false),
        Lookup::Forward(_)
    ));
    cache.purge(|_| false);
    assert_eq!(cache.lock().entries.len(), 0);
    assert_eq!(cache.lock().bytes, 0);
    assert_eq!(metrics.bytes.get(), 0);
}

/// A cache of 1 MiB, 64 KiB entries and 100 entries, with its metrics.
fn small_cache() -> (CacheMetrics, Arc<Cache>) {
    let metrics = CacheMetrics::register(&Registry::new()).unwrap();
    let cfg = ResponseCache {
        max_size: 1 << 20,
        max_entry_size: 1 << 16,
        max_entries: 100,
    };
    let cache = Arc::new(Cache::new(cfg, &metrics));
    (metrics, cache)
}
