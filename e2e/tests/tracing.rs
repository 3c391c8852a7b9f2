//! OpenTelemetry tracing as a collector and a backend see it: weir with `--otlp-endpoint`
//! pointing at the test OTLP receiver (`weir_testkit::otlp`), the echo backend reporting the
//! `traceparent` it got, and the spans and their parent ids checked against both.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Duration;

use serde_json::Value;
use weir_e2e::{wait_ready, WAIT};
use weir_testkit::client::{http1, Reply, Req};
use weir_testkit::otlp::{OtlpReceiver, ReceivedSpan, Transport};
use weir_testkit::process::{echo, weir, Echo, Weir};

const HOST: &str = "demo.ingress.top";

/// The quickstart's HTTP listener and demo route to one echo backend, with `extra` flags.
async fn start(extra: &[&str]) -> (tempfile::TempDir, Echo, Weir) {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let mut args = vec!["--log-level", "info"];
    args.extend_from_slice(extra);
    let weir = weir(dir.path(), &[80], &args);
    wait_ready(&weir).await;
    (dir, backend, weir)
}

/// A GET through weir to the echo backend with `headers`; the reply must be the backend's.
async fn get(weir: &Weir, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Req::get(HOST, path);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let reply = http1(weir.listener(80), &req).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
}

/// A request header as the echo backend received it.
fn backend_header(reply: &Reply, name: &str) -> Option<String> {
    reply.json()["headers"][name][0]
        .as_str()
        .map(str::to_string)
}

/// `traceparent` = version-traceid-parentid-flags.
fn parse_traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00", "traceparent {value:?}");
    assert_eq!(parts[1].len(), 32, "traceparent {value:?}");
    assert_eq!(parts[2].len(), 16, "traceparent {value:?}");
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

/// Wait for the span of trace `trace_id` to be exported.
async fn span_of(receiver: &OtlpReceiver, trace_id: &str) -> ReceivedSpan {
    weir_testkit::assert_eventually("the exported span", WAIT, || async {
        let rejected = receiver.rejected();
        assert!(rejected.is_empty(), "malformed exports: {rejected:?}");
        let spans = receiver.spans();
        match spans.iter().find(|s| s.trace_id == trace_id) {
            Some(span) => Ok(span.clone()),
            None => Err(format!("no span of trace {trace_id} among {spans:?}")),
        }
    })
    .await
}

