//! Backends: weighted choices within a rule, each either a resolved upstream or a reason it
//! could not be resolved (its share of traffic then gets 500).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;

use crate::filter::Filter;

/// One weighted backendRef of a rule.
#[derive(Debug)]
pub struct Backend {
    pub weight: u32,
    pub target: BackendTarget,
    /// Filters that apply only when this backend is picked.
    pub filters: Arc<[Filter]>,
}

#[derive(Debug)]
pub enum BackendTarget {
    Upstream(Arc<Upstream>),
    /// The backendRef did not resolve (missing Service, wrong kind, not permitted…): requests
    /// that pick it get 500. The string says why, for logs.
    Invalid(Arc<str>),
}

/// How to speak to the backend, from the Service port's `appProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppProtocol {
    #[default]
    Http1,
    /// `kubernetes.io/h2c`: HTTP/2 with prior knowledge.
    H2c,
    /// `kubernetes.io/ws` (or `wss`): HTTP/1.1, upgrades expected.
    WebSocket,
}

/// A Service port resolved to ready endpoints.
#[derive(Debug)]
pub struct Upstream {
    /// `namespace/service:port`, precomputed as the metric label.
    pub name: Arc<str>,
    pub protocol: AppProtocol,
    /// Ready endpoints (address and target port).
    pub endpoints: Arc<[Endpoint]>,
    /// `endpoints[i]` as a URI authority (`ip:port`), formatted once here instead of per
    /// request.
    authorities: Arc<[Authority]>,
    /// Round-robin cursor. Shared by all requests on this snapshot.
    next: AtomicUsize,
    /// A hash of `name` and `endpoints` (in order): keys the load balancer's runtime state
    /// (its Maglev table, indexed like `endpoints`) across snapshots.
    pub id: u64,
    /// TLS to the backend (a BackendTLSPolicy targets this Service port); `None` is
    /// cleartext.
    pub tls: Option<BackendTls>,
    /// `endpoints[i]`'s zone and hints (EndpointSlice `zone`, `hints.forZones`), for
    /// `loadBalancer.zoneAware`; empty when no endpoint has any.
    pub zones: Arc<[EndpointZone]>,
    /// Set when this upstream is an InferencePool: each request asks the pool's endpoint
    /// picker which endpoint serves it (`None` for Services: they pay nothing).
    pub inference: Option<Arc<crate::inference::InferencePool>>,
}

/// Where an endpoint runs, from its EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EndpointZone {
    /// `endpoints[].zone`.
    pub zone: Option<Arc<str>>,
    /// `endpoints[].hints.forZones[].name`: the zones that should use it (topology aware
    /// routing); when present they decide, not `zone`.
    pub for_zones: Arc<[Arc<str>]>,
}

impl EndpointZone {
    /// Whether the endpoint is local to `zone`.
    pub fn serves(&self, zone: &str) -> bool {
        if self.for_zones.is_empty() {
            self.zone.as_deref() == Some(zone)
        } else {
            self.for_zones.iter().any(|z| &**z == zone)
        }
    }
}

/// How connections to a backend are secured, from the BackendTLSPolicy that targets it.
#[derive(Debug, Clone)]
pub enum BackendTls {
    /// Connect with TLS and verify the backend's certificate.
    Verify(Arc<UpstreamTls>),
    /// A policy targets the backend but cannot be applied (no valid CA certificate,
    /// unsupported settings): connections must fail rather than fall back to cleartext, so
    /// requests get 500. The string says why, for logs.
    Invalid(Arc<str>),
}

/// What a TLS connection to a backend must check (BackendTLSPolicy `validation`).
#[derive(Debug)]
pub struct UpstreamTls {
    /// Identifies these settings across snapshots (a hash of CA certificates, hostname
    /// and SANs), so pooled connections survive snapshot swaps and never mix settings.
    pub id: u64,
    /// The SNI (validation.hostname); also the name verified when `subject_alt_names` is
    /// empty.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Trust anchors for the backend's certificate chain.
    pub roots: Arc<rustls::RootCertStore>,
    /// When not empty, the certificate must carry one of these SANs (and the hostname is
    /// not verified).
    pub subject_alt_names: Arc<[SubjectAltName]>,
}

/// One `validation.subjectAltNames` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS name (matched like a server name: wildcard certificates cover one label).
    Hostname(String),
    /// A URI, matched exactly (e.g. a SPIFFE ID).
    Uri(String),
}

/// The certificate a Gateway presents to TLS backends (`spec.tls.backend.clientCertificateRef`).
#[derive(Debug)]
pub struct ClientCert {
    /// Identifies the certificate across snapshots (a hash of its PEM), for pool keys.
    pub id: u64,
    pub key: Arc<rustls::sign::CertifiedKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
}

