//! ClientTrafficPolicy: validated, compiled to [`weir_snapshot::ClientPolicy`] and placed on
//! the sockets of the listeners it targets.
//!
//! Decisions where the spec (Envoy Gateway's) leaves room:
//! - Targets are Gateways (`sectionName`: one listener). A listener's own policy beats its
//!   Gateway's; two policies naming the same target conflict, the oldest wins (see
//!   [`attach`]).
//! - The settings are per connection, and a connection belongs to a socket (an address and
//!   port), not to a listener: listeners that share a port share them. When the listeners of
//!   one socket would get different policies, the listener-level ones do not apply
//!   (`Accepted=False`, `Conflicted`, naming the port) and the socket takes its Gateway's
//!   policy, if any.
//! - A field Weir does not implement yet is refused: `Accepted=False`, `UnsupportedValue`,
//!   naming each such field. Values out of range are `Invalid`. A refused policy applies to
//!   nothing (its targets keep Weir's defaults, or a Gateway-wide policy).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use weir_snapshot::{
    Cidr, ClientIpDetection, ClientPolicy, Http2Settings, ProxyProtocol, RequestIdMode, Snapshot,
    TlsSettings, TlsVersion,
};
use weir_store::policies::{IntOrString, Unsupported};
use weir_store::{ClientTrafficPolicy, Kind, ObjectKey, Store};

use crate::policy::attach::{self, Allowed, NotAccepted, Target, TargetRef};
use crate::policy::attached::{self, Attached};
use crate::ObjectStatus;

/// What a ClientTrafficPolicy may target.
const TARGETS: Allowed = Allowed {
    gateway: true,
    listener_set: false,
    routes: false,
    service: false,
};

type Model = attached::Model<ClientTrafficPolicy, Arc<ClientPolicy>>;

/// Every ClientTrafficPolicy, and which one holds each target.
pub struct ClientPolicies(Attached<ClientTrafficPolicy, Arc<ClientPolicy>>);

impl ClientPolicies {
    /// Evaluate every policy; `ours`: the Gateways of our classes.
    pub fn build(store: &Store, ours: &BTreeSet<ObjectKey>) -> Self {
        Self(Attached::build(store, "Gateway or listener", |key, p| {
            evaluate(store, ours, key, p)
        }))
    }

    /// Put each socket's effective policy on it, and mark listener-level policies that
    /// cannot apply because their listener shares its socket with listeners that get
    /// another policy.
    pub fn place(&mut self, snapshot: &mut Snapshot) {
        let Some(sockets) = Arc::get_mut(&mut snapshot.sockets) else {
            return;
        };
        for socket in sockets.iter_mut() {
            // Per listener: the index of its most specific policy, and of its Gateway's.
            let mut specific = BTreeSet::new();
            let mut whole = BTreeSet::new();
            for l in socket.listeners.iter() {
                let Some(gateway) = gateway_key(&l.gateway) else {
                    continue;
                };
                let target = Target::new(Kind::Gateway, gateway, Some(&l.name));
                let index = self.0.index();
                specific.insert(attach::most_specific(index, &target).copied());
                whole.insert(index.get(&target.whole()).copied());
            }
            let chosen = if specific.len() <= 1 {
                specific.into_iter().next().flatten()
            } else {
                // Listener-level policies on a shared port: none of them applies.
                for i in specific.iter().flatten() {
                    if !whole.contains(&Some(*i)) {
                        self.0.set_conflicted(
                            *i,
                            format!(
                                "its listener shares port {} with listeners that get another \
                             policy, and connection settings are per port: target the \
                             Gateway, or every listener on the port",
                                socket.port
                            ),
                        );
                    }
                }
                if whole.len() == 1 {
                    whole.into_iter().next().flatten()
                } else {
                    None
                }
            };
            socket.client_policy = chosen.and_then(|i| {
                let conflicted = self.0.is_conflicted(i);
                (!conflicted)
                    .then(|| self.0.model(i).compiled.clone())
                    .flatten()
            });
        }
    }

    /// One status per policy: an ancestor entry per Gateway it names.
    pub fn statuses(&self, controller: &str, now: &weir_store::Time) -> Vec<ObjectStatus> {
        self.0.statuses(controller, now)
    }
}

/// `namespace/name` (as [`weir_snapshot::Listener::gateway`] has it) → key.
fn gateway_key(s: &str) -> Option<ObjectKey> {
    let (namespace, name) = s.split_once('/')?;
    Some(ObjectKey::new(namespace, name))
}

