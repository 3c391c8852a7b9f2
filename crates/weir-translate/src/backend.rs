//! backendRefs → upstreams: Service port → ready endpoints from the Service's EndpointSlices.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_snapshot::{AppProtocol, Endpoint, EndpointZone, Upstream};
use weir_store::{ObjectKey, Store, GATEWAY_GROUP, INFERENCE_GROUP};

use crate::error::TranslateError;
use crate::refgrant::{self, core_group};

/// The label EndpointSlices carry naming their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A backendRef's identity fields, from either a rule backendRef or a mirror.
pub struct BackendRefSpec<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

/// Upstreams built so far, one per (service, port), shared across routes.
#[derive(Default)]
pub struct Upstreams {
    by_port: BTreeMap<(ObjectKey, i32), Arc<Upstream>>,
    /// TLS settings from BackendTLSPolicies, by target.
    tls: crate::backendtls::TlsIndex,
    /// EndpointSlices by the Service they name, built on first need: one pass over the
    /// slices per translation instead of one per Service.
    slices: Option<SlicesByService>,
    /// InferencePool upstreams built so far, by pool.
    pools: BTreeMap<ObjectKey, Arc<Upstream>>,
}

/// EndpointSlices by their Service's (namespace, name), in key order within a Service.
/// By the Service's key (the slice's namespace, the service-name label).
type SlicesByService = BTreeMap<ObjectKey, Vec<Arc<EndpointSlice>>>;

fn index_slices(store: &Store) -> SlicesByService {
    let mut index = SlicesByService::new();
    for (key, slice) in &store.endpoint_slices {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            index
                .entry(ObjectKey::new(key.namespace.clone(), service.as_str()))
                .or_default()
                .push(slice.clone());
        }
    }
    index
}

impl Upstreams {
    /// Upstreams whose Service ports get TLS as the policies in `tls` say.
    pub fn with_tls(tls: crate::backendtls::TlsIndex) -> Self {
        Self {
            by_port: BTreeMap::new(),
            tls,
            slices: None,
            pools: BTreeMap::new(),
        }
    }

    /// Start from the upstreams of a previous translation of the same Services,
    /// EndpointSlices, ReferenceGrants and BackendTLSPolicies (see `crate::memo`).
    pub fn seed(&mut self, table: BTreeMap<(ObjectKey, i32), Arc<Upstream>>) {
        self.by_port = table;
    }

    /// The upstreams built, by (Service, port), for [`Self::seed`].
    pub fn into_table(self) -> BTreeMap<(ObjectKey, i32), Arc<Upstream>> {
        self.by_port
    }

    /// The Service behind each upstream built (by address of the upstream), to find which
    /// Services a Gateway's routes use.
    pub fn services(&self) -> BTreeMap<*const Upstream, &ObjectKey> {
        self.by_port
            .iter()
            .map(|((key, _), u)| (Arc::as_ptr(u), key))
            .collect()
    }

    /// Resolve a backendRef of a route of `route_kind` (`HTTPRoute`, `GRPCRoute`: what a
    /// ReferenceGrant's `from` must name) in `route_ns`.
    pub fn resolve(
        &mut self,
        store: &Store,
        route_kind: &'static str,
        route_ns: &str,
        r: &BackendRefSpec<'_>,
    ) -> Result<Arc<Upstream>, TranslateError> {
        self.resolve_from(store, GATEWAY_GROUP, route_kind, route_ns, r)
    }

    /// [`Self::resolve`] for a referrer of another group (a policy's backendRef: the
    /// ReferenceGrant's `from` names its group and kind).
    pub fn resolve_from(
        &mut self,
        store: &Store,
        from_group: &'static str,
        route_kind: &'static str,
        route_ns: &str,
        r: &BackendRefSpec<'_>,
    ) -> Result<Arc<Upstream>, TranslateError> {
        let group = core_group(r.group.unwrap_or(""));
        let kind = r.kind.unwrap_or("Service");
        if group == INFERENCE_GROUP && kind == crate::inference::KIND {
            return self.resolve_pool(store, route_kind, route_ns, r);
        }
        if !group.is_empty() || kind != "Service" {
            return Err(TranslateError::BackendKind {
                group: group.to_string(),
                kind: kind.to_string(),
                name: r.name.to_string(),
            });
        }
        let ns = r.namespace.unwrap_or(route_ns);
        let key = ObjectKey::new(ns, r.name);
        let allowed = refgrant::permitted(
            store,
            &refgrant::From {
                group: from_group,
                kind: route_kind,
                namespace: route_ns,
            },
            &refgrant::To {
                group: "",
                kind: "Service",
                namespace: ns,
                name: r.name,
            },
        );
        if !allowed {
            return Err(TranslateError::BackendNotPermitted {
                service: key.to_string(),
                route_kind,
            });
        }
        let port = r
            .port
            .ok_or_else(|| TranslateError::BackendPortMissing(key.to_string()))?;
        self.service_port(store, key, port)
    }

