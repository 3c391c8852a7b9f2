//! The translation's models of Gateways, their listeners (own and from ListenerSets) and
//! route parents: the types every stage (listeners, ListenerSets, routes, status) reads,
//! kept apart from the code that builds them so that the stages depend on the models, not
//! on each other.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use weir_snapshot::{HostPattern, RouteEntry, TlsRouteEntry};
use weir_store::gw::gateways::GatewayListenersAllowedRoutesNamespaces;
use weir_store::gw::grpcroutes::GrpcRouteParentRefs;
use weir_store::gw::httproutes::{HttpRouteParentRefs, HttpRouteStatusParentsParentRef};
use weir_store::{Gateway, ListenerSet, ObjectKey};

use crate::error::TranslateError;

/// A Gateway of ours, with its listeners evaluated.
pub struct GatewayModel {
    pub key: ObjectKey,
    pub gateway: Arc<Gateway>,
    pub created: (i64, u32),
    /// spec.addresses problem: UnsupportedAddress (not accepted) or AddressNotUsable (not
    /// programmed).
    pub address_error: Option<TranslateError>,
    /// `spec.infrastructure.parametersRef` is set: InvalidParameters (not accepted). Weir
    /// takes parameters from the GatewayClass only (see [`crate::services`]), so no kind of
    /// per-Gateway parameters is supported, and the spec rejects a Gateway whose parameters
    /// refer to an unsupported kind rather than ignoring them.
    pub params_error: Option<TranslateError>,
    /// Where its listeners are served, sorted and unique: `None` is the process-wide bind
    /// address (no spec.addresses, an IPAddress without value, or one of
    /// [`crate::Input::gateway_addresses`]), `Some(ip)` a requested address of this host.
    pub binds: Vec<Option<IpAddr>>,
    /// status.addresses: the addresses of `binds`, as (type, value).
    pub status_addresses: Vec<(String, String)>,
    /// With an address pool: the Gateway asked for no particular address (no
    /// spec.addresses, or an IPAddress without value), so it gets one from the pool.
    pub wants_pool_address: bool,
    /// Services mode: listener port → the pod port it is bound at (from the Gateway's
    /// Service, see [`crate::services::gateway_binding`]). `None` in the other modes.
    pub pod_ports: Option<BTreeMap<u16, u16>>,
    /// Its own listeners first, then those of the ListenerSets it admits, in precedence
    /// order (see [`crate::listenerset`]).
    pub listeners: Vec<ListenerModel>,
    /// The ListenerSets whose parentRef names this Gateway, allowed or not.
    pub listener_sets: Vec<ListenerSetModel>,
    /// Some HTTPS listener's frontend validation is in mode AllowInsecureFallback (the
    /// InsecureFrontendValidationMode condition).
    pub insecure_frontend: bool,
    /// The certificate presented to TLS backends (`spec.tls.backend.clientCertificateRef`).
    pub backend_client_cert: Option<Arc<weir_snapshot::ClientCert>>,
    /// Why that reference is not usable (the Gateway's ResolvedRefs=False).
    pub backend_client_cert_error: Option<TranslateError>,
}

impl GatewayModel {
    /// Accepted: no per-Gateway parameters, addresses are supported and at least one
    /// listener is accepted.
    pub fn accepted(&self) -> bool {
        self.params_error.is_none()
            && !matches!(
                self.address_error,
                Some(
                    TranslateError::UnsupportedAddress(_)
                        | TranslateError::UnsupportedServiceAddress(_)
                )
            )
            && self.own_listeners().any(ListenerModel::accepted)
    }

    /// The listeners of the Gateway's own spec (not those of its ListenerSets).
    pub fn own_listeners(&self) -> impl Iterator<Item = &ListenerModel> {
        self.listeners.iter().filter(|l| l.owner.is_none())
    }

    /// Serving: accepted and every requested address usable (in Services mode: its
    /// Service maps its listener ports, whatever address the load balancer gave it).
    pub fn serving(&self) -> bool {
        self.accepted()
            && self
                .address_error
                .as_ref()
                .is_none_or(TranslateError::still_serves)
    }
}

/// A socket as the snapshot keys it: (address, configured port or exact bind port).
pub type SocketKey = (Option<IpAddr>, u16);

