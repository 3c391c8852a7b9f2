//! BackendTrafficPolicy `healthCheck`, compiled: passive health (outlier ejection from the
//! outcomes of real requests), active probes (HTTP, TCP, gRPC) and the panic threshold.
//!
//! This is configuration only. The state it drives (consecutive-failure counters, ejections,
//! probe results, the probe tasks) lives in the proxy, per endpoint address, shared by every
//! route whose policy has a health check, and survives snapshot swaps.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// `healthCheck` of a BackendTrafficPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub passive: Option<PassiveHealth>,
    pub active: Option<Arc<ActiveHealth>>,
    /// `panicThreshold` (percent, 0 to 100): when fewer than this share of an upstream's
    /// endpoints are healthy, every endpoint is eligible again. Envoy's default is 50; 0
    /// turns panic routing off (no healthy endpoint: 503).
    pub panic_threshold: u8,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            passive: None,
            active: None,
            panic_threshold: 50,
        }
    }
}

/// `healthCheck.passive` (Envoy's outlier detection, consecutive-error kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PassiveHealth {
    /// `consecutive5XxErrors`: 5xx responses in a row that eject (0: off). Without
    /// `split_external_local_origin_errors`, local-origin failures count as 5xx too.
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors`: 502, 503, 504 in a row that eject (0: off). Without the
    /// split, local-origin failures count too.
    pub consecutive_gateway: u32,
    /// `consecutiveLocalOriginFailures`: connect failures and resets in a row that eject
    /// (0: off); only counted with `split_external_local_origin_errors`.
    pub consecutive_local_origin: u32,
    /// `splitExternalLocalOriginErrors`.
    pub split_external_local_origin_errors: bool,
    /// `interval`: an endpoint that stays in service this long is forgiven one past
    /// ejection (its next ejection lasts one `base_ejection_time` less).
    pub interval: Duration,
    /// `baseEjectionTime`: an ejection lasts this × the times the endpoint was ejected.
    pub base_ejection_time: Duration,
    /// `maxEjectionPercent`: at most this share of an upstream's endpoints are ejected at
    /// once (one endpoint may always be ejected, as in Envoy).
    pub max_ejection_percent: u8,
}

impl Default for PassiveHealth {
    /// Envoy Gateway's defaults.
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            consecutive_local_origin: 5,
            split_external_local_origin_errors: false,
            interval: Duration::from_secs(3),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }
}

/// `healthCheck.active`: a probe sent to every endpoint at `interval`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActiveHealth {
    pub probe: Probe,
    pub interval: Duration,
    /// A probe not answered within this is a failure.
    pub timeout: Duration,
    /// Failed probes in a row that take a healthy endpoint out.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
}

impl ActiveHealth {
    /// Identifies the probe across snapshots and routes: one prober runs per endpoint and
    /// identity, however many routes and policies ask for it.
    pub fn id(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// What a probe sends and expects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// `type: HTTP`: an HTTP/1.1 request; the response status must be one of
    /// `expected_statuses`.
    Http {
        path: Arc<str>,
        method: http::Method,
        /// `Host` of the probe (`http.hostname`); `None`: the endpoint's address.
        hostname: Option<Arc<str>>,
        expected_statuses: Arc<[u16]>,
    },
    /// `type: TCP`: a connection, then optionally `send` written and `receive` expected
    /// (as a prefix of what the endpoint answers).
    Tcp {
        send: Option<Arc<[u8]>>,
        receive: Option<Arc<[u8]>>,
    },
    /// `type: GRPC`: `grpc.health.v1.Health/Check` over h2c; the answer must be SERVING.
    Grpc { service: Option<Arc<str>> },
}
