//! InferencePool backends over real sockets: a real gRPC endpoint picker (weir-testkit's
//! test picker, an ext_proc server like the conformance suite's) chooses the model server;
//! the request goes to exactly that endpoint (or the fallbacks in order), its body intact;
//! the picker's faults get their documented answers and nothing is ever sent to an address
//! outside the pool.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use weir_snapshot::{AppProtocol, Endpoint, InferencePool, Picker, PickerState, Upstream};
use weir_testkit::epp::TestPicker;

use crate::support::*;

fn pool(members: &[SocketAddr], picker: PickerState) -> Arc<Upstream> {
    let endpoints = members.iter().map(|&addr| Endpoint { addr }).collect();
    Arc::new(
        Upstream::new("ns/pool", AppProtocol::Http1, endpoints).with_inference(InferencePool {
            namespace: "ns".into(),
            name: "pool".into(),
            picker,
        }),
    )
}

fn picker_at(addr: SocketAddr, fail_open: bool) -> PickerState {
    PickerState::Ready(Picker {
        service: "ns/epp:9002".into(),
        endpoints: vec![addr].into(),
        fail_open,
        timeout: Duration::from_millis(500),
        max_body: 64 * 1024,
    })
}

struct Setup {
    proxy: TestProxy,
    port: u16,
    models: Vec<Echo>,
    picker: TestPicker,
}

async fn setup(fail_open: bool) -> Setup {
    let mut models = Vec::new();
    for name in ["model-a", "model-b", "model-c"] {
        models.push(Echo::start(name).await);
    }
    let addrs: Vec<SocketAddr> = models.iter().map(|m| m.addr).collect();
    let picker = TestPicker::start(addrs.clone()).await.unwrap();
    let port = free_port();
    let up = pool(&addrs, picker_at(picker.addr, fail_open));
    let proxy = TestProxy::start(config(), snapshot(1, vec![routed(port, &up)])).await;
    Setup {
        proxy,
        port,
        models,
        picker,
    }
}

fn received(models: &[Echo]) -> Vec<usize> {
    models
        .iter()
        .map(|m| m.received.load(Ordering::SeqCst))
        .collect()
}

