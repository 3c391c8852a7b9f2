//! SecurityPolicy as users write it, for issue 23's last two mechanisms: `authorization`
//! by path (`operation.paths`; an invalid regular expression makes the policy
//! `Accepted=False` and its route fail closed) and `remoteJWKS.backendRefs` (the key set
//! fetched through a Service's endpoints; a missing Service fails closed; rotation through
//! it). Real weir process, file mode, real sockets. (Each in detail:
//! crates/weir-proxy/tests/proxy/security_authz.rs and security_jwks.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use weir_e2e::{policy_accepted_when, service_yaml, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{echo, weir, Weir};

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: guarded, namespace: default}
spec:
  parentRefs: [{name: weir}]
  hostnames: [guarded.ingress.top]
  rules:
  - backendRefs: [{name: go-httpbin, port: 80}]
---
apiVersion: gateway.weir.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: guard, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: guarded}]
";

fn write(dir: &Path, spec: &str, more: &str) {
    std::fs::write(
        dir.join("guarded.yaml"),
        format!("{ROUTE}{spec}\n---\n{more}"),
    )
    .unwrap();
}

async fn accepted_is(weir: &Weir, status: &str, needle: &str) {
    policy_accepted_when(
        weir,
        "the policy's status",
        "SecurityPolicy",
        "guard",
        |c| c["status"] == status && c["message"].as_str().unwrap_or("").contains(needle),
    )
    .await;
}

async fn status_of_get(weir: &Weir, path: &str, token: Option<&str>) -> u16 {
    let mut req = Req::get("guarded.ingress.top", path);
    let bearer = token.map(|t| format!("Bearer {t}"));
    if let Some(b) = &bearer {
        req = req.header("authorization", b);
    }
    http1(weir.listener(80), &req)
        .await
        .unwrap()
        .status
        .as_u16()
}

async fn eventually_status(weir: &Weir, path: &str, token: Option<&str>, want: u16) {
    assert_eventually("the route's answer", WAIT, || async {
        let got = status_of_get(weir, path, token).await;
        (got == want)
            .then_some(())
            .ok_or(format!("{path}: status {got}, want {want}"))
    })
    .await
}

#[tokio::test]
async fn authorization_by_path_and_an_invalid_regex_fails_closed() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let policy = |re: &str| {
        format!(
            "  authorization:
    defaultAction: Allow
    rules:
    - name: no-admin
      action: Deny
      principal: {{clientCIDRs: [0.0.0.0/0]}}
      operation:
        methods: [GET]
        paths: [{{type: RegularExpression, value: '{re}'}}, {{type: Exact, value: /status/418}}]"
        )
    };
    write(dir.path(), &policy("/anything/admin(/.*"), "");
    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    accepted_is(&weir, "False", "rules[0].operation.paths[0].value").await;
    // Fail closed: every request of the route gets 500, not the backend.
    eventually_status(&weir, "/headers", None, 500).await;

    write(dir.path(), &policy("/anything/admin(/.*)?"), "");
    accepted_is(&weir, "True", "").await;
    eventually_status(&weir, "/headers", None, 200).await;
    for denied in [
        "/anything/admin",
        "/anything/admin/x",
        "/anything/x/../admin",
        "/status/418",
    ] {
        assert_eq!(status_of_get(&weir, denied, None).await, 403, "{denied}");
    }
    assert_eq!(
        status_of_get(&weir, "/anything/administrator", None).await,
        200
    );
}

// ---- remoteJWKS through a Service ----

/// An Ed25519 key generated with openssl now: its signing key and public JWK.
struct Key {
    enc: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

fn ed25519(kid: &str) -> Key {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("k.pem");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .status()
        .unwrap();
    assert!(ok.success());
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .unwrap()
        .stdout;
    // SubjectPublicKeyInfo of Ed25519: a 12-byte header, then the 32-byte key.
    let x = &der[der.len() - 32..];
    // The private key as PKCS#8 DER.
    let private = Command::new("openssl")
        .args(["pkey", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .unwrap()
        .stdout;
    Key {
        enc: jsonwebtoken::EncodingKey::from_ed_der(&private),
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x)}),
    }
}

fn jwks(k: &Key) -> String {
    serde_json::json!({"keys": [k.jwk.clone()]}).to_string()
}

fn token(k: &Key) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = k.jwk["kid"].as_str().map(str::to_string);
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": "https://idp.test", "sub": "u-9", "exp": now + 300}),
        &k.enc,
    )
    .unwrap()
}

/// Serves `body` on every path and records each request's Host.
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    hosts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn jwks_server(body: String) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(Mutex::new(body));
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let (b, h) = (body.clone(), hosts.clone());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (b, h) = (b.clone(), h.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let host = req.headers().get("host").and_then(|v| v.to_str().ok());
                    h.lock()
                        .unwrap()
                        .push(format!("{} {}", host.unwrap_or(""), req.uri()));
                    let body = b.lock().unwrap().clone();
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    JwksServer {
        addr,
        body,
        hosts,
        task,
    }
}

#[tokio::test]
async fn a_remote_key_set_through_a_service_fails_closed_until_it_exists_and_rotates() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let (k1, k2) = (ed25519("k1"), ed25519("k2"));
    let server = jwks_server(jwks(&k1)).await;
    // The URI's host does not resolve (RFC 6761): only the Service reaches the server.
    let spec = "  jwt:
    providers:
    - name: idp
      issuer: https://idp.test
      remoteJWKS:
        uri: http://idp.invalid/keys/jwks.json
        backendRefs: [{name: idp, port: 80}]";
    write(dir.path(), spec, "");
    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    // No Service yet: Accepted=False naming it, and the route fails closed.
    accepted_is(&weir, "False", "remoteJWKS.backendRefs[0]").await;
    let t1 = token(&k1);
    eventually_status(&weir, "/headers", Some(&t1), 500).await;

    write(
        dir.path(),
        spec,
        &service_yaml("default", "idp", 80, &[server.addr]),
    );
    accepted_is(&weir, "True", "").await;
    eventually_status(&weir, "/headers", Some(&t1), 200).await;
    assert_eq!(status_of_get(&weir, "/headers", None).await, 401);
    let seen = server.hosts.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| s == "idp.invalid /keys/jwks.json"),
        "{seen:?}"
    );
    // Rotation through the Service: a token with the new kid makes weir fetch again.
    *server.body.lock().unwrap() = jwks(&k2);
    let t2 = token(&k2);
    eventually_status(&weir, "/headers", Some(&t2), 200).await;
    assert_eq!(status_of_get(&weir, "/headers", Some(&t1)).await, 401);
}
