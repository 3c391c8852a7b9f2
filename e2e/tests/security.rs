//! SecurityPolicy as users write it (issue 23): YAML with Secrets in the config directory of
//! a running weir; basic auth, API key and JWT (HS256 with a secret generated now) over real
//! sockets; fail closed on a missing Secret; `weir check` printing the status; and no
//! credential in any admin endpoint or the log. (Each mechanism in detail:
//! crates/weir-proxy/tests/proxy/security.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use weir_e2e::{policy_accepted_when, wait_ready, WAIT};
use weir_testkit::assert_eventually;
use weir_testkit::client::{http1, Req};
use weir_testkit::process::{bin, echo, weir, Weir};

/// Random bytes, base64url (no padding): test-time credentials.
fn random(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

struct Creds {
    password: String,
    /// `{SHA}` of the password, as `htpasswd -s` writes it.
    sha: String,
    api_key: String,
    /// The HS256 secret, base64url (the JWK's `k`).
    hmac_k: String,
}

impl Creds {
    fn new() -> Creds {
        let password = random(12);
        // {SHA}: base64 of SHA-1 — computed by the weir-independent `openssl` would do too;
        // the proxy's own unit tests pin the vectors, here any value weir accepts works.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s '{password}' | openssl dgst -sha1 -binary | base64"
            ))
            .output()
            .unwrap();
        let sha = format!("{{SHA}}{}", String::from_utf8_lossy(&out.stdout).trim());
        Creds {
            password,
            sha,
            api_key: random(24),
            hmac_k: random(32),
        }
    }

    fn token(&self, exp_from_now: i64) -> String {
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.hmac_k)
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("local".into());
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({"iss": "https://issuer.test", "sub": "u-7", "exp": now + exp_from_now}),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap()
    }

    fn basic(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", self.password))
        )
    }
}

fn write_policy(dir: &Path, c: &Creds, users_secret: &str) {
    let jwks = format!(
        r#"{{"keys":[{{"kty":"oct","kid":"local","alg":"HS256","k":"{}"}}]}}"#,
        c.hmac_k
    );
    std::fs::write(
        dir.join("security.yaml"),
        format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: users, namespace: default}}
stringData:
  .htpasswd: 'alice:{sha}'
---
apiVersion: v1
kind: Secret
metadata: {{name: api-keys, namespace: default}}
stringData: {{team-a: '{key}'}}
---
apiVersion: gateway.weir.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: auth, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: demo-route}}]
  basicAuth: {{users: {{name: {users_secret}}}, forwardUsernameHeader: x-user}}
  apiKeyAuth:
    credentialRefs: [{{name: api-keys}}]
    extractFrom: [{{headers: [x-api-key]}}]
    forwardClientIDHeader: x-client
    sanitize: true
  jwt:
    providers:
    - name: local
      issuer: https://issuer.test
      localJWKS: {{type: Inline, inline: '{jwks}'}}
      claimToHeaders: [{{header: x-sub, claim: sub}}]
      extractFrom: {{headers: [{{name: x-jwt}}]}}
",
            sha = c.sha,
            key = c.api_key,
        ),
    )
    .unwrap();
}

/// SecurityPolicy `name`'s `Accepted` condition, once it has one.
async fn accepted(weir: &Weir, name: &str) -> serde_json::Value {
    policy_accepted_when(weir, "the policy's status", "SecurityPolicy", name, |c| {
        !c.is_null()
    })
    .await
}

async fn get(
    weir: &Weir,
    headers: Vec<(&str, &str)>,
) -> (u16, Option<serde_json::Value>, Option<String>) {
    let mut req = Req::get("demo.ingress.top", "/headers");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = http1(weir.listener(80), &req).await.unwrap();
    let json = (r.status == 200).then(|| r.json());
    (
        r.status.as_u16(),
        json,
        r.header("www-authenticate").map(str::to_string),
    )
}

