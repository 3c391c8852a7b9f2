//! GATEWAY-HTTP extended behaviour: RequestMirror copies, 421 for misdirected TLS requests.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use http_body_util::Full;
use weir_snapshot::{Filter, Mirror, MirrorSample, Timeouts};

use crate::support::*;

fn mirror_to(upstream: &std::sync::Arc<weir_snapshot::Upstream>, sample: MirrorSample) -> Filter {
    Filter::Mirror(Mirror {
        upstream: upstream.clone(),
        sample,
    })
}

#[tokio::test]
async fn mirrors_copy_requests_without_touching_the_answer() {
    let main = Echo::start("main").await;
    let copy = Echo::start("copy").await;
    let half = Echo::start("half").await;
    // Nothing listens here: a failing mirror must not fail the request.
    let dead = upstream(
        "ns/dead:80",
        &[format!("127.0.0.1:{}", free_port()).parse().unwrap()],
    );
    let filters = vec![
        mirror_to(&upstream("ns/copy:80", &[copy.addr]), MirrorSample::all()),
        mirror_to(
            &upstream("ns/half:80", &[half.addr]),
            MirrorSample::new(1, 2).unwrap(),
        ),
        mirror_to(&dead, MirrorSample::all()),
    ];
    let port = free_port();
    let act = action(
        "ns/r",
        filters,
        vec![backend(1, &upstream("ns/main:80", &[main.addr]))],
        Timeouts::default(),
    );
    let l = listener("ns/gw", None, vec![(None, prefix("/", act))]);
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);

    for _ in 0..10 {
        let r = get(addr, "h", "/m").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend(), "main", "the answer is the main backend's");
    }
    assert_eq!(main.received.load(Ordering::SeqCst), 10);
    assert_eventually("every request mirrored", Duration::from_secs(5), || async {
        let n = copy.received.load(Ordering::SeqCst);
        (n == 10)
            .then_some(())
            .ok_or_else(|| anyhow::anyhow!("{n} copies"))
    })
    .await;
    assert_eventually("half of them mirrored", Duration::from_secs(5), || async {
        let n = half.received.load(Ordering::SeqCst);
        (n == 5)
            .then_some(())
            .ok_or_else(|| anyhow::anyhow!("{n} copies"))
    })
    .await;
}

#[tokio::test]
async fn mirrors_copy_request_bodies() {
    let main = Echo::start("main").await;
    let copy = Echo::start("copy").await;
    let port = free_port();
    let act = action(
        "ns/r",
        vec![mirror_to(
            &upstream("ns/copy:80", &[copy.addr]),
            MirrorSample::all(),
        )],
        vec![backend(1, &upstream("ns/main:80", &[main.addr]))],
        Timeouts::default(),
    );
    let l = listener("ns/gw", None, vec![(None, prefix("/", act))]);
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);

    // A body of several frames, small enough that even a copy whose connection is not up
    // yet stays within the tee's lag allowance (16 frames) on a loaded machine.
    let big = "x".repeat(32 * 1024);
    for body in ["hello", big.as_str()] {
        let req = request("h", "/upload")
            .method("POST")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let r = send(addr, req).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json()["body"],
            body,
            "the main backend gets the whole body"
        );
    }
    assert_eventually("both bodies mirrored", Duration::from_secs(5), || async {
        let seen = copy.bodies.lock().unwrap().clone();
        let want = vec![format!("POST /upload hello"), format!("POST /upload {big}")];
        (seen == want)
            .then_some(())
            .ok_or_else(|| anyhow::anyhow!("mirror saw {} bodies", seen.len()))
    })
    .await;
}

#[tokio::test]
async fn a_mirror_that_never_answers_does_not_delay_the_request() {
    let main = Echo::start("main").await;
    // Accepts connections, reads nothing, answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            open.push(tcp);
        }
    });
    let port = free_port();
    let act = action(
        "ns/r",
        vec![mirror_to(
            &upstream("ns/silent:80", &[silent_addr]),
            MirrorSample::all(),
        )],
        vec![backend(1, &upstream("ns/main:80", &[main.addr]))],
        Timeouts::default(),
    );
    let l = listener("ns/gw", None, vec![(None, prefix("/", act))]);
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(2), get(p.addr(port), "h", "/"))
            .await
            .expect("answered while the mirror hangs")
            .unwrap();
        assert_eq!(
            (r.status, r.backend()),
            (StatusCode::OK, "main".to_string())
        );
    }
    assert_eventually("copies sent", Duration::from_secs(5), || async {
        let n = accepted.load(Ordering::SeqCst);
        (n >= 1)
            .then_some(())
            .ok_or_else(|| anyhow::anyhow!("{n} connections"))
    })
    .await;
    hold.abort();
}

