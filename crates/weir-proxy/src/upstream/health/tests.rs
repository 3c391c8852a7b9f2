use super::*;

fn metrics() -> Metrics {
    Metrics::register(&Registry::new()).unwrap()
}

fn view(n: u16) -> UpstreamView {
    UpstreamView {
        name: "ns/svc:80".into(),
        id: 0,
        slots: (1..=n)
            .map(|port| Slot {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                health: Arc::new(EndpointHealth::new()),
                probe: None,
            })
            .collect(),
    }
}

fn passive(consecutive_5xx: u32, max_ejection_percent: u8) -> PassiveHealth {
    PassiveHealth {
        consecutive_5xx,
        consecutive_gateway: 0,
        consecutive_local_origin: 2,
        split_external_local_origin_errors: false,
        interval: Duration::from_secs(3600),
        base_ejection_time: Duration::from_secs(60),
        max_ejection_percent,
    }
}

#[test]
fn consecutive_5xx_eject_and_a_success_resets_the_count() {
    let (registry, m) = (HealthRegistry::default(), metrics());
    let inner = &*registry.inner;
    let v = view(2);
    let p = passive(3, 50);
    let s = &v.slots[0];
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    inner.record(&m, &v, s, &p, Outcome::Status(503));
    inner.record(&m, &v, s, &p, Outcome::Status(200));
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    assert!(
        s.healthy(inner.now()),
        "a success in between reset the count"
    );
    inner.record(&m, &v, s, &p, Outcome::LocalFailure);
    assert!(!s.healthy(inner.now()), "a connect failure counts as a 5xx");
    assert_eq!(
        m.endpoint_ejections.with_label_values(&["ns/svc:80"]).get(),
        1
    );
    // The ejection lasts baseEjectionTime × 1.
    let until = s.health.ejected_until.load(Ordering::Relaxed);
    let lasts = Duration::from_nanos(until - inner.now());
    assert!(lasts > Duration::from_secs(50) && lasts <= Duration::from_secs(60));
    assert!(v.slots[1].healthy(inner.now()));
}

#[test]
fn split_local_origin_failures_count_on_their_own() {
    let (registry, m) = (HealthRegistry::default(), metrics());
    let inner = &*registry.inner;
    let v = view(2);
    let p = PassiveHealth {
        split_external_local_origin_errors: true,
        ..passive(1, 50)
    };
    let s = &v.slots[0];
    inner.record(&m, &v, s, &p, Outcome::LocalFailure);
    assert!(
        s.healthy(inner.now()),
        "1 of consecutiveLocalOriginFailures 2"
    );
    inner.record(&m, &v, s, &p, Outcome::LocalFailure);
    assert!(!s.healthy(inner.now()));
}

#[test]
fn gateway_errors_count_only_502_to_504() {
    let (registry, m) = (HealthRegistry::default(), metrics());
    let inner = &*registry.inner;
    let v = view(2);
    let p = PassiveHealth {
        consecutive_gateway: 2,
        ..passive(0, 50)
    };
    let s = &v.slots[0];
    inner.record(&m, &v, s, &p, Outcome::Status(502));
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    inner.record(&m, &v, s, &p, Outcome::Status(504));
    assert!(s.healthy(inner.now()), "a 500 broke the run");
    inner.record(&m, &v, s, &p, Outcome::Status(503));
    assert!(!s.healthy(inner.now()));
}

#[test]
fn max_ejection_percent_caps_ejections_but_one_may_always_go() {
    let (registry, m) = (HealthRegistry::default(), metrics());
    let inner = &*registry.inner;
    let v = view(4);
    let p = passive(1, 50);
    for s in v.slots.iter() {
        inner.record(&m, &v, s, &p, Outcome::Status(500));
    }
    assert_eq!(v.healthy(inner.now()), 2, "50% of 4");
    let v = view(4);
    let p = passive(1, 0);
    for s in v.slots.iter() {
        inner.record(&m, &v, s, &p, Outcome::Status(500));
    }
    assert_eq!(v.healthy(inner.now()), 3, "one, even at 0%");
}

#[test]
fn ejections_grow_with_each_ejection_and_are_forgiven_after_the_interval() {
    let (registry, m) = (HealthRegistry::default(), metrics());
    let inner = &*registry.inner;
    let v = view(2);
    let p = passive(1, 50);
    let s = &v.slots[0];
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    // Pretend the first ejection ended just now.
    let now = inner.now();
    s.health.ejected_until.store(now, Ordering::Relaxed);
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    assert_eq!(s.health.ejections.load(Ordering::Relaxed), 2);
    let lasts = s.health.ejected_until.load(Ordering::Relaxed) - inner.now();
    assert!(
        Duration::from_nanos(lasts) > Duration::from_secs(110),
        "2 × 60 s"
    );
    // Back in service for longer than the interval: one ejection is forgiven.
    let p = PassiveHealth {
        interval: Duration::from_millis(1),
        ..p
    };
    std::thread::sleep(Duration::from_millis(20));
    s.health
        .ejected_until
        .store(inner.now() - 1_500_000, Ordering::Relaxed);
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    assert_eq!(
        s.health.ejections.load(Ordering::Relaxed),
        2,
        "2 - 1 forgiven + 1"
    );
    s.health
        .ejected_until
        .store(inner.now() - 10_500_000, Ordering::Relaxed);
    inner.record(&m, &v, s, &p, Outcome::Status(500));
    assert_eq!(
        s.health.ejections.load(Ordering::Relaxed),
        1,
        "all forgiven + 1"
    );
}

#[test]
fn the_tracker_needs_its_thresholds_but_one_pass_at_start() {
    let mut t = Tracker::new(false, 2, 3);
    assert_eq!(t.observe(false), None, "unhealthy at start already");
    assert_eq!(t.observe(true), Some(true), "one pass at start");
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(true), None, "a pass resets the failure run");
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), Some(false));
    assert_eq!(t.observe(true), None, "healthyThreshold 2");
    assert_eq!(t.observe(true), Some(true));
    // Starting from another probe's pass: healthy, and unhealthyThreshold applies.
    let mut t = Tracker::new(true, 2, 2);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), Some(false));
}

#[test]
fn grpc_health_messages_encode_and_decode() {
    let req = grpc_check_request(Some("echo.Echo"));
    assert_eq!(&req[..5], &[0, 0, 0, 0, 11]);
    assert_eq!(&req[5..7], &[0x0a, 9]);
    assert_eq!(&req[7..], b"echo.Echo");
    assert_eq!(&grpc_check_request(None)[..], &[0, 0, 0, 0, 0]);
    let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]);
    assert!(grpc_serving(serving));
    let not_serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 2]);
    assert!(!grpc_serving(not_serving));
    assert!(
        !grpc_serving(Bytes::from_static(&[0, 0, 0, 0, 0])),
        "UNKNOWN"
    );
    assert!(!grpc_serving(Bytes::from_static(&[0, 0, 0, 0, 5, 0x08])));
}
