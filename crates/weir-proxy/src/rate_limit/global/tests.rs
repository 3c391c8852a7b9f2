//! The global engine against a real `redis-server`: shared counting, distinct keys,
//! Redis stopped and restarted, auth in the URL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, Method};
use weir_snapshot::rate_limit::Client;
use weir_snapshot::{ClientSelector, HeaderSelector, Limit, RateLimit, RateLimitRule};
use weir_testkit::redis::Redis;

use super::*;

fn limit(requests: u32, unit: u64, distinct: bool) -> RateLimit {
    let selectors = if distinct {
        vec![ClientSelector {
            headers: vec![HeaderSelector::Distinct(HeaderName::from_static("x-user"))],
            ..ClientSelector::default()
        }]
    } else {
        Vec::new()
    };
    RateLimit {
        scope: rand::random(),
        local: Arc::from(Vec::new()),
        global: vec![RateLimitRule {
            selectors,
            limit: Limit {
                requests,
                unit: Duration::from_secs(unit),
            },
            shared: false,
            id: 1,
        }]
        .into(),
    }
}

fn engine(url: &str, timeout_ms: u64) -> GlobalLimits {
    GlobalLimits::new(&GlobalConfig {
        url: url.to_string(),
        timeout: Duration::from_millis(timeout_ms),
        fail_closed: false,
        ca_pem: None,
    })
    .unwrap()
}

fn client(headers: &HeaderMap) -> Client<'_> {
    Client {
        method: &Method::GET,
        path: "/",
        headers,
        address: "10.0.0.1".parse().unwrap(),
    }
}

async fn admitted(e: &GlobalLimits, rl: &RateLimit, h: &HeaderMap) -> bool {
    e.check(rl, &client(h)).await.unwrap().unwrap().allowed
}

#[tokio::test]
async fn two_engines_on_one_redis_admit_the_limit_together() {
    let redis = Redis::start();
    let (a, b) = (engine(&redis.url(), 2000), engine(&redis.url(), 2000));
    let rl = limit(10, 3600, false);
    let h = HeaderMap::new();
    let mut passed = 0;
    for i in 0..30 {
        let e = if i % 2 == 0 { &a } else { &b };
        if admitted(e, &rl, &h).await {
            passed += 1;
        }
    }
    assert_eq!(passed, 10);
    let d = a.check(&rl, &client(&h)).await.unwrap().unwrap();
    assert!(!d.allowed && d.global && d.limit == 10 && d.remaining == 0);
    assert!(d.retry_after >= 1 && d.reset <= 3600, "{d:?}");
}