fn evaluate(
    store: &Store,
    ours: &BTreeSet<ObjectKey>,
    key: &ObjectKey,
    p: &Arc<ClientTrafficPolicy>,
) -> Model {
    let mut targets = Vec::new();
    let mut ancestors = BTreeSet::new();
    let mut not_found = None;
    for t in p.spec.targets.all() {
        let r = TargetRef {
            group: &t.group,
            kind: &t.kind,
            name: &t.name,
            section_name: t.section_name.as_deref(),
        };
        let Some(resolved) = attach::resolve(store, &key.namespace, r, TARGETS) else {
            continue;
        };
        let gateway = resolved.target.key.clone();
        // A Gateway of another controller is not ours to report on or to configure.
        let exists = store.gateways.contains_key(&gateway);
        if exists && !ours.contains(&gateway) {
            continue;
        }
        ancestors.insert(gateway);
        match resolved.not_found {
            Some(n) => not_found = not_found.or(Some(n)),
            None => targets.push(resolved.target),
        }
    }
    let compiled = compile(key, &p.spec);
    let not_accepted = match (&compiled, not_found) {
        (Err(n), _) => Some(n.clone()),
        (Ok(_), Some(n)) if targets.is_empty() => Some(n),
        _ => None,
    };
    Model {
        key: key.clone(),
        policy: p.clone(),
        targets,
        ancestors,
        compiled: if not_accepted.is_none() {
            compiled.ok().map(Arc::new)
        } else {
            None
        },
        not_accepted,
        also: Vec::new(),
    }
}

/// The paths of the fields Weir does not implement, in `unsupported` maps at each level.
fn unsupported_fields(spec: &weir_store::policies::ClientTrafficPolicySpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |path: &str, u: &Unsupported| {
        out.extend(u.keys().map(|k| format!("{path}.{k}")));
    };
    add("spec", &spec.unsupported);
    if let Some(c) = &spec.client_ip_detection {
        add("spec.clientIPDetection", &c.unsupported);
        if let Some(x) = &c.x_forwarded_for {
            add("spec.clientIPDetection.xForwardedFor", &x.unsupported);
        }
    }
    if let Some(p) = &spec.proxy_protocol {
        add("spec.proxyProtocol", &p.unsupported);
    }
    if let Some(h) = &spec.headers {
        add("spec.headers", &h.unsupported);
    }
    if let Some(t) = &spec.timeout {
        add("spec.timeout", &t.unsupported);
        if let Some(h) = &t.http {
            add("spec.timeout.http", &h.unsupported);
        }
        if let Some(tcp) = &t.tcp {
            add("spec.timeout.tcp", &tcp.unsupported);
        }
    }
    if let Some(c) = &spec.connection {
        add("spec.connection", &c.unsupported);
        if let Some(l) = &c.connection_limit {
            add("spec.connection.connectionLimit", &l.unsupported);
        }
    }
    if let Some(t) = &spec.tls {
        add("spec.tls", &t.unsupported);
    }
    if let Some(h) = &spec.http2 {
        add("spec.http2", &h.unsupported);
    }
    if let Some(b) = &spec.body_based_routing {
        add("spec.bodyBasedRouting", &b.unsupported);
    }
    out
}

fn invalid(message: impl Into<String>) -> NotAccepted {
    NotAccepted::new("Invalid", message)
}

