//! Wiring: source → store → control loop (translate, swap) → proxy, plus the admin server.
//! `start` returns the bound addresses and a handle to stop everything, so tests can run the
//! whole app in-process.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_proxy::{Proxy, ProxyConfig};
use weir_sources::FileSource;
use weir_store::Store;

use crate::cli::RunArgs;
use crate::control::{self, Shared, Translator};
use crate::metrics::ControlMetrics;

/// A running Weir.
pub struct App {
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    proxy: Arc<Proxy>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Listener sockets currently open: (configured address, configured port, bound address).
    pub fn bound(&self) -> Vec<(Option<std::net::IpAddr>, u16, SocketAddr)> {
        self.proxy.bound()
    }

    /// Fail readiness, stop taking connections, let in-flight requests finish within the
    /// drain timeout, then stop the control loop and the admin server.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::Release);
        self.proxy.shutdown().await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Start Weir; returns once the admin server is bound and the source is running (the first
/// snapshot follows shortly: watch `/readyz`).
pub async fn start(args: RunArgs) -> anyhow::Result<App> {
    let Some(dir) = args.config_dir.clone() else {
        anyhow::bail!(
            "no --config-dir given: Kubernetes mode is not available in this build yet; run `weir run --config-dir DIR` to serve the manifests in DIR"
        );
    };
    let registry = Registry::new();
    let metrics = ControlMetrics::register(&registry).context("registering metrics")?;
    let shared = Shared::new();
    let proxy = Arc::new(
        Proxy::new(
            ProxyConfig {
                bind: args.bind,
                port_offset: args.listener_port_offset,
                drain_timeout: args.drain_timeout,
                max_header_bytes: args.max_header_bytes,
            },
            shared.snapshot.clone(),
            &registry,
        )
        .context("starting the proxy")?,
    );

    let admin = crate::admin::bind(args.admin_addr).await?;
    let admin_addr = admin.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(crate::admin::serve(
        admin,
        shared.clone(),
        registry.clone(),
        stop_rx,
    ))];
    tracing::info!(addr = %admin_addr, "admin server listening");

    if !dir.is_dir() {
        anyhow::bail!(
            "--config-dir {}: not a directory (create it, or point at the folder holding your manifests)",
            dir.display()
        );
    }
    let (store_tx, store_rx) = watch::channel(Arc::new(Store::default()));
    let source = FileSource::new(dir.clone(), Box::new(now));
    let debounce = args.debounce;
    tasks.push(tokio::spawn(async move {
        if let Err(err) = source.watch(debounce, store_tx).await {
            tracing::error!(error = %err, "file source stopped; serving the last good snapshot");
        }
    }));
    tracing::info!(dir = %dir.display(), "file mode: watching manifests");

    let (_addresses_tx, addresses) = watch::channel(vec![(
        "IPAddress".to_string(),
        args.bind.to_string(),
    )]);
    let translator = Translator {
        controller_name: args.gateway_class_controller.clone(),
    };
    tasks.push(tokio::spawn(control::run(
        control::Inputs {
            stores: store_rx,
            addresses,
        },
        translator,
        shared.clone(),
        proxy.clone(),
        metrics,
    )));

    Ok(App {
        admin_addr,
        shared,
        proxy,
        stop,
        tasks,
    })
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// Run until SIGTERM or SIGINT, then shut down gracefully.
pub fn run_until_signal(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let app = start(args).await?;
        wait_for_signal().await?;
        tracing::info!("shutting down: draining in-flight requests");
        app.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