#[tokio::test]
async fn distinct_values_count_apart_and_remaining_counts_down() {
    let redis = Redis::start();
    let e = engine(&redis.url(), 2000);
    let rl = limit(2, 60, true);
    let mut alice = HeaderMap::new();
    alice.insert("x-user", "alice".parse().unwrap());
    let mut bob = HeaderMap::new();
    bob.insert("x-user", "bob".parse().unwrap());
    let first = e.check(&rl, &client(&alice)).await.unwrap().unwrap();
    assert_eq!((first.allowed, first.remaining), (true, 1));
    assert!(admitted(&e, &rl, &alice).await);
    assert!(!admitted(&e, &rl, &alice).await);
    assert!(admitted(&e, &rl, &bob).await);
    // Not selected: no header, no decision.
    assert!(e
        .check(&rl, &client(&HeaderMap::new()))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn redis_away_is_an_error_within_the_timeout_and_counting_resumes_after_a_restart() {
    let redis = Redis::start();
    let e = engine(&redis.url(), 300);
    let rl = limit(3, 3600, false);
    let h = HeaderMap::new();
    for _ in 0..3 {
        assert!(admitted(&e, &rl, &h).await);
    }
    assert!(!admitted(&e, &rl, &h).await);
    let port = redis.stop();
    let started = Instant::now();
    assert!(e.check(&rl, &client(&h)).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A new Redis (empty) on the same port: the engine reconnects and counts from zero.
    let _redis = Redis::start_on(port, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut resumed = None;
    while Instant::now() < deadline {
        if let Ok(Some(d)) = e.check(&rl, &client(&h)).await {
            resumed = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = resumed.expect("counting resumed");
    assert!(d.allowed && d.remaining == 2, "{d:?}");
}

#[tokio::test]
async fn a_password_in_the_url_is_used() {
    let redis = Redis::start_on(weir_testkit::free_port(), Some("s3cret"));
    let e = engine(&redis.url(), 2000);
    let rl = limit(1, 60, false);
    assert!(admitted(&e, &rl, &HeaderMap::new()).await);
    let wrong = engine(&format!("redis://:nope@127.0.0.1:{}", redis.port), 2000);
    // The greeting's refusal is what the request sees.
    let err = wrong
        .check(&rl, &client(&HeaderMap::new()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redis refused: "), "{err}");
    assert!(GlobalLimits::new(&GlobalConfig {
        url: "http://127.0.0.1:1".into(),
        timeout: Duration::from_millis(10),
        fail_closed: false,
        ca_pem: None,
    })
    .is_err());
}

#[tokio::test]
async fn rediss_counts_over_tls_verified_with_the_given_ca() {
    let dir = std::env::temp_dir().join(format!("weir-redis-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = weir_testkit::certs::Ca::new("redis-ca");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let redis = Redis::start_tls(&dir, &leaf.cert_pem, &leaf.key_pem, &ca.cert_pem);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let with_ca = |pem: &str| {
        GlobalLimits::new(&GlobalConfig {
            url: url.clone(),
            timeout: Duration::from_millis(2000),
            fail_closed: false,
            ca_pem: Some(pem.as_bytes().to_vec()),
        })
        .unwrap()
    };
    let rl = limit(2, 60, false);
    let h = HeaderMap::new();
    let e = with_ca(&ca.cert_pem);
    assert!(admitted(&e, &rl, &h).await);
    assert!(admitted(&e, &rl, &h).await);
    assert!(!admitted(&e, &rl, &h).await, "counted in the TLS Redis");
    // Another CA's certificate, or the public roots: the server is not trusted.
    let other = weir_testkit::certs::Ca::new("other");
    assert!(with_ca(&other.cert_pem)
        .check(&rl, &client(&h))
        .await
        .is_err());
    assert!(engine(&url, 2000).check(&rl, &client(&h)).await.is_err());
    // Plain redis:// to a TLS port gets no answer either.
    let plain = engine(&format!("redis://127.0.0.1:{}", redis.port), 500);
    assert!(plain.check(&rl, &client(&h)).await.is_err());
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The key of one rule for these parts, as `check` builds it.
fn key_of(parts: &[&[u8]]) -> String {
    let mut key = Vec::new();
    let mut k = KeyBuilder::new(&mut key, 0xab, 7);
    for p in parts {
        k.part(p);
    }
    k.finish();
    String::from_utf8(key).unwrap()
}

#[test]
fn short_safe_values_and_addresses_are_in_the_key_as_is() {
    assert_eq!(key_of(&[]), "weir:rl:{00000000000000ab:0000000000000007}:");
    assert_eq!(
        key_of(&[b"alice", b"\0", &[10, 0, 0, 1]]),
        "weir:rl:{00000000000000ab:0000000000000007}:alice,/%0a000001,"
    );
    // An empty value, and a value of 64 safe bytes, are written as is.
    let long_safe = "a".repeat(64);
    assert_eq!(
        key_of(&[b"", long_safe.as_bytes(), b"\0"]),
        format!("weir:rl:{{00000000000000ab:0000000000000007}}:,{long_safe},/")
    );
}

#[test]
fn long_or_odd_values_are_hashed_with_a_fixed_hash() {
    let long = "a".repeat(65);
    let k = key_of(&[long.as_bytes(), b"\0"]);
    // XXH3-128 is a specified function: the same key in every process and version.
    assert_eq!(
        k,
        format!(
            "weir:rl:{{00000000000000ab:0000000000000007}}:#{:032x},/",
            xxhash_rust::xxh3::xxh3_128(long.as_bytes())
        )
    );
    assert_eq!(k, key_of(&[long.as_bytes(), b"\0"]));
    // A published test vector of XXH3-128 (empty input, seed 0): the key does not change
    // with the crate's version.
    assert_eq!(
        xxhash_rust::xxh3::xxh3_128(b""),
        0x99aa06d3014798d86001c324468d497f
    );
    // Odd bytes up to 16 are hex; past that, hashed.
    assert!(key_of(&[b"a b"]).ends_with(":%612062,"));
    assert!(key_of(&[b"with space and more!"]).contains(":#"));
}

#[test]
fn different_parts_never_share_a_key_and_the_key_is_bounded() {
    let cases: &[&[&[u8]]] = &[
        &[b"a,b"],
        &[b"a", b"b"],
        &[b"ab"],
        &[b"a", b"\0", b"b"],
        &[b"a/"],
        &[b"%61"],
        &[b"a"],
        &[b"a", b"\0"],
        &[b"\0", b"a"],
        &[&[97, 98, 99, 100]],
        &[&[10, 0, 0, 1]],
        &[&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 0, 0, 1]],
    ];
    let keys: std::collections::HashSet<String> = cases.iter().map(|c| key_of(c)).collect();
    assert_eq!(keys.len(), cases.len());
    // A client sending 100 values of a Distinct header: the key stays short.
    let many: Vec<&[u8]> = std::iter::repeat_n(&b"value"[..], 100).collect();
    let k = key_of(&many);
    assert!(k.len() <= 44 + 33, "{k}");
    assert!(k.contains(":!"), "{k}");
    // 101 values: another key.
    let more: Vec<&[u8]> = std::iter::repeat_n(&b"value"[..], 101).collect();
    assert_ne!(k, key_of(&more));
}

/// `connected_clients` of `INFO clients` (the probe's own connection included).
fn connected_clients(redis: &Redis) -> usize {
    let info = redis.command("INFO clients");
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_a_connection_counted_once_within_the_pool_bound() {
    let redis = Redis::start();
    let e = Arc::new(engine(&redis.url(), 5000));
    let rl = Arc::new(limit(300, 3600, false));
    // 400 checks at once: they share at most POOL_SIZE connections, wait for one when all
    // are busy (none fails), and Redis counts exactly the limit.
    let tasks: Vec<_> = (0..400)
        .map(|_| {
            let (e, rl) = (e.clone(), rl.clone());
            tokio::spawn(async move {
                let h = HeaderMap::new();
                e.check(&rl, &client(&h)).await.map(|d| d.unwrap().allowed)
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap().expect("every check answered") {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 300);
    let open = connected_clients(&redis) - 1;
    assert!((1..=pool::POOL_SIZE).contains(&open), "{open} connections");
    // Idle again, one request at a time reuses a connection: no new one is made.
    let h = HeaderMap::new();
    for _ in 0..20 {
        e.check(&rl, &client(&h)).await.unwrap();
    }
    assert_eq!(connected_clients(&redis) - 1, open);
}

#[tokio::test]
async fn the_db_in_the_url_is_selected_and_a_flushed_script_is_sent_again() {
    let redis = Redis::start();
    let e = engine(&format!("{}/3", redis.url()), 2000);
    let rl = limit(5, 60, false);
    let h = HeaderMap::new();
    assert!(admitted(&e, &rl, &h).await);
    assert_eq!(redis.command("DBSIZE"), ":0\r\n", "nothing in db 0");
    assert_eq!(
        redis.command("INFO keyspace").matches("db3:keys=1").count(),
        1
    );
    // Redis forgets the script (as a restarted one has not got it): EVALSHA gets NOSCRIPT,
    // the engine sends the script whole, on the same connection, and goes on counting.
    assert_eq!(redis.command("SCRIPT FLUSH"), "+OK\r\n");
    let d = e.check(&rl, &client(&h)).await.unwrap().unwrap();
    assert!(d.allowed && d.remaining == 3, "{d:?}");
    let d = e.check(&rl, &client(&h)).await.unwrap().unwrap();
    assert!(d.allowed && d.remaining == 2, "{d:?}");
}

#[tokio::test]
async fn a_server_that_answers_garbage_is_an_error_not_a_hang() {
    // A "Redis" that answers every command with a bulk string (not a shape the script
    // returns): an error within the timeout, and the connection is dropped.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(b"$3\r\nabc\r\n").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let e = engine(&format!("redis://127.0.0.1:{port}"), 500);
    let rl = limit(5, 60, false);
    let h = HeaderMap::new();
    for _ in 0..3 {
        let started = Instant::now();
        let err = e.check(&rl, &client(&h)).await.unwrap_err();
        assert!(matches!(err, RedisFailure::Broken(_)), "{err}");
        assert!(started.elapsed() < Duration::from_millis(400));
    }
    // Each broken connection was dropped, not reused: one new connection per check.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}
