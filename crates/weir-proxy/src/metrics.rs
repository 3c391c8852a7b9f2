//! The proxy's Prometheus metrics, registered on the registry given to `Proxy::new`. Label
//! values come precomputed from the snapshot (`Listener::gateway`, `RouteRef::route`,
//! `Upstream::name`); unrouted requests use "".

use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;
use prometheus::{
    histogram_opts, opts, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Registry,
};

pub(crate) struct Metrics {
    /// `weir_requests_total{gateway,route,backend,code}`
    requests: IntCounterVec,
    /// `weir_request_duration_seconds{gateway,route}`
    duration: HistogramVec,
    /// `weir_request_errors_total{reason}`
    errors: IntCounterVec,
    /// `weir_upstream_connect_errors_total{backend}`
    connect_errors: IntCounterVec,
    /// `weir_active_connections{protocol}` (see [`ConnProtocol`])
    active_connections: IntGaugeVec,
    /// `weir_listener_bind_errors_total`
    pub(crate) bind_errors: IntCounter,
    /// `weir_worker_connections_accepted_total{worker}`: client connections each runtime
    /// accepted (per-core mode: one per worker runtime; else all on worker "0").
    pub(crate) worker_accepted: IntCounterVec,
    /// `weir_connections_rejected_total`: client connections closed at once because
    /// `--max-connections` were open.
    pub(crate) connections_rejected: IntCounter,
    /// `weir_idle_connections_closed_total`: client connections closed by `--idle-timeout`.
    pub(crate) idle_closed: IntCounter,
    /// `weir_access_log_dropped_total`: access log lines dropped because the writer fell
    /// behind.
    pub(crate) access_log_dropped: IntCounter,
    /// `weir_proxy_protocol_errors_total{reason}`: connections closed because their PROXY
    /// protocol header was malformed, missing (where required), late, or unreadable.
    pub(crate) proxy_protocol_errors: IntCounterVec,
    /// `weir_client_policy_connections_rejected_total{policy}`: connections closed at
    /// accept because the socket's ClientTrafficPolicy `connectionLimit` was reached.
    pub(crate) policy_connections_rejected: IntCounterVec,
    /// `weir_client_policy_errors_total{policy}`: connections closed because the socket's
    /// ClientTrafficPolicy could not be applied (a TLS configuration rustls refused).
    pub(crate) policy_errors: IntCounterVec,
    /// `weir_upstream_retries_total{route,reason}`: retries a BackendTrafficPolicy made, by
    /// the trigger that caused them.
    retries: IntCounterVec,
    /// `weir_circuit_breaker_overflows_total{route}`: requests a BackendTrafficPolicy's
    /// circuit breaker answered with 503 (`maxParallelRequests`).
    breaker_overflows: IntCounterVec,
    /// `weir_endpoint_ejections_total{upstream}`: endpoints BackendTrafficPolicy passive
    /// health ejected (`upstream/health.rs`).
    pub(crate) endpoint_ejections: IntCounterVec,
    /// `weir_health_probes_total{upstream,result}`: active health probes, `success` or
    /// `failure`.
    pub(crate) health_probes: IntCounterVec,
    /// `weir_fault_injected_total{route,kind}`: requests a BackendTrafficPolicy's
    /// `faultInjection` delayed (`delay`) or answered itself (`abort`).
    fault_injected: IntCounterVec,
    /// `weir_rate_limited_total{route,kind}`: requests a BackendTrafficPolicy `rateLimit`
    /// refused (429), by route and `local` / `global`.
    rate_limited: IntCounterVec,
    /// `weir_rate_limit_redis_errors_total{result}`: global rate-limit checks Redis did not
    /// answer, by what was done: `passed` (fail open) or `refused` (fail closed).
    rate_limit_redis_errors: IntCounterVec,
    /// `weir_endpoint_picker_seconds{result}`: InferencePool endpoint picker round trips
    /// (request headers and body to the decision), by result: `picked`, `immediate` (an
    /// ImmediateResponse), `bad_endpoint` (an address outside the pool), `error`.
    picker: HistogramVec,
    /// `weir_endpoint_picker_fail_open_total`: requests sent to a pool endpoint of Weir's
    /// choosing because the picker failed (`failureMode: FailOpen`).
    pub(crate) picker_fail_open: IntCounter,
    /// `weir_ext_proc_seconds{phase,result}`: ExtensionPolicy processor exchanges (one
    /// processor's answer to the request headers and body, or to the response headers), by
    /// `phase` (`request`, `response`) and `result`: `ok`, `immediate` (an
    /// ImmediateResponse), `error` (unreachable, failed, timed out, out of turn).
    ext_proc: HistogramVec,
    /// `weir_ext_proc_fail_open_total{phase}`: processor failures passed over because the
    /// processor is `failOpen` (the others are `weir_request_errors_total{reason="ext_proc_error"}`).
    ext_proc_fail_open: IntCounterVec,
    /// `weir_upstream_retries_skipped_total{route,reason}`: retries a BackendTrafficPolicy
    /// would have made but did not: `budget` (its retry budget was spent) or
    /// `max_parallel_retries` (its breaker's retry cap).
    retries_skipped: IntCounterVec,
    /// `weir_trace_spans_dropped_total`: sampled spans not exported because the export
    /// queue was full or their export failed.
    pub(crate) trace_spans_dropped: IntCounter,
    /// `weir_ext_auth_failures_total{outcome}`: ext auth checks whose service failed
    /// (unreachable, timeout, malformed answer), by what happened to the request: `open`
    /// (let through, `failOpen`) or `closed` (refused with 403).
    ext_auth_failures: IntCounterVec,
    /// `weir_jwt_verifications_total{result}`: JWTs checked by a SecurityPolicy: `cached`
    /// (accepted from the verified-token cache, no signature check), `verified` and
    /// `failed` (a full verification ran).
    pub(crate) jwt_cached: IntCounter,
    pub(crate) jwt_verified: IntCounter,
    pub(crate) jwt_failed: IntCounter,
    /// `weir_udp_flows`: UDP flows open now (see `udp.rs`).
    pub(crate) udp_flows: IntGauge,
    /// `weir_udp_flows_rejected_total`: datagrams that would have started a UDP flow beyond
    /// `--udp-max-flows`, dropped.
    pub(crate) udp_flows_rejected: IntCounter,
    /// BackendTrafficPolicy `compression` (`compress.rs`).
    pub(crate) compress: crate::compress::CompressMetrics,
    /// BackendTrafficPolicy `responseCache` (`cache.rs`).
    pub(crate) cache: crate::cache::CacheMetrics,
}

