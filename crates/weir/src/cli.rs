//! The command line. Flag names are a contract with users' scripts: extend, never rename.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weir_translate::AddressPool;

/// The controller name Weir answers to unless told otherwise.
pub const DEFAULT_CONTROLLER: &str = "weir.dev/gateway-controller";

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "Kubernetes Gateway API gateway: control plane and proxy in one process"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once at start-up: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve traffic for the Gateways of our GatewayClass.
    Run(RunArgs),
    /// Read a directory of manifests once, print every object's status conditions, and exit
    /// non-zero if one of our Gateways or routes is not accepted or has unresolved references.
    Check(CheckArgs),
    /// Print the kind table as JSON: every kind Weir reads, its API group, version, plural,
    /// scope and the status Weir writes (what its ClusterRole must grant; the chart's tests
    /// read it).
    #[command(hide = true)]
    Kinds,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// File mode: read Gateway API and Kubernetes objects from every *.yaml / *.yml under DIR
    /// (recursive, multi-document) and watch it for changes.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    /// Only GatewayClasses whose spec.controllerName equals NAME are ours.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONTROLLER)]
    pub gateway_class_controller: String,

    /// Serve a listener configured on port P on port P+N (the configured port stays P for
    /// route attachment, redirects and listener selection).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub listener_port_offset: u16,

    /// Address the listeners bind to.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,

    /// File mode: give each Gateway that requests no address (no spec.addresses, or an
    /// IPAddress without value) its own address from this CIDR block, e.g. 127.0.1.0/24,
    /// chosen from its namespace/name so it stays the same across restarts, and reported in
    /// its status.addresses. Without it such Gateways share --bind, and listeners of
    /// different Gateways whose hostnames overlap on one port are Conflicted.
    #[arg(long, value_name = "CIDR")]
    pub gateway_address_pool: Option<AddressPool>,

    /// Address of the admin server (/metrics, /healthz, /readyz; also /status and /debug/*
    /// when it is a loopback address).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    pub admin_addr: SocketAddr,

    /// A loopback address serving /status and /debug/* (for an --admin-addr that other
    /// hosts reach, where they are not served), e.g. 127.0.0.1:9902.
    #[arg(long, value_name = "ADDR")]
    pub status_addr: Option<SocketAddr>,

    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Change batching: the first change after a quiet period is applied at once; changes
    /// that follow within this period are coalesced until they have been quiet for it (at
    /// most ten times it). Kubernetes mode: the same for watch events.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// A client connection with no request in flight that sends or receives nothing for this
    /// long is closed (never a byte, a TLS connection that only handshakes, keep-alive
    /// between requests, HTTP/2 without streams, a client that stops reading). An HTTP/1.x
    /// request body that sends nothing for this long gets 408. nginx closes idle keep-alive
    /// connections after 75 s and waits 60 s for a request's header and between body reads.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Client connections open at once across all listeners; more are closed at once and
    /// counted in weir_connections_rejected_total. Default: half of what the open-files
    /// limit leaves after 64 for the rest of the process (upstream connections need the
    /// other half).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// How long a backend may take to start its response (status and headers) when the
    /// route sets no timeout of its own (HTTPRoute `timeouts`); then 504. `0` disables it.
    /// nginx's proxy_read_timeout is 60 s; Envoy's route timeout 15 s.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// Upstream HTTP/1.1 connections open at once to one backend endpoint (idle or busy), as
    /// nginx's max_conns. A request that finds none idle and the limit reached waits for
    /// one (within the upstream timeout) in a queue of --upstream-max-pending; beyond that
    /// it gets 503. Defaults as Envoy's circuit breaker (1024 and 1024).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_max_connections: u32,

    /// Requests that may wait for a connection to one endpoint at --upstream-max-connections;
    /// more get 503 at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub upstream_max_pending: u32,

    /// The access log: one JSON line per request on stdout (fields: README, "Access log";
    /// the process's own logs go to stderr), written when the response has been sent.
    /// No header other than x-request-id is logged, and paths without their query string.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub access_log: Switch,

    /// The fraction of requests the access log writes (0 < F <= 1), chosen at random.
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = parse_fraction)]
    pub access_log_sample: f64,

    /// OpenTelemetry tracing: the OTLP collector spans are exported to, e.g.
    /// `http://otel-collector:4317` (gRPC) or `http://otel-collector:4318` (HTTP;
    /// `/v1/traces` is appended). Absent: tracing is off (and costs nothing). With it, each
    /// request gets a SERVER span, child of the client's W3C `traceparent` when it sends one,
    /// and the backend gets a `traceparent` naming Weir's span. Plain http:// only (no TLS
    /// to the collector yet).
    #[arg(long, value_name = "URL", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// The OTLP transport: `grpc` (TraceService/Export) or `http` (protobuf over HTTP POST).
    #[arg(long, value_enum, default_value_t = OtlpProtocol::Grpc)]
    pub otlp_protocol: OtlpProtocol,

    /// The fraction of new traces sampled (0 <= F <= 1): requests without a `traceparent`.
    /// A request with one follows its sampled flag (parent-based sampling).
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = parse_sample)]
    pub trace_sample: f64,
    /// A UDP flow (the datagrams from one client address, all to the endpoint its first
    /// datagram was sent to) ends after this long without a datagram either way; the next
    /// datagram from that address starts a new flow, which may pick another endpoint.
    /// Linux conntrack keeps a UDP stream 120 s, a one-way one 30 s.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub udp_flow_idle_timeout: Duration,

    /// UDP flows open at once across all UDP listeners (each holds a socket); the datagrams
    /// of new flows beyond it are dropped and counted in weir_udp_flows_rejected_total.
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    pub udp_max_flows: u32,

    /// The zone this Weir runs in (the node's `topology.kubernetes.io/zone`), for
    /// BackendTrafficPolicy `loadBalancer.zoneAware.preferLocal`: endpoints whose
    /// EndpointSlice zone (or `hints.forZones`) is this one are preferred. Empty or unset:
    /// no zone preference.
    #[arg(long, value_name = "ZONE", env = "WEIR_ZONE")]
    pub zone: Option<String>,
    /// A file holding the key session values (`sessionPersistence`) are sealed with: 32
    /// bytes as 64 hex digits or base64 (`openssl rand -hex 32`). Replicas given the same key
    /// accept each other's sessions; without one each process makes a random key, and a
    /// client that moves to another replica (or outlives a restart) starts a new session.
    #[arg(long, value_name = "PATH", env = "WEIR_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,

    /// The Redis that BackendTrafficPolicy `rateLimit.global` counts in, shared by every
    /// replica: redis://[USER:PASSWORD@]HOST:PORT[/DB], or rediss:// for TLS. Without it a
    /// policy with global rules is not accepted.
    #[arg(long, value_name = "URL", env = "WEIR_RATE_LIMIT_REDIS")]
    pub rate_limit_redis: Option<String>,

    /// A PEM file of the CA certificates a rediss:// --rate-limit-redis server's
    /// certificate is verified with (default: the public roots built into Weir).
    #[arg(long, value_name = "PATH", env = "WEIR_RATE_LIMIT_REDIS_CA")]
    pub rate_limit_redis_ca: Option<PathBuf>,

    /// A PEM file of certificate authorities trusted for SecurityPolicy `remoteJWKS.uri`s
    /// over https, beside the public roots compiled in (webpki-roots): for an identity
    /// provider whose certificate a private CA issued. Empty or unset: public roots only.
    #[arg(long, value_name = "PATH", env = "WEIR_JWKS_CA")]
    pub jwks_ca: Option<PathBuf>,

    /// How long a global rate limit waits for Redis before it counts as unreachable.
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = parse_duration)]
    pub rate_limit_timeout: Duration,

    /// When Redis is unreachable (or slower than --rate-limit-timeout), refuse the requests a
    /// global rate limit counts (500, as Envoy Gateway's failClosed) instead of letting them
    /// pass (the default: fail open).
    #[arg(long)]
    pub rate_limit_fail_closed: bool,

    /// The replicas BackendTrafficPolicy `rateLimit.local` limits are split across: each
    /// replica admits ⌈requests / N⌉ per unit, so a local limit means the whole Gateway's.
    /// 1: each replica admits the whole limit. Default: in Kubernetes mode with
    /// --gateway-service, the ready endpoints of that Service (the Weir Pods behind it),
    /// followed live; otherwise 1.
    #[arg(long, value_name = "N", env = "WEIR_RATE_LIMIT_REPLICAS", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate_limit_replicas: Option<u32>,

    /// Largest request header section accepted; larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// Worker threads serving connections. Default: one per CPU core the process may run on
    /// (its cgroup CPU quota included). With `--runtime per-core` (the default) each is a
    /// single-threaded runtime and the control plane has a thread of its own; with
    /// `--runtime work-stealing`, `1` runs everything, control loop included, on one thread
    /// (a current-thread runtime).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// How the --worker-threads serve connections. `per-core` (the default): one
    /// single-threaded runtime per worker, each accepting on its own SO_REUSEPORT socket of
    /// every listener port (the kernel spreads connections) with upstream connection pools of
    /// its own, so a request never changes thread; the control plane and the admin server run
    /// on a thread of their own. `work-stealing`: one tokio runtime whose threads share every
    /// socket and steal each other's tasks (one thread: a current-thread runtime). Per-core
    /// serves 1.2-1.4x the requests per second of work-stealing at 16-512 connections on 2
    /// cores (bench/results/2026-12-07-per-core.md).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = RuntimeMode::PerCore, env = "WEIR_RUNTIME")]
    pub runtime: RuntimeMode,

    /// Per-core mode: pin worker runtime i to the i-th CPU the process may run on (Linux
    /// sched_setaffinity), so its thread, caches and sockets stay on one core.
    #[arg(long, env = "WEIR_PIN_WORKERS")]
    pub pin_workers: bool,

    /// Kubernetes mode: kubeconfig file to use outside a cluster (default: in-cluster
    /// config, else $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubernetes mode: the LoadBalancer Service (NAMESPACE/NAME) whose
    /// status.loadBalancer.ingress is reported as the Gateways' addresses; until it has one,
    /// the ready pod IPs behind it. Without the flag, the pod IP ($POD_IP) is reported.
    #[arg(long, value_name = "NS/NAME", value_parser = parse_namespaced)]
    pub gateway_service: Option<(String, String)>,

    /// Kubernetes mode without --gateway-service (one Service per Gateway): the pod ports
    /// Weir assigns to Gateway listener ports (each Gateway's Service targets its own). Must
    /// not overlap ports the pod uses otherwise (the admin port).
    #[arg(long, value_name = "LOW-HIGH", default_value = "20000-29999", value_parser = parse_port_range)]
    pub gateway_port_range: std::ops::RangeInclusive<u16>,

    /// Kubernetes mode without --gateway-service: the labels of the Weir pods (KEY=VALUE,
    /// comma-separated), used as every Gateway Service's selector.
    #[arg(long, value_name = "KEY=VALUE,...", default_value = "app.kubernetes.io/name=weir", value_parser = parse_selector)]
    pub gateway_pod_selector: std::collections::BTreeMap<String, String>,

    /// Kubernetes mode: namespace of the leader-election Lease (default: $POD_NAMESPACE, else
    /// "default").
    #[arg(long, value_name = "NS")]
    pub leader_election_namespace: Option<String>,

    /// Kubernetes mode: name of the leader-election Lease. Only the holder writes status.
    #[arg(long, value_name = "NAME", default_value = "weir-leader")]
    pub leader_election_id: String,

    /// Kubernetes mode: how long a Lease holds without renewal before another replica may
    /// take over.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// Log format: json (structured, one object per line) or text.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter, in tracing-subscriber's EnvFilter syntax (RUST_LOG overrides it).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

