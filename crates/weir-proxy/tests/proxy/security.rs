//! SecurityPolicy over real sockets (issue 23): basic auth, API keys, JWT (local and remote
//! key sets, rotation), authorization, CORS, fail closed, and the phase order (a preflight
//! needs no credentials). Keys are generated at test time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, Method, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use weir_snapshot::{
    ApiKeyAuth, Authorization, AuthorizationRule, BasicAuth, Cidr, ClaimMatch, Cors, CorsList,
    JwtAuth, JwtKeys, JwtPrincipal, JwtProvider, KeySource, OriginPattern, Redacted, RouteAction,
    Security, Upstream,
};

use crate::support::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn empty(id: u64) -> Security {
    Security {
        name: "ns/sec".into(),
        id,
        deny: None,
        cors: None,
        jwt: None,
        basic: None,
        api_key: None,
        authorization: None,
    }
}

pub(crate) fn secured(up: &Arc<Upstream>, security: Security) -> Arc<RouteAction> {
    let a = forward_to("ns/r", up);
    Arc::new(RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: a.timeouts,
        policy: None,
        security: Some(Arc::new(security)),
        ext_proc: None,
        ext_auth: None,
    })
}

/// `/p` under `security`, `/` without a policy.
pub(crate) async fn start(up: &Arc<Upstream>, security: Security) -> (TestProxy, SocketAddr) {
    start_with(config(), up, security).await
}

async fn start_with(
    cfg: weir_proxy::ProxyConfig,
    up: &Arc<Upstream>,
    security: Security,
) -> (TestProxy, SocketAddr) {
    let port = free_port();
    let snap = snapshot(
        1,
        vec![socket(
            port,
            vec![listener(
                "ns/gw",
                None,
                vec![
                    (None, prefix("/p", secured(up, security))),
                    (None, prefix("/", forward_to("ns/plain", up))),
                ],
            )],
        )],
    );
    let proxy = TestProxy::start(cfg, snap).await;
    let addr = proxy.addr(port);
    (proxy, addr)
}

pub(crate) async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = request("a.example", path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(addr, b.body(Full::default()).unwrap()).await.unwrap()
}

fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_auth_checks_htpasswd_users_and_strips_the_credentials() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let bcrypt = bcrypt::hash("b-pass", 4).unwrap();
    let users = HashMap::from([
        (
            "alice".to_string(),
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".to_string(),
        ),
        ("bob".to_string(), bcrypt.replacen("$2b$", "$2y$", 1)),
        (
            "carol".to_string(),
            "$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1".to_string(),
        ),
    ]);
    let mut s = empty(1);
    s.basic = Some(BasicAuth {
        users: Redacted(users),
        forward_username_header: Some(HeaderName::from_static("x-user")),
    });
    let (proxy, addr) = start(&up, s).await;

    let none = get_with(addr, "/p", &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers["www-authenticate"],
        "Basic realm=\"a.example\""
    );
    let wrong = get_with(
        addr,
        "/p",
        &[("authorization", &basic_header("alice", "nope"))],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let nobody = get_with(
        addr,
        "/p",
        &[("authorization", &basic_header("zed", "password"))],
    )
    .await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);
    assert_eq!(echo.received.load(std::sync::atomic::Ordering::SeqCst), 0);

    for (user, password) in [
        ("alice", "password"),
        ("bob", "b-pass"),
        ("carol", "password"),
    ] {
        // The forged username header is replaced by the verified one.
        let ok = get_with(
            addr,
            "/p",
            &[
                ("authorization", &basic_header(user, password)),
                ("x-user", "mallory"),
            ],
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{user}");
        assert_eq!(ok.seen_header("x-user").as_deref(), Some(user));
        assert_eq!(ok.seen_header("authorization"), None, "{user}");
    }
    // A second bcrypt request is served from the verification cache (same answer).
    let again = get_with(
        addr,
        "/p",
        &[("authorization", &basic_header("bob", "b-pass"))],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    // Routes without a policy are untouched.
    assert_eq!(get_with(addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        proxy.metric(
            "weir_request_errors_total",
            &[("reason", "unauthenticated")]
        ),
        3.0
    );
}

#[tokio::test]
async fn api_keys_from_header_query_and_cookie_are_checked_and_sanitized() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let mut s = empty(2);
    s.api_key = Some(ApiKeyAuth {
        keys: Redacted(vec![
            (b"k-one".to_vec(), "client-1".into()),
            (b"k-two".to_vec(), "client-2".into()),
        ]),
        sources: vec![
            KeySource::Header {
                name: HeaderName::from_static("x-api-key"),
                prefix: String::new(),
            },
            KeySource::Param("key".into()),
            KeySource::Cookie("apikey".into()),
        ],
        forward_client_id_header: Some(HeaderName::from_static("x-client")),
        sanitize: true,
    });
    let (_proxy, addr) = start(&up, s).await;

    assert_eq!(
        get_with(addr, "/p", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong = get_with(addr, "/p", &[("x-api-key", "k-three")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get("www-authenticate").is_none());

    let header = get_with(addr, "/p", &[("x-api-key", "k-one")]).await;
    assert_eq!(header.status, StatusCode::OK);
    assert_eq!(header.seen_header("x-client").as_deref(), Some("client-1"));
    assert_eq!(header.seen_header("x-api-key"), None);

    let query = get_with(addr, "/p/x?a=1&key=k-two&b=2", &[]).await;
    assert_eq!(query.status, StatusCode::OK);
    assert_eq!(query.seen_header("x-client").as_deref(), Some("client-2"));
    assert_eq!(query.json()["query"], "a=1&b=2");

    let cookie = get_with(addr, "/p", &[("cookie", "theme=dark; apikey=k-one")]).await;
    assert_eq!(cookie.status, StatusCode::OK);
    assert_eq!(cookie.seen_header("cookie").as_deref(), Some("theme=dark"));
    assert_eq!(cookie.seen_header("x-client").as_deref(), Some("client-1"));
}

#[tokio::test]
async fn a_policy_that_could_not_be_applied_fails_closed() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (proxy, addr) = start(&up, Security::deny("ns/sec".into(), 3, "bad Secret")).await;
    assert_eq!(
        get_with(addr, "/p", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(echo.received.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(get_with(addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        proxy.metric(
            "weir_request_errors_total",
            &[("reason", "security_policy_invalid")]
        ),
        1.0
    );
}

// ---------------------------------------------------------------------------------------
// JWT

/// A signing key generated now and its public JWK.
pub(crate) struct TestKey {
    enc: EncodingKey,
    alg: Algorithm,
    jwk: serde_json::Value,
}

pub(crate) fn es256(kid: &str) -> TestKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    TestKey {
        enc: EncodingKey::from_ec_der(&kp.serialize_der()),
        alg: Algorithm::ES256,
        jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
    }
}

fn ed25519(kid: &str) -> TestKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    TestKey {
        enc: EncodingKey::from_ed_der(&kp.serialize_der()),
        alg: Algorithm::EdDSA,
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": b64(kp.public_key_raw())}),
    }
}

fn hs256(kid: &str, secret: &[u8]) -> TestKey {
    TestKey {
        enc: EncodingKey::from_secret(secret),
        alg: Algorithm::HS256,
        jwk: serde_json::json!({"kty": "oct", "kid": kid, "k": b64(secret)}),
    }
}

pub(crate) fn jwks(keys: &[&TestKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn sign(key: &TestKey, claims: serde_json::Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = key.jwk["kid"].as_str().map(str::to_string);
    jsonwebtoken::encode(&header, &claims, &key.enc).unwrap()
}

pub(crate) fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"iss": "https://issuer.test", "aud": "api", "sub": "u-1",
        "exp": now() + 300, "user": {"roles": ["admin"]}, "scope": "read write"});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

pub(crate) fn provider(name: &str, keys: JwtKeys) -> JwtProvider {
    JwtProvider {
        name: name.into(),
        issuer: Some("https://issuer.test".into()),
        audiences: vec!["api".into()],
        keys,
        claim_to_headers: vec![(HeaderName::from_static("x-sub"), vec!["sub".into()])],
        sources: vec![KeySource::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        }],
    }
}

fn local(keys: &[&TestKey]) -> JwtKeys {
    let parsed = weir_snapshot::security::parse_jwks(&jwks(keys), true).unwrap();
    JwtKeys::Local(Redacted(parsed.into()))
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn jwt_tokens_are_verified_and_every_bad_one_refused() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (es, ed, hs) = (
        es256("es"),
        ed25519("ed"),
        hs256("hs", b"a-local-hmac-secret-of-32-bytes!"),
    );
    let mut s = empty(4);
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider("local", local(&[&es, &ed, &hs]))],
    });
    let (_proxy, addr) = start(&up, s).await;
    let call = |token: String| async move {
        get_with(
            addr,
            "/p",
            &[("authorization", &bearer(&token)), ("x-sub", "forged")],
        )
        .await
    };

    for key in [&es, &ed, &hs] {
        let ok = call(sign(key, claims(serde_json::json!({})))).await;
        assert_eq!(ok.status, StatusCode::OK, "{:?}", key.alg);
        assert_eq!(ok.seen_header("x-sub").as_deref(), Some("u-1"));
        // The verified token is not forwarded.
        assert_eq!(ok.seen_header("authorization"), None);
    }
    // Within the clock skew (60 s) an expired token still passes; beyond it, not.
    let skew = call(sign(&es, claims(serde_json::json!({"exp": now() - 30})))).await;
    assert_eq!(skew.status, StatusCode::OK);
    let other = es256("es");
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims(serde_json::json!({})).to_string().as_bytes());
    let bad: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(&es, claims(serde_json::json!({"exp": now() - 120}))),
        ),
        (
            "not yet",
            sign(&es, claims(serde_json::json!({"nbf": now() + 120}))),
        ),
        (
            "wrong audience",
            sign(&es, claims(serde_json::json!({"aud": "other"}))),
        ),
        ("no audience", {
            let mut c = claims(serde_json::json!({}));
            c.as_object_mut().unwrap().remove("aud");
            sign(&es, c)
        }),
        (
            "wrong issuer",
            sign(&es, claims(serde_json::json!({"iss": "https://evil"}))),
        ),
        ("wrong key", sign(&other, claims(serde_json::json!({})))),
        ("alg none", format!("{none_header}.{payload}.")),
        ("unsigned", format!("{none_header}.{payload}")),
        ("garbage", "not-a-token".into()),
    ];
    for (what, token) in bad {
        let r = call(token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            r.headers["www-authenticate"], "Bearer realm=\"a.example\", error=\"invalid_token\"",
            "{what}"
        );
    }
    let missing = get_with(addr, "/p", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_optional_jwt_lets_anonymous_requests_through_but_not_bad_tokens() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let es = es256("es");
    let mut p = provider("local", local(&[&es]));
    p.sources = vec![
        KeySource::Header {
            name: HeaderName::from_static("x-token"),
            prefix: "Tok ".into(),
        },
        KeySource::Cookie("jwt".into()),
        KeySource::Param("access_token".into()),
    ];
    let mut s = empty(5);
    s.jwt = Some(JwtAuth {
        optional: true,
        providers: vec![p],
    });
    let (_proxy, addr) = start(&up, s).await;
    let anonymous = get_with(addr, "/p", &[("x-sub", "forged")]).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    // A client's own claim header never reaches the backend.
    assert_eq!(anonymous.seen_header("x-sub"), None);
    let token = sign(&es, claims(serde_json::json!({})));
    let bad = get_with(addr, "/p", &[("x-token", "Tok nope")]).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let by_header = get_with(addr, "/p", &[("x-token", &format!("Tok {token}"))]).await;
    assert_eq!(by_header.seen_header("x-sub").as_deref(), Some("u-1"));
    let by_cookie = get_with(addr, "/p", &[("cookie", &format!("jwt={token}"))]).await;
    assert_eq!(by_cookie.seen_header("x-sub").as_deref(), Some("u-1"));
    let by_param = get_with(addr, &format!("/p?access_token={token}"), &[]).await;
    assert_eq!(by_param.seen_header("x-sub").as_deref(), Some("u-1"));
    assert_eq!(by_param.json()["query"], serde_json::Value::Null);
}

