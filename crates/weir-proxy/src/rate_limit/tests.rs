//! The local engine without sockets: bucket arithmetic, distinct keys and their bound,
//! scopes and state kept across swaps.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method};
use weir_snapshot::rate_limit::Client;
use weir_snapshot::{
    Cidr, ClientSelector, HeaderSelector, Limit, RateLimit, RateLimitRule, SourceSelector,
};

use super::*;

const SEC: u64 = 1_000_000_000;

fn rule(requests: u32, unit: u64, selectors: Vec<ClientSelector>, id: u64) -> RateLimitRule {
    RateLimitRule {
        selectors,
        limit: Limit {
            requests,
            unit: Duration::from_secs(unit),
        },
        shared: false,
        id,
    }
}

fn limit(scope: u64, rules: Vec<RateLimitRule>) -> RateLimit {
    RateLimit {
        scope,
        local: rules.into(),
        global: Arc::from(Vec::new()),
    }
}

fn by_header() -> Vec<ClientSelector> {
    vec![ClientSelector {
        headers: vec![HeaderSelector::Distinct(HeaderName::from_static("x-user"))],
        ..ClientSelector::default()
    }]
}

fn client(headers: &HeaderMap) -> Client<'_> {
    Client {
        method: &Method::GET,
        path: "/",
        headers,
        address: "10.0.0.1".parse().unwrap(),
    }
}

#[test]
fn a_bucket_admits_its_burst_then_refills_at_the_rate() {
    let g = Gcra::new(Limit {
        requests: 3,
        unit: Duration::from_secs(3),
    });
    let b = Bucket::default();
    let now = 10 * SEC;
    let got: Vec<(bool, u32)> = (0..4)
        .map(|_| {
            let d = b.take(&g, now);
            (d.allowed, d.remaining)
        })
        .collect();
    assert_eq!(got, vec![(true, 2), (true, 1), (true, 0), (false, 0)]);
    let refused = b.take(&g, now);
    // The next token comes in 1 s; the bucket is full again in 3 s.
    assert_eq!((refused.retry_after, refused.reset), (1, 3));
    assert!(!b.take(&g, now + SEC - 1).allowed);
    let d = b.take(&g, now + SEC);
    assert!(d.allowed && d.remaining == 0);
    // After a whole unit idle: full again.
    let d = b.take(&g, now + 10 * SEC);
    assert_eq!((d.allowed, d.remaining, d.reset), (true, 2, 1));
}

#[test]
fn over_ten_units_at_twice_the_rate_a_bucket_admits_the_rate_plus_its_burst() {
    let g = Gcra::new(Limit {
        requests: 50,
        unit: Duration::from_secs(1),
    });
    let b = Bucket::default();
    let step = SEC / 100; // 100 requests a second: twice the limit.
    let admitted = (0..1000u64)
        .filter(|i| b.take(&g, SEC + i * step).allowed)
        .count();
    // 50 a second for 10 s, plus the first burst of 50.
    assert!((545..=551).contains(&admitted), "{admitted}");
}

#[test]
fn distinct_keys_count_apart_and_stay_bounded() {
    let limits = LocalLimits::default();
    let rl = limit(7, vec![rule(2, 60, by_header(), 1)]);
    let mut alice = HeaderMap::new();
    alice.insert("x-user", "alice".parse().unwrap());
    let mut bob = HeaderMap::new();
    bob.insert("x-user", "bob".parse().unwrap());
    let now = SEC;
    let a: Vec<bool> = (0..3)
        .map(|_| limits.check_at(&rl, &client(&alice), now).unwrap().allowed)
        .collect();
    assert_eq!(a, vec![true, true, false]);
    assert!(limits.check_at(&rl, &client(&bob), now).unwrap().allowed);
    // Without the header the rule does not apply at all.
    assert!(limits
        .check_at(&rl, &client(&HeaderMap::new()), now)
        .is_none());
    // An attacker's 30k keys leave the map at its bound.
    for i in 0..30_000 {
        let mut h = HeaderMap::new();
        h.insert("x-user", i.to_string().parse().unwrap());
        limits.check_at(&rl, &client(&h), now + i);
    }
    let len = distinct_len(&limits, &rl, &rl.local[0]);
    assert!(len <= DISTINCT_KEYS, "{len}");
    assert!(len >= DISTINCT_KEYS - SHARDS, "{len}");
}