/// The socket a listener port of a Gateway is served on at `bind`: (address, port) as the
/// snapshot keys it, and the exact port to bind. Services mode (`pod_ports`): the pod port
/// the Gateway's Service records, `None` when it records none yet (the listener is then not
/// placed). Otherwise the configured port, bound with the offset.
pub fn socket_for(
    pod_ports: Option<&BTreeMap<u16, u16>>,
    bind: Option<IpAddr>,
    port: u16,
) -> Option<(SocketKey, Option<u16>)> {
    match pod_ports {
        Some(pods) => pods.get(&port).map(|&pod| ((bind, pod), Some(pod))),
        None => Some(((bind, port), None)),
    }
}

/// A TLSRoute on a passthrough listener: its effective host pattern, the route's
/// (creation, key) for the oldest-first order, and its entry.
pub type TlsPlacement = (
    Option<HostPattern>,
    ((i64, u32), ObjectKey),
    Arc<TlsRouteEntry>,
);

/// One listener of a Gateway of ours.
pub struct ListenerModel {
    /// The ListenerSet this listener comes from; `None` for the Gateway's own.
    pub owner: Option<ObjectKey>,
    pub name: String,
    pub port: u16,
    pub https: bool,
    /// Protocol TLS, TCP or UDP: TLSRoutes routed by SNI, or TCPRoutes / UDPRoutes (the
    /// snapshot's passthrough section).
    pub passthrough: bool,
    /// Protocol TCP: TCPRoutes; every connection is spliced to the oldest route's backend.
    pub tcp: bool,
    /// Protocol UDP: UDPRoutes; datagrams go to the oldest route's backends, on a socket of
    /// its own (UDP, so a TCP listener may use the same port number).
    pub udp: bool,
    /// Protocol TLS, mode Terminate: TLS is terminated here (with `cert`) before the SNI
    /// routing; otherwise (Passthrough) the connection is spliced as it is.
    pub tls_terminate: bool,
    pub hostname: Option<HostPattern>,
    /// Route kinds (group gateway.networking.k8s.io) this listener accepts.
    pub supported_kinds: Vec<String>,
    pub namespaces: Option<GatewayListenersAllowedRoutesNamespaces>,
    /// Why Accepted is False (unsupported protocol, port, TLS mode, port clash).
    pub not_accepted: Option<TranslateError>,
    /// `HostnameConflict` or `ProtocolConflict`.
    pub conflict: Option<&'static str>,
    /// The listener of another Gateway this one conflicts with on a shared socket
    /// (`namespace/gateway/listener`); `None` for a conflict within the Gateway.
    pub conflict_with: Option<String>,
    /// Why ResolvedRefs is False (the first one is the reason).
    pub ref_errors: Vec<TranslateError>,
    /// The first usable certificate (HTTPS).
    pub cert: Option<Arc<CertifiedKey>>,
    /// Client-certificate validation (HTTPS listeners of a port with frontend validation;
    /// see [`crate::frontend`]).
    pub client_auth: Option<Arc<weir_snapshot::ClientAuth>>,
    pub attached_routes: i32,
    /// Route entries attached, with their effective host pattern.
    pub entries: Vec<(Option<HostPattern>, Arc<RouteEntry>)>,
    /// The route kinds among `entries`, so that the HTTPRoute/GRPCRoute hostname rule scans
    /// the entries only when both kinds are attached (else translation is quadratic).
    pub entry_kinds: Vec<&'static str>,
    /// TLSRoutes attached (passthrough listeners), with their effective host pattern and
    /// the route's (creation, key) for the oldest-first order. TCP listeners hold their
    /// TCPRoutes here, under the catch-all pattern (`None`).
    pub tls_entries: Vec<TlsPlacement>,
}

impl ListenerModel {
    pub fn accepted(&self) -> bool {
        self.not_accepted.is_none() && self.conflict.is_none()
    }

    /// Whether this listener gets a place on a socket (given its Gateway serves).
    pub fn serving(&self) -> bool {
        self.accepted() && (!self.terminates_tls() || self.cert.is_some())
    }

    /// Whether connections to this listener terminate TLS here (HTTPS, TLS Terminate).
    pub fn terminates_tls(&self) -> bool {
        self.https || self.tls_terminate
    }

    /// The protocol as configured, for port-sharing decisions (HTTP, HTTPS, TLS, TCP, UDP).
    pub fn protocol(&self) -> &'static str {
        // TLS listeners in modes Passthrough and Terminate may share a port (mixed
        // termination, TLSRouteModeMixed): the proxy picks the listener by the ClientHello's
        // SNI before it decides whether to terminate.
        if self.udp {
            return "UDP";
        }
        match (self.https, self.passthrough, self.tcp) {
            (true, _, _) => "HTTPS",
            (false, true, true) => "TCP",
            (false, true, false) => "TLS",
            (false, false, _) => "HTTP",
        }
    }
}

