//! `loadBalancer` of a BackendTrafficPolicy: validated and compiled to
//! [`weir_snapshot::LoadBalancer`].
//!
//! Decisions where the spec (Envoy Gateway's) leaves room:
//! - `type` is required when `loadBalancer` is given (as in Envoy Gateway's CRD);
//!   `consistentHash` is required with `ConsistentHash` and refused with any other type.
//! - `slowStart` applies to RoundRobin, Random and LeastRequest; with ConsistentHash it is
//!   refused (`Invalid`): a hash's stickiness and a ramp contradict each other.
//! - A cookie without `ttl` is issued as a session cookie.
//! - `zoneAware.preferLocal` applies to RoundRobin, Random and LeastRequest; with
//!   ConsistentHash it is refused (`Invalid`), as in Envoy Gateway. `zoneAware.weightedZones`
//!   is not implemented: refused by name (`UnsupportedValue`).

use std::sync::Arc;

use http::HeaderName;
use weir_snapshot::balance::{DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE};
use weir_snapshot::{HashCookie, HashOn, LbKind, LoadBalancer, PreferLocal};
use weir_store::policies::{self, Unsupported};

use super::{duration, invalid};
use crate::policy::attach::NotAccepted;

/// The paths of the `loadBalancer` fields Weir does not implement.
pub(super) fn unsupported_fields(
    lb: &policies::LoadBalancer,
    add: &mut dyn FnMut(&str, &Unsupported),
) {
    add("spec.loadBalancer", &lb.unsupported);
    if let Some(c) = &lb.consistent_hash {
        add("spec.loadBalancer.consistentHash", &c.unsupported);
        if let Some(h) = &c.header {
            add("spec.loadBalancer.consistentHash.header", &h.unsupported);
        }
        if let Some(k) = &c.cookie {
            add("spec.loadBalancer.consistentHash.cookie", &k.unsupported);
        }
    }
    if let Some(s) = &lb.slow_start {
        add("spec.loadBalancer.slowStart", &s.unsupported);
    }
    if let Some(z) = &lb.zone_aware {
        add("spec.loadBalancer.zoneAware", &z.unsupported);
        if let Some(p) = &z.prefer_local {
            add("spec.loadBalancer.zoneAware.preferLocal", &p.unsupported);
            if let Some(f) = &p.force {
                add(
                    "spec.loadBalancer.zoneAware.preferLocal.force",
                    &f.unsupported,
                );
            }
        }
    }
}

/// Validate and compile `loadBalancer`.
pub(super) fn compile(lb: &policies::LoadBalancer) -> Result<LoadBalancer, NotAccepted> {
    let ty = lb.type_.as_deref().ok_or_else(|| {
        invalid(
            "spec.loadBalancer.type is required: one of RoundRobin, Random, LeastRequest, \
             ConsistentHash",
        )
    })?;
    let kind = match ty {
        "RoundRobin" => LbKind::RoundRobin,
        "Random" => LbKind::Random,
        "LeastRequest" => LbKind::LeastRequest,
        "ConsistentHash" => {
            let c = lb.consistent_hash.as_ref().ok_or_else(|| {
                invalid("spec.loadBalancer.consistentHash is required with type ConsistentHash")
            })?;
            consistent_hash(c)?
        }
        other => {
            return Err(invalid(format!(
                "spec.loadBalancer.type {other:?}: must be one of RoundRobin, Random, \
                 LeastRequest, ConsistentHash"
            )))
        }
    };
    if lb.consistent_hash.is_some() && !matches!(kind, LbKind::ConsistentHash { .. }) {
        return Err(invalid(format!(
            "spec.loadBalancer.consistentHash: only with type ConsistentHash (type is {ty})"
        )));
    }
    let slow_start = match &lb.slow_start {
        None => None,
        Some(s) => {
            if matches!(kind, LbKind::ConsistentHash { .. }) {
                return Err(invalid(
                    "spec.loadBalancer.slowStart: only with type RoundRobin, Random or \
                     LeastRequest",
                ));
            }
            Some(
                duration("spec.loadBalancer.slowStart.window", s.window.as_deref())?
                    .ok_or_else(|| invalid("spec.loadBalancer.slowStart.window is required"))?,
            )
        }
    };
    let prefer_local = match lb.zone_aware.as_ref().and_then(|z| z.prefer_local.as_ref()) {
        None => None,
        Some(p) => {
            if matches!(kind, LbKind::ConsistentHash { .. }) {
                return Err(invalid(
                    "spec.loadBalancer.zoneAware.preferLocal: only with type RoundRobin, Random \
                     or LeastRequest (as in Envoy Gateway: a hash picks by key, not by zone)",
                ));
            }
            let min_endpoints = match p.min_endpoints_threshold {
                None => 6,
                Some(n) => u64::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    invalid(format!(
                        "spec.loadBalancer.zoneAware.preferLocal.minEndpointsThreshold {n}: must \
                         be at least 1"
                    ))
                })?,
            };
            let force_min_local = match &p.force {
                None => None,
                Some(f) => Some(match f.min_endpoints_in_zone_threshold {
                    None => 1,
                    Some(n) => u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                        invalid(format!(
                            "spec.loadBalancer.zoneAware.preferLocal.force.\
                             minEndpointsInZoneThreshold {n}: must be 1 to 4294967295"
                        ))
                    })?,
                }),
            };
            Some(PreferLocal {
                min_endpoints,
                force_min_local,
            })
        }
    };
    Ok(LoadBalancer {
        kind,
        slow_start,
        prefer_local,
    })
}