#[test]
fn refilled_buckets_are_dropped_first_when_a_shard_is_full() {
    let g = Gcra::new(Limit {
        requests: 1,
        unit: Duration::from_secs(1),
    });
    let d = DistinctBuckets::new();
    // Fill shard 0 with keys whose buckets refill after 1 s.
    for i in 0..PER_SHARD as u64 {
        assert!(d.take(&g, i, SEC).allowed);
    }
    assert_eq!(d.len(), PER_SHARD);
    // A key that keeps being refused is remembered, a new key evicts refilled ones.
    assert!(!d.take(&g, 0, SEC).allowed);
    assert!(d.take(&g, 1 << 20, 3 * SEC).allowed);
    assert_eq!(d.len(), 1);
}

#[test]
fn sources_count_per_address_within_the_block() {
    let limits = LocalLimits::default();
    let selectors = vec![ClientSelector {
        source: Some(SourceSelector {
            cidr: Cidr::parse("10.0.0.0/8").unwrap(),
            distinct: true,
        }),
        ..ClientSelector::default()
    }];
    let rl = limit(1, vec![rule(1, 60, selectors, 1)]);
    let h = HeaderMap::new();
    let mut c = client(&h);
    assert!(limits.check_at(&rl, &c, SEC).unwrap().allowed);
    assert!(!limits.check_at(&rl, &c, SEC).unwrap().allowed);
    c.address = "10.0.0.2".parse().unwrap();
    assert!(limits.check_at(&rl, &c, SEC).unwrap().allowed);
    c.address = "192.168.1.1".parse().unwrap();
    assert!(limits.check_at(&rl, &c, SEC).is_none());
}

#[test]
fn scopes_count_apart_unless_shared_and_state_survives_until_the_rule_is_gone() {
    let limits = LocalLimits::default();
    let h = HeaderMap::new();
    let a = limit(1, vec![rule(1, 60, Vec::new(), 9)]);
    let b = limit(2, vec![rule(1, 60, Vec::new(), 9)]);
    assert!(limits.check_at(&a, &client(&h), SEC).unwrap().allowed);
    assert!(limits.check_at(&b, &client(&h), SEC).unwrap().allowed);
    assert!(!limits.check_at(&a, &client(&h), SEC).unwrap().allowed);
    let mut shared = rule(1, 60, Vec::new(), 10);
    shared.shared = true;
    let a = limit(1, vec![shared.clone()]);
    let b = limit(2, vec![shared]);
    assert!(limits.check_at(&a, &client(&h), SEC).unwrap().allowed);
    assert!(!limits.check_at(&b, &client(&h), SEC).unwrap().allowed);
    assert_eq!(limits.rules(), 3);
    // A snapshot without rate limits drops them all.
    limits.retain_live(&weir_snapshot::Snapshot::default());
    assert_eq!(limits.rules(), 0);
}

#[test]
fn the_tighter_rule_shows_and_the_first_refusal_stops() {
    let limits = LocalLimits::default();
    let h = HeaderMap::new();
    let rl = limit(
        1,
        vec![rule(10, 60, Vec::new(), 1), rule(2, 60, Vec::new(), 2)],
    );
    let d = limits.check_at(&rl, &client(&h), SEC).unwrap();
    assert_eq!((d.limit, d.remaining), (2, 1));
    limits.check_at(&rl, &client(&h), SEC);
    let d = limits.check_at(&rl, &client(&h), SEC).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.limit, 2);
    let mut headers = HeaderMap::new();
    d.write(&mut headers);
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["retry-after"], "30");
    let g = Decision {
        global: true,
        window: 60,
        ..d
    };
    let mut headers = HeaderMap::new();
    g.write(&mut headers);
    assert_eq!(headers["x-ratelimit-limit"], "2, 2;w=60");
}
