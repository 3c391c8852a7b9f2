//! TLS to backends (BackendTLSPolicy) on real sockets: a TLS backend that reports what it
//! saw (SNI, ALPN, client certificate), the proxy verifying it with the policy's CA, hostname
//! or subjectAltNames, and presenting the Gateway's client certificate.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_snapshot::{
    AppProtocol, BackendTls, ClientCert, Endpoint, SubjectAltName, Upstream, UpstreamTls,
};

use crate::support::*;

/// A TLS backend answering JSON with the SNI, ALPN and client certificate it saw.
struct TlsBackend {
    addr: SocketAddr,
    /// TLS handshakes completed.
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    /// Serve `cert`; with `client_ca`, require a client certificate it issued.
    async fn start(cert: Arc<CertifiedKey>, client_ca: Option<&Ca>) -> TlsBackend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(ca.roots(), provider)
                    .build()
                    .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(cert)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let count = handshakes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let (_, conn) = tls.get_ref();
                    let seen = serde_json::json!({
                        "sni": conn.server_name(),
                        "alpn": conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
                        "client_cert": conn.peer_certificates().map(|c| c[0].as_ref().to_vec()),
                    })
                    .to_string();
                    let service = service_fn(move |_req: Request<Incoming>| {
                        let body = seen.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsBackend {
            addr,
            handshakes,
            task,
        }
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// An upstream reached over TLS with these settings.
fn tls_upstream(
    name: &str,
    addr: SocketAddr,
    id: u64,
    server_name: &str,
    roots: &Ca,
    sans: Vec<SubjectAltName>,
) -> Arc<Upstream> {
    let tls = BackendTls::Verify(Arc::new(UpstreamTls {
        id,
        server_name: ServerName::try_from(server_name.to_string()).unwrap(),
        roots: roots.roots(),
        subject_alt_names: sans.into(),
    }));
    Arc::new(Upstream::new(name, AppProtocol::Http1, vec![Endpoint { addr }]).with_tls(Some(tls)))
}

/// One HTTP listener on `port` with a prefix route per (path, upstream), presenting
/// `client_cert` to TLS backends.
async fn proxy(
    port: u16,
    routes: Vec<(&str, Arc<Upstream>)>,
    client_cert: Option<Arc<ClientCert>>,
) -> TestProxy {
    let entries = routes
        .into_iter()
        .map(|(path, u)| (None, prefix(path, forward_to(path, &u))))
        .collect();
    let mut l = listener("ns/gw", None, entries);
    l.backend_client_cert = client_cert;
    TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await
}

/// Collects what the proxy logs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// What the proxy logged in this test binary: a process-wide subscriber (a thread-local one
/// misses events when other tests' threads register the callsites first), so tests look for
/// lines naming their own upstreams.
fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        logs
    })
}

#[tokio::test]
async fn verifies_the_backend_with_the_policy_ca_and_hostname() {
    let logs = logs();
    let ca = Ca::new();
    let other_ca = Ca::new();
    let backend = TlsBackend::start(ca.leaf(&["abc.example.com"]), None).await;
    let port = free_port();
    let p = proxy(
        port,
        vec![
            (
                "/ok",
                tls_upstream("ns/ok:443", backend.addr, 1, "abc.example.com", &ca, vec![]),
            ),
            (
                "/wrong-ca",
                tls_upstream(
                    "ns/wrong-ca:443",
                    backend.addr,
                    2,
                    "abc.example.com",
                    &other_ca,
                    vec![],
                ),
            ),
            (
                "/wrong-name",
                tls_upstream(
                    "ns/wrong-name:443",
                    backend.addr,
                    3,
                    "mismatch.example.com",
                    &ca,
                    vec![],
                ),
            ),
        ],
        None,
    )
    .await;
    let addr = p.addr(port);

    let ok = get(addr, "x", "/ok").await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen = ok.json();
    assert_eq!(seen["sni"], "abc.example.com");
    assert_eq!(seen["alpn"], "http/1.1");
    assert!(seen["client_cert"].is_null());
    // Pooled: the next request reuses the verified connection.
    assert_eq!(get(addr, "x", "/ok").await.unwrap().status, 200);
    assert_eq!(backend.handshakes.load(Ordering::SeqCst), 1);

    let wrong_ca = get(addr, "x", "/wrong-ca").await.unwrap();
    assert_eq!(wrong_ca.status, 502, "{}", wrong_ca.body);
    let wrong_name = get(addr, "x", "/wrong-name").await.unwrap();
    assert_eq!(wrong_name.status, 502, "{}", wrong_name.body);
    assert_eq!(
        p.metric(
            "weir_upstream_connect_errors_total",
            &[("backend", "ns/wrong-ca:443")]
        ),
        1.0
    );
    let text = logs.text();
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("upstream TLS handshake failed"))
        .collect();
    assert!(
        failed
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("ns/wrong-ca:443")),
        "no error log for the wrong CA: {text}"
    );
    assert!(
        failed.iter().any(|l| l.contains("ns/wrong-name:443")),
        "no error log for the wrong name: {text}"
    );
}

