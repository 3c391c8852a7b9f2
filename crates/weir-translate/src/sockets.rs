//! Serving listeners of all our Gateways → one [`SocketConfig`] per port.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use weir_snapshot::{HostIndex, Listener, RouteEntry, Snapshot, SocketConfig};

use crate::gateway::GatewayModel;

/// A serving listener, whether it is HTTPS, and its certificate.
type Placed = (Listener, bool, Option<Arc<rustls::sign::CertifiedKey>>);

/// Build the snapshot (generation 0). Gateways come sorted oldest first, so on a shared port
/// an older Gateway's listener wins a hostname tie.
pub fn build(gateways: &mut [GatewayModel]) -> Snapshot {
    let mut ports: BTreeMap<(Option<IpAddr>, u16), Vec<Placed>> = BTreeMap::new();
    for g in gateways.iter_mut() {
        if !g.serving() {
            continue;
        }
        let gateway: Arc<str> = g.key.to_string().into();
        for l in g.listeners.iter_mut().filter(|l| l.serving()) {
            let mut entries = std::mem::take(&mut l.entries);
            entries.sort_by(|a, b| a.1.rank.cmp(&b.1.rank));
            let entries: Vec<(_, Arc<RouteEntry>)> = entries
                .into_iter()
                .map(|(host, entry)| (host, Arc::new(entry)))
                .collect();
            let name: Arc<str> = l.name.as_str().into();
            for &bind in &g.binds {
                let listener = Listener {
                    gateway: gateway.clone(),
                    name: name.clone(),
                    hostname: l.hostname.clone(),
                    routes: HostIndex::build(entries.iter().cloned()),
                };
                ports
                    .entry((bind, l.port))
                    .or_default()
                    .push((listener, l.https, l.cert.clone()));
            }
        }
    }
    let sockets: Vec<SocketConfig> = ports
        .into_iter()
        .map(|((address, port), items)| {
            let tls = items.first().is_some_and(|(_, https, _)| *https);
            let listener_index = HostIndex::build(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, (l, _, _))| (l.hostname.clone(), i)),
            );
            let with_cert = || {
                items
                    .iter()
                    .filter_map(|(l, _, c)| c.as_ref().map(|c| (l.hostname.clone(), c.clone())))
            };
            let certificates = HostIndex::build(with_cert());
            let default_cert = with_cert()
                .find(|(h, _)| h.is_none())
                .or_else(|| with_cert().next())
                .map(|(_, c)| c);
            SocketConfig {
                address,
                port,
                tls,
                listeners: items.into_iter().map(|(l, _, _)| l).collect(),
                listener_index,
                certificates,
                default_cert: if tls { default_cert } else { None },
            }
        })
        .collect();
    Snapshot {
        generation: 0,
        sockets: sockets.into(),
    }
}
