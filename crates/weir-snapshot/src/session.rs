//! Session persistence (Gateway API `rules[].sessionPersistence`, GEP-1619), compiled: how
//! a route rule keeps a client on the endpoint its session started on. The proxy issues an
//! opaque, authenticated session value naming the backend and endpoint (never readable by
//! the client, never accepted unless the proxy made it for this rule) and routes requests
//! carrying a valid one to that endpoint while it is still an endpoint of the rule.

use std::sync::Arc;
use std::time::Duration;

/// Where the session value travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCarrier {
    /// A cookie, set with `Set-Cookie` on responses.
    Cookie,
    /// A response header the client sends back as a request header.
    Header,
}

/// One rule's session persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPersistence {
    pub carrier: SessionCarrier,
    /// The cookie or header name (`sessionName`, else one derived from the rule).
    pub name: Arc<str>,
    /// Identifies the rule: a session value issued for one rule is not valid for another
    /// (GEP-1619: "route rules referencing the same service MUST NOT share persistent
    /// sessions").
    pub scope: u64,
    /// `absoluteTimeout`: a session older than this is over (a new one starts).
    pub absolute_timeout: Option<Duration>,
    /// `idleTimeout`: a session unused for this long is over; each response renews it.
    pub idle_timeout: Option<Duration>,
    /// `cookieConfig.lifetimeType: Permanent`: the cookie carries `Max-Age` (the absolute
    /// timeout); else it is a session cookie (no `Max-Age`, no `Expires`).
    pub permanent: bool,
    /// The cookie's `Path`: the path the rule matched on (GEP-1619, "Path"); `/` for a rule
    /// matching every path; `None` for a Service's session (XBackendTrafficPolicy: GEP-1619
    /// says a Service-level policy leaves `Path` unset, the client then defaults it).
    pub path: Option<Arc<str>>,
}
