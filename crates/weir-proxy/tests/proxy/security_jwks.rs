//! `remoteJWKS.backendRefs`: the key set fetched from a Service's endpoints, not from the
//! URI's host (which here does not resolve: `.invalid`); the URI gives path and Host. Key
//! rotation still works through it, and a swap that moves the Service's endpoints moves
//! the fetches. (Remote key sets by URI: `security.rs`.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use weir_snapshot::{JwtAuth, JwtKeys, Security, Snapshot, Upstream};

use crate::security::{
    bearer, claims, empty, es256, get_with, jwks, provider, secured, sign, JwksServer,
};
use crate::support::*;

/// A URI whose host no resolver knows (RFC 6761): only the backendRef can reach the set.
const URI: &str = "http://idp.invalid/.well-known/jwks.json";

fn through(id: u64, idp: &Arc<Upstream>) -> Security {
    let mut s = empty(id);
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider(
            "remote",
            JwtKeys::Remote {
                uri: URI.into(),
                cache_duration: Duration::from_secs(300),
                backend: Some(idp.clone()),
            },
        )],
    });
    s
}

/// `/p` under `security` on `port`.
fn snap(version: u64, port: u16, up: &Arc<Upstream>, security: Security) -> Arc<Snapshot> {
    snapshot(
        version,
        vec![socket(
            port,
            vec![listener(
                "ns/gw",
                None,
                vec![(None, prefix("/p", secured(up, security)))],
            )],
        )],
    )
}

async fn eventually(addr: SocketAddr, token: &str, want: StatusCode, what: &str) {
    assert_eventually(what, Duration::from_secs(10), || {
        let token = token.to_string();
        async move {
            let r = get_with(addr, "/p", &[("authorization", &bearer(&token))]).await;
            anyhow::ensure!(r.status == want, "{}", r.status);
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_key_set_is_fetched_through_a_service_and_rotated() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (k1, k2, k3) = (es256("k1"), es256("k2"), es256("k3"));
    let server = JwksServer::start(jwks(&[&k1])).await;
    let idp = upstream("ns/idp:80", &[server.addr]);
    let port = free_port();
    let proxy = TestProxy::start(config(), snap(1, port, &up, through(41, &idp))).await;
    let addr = proxy.addr(port);

    let t1 = sign(&k1, claims(serde_json::json!({})));
    let t2 = sign(&k2, claims(serde_json::json!({})));
    eventually(addr, &t1, StatusCode::OK, "the key set from the Service").await;
    // Rotation: the server now has k2; a token with kid k2 triggers a fetch through it.
    server.set(200, jwks(&[&k2]));
    eventually(addr, &t2, StatusCode::OK, "the rotated key").await;
    let old = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);

    // The Service's endpoints move to another server (a swap, same policy): the next
    // fetch goes there.
    let moved = JwksServer::start(jwks(&[&k3])).await;
    let idp = upstream("ns/idp:80", &[moved.addr]);
    proxy.swap(snap(2, port, &up, through(41, &idp)));
    proxy.proxy.sync_listeners().await;
    let t3 = sign(&k3, claims(serde_json::json!({})));
    eventually(
        addr,
        &t3,
        StatusCode::OK,
        "the key set from the moved endpoint",
    )
    .await;
    assert!(moved.hits.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn without_the_backend_ref_the_uri_alone_gets_no_key_set() {
    // The control: the same URI fetched directly never succeeds, so the test above
    // could only pass through the Service.
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let k1 = es256("k1");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let mut s = empty(42);
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider(
            "remote",
            JwtKeys::Remote {
                uri: URI.into(),
                cache_duration: Duration::from_secs(300),
                backend: None,
            },
        )],
    });
    let port = free_port();
    let proxy = TestProxy::start(config(), snap(1, port, &up, s)).await;
    let addr = proxy.addr(port);
    let t1 = sign(&k1, claims(serde_json::json!({})));
    for _ in 0..5 {
        let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_service_without_endpoints_fails_closed_until_one_appears() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let k1 = es256("k1");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let port = free_port();
    let empty_idp = upstream("ns/idp:80", &[]);
    let proxy = TestProxy::start(config(), snap(1, port, &up, through(43, &empty_idp))).await;
    let addr = proxy.addr(port);
    let t1 = sign(&k1, claims(serde_json::json!({})));
    let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // An endpoint becomes ready: the swap hands it to the fetcher, which fetches at once.
    let idp = upstream("ns/idp:80", &[server.addr]);
    proxy.swap(snap(2, port, &up, through(43, &idp)));
    proxy.proxy.sync_listeners().await;
    eventually(
        addr,
        &t1,
        StatusCode::OK,
        "the key set once the Service has an endpoint",
    )
    .await;
}