/// A JWKS server whose answer the test changes: (status, body).
pub(crate) struct JwksServer {
    pub(crate) addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    pub(crate) hits: Arc<std::sync::atomic::AtomicUsize>,
    /// The SNI of each TLS client hello (TLS servers only).
    snis: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves one certificate and records the SNI asked for.
#[derive(Debug)]
struct SniRecorder(
    Arc<rustls::sign::CertifiedKey>,
    Arc<Mutex<Vec<Option<String>>>>,
);

impl rustls::server::ResolvesServerCert for SniRecorder {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.1
            .lock()
            .unwrap()
            .push(hello.server_name().map(str::to_string));
        Some(self.0.clone())
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub(crate) async fn start(body: String) -> JwksServer {
        JwksServer::serve(body, None).await
    }

    /// Over TLS with `cert`; the SNI names of the client hellos go into `snis`.
    async fn start_tls(body: String, cert: Arc<rustls::sign::CertifiedKey>) -> JwksServer {
        JwksServer::serve(body, Some(cert)).await
    }

    async fn serve(body: String, cert: Option<Arc<rustls::sign::CertifiedKey>>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((200u16, body)));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let snis = Arc::new(Mutex::new(Vec::new()));
        let acceptor = cert.map(|cert| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(SniRecorder(cert, snis.clone())));
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let (a, h) = (answer.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (a, h, acceptor) = (a.clone(), h.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let (status, body) = a.lock().unwrap().clone();
                        async move {
                            let mut r = http::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http1.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http1.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        JwksServer {
            addr,
            answer,
            hits,
            snis,
            task,
        }
    }

    pub(crate) fn set(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }
}

#[tokio::test]
async fn a_remote_key_set_is_fetched_rotated_and_kept_when_the_server_fails() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (k1, k2) = (es256("k1"), es256("k2"));
    let server = JwksServer::start(jwks(&[&k1])).await;
    let mut s = empty(6);
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider(
            "remote",
            JwtKeys::Remote {
                uri: format!("http://{}/jwks", server.addr).into(),
                cache_duration: Duration::from_secs(300),
                backend: None,
            },
        )],
    });
    let (_proxy, addr) = start(&up, s).await;
    let t1 = sign(&k1, claims(serde_json::json!({})));
    let t2 = sign(&k2, claims(serde_json::json!({})));
    assert_eventually(
        "the first key set is fetched",
        Duration::from_secs(5),
        || {
            let t1 = t1.clone();
            async move {
                let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
                anyhow::ensure!(r.status == StatusCode::OK, "{}", r.status);
                Ok(())
            }
        },
    )
    .await;
    // An HMAC key in a remote set would let anyone sign: the set is refused.
    // Rotation: the server now has k2; a token with kid k2 triggers a fetch.
    server.set(200, jwks(&[&k2]));
    assert_eventually(
        "the rotated key is fetched on an unknown kid",
        Duration::from_secs(10),
        || {
            let t2 = t2.clone();
            async move {
                let r = get_with(addr, "/p", &[("authorization", &bearer(&t2))]).await;
                anyhow::ensure!(r.status == StatusCode::OK, "{}", r.status);
                Ok(())
            }
        },
    )
    .await;
    // The old key is gone.
    let old = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    // The server fails and a refetch is asked for (unknown kid): the last good set stays.
    server.set(503, String::new());
    let hits = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    let k3 = es256("k3");
    let t3 = sign(&k3, claims(serde_json::json!({})));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get_with(addr, "/p", &[("authorization", &bearer(&t3))]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eventually("the refetch happens", Duration::from_secs(5), || async {
        anyhow::ensure!(server.hits.load(std::sync::atomic::Ordering::SeqCst) > hits);
        Ok(())
    })
    .await;
    let still = get_with(addr, "/p", &[("authorization", &bearer(&t2))]).await;
    assert_eq!(still.status, StatusCode::OK);
    // Unknown kids do not make a fetch per request (rate limit).
    let before = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        get_with(addr, "/p", &[("authorization", &bearer(&t3))]).await;
    }
    let after = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after - before <= 3, "{before} → {after}");
}

