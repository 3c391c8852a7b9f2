//! Serving listeners of all our Gateways → one [`SocketConfig`] per port.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use weir_snapshot::{
    HostIndex, HostPattern, Listener, Passthrough, Snapshot, SocketConfig, TlsRouteEntry,
};

use crate::model::GatewayModel;

/// A serving listener, whether it terminates TLS (HTTPS, TLS Terminate), its certificate,
/// (TLS and TCP listeners) its TLSRoutes or TCPRoutes, and whether it is a TCP listener.
type Placed = (
    Listener,
    bool,
    Option<Arc<rustls::sign::CertifiedKey>>,
    Option<HostIndex<Arc<TlsRouteEntry>>>,
    bool,
    bool,
);

/// Build the snapshot (generation 0). Gateways come sorted oldest first, so on a shared port
/// an older Gateway's listener wins a hostname tie.
pub fn build(gateways: &mut [GatewayModel]) -> Snapshot {
    // By socket key (address, configured port or exact bind port): the configured port, the
    // exact bind port (Services mode) and the listeners.
    type Socket = (u16, Option<u16>, Vec<Placed>);
    // The key's last part: UDP (a UDP and a TCP socket may share a port number).
    let mut ports: BTreeMap<((Option<IpAddr>, u16), bool), Socket> = BTreeMap::new();
    for g in gateways.iter_mut() {
        if !g.serving() {
            continue;
        }
        let gateway: Arc<str> = g.key.to_string().into();
        let backend_client_cert = g.backend_client_cert.clone();
        for l in g.listeners.iter_mut().filter(|l| l.serving()) {
            let entries = std::mem::take(&mut l.entries);
            let name: Arc<str> = l.name.as_str().into();
            // Oldest TLSRoute (TCPRoute) first within a hostname (the spec's conflict
            // resolution; TCPRoutes all sit under the catch-all).
            let mut tls_entries = std::mem::take(&mut l.tls_entries);
            tls_entries.sort_by(|a, b| a.1.cmp(&b.1));
            let tls_entries: Vec<(Option<HostPattern>, Arc<TlsRouteEntry>)> = tls_entries
                .into_iter()
                .map(|(host, _, entry)| (host, entry))
                .collect();
            for &bind in &g.binds {
                // Services mode: a port the Gateway's Service does not map yet is not served.
                let Some((key, bind_port)) =
                    crate::model::socket_for(g.pod_ports.as_ref(), bind, l.port)
                else {
                    continue;
                };
                let listener = Listener {
                    gateway: gateway.clone(),
                    name: name.clone(),
                    hostname: l.hostname.clone(),
                    // Only the order within one host pattern matters (the index keeps
                    // it per bucket): each bucket is sorted on its own.
                    routes: HostIndex::build_sorted_by(entries.iter().cloned(), |a, b| {
                        a.rank.cmp(&b.rank)
                    }),
                    client_auth: l.client_auth.clone(),
                    backend_client_cert: backend_client_cert.clone(),
                };
                ports
                    .entry((key, l.udp))
                    .or_insert_with(|| (l.port, bind_port, Vec::new()))
                    .2
                    .push((
                        listener,
                        l.terminates_tls(),
                        l.cert.clone(),
                        l.passthrough
                            .then(|| HostIndex::build(tls_entries.iter().cloned())),
                        l.tcp,
                        l.udp,
                    ));
            }
        }
    }
    let sockets: Vec<SocketConfig> = ports
        .into_iter()
        .map(|(((address, _), _), (port, bind_port, items))| {
            // A socket's listeners share one protocol (settled in `gateway`); TLS listeners
            // may mix Passthrough and Terminate (TLSRouteModeMixed): then the socket does not
            // terminate at accept, and the proxy decides per listener after reading the SNI.
            // TCP listeners share a socket with nothing else (settled in `gateway`).
            let tls = !items.is_empty() && items.iter().all(|(_, terminates, ..)| *terminates);
            let passthrough = items.first().is_some_and(|(_, _, _, p, ..)| p.is_some());
            let tcp = items.first().is_some_and(|(.., tcp, _)| *tcp);
            let udp = items.first().is_some_and(|(.., udp)| *udp);
            let listener_index = HostIndex::build(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, (l, ..))| (l.hostname.clone(), i)),
            );
            let with_cert = || {
                items
                    .iter()
                    .filter_map(|(l, _, c, ..)| c.as_ref().map(|c| (l.hostname.clone(), c.clone())))
            };
            let certificates = HostIndex::build(with_cert());
            let default_cert = with_cert()
                .find(|(h, _)| h.is_none())
                .or_else(|| with_cert().next())
                .map(|(_, c)| c);
            let mut listeners = Vec::with_capacity(items.len());
            let mut tls_routes = Vec::with_capacity(items.len());
            let mut terminate = Vec::with_capacity(items.len());
            for (l, terminates, _, routes, ..) in items {
                listeners.push(l);
                tls_routes.push(routes.unwrap_or_default());
                terminate.push(terminates);
            }
            SocketConfig {
                address,
                port,
                bind_port,
                tls,
                passthrough: passthrough.then(|| Passthrough {
                    routes: tls_routes.into(),
                    terminate: terminate.into(),
                    tcp,
                    udp,
                }),
                listeners: listeners.into(),
                listener_index,
                certificates,
                // Mixed sockets terminate too, for their Terminate listeners.
                default_cert: if tls || passthrough {
                    default_cert
                } else {
                    None
                },
                client_policy: None,
            }
        })
        .collect();
    Snapshot {
        generation: 0,
        sockets: sockets.into(),
    }
}
