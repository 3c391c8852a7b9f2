//! The admin server: `/metrics` (Prometheus text), `/healthz`, `/readyz`, `/status` (computed
//! Gateway API status of every object we process) and `/debug/snapshot` (the live snapshot,
//! for humans). It binds to loopback by default: it is not meant for the outside world.
//!
//! `/status` and `/debug/*` show every route of every namespace and the endpoint addresses
//! (tens of MB at 10k routes), so they are served only where no other pod can ask: on the
//! admin address when it is a loopback address, and on `--status-addr` (which must be one).
//! On an admin address that other hosts reach (the chart's `0.0.0.0:9901`, for Prometheus
//! and the kubelet) they answer 404 with a pointer to `--status-addr`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_proxy::LogLimit;

use crate::control::Shared;

/// Which endpoints a listener of the admin server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub health: bool,
    /// `/status`, `/debug/*`.
    pub status: bool,
}

impl Endpoints {
    /// The `--admin-addr` listener: health always; status only on a loopback address.
    pub fn admin(addr: SocketAddr) -> Self {
        Self {
            health: true,
            status: addr.ip().is_loopback(),
        }
    }

    /// The `--status-addr` listener.
    pub const STATUS: Self = Self {
        health: false,
        status: true,
    };
}

/// Longest pause after failed accepts (e.g. no file descriptors left).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serve the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    registry: Registry,
    endpoints: Endpoints,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(registry);
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, _) = match accepted {
            Ok(conn) => {
                backoff.reset();
                conn
            }
            Err(err) => {
                // Out of descriptors, the error repeats at once: pause (doubling up to a
                // second) instead of spinning, and log the first failure of a burst and
                // then at most once per ten seconds.
                let pause = backoff.failed();
                static ACCEPT_FAILED: LogLimit = LogLimit::new(1, Duration::from_secs(10));
                if let Some(suppressed) = ACCEPT_FAILED.admit() {
                    tracing::warn!(error = %err, pause_ms = pause.as_millis() as u64, failures = backoff.failures, suppressed, "admin accept failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
        };
        let shared = shared.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = handle(&req, &shared, &registry, endpoints);
                async move { Ok::<_, Infallible>(response) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "admin connection ended");
            }
        });
    }
}

/// Exponential backoff for a failing accept loop.
#[derive(Debug, Default)]
struct Backoff {
    failures: u64,
    pause: Duration,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
        self.pause = Duration::ZERO;
    }

    /// The pause before the next accept.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        self.pause = (self.pause * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
        self.pause
    }
}

fn handle(
    req: &Request<Incoming>,
    shared: &Shared,
    registry: &Registry,
    endpoints: Endpoints,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let path = req.uri().path();
    let is_status = path == "/status" || path.starts_with("/debug/");
    if is_status && !endpoints.status {
        return text(
            StatusCode::NOT_FOUND,
            "not found: /status and /debug/* are served only on a loopback address \
             (--admin-addr on loopback, or --status-addr)\n",
        );
    }
    if !is_status && !endpoints.health {
        return text(
            StatusCode::NOT_FOUND,
            "not found: this address serves /status and /debug/snapshot; /metrics, /healthz \
             and /readyz are on --admin-addr\n",
        );
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut buf = Vec::new();
            let encoder = TextEncoder::new();
            match encoder.encode(&registry.gather(), &mut buf) {
                Ok(()) => respond(StatusCode::OK, encoder.format_type(), buf.into()),
                Err(err) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("encoding metrics failed: {err}\n"),
                ),
            }
        }
        "/status" => respond(
            StatusCode::OK,
            "application/json",
            shared.status.load().to_json(),
        ),
        "/debug/snapshot" => {
            let dump = format!("{:#?}\n", shared.snapshot.load());
            respond(StatusCode::OK, "text/plain; charset=utf-8", dump.into())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz, /status or /debug/snapshot\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Bind the admin socket; a clear error when the address is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot bind the admin server on {addr}: {err} (choose another with --admin-addr)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_served_on_loopback_admin_addresses_only() {
        let at = |s: &str| Endpoints::admin(s.parse().expect("addr"));
        assert!(at("127.0.0.1:9901").status);
        assert!(at("[::1]:9901").status);
        assert!(!at("0.0.0.0:9901").status);
        assert!(!at("10.1.2.3:9901").status);
        assert!(at("0.0.0.0:9901").health);
    }

    #[test]
    fn accept_backoff_doubles_to_a_second() {
        let mut b = Backoff::default();
        let pauses: Vec<_> = (0..20).map(|_| b.failed()).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[1], Duration::from_millis(10));
        assert_eq!(*pauses.last().expect("pauses"), MAX_ACCEPT_BACKOFF);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(5));
    }
}