/// Labels of one finished request.
pub(crate) struct RequestLabels<'a> {
    pub(crate) gateway: &'a str,
    pub(crate) route: &'a str,
    pub(crate) backend: &'a str,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            opts!("weir_requests_total", "HTTP requests served, by outcome."),
            &["gateway", "route", "backend", "code"],
        )?;
        let duration = HistogramVec::new(
            histogram_opts!(
                "weir_request_duration_seconds",
                "Time from request start to response headers.",
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
            ),
            &["gateway", "route"],
        )?;
        let errors = IntCounterVec::new(
            opts!(
                "weir_request_errors_total",
                "Requests the proxy answered itself because of an error, by reason."
            ),
            &["reason"],
        )?;
        let connect_errors = IntCounterVec::new(
            opts!(
                "weir_upstream_connect_errors_total",
                "Failed connection attempts to upstream endpoints."
            ),
            &["backend"],
        )?;
        let active_connections = IntGaugeVec::new(
            opts!(
                "weir_active_connections",
                "Downstream connections currently open."
            ),
            &["protocol"],
        )?;
        let bind_errors = IntCounter::with_opts(opts!(
            "weir_listener_bind_errors_total",
            "Sockets the snapshot asked for that could not be bound."
        ))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(connect_errors.clone()))?;
        registry.register(Box::new(active_connections.clone()))?;
        let connections_rejected = IntCounter::with_opts(opts!(
            "weir_connections_rejected_total",
            "Client connections closed on accept because --max-connections were open."
        ))?;
        let idle_closed = IntCounter::with_opts(opts!(
            "weir_idle_connections_closed_total",
            "Client connections closed after --idle-timeout without a request or a byte."
        ))?;
        registry.register(Box::new(bind_errors.clone()))?;
        let worker_accepted = IntCounterVec::new(
            opts!(
                "weir_worker_connections_accepted_total",
                "Client connections accepted, by worker runtime (--runtime per-core: one per runtime)."
            ),
            &["worker"],
        )?;
        registry.register(Box::new(worker_accepted.clone()))?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(idle_closed.clone()))?;
        let access_log_dropped = IntCounter::with_opts(opts!(
            "weir_access_log_dropped_total",
            "Access log lines dropped because stdout could not keep up."
        ))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let proxy_protocol_errors = IntCounterVec::new(
            opts!(
                "weir_proxy_protocol_errors_total",
                "Client connections closed because of their PROXY protocol header, by reason."
            ),
            &["reason"],
        )?;
        let policy_connections_rejected = IntCounterVec::new(
            opts!(
                "weir_client_policy_connections_rejected_total",
                "Client connections closed on accept by a ClientTrafficPolicy connectionLimit."
            ),
            &["policy"],
        )?;
        let policy_errors = IntCounterVec::new(
            opts!(
                "weir_client_policy_errors_total",
                "Client connections closed because their socket's ClientTrafficPolicy could not be applied."
            ),
            &["policy"],
        )?;
        registry.register(Box::new(proxy_protocol_errors.clone()))?;
        registry.register(Box::new(policy_connections_rejected.clone()))?;
        registry.register(Box::new(policy_errors.clone()))?;
        let retries = IntCounterVec::new(
            opts!(
                "weir_upstream_retries_total",
                "Upstream retries made by a BackendTrafficPolicy, by route and trigger."
            ),
            &["route", "reason"],
        )?;
        let breaker_overflows = IntCounterVec::new(
            opts!(
                "weir_circuit_breaker_overflows_total",
                "Requests answered 503 by a BackendTrafficPolicy circuit breaker, by route."
            ),
            &["route"],
        )?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(breaker_overflows.clone()))?;
        let endpoint_ejections = IntCounterVec::new(
            opts!(
                "weir_endpoint_ejections_total",
                "Endpoints ejected by BackendTrafficPolicy passive health, by upstream."
            ),
            &["upstream"],
        )?;
        let health_probes = IntCounterVec::new(
            opts!(
                "weir_health_probes_total",
                "BackendTrafficPolicy active health probes, by upstream and result."
            ),
            &["upstream", "result"],
        )?;
        registry.register(Box::new(endpoint_ejections.clone()))?;
        registry.register(Box::new(health_probes.clone()))?;
        let fault_injected = IntCounterVec::new(
            opts!(
                "weir_fault_injected_total",
                "Requests delayed or aborted by a BackendTrafficPolicy's faultInjection, by route and kind."
            ),
            &["route", "kind"],
        )?;
        let retries_skipped = IntCounterVec::new(
            opts!(
                "weir_upstream_retries_skipped_total",
                "Retries a BackendTrafficPolicy did not make (retry budget spent, maxParallelRetries), by route and reason."
            ),
            &["route", "reason"],
        )?;
        registry.register(Box::new(fault_injected.clone()))?;
        let rate_limited = IntCounterVec::new(
            opts!(
                "weir_rate_limited_total",
                "Requests refused (429) by a BackendTrafficPolicy rateLimit, by route and kind (local, global)."
            ),
            &["route", "kind"],
        )?;
        let rate_limit_redis_errors = IntCounterVec::new(
            opts!(
                "weir_rate_limit_redis_errors_total",
                "Global rate-limit checks Redis did not answer in time, by result (passed: fail open; refused: fail closed)."
            ),
            &["result"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(rate_limit_redis_errors.clone()))?;
        let picker = HistogramVec::new(
            histogram_opts!(
                "weir_endpoint_picker_seconds",
                "InferencePool endpoint picker round trips (request to decision), by result.",
                vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]
            ),
            &["result"],
        )?;
        let picker_fail_open = IntCounter::with_opts(opts!(
            "weir_endpoint_picker_fail_open_total",
            "Requests sent to a pool endpoint of Weir's choosing because the endpoint picker failed (FailOpen)."
        ))?;
        registry.register(Box::new(picker.clone()))?;
        registry.register(Box::new(picker_fail_open.clone()))?;
        let ext_proc = HistogramVec::new(
            histogram_opts!(
                "weir_ext_proc_seconds",
                "ExtensionPolicy external processor exchanges (a message to its answer), by phase (request, response) and result (ok, immediate, error).",
                vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]
            ),
            &["phase", "result"],
        )?;
        let ext_proc_fail_open = IntCounterVec::new(
            opts!(
                "weir_ext_proc_fail_open_total",
                "ExtensionPolicy external processor failures passed over because the processor is failOpen, by phase."
            ),
            &["phase"],
        )?;
        registry.register(Box::new(ext_proc.clone()))?;
        registry.register(Box::new(ext_proc_fail_open.clone()))?;
        registry.register(Box::new(retries_skipped.clone()))?;
        let trace_spans_dropped = IntCounter::with_opts(opts!(
            "weir_trace_spans_dropped_total",
            "Sampled spans not exported: the export queue was full or the export failed."
        ))?;
        registry.register(Box::new(trace_spans_dropped.clone()))?;
        let ext_auth_failures = IntCounterVec::new(
            opts!(
                "weir_ext_auth_failures_total",
                "External authorization checks whose service failed, by outcome (open: let through, closed: refused)."
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(ext_auth_failures.clone()))?;
        let jwt = IntCounterVec::new(
            opts!(
                "weir_jwt_verifications_total",
                "JWTs checked by a SecurityPolicy, by result (cached: accepted from the verified-token cache; verified, failed: a full verification ran)."
            ),
            &["result"],
        )?;
        registry.register(Box::new(jwt.clone()))?;
        let jwt_cached = jwt.with_label_values(&["cached"]);
        let jwt_verified = jwt.with_label_values(&["verified"]);
        let jwt_failed = jwt.with_label_values(&["failed"]);
        let udp_flows = IntGauge::with_opts(opts!(
            "weir_udp_flows",
            "UDP flows (client address to endpoint) open now."
        ))?;
        let udp_flows_rejected = IntCounter::with_opts(opts!(
            "weir_udp_flows_rejected_total",
            "Datagrams dropped because they would have opened a UDP flow beyond --udp-max-flows."
        ))?;
        registry.register(Box::new(udp_flows.clone()))?;
        registry.register(Box::new(udp_flows_rejected.clone()))?;
        let compress = crate::compress::CompressMetrics::register(registry)?;
        let cache = crate::cache::CacheMetrics::register(registry)?;
        Ok(Self {
            compress,
            cache,
            retries,
            breaker_overflows,
            endpoint_ejections,
            health_probes,
            fault_injected,
            rate_limited,
            rate_limit_redis_errors,
            picker,
            picker_fail_open,
            ext_proc,
            ext_proc_fail_open,
            retries_skipped,
            udp_flows,
            udp_flows_rejected,
            proxy_protocol_errors,
            policy_connections_rejected,
            policy_errors,
            requests,
            duration,
            errors,
            connect_errors,
            active_connections,
            bind_errors,
            worker_accepted,
            connections_rejected,
            idle_closed,
            access_log_dropped,
            trace_spans_dropped,
            ext_auth_failures,
            jwt_cached,
            jwt_verified,
            jwt_failed,
        })
    }

    /// An ext auth service failed; `open`: the request went on (`failOpen`).
    pub(crate) fn ext_auth_failure(&self, open: bool) {
        self.ext_auth_failures
            .with_label_values(&[if open { "open" } else { "closed" }])
            .inc();
    }

    pub(crate) fn record_request(
        &self,
        cache: &MetricsCache,
        labels: &RequestLabels<'_>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let seconds = elapsed.as_secs_f64();
        // Uncontended on HTTP/1.1; concurrent HTTP/2 streams that find it busy go the slow
        // way rather than wait.
        let Ok(mut slot) = cache.0.try_lock() else {
            self.series(labels, status).record(seconds);
            return;
        };
        match slot.as_ref() {
            Some(cached) if cached.is_for(labels, status) => cached.series.record(seconds),
            _ => {
                let series = self.series(labels, status);
                series.record(seconds);
                *slot = Some(CachedSeries {
                    gateway: labels.gateway.into(),
                    route: labels.route.into(),
                    backend: labels.backend.into(),
                    status,
                    series,
                });
            }
        }
    }

    fn series(&self, labels: &RequestLabels<'_>, status: StatusCode) -> Series {
        Series {
            requests: self.requests.with_label_values(&[
                labels.gateway,
                labels.route,
                labels.backend,
                status.as_str(),
            ]),
            duration: self
                .duration
                .with_label_values(&[labels.gateway, labels.route]),
        }
    }

    pub(crate) fn record_error(&self, reason: &str) {
        self.errors.with_label_values(&[reason]).inc();
    }

    pub(crate) fn record_retry(&self, route: &str, reason: &str) {
        self.retries.with_label_values(&[route, reason]).inc();
    }

    pub(crate) fn picker_observe(&self, took: std::time::Duration, result: &str) {
        self.picker
            .with_label_values(&[result])
            .observe(took.as_secs_f64());
    }

    /// One ExtensionPolicy processor exchange (`phase`: `request` or `response`).
    pub(crate) fn ext_proc_observe(&self, phase: &str, took: std::time::Duration, result: &str) {
        self.ext_proc
            .with_label_values(&[phase, result])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn ext_proc_fail_open(&self, phase: &str) {
        self.ext_proc_fail_open.with_label_values(&[phase]).inc();
    }

    pub(crate) fn record_fault(&self, route: &str, kind: &str) {
        self.fault_injected.with_label_values(&[route, kind]).inc();
    }

    pub(crate) fn record_rate_limited(&self, route: &str, kind: &str) {
        self.rate_limited.with_label_values(&[route, kind]).inc();
    }

    pub(crate) fn record_rate_limit_redis_error(&self, result: &str) {
        self.rate_limit_redis_errors
            .with_label_values(&[result])
            .inc();
    }

    pub(crate) fn record_retry_skipped(&self, route: &str, reason: &str) {
        self.retries_skipped
            .with_label_values(&[route, reason])
            .inc();
    }

    pub(crate) fn record_breaker_overflow(&self, route: &str) {
        self.breaker_overflows.with_label_values(&[route]).inc();
    }

    pub(crate) fn record_connect_error(&self, backend: &str) {
        self.connect_errors.with_label_values(&[backend]).inc();
    }

    /// The gauge for connections of one protocol; hold it in a [`ConnectionGuard`].
    pub(crate) fn connection(&self, protocol: ConnProtocol) -> ConnectionGuard {
        let gauge = self
            .active_connections
            .with_label_values(&[protocol.label()]);
        gauge.inc();
        ConnectionGuard(gauge)
    }
}

