//! GatewayClasses and Gateways: which are ours, and each listener's validity (protocol, route
//! kinds, certificates, conflicts) before routes attach.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use weir_snapshot::{HostPattern, RouteEntry, TlsRouteEntry};
use weir_store::gw::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespaces, GatewayListenersTlsMode,
};
use weir_store::{Gateway, ObjectKey, Store, GATEWAY_GROUP};

use crate::addressing::{AddressPool, Addressing};
use crate::error::TranslateError;
use crate::meta::created;
use crate::refgrant::{self, core_group};
use crate::tls;

/// The route kinds HTTP and HTTPS listeners take (their default `supportedKinds`, in this
/// order). GRPCRoute needs HTTP/2: h2c with prior knowledge on HTTP listeners and ALPN h2 on
/// HTTPS ones, both of which the proxy serves.
const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

/// A Gateway of ours, with its listeners evaluated.
pub struct GatewayModel {
    pub key: ObjectKey,
    pub gateway: Arc<Gateway>,
    pub created: (i64, u32),
    /// spec.addresses problem: UnsupportedAddress (not accepted) or AddressNotUsable (not
    /// programmed).
    pub address_error: Option<TranslateError>,
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
    pub listener_sets: Vec<crate::listenerset::ListenerSetModel>,
    /// Some HTTPS listener's frontend validation is in mode AllowInsecureFallback (the
    /// InsecureFrontendValidationMode condition).
    pub insecure_frontend: bool,
    /// The certificate presented to TLS backends (`spec.tls.backend.clientCertificateRef`).
    pub backend_client_cert: Option<Arc<weir_snapshot::ClientCert>>,
    /// Why that reference is not usable (the Gateway's ResolvedRefs=False).
    pub backend_client_cert_error: Option<TranslateError>,
}

impl GatewayModel {
    /// Accepted: addresses are supported and at least one listener is accepted.
    pub fn accepted(&self) -> bool {
        !matches!(
            self.address_error,
            Some(
                TranslateError::UnsupportedAddress(_)
                    | TranslateError::UnsupportedServiceAddress(_)
            )
        ) && self.own_listeners().any(ListenerModel::accepted)
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
    /// Protocol TLS or TCP: TLSRoutes routed by SNI, or TCPRoutes (the snapshot's
    /// passthrough section).
    pub passthrough: bool,
    /// Protocol TCP: TCPRoutes; every connection is spliced to the oldest route's backend.
    pub tcp: bool,
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

    /// The protocol as configured, for port-sharing decisions (HTTP, HTTPS, TLS, TCP).
    pub fn protocol(&self) -> &'static str {
        // TLS listeners in modes Passthrough and Terminate may share a port (mixed
        // termination, TLSRouteModeMixed): the proxy picks the listener by the ClientHello's
        // SNI before it decides whether to terminate.
        match (self.https, self.passthrough, self.tcp) {
            (true, _, _) => "HTTPS",
            (false, true, true) => "TCP",
            (false, true, false) => "TLS",
            (false, false, _) => "HTTP",
        }
    }
}

/// Names of the GatewayClasses whose controllerName is ours.
pub fn our_classes(store: &Store, controller: &str) -> BTreeSet<String> {
    store
        .gateway_classes
        .iter()
        .filter(|(_, c)| c.spec.controller_name == controller)
        .map(|(k, _)| k.name.to_string())
        .collect()
}

/// Evaluate every Gateway of ours, then settle port clashes across Gateways.
pub fn build(
    store: &Store,
    classes: &BTreeSet<String>,
    addresses: &Addresses<'_>,
) -> Vec<GatewayModel> {
    let mut out: Vec<GatewayModel> = store
        .gateways
        .iter()
        .filter(|(_, g)| classes.contains(&g.spec.gateway_class_name))
        .map(|(key, g)| build_gateway(store, key, g, addresses))
        .collect();
    out.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
    match addresses.mode {
        Addressing::Shared => {}
        Addressing::Pool(pool) => assign_pool(&mut out, pool, addresses.usable),
        Addressing::Services(_) => assign_services(store, &mut out),
    }
    settle_ports(&mut out);
    out
}

