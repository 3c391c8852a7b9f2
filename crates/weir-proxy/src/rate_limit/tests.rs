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

fn per(requests: u32, unit: u64) -> Sliding {
    Sliding::new(
        Limit {
            requests,
            unit: Duration::from_secs(unit),
        },
        1,
    )
}

#[test]
fn a_window_admits_its_limit_then_slides() {
    let rule = per(3, 3);
    let b = Bucket::default();
    let start = 10 * 3 * SEC; // the start of a window
    let got: Vec<(bool, u32)> = (0..4)
        .map(|_| {
            let d = b.take(&rule, start);
            (d.allowed, d.remaining)
        })
        .collect();
    assert_eq!(got, vec![(true, 2), (true, 1), (true, 0), (false, 0)]);
    let refused = b.take(&rule, start + SEC);
    // This window's count alone is at the limit: nothing passes before the next window.
    assert_eq!((refused.retry_after, refused.reset), (2, 2));
    // At the next window's start the previous one still weighs all 3; told to come back
    // when it weighs less (rounded down to whole requests: at once).
    let d = b.take(&rule, start + 3 * SEC);
    assert_eq!((d.allowed, d.retry_after), (false, 1));
    let d = b.take(&rule, start + 3 * SEC + 1);
    assert!(d.allowed && d.remaining == 0, "{d:?}");
    // Then 2 of the 3 weigh until a third of the window has passed, plus the one admitted.
    let d = b.take(&rule, start + 3 * SEC + 1);
    assert_eq!((d.allowed, d.retry_after), (false, 1));
    assert!(!b.take(&rule, start + 4 * SEC).allowed);
    let d = b.take(&rule, start + 4 * SEC + 1);
    assert!(d.allowed && d.remaining == 0, "{d:?}");
    // After two idle windows: the whole quota.
    let d = b.take(&rule, start + 9 * SEC);
    assert_eq!((d.allowed, d.remaining, d.reset), (true, 2, 3));
}

/// Requests at `per_sec` a second for `secs` seconds from `start`: how many `rule` admits.
fn admitted(rule: &Sliding, start: u64, per_sec: u64, secs: u64) -> usize {
    let b = Bucket::default();
    let step = SEC / per_sec;
    (0..per_sec * secs)
        .filter(|i| b.take(rule, start + i * step).allowed)
        .count()
}

#[test]
fn over_ten_units_at_twice_the_rate_a_key_admits_the_rate_within_five_percent() {
    let rule = per(50, 1);
    // From a window's start (as the e2e test and the global limit's test measure): exactly
    // the rate.
    let aligned = admitted(&rule, 100 * SEC, 100, 10);
    assert!((499..=500).contains(&aligned), "{aligned}");
    // From any point in a window: a new key may use up the first window's quota in what
    // is left of it, at most half a window's quota more over the 10 s: within 5 %.
    for twentieth in 0..20 {
        let start = 100 * SEC + twentieth * SEC / 20;
        let n = admitted(&rule, start, 100, 10);
        assert!(
            (490..=525).contains(&n),
            "{n} from {twentieth}/20 into a window"
        );
    }
    // A token bucket with the same limit admitted 549 of these: its burst on top.
}

#[test]
fn in_any_window_of_one_unit_a_steady_sender_gets_about_the_limit() {
    let rule = per(10, 1);
    let b = Bucket::default();
    let step = SEC / 40; // 4x the limit
    let times: Vec<u64> = (0..400u64)
        .map(|i| 50 * SEC + i * step)
        .filter(|t| b.take(&rule, *t).allowed)
        .collect();
    // After the first window, every sliding window of 1 s holds at most the limit (plus
    // one for the rounding of the previous window's weight).
    let worst = times
        .iter()
        .filter(|t| **t >= 51 * SEC)
        .map(|t| times.iter().filter(|u| **u >= *t && **u < *t + SEC).count())
        .max()
        .unwrap();
    assert!(worst <= 11, "{worst} in one second");
}

