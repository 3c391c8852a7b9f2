//! `loadBalancer` of a BackendTrafficPolicy, compiled: how a request picks one endpoint of
//! the backend (Service port) it was sent to. Weights between a rule's backendRefs keep
//! their meaning; this only replaces the round robin among one backend's endpoints. The
//! runtime side (cursors, in-flight counts, Maglev tables, first-seen times) lives in the
//! proxy (`weir-proxy/src/upstream/balance.rs`), never here.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

/// Envoy Gateway's default Maglev table size (a prime).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// Envoy Gateway's largest Maglev table size.
pub const MAX_TABLE_SIZE: u32 = 5_000_011;

/// `loadBalancer`: the algorithm and its ramp-up for new endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub kind: LbKind,
    /// `slowStart.window`: an endpoint first seen less than this long ago gets a share that
    /// grows linearly over the window (RoundRobin, Random and LeastRequest).
    pub slow_start: Option<Duration>,
    /// `zoneAware.preferLocal`.
    pub prefer_local: Option<PreferLocal>,
}

/// `zoneAware.preferLocal`: prefer endpoints in the zone Weir runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreferLocal {
    /// `minEndpointsThreshold` (default 6): with fewer eligible endpoints in all zones, no
    /// preference.
    pub min_endpoints: u64,
    /// `force.minEndpointsInZoneThreshold`: with at least this many eligible local
    /// endpoints, every request stays local; `None` (no `force`), or fewer: the local zone
    /// gets the share its endpoints can carry (see the proxy's `balance.rs`).
    pub force_min_local: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbKind {
    /// Smooth weighted round robin (equal weights unless slow start lowers one).
    RoundRobin,
    /// Uniform (weighted, under slow start) random.
    Random,
    /// Power of two choices over the endpoints' in-flight requests.
    LeastRequest,
    /// A Maglev table of `table_size` (prime) entries over the endpoints, looked up by a
    /// hash of the request's key.
    ConsistentHash { on: HashOn, table_size: u32 },
}

/// What a consistent hash hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's address (the ClientTrafficPolicy-detected one when there is one).
    SourceIp,
    /// A request header's value; requests without it get a random endpoint.
    Header(HeaderName),
    /// A cookie's value; issued (random value, `Set-Cookie` on the response) when absent.
    Cookie(Arc<HashCookie>),
}

/// `consistentHash.cookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCookie {
    pub name: Arc<str>,
    /// `ttl`: the issued cookie's `Max-Age`; `None` issues a session cookie.
    pub ttl: Option<Duration>,
    /// `attributes`, appended to the issued cookie as `; name=value` (`; name` when the
    /// value is empty), in name order.
    pub attributes: Arc<[(String, String)]>,
}