/// Give each Gateway that asked for no particular address its own address from the pool,
/// oldest first (see [`crate::addressing`]): the probe starts where the Gateway's
/// namespace/name hashes to and takes the first address no Gateway holds or requested.
fn assign_pool(gateways: &mut [GatewayModel], pool: &AddressPool, usable: &dyn Fn(IpAddr) -> bool) {
    let mut taken: BTreeSet<IpAddr> = gateways
        .iter()
        .flat_map(|g| g.binds.iter().flatten().copied())
        .collect();
    for g in gateways
        .iter_mut()
        .filter(|g| g.wants_pool_address && g.accepted())
    {
        let start = pool.start_for(&g.key.namespace, &g.key.name);
        // Bounded: a pool larger than the Gateways can hold is never probed to its end.
        let limit = pool.len().min(taken.len() as u128 + 1);
        let Some(ip) = (0..limit)
            .map(|i| pool.nth(start + i))
            .find(|ip| !taken.contains(ip))
        else {
            g.address_error
                .get_or_insert(TranslateError::PoolExhausted(pool.to_string()));
            continue;
        };
        if !usable(ip) {
            g.address_error
                .get_or_insert(TranslateError::AddressNotUsable(ip.to_string()));
            continue;
        }
        taken.insert(ip);
        g.binds.push(Some(ip));
        g.binds.sort();
        g.binds.dedup();
        g.status_addresses
            .push(("IPAddress".to_string(), ip.to_string()));
    }
}

/// Services mode: each Gateway's pod ports and addresses from its own Service, oldest
/// Gateway first (a pod port recorded for two Gateways serves the older).
fn assign_services(store: &Store, gateways: &mut [GatewayModel]) {
    let mut claimed = BTreeSet::new();
    for g in gateways.iter_mut() {
        let own_ports: BTreeSet<u16> = g
            .own_listeners()
            .filter(|l| l.accepted())
            .map(|l| l.port)
            .collect();
        let binding =
            crate::services::gateway_binding(store, &g.key, &g.gateway, &own_ports, &mut claimed);
        g.binds = vec![None];
        g.status_addresses = binding.status;
        g.pod_ports = Some(binding.pod_ports);
        if let Some(e) = binding.error {
            g.address_error.get_or_insert(e);
        }
    }
}

fn build_gateway(
    store: &Store,
    key: &ObjectKey,
    gateway: &Arc<Gateway>,
    addresses: &Addresses<'_>,
) -> GatewayModel {
    let mut listeners: Vec<ListenerModel> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| build_listener(store, &ListenerOwner::gateway(key), l))
        .collect();
    mark_conflicts(&mut listeners);
    let listener_sets = crate::listenerset::merge(store, key, gateway, &mut listeners);
    let insecure_frontend = crate::frontend::apply(store, key, gateway, &mut listeners);
    // Services mode: the Gateway's Service decides (see `assign_services`).
    let assigned = if matches!(addresses.mode, Addressing::Services(_)) {
        Assigned {
            binds: vec![None],
            status: Vec::new(),
            error: None,
            pool: false,
        }
    } else {
        assign_addresses(gateway, addresses)
    };
    let (backend_client_cert, backend_client_cert_error) =
        crate::backendtls::gateway_client_cert(store, key, gateway);
    GatewayModel {
        backend_client_cert,
        backend_client_cert_error,
        key: key.clone(),
        gateway: gateway.clone(),
        created: created(&gateway.metadata),
        address_error: assigned.error,
        binds: assigned.binds,
        status_addresses: assigned.status,
        wants_pool_address: assigned.pool,
        pod_ports: None,
        listeners,
        listener_sets,
        insecure_frontend,
    }
}

/// What the translator knows about this host's addresses.
pub struct Addresses<'a> {
    /// Addresses of the process-wide bind, as (type, value).
    pub served: &'a [(String, String)],
    /// Whether an IP is an address of this host (one Weir can bind).
    pub usable: &'a dyn Fn(IpAddr) -> bool,
    /// Where Gateways that ask for no particular address get one: the process-wide bind,
    /// their own from a pool, or (Services mode) their own Service, which also decides the
    /// pod ports.
    pub mode: &'a Addressing,
}