impl RunArgs {
    /// `--rate-limit-redis`, unless empty (the chart passes an empty value when unset).
    pub fn rate_limit_redis(&self) -> Option<&str> {
        self.rate_limit_redis
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Directory of manifests to check.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Only GatewayClasses whose spec.controllerName equals NAME are ours.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONTROLLER)]
    pub gateway_class_controller: String,

    /// As `weir run --gateway-address-pool`: give each Gateway that requests no address (no spec.addresses, or an
    /// IPAddress without value) its own address from this CIDR block, e.g. 127.0.1.0/24,
    /// chosen from its namespace/name so it stays the same across restarts, and reported in
    /// its status.addresses. Without it such Gateways share --bind, and listeners of
    /// different Gateways whose hostnames overlap on one port are Conflicted.
    #[arg(long, value_name = "CIDR")]
    pub gateway_address_pool: Option<AddressPool>,

    /// As `weir run --rate-limit-redis`: a Redis for global rate limits is configured (only
    /// whether one is matters here: without it, policies with `rateLimit.global` fail).
    #[arg(long, value_name = "URL", env = "WEIR_RATE_LIMIT_REDIS")]
    pub rate_limit_redis: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// A fraction in (0, 1].
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a fraction in (0, 1]; use --access-log off to turn it off"
        )),
    }
}

