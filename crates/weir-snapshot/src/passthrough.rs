//! TLS passthrough (layer 4): on a socket of TLS listeners in mode Passthrough, the proxy
//! reads the server name (SNI) from the ClientHello without terminating TLS, picks the
//! listener by it (as for HTTP Hosts), then the TLSRoute serving that name on the listener,
//! and splices the connection, ClientHello included, to one of the route's backends.
//!
//! TCP listeners (TCPRoutes) take the same path without the ClientHello: every connection
//! of the socket goes to the route of its first listener ([`Passthrough::tcp_route`]).

use std::sync::Arc;

use crate::backend::Backend;
use crate::host_index::HostIndex;

/// The TLSRoutes of one passthrough socket.
#[derive(Debug, Default)]
pub struct Passthrough {
    /// Per listener of the socket (same indexes as `SocketConfig::listeners`): its routes by
    /// the (listener ∩ route) hostnames, oldest route first within a hostname.
    pub routes: Arc<[HostIndex<Arc<TlsRouteEntry>>]>,
    /// Per listener (same indexes): whether it terminates TLS (mode Terminate). On a socket
    /// mixing modes (TLSRouteModeMixed) the socket's `tls` is false and the proxy, having read
    /// the ClientHello and picked the listener by SNI, terminates only for these listeners.
    /// Missing entries mean Passthrough.
    pub terminate: Arc<[bool]>,
    /// Listeners of protocol TCP (TCPRoutes): nothing is read before the backend is chosen;
    /// each listener's routes sit under the catch-all pattern, oldest first, and the
    /// socket's first listener (the oldest Gateway's) serves every connection.
    pub tcp: bool,
    /// Listeners of protocol UDP (UDPRoutes): a UDP socket (the socket's `port` is a UDP
    /// port); routes sit as for TCP, and the first listener's oldest route takes every new
    /// flow ([`Passthrough::tcp_route`] answers for it too).
    pub udp: bool,
}

impl Passthrough {
    /// The route for an SNI server name on the listener at `listener`.
    pub fn route_for(&self, listener: usize, server_name: &str) -> Option<&Arc<TlsRouteEntry>> {
        self.routes.get(listener)?.candidates(server_name).next()
    }

    /// The route every connection of a TCP socket (every flow of a UDP socket) takes: the
    /// oldest TCPRoute (UDPRoute) of its first listener (`None`: neither, or no route).
    pub fn tcp_route(&self) -> Option<&Arc<TlsRouteEntry>> {
        if !self.tcp && !self.udp {
            return None;
        }
        self.routes.first()?.candidates("").next()
    }

    /// Whether the listener at `listener` terminates TLS (mode Terminate).
    pub fn terminates(&self, listener: usize) -> bool {
        self.terminate.get(listener).copied().unwrap_or(false)
    }
}

/// One TLSRoute (or TCPRoute) on one listener.
#[derive(Debug)]
pub struct TlsRouteEntry {
    /// `namespace/name` of the TLSRoute or TCPRoute, for logs.
    pub route: Arc<str>,
    /// Weighted backends (their `filters` are always empty). A connection that picks an
    /// invalid one, or finds no ready endpoint, is closed.
    pub backends: Arc<[Backend]>,
}

impl TlsRouteEntry {
    /// Pick a backend by weight, from a value in `0..total_weight` (`None`: all weights zero).
    pub fn pick(&self, roll: u64) -> Option<&Backend> {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut roll = roll % total;
        for b in self.backends.iter() {
            let w = u64::from(b.weight);
            if roll < w {
                return Some(b);
            }
            roll -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendTarget;

    fn backend(weight: u32, name: &str) -> Backend {
        Backend {
            weight,
            target: BackendTarget::Invalid(name.into()),
            filters: Arc::from([]),
        }
    }

    fn name(b: &Backend) -> &str {
        match &b.target {
            BackendTarget::Invalid(n) => n,
            BackendTarget::Upstream(u) => &u.name,
        }
    }

    #[test]
    fn picks_by_weight_and_none_when_all_are_zero() {
        let e = TlsRouteEntry {
            route: "ns/r".into(),
            backends: vec![backend(1, "a"), backend(0, "z"), backend(3, "b")].into(),
        };
        let picks: Vec<&str> = (0..4).filter_map(|r| e.pick(r)).map(name).collect();
        assert_eq!(picks, ["a", "b", "b", "b"]);
        let zero = TlsRouteEntry {
            route: "ns/r".into(),
            backends: vec![backend(0, "z")].into(),
        };
        assert!(zero.pick(0).is_none());
    }

    #[test]
    fn a_tcp_socket_takes_its_first_listeners_oldest_route() {
        let entry = |name: &str| {
            Arc::new(TlsRouteEntry {
                route: name.into(),
                backends: vec![backend(1, name)].into(),
            })
        };
        let mut p = Passthrough {
            routes: vec![
                HostIndex::build([(None, entry("ns/older")), (None, entry("ns/newer"))]),
                HostIndex::build([(None, entry("ns/other-listener"))]),
            ]
            .into(),
            terminate: vec![false, false].into(),
            tcp: true,
            udp: false,
        };
        assert_eq!(p.tcp_route().map(|e| &*e.route), Some("ns/older"));
        // Not a TCP socket: TLS passthrough routes by SNI only.
        p.tcp = false;
        assert!(p.tcp_route().is_none());
        let empty = Passthrough {
            routes: vec![HostIndex::default()].into(),
            terminate: vec![false].into(),
            tcp: true,
            udp: false,
        };
        assert!(empty.tcp_route().is_none());
    }
}