/// A Gateway's spec.addresses, resolved.
struct Assigned {
    binds: Vec<Option<IpAddr>>,
    status: Vec<(String, String)>,
    error: Option<TranslateError>,
    /// Asked for no particular address and a pool is configured: the pool assigns it.
    pool: bool,
}

/// Resolve spec.addresses. No addresses: the bind address. An address type other than
/// IPAddress (Hostname, NamedAddress, implementation-specific types): UnsupportedAddress, as
/// file mode binds sockets and has nothing to map a name to. An IPAddress without value: the
/// bind address (the spec asks us to pick one). An IPAddress that is one of the bind
/// addresses: that socket. Any other IP: its own sockets when it is an address of this host,
/// else AddressNotUsable (the usable ones are still reported in status).
fn assign_addresses(gateway: &Gateway, addresses: &Addresses<'_>) -> Assigned {
    let requested = gateway.spec.addresses.as_deref().unwrap_or(&[]);
    if requested.is_empty() {
        return match addresses.mode {
            Addressing::Pool(_) => Assigned {
                binds: Vec::new(),
                status: Vec::new(),
                error: None,
                pool: true,
            },
            Addressing::Shared | Addressing::Services(_) => Assigned {
                binds: vec![None],
                status: addresses.served.to_vec(),
                error: None,
                pool: false,
            },
        };
    }
    let mut out = Assigned {
        binds: Vec::new(),
        status: Vec::new(),
        error: None,
        pool: false,
    };
    if let Some(kind) = requested
        .iter()
        .map(|a| a.r#type.as_deref().unwrap_or("IPAddress"))
        .find(|&kind| kind != "IPAddress")
    {
        out.error = Some(TranslateError::UnsupportedAddress(kind.to_string()));
        return out;
    }
    fn report(out: &mut Assigned, entry: (String, String)) {
        if !out.status.contains(&entry) {
            out.status.push(entry);
        }
    }
    for a in requested {
        let value = a.value.as_deref().unwrap_or("");
        if value.is_empty() && matches!(addresses.mode, Addressing::Pool(_)) {
            out.pool = true;
            continue;
        }
        if value.is_empty() {
            out.binds.push(None);
            for entry in addresses.served {
                report(&mut out, entry.clone());
            }
            continue;
        }
        let entry = ("IPAddress".to_string(), value.to_string());
        let Ok(ip) = value.parse::<IpAddr>() else {
            out.error
                .get_or_insert(TranslateError::InvalidIpAddress(value.to_string()));
            continue;
        };
        let served = addresses
            .served
            .iter()
            .any(|(_, v)| v.parse::<IpAddr>().is_ok_and(|s| s == ip));
        if served {
            out.binds.push(None);
            report(&mut out, entry);
        } else if (addresses.usable)(ip) {
            out.binds.push(Some(ip));
            report(&mut out, entry);
        } else {
            out.error
                .get_or_insert(TranslateError::AddressNotUsable(value.to_string()));
        }
    }
    out.binds.sort();
    out.binds.dedup();
    out
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

pub fn build_listener(
    store: &Store,
    owner: &ListenerOwner<'_>,
    l: &GatewayListeners,
) -> ListenerModel {
    let gw = owner.key;
    let (supported, https, tls_protocol, tcp) = match l.protocol.as_str() {
        "HTTP" => (true, false, false, false),
        "HTTPS" => (true, true, false, false),
        "TLS" => (true, false, true, false),
        "TCP" => (true, false, false, true),
        _ => (false, false, false, false),
    };
    // The route kinds a listener of this protocol serves, and how errors name them.
    let (route_kinds, kinds_label): (&[&str], &'static str) = if tls_protocol {
        (&["TLSRoute"], "TLSRoute")
    } else if tcp {
        (&["TCPRoute"], "TCPRoute")
    } else {
        (ROUTE_KINDS, "HTTPRoute, GRPCRoute")
    };
    // TLS listeners: Passthrough (routed by SNI, spliced) or Terminate (the API default:
    // TLS terminated here with the listener's certificate, the plain bytes spliced).
    let tls_terminate = tls_protocol
        && !matches!(
            l.tls.as_ref().and_then(|t| t.mode.as_ref()),
            Some(GatewayListenersTlsMode::Passthrough)
        );
    let mut m = ListenerModel {
        owner: (owner.kind != "Gateway").then(|| owner.key.clone()),
        name: l.name.clone(),
        port: u16::try_from(l.port).unwrap_or(0),
        https,
        passthrough: tls_protocol || tcp,
        tcp,
        tls_terminate,
        // The spec ignores the hostname of TCP listeners (no Host, no SNI to match).
        hostname: l
            .hostname
            .as_deref()
            .filter(|_| !tcp)
            .and_then(HostPattern::parse),
        supported_kinds: Vec::new(),
        namespaces: l.allowed_routes.as_ref().and_then(|a| a.namespaces.clone()),
        not_accepted: None,
        conflict: None,
        conflict_with: None,
        ref_errors: Vec::new(),
        cert: None,
        client_auth: None,
        attached_routes: 0,
        entries: Vec::new(),
        entry_kinds: Vec::new(),
        tls_entries: Vec::new(),
    };
    if !supported {
        m.not_accepted = Some(TranslateError::UnsupportedProtocol(l.protocol.clone()));
    } else if m.port == 0 {
        m.not_accepted = Some(TranslateError::InvalidPort(l.port));
    }
    // Route kinds.
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        None if supported => m
            .supported_kinds
            .extend(route_kinds.iter().map(|k| k.to_string())),
        None => {}
        Some(kinds) => {
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
                if supported && group == GATEWAY_GROUP && route_kinds.contains(&k.kind.as_str()) {
                    if !m.supported_kinds.contains(&k.kind) {
                        m.supported_kinds.push(k.kind.clone());
                    }
                } else {
                    m.ref_errors.push(TranslateError::InvalidRouteKind {
                        group: group.to_string(),
                        kind: k.kind.clone(),
                        supported: kinds_label,
                    });
                }
            }
        }
    }
    if https || tls_terminate {
        let tls = l.tls.as_ref();
        let passthrough = matches!(
            tls.and_then(|t| t.mode.as_ref()),
            Some(GatewayListenersTlsMode::Passthrough)
        );
        if https && passthrough {
            m.not_accepted
                .get_or_insert(TranslateError::UnsupportedTlsMode("Passthrough".into()));
        }
        let refs = tls
            .and_then(|t| t.certificate_refs.as_deref())
            .unwrap_or(&[]);
        if refs.is_empty() {
            m.ref_errors.push(TranslateError::NoCertificateRefs);
        }
        for r in refs {
            let group = core_group(r.group.as_deref().unwrap_or(""));
            let kind = r.kind.as_deref().unwrap_or("Secret");
            let ns = r.namespace.as_deref().unwrap_or(&gw.namespace);
            let secret_key = ObjectKey::new(ns, r.name.as_str());
            let result = if !group.is_empty() || kind != "Secret" {
                Err(TranslateError::CertificateRefKind {
                    group: group.to_string(),
                    kind: kind.to_string(),
                    name: r.name.clone(),
                })
            } else if !refgrant::permitted(
                store,
                &refgrant::From {
                    group: GATEWAY_GROUP,
                    kind: owner.kind,
                    namespace: &gw.namespace,
                },
                &refgrant::To {
                    group: "",
                    kind: "Secret",
                    namespace: ns,
                    name: &r.name,
                },
            ) {
                Err(TranslateError::CertificateNotPermitted(
                    secret_key.to_string(),
                ))
            } else {
                match store.secrets.get(&secret_key) {
                    None => Err(TranslateError::CertificateNotFound(secret_key.to_string())),
                    Some(secret) => tls::certified_key(secret).map_err(|detail| {
                        TranslateError::CertificateInvalid {
                            secret: secret_key.to_string(),
                            detail,
                        }
                    }),
                }
            };
            match result {
                Ok(cert) => {
                    m.cert.get_or_insert(cert);
                }
                Err(e) => m.ref_errors.push(e),
            }
        }
    }
    m
}