/// Validate and compile a spec.
fn compile(
    key: &ObjectKey,
    spec: &weir_store::policies::ClientTrafficPolicySpec,
) -> Result<ClientPolicy, NotAccepted> {
    let unsupported = unsupported_fields(spec);
    if !unsupported.is_empty() {
        return Err(NotAccepted::new(
            "UnsupportedValue",
            format!(
                "Weir does not implement {} (yet): remove {} to apply this policy",
                unsupported.join(", "),
                if unsupported.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    let mut out = ClientPolicy {
        name: key.to_string().into(),
        id: identity(key, spec),
        ..ClientPolicy::default()
    };
    if let Some(x) = spec
        .client_ip_detection
        .as_ref()
        .and_then(|c| c.x_forwarded_for.as_ref())
    {
        out.client_ip =
            match (x.num_trusted_hops, &x.trusted_cidrs) {
                (Some(_), Some(_)) => return Err(invalid(
                    "spec.clientIPDetection.xForwardedFor: set numTrustedHops or trustedCIDRs, \
                     not both",
                )),
                (Some(n), None) => Some(ClientIpDetection::NumTrustedHops(
                    u32::try_from(n).ok().filter(|n| *n <= 64).ok_or_else(|| {
                        invalid(format!(
                        "spec.clientIPDetection.xForwardedFor.numTrustedHops {n}: must be 0 to 64"
                    ))
                    })?,
                )),
                (None, Some(cidrs)) => {
                    let parsed = cidrs
                        .iter()
                        .map(|c| {
                            Cidr::parse(c).ok_or_else(|| {
                                invalid(format!(
                                "spec.clientIPDetection.xForwardedFor.trustedCIDRs: {c:?} is not \
                                 an address block"
                            ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(ClientIpDetection::TrustedCidrs(parsed))
                }
                (None, None) => None,
            };
    }
    if let Some(p) = &spec.proxy_protocol {
        out.proxy_protocol = Some(ProxyProtocol {
            optional: p.optional.unwrap_or(false),
        });
    }
    if let Some(h) = &spec.headers {
        if let Some(limit) = &h.max_request_header_limit {
            out.max_request_header_bytes = Some(bytes(
                "spec.headers.maxRequestHeaderLimit",
                limit,
                1024,
                1024 * 1024,
            )? as usize);
        }
        out.disable_rate_limit_headers = h.disable_rate_limit_headers.unwrap_or(false);
        out.request_id = match h.request_id.as_deref() {
            None => None,
            Some("PreserveOrGenerate") => Some(RequestIdMode::PreserveOrGenerate),
            Some("Preserve") => Some(RequestIdMode::Preserve),
            Some("Generate") => Some(RequestIdMode::Generate),
            Some("Disable") => Some(RequestIdMode::Disable),
            Some(other) => {
                return Err(invalid(format!(
                    "spec.headers.requestID {other:?}: must be PreserveOrGenerate, Preserve, \
                     Generate or Disable"
                )))
            }
        };
    }
    if let Some(t) = &spec.timeout {
        if let Some(h) = &t.http {
            out.request_received_timeout = duration(
                "spec.timeout.http.requestReceivedTimeout",
                h.request_received_timeout.as_deref(),
            )?;
            out.http_idle_timeout =
                duration("spec.timeout.http.idleTimeout", h.idle_timeout.as_deref())?;
        }
        if let Some(tcp) = &t.tcp {
            out.tcp_idle_timeout =
                duration("spec.timeout.tcp.idleTimeout", tcp.idle_timeout.as_deref())?;
        }
    }
    if let Some(c) = &spec.connection {
        if let Some(v) = c.connection_limit.as_ref().and_then(|l| l.value) {
            out.connection_limit =
                Some(u32::try_from(v).ok().filter(|v| *v >= 1).ok_or_else(|| {
                    invalid(format!(
                        "spec.connection.connectionLimit.value {v}: must be at least 1"
                    ))
                })?);
        }
        if let Some(b) = &c.buffer_limit {
            out.buffer_limit = Some(bytes(
                "spec.connection.bufferLimit",
                b,
                1024,
                64 * 1024 * 1024,
            )?);
        }
    }
    if let Some(t) = &spec.tls {
        out.tls = Some(tls(t)?);
    }
    if let Some(h) = &spec.http2 {
        let streams = h
            .max_concurrent_streams
            .map(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=i32::MAX as u32).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "spec.http2.maxConcurrentStreams {n}: must be 1 to 2147483647"
                        ))
                    })
            })
            .transpose()?;
        // HTTP/2's window sizes: at least the protocol's default is pointless to refuse,
        // at most 2^31-1 (RFC 9113 6.9.1).
        let window = |field: &str, v: Option<&IntOrString>| {
            v.map(|v| bytes(field, v, 1024, i32::MAX as u32))
                .transpose()
        };
        out.http2 = Some(Http2Settings {
            max_concurrent_streams: streams,
            initial_stream_window_size: window(
                "spec.http2.initialStreamWindowSize",
                h.initial_stream_window_size.as_ref(),
            )?,
            initial_connection_window_size: window(
                "spec.http2.initialConnectionWindowSize",
                h.initial_connection_window_size.as_ref(),
            )?,
        });
    }
    if let Some(b) = &spec.body_based_routing {
        out.body_based_routing = Some(match &b.max_body_size {
            None => DEFAULT_MODEL_BODY,
            Some(size) => u64::from(bytes(
                "spec.bodyBasedRouting.maxBodySize",
                size,
                1,
                64 * 1024 * 1024,
            )?),
        });
    }
    Ok(out)
}

/// `bodyBasedRouting.maxBodySize` unless set: 1 MiB (chat requests with long prompts fit).
const DEFAULT_MODEL_BODY: u64 = 1024 * 1024;

fn tls(t: &weir_store::policies::ClientTls) -> Result<TlsSettings, NotAccepted> {
    let version = |field: &str, v: Option<&str>, is_max: bool| match v {
        None | Some("Auto") => Ok(None),
        // rustls speaks TLS 1.2 and 1.3 only: a lower minimum is the 1.2 floor.
        Some("1.0" | "1.1") if !is_max => Ok(Some(TlsVersion::V1_2)),
        Some("1.2") => Ok(Some(TlsVersion::V1_2)),
        Some("1.3") => Ok(Some(TlsVersion::V1_3)),
        Some(other) => Err(invalid(format!(
            "{field} {other:?}: Weir speaks TLS 1.2 and 1.3 (Auto, 1.2 or 1.3{})",
            if is_max { "" } else { "; 1.0 and 1.1 mean 1.2" }
        ))),
    };
    let min_version = version("spec.tls.minVersion", t.min_version.as_deref(), false)?;
    let max_version = version("spec.tls.maxVersion", t.max_version.as_deref(), true)?;
    if let (Some(min), Some(max)) = (min_version, max_version) {
        if min > max {
            return Err(invalid("spec.tls: minVersion is above maxVersion"));
        }
    }
    let ciphers: Vec<Arc<str>> = t
        .ciphers
        .iter()
        .flatten()
        .map(|c| Arc::from(c.as_str()))
        .collect();
    let alpn_protocols: Vec<Arc<str>> = t
        .alpn_protocols
        .iter()
        .flatten()
        .map(|c| Arc::from(c.as_str()))
        .collect();
    for p in &alpn_protocols {
        if !matches!(&**p, "h2" | "http/1.1" | "http/1.0") {
            return Err(invalid(format!(
                "spec.tls.alpnProtocols: {p:?} is not h2, http/1.1 or http/1.0"
            )));
        }
    }
    let settings = TlsSettings {
        min_version,
        max_version,
        ciphers,
        alpn_protocols,
    };
    // Unknown cipher names, and ciphers none of the allowed versions can use: what the
    // proxy's TLS stack would refuse, refused here with the names.
    let unknown = weir_snapshot::client_policy::unknown_ciphers(&settings.ciphers);
    if !unknown.is_empty() {
        return Err(invalid(format!(
            "spec.tls.ciphers: Weir's TLS stack has no {}",
            unknown.join(", ")
        )));
    }
    settings
        .check()
        .map_err(|e| invalid(format!("spec.tls: {e}")))?;
    Ok(settings)
}

/// A duration field (Gateway API format), more than zero.
fn duration(field: &str, v: Option<&str>) -> Result<Option<Duration>, NotAccepted> {
    let Some(s) = v else { return Ok(None) };
    let d: gateway_api::Duration = s
        .parse()
        .map_err(|e: String| invalid(format!("{field} {s:?}: {e}")))?;
    if d.is_zero() {
        return Err(invalid(format!("{field}: must be more than 0")));
    }
    Ok(Some(Duration::new(d.as_secs(), d.subsec_nanos())))
}

/// A byte count: an integer, or a quantity (`64Ki`, `1Mi`, `32K`), within `min..=max`.
fn bytes(field: &str, v: &IntOrString, min: u32, max: u32) -> Result<u32, NotAccepted> {
    let n: Option<u64> = match v {
        IntOrString::Int(n) => u64::try_from(*n).ok(),
        IntOrString::String(s) => quantity(s),
    };
    let shown = match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => format!("{s:?}"),
    };
    n.and_then(|n| u32::try_from(n).ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| invalid(format!("{field} {shown}: must be {min} to {max} bytes")))
}

/// A Kubernetes quantity without fractions: digits and an optional binary or decimal suffix.
pub(crate) fn quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// What keys the policy's runtime state: its name and spec (a changed spec is a new policy).
fn identity(key: &ObjectKey, spec: &weir_store::policies::ClientTrafficPolicySpec) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