#[tokio::test]
async fn subject_alt_names_replace_the_hostname_check() {
    let ca = Ca::new();
    let backend = TlsBackend::start(
        ca.leaf_with_uris(&["abc.example.com"], &["spiffe://abc.example.com/id"]),
        None,
    )
    .await;
    let uri = |u: &str| SubjectAltName::Uri(u.into());
    let host = |h: &str| SubjectAltName::Hostname(h.into());
    let port = free_port();
    let p = proxy(
        port,
        vec![
            // The SNI names nothing in the certificate; the URI SAN is what is checked.
            (
                "/uri",
                tls_upstream(
                    "ns/uri:443",
                    backend.addr,
                    1,
                    "sni.example.com",
                    &ca,
                    vec![uri("spiffe://abc.example.com/id")],
                ),
            ),
            (
                "/dns",
                tls_upstream(
                    "ns/dns:443",
                    backend.addr,
                    2,
                    "sni.example.com",
                    &ca,
                    vec![host("abc.example.com")],
                ),
            ),
            (
                "/miss",
                tls_upstream(
                    "ns/miss:443",
                    backend.addr,
                    3,
                    "abc.example.com",
                    &ca,
                    vec![uri("spiffe://def.example.com/id"), host("def.example.com")],
                ),
            ),
        ],
        None,
    )
    .await;
    let addr = p.addr(port);
    let by_uri = get(addr, "x", "/uri").await.unwrap();
    assert_eq!(by_uri.status, 200, "{}", by_uri.body);
    assert_eq!(by_uri.json()["sni"], "sni.example.com");
    assert_eq!(get(addr, "x", "/dns").await.unwrap().status, 200);
    // The hostname matches the certificate, but with SANs it is not what is verified.
    assert_eq!(get(addr, "x", "/miss").await.unwrap().status, 502);
}

fn client_cert(ca: &Ca) -> Arc<ClientCert> {
    Arc::new(ClientCert {
        id: 42,
        key: ca.leaf(&["gateway.example.com"]),
    })
}

#[tokio::test]
async fn presents_the_gateway_client_certificate_when_configured() {
    let ca = Ca::new();
    let client_ca = Ca::new();
    let backend = TlsBackend::start(ca.leaf(&["abc.example.com"]), Some(&client_ca)).await;
    let upstream = || {
        tls_upstream(
            "ns/mtls:443",
            backend.addr,
            1,
            "abc.example.com",
            &ca,
            vec![],
        )
    };

    let port = free_port();
    let cert = client_cert(&client_ca);
    let want = cert.key.cert[0].as_ref().to_vec();
    let with = proxy(port, vec![("/", upstream())], Some(cert)).await;
    let ok = get(with.addr(port), "x", "/").await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["client_cert"], serde_json::json!(want));

    // The same backend from a Gateway without a client certificate: refused.
    let port2 = free_port();
    let without = proxy(port2, vec![("/", upstream())], None).await;
    assert_eq!(
        get(without.addr(port2), "x", "/").await.unwrap().status,
        502
    );
}

