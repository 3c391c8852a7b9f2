//! The admin server: `/metrics` (Prometheus text), `/healthz`, `/readyz`, `/status` (computed
//! Gateway API status of every object we process) and `/debug/snapshot` (the live snapshot,
//! for humans). It binds to loopback by default: it is not meant for the outside world.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::Shared;

/// Serve the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    registry: Registry,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(registry);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, _) = match accepted {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = handle(&req, &shared, &registry);
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

fn handle(req: &Request<Incoming>, shared: &Shared, registry: &Registry) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
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
