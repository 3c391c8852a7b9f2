//! External authorization over real sockets, against weir-testkit's HTTP and gRPC auth
//! services: allowed requests reach the backend with the service's headers, denials are the
//! service's own answer, the body is forwarded up to its limit, and a failing service is
//! refused (403) or let through (`failOpen`), a slow one bounded by the timeout.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, StatusCode};
use http_body_util::Full;
use weir_snapshot::{BackendTarget, ExtAuth, ExtAuthProtocol, RouteAction, Upstream};
use weir_testkit::ext_auth::AuthServer;

use crate::support::*;

struct Setup {
    protocol: fn() -> ExtAuthProtocol,
    body_max: u32,
    timeout: Duration,
    fail_open: bool,
    allowed_headers: Option<Vec<&'static str>>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            protocol: http_all,
            body_max: 0,
            timeout: Duration::from_secs(5),
            fail_open: false,
            allowed_headers: None,
        }
    }
}

fn http_all() -> ExtAuthProtocol {
    ExtAuthProtocol::Http {
        path_prefix: "/check".into(),
        response_headers: None,
    }
}

fn http_listed() -> ExtAuthProtocol {
    ExtAuthProtocol::Http {
        path_prefix: "".into(),
        response_headers: Some(Arc::from(vec![HeaderName::from_static("x-current-user")])),
    }
}

fn grpc() -> ExtAuthProtocol {
    ExtAuthProtocol::Grpc
}

fn ext_auth(service: BackendTarget, s: &Setup) -> Arc<ExtAuth> {
    let mut a = ExtAuth {
        id: 0,
        service,
        protocol: (s.protocol)(),
        allowed_headers: s.allowed_headers.as_ref().map(|l| {
            l.iter()
                .map(|n| HeaderName::from_static(n))
                .collect::<Vec<_>>()
                .into()
        }),
        body_max: s.body_max,
        timeout: s.timeout,
        fail_open: s.fail_open,
    };
    a.id = a.compute_id();
    Arc::new(a)
}

/// `/a` goes to `up` behind `auth`; `/` goes to `up` without it.
async fn start(up: &Arc<Upstream>, auth: Arc<ExtAuth>) -> (TestProxy, SocketAddr) {
    let port = free_port();
    let plain = forward_to("ns/plain", up);
    let a = forward_to("ns/r", up);
    let with_auth = Arc::new(RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: a.timeouts,
        policy: None,
        ext_auth: Some(auth),
        security: None,
        ext_proc: None,
    });
    let snap = snapshot(
        1,
        vec![socket(
            port,
            vec![listener(
                "ns/gw",
                None,
                vec![(None, prefix("/a", with_auth)), (None, prefix("/", plain))],
            )],
        )],
    );
    let proxy = TestProxy::start(config(), snap).await;
    let addr = proxy.addr(port);
    (proxy, addr)
}

fn auth_upstream(auth: &AuthServer, grpc: bool) -> BackendTarget {
    let protocol = if grpc {
        weir_snapshot::AppProtocol::H2c
    } else {
        weir_snapshot::AppProtocol::Http1
    };
    BackendTarget::Upstream(upstream_with("ns/auth:9000", protocol, &[auth.addr]))
}

