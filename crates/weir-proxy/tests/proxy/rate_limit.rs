//! BackendTrafficPolicy `rateLimit` (local) over real sockets: 429 after the limit with
//! Envoy's `x-ratelimit-*` headers and `retry-after`, headers on admitted responses, one
//! bucket per `Distinct` header value and per client address, CIDR selection, refill after
//! the unit, counters that survive a snapshot swap, and routes without a limit untouched.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use http_body_util::Full;
use weir_snapshot::{
    BackendPolicy, Cidr, ClientSelector, HeaderSelector, Limit, RateLimit, RateLimitRule,
    SourceSelector,
};

use crate::fault::start;
use crate::support::*;

fn rule(requests: u32, unit: Duration, selectors: Vec<ClientSelector>, id: u64) -> RateLimitRule {
    RateLimitRule {
        selectors,
        limit: Limit { requests, unit },
        shared: false,
        id,
    }
}

fn with_limit(rules: Vec<RateLimitRule>) -> BackendPolicy {
    BackendPolicy {
        name: "ns/p".into(),
        id: 12,
        rate_limit: Some(RateLimit {
            scope: 99,
            local: rules.into(),
            global: Arc::from(Vec::new()),
        }),
        ..BackendPolicy::default()
    }
    .compiled()
}

const MINUTE: Duration = Duration::from_secs(60);

async fn get(client: &mut H1, path: &str, user: Option<&str>) -> Resp {
    let mut req = request("a.example", path);
    if let Some(u) = user {
        req = req.header("x-user", u);
    }
    client
        .send(req.body(Full::default()).unwrap())
        .await
        .unwrap()
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn over_the_limit_is_429_with_headers_and_never_reaches_the_backend() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (proxy, addr) = start(&up, with_limit(vec![rule(3, MINUTE, Vec::new(), 1)])).await;
    let mut client = H1::connect(addr).await.unwrap();
    for remaining in ["2", "1", "0"] {
        let r = get(&mut client, "/p", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-limit"), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some(remaining));
        assert!(header(&r, "retry-after").is_none());
    }
    for _ in 0..2 {
        let r = get(&mut client, "/p", None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body, "too many requests\n");
        assert_eq!(header(&r, "x-ratelimit-limit"), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));
        // 3 a minute, all used in this window (a whole minute of the clock): nothing
        // passes before the next window starts, and both headers say when that is.
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        let reset: u64 = header(&r, "x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(retry.abs_diff(reset) <= 1, "{retry} {reset}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let left = 60 - now % 60;
        assert!(
            retry.abs_diff(left) <= 1,
            "{retry}, the minute ends in {left}"
        );
    }
    assert_eq!(echo.received.load(Ordering::SeqCst), 3);
    assert_eq!(
        proxy.metric(
            "weir_rate_limited_total",
            &[("route", "ns/r"), ("kind", "local")]
        ),
        2.0
    );
    assert_eq!(
        proxy.metric("weir_request_errors_total", &[("reason", "rate_limited")]),
        2.0
    );
    // The route without a policy: no limit, no headers.
    for _ in 0..10 {
        let r = get(&mut client, "/", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(header(&r, "x-ratelimit-limit").is_none());
    }
}

/// ClientTrafficPolicy `headers.disableRateLimitHeaders` (Envoy Gateway's field): the limit
/// still holds, but no response carries `x-ratelimit-*`; a 429 keeps `retry-after`.
#[tokio::test]
async fn a_client_policy_turns_the_headers_off_but_not_the_limit() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let quiet = weir_snapshot::ClientPolicy {
        name: "ns/ctp".into(),
        id: 7,
        disable_rate_limit_headers: true,
        ..weir_snapshot::ClientPolicy::default()
    };
    let limit = with_limit(vec![rule(2, MINUTE, Vec::new(), 1)]);
    let (_proxy, addr) = crate::fault::start_with_client(&up, limit, Some(quiet)).await;
    let mut client = H1::connect(addr).await.unwrap();
    let none = |r: &Resp| {
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(header(r, name).is_none(), "{name}: {:?}", header(r, name));
        }
    };
    for _ in 0..2 {
        let r = get(&mut client, "/p", None).await;
        assert_eq!(r.status, StatusCode::OK);
        none(&r);
    }
    let r = get(&mut client, "/p", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    none(&r);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(echo.received.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn each_distinct_header_value_has_its_own_bucket() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let by_user = vec![ClientSelector {
        headers: vec![HeaderSelector::Distinct(HeaderName::from_static("x-user"))],
        ..ClientSelector::default()
    }];
    let (_proxy, addr) = start(&up, with_limit(vec![rule(2, MINUTE, by_user, 1)])).await;
    let mut client = H1::connect(addr).await.unwrap();
    let statuses = |rs: Vec<Resp>| rs.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>();
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(get(&mut client, "/p", Some("alice")).await);
    }
    assert_eq!(statuses(alice), vec![200, 200, 429]);
    let bob = get(&mut client, "/p", Some("bob")).await;
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!(header(&bob, "x-ratelimit-remaining"), Some("1"));
    // Without the header the rule does not select the request: no limit, no headers.
    for _ in 0..5 {
        let r = get(&mut client, "/p", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(header(&r, "x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn source_cidr_selects_and_distinct_counts_per_address() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let source = |cidr: &str, distinct| {
        vec![ClientSelector {
            source: Some(SourceSelector {
                cidr: Cidr::parse(cidr).unwrap(),
                distinct,
            }),
            ..ClientSelector::default()
        }]
    };
    // The client is 127.0.0.1: the 10/8 rule never selects it, the 127/8 one does.
    let rules = vec![
        rule(1, MINUTE, source("10.0.0.0/8", false), 1),
        rule(2, MINUTE, source("127.0.0.0/8", true), 2),
    ];
    let (_proxy, addr) = start(&up, with_limit(rules)).await;
    let mut client = H1::connect(addr).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(get(&mut client, "/p", None).await.status.as_u16());
    }
    assert_eq!(got, vec![200, 200, 429]);
    // Another connection from the same address shares the bucket.
    let mut other = H1::connect(addr).await.unwrap();
    assert_eq!(
        get(&mut other, "/p", None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_bucket_refills_after_the_unit_and_survives_a_swap() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let policy = with_limit(vec![rule(2, Duration::from_secs(1), Vec::new(), 1)]);
    let (proxy, addr) = start(&up, policy).await;
    let mut client = H1::connect(addr).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(get(&mut client, "/p", None).await.status.as_u16());
    }
    assert_eq!(got, vec![200, 200, 429]);
    // A swap to an equal snapshot (same policy and rule ids) keeps the spent bucket.
    let snap = proxy.handle.load_full();
    proxy.swap(Arc::new(weir_snapshot::Snapshot {
        generation: snap.generation + 1,
        sockets: snap.sockets.clone(),
    }));
    proxy.proxy.sync_listeners().await;
    assert_eq!(
        get(&mut client, "/p", None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Two a second, in a sliding window aligned to the wall clock: once the window the
    // two counted in is no longer the previous one (after two units at most), the whole
    // quota is back. (After one unit the previous window still weighs: 1.1 s was flaky.)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(get(&mut client, "/p", None).await.status.as_u16());
    }
    assert_eq!(got, vec![200, 200, 429]);
}