/// RFC 9110 §15.5.20 / GatewayHTTPSListenerDetectMisdirectedRequests: over a TLS connection
/// whose SNI chose one listener, a Host that belongs to another listener gets 421.
#[tokio::test]
async fn tls_request_for_another_listeners_host_is_misdirected() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let ca = Ca::new();
    let cert = ca.leaf(&["a.example.com", "b.example.com", "other.example.com"]);
    let port = free_port();
    let la = listener(
        "ns/gw",
        Some("a.example.com"),
        vec![(
            None,
            prefix("/", forward_to("ns/ra", &upstream("ns/a:80", &[a.addr]))),
        )],
    );
    let lb = listener(
        "ns/gw",
        Some("b.example.com"),
        vec![(
            None,
            prefix("/", forward_to("ns/rb", &upstream("ns/b:80", &[b.addr]))),
        )],
    );
    let s = tls_socket(
        port,
        true,
        vec![la, lb],
        vec![
            ("a.example.com", cert.clone()),
            ("b.example.com", cert.clone()),
        ],
        Some(cert.clone()),
    );
    let p = TestProxy::start(config(), snapshot(1, vec![s])).await;
    let addr = p.addr(port);

    // HTTP/2 (connection reuse is where this happens) and HTTP/1.1.
    let tls = tls_connect(addr, "a.example.com", &ca, &[b"h2"])
        .await
        .unwrap();
    let mut h2 = H2::over(tls).await.unwrap();
    let on = |host: &str| {
        http::Request::builder()
            .uri(format!("https://{host}/"))
            .body(Full::default())
            .unwrap()
    };
    let r = h2.send(on("a.example.com")).await.unwrap();
    assert_eq!((r.status, r.backend()), (StatusCode::OK, "a".to_string()));
    let r = h2.send(on("b.example.com")).await.unwrap();
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(b.received.load(Ordering::SeqCst), 0);

    let tls = tls_connect(addr, "b.example.com", &ca, &[b"http/1.1"])
        .await
        .unwrap();
    let mut h1 = H1::over(tls).await.unwrap();
    let r = h1
        .send(request("a.example.com", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    let r = h1
        .send(request("b.example.com", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!((r.status, r.backend()), (StatusCode::OK, "b".to_string()));
    // A host no listener claims is the usual 404, not 421, when the SNI's listener is not
    // claimed either; an SNI that names no listener is not checked.
    let tls = tls_connect(addr, "other.example.com", &ca, &[b"http/1.1"])
        .await
        .unwrap();
    let mut h1 = H1::over(tls).await.unwrap();
    let r = h1
        .send(request("a.example.com", "/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!((r.status, r.backend()), (StatusCode::OK, "a".to_string()));
}

#[tokio::test]
async fn cors_preflight_is_answered_here_and_actual_answers_name_the_origin() {
    use http::HeaderValue;
    use weir_snapshot::{Cors, CorsList, OriginPattern};
    let a = Echo::start("a").await;
    let cors = Cors {
        allow_origins: vec![OriginPattern::parse("https://*.bar.com").unwrap()].into(),
        allow_methods: CorsList::Any,
        allow_headers: CorsList::List(HeaderValue::from_static("x-one")),
        expose_headers: CorsList::List(HeaderValue::from_static("x-two")),
        max_age: Some(HeaderValue::from_static("60")),
        allow_credentials: true,
    };
    let port = free_port();
    let act = action(
        "ns/r",
        vec![Filter::Cors(cors)],
        vec![backend(1, &upstream("ns/a:80", &[a.addr]))],
        Timeouts::default(),
    );
    let l = listener("ns/gw", None, vec![(None, prefix("/", act))]);
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let addr = p.addr(port);
    let preflight = |origin: &str| {
        request("h", "/")
            .method("OPTIONS")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .body(Full::default())
            .unwrap()
    };
    let r = send(addr, preflight("https://www.bar.com")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        a.received.load(Ordering::SeqCst),
        0,
        "answered by the gateway"
    );
    let h = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        h("access-control-allow-origin").as_deref(),
        Some("https://www.bar.com")
    );
    assert_eq!(h("access-control-allow-methods").as_deref(), Some("PUT"));
    assert_eq!(h("access-control-allow-headers").as_deref(), Some("x-one"));
    assert_eq!(h("access-control-expose-headers").as_deref(), Some("x-two"));
    assert_eq!(h("access-control-max-age").as_deref(), Some("60"));
    assert_eq!(
        h("access-control-allow-credentials").as_deref(),
        Some("true")
    );

    let r = send(addr, preflight("https://evil.example")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("access-control-allow-origin").is_none());

    let actual = request("h", "/")
        .header("origin", "https://www.bar.com")
        .body(Full::default())
        .unwrap();
    let r = send(addr, actual).await.unwrap();
    assert_eq!((r.status, r.backend()), (StatusCode::OK, "a".to_string()));
    assert_eq!(
        r.headers.get("access-control-allow-origin").unwrap(),
        "https://www.bar.com"
    );
    let r = get(addr, "h", "/").await.unwrap();
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "no Origin, no CORS"
    );
}