async fn call(addr: SocketAddr, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Resp {
    let mut b = request("example.com", path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (n, v) in extra {
        b = b.header(*n, *v);
    }
    send(addr, b.body(Full::default()).unwrap()).await.unwrap()
}

/// Allow (headers injected, the service saw the prefixed path and only the allowed
/// headers), 401 and 403 denials passed through, and a route without ext auth untouched.
async fn allow_and_deny(grpc_service: bool) {
    let echo = Echo::start("b").await;
    let up = upstream("ns/b:80", &[echo.addr]);
    let auth = if grpc_service {
        AuthServer::start_grpc().await
    } else {
        AuthServer::start_http().await
    };
    // HTTP always sends Authorization; gRPC sends exactly the list (GEP-1494).
    let setup = Setup {
        protocol: if grpc_service { grpc } else { http_all },
        allowed_headers: Some(if grpc_service {
            vec!["x-allowed", "authorization"]
        } else {
            vec!["x-allowed"]
        }),
        ..Setup::default()
    };
    let (_proxy, addr) = start(&up, ext_auth(auth_upstream(&auth, grpc_service), &setup)).await;

    let r = call(
        addr,
        "/a/x?q=1",
        Some("allow"),
        &[
            ("x-allowed", "yes"),
            ("x-secret", "no"),
            ("x-remove-me", "gone"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.seen_header("x-current-user").as_deref(), Some("alice"));
    let seen = auth.last().expect("the service was asked");
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.headers.get("x-allowed").map(String::as_str),
        Some("yes")
    );
    assert_eq!(seen.headers.get("x-secret"), None, "not an allowed header");
    assert_eq!(
        seen.headers.get("authorization").map(String::as_str),
        Some("Bearer allow")
    );
    if grpc_service {
        assert_eq!(seen.path, "/a/x?q=1");
        assert_eq!(seen.host, "example.com");
        assert_eq!(
            r.seen_header("x-remove-me"),
            None,
            "headers_to_remove applied"
        );
    } else {
        assert_eq!(seen.path, "/check/a/x?q=1", "the path prefix");
        assert_eq!(seen.host, "example.com");
        assert_eq!(
            seen.headers.get("content-length").map(String::as_str),
            Some("0")
        );
        assert_eq!(
            r.seen_header("x-auth-path").as_deref(),
            Some("/check/a/x?q=1")
        );
    }

    let before = echo.received.load(Ordering::SeqCst);
    let r = call(addr, "/a/x", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body, "denied by ext auth");
    assert_eq!(
        r.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"weir-test\"")
    );
    let r = call(addr, "/a/x", Some("forbidden"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body, "forbidden by ext auth");
    assert_eq!(
        r.headers.get("x-auth-reason").and_then(|v| v.to_str().ok()),
        Some("forbidden")
    );
    assert_eq!(
        echo.received.load(Ordering::SeqCst),
        before,
        "denied requests never reach the backend"
    );

    let checks = auth.count();
    let r = call(addr, "/plain", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(auth.count(), checks, "a route without ext auth asks nobody");
}

#[tokio::test]
async fn http_ext_auth_allows_with_headers_and_passes_denials_through() {
    allow_and_deny(false).await;
}

#[tokio::test]
async fn grpc_ext_auth_allows_with_headers_and_passes_denials_through() {
    allow_and_deny(true).await;
}

#[tokio::test]
async fn http_ext_auth_copies_only_the_listed_answer_headers() {
    let echo = Echo::start("b").await;
    let up = upstream("ns/b:80", &[echo.addr]);
    let auth = AuthServer::start_http().await;
    let setup = Setup {
        protocol: http_listed,
        ..Setup::default()
    };
    let (_proxy, addr) = start(&up, ext_auth(auth_upstream(&auth, false), &setup)).await;
    let r = call(addr, "/a", Some("allow"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen_header("x-current-user").as_deref(), Some("alice"));
    assert_eq!(r.seen_header("x-auth-unlisted"), None, "not listed");
    assert_eq!(
        auth.last().map(|s| s.path),
        Some("/a".to_string()),
        "no prefix"
    );
    // With the whole answer copied (empty list), the unlisted header comes too.
    let setup = Setup::default();
    let (_proxy2, addr) = start(&up, ext_auth(auth_upstream(&auth, false), &setup)).await;
    let r = call(addr, "/a", Some("allow"), &[]).await;
    assert_eq!(r.seen_header("x-auth-unlisted").as_deref(), Some("yes"));
    assert_eq!(
        r.seen_header("content-type"),
        None,
        "not the answer's own headers"
    );
}

async fn forwards_the_body(grpc_service: bool) {
    let echo = Echo::start("b").await;
    let up = upstream("ns/b:80", &[echo.addr]);
    let auth = if grpc_service {
        AuthServer::start_grpc().await
    } else {
        AuthServer::start_http().await
    };
    let setup = Setup {
        protocol: if grpc_service { grpc } else { http_all },
        body_max: 16,
        ..Setup::default()
    };
    let (_proxy, addr) = start(&up, ext_auth(auth_upstream(&auth, grpc_service), &setup)).await;
    let post = |body: &'static str| {
        request("example.com", "/a/post")
            .method("POST")
            .header("authorization", "Bearer allow")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let r = send(addr, post("hello auth")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(auth.last().map(|s| s.body), Some(b"hello auth".to_vec()));
    assert_eq!(r.seen_header("x-auth-body").as_deref(), Some("10"));
    assert!(
        echo.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b == "POST /a/post hello auth"),
        "the backend still gets the body: {:?}",
        echo.bodies.lock().unwrap()
    );
    let checks = auth.count();
    let r = send(addr, post("this body is longer than sixteen bytes"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(auth.count(), checks, "refused before the check");
}

#[tokio::test]
async fn http_ext_auth_forwards_the_body_up_to_its_limit() {
    forwards_the_body(false).await;
}

#[tokio::test]
async fn grpc_ext_auth_forwards_the_body_up_to_its_limit() {
    forwards_the_body(true).await;
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

async fn service_down(grpc_service: bool) {
    let echo = Echo::start("b").await;
    let up = upstream("ns/b:80", &[echo.addr]);
    let protocol = if grpc_service {
        weir_snapshot::AppProtocol::H2c
    } else {
        weir_snapshot::AppProtocol::Http1
    };
    let down =
        || BackendTarget::Upstream(upstream_with("ns/auth:9000", protocol, &[closed_port()]));
    let kind = if grpc_service { grpc } else { http_all };
    let closed = Setup {
        protocol: kind,
        ..Setup::default()
    };
    let (proxy, addr) = start(&up, ext_auth(down(), &closed)).await;
    let r = call(addr, "/a", Some("allow"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "fails closed: {}", r.body);
    assert_eq!(echo.received.load(Ordering::SeqCst), 0);
    assert_eq!(
        proxy.metric("weir_ext_auth_failures_total", &[("outcome", "closed")]),
        1.0
    );
    let open = Setup {
        protocol: kind,
        fail_open: true,
        ..Setup::default()
    };
    let (proxy, addr) = start(&up, ext_auth(down(), &open)).await;
    let r = call(addr, "/a", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "fails open");
    assert_eq!(r.backend(), "b");
    assert_eq!(
        proxy.metric("weir_ext_auth_failures_total", &[("outcome", "open")]),
        1.0
    );
}

#[tokio::test]
async fn http_ext_auth_service_down_fails_closed_or_open() {
    service_down(false).await;
}

#[tokio::test]
async fn grpc_ext_auth_service_down_fails_closed_or_open() {
    service_down(true).await;
}

async fn slow_service(grpc_service: bool) {
    let echo = Echo::start("b").await;
    let up = upstream("ns/b:80", &[echo.addr]);
    let auth = if grpc_service {
        AuthServer::start_grpc().await
    } else {
        AuthServer::start_http().await
    };
    let setup = Setup {
        protocol: if grpc_service { grpc } else { http_all },
        timeout: Duration::from_millis(300),
        allowed_headers: Some(vec!["x-auth-delay-ms", "authorization"]),
        ..Setup::default()
    };
    let (_proxy, addr) = start(&up, ext_auth(auth_upstream(&auth, grpc_service), &setup)).await;
    let fast = call(addr, "/a", Some("allow"), &[("x-auth-delay-ms", "10")]).await;
    assert_eq!(fast.status, StatusCode::OK, "within the timeout");
    let t = Instant::now();
    let slow = call(addr, "/a", Some("allow"), &[("x-auth-delay-ms", "3000")]).await;
    assert_eq!(
        slow.status,
        StatusCode::FORBIDDEN,
        "timed out: fails closed"
    );
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn http_ext_auth_times_out() {
    slow_service(false).await;
}

#[tokio::test]
async fn grpc_ext_auth_times_out() {
    slow_service(true).await;
}

#[tokio::test]
async fn an_invalid_auth_service_fails_closed_even_when_open() {
    let echo = Echo::start("b").await;
    let up = upstream("ns/b:80", &[echo.addr]);
    let setup = Setup {
        fail_open: true,
        ..Setup::default()
    };
    let (_proxy, addr) = start(
        &up,
        ext_auth(BackendTarget::Invalid("service not found".into()), &setup),
    )
    .await;
    let r = call(addr, "/a", Some("allow"), &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(echo.received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_grpc_channel_is_reused_across_requests() {
    let echo = Echo::start("b").await;
    let up = upstream("ns/b:80", &[echo.addr]);
    // A counting front for the gRPC service: connections accepted.
    let auth = AuthServer::start_grpc().await;
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let target = auth.addr;
    let relay = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = front.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let service = BackendTarget::Upstream(upstream_with(
        "ns/auth:9000",
        weir_snapshot::AppProtocol::H2c,
        &[front_addr],
    ));
    let setup = Setup {
        protocol: grpc,
        ..Setup::default()
    };
    let (_proxy, addr) = start(&up, ext_auth(service, &setup)).await;
    for _ in 0..5 {
        let r = call(addr, "/a", Some("allow"), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(auth.count(), 5);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection for all checks"
    );
    relay.abort();
}