/// The access log lines on stdout so far.
fn access_log(weir: &Weir) -> Vec<Value> {
    weir.proc
        .stdout
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn grpc_export_spans_are_children_of_the_client_and_parents_of_the_backend() {
    let receiver = OtlpReceiver::start().await;
    let url = receiver.url();
    let (_dir, backend, weir) = start(&["--otlp-endpoint", &url]).await;

    // 1. The client sends a sampled traceparent and a tracestate.
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = get(
        &weir,
        "/get/child?token=secret",
        &[
            ("traceparent", &client_parent),
            ("tracestate", "vendor=abc"),
            ("user-agent", "trace-test/1"),
        ],
    )
    .await;
    let seen = backend_header(&reply, "Traceparent").expect("the backend got a traceparent");
    let (trace_id, parent_id, flags) = parse_traceparent(&seen);
    assert_eq!(trace_id, CLIENT_TRACE, "same trace as the client's");
    assert_ne!(
        parent_id, CLIENT_SPAN,
        "the backend's parent is weir's span"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        backend_header(&reply, "Tracestate").as_deref(),
        Some("vendor=abc")
    );

    let span = span_of(&receiver, CLIENT_TRACE).await;
    assert_eq!(span.transport, Transport::Grpc);
    assert_eq!(
        span.parent_span_id, CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(
        span.span_id, parent_id,
        "the span the backend was told about"
    );
    assert_eq!(span.trace_state, "vendor=abc");
    assert_eq!(span.name, "GET default/demo-route");
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(span.status_code, 0, "unset for a 200");
    assert_eq!(span.service.as_deref(), Some("weir"));
    assert!(span.end_unix_nano >= span.start_unix_nano);
    let expect = [
        ("http.request.method", "GET"),
        ("url.path", "/get/child"),
        ("url.scheme", "http"),
        ("server.address", HOST),
        ("http.response.status_code", "200"),
        ("user_agent.original", "trace-test/1"),
        ("client.address", "127.0.0.1"),
        ("network.peer.address", "127.0.0.1"),
        ("weir.gateway", "default/weir"),
        ("weir.route", "default/demo-route"),
    ];
    for (key, value) in expect {
        assert_eq!(
            span.attr(key),
            Some(value),
            "{key} in {:?}",
            span.attributes
        );
    }
    let upstream = backend.addr.to_string();
    assert_eq!(span.attr("weir.upstream"), Some(upstream.as_str()));
    assert!(
        !span.attributes.values().any(|v| v.contains("secret")),
        "no query string in the span: {:?}",
        span.attributes
    );

    // 2. No traceparent: a new trace, rooted at weir's span.
    let reply = get(&weir, "/get/root", &[]).await;
    let seen = backend_header(&reply, "Traceparent").expect("the backend got a traceparent");
    let (root_trace, root_span_id, flags) = parse_traceparent(&seen);
    assert_ne!(root_trace, CLIENT_TRACE);
    assert_eq!(flags, "01", "--trace-sample defaults to 1");
    let root = span_of(&receiver, &root_trace).await;
    assert_eq!(root.parent_span_id, "", "a root span");
    assert_eq!(root.span_id, root_span_id);
    assert_eq!(root.attr("url.path"), Some("/get/root"));

    // 3. The client's trace is not sampled (flags 00): propagated, not exported. A sampled
    // request after it shows the export has caught up.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let reply = get(
        &weir,
        "/get/unsampled",
        &[(
            "traceparent",
            &format!("00-{unsampled}-b7ad6b7169203331-00"),
        )],
    )
    .await;
    let (trace_id, parent_id, flags) =
        parse_traceparent(&backend_header(&reply, "Traceparent").unwrap());
    assert_eq!((trace_id.as_str(), flags.as_str()), (unsampled, "00"));
    assert_ne!(parent_id, "b7ad6b7169203331");
    let after = "11111111111111111111111111111111";
    get(
        &weir,
        "/get/after",
        &[("traceparent", &format!("00-{after}-2222222222222222-01"))],
    )
    .await;
    span_of(&receiver, after).await;
    assert!(
        receiver.spans().iter().all(|s| s.trace_id != unsampled),
        "an unsampled trace was exported: {:?}",
        receiver.spans()
    );

    // No route: the span is named by the method alone, and the 404 is not an error.
    let no_route = "33333333333333333333333333333333";
    let reply = http1(
        weir.listener(80),
        &Req::get("nowhere.example", "/x")
            .header("traceparent", &format!("00-{no_route}-4444444444444444-01")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 404);
    let span = span_of(&receiver, no_route).await;
    assert_eq!(span.name, "GET");
    assert_eq!(span.attr("http.response.status_code"), Some("404"));
    assert_eq!(span.attr("weir.route"), None);
    assert_eq!(
        span.status_code, 0,
        "a 4xx is the client's error, not the server's"
    );

    // The access log names the trace.
    let log = access_log(&weir);
    let line = log
        .iter()
        .find(|l| l["path"] == "/get/child")
        .unwrap_or_else(|| panic!("no access log line for /get/child: {log:?}"));
    assert_eq!(line["trace_id"], CLIENT_TRACE);

    // The backend is gone: a 5xx span has status Error.
    let mut backend = backend;
    backend.proc.terminate(Duration::from_secs(5));
    let failed = "55555555555555555555555555555555";
    let reply = http1(
        weir.listener(80),
        &Req::get(HOST, "/get/down")
            .header("traceparent", &format!("00-{failed}-6666666666666666-01")),
    )
    .await
    .unwrap();
    assert!(reply.status.is_server_error(), "{}", reply.status);
    let span = span_of(&receiver, failed).await;
    assert_eq!(span.status_code, 2, "Error");
    let status = reply.status.as_u16().to_string();
    assert_eq!(
        span.attr("http.response.status_code"),
        Some(status.as_str())
    );
    assert_eq!(span.attr("error.type"), Some(status.as_str()));
    assert_eq!(span.name, "GET default/demo-route");
}

#[tokio::test]
async fn http_export_posts_protobuf_to_v1_traces() {
    let receiver = OtlpReceiver::start().await;
    let url = receiver.url();
    let (_dir, _backend, weir) = start(&["--otlp-endpoint", &url, "--otlp-protocol", "http"]).await;
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = get(&weir, "/get/http", &[("traceparent", &client_parent)]).await;
    let (_, parent_id, _) = parse_traceparent(&backend_header(&reply, "Traceparent").unwrap());
    let span = span_of(&receiver, CLIENT_TRACE).await;
    assert_eq!(span.transport, Transport::Http);
    assert_eq!(span.parent_span_id, CLIENT_SPAN);
    assert_eq!(span.span_id, parent_id);
    assert_eq!(span.name, "GET default/demo-route");
}

#[tokio::test]
async fn trace_sample_zero_exports_no_new_trace_but_follows_a_sampled_parent() {
    let receiver = OtlpReceiver::start().await;
    let url = receiver.url();
    let (_dir, _backend, weir) = start(&["--otlp-endpoint", &url, "--trace-sample", "0"]).await;
    let mut roots = Vec::new();
    for i in 0..5 {
        let reply = get(&weir, &format!("/get/root-{i}"), &[]).await;
        let (trace_id, _, flags) =
            parse_traceparent(&backend_header(&reply, "Traceparent").unwrap());
        assert_eq!(flags, "00", "not sampled, and the backend is told so");
        roots.push(trace_id);
    }
    // Parent-based: the client's sampled flag wins over --trace-sample.
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    get(&weir, "/get/parented", &[("traceparent", &client_parent)]).await;
    let span = span_of(&receiver, CLIENT_TRACE).await;
    assert_eq!(span.parent_span_id, CLIENT_SPAN);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "only the parented span: {spans:?}");
}

#[tokio::test]
async fn without_otlp_endpoint_the_traceparent_reaches_the_backend_unchanged() {
    let (_dir, _backend, weir) = start(&[]).await;
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = get(
        &weir,
        "/get/off",
        &[
            ("traceparent", &client_parent),
            ("tracestate", "vendor=abc"),
        ],
    )
    .await;
    assert_eq!(
        backend_header(&reply, "Traceparent").as_deref(),
        Some(client_parent.as_str())
    );
    assert_eq!(
        backend_header(&reply, "Tracestate").as_deref(),
        Some("vendor=abc")
    );
    let reply = get(&weir, "/get/off-none", &[]).await;
    assert_eq!(backend_header(&reply, "Traceparent"), None, "none made up");
    weir_testkit::assert_eventually("access log lines", WAIT, || async {
        let log = access_log(&weir);
        if log.len() >= 2 {
            Ok(log)
        } else {
            Err(format!("{} lines", log.len()))
        }
    })
    .await;
    assert!(
        access_log(&weir)
            .iter()
            .all(|l| l.get("trace_id").is_none()),
        "trace_id without tracing"
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_requests_nothing_and_spans_are_counted_as_dropped() {
    // Nothing listens there: every export fails.
    let port = weir_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (_dir, _backend, weir) = start(&["--otlp-endpoint", &url]).await;
    for i in 0..20 {
        let started = std::time::Instant::now();
        get(&weir, &format!("/get/{i}"), &[]).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a request waited for the collector"
        );
    }
    let admin = weir.admin;
    weir_testkit::assert_eventually("weir_trace_spans_dropped_total", WAIT, || async move {
        let metrics = http1(admin, &Req::get("admin", "/metrics"))
            .await
            .map_err(|e| e.to_string())?
            .text();
        let dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("weir_trace_spans_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or("no weir_trace_spans_dropped_total")?;
        if dropped >= 20.0 {
            Ok(())
        } else {
            Err(format!("{dropped} dropped"))
        }
    })
    .await;
}

#[tokio::test]
async fn client_address_is_the_client_a_client_traffic_policy_detected() {
    let receiver = OtlpReceiver::start().await;
    let url = receiver.url();
    let (dir, _backend, weir) = start(&["--otlp-endpoint", &url]).await;
    std::fs::write(
        dir.path().join("policy.yaml"),
        "apiVersion: gateway.weir.dev/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: edge, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: weir}]
  clientIPDetection: {xForwardedFor: {numTrustedHops: 1}}
",
    )
    .unwrap();
    // Wait for the policy: the backend is told the detected client.
    weir_testkit::assert_eventually("the policy applied", WAIT, || async {
        let reply = get(&weir, "/get/policy", &[("x-forwarded-for", "203.0.113.7")]).await;
        match backend_header(&reply, "X-Envoy-External-Address") {
            Some(a) if a == "203.0.113.7" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let trace = "77777777777777777777777777777777";
    get(
        &weir,
        "/get/client",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("traceparent", &format!("00-{trace}-8888888888888888-01")),
        ],
    )
    .await;
    let span = span_of(&receiver, trace).await;
    assert_eq!(span.attr("client.address"), Some("203.0.113.7"));
    assert_eq!(span.attr("network.peer.address"), Some("127.0.0.1"));
}
