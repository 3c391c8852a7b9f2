//! BackendTrafficPolicy `healthCheck` over real sockets: passive ejection and its end,
//! `maxEjectionPercent`, active HTTP / TCP / gRPC probes keeping traffic off a failing
//! endpoint before any request failed on it, the panic threshold, and one prober per
//! endpoint however many routes share it (across snapshot swaps too).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_snapshot::{
    ActiveHealth, BackendPolicy, HealthCheck, PassiveHealth, Probe, RouteAction, Upstream,
};

use crate::support::*;

/// A backend (HTTP/1.1 and h2c) whose traffic answers `status`, whose `/healthz` answers
/// `probe_status`, and whose gRPC health service answers SERVING while `serving`.
struct Node {
    addr: SocketAddr,
    probe_status: Arc<AtomicU16>,
    serving: Arc<AtomicBool>,
    traffic: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body of fixed frames (data, then trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

impl Node {
    async fn start(name: &'static str, status: u16) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let probe_status = Arc::new(AtomicU16::new(200));
        let serving = Arc::new(AtomicBool::new(true));
        let traffic = Arc::new(AtomicUsize::new(0));
        let probes = Arc::new(AtomicUsize::new(0));
        let (st, pst, serving2, traffic2, probes2) = (
            status.clone(),
            probe_status.clone(),
            serving.clone(),
            traffic.clone(),
            probes.clone(),
        );
        let (serving, traffic, probes, node_serving, node_traffic, node_probes) =
            (serving2, traffic2, probes2, serving, traffic, probes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (st, pst, serving, traffic, probes) = (
                    st.clone(),
                    pst.clone(),
                    serving.clone(),
                    traffic.clone(),
                    probes.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let path = req.uri().path().to_owned();
                        let mut frames = VecDeque::new();
                        let status = match path.as_str() {
                            "/healthz" => {
                                probes.fetch_add(1, Ordering::SeqCst);
                                pst.load(Ordering::SeqCst)
                            }
                            "/grpc.health.v1.Health/Check" => {
                                probes.fetch_add(1, Ordering::SeqCst);
                                let code = if serving.load(Ordering::SeqCst) { 1 } else { 2 };
                                frames.push_back(Frame::data(Bytes::from(vec![
                                    0, 0, 0, 0, 2, 0x08, code,
                                ])));
                                let mut trailers = HeaderMap::new();
                                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                                frames.push_back(Frame::trailers(trailers));
                                200
                            }
                            _ => {
                                traffic.fetch_add(1, Ordering::SeqCst);
                                frames.push_back(Frame::data(Bytes::from_static(name.as_bytes())));
                                st.load(Ordering::SeqCst)
                            }
                        };
                        let mut resp = Response::new(Frames(frames));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        if path.starts_with("/grpc.") {
                            resp.headers_mut().insert(
                                "content-type",
                                HeaderValue::from_static("application/grpc"),
                            );
                        }
                        resp.headers_mut()
                            .insert("x-backend", HeaderValue::from_static(name));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Node {
            addr,
            probe_status,
            serving: node_serving,
            traffic: node_traffic,
            probes: node_probes,
            task,
        }
    }

    fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }
}

fn passive(consecutive_5xx: u32, ejection: Duration, max_percent: u8) -> PassiveHealth {
    PassiveHealth {
        consecutive_5xx,
        consecutive_gateway: 0,
        consecutive_local_origin: 5,
        split_external_local_origin_errors: false,
        interval: Duration::from_secs(30),
        base_ejection_time: ejection,
        max_ejection_percent: max_percent,
    }
}

fn active(probe: Probe, unhealthy: u32, healthy: u32) -> Arc<ActiveHealth> {
    Arc::new(ActiveHealth {
        probe,
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        unhealthy_threshold: unhealthy,
        healthy_threshold: healthy,
    })
}

fn http_probe() -> Probe {
    Probe::Http {
        path: "/healthz".into(),
        method: http::Method::GET,
        hostname: None,
        expected_statuses: [200u16].into(),
    }
}

fn policy(id: u64, check: HealthCheck) -> BackendPolicy {
    BackendPolicy {
        name: "ns/health".into(),
        id,
        health_check: Some(Arc::new(check)),
        ..BackendPolicy::default()
    }
    .compiled()
}

fn with_policy(route: &str, up: &Arc<Upstream>, policy: BackendPolicy) -> Arc<RouteAction> {
    let a = forward_to(route, up);
    Arc::new(RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: a.timeouts,
        policy: Some(Arc::new(policy)),
        ext_auth: None,
        security: None,
        ext_proc: None,
    })
}

/// `/p` (and `/q` with `second`) under a policy; `/` without one.
fn snap(
    port: u16,
    up: &Arc<Upstream>,
    p: BackendPolicy,
    second: Option<(&Arc<Upstream>, BackendPolicy)>,
) -> Arc<weir_snapshot::Snapshot> {
    let mut routes = vec![(None, prefix("/p", with_policy("ns/p", up, p)))];
    if let Some((up2, p2)) = second {
        routes.push((None, prefix("/q", with_policy("ns/q", up2, p2))));
    }
    routes.push((None, prefix("/", forward_to("ns/plain", up))));
    snapshot(1, vec![socket(port, vec![listener("ns/gw", None, routes)])])
}

async fn start(up: &Arc<Upstream>, p: BackendPolicy) -> (TestProxy, SocketAddr, u16) {
    let port = free_port();
    let proxy = TestProxy::start(config(), snap(port, up, p, None)).await;
    let addr = proxy.addr(port);
    (proxy, addr, port)
}

fn healthy(proxy: &TestProxy, upstream: &str) -> f64 {
    proxy.metric("weir_endpoint_healthy", &[("upstream", upstream)])
}

async fn wait_healthy(proxy: &TestProxy, upstream: &str, n: f64) {
    assert_eventually(
        "the healthy endpoint count",
        Duration::from_secs(10),
        || async {
            let got = healthy(proxy, upstream);
            anyhow::ensure!(got == n, "{got} healthy, want {n}");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_endpoint_answering_5xx_is_ejected_and_comes_back_after_the_ejection_time() {
    let bad = Node::start("bad", 500).await;
    let good = Node::start("good", 200).await;
    let up = upstream("ns/svc:80", &[bad.addr, good.addr]);
    let check = HealthCheck {
        passive: Some(passive(2, Duration::from_secs(3), 50)),
        ..HealthCheck::default()
    };
    let (proxy, addr, port) = start(&up, policy(1, check.clone())).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get(addr, "a.example", "/p").await.unwrap().status.as_u16());
    }
    // Round robin: the bad endpoint gets its two 5xx, then nothing.
    assert_eq!(bad.traffic(), 2, "{statuses:?}");
    assert_eq!(good.traffic(), 10);
    assert_eq!(
        proxy.metric(
            "weir_endpoint_ejections_total",
            &[("upstream", "ns/svc:80")]
        ),
        1.0
    );
    assert_eq!(healthy(&proxy, "ns/svc:80"), 1.0);
    // A route without a health check is not held back by the ejection.
    get(addr, "a.example", "/").await.unwrap();
    get(addr, "a.example", "/").await.unwrap();
    assert_eq!(
        bad.traffic(),
        3,
        "the route without a policy still reaches it"
    );
    // A swap that keeps the endpoint (a new `Upstream`, another policy) keeps the ejection.
    let up2 = upstream("ns/svc:80", &[bad.addr, good.addr]);
    proxy.swap(snap(port, &up2, policy(9, check), None));
    proxy.proxy.sync_listeners().await;
    for _ in 0..4 {
        assert_eq!(
            get(addr, "a.example", "/p").await.unwrap().backend(),
            "good"
        );
    }
    assert_eq!(bad.traffic(), 3, "still ejected after the swap");
    // After baseEjectionTime, it gets traffic again.
    assert_eventually(
        "the ejected endpoint back",
        Duration::from_secs(15),
        || async {
            get(addr, "a.example", "/p").await?;
            anyhow::ensure!(bad.traffic() > 3, "not back yet");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn max_ejection_percent_is_respected() {
    let nodes = [
        Node::start("a", 500).await,
        Node::start("b", 500).await,
        Node::start("c", 500).await,
        Node::start("d", 500).await,
    ];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let up = upstream("ns/svc:80", &addrs);
    let check = HealthCheck {
        passive: Some(passive(1, Duration::from_secs(60), 50)),
        panic_threshold: 0,
        ..HealthCheck::default()
    };
    let (proxy, addr, _) = start(&up, policy(1, check)).await;
    for _ in 0..20 {
        let resp = get(addr, "a.example", "/p").await.unwrap();
        assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(
        proxy.metric(
            "weir_endpoint_ejections_total",
            &[("upstream", "ns/svc:80")]
        ),
        2.0,
        "50% of 4 endpoints"
    );
    assert_eq!(healthy(&proxy, "ns/svc:80"), 2.0);
    let before: Vec<usize> = nodes.iter().map(Node::traffic).collect();
    for _ in 0..20 {
        get(addr, "a.example", "/p").await.unwrap();
    }
    let serving = nodes
        .iter()
        .zip(before)
        .filter(|(n, b)| n.traffic() > *b)
        .count();
    assert_eq!(serving, 2, "the two left in service take the traffic");
}

#[tokio::test]
async fn an_endpoint_failing_its_http_probe_gets_no_traffic_and_returns_after_healthy_threshold() {
    let good = Node::start("good", 200).await;
    let sick = Node::start("sick", 200).await;
    sick.probe_status.store(503, Ordering::SeqCst);
    let up = upstream("ns/svc:80", &[good.addr, sick.addr]);
    let check = HealthCheck {
        active: Some(active(http_probe(), 1, 3)),
        ..HealthCheck::default()
    };
    let (proxy, addr, _) = start(&up, policy(1, check)).await;
    wait_healthy(&proxy, "ns/svc:80", 1.0).await;
    for _ in 0..10 {
        let resp = get(addr, "a.example", "/p").await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.backend(), "good");
    }
    assert_eq!(sick.traffic(), 0, "no request was ever sent to it");
    assert!(
        proxy.metric(
            "weir_health_probes_total",
            &[("upstream", "ns/svc:80"), ("result", "failure")]
        ) >= 1.0
    );
    // A new endpoint needs one pass; once it has been healthy, failing (unhealthyThreshold
    // 1) takes it out, and it needs healthyThreshold passes to come back.
    sick.probe_status.store(200, Ordering::SeqCst);
    wait_healthy(&proxy, "ns/svc:80", 2.0).await;
    sick.probe_status.store(503, Ordering::SeqCst);
    wait_healthy(&proxy, "ns/svc:80", 1.0).await;
    let traffic = sick.traffic();
    for _ in 0..6 {
        assert_eq!(
            get(addr, "a.example", "/p").await.unwrap().backend(),
            "good"
        );
    }
    assert_eq!(sick.traffic(), traffic);
    let probes_before = sick.probes();
    sick.probe_status.store(200, Ordering::SeqCst);
    wait_healthy(&proxy, "ns/svc:80", 2.0).await;
    assert!(
        sick.probes() >= probes_before + 3,
        "healthyThreshold 3: {} probes since",
        sick.probes() - probes_before
    );
    for _ in 0..4 {
        get(addr, "a.example", "/p").await.unwrap();
    }
    assert!(sick.traffic() >= 1);
}

#[tokio::test]
async fn http_probes_speak_h2c_to_h2c_upstreams() {
    let good = Node::start("good", 200).await;
    let sick = Node::start("sick", 200).await;
    sick.probe_status.store(503, Ordering::SeqCst);
    let up = upstream_with(
        "ns/svc:80",
        weir_snapshot::AppProtocol::H2c,
        &[good.addr, sick.addr],
    );
    let check = HealthCheck {
        active: Some(active(http_probe(), 1, 1)),
        ..HealthCheck::default()
    };
    let (proxy, addr, _) = start(&up, policy(1, check)).await;
    wait_healthy(&proxy, "ns/svc:80", 1.0).await;
    assert!(sick.probes() >= 1);
    for _ in 0..4 {
        assert_eq!(
            get(addr, "a.example", "/p").await.unwrap().backend(),
            "good"
        );
    }
    assert_eq!(sick.traffic(), 0);
}

#[tokio::test]
async fn a_tcp_probe_on_a_closed_port_marks_it_unhealthy() {
    let good = Node::start("good", 200).await;
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let up = upstream("ns/svc:80", &[closed, good.addr]);
    let check = HealthCheck {
        active: Some(active(
            Probe::Tcp {
                send: None,
                receive: None,
            },
            1,
            1,
        )),
        ..HealthCheck::default()
    };
    let (proxy, addr, _) = start(&up, policy(1, check)).await;
    wait_healthy(&proxy, "ns/svc:80", 1.0).await;
    for _ in 0..6 {
        let resp = get(addr, "a.example", "/p").await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_eq!(good.traffic(), 6);
    assert_eq!(
        proxy.metric("weir_upstream_connect_errors_total", &[]),
        0.0,
        "no request tried the closed port"
    );
}

#[tokio::test]
async fn a_tcp_probe_checks_what_the_endpoint_answers() {
    // An HTTP server answers garbage with a 400: a probe expecting it passes, one expecting
    // something else fails.
    let node = Node::start("n", 200).await;
    let up = upstream("ns/svc:80", &[node.addr]);
    let tcp = |receive: &'static [u8]| Probe::Tcp {
        send: Some(Arc::from(&b"hello\r\n\r\n"[..])),
        receive: Some(Arc::from(receive)),
    };
    let check = HealthCheck {
        active: Some(active(tcp(b"HTTP/1.1 400"), 1, 1)),
        ..HealthCheck::default()
    };
    let (proxy, _, _) = start(&up, policy(1, check)).await;
    wait_healthy(&proxy, "ns/svc:80", 1.0).await;
    let check = HealthCheck {
        active: Some(active(tcp(b"SSH-2.0"), 1, 1)),
        ..HealthCheck::default()
    };
    let (proxy, _, _) = start(&up, policy(1, check)).await;
    assert_eventually("a failed probe", Duration::from_secs(10), || async {
        let failed = proxy.metric(
            "weir_health_probes_total",
            &[("upstream", "ns/svc:80"), ("result", "failure")],
        );
        anyhow::ensure!(failed >= 2.0, "{failed} failures");
        Ok(())
    })
    .await;
    assert_eq!(healthy(&proxy, "ns/svc:80"), 0.0);
}

#[tokio::test]
async fn a_grpc_probe_keeps_traffic_off_a_not_serving_endpoint() {
    let serving = Node::start("serving", 200).await;
    let draining = Node::start("draining", 200).await;
    draining.serving.store(false, Ordering::SeqCst);
    let up = upstream("ns/svc:80", &[serving.addr, draining.addr]);
    let check = HealthCheck {
        active: Some(active(Probe::Grpc { service: None }, 1, 1)),
        ..HealthCheck::default()
    };
    let (proxy, addr, _) = start(&up, policy(1, check)).await;
    wait_healthy(&proxy, "ns/svc:80", 1.0).await;
    assert!(draining.probes() >= 1, "the gRPC health service was asked");
    for _ in 0..6 {
        assert_eq!(
            get(addr, "a.example", "/p").await.unwrap().backend(),
            "serving"
        );
    }
    assert_eq!(draining.traffic(), 0);
    draining.serving.store(true, Ordering::SeqCst);
    wait_healthy(&proxy, "ns/svc:80", 2.0).await;
}

#[tokio::test]
async fn below_the_panic_threshold_every_endpoint_gets_traffic() {
    let a = Node::start("a", 200).await;
    let b = Node::start("b", 200).await;
    a.probe_status.store(503, Ordering::SeqCst);
    b.probe_status.store(503, Ordering::SeqCst);
    let up = upstream("ns/svc:80", &[a.addr, b.addr]);
    let probe_failures = |proxy: &TestProxy| {
        proxy.metric(
            "weir_health_probes_total",
            &[("upstream", "ns/svc:80"), ("result", "failure")],
        )
    };
    // panicThreshold 50 (the default): none healthy, so all get traffic.
    let check = HealthCheck {
        active: Some(active(http_probe(), 1, 1)),
        ..HealthCheck::default()
    };
    let (proxy, addr, _) = start(&up, policy(1, check.clone())).await;
    assert_eventually("failed probes", Duration::from_secs(10), || async {
        anyhow::ensure!(probe_failures(&proxy) >= 2.0);
        Ok(())
    })
    .await;
    for _ in 0..4 {
        assert_eq!(
            get(addr, "a.example", "/p").await.unwrap().status,
            StatusCode::OK
        );
    }
    assert_eq!((a.traffic(), b.traffic()), (2, 2));
    drop(proxy);
    // panicThreshold 0: no panic routing, so no healthy endpoint means 503.
    let (proxy, addr, _) = start(
        &up,
        policy(
            2,
            HealthCheck {
                panic_threshold: 0,
                ..check
            },
        ),
    )
    .await;
    assert_eventually("failed probes", Duration::from_secs(10), || async {
        anyhow::ensure!(probe_failures(&proxy) >= 2.0);
        Ok(())
    })
    .await;
    let resp = get(addr, "a.example", "/p").await.unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((a.traffic(), b.traffic()), (2, 2));
}

#[tokio::test]
async fn routes_sharing_a_service_make_one_prober_that_survives_swaps() {
    let node = Node::start("n", 200).await;
    let other = Node::start("o", 200).await;
    let up = upstream("ns/svc:80", &[node.addr, other.addr]);
    // A second translation of the same Service (another rule): its own `Upstream`.
    let up2 = upstream("ns/svc:80", &[node.addr, other.addr]);
    let check = HealthCheck {
        active: Some(active(http_probe(), 1, 1)),
        ..HealthCheck::default()
    };
    let port = free_port();
    let proxy = TestProxy::start(
        config(),
        snap(
            port,
            &up,
            policy(1, check.clone()),
            Some((&up2, policy(2, check.clone()))),
        ),
    )
    .await;
    wait_healthy(&proxy, "ns/svc:80", 2.0).await;
    // Over a window, one prober sends about window / interval probes; two would send twice.
    let window = Duration::from_millis(1000);
    let before = node.probes();
    tokio::time::sleep(window).await;
    let probes = node.probes() - before;
    let one_prober = (window.as_millis() / 50) as usize + 3;
    assert!(
        (2..=one_prober).contains(&probes),
        "{probes} probes in {window:?} at 50ms: more than one prober"
    );
    // A swap that keeps the endpoints keeps the prober and its verdict.
    let up3 = upstream("ns/svc:80", &[node.addr, other.addr]);
    other.probe_status.store(503, Ordering::SeqCst);
    wait_healthy(&proxy, "ns/svc:80", 1.0).await;
    proxy.swap(snap(port, &up3, policy(1, check.clone()), None));
    proxy.proxy.sync_listeners().await;
    assert_eq!(
        healthy(&proxy, "ns/svc:80"),
        1.0,
        "the verdict survived the swap"
    );
    let addr = proxy.addr(port);
    for _ in 0..4 {
        assert_eq!(get(addr, "a.example", "/p").await.unwrap().backend(), "n");
    }
    let before = node.probes();
    tokio::time::sleep(window).await;
    let probes = node.probes() - before;
    assert!(
        (2..=one_prober).contains(&probes),
        "{probes} probes after the swap"
    );
    // No route with a health check any more: the probers stop.
    proxy.swap(snapshot(1, vec![routed(port, &up3)]));
    proxy.proxy.sync_listeners().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = node.probes();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.probes(), stopped, "probing stopped");
}

#[tokio::test]
async fn an_attempt_past_its_per_try_timeout_counts_against_its_endpoint() {
    // An endpoint that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let good = Node::start("good", 200).await;
    let up = upstream("ns/svc:80", &[silent_addr, good.addr]);
    let retry = weir_snapshot::RetryPolicy {
        num_retries: 1,
        triggers: weir_snapshot::RetryTriggers(weir_snapshot::RetryTriggers::RESET),
        status_codes: Arc::from([]),
        per_try_timeout: Some(Duration::from_millis(150)),
        base_interval: Duration::from_millis(1),
        max_interval: Duration::from_millis(2),
        min_backoff: Duration::ZERO,
    };
    let p = BackendPolicy {
        retry: Some(retry),
        ..policy(
            1,
            HealthCheck {
                passive: Some(passive(2, Duration::from_secs(60), 50)),
                ..HealthCheck::default()
            },
        )
    }
    .compiled();
    let (proxy, addr, _) = start(&up, p).await;
    for _ in 0..8 {
        let resp = get(addr, "a.example", "/p").await.unwrap();
        assert_eq!(resp.status, StatusCode::OK, "retried to the good endpoint");
    }
    assert_eq!(
        proxy.metric(
            "weir_endpoint_ejections_total",
            &[("upstream", "ns/svc:80")]
        ),
        1.0
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "two timeouts, then ejected"
    );
    hold.abort();
}

#[tokio::test]
async fn an_edited_probe_keeps_passing_endpoints_in_service() {
    let a = Node::start("a", 200).await;
    let b = Node::start("b", 200).await;
    let up = upstream("ns/svc:80", &[a.addr, b.addr]);
    let check = |unhealthy| HealthCheck {
        active: Some(active(http_probe(), unhealthy, 1)),
        panic_threshold: 0,
        ..HealthCheck::default()
    };
    let (proxy, addr, port) = start(&up, policy(1, check(1))).await;
    wait_healthy(&proxy, "ns/svc:80", 2.0).await;
    // Another spec (a policy edit): new probers, which start from the endpoints' verdict.
    proxy.swap(snap(port, &up, policy(2, check(2)), None));
    proxy.proxy.sync_listeners().await;
    assert_eq!(
        healthy(&proxy, "ns/svc:80"),
        2.0,
        "no endpoint left service"
    );
    for _ in 0..4 {
        assert_eq!(
            get(addr, "a.example", "/p").await.unwrap().status,
            StatusCode::OK
        );
    }
}
