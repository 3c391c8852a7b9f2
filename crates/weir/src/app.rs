//! Wiring: source → store → control loop (translate, swap) → proxy, plus the admin server.
//! `start` returns the bound addresses and a handle to stop everything, so tests can run the
//! whole app in-process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_proxy::{Proxy, ProxyConfig};
use weir_sources::FileSource;
use weir_store::Store;

use crate::cli::{RunArgs, RuntimeMode};
use crate::control::{self, Shared, Translator};
use crate::metrics::ControlMetrics;

/// A running Weir.
pub struct App {
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    proxy: Arc<Proxy>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Kubernetes mode: the leader-election task, awaited on shutdown so the Lease is
    /// released and the next replica takes over at once.
    election: Option<JoinHandle<()>>,
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
        if let Some(election) = self.election {
            if tokio::time::timeout(std::time::Duration::from_secs(5), election)
                .await
                .is_err()
            {
                tracing::warn!("could not release the leader Lease within 5s; it will expire");
            }
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Start Weir; returns once the admin server is bound and the source is running (the first
/// snapshot follows shortly: watch `/readyz`).
pub async fn start(args: RunArgs) -> anyhow::Result<App> {
    start_with_workers(args, Vec::new()).await
}

/// [`start`], serving connections on the given worker runtimes (per-core mode; see
/// `weir_proxy::ProxyConfig::workers`): each must run on a thread of its own that called
/// `weir_proxy::enter_worker` with its index. Empty: on the caller's runtime.
pub async fn start_with_workers(
    args: RunArgs,
    workers: Vec<tokio::runtime::Handle>,
) -> anyhow::Result<App> {
    let registry = Registry::new();
    let metrics = ControlMetrics::register(&registry).context("registering metrics")?;
    let shared = Shared::new();
    let session_key = match &args.session_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --session-key-file {}", path.display()))?;
            let key = weir_proxy::session::SessionKey::parse(&text)
                .map_err(|e| anyhow::anyhow!("--session-key-file {}: {e}", path.display()))?;
            Some(Arc::new(key))
        }
        None => None,
    };
    let redis_ca = match &args.rate_limit_redis_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --rate-limit-redis-ca {}", path.display()))?,
        ),
        None => None,
    };
    let jwks_ca = match args
        .jwks_ca
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --jwks-ca {}", path.display()))?;
            weir_proxy::parse_pem_certs(&pem)
                .map_err(|e| anyhow::anyhow!("--jwks-ca {}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let proxy = Arc::new(
        Proxy::new(
            ProxyConfig {
                bind: args.bind,
                port_offset: args.listener_port_offset,
                drain_timeout: args.drain_timeout,
                max_header_bytes: args.max_header_bytes,
                idle_timeout: args.idle_timeout,
                max_connections: args
                    .max_connections
                    .unwrap_or_else(weir_proxy::default_max_connections),
                upstream_timeout: (!args.upstream_timeout.is_zero())
                    .then_some(args.upstream_timeout),
                upstream_limits: weir_proxy::UpstreamLimits {
                    max_connections: args.upstream_max_connections as usize,
                    max_pending: args.upstream_max_pending as usize,
                },
                access_log_sample: match args.access_log {
                    crate::cli::Switch::On => args.access_log_sample,
                    crate::cli::Switch::Off => 0.0,
                },
                tracing: args
                    .otlp_endpoint
                    .as_ref()
                    .map(|endpoint| weir_proxy::TraceConfig {
                        endpoint: endpoint.clone(),
                        protocol: match args.otlp_protocol {
                            crate::cli::OtlpProtocol::Grpc => weir_proxy::OtlpProtocol::Grpc,
                            crate::cli::OtlpProtocol::Http => weir_proxy::OtlpProtocol::Http,
                        },
                        sample: args.trace_sample,
                    }),
                udp_flow_idle_timeout: args.udp_flow_idle_timeout,
                udp_max_flows: args.udp_max_flows as usize,
                zone: args
                    .zone
                    .as_deref()
                    .map(str::trim)
                    .filter(|z| !z.is_empty())
                    .map(std::sync::Arc::from),
                session_key,
                rate_limit: args
                    .rate_limit_redis()
                    .map(|url| weir_proxy::GlobalRateLimitConfig {
                        url: url.to_string(),
                        timeout: args.rate_limit_timeout,
                        fail_closed: args.rate_limit_fail_closed,
                        ca_pem: redis_ca.clone(),
                    }),
                rate_limit_replicas: args.rate_limit_replicas.unwrap_or(1),
                jwks_ca,
                workers,
            },
            shared.snapshot.clone(),
            &registry,
        )
        .context("starting the proxy")?,
    );

    let admin = crate::admin::bind(args.admin_addr).await?;
    let admin_addr = admin.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let endpoints = crate::admin::Endpoints::admin(admin_addr);
    let mut tasks = vec![tokio::spawn(crate::admin::serve(
        admin,
        shared.clone(),
        registry.clone(),
        endpoints,
        stop_rx.clone(),
    ))];
    tracing::info!(addr = %admin_addr, status = endpoints.status, "admin server listening");
    if let Some(addr) = args.status_addr {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "--status-addr {addr} is not a loopback address: /status and /debug/* list every \
             route and endpoint, so they are never served to other hosts"
        );
        let listener = crate::admin::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "status server listening (/status, /debug/snapshot)");
        tasks.push(tokio::spawn(crate::admin::serve(
            listener,
            shared.clone(),
            registry.clone(),
            crate::admin::Endpoints::STATUS,
            stop_rx.clone(),
        )));
    }

    let (inputs, translator, election) = match &args.config_dir {
        Some(dir) => {
            let (inputs, source_task) = file_mode(dir, &args)?;
            tasks.push(source_task);
            let translator = Translator {
                controller_name: args.gateway_class_controller.clone(),
                address_usable: control::address_of_this_host,
                addressing: match &args.gateway_address_pool {
                    Some(pool) => weir_translate::Addressing::Pool(pool.clone()),
                    None => weir_translate::Addressing::Shared,
                },
                rate_limit_redis: args.rate_limit_redis().is_some(),
            };
            (inputs, translator, None)
        }
        None => {
            anyhow::ensure!(
                args.gateway_address_pool.is_none(),
                "--gateway-address-pool is for file mode (--config-dir); in Kubernetes mode \
                 each Gateway's address comes from its Service"
            );
            let kube = crate::kube_mode::start(&args, shared.clone(), stop_rx, &registry).await?;
            tasks.extend(kube.tasks);
            tasks.extend(crate::kube_mode::follow_replicas(
                &args,
                &kube.stores,
                &proxy,
            ));
            let translator = Translator {
                controller_name: args.gateway_class_controller.clone(),
                // Addresses belong to the LoadBalancer, not to this pod: a static address is
                // usable only when it is one the Service got (see Input.gateway_addresses).
                address_usable: |_| false,
                // Without --gateway-service each Gateway gets its own Service (the leader
                // writes them); with it, every Gateway shares that Service's address.
                addressing: match crate::kube_mode::service_addressing(&args) {
                    Some(settings) => weir_translate::Addressing::Services(settings),
                    None => weir_translate::Addressing::Shared,
                },
                rate_limit_redis: args.rate_limit_redis().is_some(),
            };
            let inputs = control::Inputs {
                stores: kube.stores,
                addresses: kube.addresses,
            };
            (inputs, translator, Some(kube.election))
        }
    };
    tasks.push(tokio::spawn(control::run(
        inputs,
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
        election,
    })
}