#[tokio::test]
async fn a_security_policy_authenticates_fails_closed_and_never_shows_a_secret() {
    let backend = echo("go-httpbin-1", "default");
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let c = Creds::new();
    write_policy(dir.path(), &c, "users");
    let weir = weir(dir.path(), &[80], &["--log-level", "debug"]);
    wait_ready(&weir).await;
    let cond = accepted(&weir, "auth").await;
    assert_eq!(cond["status"], "True", "{cond}");

    let (basic, token, key) = (c.basic(), c.token(300), c.api_key.clone());
    assert_eventually("the policy applied", WAIT, || async {
        let (status, _, _) = get(&weir, vec![]).await;
        (status == 401)
            .then_some(())
            .ok_or(format!("status {status}"))
    })
    .await;
    let all = vec![
        ("authorization", basic.as_str()),
        ("x-api-key", key.as_str()),
        ("x-jwt", token.as_str()),
    ];
    let (status, json, _) = get(&weir, all.clone()).await;
    assert_eq!(status, 200);
    let seen = &json.unwrap()["headers"];
    let first = |h: &str| seen[h][0].as_str().map(str::to_string);
    assert_eq!(first("X-User").as_deref(), Some("alice"), "{seen}");
    assert_eq!(first("X-Client").as_deref(), Some("team-a"), "{seen}");
    assert_eq!(first("X-Sub").as_deref(), Some("u-7"), "{seen}");
    for gone in ["Authorization", "X-Api-Key", "X-Jwt"] {
        assert!(seen.get(gone).is_none(), "{gone} forwarded: {seen}");
    }
    // Each mechanism is needed.
    for missing in 0..3 {
        let mut some = all.clone();
        some.remove(missing);
        let (status, _, _) = get(&weir, some).await;
        assert_eq!(status, 401, "without {:?}", all[missing].0);
    }
    let expired = c.token(-3600);
    let (status, _, challenge) = get(
        &weir,
        vec![
            ("authorization", &basic),
            ("x-api-key", &key),
            ("x-jwt", &expired),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("invalid_token"));
    // Another route pays nothing.
    let r = http1(
        weir.listener(80),
        &Req::get("filter.ingress.top", "/headers"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);

    // Fail closed: the users Secret is missing → Accepted=False, and the route answers 500
    // even to a request with every credential.
    write_policy(dir.path(), &c, "no-such-secret");
    assert_eventually("Invalid status", WAIT, || async {
        let cond = accepted(&weir, "auth").await;
        (cond["status"] == "False" && cond["reason"] == "Invalid")
            .then_some(())
            .ok_or(format!("{cond}"))
    })
    .await;
    assert_eventually("the route fails closed", WAIT, || async {
        let (status, _, _) = get(&weir, all.clone()).await;
        (status == 500)
            .then_some(())
            .ok_or(format!("status {status}"))
    })
    .await;
    let out = Command::new(bin("weir"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("SecurityPolicy default/auth"), "{text}");
    assert!(
        text.contains("Invalid") && text.contains("no-such-secret"),
        "{text}"
    );

    // No credential anywhere an operator or a scraper can look.
    let mut seen = String::new();
    for path in ["/status", "/debug/snapshot", "/metrics"] {
        let r = http1(weir.admin, &Req::get("admin", path)).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        seen.push_str(&r.text());
    }
    assert!(
        seen.contains("default/auth"),
        "the policy is in the snapshot dump"
    );
    seen.push_str(&weir.proc.stdout.lock().unwrap().join("\n"));
    seen.push_str(&weir.proc.stderr.lock().unwrap().join("\n"));
    seen.push_str(&text);
    let sha_b64 = c.sha.trim_start_matches("{SHA}").to_string();
    for (what, secret) in [
        ("password", &c.password),
        ("htpasswd hash", &sha_b64),
        ("API key", &c.api_key),
        ("HS256 secret", &c.hmac_k),
        ("token", &token),
    ] {
        assert!(
            !seen.contains(secret.as_str()),
            "the {what} appears in an admin endpoint or the log"
        );
    }
}

// ---- SecurityPolicy extAuth (HTTP and gRPC auth services from weir-testkit, in this
// process, on real sockets) ----

use std::time::Duration;
use weir_e2e::service_yaml;
use weir_testkit::ext_auth::AuthServer;

/// An HTTPRoute `name` for `name.ingress.top` to go-httpbin, and a SecurityPolicy `name`
/// on it with `ext_auth` (the YAML under `extAuth:`, indented by 4) and `more` (other
/// top-level spec fields, indented by 2).
fn ext_auth_route(name: &str, ext_auth: &str, more: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: weir}}]
  hostnames: [{name}.ingress.top]
  rules:
  - backendRefs: [{{name: go-httpbin, port: 80}}]
---
apiVersion: gateway.weir.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {name}}}]
  extAuth:
{ext_auth}
{more}"
    )
}

async fn send(weir: &Weir, req: &Req<'_>) -> weir_testkit::client::Reply {
    http1(weir.listener(80), req).await.unwrap()
}

/// Waits until the route `host` answers `GET /headers` with an allowed bearer token with
/// 200 (the translation applied).
async fn serving(weir: &Weir, host: &str) {
    assert_eventually("the route served", WAIT, || async {
        let r = send(
            weir,
            &Req::get(host, "/headers").header("authorization", "Bearer allow"),
        )
        .await;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("status {} {}", r.status, r.text()))
    })
    .await;
}

/// What go-httpbin saw of header `h` (first value).
fn upstream_header(r: &weir_testkit::client::Reply, h: &str) -> Option<String> {
    r.json()["headers"][h][0].as_str().map(str::to_string)
}