/// Within one Gateway: listeners of different protocols (HTTP, HTTPS, TLS, TCP) on one port
/// conflict (ProtocolConflict, all listeners on the port); listeners on one port with one
/// hostname conflict (HostnameConflict, all of them: the spec forbids picking a winner; TCP
/// listeners have no hostname, so two on one port conflict). Unsupported listeners, and
/// those already conflicted with a listener of higher precedence, take no part.
pub fn mark_conflicts(listeners: &mut [ListenerModel]) {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.accepted() {
            by_port.entry(l.port).or_default().push(i);
        }
    }
    for indexes in by_port.values() {
        let first = indexes.first().map(|&i| listeners[i].protocol());
        if indexes
            .iter()
            .any(|&i| Some(listeners[i].protocol()) != first)
        {
            for &i in indexes {
                listeners[i].conflict = Some("ProtocolConflict");
                // A conflicted listener takes no routes, so it lists no kinds.
                listeners[i].supported_kinds.clear();
            }
            continue;
        }
        let mut by_host: BTreeMap<Option<HostPattern>, Vec<usize>> = BTreeMap::new();
        for &i in indexes {
            by_host
                .entry(listeners[i].hostname.clone())
                .or_default()
                .push(i);
        }
        for same in by_host.values().filter(|v| v.len() > 1) {
            for &i in same {
                listeners[i].conflict = Some("HostnameConflict");
                listeners[i].supported_kinds.clear();
            }
        }
    }
}