async fn get_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Resp {
    let mut req = request("pool.example", "/v1/completions");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(addr, req.body(Full::default()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn each_request_goes_to_exactly_the_endpoint_the_picker_chose() {
    let s = setup(false).await;
    let addr = s.proxy.addr(s.port);
    let b = s.models[1].addr.to_string();
    for _ in 0..5 {
        let resp = get_with(addr, &[("test-epp-endpoint-selection", &b)]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        assert_eq!(resp.backend(), "model-b");
        // The picker's request header mutation reached the model server.
        assert_eq!(
            resp.seen_header("x-gateway-destination-endpoint"),
            Some(b.clone())
        );
        // The response-headers step: the served endpoint went back to the picker, and its
        // mutation came back onto the response.
        assert_eq!(
            resp.headers["x-conformance-test-served-endpoint"]
                .to_str()
                .unwrap(),
            b
        );
        assert_eq!(resp.headers["x-went-into-resp-headers"], "true");
    }
    assert_eq!(received(&s.models), [0, 5, 0]);
    // Without a selection: round robin over all three.
    for _ in 0..6 {
        assert_eq!(get_with(addr, &[]).await.status, StatusCode::OK);
    }
    assert_eq!(received(&s.models), [2, 7, 2]);
    let seen = s.picker.seen();
    assert_eq!(seen.len(), 11, "one stream per request");
    assert_eq!(seen[0].header(":path"), Some("/v1/completions"));
    assert_eq!(seen[0].served.as_deref(), Some(b.as_str()));
    assert_eq!(
        seen[0].messages,
        ["request_headers", "response_headers"],
        "no body, no body message"
    );
}

#[tokio::test]
async fn the_body_reaches_the_picker_and_the_model_server_intact() {
    let s = setup(false).await;
    let addr = s.proxy.addr(s.port);
    let body = r#"{"model":"llama-3","prompt":"hello","max_tokens":8}"#;
    let c = s.models[2].addr.to_string();
    let req = request("pool.example", "/v1/completions")
        .method("POST")
        .header("content-type", "application/json")
        .header("test-epp-endpoint-selection", &c)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(resp.backend(), "model-c");
    assert_eq!(
        s.models[2].bodies.lock().unwrap().as_slice(),
        [format!("POST /v1/completions {body}")]
    );
    let seen = s.picker.seen();
    assert_eq!(String::from_utf8_lossy(&seen[0].body), body);
    assert_eq!(
        seen[0].messages,
        ["request_headers", "request_body", "response_headers"]
    );
    // The picker answering the body before the headers changes nothing.
    let req = request("pool.example", "/v1/completions")
        .method("POST")
        .header("test-epp-endpoint-selection", &c)
        .header("x-test-epp-fault", "wrong-order")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(resp.backend(), "model-c");
    assert_eq!(s.models[2].bodies.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn fallbacks_are_tried_in_order_when_connecting_fails() {
    // A pool member nobody listens on, listed first.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut models = Vec::new();
    for name in ["model-a", "model-b"] {
        models.push(Echo::start(name).await);
    }
    let members = vec![dead, models[0].addr, models[1].addr];
    let picker = TestPicker::start(members.clone()).await.unwrap();
    let port = free_port();
    let up = pool(&members, picker_at(picker.addr, false));
    let proxy = TestProxy::start(config(), snapshot(1, vec![routed(port, &up)])).await;
    let list = format!("{dead},{}", models[1].addr);
    let resp = get_with(proxy.addr(port), &[("x-test-epp-destination", &list)]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(resp.backend(), "model-b");
    assert_eq!(received(&models), [0, 1]);
    assert_eq!(
        picker.seen()[0].served.as_deref(),
        Some(models[1].addr.to_string().as_str()),
        "the endpoint that served is reported, not the first choice"
    );
}

#[tokio::test]
async fn addresses_outside_the_pool_or_malformed_are_refused_without_connecting() {
    let s = setup(false).await;
    let addr = s.proxy.addr(s.port);
    // A live server that is not a pool member.
    let outsider = Echo::start("outsider").await;
    for destination in [
        outsider.addr.to_string(),
        format!("{},{}", s.models[0].addr, outsider.addr),
        "not-an-address".to_string(),
        "127.0.0.1".to_string(),
        String::new(),
    ] {
        let resp = get_with(addr, &[("x-test-epp-destination", &destination)]).await;
        assert_eq!(
            resp.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{destination:?}"
        );
    }
    assert_eq!(outsider.received.load(Ordering::SeqCst), 0);
    assert_eq!(outsider.connections.load(Ordering::SeqCst), 0);
    assert_eq!(received(&s.models), [0, 0, 0]);
}

#[tokio::test]
async fn an_immediate_response_is_answered_as_is() {
    let s = setup(true).await;
    let resp = get_with(
        s.proxy.addr(s.port),
        &[("x-test-epp-fault", "immediate-429")],
    )
    .await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.body, "slow down");
    assert_eq!(resp.headers["x-test-epp"], "immediate");
    assert_eq!(received(&s.models), [0, 0, 0]);
}

#[tokio::test]
async fn picker_failures_fail_closed_with_503() {
    let s = setup(false).await;
    let addr = s.proxy.addr(s.port);
    for fault in ["error", "hang"] {
        let started = std::time::Instant::now();
        let resp = get_with(addr, &[("x-test-epp-fault", fault)]).await;
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{fault}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{fault}: bounded by the timeout"
        );
    }
    assert_eq!(received(&s.models), [0, 0, 0]);
    // A picker nobody listens on.
    let port = free_port();
    let gone: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let members: Vec<SocketAddr> = s.models.iter().map(|m| m.addr).collect();
    let up = pool(&members, picker_at(gone, false));
    s.proxy.swap(snapshot(2, vec![routed(port, &up)]));
    s.proxy.proxy.sync_listeners().await;
    let resp = get_with(s.proxy.addr(port), &[]).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(received(&s.models), [0, 0, 0]);
}

#[tokio::test]
async fn picker_failures_fail_open_to_a_pool_endpoint() {
    let s = setup(true).await;
    let addr = s.proxy.addr(s.port);
    for fault in ["error", "hang"] {
        let resp = get_with(addr, &[("x-test-epp-fault", fault)]).await;
        assert_eq!(resp.status, StatusCode::OK, "{fault}: {}", resp.body);
        assert!(resp.backend().starts_with("model-"), "{fault}");
    }
    // Picker down.
    let port = free_port();
    let gone: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let members: Vec<SocketAddr> = s.models.iter().map(|m| m.addr).collect();
    let up = pool(&members, picker_at(gone, true));
    s.proxy.swap(snapshot(2, vec![routed(port, &up)]));
    s.proxy.proxy.sync_listeners().await;
    let resp = send(
        s.proxy.addr(port),
        request("pool.example", "/x")
            .method("POST")
            .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(received(&s.models).iter().sum::<usize>(), 3);
    assert_eq!(
        s.proxy.metric("weir_endpoint_picker_fail_open_total", &[]),
        3.0
    );
}

#[tokio::test]
async fn an_unresolved_picker_answers_500_and_a_body_over_the_limit_413() {
    let model = Echo::start("model-a").await;
    let port = free_port();
    let up = pool(
        &[model.addr],
        PickerState::Unresolved("Service ns/epp does not exist".into()),
    );
    let proxy = TestProxy::start(config(), snapshot(1, vec![routed(port, &up)])).await;
    let resp = get_with(proxy.addr(port), &[]).await;
    assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
    let picker = TestPicker::start(vec![model.addr]).await.unwrap();
    let port2 = free_port();
    let up = pool(&[model.addr], picker_at(picker.addr, true));
    proxy.swap(snapshot(2, vec![routed(port2, &up)]));
    proxy.proxy.sync_listeners().await;
    let big = vec![b'x'; 64 * 1024 + 1];
    let resp = send(
        proxy.addr(port2),
        request("pool.example", "/x")
            .method("POST")
            .body(Full::new(Bytes::from(big)))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(model.received.load(Ordering::SeqCst), 0);
    assert_eq!(picker.streams(), 0);
}

/// A TCP relay to `to` whose connections can be cut, as a picker restart or a network
/// fault would.
struct Relay {
    addr: SocketAddr,
    conns: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, a) = (conns.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                c.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            addr,
            conns,
            accepted,
            task,
        }
    }

    /// Closes every relayed connection (both sides see EOF / reset).
    fn cut(&self) {
        self.conns.lock().unwrap().abort_all();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_cut_picker_connection_is_made_again() {
    let s = setup(false).await;
    let relay = Relay::start(s.picker.addr).await;
    let port = free_port();
    let addrs: Vec<SocketAddr> = s.models.iter().map(|m| m.addr).collect();
    let up = pool(&addrs, picker_at(relay.addr, false));
    s.proxy.swap(snapshot(2, vec![routed(port, &up)]));
    s.proxy.proxy.sync_listeners().await;
    let addr = s.proxy.addr(port);
    // Every request on one connection to the picker.
    for _ in 0..3 {
        assert_eq!(get_with(addr, &[]).await.status, StatusCode::OK);
    }
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 1);
    relay.cut();
    // The connection is gone: the next requests connect again (a request racing the
    // close may fail, as FailClose says; never more than that one).
    let mut failed = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = get_with(addr, &[]).await.status;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        failed += 1;
        assert!(failed <= 1 && std::time::Instant::now() < deadline);
    }
    for _ in 0..3 {
        assert_eq!(get_with(addr, &[]).await.status, StatusCode::OK);
    }
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 2);
}