impl Upstream {
    pub fn new(name: impl Into<Arc<str>>, protocol: AppProtocol, endpoints: Vec<Endpoint>) -> Self {
        let authorities = endpoints
            .iter()
            .map(|e| {
                // An `ip:port` is always a valid authority; the fallback is never taken.
                Authority::try_from(e.addr.to_string())
                    .unwrap_or_else(|_| Authority::from_static("invalid"))
            })
            .collect();
        let name: Arc<str> = name.into();
        let id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            endpoints.hash(&mut h);
            h.finish()
        };
        Self {
            name,
            protocol,
            endpoints: endpoints.into(),
            authorities,
            next: AtomicUsize::new(0),
            id,
            tls: None,
            zones: Arc::new([]),
            inference: None,
        }
    }

    /// The same upstream as an InferencePool's (see [`Upstream::inference`]).
    pub fn with_inference(mut self, pool: crate::inference::InferencePool) -> Self {
        self.inference = Some(Arc::new(pool));
        self
    }

    /// The index of `addr` among the endpoints, if it is one (the endpoint picker may only
    /// choose endpoints of its pool).
    pub fn position(&self, addr: SocketAddr) -> Option<usize> {
        self.endpoints.iter().position(|e| e.addr == addr)
    }

    /// The same upstream with its endpoints' zones (`zones[i]` is `endpoints[i]`'s; all
    /// empty: none).
    pub fn with_zones(mut self, zones: Vec<EndpointZone>) -> Self {
        if zones.len() != self.endpoints.len()
            || zones.iter().all(|z| *z == EndpointZone::default())
        {
            return self;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.id.hash(&mut h);
        zones.hash(&mut h);
        self.id = h.finish();
        self.zones = zones.into();
        self
    }

    /// The same upstream, reached over TLS (or failing, for an invalid policy).
    pub fn with_tls(mut self, tls: Option<BackendTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The next endpoint in round-robin order, or `None` when there are no ready endpoints.
    pub fn pick(&self) -> Option<Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i).copied()
    }

    /// Endpoints starting from the next round-robin position: the first is the pick, the rest
    /// are fallbacks to try when connecting to it fails.
    pub fn pick_with_fallbacks(&self) -> impl Iterator<Item = Endpoint> + '_ {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).filter_map(move |k| self.endpoints.get((start + k) % n).copied())
    }

    /// Like [`Upstream::pick_with_fallbacks`], with each endpoint's precomputed URI
    /// authority.
    pub fn attempts(&self) -> impl Iterator<Item = (Endpoint, &Authority)> + '_ {
        self.attempts_from(None).map(|(_, e, a)| (e, a))
    }

    /// Endpoints (with their index and authority) starting from `start` (a load balancer's
    /// pick), or from the next round-robin position when `None`; the rest follow in ring
    /// order, as fallbacks when connecting fails.
    pub fn attempts_from(
        &self,
        start: Option<usize>,
    ) -> impl Iterator<Item = (usize, Endpoint, &Authority)> + '_ {
        let n = self.endpoints.len();
        let start = match start {
            _ if n == 0 => 0,
            Some(i) => i % n,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        (0..n).filter_map(move |k| {
            let i = (start + k) % n;
            Some((i, *self.endpoints.get(i)?, self.authorities.get(i)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_through_endpoints() {
        let eps = vec![
            Endpoint {
                addr: "127.0.0.1:1".parse().unwrap(),
            },
            Endpoint {
                addr: "127.0.0.1:2".parse().unwrap(),
            },
        ];
        let u = Upstream::new("ns/svc:80", AppProtocol::Http1, eps);
        let picks: Vec<u16> = (0..4).map(|_| u.pick().unwrap().addr.port()).collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        let order: Vec<u16> = u.pick_with_fallbacks().map(|e| e.addr.port()).collect();
        assert_eq!(order.len(), 2);
        assert_ne!(order[0], order[1]);
        let attempts: Vec<String> = u.attempts().map(|(_, a)| a.to_string()).collect();
        assert_eq!(attempts.len(), 2);
        assert_ne!(attempts[0], attempts[1]);
        assert!(attempts.iter().all(|a| a.starts_with("127.0.0.1:")));
        assert!(Upstream::new("x", AppProtocol::Http1, vec![])
            .pick()
            .is_none());
    }

    #[test]
    fn attempts_from_start_at_the_pick_and_give_indexes() {
        let eps = (1..=3)
            .map(|p| Endpoint {
                addr: format!("127.0.0.1:{p}").parse().unwrap(),
            })
            .collect();
        let u = Upstream::new("ns/svc:80", AppProtocol::Http1, eps);
        let got: Vec<(usize, u16)> = u
            .attempts_from(Some(1))
            .map(|(i, e, _)| (i, e.addr.port()))
            .collect();
        assert_eq!(got, [(1, 2), (2, 3), (0, 1)], "the pick, then ring order");
    }
}