/// Across Gateways sharing a socket (address and port): the first Gateway (oldest, then by
/// name) to use it decides its protocol; listeners of the other protocol there are not
/// accepted, nor are TCP listeners of later Gateways (a TCP socket serves one listener).
/// Listeners of the same protocol share the socket only where their hostnames are disjoint:
/// a listener whose hostname overlaps one of an older Gateway's there (equal, one a
/// catch-all, or a wildcard covering the other) would get none of that older listener's
/// requests, so it is Conflicted (HostnameConflict) instead of a silent 404. Listeners of
/// one Gateway never conflict here: listener isolation picks among them by hostname.
fn settle_ports(gateways: &mut [GatewayModel]) {
    struct Owner {
        protocol: &'static str,
        label: String,
        /// Accepted listeners on the socket so far: (gateway index, hostname, label).
        listeners: Vec<(usize, Option<HostPattern>, String)>,
    }
    let mut owners: BTreeMap<(Option<IpAddr>, u16), Owner> = BTreeMap::new();
    for (gi, g) in gateways.iter_mut().enumerate() {
        if !g.serving() {
            continue;
        }
        let gw_label = g.key.to_string();
        for l in g.listeners.iter_mut().filter(|l| l.accepted()) {
            let label = format!("{gw_label}/{}", l.name);
            for &bind in &g.binds {
                let Some((socket, _)) = socket_for(g.pod_ports.as_ref(), bind, l.port) else {
                    continue;
                };
                let owner = owners.entry(socket).or_insert_with(|| Owner {
                    protocol: l.protocol(),
                    label: label.clone(),
                    listeners: Vec::new(),
                });
                // TCP listeners cannot share a socket: nothing in a connection says which
                // one it is for.
                if owner.protocol != l.protocol() || (l.tcp && owner.label != label) {
                    l.not_accepted = Some(TranslateError::PortInUse {
                        port: l.port,
                        protocol: owner.protocol.into(),
                        owner: owner.label.clone(),
                    });
                    break;
                }
                let overlapping = owner.listeners.iter().find(|(other_gi, host, _)| {
                    *other_gi != gi && hostnames_overlap(host.as_ref(), l.hostname.as_ref())
                });
                if let Some((_, _, other)) = overlapping {
                    l.conflict = Some("HostnameConflict");
                    l.conflict_with = Some(other.clone());
                    l.supported_kinds.clear();
                    break;
                }
                owner
                    .listeners
                    .push((gi, l.hostname.clone(), label.clone()));
            }
        }
    }
}

/// Whether some host name would match both listener hostnames (`None`: any host).
fn hostnames_overlap(a: Option<&HostPattern>, b: Option<&HostPattern>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => crate::hostname::intersect(a, b).is_some(),
        _ => true,
    }
}
