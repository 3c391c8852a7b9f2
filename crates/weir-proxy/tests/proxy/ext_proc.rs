//! ExtensionPolicy `extProc` over real sockets: weir-testkit's test processor (a real
//! ext_proc gRPC server) changes the request and response headers, replaces a buffered
//! body, answers a marked request itself; a processor that hangs or does not resolve gives
//! 500, or is skipped under `failOpen`, on the request side and on the response side.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use weir_snapshot::{BackendTarget, BodyMode, ExtProc, ExtProcessor, RouteAction, Timeouts};
use weir_testkit::epp::TestPicker;

use crate::support::*;

fn processor(
    service: BackendTarget,
    request: Option<BodyMode>,
    response: bool,
    fail_open: bool,
) -> ExtProcessor {
    ExtProcessor {
        service,
        request,
        response,
        timeout: Duration::from_millis(300),
        fail_open,
        body_max: 1024,
    }
}

fn at(p: &TestPicker) -> BackendTarget {
    BackendTarget::Upstream(upstream("ns/processor:9002", &[p.addr]))
}

struct Setup {
    proxy: TestProxy,
    port: u16,
    echo: Echo,
}

async fn setup(x: ExtProc) -> Setup {
    let echo = Echo::start("app").await;
    let up = upstream("ns/app:80", &[echo.addr]);
    let plain = forward_to("ns/r", &up);
    let mut action = action_of(&plain);
    action.ext_proc = Some(Arc::new(x));
    let action = Arc::new(action);
    let port = free_port();
    let listener = listener("ns/gw", None, vec![(None, prefix("/", action))]);
    let proxy = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![listener])])).await;
    Setup { proxy, port, echo }
}

fn action_of(a: &RouteAction) -> RouteAction {
    RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: Timeouts::default(),
        policy: None,
        ext_auth: None,
        security: None,
        ext_proc: None,
    }
}

fn policy(processors: Vec<ExtProcessor>) -> ExtProc {
    ExtProc {
        name: "ns/xp".into(),
        deny: None,
        processors,
    }
}