fn remote_provider(id: u64, uri: String) -> Security {
    let mut s = empty(id);
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider(
            "remote",
            JwtKeys::Remote {
                uri: uri.into(),
                cache_duration: Duration::from_secs(300),
                backend: None,
            },
        )],
    });
    s
}

async fn eventually_ok(what: &str, addr: SocketAddr, token: &str) {
    assert_eventually(what, Duration::from_secs(10), || {
        let token = token.to_string();
        async move {
            let r = get_with(addr, "/p", &[("authorization", &bearer(&token))]).await;
            anyhow::ensure!(r.status == StatusCode::OK, "{}", r.status);
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
async fn an_https_key_set_from_a_private_ca_is_fetched_and_rotated() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let ca = Ca::new();
    let (k1, k2) = (es256("k1"), es256("k2"));
    let server = JwksServer::start_tls(jwks(&[&k1]), ca.leaf(&["localhost"])).await;
    // The CA as `--jwks-ca` gives it: PEM.
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(ca.der())
    );
    let mut cfg = config();
    cfg.jwks_ca = weir_proxy::parse_pem_certs(pem.as_bytes()).unwrap();
    let uri = format!("https://localhost:{}/jwks", server.addr.port());
    let (_proxy, addr) = start_with(cfg, &up, remote_provider(16, uri)).await;
    let t1 = sign(&k1, claims(serde_json::json!({})));
    let t2 = sign(&k2, claims(serde_json::json!({})));
    eventually_ok("the key set is fetched over https", addr, &t1).await;
    // SNI named the URI's host.
    assert!(
        server
            .snis
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.as_deref() == Some("localhost")),
        "{:?}",
        server.snis.lock().unwrap()
    );
    // Rotation mid-run: a token with the new kid makes the proxy refetch.
    server.set(200, jwks(&[&k2]));
    let fetches = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    eventually_ok("the rotated key is fetched on an unknown kid", addr, &t2).await;
    assert!(server.hits.load(std::sync::atomic::Ordering::SeqCst) > fetches);
    let old = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    // Keep-last-good holds over https too: the server fails, the set stays.
    server.set(503, String::new());
    let k3 = es256("k3");
    let t3 = sign(&k3, claims(serde_json::json!({})));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get_with(addr, "/p", &[("authorization", &bearer(&t3))]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let still = get_with(addr, "/p", &[("authorization", &bearer(&t2))]).await;
    assert_eq!(still.status, StatusCode::OK);
}

#[tokio::test]
async fn an_https_key_set_server_that_is_not_trusted_fails_closed() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let k1 = es256("k1");
    let t1 = sign(&k1, claims(serde_json::json!({})));
    let ca = Ca::new();
    // 1. A CA the proxy was not given; 2. the trusted CA, but a certificate for another
    // name than the URI's host.
    let untrusted = JwksServer::start_tls(jwks(&[&k1]), ca.leaf(&["localhost"])).await;
    let other = Ca::new();
    let wrong_name = JwksServer::start_tls(jwks(&[&k1]), other.leaf(&["jwks.example"])).await;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(other.der())
    );
    for (i, server) in [&untrusted, &wrong_name].into_iter().enumerate() {
        let mut cfg = config();
        cfg.jwks_ca = weir_proxy::parse_pem_certs(pem.as_bytes()).unwrap();
        let uri = format!("https://localhost:{}/jwks", server.addr.port());
        let (_proxy, addr) = start_with(cfg, &up, remote_provider(17 + i as u64, uri)).await;
        // The fetcher did reach the server over TLS (a client hello arrived) …
        assert_eventually("a TLS fetch is tried", Duration::from_secs(5), || async {
            anyhow::ensure!(!server.snis.lock().unwrap().is_empty());
            Ok(())
        })
        .await;
        // … and for its retries (every 2 s) the route keeps refusing: never served
        // unauthenticated, never with the key set of an unverified server.
        for _ in 0..10 {
            let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "server {i}");
            let anonymous = get_with(addr, "/p", &[]).await;
            assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "server {i}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(
            server.hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no request was sent to server {i}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Authorization and CORS

pub(crate) fn rule(name: &str, allow: bool) -> AuthorizationRule {
    AuthorizationRule {
        name: name.into(),
        allow,
        methods: vec![],
        paths: vec![],
        client_cidrs: vec![],
        jwt: None,
        headers: vec![],
    }
}

#[tokio::test]
async fn authorization_by_cidr_claim_header_and_method() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let es = es256("es");
    let mut s = empty(7);
    s.jwt = Some(JwtAuth {
        optional: true,
        providers: vec![provider("local", local(&[&es]))],
    });
    let mut deny_delete = rule("no-delete", false);
    deny_delete.methods = vec![Method::DELETE];
    let mut admins = rule("admins", true);
    admins.jwt = Some(JwtPrincipal {
        provider: "local".into(),
        claims: vec![ClaimMatch {
            path: vec!["user".into(), "roles".into()],
            array: true,
            values: vec!["admin".into()],
        }],
        scopes: vec!["read".into()],
    });
    let mut other_net = rule("other-net", true);
    other_net.client_cidrs = vec![Cidr::parse("10.0.0.0/8").unwrap()];
    let mut header = rule("header", true);
    header.headers = vec![(HeaderName::from_static("x-team"), vec!["blue".into()])];
    header.client_cidrs = vec![Cidr::parse("127.0.0.0/8").unwrap()];
    s.authorization = Some(Authorization {
        default_allow: false,
        rules: vec![deny_delete, admins, other_net, header],
    });
    let (_proxy, addr) = start(&up, s).await;
    let admin = sign(&es, claims(serde_json::json!({})));
    let user = sign(
        &es,
        claims(serde_json::json!({"user": {"roles": ["viewer"]}})),
    );

    let r = get_with(addr, "/p", &[("authorization", &bearer(&admin))]).await;
    assert_eq!(r.status, StatusCode::OK, "admin claim");
    let r = get_with(addr, "/p", &[("authorization", &bearer(&user))]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "viewer, default deny");
    let r = get_with(addr, "/p", &[("x-team", "blue")]).await;
    assert_eq!(r.status, StatusCode::OK, "header and loopback CIDR");
    let r = get_with(addr, "/p", &[("x-team", "red")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let del = send(
        addr,
        request("a.example", "/p")
            .method(Method::DELETE)
            .header("authorization", bearer(&admin))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(del.status, StatusCode::FORBIDDEN, "the first rule decides");
}

#[tokio::test]
async fn a_preflight_is_answered_without_credentials_and_answers_carry_cors_headers() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let es = es256("es");
    let mut s = empty(8);
    s.cors = Some(Cors {
        allow_origins: Arc::from([OriginPattern::parse("https://app.example").unwrap()]),
        allow_methods: CorsList::List(http::HeaderValue::from_static("GET, POST")),
        allow_headers: CorsList::Any,
        expose_headers: CorsList::Unset,
        max_age: Some(http::HeaderValue::from_static("600")),
        allow_credentials: true,
    });
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider("local", local(&[&es]))],
    });
    let (_proxy, addr) = start(&up, s).await;
    let preflight = send(
        addr,
        request("a.example", "/p")
            .method(Method::OPTIONS)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(preflight.status, StatusCode::OK);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        preflight.headers["access-control-allow-methods"],
        "GET, POST"
    );
    assert_eq!(preflight.headers["access-control-max-age"], "600");
    assert_eq!(echo.received.load(std::sync::atomic::Ordering::SeqCst), 0);
    // An actual request still needs its token, and gets the CORS headers.
    let token = sign(&es, claims(serde_json::json!({})));
    let r = get_with(
        addr,
        "/p",
        &[
            ("origin", "https://app.example"),
            ("authorization", &bearer(&token)),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    let anonymous = get_with(addr, "/p", &[("origin", "https://app.example")]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// A refusal (401 from authentication, 403 from authorization) on a route with CORS carries
/// the CORS response headers for an allowed Origin, so a browser can read it; its status,
/// body and challenge are the error table's. No Origin, or one CORS does not allow: the
/// same refusal without them.
#[tokio::test]
async fn refusals_carry_cors_headers_for_an_allowed_origin() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let es = es256("es");
    let mut s = empty(9);
    s.cors = Some(Cors {
        allow_origins: Arc::from([OriginPattern::parse("https://app.example").unwrap()]),
        allow_methods: CorsList::List(http::HeaderValue::from_static("GET")),
        allow_headers: CorsList::Any,
        expose_headers: CorsList::List(http::HeaderValue::from_static("www-authenticate")),
        max_age: None,
        allow_credentials: true,
    });
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider("local", local(&[&es]))],
    });
    let mut only_blue = rule("blue", true);
    only_blue.headers = vec![(HeaderName::from_static("x-team"), vec!["blue".into()])];
    s.authorization = Some(Authorization {
        default_allow: false,
        rules: vec![only_blue],
    });
    let (proxy, addr) = start(&up, s).await;
    let origin = ("origin", "https://app.example");
    let cors_of = |r: &Resp| {
        (
            r.headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_string()),
            r.headers
                .get("access-control-allow-credentials")
                .map(|v| v.to_str().unwrap().to_string()),
            r.headers
                .get("access-control-expose-headers")
                .map(|v| v.to_str().unwrap().to_string()),
        )
    };
    let full = (
        Some("https://app.example".to_string()),
        Some("true".to_string()),
        Some("www-authenticate".to_string()),
    );

    // 401: no token.
    let r = get_with(addr, "/p", &[origin]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(cors_of(&r), full);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
    assert_eq!(r.headers.get_all("vary").iter().count(), 1);
    // 401: a bad token.
    let r = get_with(addr, "/p", &[origin, ("authorization", "Bearer x.y.z")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(cors_of(&r), full);
    // 403: authorization.
    let token = sign(&es, claims(serde_json::json!({})));
    let auth = bearer(&token);
    let r = get_with(
        addr,
        "/p",
        &[origin, ("authorization", &auth), ("x-team", "red")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(cors_of(&r), full);
    let r = get_with(
        addr,
        "/p",
        &[origin, ("authorization", &auth), ("x-team", "blue")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(cors_of(&r), full);
    // An Origin CORS does not allow, and no Origin: the refusal alone.
    for headers in [&[("origin", "https://evil.example")][..], &[]] {
        let r = get_with(addr, "/p", headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(cors_of(&r), (None, None, None), "{headers:?}");
        assert!(r.headers.contains_key("www-authenticate"));
    }
    // Still counted as the refusals they are, whichever way they were answered.
    let count = |reason| proxy.metric("weir_request_errors_total", &[("reason", reason)]);
    assert_eq!(count("unauthenticated"), 4.0);
    assert_eq!(count("forbidden"), 1.0);
}

/// A 429 of the local rate limit on a route with the policy's `cors` carries the CORS
/// headers for an allowed Origin too (phase 6 on local answers).
#[tokio::test]
async fn a_rate_limited_answer_carries_cors_headers() {
    use weir_snapshot::{BackendPolicy, Limit, RateLimit, RateLimitRule};
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let mut s = empty(10);
    s.cors = Some(Cors {
        allow_origins: Arc::from([OriginPattern::parse("https://app.example").unwrap()]),
        allow_methods: CorsList::Unset,
        allow_headers: CorsList::Unset,
        expose_headers: CorsList::Unset,
        max_age: None,
        allow_credentials: false,
    });
    let a = secured(&up, s);
    let limited = Arc::new(RouteAction {
        route: a.route.clone(),
        filters: a.filters.clone(),
        backends: a.backends.clone(),
        total_weight: a.total_weight,
        timeouts: a.timeouts,
        policy: Some(Arc::new(
            BackendPolicy {
                name: "ns/p".into(),
                id: 13,
                rate_limit: Some(RateLimit {
                    scope: 98,
                    local: vec![RateLimitRule {
                        selectors: Vec::new(),
                        limit: Limit {
                            requests: 1,
                            unit: Duration::from_secs(60),
                        },
                        shared: false,
                        id: 1,
                    }]
                    .into(),
                    global: Arc::from(Vec::new()),
                }),
                ..BackendPolicy::default()
            }
            .compiled(),
        )),
        security: a.security.clone(),
        ext_proc: a.ext_proc.clone(),
        ext_auth: None,
    });
    let port = free_port();
    let snap = snapshot(
        1,
        vec![socket(
            port,
            vec![listener("ns/gw", None, vec![(None, prefix("/p", limited))])],
        )],
    );
    let proxy = TestProxy::start(config(), snap).await;
    let addr = proxy.addr(port);
    let origin = [("origin", "https://app.example")];
    let r = get_with(addr, "/p", &origin).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get_with(addr, "/p", &origin).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(r.headers.contains_key("retry-after"));
    let r = get_with(addr, "/p", &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

// ---------------------------------------------------------------------------------------
// The verified-token cache

fn jwt_count(proxy: &TestProxy, result: &str) -> f64 {
    proxy.metric("weir_jwt_verifications_total", &[("result", result)])
}

#[tokio::test]
async fn a_verified_token_is_reused_until_it_expires_and_other_bytes_are_verified() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (es, forger) = (es256("es"), es256("es"));
    let mut s = empty(20);
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider("local", local(&[&es]))],
    });
    let (proxy, addr) = start(&up, s).await;
    let call = |token: String| async move {
        get_with(addr, "/p", &[("authorization", &bearer(&token))]).await
    };
    let c = claims(serde_json::json!({}));
    let token = sign(&es, c.clone());
    for _ in 0..5 {
        let r = call(token.clone()).await;
        assert_eq!(r.status, StatusCode::OK);
        // The claims come from the cache as they came from the verification.
        assert_eq!(r.seen_header("x-sub").as_deref(), Some("u-1"));
    }
    assert_eq!(jwt_count(&proxy, "verified"), 1.0);
    assert_eq!(jwt_count(&proxy, "cached"), 4.0);

    // Same header and claims, another signature (another key with the same kid): other
    // bytes, verified, refused.
    let forged = sign(&forger, c);
    let cut = |t: &str| t.rsplit_once('.').map(|(hp, _)| hp.to_string());
    assert_eq!(cut(&forged), cut(&token));
    assert_ne!(forged, token);
    assert_eq!(call(forged).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(jwt_count(&proxy, "failed"), 1.0);
    // A failure is not cached either: the cached token still passes, the forged one fails
    // again through a full verification.
    assert_eq!(call(token.clone()).await.status, StatusCode::OK);
    assert_eq!(jwt_count(&proxy, "cached"), 5.0);

    // A token 58 s past its exp still passes (60 s skew), from the cache the second time;
    // once exp + skew has passed it is refused even though it is cached.
    let exp = now() - 58;
    let short = sign(&es, claims(serde_json::json!({"exp": exp})));
    assert_eq!(call(short.clone()).await.status, StatusCode::OK);
    let cached = jwt_count(&proxy, "cached");
    assert_eq!(call(short.clone()).await.status, StatusCode::OK);
    assert_eq!(
        jwt_count(&proxy, "cached"),
        cached + 1.0,
        "served from the cache"
    );
    while now() <= exp + 61 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = call(short).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    assert_eq!(jwt_count(&proxy, "cached"), cached + 1.0);
}

#[tokio::test]
async fn a_rotated_key_set_invalidates_cached_tokens() {
    let echo = Echo::start("e").await;
    let up = upstream("svc", &[echo.addr]);
    let (k1, k2) = (es256("k1"), es256("k2"));
    let t1 = sign(&k1, claims(serde_json::json!({})));
    let t2 = sign(&k2, claims(serde_json::json!({})));

    // Remote: the server rotates from k1 to k2.
    let server = JwksServer::start(jwks(&[&k1])).await;
    let mut s = empty(21);
    s.jwt = Some(JwtAuth {
        optional: false,
        providers: vec![provider(
            "remote",
            JwtKeys::Remote {
                uri: format!("http://{}/jwks", server.addr).into(),
                cache_duration: Duration::from_secs(300),
                backend: None,
            },
        )],
    });
    let (proxy, addr) = start(&up, s).await;
    assert_eventually("the key set is fetched", Duration::from_secs(5), || {
        let t1 = t1.clone();
        async move {
            let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
            anyhow::ensure!(r.status == StatusCode::OK, "{}", r.status);
            Ok(())
        }
    })
    .await;
    let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(jwt_count(&proxy, "cached") >= 1.0, "t1 is cached");
    server.set(200, jwks(&[&k2]));
    // A token of an unknown kid (refused, so nothing new is cached) makes the proxy fetch
    // the rotated set; from then on the cached t1 is refused.
    let t3 = sign(&es256("k3"), claims(serde_json::json!({})));
    assert_eventually(
        "t1 is refused after the rotation",
        Duration::from_secs(10),
        || {
            let (t1, t3) = (t1.clone(), t3.clone());
            async move {
                let r = get_with(addr, "/p", &[("authorization", &bearer(&t3))]).await;
                anyhow::ensure!(r.status == StatusCode::UNAUTHORIZED, "t3: {}", r.status);
                let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
                anyhow::ensure!(r.status == StatusCode::UNAUTHORIZED, "t1: {}", r.status);
                Ok(())
            }
        },
    )
    .await;
    let r = get_with(addr, "/p", &[("authorization", &bearer(&t2))]).await;
    assert_eq!(r.status, StatusCode::OK);
    drop(proxy);

    // Local: the same policy id, its JWKS (a changed ConfigMap) now k2 only.
    let policy = |keys: &[&TestKey]| {
        let mut s = empty(22);
        s.jwt = Some(JwtAuth {
            optional: false,
            providers: vec![provider("local", local(keys))],
        });
        s
    };
    let port = free_port();
    let snap = |generation: u64, keys: &[&TestKey]| {
        snapshot(
            generation,
            vec![socket(
                port,
                vec![listener(
                    "ns/gw",
                    None,
                    vec![(None, prefix("/p", secured(&up, policy(keys))))],
                )],
            )],
        )
    };
    let proxy = TestProxy::start(config(), snap(1, &[&k1])).await;
    let addr = proxy.addr(port);
    for _ in 0..2 {
        let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(jwt_count(&proxy, "cached"), 1.0);
    proxy.swap(snap(2, &[&k2]));
    let r = get_with(addr, "/p", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "t1 was cached under k1");
    let r = get_with(addr, "/p", &[("authorization", &bearer(&t2))]).await;
    assert_eq!(r.status, StatusCode::OK);
}