/// A fraction in [0, 1].
fn parse_sample(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction in [0, 1]")),
    }
}

/// An `http://host:port[/path]` URL.
fn parse_otlp_endpoint(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "{s:?}: the OTLP endpoint is an http://host:port URL (TLS to the collector is not \
             supported yet)"
        ));
    }
    Ok(s.to_string())
}

/// `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeMode {
    WorkStealing,
    PerCore,
}

/// `--otlp-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    Grpc,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Parse `namespace/name`.
pub fn parse_namespaced(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
    }
}

/// Parse `LOW-HIGH` (inclusive, 1 <= LOW <= HIGH <= 65535).
pub fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got {s:?}");
    let (low, high) = s.split_once('-').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

/// Parse `key=value,key=value` (at least one pair, no empty keys).
pub fn parse_selector(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("expected KEY=VALUE[,KEY=VALUE...], got {s:?}")),
        }
    }
    if out.is_empty() {
        return Err("the pod selector needs at least one KEY=VALUE".to_string());
    }
    Ok(out)
}

/// Parse `250ms`, `5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 5s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn port_ranges_and_selectors() {
        assert_eq!(parse_port_range("20000-29999"), Ok(20000..=29999));
        assert_eq!(parse_port_range("5-5"), Ok(5..=5));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10-5").is_err());
        assert!(parse_port_range("10").is_err());
        assert!(parse_port_range("1-70000").is_err());
        assert_eq!(
            parse_selector("a=b, c=d"),
            Ok([
                ("a".to_string(), "b".to_string()),
                ("c".to_string(), "d".to_string())
            ]
            .into())
        );
        assert!(parse_selector("").is_err());
        assert!(parse_selector("a").is_err());
        assert!(parse_selector("=b").is_err());
    }

    #[test]
    fn namespaced_names() {
        assert_eq!(
            parse_namespaced("weir-system/weir"),
            Ok(("weir-system".to_string(), "weir".to_string()))
        );
        assert!(parse_namespaced("weir").is_err());
        assert!(parse_namespaced("/weir").is_err());
        assert!(parse_namespaced("a/b/c").is_err());
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let cli = Cli::try_parse_from(["weir", "run", "--config-dir", "d"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.gateway_class_controller, "weir.dev/gateway-controller");
        assert_eq!(args.listener_port_offset, 0);
        assert_eq!(args.bind.to_string(), "0.0.0.0");
        assert_eq!(args.admin_addr.to_string(), "127.0.0.1:9901");
    }
}