async fn get(s: &Setup, headers: &[(&str, &str)]) -> Resp {
    let mut req = request("app.example", "/x");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(s.proxy.addr(s.port), req.body(Full::default()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_processor_changes_request_and_response_headers_and_can_answer_itself() {
    let p = TestPicker::start_processor().await.unwrap();
    let s = setup(policy(vec![processor(
        at(&p),
        Some(BodyMode::None),
        true,
        false,
    )]))
    .await;
    let resp = get(&s, &[("x-ext-proc-remove", "1"), ("x-mine", "kept")]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    // Request side: set and removed on the way to the backend.
    assert_eq!(
        resp.seen_header("x-ext-proc-request").as_deref(),
        Some("added")
    );
    assert_eq!(resp.seen_header("x-ext-proc-remove"), None);
    assert_eq!(resp.seen_header("x-mine").as_deref(), Some("kept"));
    // Response side: on the stream of the request, with the status it saw.
    assert_eq!(resp.headers["x-ext-proc-response"], "added");
    assert_eq!(resp.headers["x-ext-proc-status"], "200");
    let seen = p.seen();
    assert_eq!(seen.len(), 1, "one stream per request");
    assert_eq!(seen[0].messages, ["request_headers", "response_headers"]);
    assert_eq!(seen[0].header(":path"), Some("/x"));
    // A marked request: the processor's ImmediateResponse, and the backend never sees it.
    let before = s.echo.received.load(Ordering::SeqCst);
    let resp = get(&s, &[("x-ext-proc-deny", "1")]).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.body, "denied by processor");
    assert_eq!(resp.headers["x-ext-proc"], "immediate");
    assert_eq!(s.echo.received.load(Ordering::SeqCst), before);
    // Each exchange is timed, by phase and result.
    let count = |phase: &str, result: &str| {
        s.proxy.exposed(&format!(
            "weir_ext_proc_seconds_count{{phase=\"{phase}\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(count("request", "ok"), Some(1.0));
    assert_eq!(count("request", "immediate"), Some(1.0));
    assert_eq!(count("response", "ok"), Some(1.0));
    assert_eq!(count("request", "error"), None);
}

#[tokio::test]
async fn a_buffered_body_goes_to_the_processor_and_its_replacement_upstream() {
    let p = TestPicker::start_processor().await.unwrap();
    let s = setup(policy(vec![processor(
        at(&p),
        Some(BodyMode::Buffered),
        false,
        false,
    )]))
    .await;
    let req = request("app.example", "/x")
        .method("POST")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let resp = send(s.proxy.addr(s.port), req).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(
        s.echo.bodies.lock().unwrap().as_slice(),
        ["POST /x processed:hello"]
    );
    assert_eq!(resp.seen_header("content-length").as_deref(), Some("15"));
    assert_eq!(p.seen()[0].messages, ["request_headers", "request_body"]);
    assert_eq!(p.seen()[0].body, b"hello");
    // Over the limit: 413, and nothing reaches the backend.
    let req = request("app.example", "/x")
        .method("POST")
        .body(Full::new(Bytes::from(vec![b'a'; 2048])))
        .unwrap();
    let resp = send(s.proxy.addr(s.port), req).await.unwrap();
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.echo.bodies.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_hanging_processor_times_out_to_500_or_is_skipped_under_fail_open() {
    // Request side.
    for fail_open in [false, true] {
        let p = TestPicker::start_processor().await.unwrap();
        p.set_fault(Some("hang"));
        let s = setup(policy(vec![processor(
            at(&p),
            Some(BodyMode::None),
            true,
            fail_open,
        )]))
        .await;
        let started = std::time::Instant::now();
        let resp = get(&s, &[]).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        if fail_open {
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
            assert_eq!(resp.seen_header("x-ext-proc-request"), None);
            assert!(resp.headers.get("x-ext-proc-response").is_none());
        } else {
            assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(s.echo.received.load(Ordering::SeqCst), 0);
        }
        // The timed-out exchange, and (only) under failOpen the pass-over.
        assert_eq!(
            s.proxy
                .exposed("weir_ext_proc_seconds_count{phase=\"request\",result=\"error\"}"),
            Some(1.0)
        );
        assert_eq!(
            s.proxy
                .exposed("weir_ext_proc_fail_open_total{phase=\"request\"}"),
            fail_open.then_some(1.0)
        );
    }
    // Response side only: the stream opens with the response headers, and hangs there.
    for fail_open in [false, true] {
        let p = TestPicker::start_processor().await.unwrap();
        p.set_fault(Some("hang"));
        let s = setup(policy(vec![processor(at(&p), None, true, fail_open)])).await;
        let resp = get(&s, &[]).await;
        assert_eq!(s.echo.received.load(Ordering::SeqCst), 1);
        if fail_open {
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
            assert!(resp.headers.get("x-ext-proc-response").is_none());
        } else {
            assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(p.seen()[0].messages, ["response_headers"]);
        assert_eq!(
            s.proxy
                .exposed("weir_ext_proc_fail_open_total{phase=\"response\"}"),
            fail_open.then_some(1.0)
        );
    }
}

#[tokio::test]
async fn an_unresolved_processor_or_a_refused_policy_answers_500() {
    let unresolved = || BackendTarget::Invalid("Service ns/missing does not exist".into());
    let s = setup(policy(vec![processor(
        unresolved(),
        Some(BodyMode::None),
        false,
        false,
    )]))
    .await;
    assert_eq!(get(&s, &[]).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    let s = setup(policy(vec![processor(
        unresolved(),
        Some(BodyMode::None),
        false,
        true,
    )]))
    .await;
    assert_eq!(get(&s, &[]).await.status, StatusCode::OK);
    let s = setup(ExtProc {
        name: "ns/xp".into(),
        deny: Some("ExtensionPolicy ns/xp is not accepted (UnsupportedValue)".into()),
        processors: Vec::new(),
    })
    .await;
    assert_eq!(get(&s, &[]).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(s.echo.received.load(Ordering::SeqCst), 0);
}