/// Who a listener belongs to: a Gateway, or a ListenerSet (its certificateRefs resolve in
/// the owner's namespace and need a ReferenceGrant from the owner's kind).
pub struct ListenerOwner<'a> {
    pub key: &'a ObjectKey,
    /// "Gateway" or "ListenerSet".
    pub kind: &'static str,
}

impl<'a> ListenerOwner<'a> {
    pub fn gateway(key: &'a ObjectKey) -> Self {
        Self {
            key,
            kind: "Gateway",
        }
    }
}

/// A ListenerSet whose parentRef names a Gateway of ours.
pub struct ListenerSetModel {
    pub key: ObjectKey,
    pub set: Arc<ListenerSet>,
    /// Whether the Gateway's `spec.allowedListeners` admits it (its listeners are then part
    /// of the Gateway's, with `owner` = `key`).
    pub allowed: bool,
}

/// `status.attachedListenerSets` of a Gateway: the ListenerSets it admits that are accepted.
/// Reported when the Gateway allows ListenerSets at all or some are attached.
pub fn attached_count(g: &GatewayModel) -> Option<i32> {
    let n = g.listener_sets.iter().filter(|s| accepted(g, s)).count();
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    (n > 0 || g.gateway.spec.allowed_listeners.is_some()).then_some(n)
}

pub(crate) fn listeners_of<'g>(
    g: &'g GatewayModel,
    set: &'g ListenerSetModel,
) -> impl Iterator<Item = &'g ListenerModel> {
    g.listeners
        .iter()
        .filter(move |l| l.owner.as_ref() == Some(&set.key))
}

/// A valid ListenerSet listener: accepted (supported, not conflicted) with every reference
/// resolved. A ListenerSet needs one to be Accepted (its only listener lacking a
/// ReferenceGrant for its certificate makes it ListenersNotValid).
pub(crate) fn valid(l: &ListenerModel) -> bool {
    l.accepted() && l.ref_errors.is_empty()
}

/// Whether a ListenerSet is Accepted: admitted, its Gateway accepted, and at least one of
/// its listeners valid.
pub(crate) fn accepted(g: &GatewayModel, set: &ListenerSetModel) -> bool {
    set.allowed && g.accepted() && listeners_of(g, set).any(valid)
}

/// A route's parentRef, whichever route kind it comes from.
pub struct ParentRefSpec<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
    pub section_name: Option<&'a str>,
}

impl<'a> From<&'a HttpRouteParentRefs> for ParentRefSpec<'a> {
    fn from(p: &'a HttpRouteParentRefs) -> Self {
        Self {
            group: p.group.as_deref(),
            kind: p.kind.as_deref(),
            name: &p.name,
            namespace: p.namespace.as_deref(),
            port: p.port,
            section_name: p.section_name.as_deref(),
        }
    }
}

impl<'a> From<&'a GrpcRouteParentRefs> for ParentRefSpec<'a> {
    fn from(p: &'a GrpcRouteParentRefs) -> Self {
        Self {
            group: p.group.as_deref(),
            kind: p.kind.as_deref(),
            name: &p.name,
            namespace: p.namespace.as_deref(),
            port: p.port,
            section_name: p.section_name.as_deref(),
        }
    }
}

/// Accepted=False, as (reason, message).
pub type NotAccepted = (&'static str, String);

/// The outcome for one parentRef of ours.
pub struct ParentResult {
    /// The parentRef as reported in status (every route kind's status has this shape).
    pub parent_ref: HttpRouteStatusParentsParentRef,
    /// `Ok(())` accepted, or Accepted=False (reason, message).
    pub accepted: Result<(), NotAccepted>,
}

pub fn conflict_message(l: &ListenerModel) -> String {
    match (&l.conflict_with, l.conflict) {
        (Some(other), _) => format!(
            "listener {other} of an older Gateway is served on the same address and port with \
             an overlapping hostname, so requests for it would never reach this listener; \
             give this Gateway its own address (spec.addresses; in file mode \
             --gateway-address-pool; in Kubernetes mode a Service per Gateway, without \
             --gateway-service) or a hostname disjoint from the other's"
        ),
        (None, Some("ProtocolConflict")) => {
            "another listener on this port uses a different protocol; none of them is served".into()
        }
        (None, _) => {
            "another listener on this port has the same hostname; none of them is served".into()
        }
    }
}