fn consistent_hash(c: &policies::ConsistentHash) -> Result<LbKind, NotAccepted> {
    let table_size = match c.table_size {
        None => DEFAULT_TABLE_SIZE,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_TABLE_SIZE && is_prime(n))
            .ok_or_else(|| {
                invalid(format!(
                    "spec.loadBalancer.consistentHash.tableSize {n}: must be a prime from 2 to \
                     {MAX_TABLE_SIZE}"
                ))
            })?,
    };
    let ty = c.type_.as_deref().ok_or_else(|| {
        invalid(
            "spec.loadBalancer.consistentHash.type is required: one of SourceIP, Header, Cookie",
        )
    })?;
    let on = match ty {
        "SourceIP" => HashOn::SourceIp,
        "Header" => {
            let name = c
                .header
                .as_ref()
                .and_then(|h| h.name.as_deref())
                .ok_or_else(|| {
                    invalid(
                        "spec.loadBalancer.consistentHash.header.name is required with type Header",
                    )
                })?;
            HashOn::Header(HeaderName::try_from(name).map_err(|_| {
                invalid(format!(
                    "spec.loadBalancer.consistentHash.header.name {name:?}: not a header name"
                ))
            })?)
        }
        "Cookie" => {
            let k = c.cookie.as_ref();
            let name = k.and_then(|k| k.name.as_deref()).ok_or_else(|| {
                invalid("spec.loadBalancer.consistentHash.cookie.name is required with type Cookie")
            })?;
            if name.is_empty() || !name.bytes().all(is_token) {
                return Err(invalid(format!(
                    "spec.loadBalancer.consistentHash.cookie.name {name:?}: not a cookie name \
                     (RFC 6265 token)"
                )));
            }
            let ttl = duration(
                "spec.loadBalancer.consistentHash.cookie.ttl",
                k.and_then(|k| k.ttl.as_deref()),
            )?;
            let mut attributes = Vec::new();
            for (n, v) in k.and_then(|k| k.attributes.as_ref()).into_iter().flatten() {
                let ok = !n.is_empty()
                    && n.bytes().all(is_token)
                    && v.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';');
                if !ok {
                    return Err(invalid(format!(
                        "spec.loadBalancer.consistentHash.cookie.attributes {n:?}: name must be a \
                         token and value printable ASCII without ';'"
                    )));
                }
                attributes.push((n.clone(), v.clone()));
            }
            HashOn::Cookie(Arc::new(HashCookie {
                name: name.into(),
                ttl,
                attributes: attributes.into(),
            }))
        }
        other => {
            return Err(invalid(format!(
                "spec.loadBalancer.consistentHash.type {other:?}: must be one of SourceIP, \
                 Header, Cookie"
            )))
        }
    };
    if !matches!(on, HashOn::Header(_)) && c.header.is_some() {
        return Err(invalid(
            "spec.loadBalancer.consistentHash.header: only with consistentHash.type Header",
        ));
    }
    if !matches!(on, HashOn::Cookie(_)) && c.cookie.is_some() {
        return Err(invalid(
            "spec.loadBalancer.consistentHash.cookie: only with consistentHash.type Cookie",
        ));
    }
    Ok(LbKind::ConsistentHash { on, table_size })
}

/// RFC 7230 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let p: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(p, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(!is_prime(65_536));
    }
}