#[tokio::test]
async fn security_policy_http_ext_auth_allows_denies_injects_and_times_out() {
    let backend = echo("go-httpbin-1", "default");
    let auth = AuthServer::start_http().await;
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let http = "    http:
      backendRefs: [{name: auth-http, port: 80}]
      path: /check
      headersToBackend: [x-current-user, x-auth-path, x-auth-body]
    headersToExtAuth: [x-auth-delay-ms]
    timeout: 500ms";
    let yaml = [
        service_yaml("default", "auth-http", 80, &[auth.addr]),
        ext_auth_route(
            "xa-http",
            &format!("{http}\n    bodyToExtAuth: {{maxRequestBytes: 32}}"),
            "",
        ),
        ext_auth_route("xa-open", &format!("{http}\n    failOpen: true"), ""),
        ext_auth_route(
            "xa-cors",
            http,
            "  cors: {allowOrigins: ['https://app.example'], exposeHeaders: [www-authenticate]}",
        ),
    ]
    .join("\n---\n");
    std::fs::write(dir.path().join("auth.yaml"), yaml).unwrap();
    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    for name in ["xa-http", "xa-open", "xa-cors"] {
        let cond = accepted(&weir, name).await;
        assert_eq!(cond["status"], "True", "{name}: {cond}");
    }
    serving(&weir, "xa-http.ingress.top").await;

    // Allowed: the auth service saw the request under its path, the upstream gets the
    // listed answer headers (and not the unlisted one), the body goes to both.
    let body = b"hello body";
    let r = send(
        &weir,
        &Req {
            method: "POST",
            body,
            ..Req::get("xa-http.ingress.top", "/anything/x?q=1")
        }
        .header("authorization", "Bearer allow"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = auth.last().unwrap();
    assert_eq!(seen.path, "/check/anything/x?q=1");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, body);
    assert_eq!(
        upstream_header(&r, "X-Current-User").as_deref(),
        Some("alice")
    );
    assert_eq!(upstream_header(&r, "X-Auth-Body").as_deref(), Some("10"));
    // The buffered body still goes upstream, with its exact length.
    assert_eq!(upstream_header(&r, "Content-Length").as_deref(), Some("10"));
    assert!(
        r.json()["headers"].get("X-Auth-Unlisted").is_none(),
        "{}",
        r.text()
    );
    // Over bodyToExtAuth.maxRequestBytes: refused before the check.
    let checks = auth.count();
    let big = [b'x'; 64];
    let r = send(
        &weir,
        &Req {
            method: "POST",
            body: &big,
            ..Req::get("xa-http.ingress.top", "/anything")
        }
        .header("authorization", "Bearer allow"),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(auth.count(), checks, "no check for a refused body");

    // Denied: the auth service's status, headers and body reach the client; the upstream
    // is not reached.
    let r = send(&weir, &Req::get("xa-http.ingress.top", "/headers")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"weir-test\"")
    );
    assert_eq!(r.text(), "denied by ext auth");
    let r = send(
        &weir,
        &Req::get("xa-http.ingress.top", "/headers").header("authorization", "Bearer forbidden"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-auth-reason"), Some("forbidden"));
    assert_eq!(r.text(), "forbidden by ext auth");

    // Timeout (500ms): closed refuses with 403 (Envoy's status_on_error), open lets the
    // request through without the answer's headers.
    let slow = |host| {
        Req::get(host, "/headers")
            .header("authorization", "Bearer allow")
            .header("x-auth-delay-ms", "3000")
    };
    let started = std::time::Instant::now();
    let r = send(&weir, &slow("xa-http.ingress.top")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), "external authorization failed\n");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let r = send(&weir, &slow("xa-open.ingress.top")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream_header(&r, "X-Current-User"), None);
    // failOpen lets a service failure through, never a denial.
    let r = send(&weir, &Req::get("xa-open.ingress.top", "/headers")).await;
    assert_eq!(r.status, 401);
    // With the policy's `cors`, the auth service's denial and a failed check carry the CORS
    // headers for an allowed Origin (a browser can read them); a preflight needs no check.
    let origin = ("origin", "https://app.example");
    let r = send(
        &weir,
        &Req::get("xa-cors.ingress.top", "/headers").header(origin.0, origin.1),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "denied by ext auth");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("www-authenticate")
    );
    let r = send(
        &weir,
        &slow("xa-cors.ingress.top").header(origin.0, origin.1),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = send(
        &weir,
        &Req::get("xa-cors.ingress.top", "/headers").header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let checks = auth.count();
    let r = send(
        &weir,
        &Req {
            method: "OPTIONS",
            ..Req::get("xa-cors.ingress.top", "/headers")
        }
        .header(origin.0, origin.1)
        .header("access-control-request-method", "GET"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(auth.count(), checks, "a preflight is not checked");
    // A route without the policy never reaches the auth service.
    let checks = auth.count();
    let r = send(&weir, &Req::get("demo.ingress.top", "/headers")).await;
    assert_eq!(r.status, 200);
    assert_eq!(auth.count(), checks);
}

#[tokio::test]
async fn security_policy_grpc_ext_auth_allows_denies_and_fails_open_or_closed() {
    let backend = echo("go-httpbin-1", "default");
    let auth = AuthServer::start_grpc().await;
    // A port nothing listens on: the service "fails" at once.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let yaml = [
        service_yaml("default", "auth-grpc", 90, &[auth.addr]),
        service_yaml("default", "auth-dead", 91, &[dead]),
        ext_auth_route(
            "xa-grpc",
            "    grpc: {backendRefs: [{name: auth-grpc, port: 90}]}\n    timeout: 500ms",
            "",
        ),
        ext_auth_route(
            "xa-dead",
            "    grpc: {backendRef: {name: auth-dead, port: 91}}",
            "",
        ),
        ext_auth_route(
            "xa-dead-open",
            "    grpc: {backendRef: {name: auth-dead, port: 91}}\n    failOpen: true",
            "",
        ),
    ]
    .join("\n---\n");
    std::fs::write(dir.path().join("auth.yaml"), yaml).unwrap();
    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    for name in ["xa-grpc", "xa-dead", "xa-dead-open"] {
        let cond = accepted(&weir, name).await;
        assert_eq!(cond["status"], "True", "{name}: {cond}");
    }
    serving(&weir, "xa-grpc.ingress.top").await;

    let r = send(
        &weir,
        &Req::get("xa-grpc.ingress.top", "/headers")
            .header("authorization", "Bearer allow")
            .header("x-remove-me", "gone"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        upstream_header(&r, "X-Current-User").as_deref(),
        Some("alice")
    );
    assert_eq!(
        upstream_header(&r, "X-Auth-Path").as_deref(),
        Some("/headers")
    );
    assert_eq!(
        upstream_header(&r, "X-Remove-Me"),
        None,
        "the answer removes it"
    );
    assert_eq!(auth.last().unwrap().path, "/headers");
    let r = send(&weir, &Req::get("xa-grpc.ingress.top", "/headers")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"weir-test\"")
    );
    assert_eq!(r.text(), "denied by ext auth");
    let r = send(
        &weir,
        &Req::get("xa-grpc.ingress.top", "/headers").header("authorization", "Bearer forbidden"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "forbidden by ext auth");
    // Timeout, closed.
    let r = send(
        &weir,
        &Req::get("xa-grpc.ingress.top", "/headers")
            .header("authorization", "Bearer allow")
            .header("x-auth-delay-ms", "3000"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // An unreachable service: closed refuses, open serves.
    let allow = |host| Req::get(host, "/headers").header("authorization", "Bearer allow");
    let r = send(&weir, &allow("xa-dead.ingress.top")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = send(&weir, &allow("xa-dead-open.ingress.top")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream_header(&r, "X-Current-User"), None);
}

/// An extAuth whose auth Service does not exist: Accepted=False (Invalid, naming it), and
/// the route answers 500 to every request, even one the service would allow. Adding the
/// Service makes it Accepted and serving.
#[tokio::test]
async fn an_invalid_ext_auth_fails_closed() {
    let backend = echo("go-httpbin-1", "default");
    let auth = AuthServer::start_http().await;
    let dir = weir_e2e::http_quickstart_dir(backend.addr.port());
    let route = ext_auth_route(
        "xa-bad",
        "    http: {backendRefs: [{name: auth-missing, port: 80}]}",
        "",
    );
    std::fs::write(dir.path().join("auth.yaml"), &route).unwrap();
    let weir = weir(dir.path(), &[80], &[]);
    wait_ready(&weir).await;
    let cond = accepted(&weir, "xa-bad").await;
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("Invalid")),
        "{cond}"
    );
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("default/auth-missing"),
        "{cond}"
    );
    let allow = Req::get("xa-bad.ingress.top", "/headers").header("authorization", "Bearer allow");
    assert_eventually("the route fails closed", WAIT, || async {
        let r = send(&weir, &allow).await;
        (r.status == 500)
            .then_some(())
            .ok_or(format!("status {}", r.status))
    })
    .await;
    assert_eq!(auth.count(), 0);
    std::fs::write(
        dir.path().join("auth.yaml"),
        [
            service_yaml("default", "auth-missing", 80, &[auth.addr]),
            route,
        ]
        .join("\n---\n"),
    )
    .unwrap();
    serving(&weir, "xa-bad.ingress.top").await;
    assert_eq!(accepted(&weir, "xa-bad").await["status"], "True");
}