#[test]
fn replicas_split_a_limit_rounding_up() {
    assert_eq!(share(100, 1), 100);
    assert_eq!(share(100, 3), 34);
    assert_eq!(share(100, 0), 100);
    assert_eq!(share(1, 3), 1);
    assert_eq!(share(u32::MAX, 2), 2_147_483_648);
    let limits = LocalLimits::new(4);
    let h = HeaderMap::new();
    let rl = limit(1, vec![rule(10, 3600, Vec::new(), 1)]);
    let now = 7200 * SEC;
    let got: Vec<bool> = (0..4)
        .map(|_| limits.check_at(&rl, &client(&h), now).unwrap().allowed)
        .collect();
    assert_eq!(got, vec![true, true, true, false]);
    let d = limits.check_at(&rl, &client(&h), now).unwrap();
    assert_eq!(d.limit, 3, "the headers show this replica's share");
}

#[test]
fn a_new_replica_count_re_divides_the_limit() {
    let limits = LocalLimits::new(4);
    let h = HeaderMap::new();
    let rl = limit(1, vec![rule(10, 3600, Vec::new(), 1)]);
    let now = 7200 * SEC;
    assert_eq!(limits.check_at(&rl, &client(&h), now).unwrap().limit, 3);
    // The same count again keeps the rule's state; another one re-divides.
    assert!(!limits.set_replicas(4));
    assert_eq!(limits.rules(), 1);
    assert!(limits.set_replicas(2));
    let got: Vec<bool> = (0..6)
        .map(|_| limits.check_at(&rl, &client(&h), now).unwrap().allowed)
        .collect();
    assert_eq!(got, vec![true, true, true, true, true, false]);
    assert!(limits.set_replicas(0), "0 counts as 1");
    assert_eq!(limits.check_at(&rl, &client(&h), now).unwrap().limit, 10);
}

