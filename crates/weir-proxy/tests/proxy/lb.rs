//! BackendTrafficPolicy `loadBalancer` over real sockets: consistent hash (header, cookie,
//! source IP) stable across snapshot swaps and moving few keys when an endpoint leaves;
//! least request avoiding a slow endpoint; random spread; slow start ramping a new
//! endpoint; connect errors still falling back to other endpoints after the pick.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_proxy::ProxyConfig;
use weir_snapshot::{
    AppProtocol, BackendPolicy, Endpoint, EndpointZone, HashCookie, HashOn, LbKind, LoadBalancer,
    PreferLocal, RouteAction, Upstream,
};

use crate::support::*;

/// A backend that answers 200 after `delay`, naming itself in `x-backend`.
struct Named {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Named {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Named {
    async fn start(name: &'static str, delay: Duration) -> Named {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let count = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            resp.headers_mut()
                                .insert("x-backend", http::HeaderValue::from_static(name));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Named {
            addr,
            received,
            task,
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

fn policy(kind: LbKind, slow_start: Option<Duration>) -> BackendPolicy {
    BackendPolicy {
        name: "ns/lb".into(),
        id: 21,
        load_balancer: Some(LoadBalancer {
            kind,
            slow_start,
            prefer_local: None,
        }),
        ..BackendPolicy::default()
    }
    .compiled()
}

/// `addrs` with their zones.
fn zoned(addrs: &[(SocketAddr, &str)]) -> Arc<Upstream> {
    let endpoints = addrs.iter().map(|&(addr, _)| Endpoint { addr }).collect();
    let zones = addrs
        .iter()
        .map(|&(_, z)| EndpointZone {
            zone: Some(z.into()),
            for_zones: Arc::new([]),
        })
        .collect();
    Arc::new(Upstream::new("ns/svc:80", AppProtocol::Http1, endpoints).with_zones(zones))
}

/// A snapshot where every path goes to `up` under `policy`.
fn snap(
    generation: u64,
    port: u16,
    up: &Arc<Upstream>,
    policy: &BackendPolicy,
) -> Arc<weir_snapshot::Snapshot> {
    let a = forward_to("ns/r", up);
    let with_policy = Arc::new(RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: a.timeouts,
        policy: Some(Arc::new(policy.clone())),
        ext_auth: None,
        security: None,
        ext_proc: None,
    });
    snapshot(
        generation,
        vec![socket(
            port,
            vec![listener(
                "ns/gw",
                None,
                vec![(None, prefix("/", with_policy))],
            )],
        )],
    )
}

async fn start(up: &Arc<Upstream>, policy: &BackendPolicy) -> (TestProxy, SocketAddr, u16) {
    let port = free_port();
    let proxy = TestProxy::start(config(), snap(1, port, up, policy)).await;
    let addr = proxy.addr(port);
    (proxy, addr, port)
}

async fn swap(proxy: &TestProxy, s: Arc<weir_snapshot::Snapshot>) {
    proxy.swap(s);
    assert!(proxy.proxy.sync_listeners().await.is_empty());
}

/// The backend that answered a GET with these headers.
async fn backend_for(addr: SocketAddr, headers: &[(&str, &str)]) -> Resp {
    let mut req = request("a.example", "/");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send(addr, req.body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp
}

fn header_hash() -> LbKind {
    LbKind::ConsistentHash {
        on: HashOn::Header(http::HeaderName::from_static("x-key")),
        table_size: 65_537,
    }
}

async fn placement(addr: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..100 {
        let key = format!("user-{k}");
        out.push(backend_for(addr, &[("x-key", &key)]).await.backend());
    }
    out
}

#[tokio::test]
async fn consistent_hash_keeps_keys_across_a_swap_and_moves_about_one_nth_when_one_leaves() {
    let names = ["e0", "e1", "e2", "e3"];
    let mut backends = Vec::new();
    for n in names {
        backends.push(Echo::start(n).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let pol = policy(header_hash(), None);
    let (proxy, addr, port) = start(&upstream("svc", &addrs), &pol).await;

    let before = placement(addr).await;
    let mut per: HashMap<&str, usize> = HashMap::new();
    for b in &before {
        *per.entry(b.as_str()).or_default() += 1;
    }
    // Spread over every endpoint (Binomial(100, 1/4): each far above 5).
    for n in names {
        assert!(per.get(n).copied().unwrap_or(0) >= 5, "{per:?}");
    }
    // Asked again: the same endpoint for every key.
    assert_eq!(
        placement(addr).await,
        before,
        "the same key, the same endpoint"
    );

    // A new snapshot with the same endpoints (a new Upstream object): nothing moves.
    swap(&proxy, snap(2, port, &upstream("svc", &addrs), &pol)).await;
    assert_eq!(placement(addr).await, before, "stable across a swap");

    // e3 leaves: its keys move, and few others (Maglev: about 1/N).
    swap(&proxy, snap(3, port, &upstream("svc", &addrs[..3]), &pol)).await;
    let after = placement(addr).await;
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let had_e3 = before.iter().filter(|b| *b == "e3").count();
    assert!(after.iter().all(|a| a != "e3"));
    let others_moved = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| *b != "e3" && b != a)
        .count();
    // 1.5/N of the keys plus a little slack (N = 4).
    assert!(moved <= 38 + 5, "moved {moved} of 100 (e3 had {had_e3})");
    assert!(
        others_moved <= 5,
        "{others_moved} keys of staying endpoints moved"
    );
}

#[tokio::test]
async fn the_cookie_variant_issues_a_cookie_and_sticks_to_it() {
    let mut backends = Vec::new();
    for n in ["c0", "c1", "c2", "c3"] {
        backends.push(Echo::start(n).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let cookie = Arc::new(HashCookie {
        name: "weir-sticky".into(),
        ttl: Some(Duration::from_secs(3600)),
        attributes: vec![("Path".to_string(), "/".to_string())].into(),
    });
    let kind = LbKind::ConsistentHash {
        on: HashOn::Cookie(cookie),
        table_size: 65_537,
    };
    let (_proxy, addr, _) = start(&upstream("svc", &addrs), &policy(kind, None)).await;
    let mut seen_backends = std::collections::HashSet::new();
    for _ in 0..8 {
        let first = backend_for(addr, &[]).await;
        let set = first
            .headers
            .get("set-cookie")
            .expect("a cookie is issued")
            .to_str()
            .unwrap()
            .to_string();
        assert!(set.starts_with("weir-sticky="), "{set}");
        assert!(set.contains("; Max-Age=3600; Path=/"), "{set}");
        let pair = set.split(';').next().unwrap().to_string();
        // With the cookie: always the endpoint the first request went to, no new cookie.
        for _ in 0..10 {
            let again = backend_for(addr, &[("cookie", &format!("other=1; {pair}"))]).await;
            assert_eq!(again.backend(), first.backend(), "{pair}");
            assert!(again.headers.get("set-cookie").is_none());
        }
        seen_backends.insert(first.backend());
    }
    // Different cookies land on different endpoints (8 random cookies on 4 endpoints all on
    // one: (1/4)^7).
    assert!(seen_backends.len() > 1, "{seen_backends:?}");
}

#[tokio::test]
async fn source_ip_hash_sends_one_client_to_one_endpoint() {
    let mut backends = Vec::new();
    for n in ["s0", "s1", "s2", "s3"] {
        backends.push(Echo::start(n).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let kind = LbKind::ConsistentHash {
        on: HashOn::SourceIp,
        table_size: 101,
    };
    let (_proxy, addr, _) = start(&upstream("svc", &addrs), &policy(kind, None)).await;
    let first = backend_for(addr, &[]).await.backend();
    for _ in 0..20 {
        assert_eq!(backend_for(addr, &[]).await.backend(), first);
    }
}

#[tokio::test]
async fn a_hashed_key_whose_endpoint_is_down_falls_back_to_another() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let pol = policy(header_hash(), None);
    let (_proxy, addr, _) = start(&upstream("svc", &[dead, a.addr, b.addr]), &pol).await;
    // About a third of the keys hash to the dead endpoint; all get an answer.
    for k in 0..30 {
        let resp = backend_for(addr, &[("x-key", &format!("k{k}"))]).await;
        assert!(["a", "b"].contains(&resp.backend().as_str()));
    }
    assert_eq!(
        a.received.load(Ordering::SeqCst) + b.received.load(Ordering::SeqCst),
        30
    );
}

#[tokio::test]
async fn least_request_sends_fewer_requests_to_a_slow_endpoint() {
    let slow = Named::start("slow", Duration::from_millis(1000)).await;
    let fast1 = Named::start("fast1", Duration::ZERO).await;
    let fast2 = Named::start("fast2", Duration::ZERO).await;
    let up = upstream("svc", &[slow.addr, fast1.addr, fast2.addr]);
    let (proxy, addr, _) = start(&up, &policy(LbKind::LeastRequest, None)).await;
    // 8 clients, 15 requests each: round robin would give each endpoint 40. The slow one
    // answers after 1 s: however loaded the machine, far slower than the others.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut h1 = H1::connect(addr).await.unwrap();
            for _ in 0..15 {
                let resp = h1
                    .send(request("a.example", "/").body(Full::default()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(resp.status, StatusCode::OK);
            }
        }));
    }
    // The per-endpoint in-flight gauge sees them while they run…
    let in_flight = |p: &TestProxy| p.metric("weir_upstream_endpoint_requests_in_flight", &[]);
    assert_eventually("requests in flight", Duration::from_secs(20), || async {
        let n = in_flight(&proxy);
        if n >= 1.0 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{n} in flight"))
        }
    })
    .await;
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("clients finish")
            .unwrap();
    }
    // …and every count is given back when the response bodies end.
    assert_eventually(
        "every count given back",
        Duration::from_secs(10),
        || async {
            let n = in_flight(&proxy);
            if n == 0.0 {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{n} still in flight"))
            }
        },
    )
    .await;
    let (s, f1, f2) = (slow.received(), fast1.received(), fast2.received());
    assert_eq!(s + f1 + f2, 120);
    // Fewer than either fast endpoint (round robin gives each 40). Not "half": with two
    // draws per pick the slow one is chosen whenever both land on it (1 in 9), and on a
    // loaded machine the fast ones hold requests in flight too (seen: slow 23, fast 44, 53).
    assert!(s < f1.min(f2), "slow {s}, fast {f1} and {f2}");
}

#[tokio::test]
async fn random_spreads_within_binomial_bounds_and_not_in_turn() {
    let mut backends = Vec::new();
    for n in ["r0", "r1", "r2", "r3"] {
        backends.push(Named::start(n, Duration::ZERO).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (_proxy, addr, _) = start(&upstream("svc", &addrs), &policy(LbKind::Random, None)).await;
    let mut h1 = H1::connect(addr).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..400 {
        let resp = h1
            .send(request("a.example", "/").body(Full::default()).unwrap())
            .await
            .unwrap();
        order.push(resp.backend());
    }
    // Binomial(400, 1/4): mean 100, sd ≈ 8.7; ±6 sd never flakes.
    for b in &backends {
        let n = b.received();
        assert!((48..=152).contains(&n), "{n}");
    }
    // Not round robin: in turn, every pick would equal the one 4 before it; at random about
    // a quarter do.
    let same = order.windows(5).filter(|w| w[0] == w[4]).count();
    assert!(same < 200, "{same} of 396 picks repeat the one 4 before");
}

#[tokio::test]
async fn slow_start_gives_a_new_endpoint_less_than_its_share_at_first() {
    let mut backends = Vec::new();
    for n in ["o0", "o1", "o2", "new"] {
        backends.push(Named::start(n, Duration::ZERO).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let window = Duration::from_secs(5);
    let pol = policy(LbKind::RoundRobin, Some(window));
    // Three endpoints from the start (no ramp for them), then a fourth one.
    let (proxy, addr, port) = start(&upstream("svc", &addrs[..3]), &pol).await;
    assert_eq!(backend_for(addr, &[]).await.status, StatusCode::OK);
    swap(&proxy, snap(2, port, &upstream("svc", &addrs), &pol)).await;
    let added = Instant::now();
    let mut h1 = H1::connect(addr).await.unwrap();
    let count = |name: &str, order: &[String]| order.iter().filter(|b| *b == name).count();
    let mut early = Vec::new();
    for _ in 0..100 {
        let resp = h1
            .send(request("a.example", "/").body(Full::default()).unwrap())
            .await
            .unwrap();
        early.push(resp.backend());
    }
    let early_elapsed = added.elapsed();
    let new_early = count("new", &early);
    // Its fair share is 25 of 100; in the first part of the window its weight is 10%–40%
    // of the others' (while those 100 requests take under 2 s).
    if early_elapsed < Duration::from_secs(2) {
        assert!(
            new_early < 15,
            "new endpoint got {new_early} of 100 early on"
        );
    }
    assert!(new_early >= 1, "it gets some traffic at once");
    // After the window: its full share (smooth round robin: exactly in turn).
    tokio::time::sleep(
        (added + window + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    )
    .await;
    let mut late = Vec::new();
    for _ in 0..100 {
        let resp = h1
            .send(request("a.example", "/").body(Full::default()).unwrap())
            .await
            .unwrap();
        late.push(resp.backend());
    }
    let new_late = count("new", &late);
    assert!(
        (20..=30).contains(&new_late),
        "after the window: {new_late} of 100"
    );
}

#[tokio::test]
async fn zone_preference_keeps_requests_local_and_falls_back_when_too_few_are_local() {
    let a1 = Named::start("a1", Duration::ZERO).await;
    let a2 = Named::start("a2", Duration::ZERO).await;
    let b1 = Named::start("b1", Duration::ZERO).await;
    let b2 = Named::start("b2", Duration::ZERO).await;
    let mut pol = policy(LbKind::RoundRobin, None);
    if let Some(lb) = &mut pol.load_balancer {
        lb.prefer_local = Some(PreferLocal {
            min_endpoints: 1,
            force_min_local: Some(2),
        });
    }
    let port = free_port();
    let four = zoned(&[
        (a1.addr, "zone-a"),
        (a2.addr, "zone-a"),
        (b1.addr, "zone-b"),
        (b2.addr, "zone-b"),
    ]);
    let cfg = ProxyConfig {
        zone: Some("zone-a".into()),
        ..config()
    };
    let proxy = TestProxy::start(cfg, snap(1, port, &four, &pol)).await;
    let addr = proxy.addr(port);
    let mut h1 = H1::connect(addr).await.unwrap();
    let mut run = async |n: usize| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..n {
            let resp = h1
                .send(request("a.example", "/").body(Full::default()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status, StatusCode::OK);
            *seen.entry(resp.backend()).or_default() += 1;
        }
        seen
    };
    // Two local endpoints (force's threshold): everything stays in zone-a.
    let seen = run(40).await;
    assert_eq!(
        seen.get("a1").copied().unwrap_or(0) + seen.get("a2").copied().unwrap_or(0),
        40,
        "{seen:?}"
    );

    // One local endpoint left: below force's threshold, zone-a takes what one endpoint of
    // three can carry for one zone of two (2/3), the rest goes to zone-b.
    let three = zoned(&[
        (a1.addr, "zone-a"),
        (b1.addr, "zone-b"),
        (b2.addr, "zone-b"),
    ]);
    swap(&proxy, snap(2, port, &three, &pol)).await;
    let seen = run(300).await;
    let local = seen.get("a1").copied().unwrap_or(0);
    // Binomial(300, 2/3): mean 200, sd ≈ 8.2.
    assert!((150..=250).contains(&local), "{seen:?}");
    assert!(
        seen.get("b1").copied().unwrap_or(0) > 10 && seen.get("b2").copied().unwrap_or(0) > 10,
        "{seen:?}"
    );

    // No local endpoint: all to the other zone.
    let remote = zoned(&[(b1.addr, "zone-b"), (b2.addr, "zone-b")]);
    swap(&proxy, snap(3, port, &remote, &pol)).await;
    let seen = run(20).await;
    assert_eq!(
        seen.get("b1").copied().unwrap_or(0) + seen.get("b2").copied().unwrap_or(0),
        20,
        "{seen:?}"
    );
}

#[tokio::test]
async fn consistent_hash_picks_for_h2c_upstreams_too() {
    let mut backends = Vec::new();
    for n in ["h0", "h1", "h2", "h3"] {
        backends.push(Echo::start(n).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let up = upstream_with("svc", AppProtocol::H2c, &addrs);
    let (_proxy, addr, _) = start(&up, &policy(header_hash(), None)).await;
    let mut first = Vec::new();
    for k in 0..20 {
        let key = format!("k{k}");
        first.push(backend_for(addr, &[("x-key", &key)]).await.backend());
    }
    for (k, want) in first.iter().enumerate() {
        let key = format!("k{k}");
        assert_eq!(&backend_for(addr, &[("x-key", &key)]).await.backend(), want);
    }
    let distinct: std::collections::HashSet<_> = first.iter().collect();
    assert!(distinct.len() > 1, "{first:?}");
}