/// File mode: watch `dir`; Gateways report the bind address.
fn file_mode(dir: &Path, args: &RunArgs) -> anyhow::Result<(control::Inputs, JoinHandle<()>)> {
    if !dir.is_dir() {
        anyhow::bail!(
            "--config-dir {}: not a directory (create it, or point at the folder holding your manifests)",
            dir.display()
        );
    }
    let (store_tx, stores) = watch::channel(Arc::new(Store::default()));
    let source = FileSource::new(dir.to_path_buf(), Box::new(now));
    let debounce = args.debounce;
    let task = tokio::spawn(async move {
        if let Err(err) = source.watch(debounce, store_tx).await {
            tracing::error!(error = %err, "file source stopped; serving the last good snapshot");
        }
    });
    tracing::info!(dir = %dir.display(), "file mode: watching manifests");
    // Static: the sender may go, the control loop keeps the value.
    let (_, addresses) = watch::channel(vec![("IPAddress".to_string(), args.bind.to_string())]);
    Ok((control::Inputs { stores, addresses }, task))
}

/// A new object's `metadata.creationTimestamp` in file mode: whole seconds, as the API
/// server stores it. Objects read in the same second tie, and ties go by namespace/name, as
/// in a cluster where one `kubectl apply` creates them; it also keeps the attach order, which
/// translation sorts by creation time, almost sorted already.
fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    use k8s_openapi::jiff::Timestamp;
    let now = Timestamp::now();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(now.as_second()).unwrap_or(now),
    )
}