/// What a downstream connection carries: the `protocol` label of `weir_active_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnProtocol {
    /// HTTP in cleartext (HTTP/1.1 or h2c).
    Http,
    /// HTTP over TLS that Weir terminates (HTTPS listeners).
    Https,
    /// TLSRoute connections, passed through by SNI or terminated and spliced.
    Tls,
    /// TCPRoute connections.
    Tcp,
}

impl ConnProtocol {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ConnProtocol::Http => "http",
            ConnProtocol::Https => "https",
            ConnProtocol::Tls => "tls",
            ConnProtocol::Tcp => "tcp",
        }
    }
}

/// One connection's last-used request series (see [`Metrics::record_request`]).
#[derive(Default)]
pub(crate) struct MetricsCache(Mutex<Option<CachedSeries>>);

struct CachedSeries {
    gateway: Box<str>,
    route: Box<str>,
    backend: Box<str>,
    status: StatusCode,
    series: Series,
}

impl CachedSeries {
    fn is_for(&self, labels: &RequestLabels<'_>, status: StatusCode) -> bool {
        self.status == status
            && *self.route == *labels.route
            && *self.backend == *labels.backend
            && *self.gateway == *labels.gateway
    }
}

/// The counter and histogram of one label set.
struct Series {
    requests: IntCounter,
    duration: Histogram,
}

impl Series {
    fn record(&self, seconds: f64) {
        self.requests.inc();
        self.duration.observe(seconds);
    }
}

/// Decrements `weir_active_connections` when the connection ends.
pub(crate) struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