#[tokio::test]
async fn settings_that_differ_never_share_a_pooled_connection() {
    let ca = Ca::new();
    let backend = TlsBackend::start(ca.leaf(&["a.example.com", "b.example.com"]), None).await;
    let port = free_port();
    let p = proxy(
        port,
        vec![
            (
                "/a",
                tls_upstream("ns/a:443", backend.addr, 1, "a.example.com", &ca, vec![]),
            ),
            (
                "/b",
                tls_upstream("ns/b:443", backend.addr, 2, "b.example.com", &ca, vec![]),
            ),
        ],
        None,
    )
    .await;
    let addr = p.addr(port);
    for _ in 0..2 {
        assert_eq!(
            get(addr, "x", "/a").await.unwrap().json()["sni"],
            "a.example.com"
        );
        assert_eq!(
            get(addr, "x", "/b").await.unwrap().json()["sni"],
            "b.example.com"
        );
    }
    // One connection per identity, each reused.
    assert_eq!(backend.handshakes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_invalid_policy_answers_500_and_never_falls_back_to_cleartext() {
    let echo = Echo::start("plain").await;
    let invalid = Arc::new(
        Upstream::new(
            "ns/invalid:443",
            AppProtocol::Http1,
            vec![Endpoint { addr: echo.addr }],
        )
        .with_tls(Some(BackendTls::Invalid("no valid CA certificate".into()))),
    );
    let port = free_port();
    let p = proxy(port, vec![("/", invalid)], None).await;
    assert_eq!(get(p.addr(port), "x", "/").await.unwrap().status, 500);
    assert_eq!(echo.received.load(Ordering::SeqCst), 0);
}

/// Active health (BackendTrafficPolicy `healthCheck.active`) probes a backend a
/// BackendTLSPolicy targets over TLS, with the policy's verification: a backend whose
/// certificate the policy trusts passes, one it does not fails.
#[tokio::test]
async fn active_health_probes_go_over_tls() {
    let ca = Ca::new();
    let other_ca = Ca::new();
    let backend = TlsBackend::start(ca.leaf(&["abc.example.com"]), None).await;
    let trusted = tls_upstream(
        "ns/trusted:443",
        backend.addr,
        1,
        "abc.example.com",
        &ca,
        vec![],
    );
    let untrusted = tls_upstream(
        "ns/untrusted:443",
        backend.addr,
        2,
        "abc.example.com",
        &other_ca,
        vec![],
    );
    let check = Arc::new(weir_snapshot::HealthCheck {
        active: Some(Arc::new(weir_snapshot::ActiveHealth {
            probe: weir_snapshot::Probe::Http {
                path: "/healthz".into(),
                method: http::Method::GET,
                hostname: None,
                expected_statuses: [200u16].into(),
            },
            interval: std::time::Duration::from_millis(50),
            timeout: std::time::Duration::from_secs(2),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
        })),
        ..Default::default()
    });
    let with_check = |path: &str, up: &Arc<Upstream>| {
        let a = forward_to(path, up);
        Arc::new(weir_snapshot::RouteAction {
            route: a.route.clone(),
            filters: a.filters.clone(),
            backends: a.backends.clone(),
            total_weight: a.total_weight,
            timeouts: a.timeouts,
            policy: Some(Arc::new(
                weir_snapshot::BackendPolicy {
                    name: "ns/health".into(),
                    id: 1,
                    health_check: Some(check.clone()),
                    ..Default::default()
                }
                .compiled(),
            )),
            ext_auth: None,
            security: None,
            ext_proc: None,
        })
    };
    let port = free_port();
    let l = listener(
        "ns/gw",
        None,
        vec![
            (None, prefix("/t", with_check("/t", &trusted))),
            (None, prefix("/u", with_check("/u", &untrusted))),
        ],
    );
    let p = TestProxy::start(config(), snapshot(1, vec![socket(port, vec![l])])).await;
    let healthy = |name: &str| p.metric("weir_endpoint_healthy", &[("upstream", name)]);
    assert_eventually(
        "probes over TLS",
        std::time::Duration::from_secs(10),
        || async {
            let failed = p.metric(
                "weir_health_probes_total",
                &[("upstream", "ns/untrusted:443"), ("result", "failure")],
            );
            anyhow::ensure!(healthy("ns/trusted:443") == 1.0, "trusted not healthy yet");
            anyhow::ensure!(failed >= 1.0, "no failed probe of the untrusted one yet");
            Ok(())
        },
    )
    .await;
    assert_eq!(healthy("ns/untrusted:443"), 0.0);
    assert!(backend.handshakes.load(Ordering::SeqCst) >= 1);
}