/// Run until SIGTERM or SIGINT, then shut down gracefully.
pub fn run_until_signal(args: RunArgs) -> anyhow::Result<()> {
    match args.runtime {
        RuntimeMode::WorkStealing => {
            let runtime = runtime(args.worker_threads).context("starting the async runtime")?;
            runtime.block_on(serve_until_signal(args, Vec::new()))
        }
        RuntimeMode::PerCore => {
            let n = match args.worker_threads {
                Some(n) => usize::from(n),
                None => std::thread::available_parallelism().map_or(1, usize::from),
            };
            let workers = Workers::start(n, args.pin_workers)?;
            // The control plane (sources, translation, swaps) and the admin server: a
            // thread of their own, off the ones serving requests.
            let control = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the control runtime")?;
            let served = control.block_on(serve_until_signal(args, workers.handles()));
            // The accept loops have drained (shutdown): what is left on the workers (idle
            // upstream connections, pool reapers) ends with their runtimes.
            workers.stop();
            served
        }
    }
}

async fn serve_until_signal(
    args: RunArgs,
    workers: Vec<tokio::runtime::Handle>,
) -> anyhow::Result<()> {
    let app = start_with_workers(args, workers).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down: draining in-flight requests");
    app.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The async runtime: `--worker-threads 1` gets a current-thread runtime (every task on the
/// main thread: no work stealing or cross-thread wake-ups, the cheapest per request on one
/// core); otherwise a multi-threaded one with N workers (default: one per core).
/// Translation runs on the blocking pool either way, off the threads serving requests.
fn runtime(worker_threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(n));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name("weir").build()
}

/// Per-core mode's worker runtimes: one current-thread runtime per OS thread
/// (`weir-worker-I`), each running until [`Workers::stop`].
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Workers {
    /// Start `n` worker runtimes (at least one); with `pin`, worker i runs on the i-th CPU
    /// this process may use (wrapping around), else wherever the scheduler puts it.
    pub fn start(n: usize, pin: bool) -> anyhow::Result<Workers> {
        let cpus = if pin { allowed_cpus()? } else { Vec::new() };
        let mut workers = Workers {
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n.max(1) {
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("weir-worker-{i}"))
                .spawn(move || {
                    weir_proxy::enter_worker(i);
                    let pinned = cpu.map(pin_to).transpose();
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match (pinned, runtime) {
                        (Ok(_), Ok(runtime)) => {
                            let _ = handle_tx.send(Ok(runtime.handle().clone()));
                            runtime.block_on(async move {
                                let _ = stop_rx.await;
                            });
                        }
                        (Err(err), _) => {
                            let _ = handle_tx.send(Err(anyhow::anyhow!(
                                "pinning worker {i} to CPU {cpu:?}: {err}"
                            )));
                        }
                        (_, Err(err)) => {
                            let _ = handle_tx
                                .send(Err(anyhow::anyhow!("starting worker runtime {i}: {err}")));
                        }
                    }
                })
                .context("starting a worker thread")?;
            let handle = handle_rx
                .recv()
                .map_err(|_| anyhow::anyhow!("worker runtime {i} did not start"))??;
            tracing::debug!(worker = i, ?cpu, "worker runtime started");
            workers.handles.push(handle);
            workers.threads.push((stop, thread));
        }
        Ok(workers)
    }

    /// Handles to spawn on each runtime, in worker order.
    pub fn handles(&self) -> Vec<tokio::runtime::Handle> {
        self.handles.clone()
    }

    /// Stop every runtime (dropping the tasks left on it) and wait for its thread.
    pub fn stop(self) {
        for (stop, thread) in self.threads {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// The CPUs this process may run on (its affinity mask), in order.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None).context("reading the CPU affinity")?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect())
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    anyhow::bail!("--pin-workers needs Linux (sched_setaffinity)")
}

/// Pin the calling thread to `cpu`.
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_cpu: usize) -> std::io::Result<()> {
    Err(std::io::Error::other("CPU pinning needs Linux"))
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