    /// A backendRef to an InferencePool (`crate::inference`): ReferenceGrants as for
    /// Services; the backendRef's port is ignored.
    fn resolve_pool(
        &mut self,
        store: &Store,
        route_kind: &'static str,
        route_ns: &str,
        r: &BackendRefSpec<'_>,
    ) -> Result<Arc<Upstream>, TranslateError> {
        let ns = r.namespace.unwrap_or(route_ns);
        let key = ObjectKey::new(ns, r.name);
        let allowed = refgrant::permitted(
            store,
            &refgrant::From {
                group: GATEWAY_GROUP,
                kind: route_kind,
                namespace: route_ns,
            },
            &refgrant::To {
                group: INFERENCE_GROUP,
                kind: crate::inference::KIND,
                namespace: ns,
                name: r.name,
            },
        );
        if !allowed {
            return Err(TranslateError::InferencePoolNotPermitted {
                pool: key.to_string(),
                route_kind,
            });
        }
        if let Some(u) = self.pools.get(&key) {
            return Ok(u.clone());
        }
        let pool = store
            .inference_pools
            .get(&key)
            .ok_or_else(|| TranslateError::InferencePoolNotFound(key.to_string()))?;
        let endpoints = crate::inference::endpoints(store, &key, pool);
        let upstream = Arc::new(crate::inference::upstream(
            &key,
            pool,
            endpoints,
            |epp, port| self.service_port(store, epp.clone(), port),
        ));
        self.pools.insert(key, upstream.clone());
        Ok(upstream)
    }

    /// The upstream of a Service port (the reference to it already checked).
    fn service_port(
        &mut self,
        store: &Store,
        key: ObjectKey,
        port: i32,
    ) -> Result<Arc<Upstream>, TranslateError> {
        let service = store
            .services
            .get(&key)
            .ok_or_else(|| TranslateError::BackendNotFound(key.to_string()))?;
        if let Some(u) = self.by_port.get(&(key.clone(), port)) {
            return Ok(u.clone());
        }
        let service_port = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.port == port))
            .ok_or_else(|| TranslateError::BackendPortNotFound {
                service: key.to_string(),
                port,
            })?;
        let tls = crate::backendtls::lookup(&self.tls, &key, service_port.name.as_deref());
        let slices = self.slices.get_or_insert_with(|| index_slices(store));
        let slices = slices.get(&key).map_or(&[][..], Vec::as_slice);
        let (ready, zones) = endpoints(slices, service_port);
        let upstream = Arc::new(
            Upstream::new(
                format!("{key}:{port}"),
                app_protocol(service_port.app_protocol.as_deref()),
                ready,
            )
            .with_tls(tls.cloned())
            .with_zones(zones),
        );
        self.by_port.insert((key, port), upstream.clone());
        Ok(upstream)
    }
}

fn app_protocol(p: Option<&str>) -> AppProtocol {
    match p {
        Some("kubernetes.io/h2c") => AppProtocol::H2c,
        Some("kubernetes.io/ws") | Some("kubernetes.io/wss") => AppProtocol::WebSocket,
        _ => AppProtocol::Http1,
    }
}

/// Ready endpoints of a Service port from the Service's slices, deduplicated and sorted,
/// and each one's zone and hints (`zoneAware`).
fn endpoints(
    slices: &[Arc<EndpointSlice>],
    service_port: &ServicePort,
) -> (Vec<Endpoint>, Vec<EndpointZone>) {
    let mut out = BTreeMap::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or(&[]);
        let Some(port) = slice_port(ports, service_port) else {
            continue;
        };
        for ep in &slice.endpoints {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let zone = || EndpointZone {
                zone: ep.zone.as_deref().map(Arc::from),
                for_zones: ep
                    .hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| Arc::from(z.name.as_str()))
                    .collect(),
            };
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    out.entry(SocketAddr::new(ip, port)).or_insert_with(zone);
                }
            }
        }
    }
    out.into_iter()
        .map(|(addr, zone)| (Endpoint { addr }, zone))
        .unzip()
}

/// The slice port serving a Service port: by name for named Service ports; otherwise by the
/// targetPort (number, or name), falling back to the Service port number.
fn slice_port(ports: &[EndpointPort], sp: &ServicePort) -> Option<u16> {
    let name = |p: &EndpointPort| p.name.clone().unwrap_or_default();
    let found = match (
        sp.name.as_deref().filter(|n| !n.is_empty()),
        &sp.target_port,
    ) {
        (Some(n), _) => ports.iter().find(|p| name(p) == n),
        (None, Some(IntOrString::String(n))) => ports.iter().find(|p| name(p) == *n),
        (None, Some(IntOrString::Int(n))) => ports.iter().find(|p| p.port == Some(*n)),
        (None, None) => ports.iter().find(|p| p.port == Some(sp.port)),
    };
    let found = found.or_else(|| match ports {
        [only] if name(only).is_empty() => Some(only),
        _ => None,
    })?;
    found.port.and_then(|p| u16::try_from(p).ok())
}