#[test]
fn windows_follow_the_wall_clock() {
    let limits = LocalLimits::default();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let now = u128::from(limits.now());
    assert!(now.abs_diff(wall) < u128::from(SEC), "{now} vs {wall}");
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
fn keys_that_count_nothing_are_dropped_first_when_a_shard_is_full() {
    let rule = per(1, 1);
    let d = DistinctBuckets::new();
    // Fill shard 0 with keys that count nothing after two windows.
    for i in 0..PER_SHARD as u64 {
        assert!(d.take(&rule, i, SEC).allowed);
    }
    assert_eq!(d.len(), PER_SHARD);
    // A key that keeps being refused is remembered.
    assert!(!d.take(&rule, 0, SEC).allowed);
    // Still counting: a new key evicts one.
    assert!(d.take(&rule, 1 << 20, SEC + SEC / 2).allowed);
    assert_eq!(d.len(), PER_SHARD);
    // Counting nothing any more (their window and the next have passed): a new key drops
    // them all.
    assert!(d.take(&rule, 2 << 20, 3 * SEC).allowed);
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
    assert_eq!(headers["retry-after"], "59");
    let g = Decision {
        global: true,
        window: 60,
        ..d
    };
    let mut headers = HeaderMap::new();
    g.write(&mut headers);
    assert_eq!(headers["x-ratelimit-limit"], "2, 2;w=60");
}

#[test]
fn header_numbers_match_their_decimal_form() {
    for n in [
        0,
        1,
        9,
        10,
        42,
        99,
        100,
        500,
        999,
        1000,
        12_345,
        u64::from(u32::MAX),
        u64::MAX,
    ] {
        assert_eq!(number_value(n), n.to_string().as_str(), "{n}");
    }
    for (l, w) in [(0, 0), (7, 1), (1000, 60), (u32::MAX, u64::MAX)] {
        assert_eq!(
            global_limit_value(l, w),
            format!("{l}, {l};w={w}").as_str(),
            "{l} {w}"
        );
    }
}

#[test]
fn an_admitted_local_request_carries_the_rules_precomputed_limit() {
    let limits = LocalLimits::new(1);
    let h = HeaderMap::new();
    let rl = limit(1, vec![rule(1_000_000_000, 1, Vec::new(), 1)]);
    let d = limits.check_at(&rl, &client(&h), SEC).unwrap();
    assert!(d.allowed);
    let mut headers = HeaderMap::new();
    d.write(&mut headers);
    assert_eq!(headers["x-ratelimit-limit"], "1000000000");
    assert_eq!(headers["x-ratelimit-remaining"], "999999999");
    assert_eq!(headers["x-ratelimit-reset"], "1");
    assert!(!headers.contains_key("retry-after"));
}

#[test]
fn a_rule_whose_selectors_do_not_hold_reads_no_clock_and_keeps_no_state() {
    let limits = LocalLimits::new(1);
    let h = HeaderMap::new();
    let post_only = vec![ClientSelector {
        methods: vec![(Method::POST, false)],
        ..ClientSelector::default()
    }];
    let rl = limit(1, vec![rule(10, 1, post_only, 1)]);
    let clock = || -> u64 { panic!("the clock was read for a request no rule selects") };
    assert_eq!(limits.check_with(&rl, &client(&h), clock), None);
    assert_eq!(limits.rules(), 0);
}

#[test]
fn an_address_keyed_rule_keys_each_ipv4_address_apart_and_maps_v4_in_v6_to_it() {
    let limits = LocalLimits::default();
    let source = |distinct| ClientSelector {
        source: Some(SourceSelector {
            cidr: Cidr::parse("0.0.0.0/0").unwrap(),
            distinct,
        }),
        ..ClientSelector::default()
    };
    assert!(by_address_only(&rule(1, 1, vec![source(true)], 1)));
    assert!(!by_address_only(&rule(1, 1, vec![source(false)], 1)));
    let mut both = by_header();
    both.push(source(true));
    assert!(!by_address_only(&rule(1, 1, both, 1)));
    // Neighbouring addresses: all keys differ, and spread over the shards.
    let mut keys = std::collections::HashSet::new();
    let mut shards = std::collections::HashSet::new();
    for i in 0..4096u32 {
        let key = limits.address_key(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        assert!(keys.insert(key), "address {i} shares a key");
        shards.insert(key >> 60);
    }
    assert_eq!(shards.len(), SHARDS);
    let v4: IpAddr = "10.1.2.3".parse().unwrap();
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    assert_eq!(limits.address_key(v4), limits.address_key(mapped));
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_ne!(
        limits.address_key(v6),
        limits.address_key("2001:db8::2".parse().unwrap())
    );
    // Through the engine: one address is refused at its limit, the next is not.
    let rl = limit(3, vec![rule(1, 60, vec![source(true)], 1)]);
    let h = HeaderMap::new();
    let mut c = client(&h);
    assert!(limits.check_at(&rl, &c, SEC).unwrap().allowed);
    assert!(!limits.check_at(&rl, &c, SEC).unwrap().allowed);
    c.address = "::ffff:10.0.0.1".parse().unwrap();
    assert!(
        !limits.check_at(&rl, &c, SEC).unwrap().allowed,
        "the same client"
    );
    c.address = "10.0.0.2".parse().unwrap();
    assert!(limits.check_at(&rl, &c, SEC).unwrap().allowed);
}

#[test]
fn the_previous_window_weighs_the_same_in_64_and_128_bits() {
    let exact = |c: u32, l: u64, u: u64| (u128::from(c) * u128::from(l) / u128::from(u)) as u64;
    for (count, left, unit) in [
        (0, SEC, SEC),
        (3, SEC / 3, SEC),
        (u32::MAX, SEC, SEC),
        (1_000_000_000, 999_999_999, SEC),
        (u32::MAX, 365 * 86_400 * SEC, 365 * 86_400 * SEC),
        (7, 86_400 * SEC - 1, 86_400 * SEC),
    ] {
        assert_eq!(
            weigh(count, left, unit),
            exact(count, left, unit),
            "{count} {left}"
        );
    }
}
