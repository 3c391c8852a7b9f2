//! How Gateways that request no address get one ([`Addressing`]), and the address pool of
//! file mode (`weir run --gateway-address-pool CIDR`).
//!
//! In a cluster every Gateway has an address of its own; two Gateways listening on port 80
//! never share a socket. Where Weir serves several Gateways from one process, something has
//! to give each its own address, or they share one and must not overlap:
//! - [`Addressing::Shared`]: every Gateway without `spec.addresses` is served on the
//!   process-wide bind address (file mode without a pool; Kubernetes mode with
//!   `--gateway-service`). Listeners of different Gateways on one socket whose hostnames
//!   overlap are a conflict (see `gateway::settle_ports`), never a silent black hole.
//! - [`Addressing::Pool`]: each such Gateway gets an IP of its own from the pool.
//! - [`Addressing::Services`] (Kubernetes mode without `--gateway-service`): each Gateway
//!   gets a Service of its own, and its listeners their own pod ports behind it.
//!
//! A pool address is chosen from the Gateway's namespace/name (FNV-1a, so the same on every
//! build and platform), probing linearly past addresses already taken, oldest Gateway first:
//! the same set of Gateways always gets the same addresses, across restarts, and a Gateway
//! created later never moves the address of an older one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// How Gateways without `spec.addresses` get their address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Addressing {
    /// They share the process-wide bind address.
    #[default]
    Shared,
    /// Each gets its own address from the pool.
    Pool(AddressPool),
    /// Kubernetes mode: each Gateway its own Service in front of the shared Weir pods; its
    /// listeners are bound at the pod ports recorded on that Service (see
    /// [`crate::services`]), and its addresses are the Service's.
    Services(crate::services::ServiceAddressing),
}

/// A CIDR block of addresses to hand out, e.g. `127.0.1.0/24`. IPv4 blocks of /30 and wider
/// leave out the network and broadcast addresses; IPv6 blocks leave out the subnet-router
/// anycast address (the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    /// The first address of the block (host bits zero), as a number.
    base: u128,
    v6: bool,
    prefix: u8,
    /// Addresses handed out: `base + skip .. base + skip + len`.
    skip: u128,
    len: u128,
}

impl AddressPool {
    /// How many addresses the pool hands out.
    pub fn len(&self) -> u128 {
        self.len
    }

    /// Whether the pool has no address to hand out (never: parsing refuses such a block).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pool's `i`-th address (`i < len`).
    pub fn nth(&self, i: u128) -> IpAddr {
        let n = self.base + self.skip + (i % self.len.max(1));
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            // Within a v4 block: fits in 32 bits.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }

    /// Where the probe for a Gateway starts.
    pub fn start_for(&self, namespace: &str, name: &str) -> u128 {
        let h = fnv1a(&[namespace.as_bytes(), b"/", name.as_bytes()]);
        u128::from(h) % self.len.max(1)
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.base))
        } else {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(self.base).unwrap_or(0)))
        };
        write!(f, "{base}/{}", self.prefix)
    }
}

impl FromStr for AddressPool {
    type Err = String;

    /// `ADDR/PREFIX`; host bits must be zero (as `ip route` would insist), so a typo such
    /// as `127.0.1.5/24` is an error rather than a surprise.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR block (e.g. 127.0.1.0/24)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to {bits}"))?;
        let base: u128 = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let host_bits = u32::from(bits - prefix);
        let size: u128 = if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        if base & (size - 1) != 0 {
            return Err(format!(
                "{s}: host bits are set; the block starts at {}",
                AddressPool {
                    base: base & !(size - 1),
                    v6: addr.is_ipv6(),
                    prefix,
                    skip: 0,
                    len: 0,
                }
            ));
        }
        let (skip, len) = match (addr.is_ipv4(), host_bits) {
            (true, 0) => (0, 1),
            (true, 1) => (0, 2),
            (true, _) => (1, size - 2),
            (false, 0) => (0, 1),
            (false, _) => (1, size - 1),
        };
        Ok(AddressPool {
            base,
            v6: addr.is_ipv6(),
            prefix,
            skip,
            len,
        })
    }
}

/// 64-bit FNV-1a over the parts: stable across builds and platforms, unlike std's hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_pool_skips_network_and_broadcast() {
        let p: AddressPool = "127.0.1.0/24".parse().unwrap();
        assert_eq!(p.len(), 254);
        assert_eq!(p.nth(0).to_string(), "127.0.1.1");
        assert_eq!(p.nth(253).to_string(), "127.0.1.254");
        assert_eq!(p.to_string(), "127.0.1.0/24");
        let one: AddressPool = "10.0.0.7/32".parse().unwrap();
        assert_eq!((one.len(), one.nth(0).to_string()), (1, "10.0.0.7".into()));
    }

    #[test]
    fn v6_pool() {
        let p: AddressPool = "fd00::/120".parse().unwrap();
        assert_eq!(p.len(), 255);
        assert_eq!(p.nth(0).to_string(), "fd00::1");
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        for (s, want) in [
            ("127.0.1.0", "not a CIDR block"),
            (
                "127.0.1.5/24",
                "host bits are set; the block starts at 127.0.1.0/24",
            ),
            ("127.0.1.0/33", "prefix length"),
            ("nope/24", "not an IP address"),
        ] {
            let err = s.parse::<AddressPool>().unwrap_err();
            assert!(err.contains(want), "{s}: {err}");
        }
    }

    #[test]
    fn start_is_stable_and_spreads() {
        let p: AddressPool = "127.0.1.0/24".parse().unwrap();
        // FNV-1a is fixed: this value never changes between builds.
        assert_eq!(p.start_for("default", "a"), p.start_for("default", "a"));
        assert_ne!(p.start_for("default", "a"), p.start_for("default", "b"));
        assert_ne!(p.start_for("a", "b"), p.start_for("a/b", ""));
    }
}
