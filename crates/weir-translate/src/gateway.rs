//! GatewayClasses and Gateways: which are ours, their addresses, and their listeners (built
//! by [`crate::listener`], with those of their ListenerSets) before routes attach.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use weir_snapshot::HostPattern;
use weir_store::{Gateway, ObjectKey, Store};

use crate::addressing::{AddressPool, Addressing};
use crate::error::TranslateError;
use crate::listener::{build_listener, mark_conflicts};
use crate::meta::created;
use crate::model::{socket_for, GatewayModel, ListenerModel, ListenerOwner};

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
        params_error: gateway_params_error(gateway),
        binds: assigned.binds,
        status_addresses: assigned.status,
        wants_pool_address: assigned.pool,
        pod_ports: None,
        listeners,
        listener_sets,
        insecure_frontend,
    }
}

/// `spec.infrastructure.parametersRef`: Weir supports no per-Gateway parameters (a
/// GatewayClass's parametersRef configures its Gateways' Services), so any reference is
/// InvalidParameters, which the spec says rejects the Gateway (Accepted=False) rather than
/// leaving what it asked for silently unapplied.
fn gateway_params_error(gateway: &Gateway) -> Option<TranslateError> {
    let r = gateway
        .spec
        .infrastructure
        .as_ref()?
        .parameters_ref
        .as_ref()?;
    let group = if r.group.is_empty() {
        "core"
    } else {
        r.group.as_str()
    };
    Some(TranslateError::InvalidParameters(format!(
        "spec.infrastructure.parametersRef ({group} {} {}) is not supported: Weir reads no \
         per-Gateway parameters; set them on the GatewayClass (spec.parametersRef)",
        r.kind, r.name
    )))
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
    // By socket and transport (UDP or not): a UDP socket and a TCP one share a port number.
    let mut owners: BTreeMap<((Option<IpAddr>, u16), bool), Owner> = BTreeMap::new();
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
                let owner = owners.entry((socket, l.udp)).or_insert_with(|| Owner {
                    protocol: l.protocol(),
                    label: label.clone(),
                    listeners: Vec::new(),
                });
                // TCP and UDP listeners cannot share a socket: nothing in a connection or
                // datagram says which one it is for.
                if owner.protocol != l.protocol() || ((l.tcp || l.udp) && owner.label != label) {
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
