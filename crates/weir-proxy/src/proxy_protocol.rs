//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in front of Weir sends
//! the client's address in a header before the client's first byte, so Weir sees the real
//! client instead of the load balancer (ClientTrafficPolicy `proxyProtocol`).
//!
//! Our own parser rather than a crate (`ppp`): the format is small, the parser is a pure
//! function over bytes that the fuzz target `proxy_protocol` drives directly, and it takes
//! only what Weir uses (the source address; TLVs are skipped unread). The header is read
//! with `peek` first and consumed exactly ([`read_header`]), so the bytes after it reach
//! the TLS acceptor, the HTTP server or a passthrough splice on the plain `TcpStream`
//! (no replay wrapper, no change of stream type for the paths after it).
//!
//! Bounds: a v1 header is at most 107 bytes (the spec's limit, CRLF included); a v2 header
//! at most [`MAX_V2`] bytes (16 + addresses + TLVs); the whole header must arrive within the
//! caller's deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 header, CRLF included (the spec: 107).
pub const MAX_V1: usize = 107;
/// Longest v2 header Weir accepts: 16 bytes of fixed header, then addresses and TLVs
/// (cloud load balancers send a few hundred bytes at most).
pub const MAX_V2: usize = 4096;

/// What the bytes at the start of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header: read more.
    Incomplete,
    /// Not a PROXY header (the client's own bytes).
    NotProxy,
    /// A complete header of `len` bytes. `source`: the client address it carries; `None`
    /// for a v2 LOCAL command (a health check from the balancer itself), v1 `UNKNOWN`, and
    /// address families without one (UNIX sockets, unspecified): the connection's own peer
    /// is the client then.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// A header that starts like a PROXY header but is not a valid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed PROXY protocol header: {0}")]
pub struct Malformed(pub &'static str);

/// Parse the start of a connection. Never reads past the header; never panics.
pub fn parse(buf: &[u8]) -> Result<Parsed, Malformed> {
    if is_prefix_of(buf, V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if is_prefix_of(buf, V1_PREFIX) {
        return parse_v1(buf);
    }
    Ok(Parsed::NotProxy)
}

/// Whether `buf` and `signature` agree on their common length.
fn is_prefix_of(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf.get(..n) == signature.get(..n)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Malformed> {
    let window = buf.get(..buf.len().min(MAX_V1)).unwrap_or(buf);
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1 {
            return Err(Malformed("v1 header longer than 107 bytes"));
        }
        if window.contains(&b'\n') {
            return Err(Malformed("v1 header: LF without CR"));
        }
        return Ok(Parsed::Incomplete);
    };
    let len = cr + 2;
    let line = window.get(V1_PREFIX.len()..cr).unwrap_or_default();
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        // Refused here as in a prefix of it (consistent however the bytes arrive).
        return Err(Malformed("v1 header: CR or LF inside the line"));
    }
    let line = std::str::from_utf8(line).map_err(|_| Malformed("v1 header is not ASCII"))?;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    let source = match proto {
        // The rest of an UNKNOWN line is to be ignored.
        "UNKNOWN" => None,
        "TCP4" | "TCP6" => {
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Err(Malformed("v1 header: wrong number of fields"));
            };
            let (src, dst): (IpAddr, IpAddr) = if proto == "TCP4" {
                (IpAddr::V4(v4(src)?), IpAddr::V4(v4(dst)?))
            } else {
                (IpAddr::V6(v6(src)?), IpAddr::V6(v6(dst)?))
            };
            let _ = (dst, port(dport)?);
            Some(SocketAddr::new(src, port(sport)?))
        }
        _ => return Err(Malformed("v1 header: unknown protocol")),
    };
    Ok(Parsed::Header { len, source })
}

fn v4(s: &str) -> Result<Ipv4Addr, Malformed> {
    s.parse()
        .map_err(|_| Malformed("v1 header: bad IPv4 address"))
}

fn v6(s: &str) -> Result<Ipv6Addr, Malformed> {
    s.parse()
        .map_err(|_| Malformed("v1 header: bad IPv6 address"))
}

/// A v1 port: 1 to 5 digits, no sign, at most 65535, no leading zero (except "0").
fn port(s: &str) -> Result<u16, Malformed> {
    let bad = Malformed("v1 header: bad port");
    if s.is_empty()
        || s.len() > 5
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Malformed> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(Parsed::Incomplete);
    };
    let ver_cmd = fixed[12];
    let family = fixed[13];
    let body = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(Malformed("v2 header: version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Malformed("v2 header: unknown command")),
    };
    let len = 16 + body;
    if len > MAX_V2 {
        return Err(Malformed("v2 header longer than Weir accepts"));
    }
    let Some(addresses) = buf.get(16..len) else {
        return Ok(Parsed::Incomplete);
    };
    if local {
        // The balancer's own connection (a health check): the addresses, if any, are
        // to be ignored.
        return Ok(Parsed::Header { len, source: None });
    }
    let transport = family & 0x0f;
    if transport > 2 {
        return Err(Malformed("v2 header: unknown transport"));
    }
    let source = match family >> 4 {
        // AF_UNSPEC: no address; the connection's own is used.
        0 => None,
        1 => {
            let a = addresses
                .get(..12)
                .ok_or(Malformed("v2 header: IPv4 addresses truncated"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([a[8], a[9]]),
            ))
        }
        2 => {
            let a = addresses
                .get(..36)
                .ok_or(Malformed("v2 header: IPv6 addresses truncated"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // AF_UNIX: 216 bytes of paths; no IP to use.
        3 => {
            if addresses.len() < 216 {
                return Err(Malformed("v2 header: UNIX addresses truncated"));
            }
            None
        }
        _ => return Err(Malformed("v2 header: unknown address family")),
    };
    // Only TCP (STREAM) carries a client address Weir uses; UNSPEC/DGRAM keep the peer.
    let source = source.filter(|_| transport == 1);
    Ok(Parsed::Header { len, source })
}

/// Why a connection on a PROXY-protocol socket was closed before it was served (the
/// `reason` of `weir_proxy_protocol_errors_total`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("no PROXY protocol header (required on this socket)")]
    Missing,
    #[error("no complete PROXY protocol header in time")]
    Timeout,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    /// The client closed before sending a byte (a TCP health check): not counted.
    #[error("closed before sending anything")]
    Closed,
}

impl HeaderError {
    pub(crate) fn reason(&self) -> Option<&'static str> {
        match self {
            HeaderError::Malformed(_) => Some("malformed"),
            HeaderError::Missing => Some("missing"),
            HeaderError::Timeout => Some("timeout"),
            HeaderError::Io(_) => Some("io"),
            HeaderError::Closed => None,
        }
    }
}

/// Read the PROXY header at the start of `tcp` within `deadline`, consuming exactly its
/// bytes. `Ok(Some(addr))`: the client address it carries; `Ok(None)`: no address to use
/// (LOCAL, UNKNOWN) or, when `optional`, no header at all (nothing consumed).
pub(crate) async fn read_header(
    tcp: &mut TcpStream,
    optional: bool,
    deadline: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    tokio::time::timeout(deadline, read_header_inner(tcp, optional))
        .await
        .map_err(|_| HeaderError::Timeout)?
}

async fn read_header_inner(
    tcp: &mut TcpStream,
    optional: bool,
) -> Result<Option<SocketAddr>, HeaderError> {
    let mut buf = vec![0u8; MAX_V2];
    let mut seen = 0;
    let mut pause = Duration::from_millis(1);
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(if seen == 0 {
                HeaderError::Closed
            } else {
                HeaderError::Missing
            });
        }
        match parse(buf.get(..n).unwrap_or_default())? {
            Parsed::NotProxy if optional => return Ok(None),
            Parsed::NotProxy => return Err(HeaderError::Missing),
            Parsed::Header { len, source } => {
                let header = buf.get_mut(..len).ok_or(Malformed("length"))?;
                tcp.read_exact(header).await?;
                return Ok(source);
            }
            Parsed::Incomplete => {
                // `peek` returns at once while bytes are waiting, so wait a little for the
                // rest before peeking again (rare: balancers send the header in one write).
                if n == seen {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                } else {
                    seen = n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 443\r\nGET /";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: 40,
                source: Some("192.0.2.7:5555".parse().unwrap())
            })
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 80\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: h.len(),
                source: Some("[2001:db8::7]:65535".parse().unwrap())
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Ok(Parsed::Header {
                len: 24,
                source: None
            })
        );
        assert_eq!(parse(b"PROX"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Parsed::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Ok(Parsed::NotProxy));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\n",
            b"PROXY UNKNOWN \n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(parse(&long).is_err());
    }

    /// The fuzz target's properties (fuzz/fuzz_targets/proxy_protocol.rs) on random
    /// mutations of valid headers, so `cargo test` checks them too.
    #[test]
    fn random_mutations_keep_the_parser_s_promises() {
        let seeds: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 443\r\nGET /".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(
                1,
                0x11,
                &[
                    192, 0, 2, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb, 4, 0, 1, 0,
                ],
            ),
            v2(1, 0x21, &[7; 40]),
            v2(0, 0, &[]),
        ];
        let starts_like = |d: &[u8], sig: &[u8]| {
            let n = d.len().min(sig.len());
            d[..n] == sig[..n]
        };
        for i in 0..20_000u32 {
            let mut data = seeds[i as usize % seeds.len()].clone();
            for _ in 0..(1 + rand::random::<u8>() % 4) {
                let at = rand::random::<u32>() as usize % (data.len() + 1);
                match rand::random::<u8>() % 3 {
                    0 if at < data.len() => data[at] = rand::random(),
                    1 => data.insert(at, rand::random()),
                    _ => data.truncate(at),
                }
            }
            let sig_like = starts_like(&data, V1_PREFIX) || starts_like(&data, V2_SIGNATURE);
            match parse(&data) {
                Err(_) => assert!(sig_like),
                Ok(Parsed::NotProxy) => assert!(!sig_like),
                Ok(Parsed::Incomplete) => assert!(data.len() < MAX_V2),
                Ok(Parsed::Header { len, source }) => {
                    assert!(len <= data.len() && len <= MAX_V2);
                    assert_eq!(parse(&data[..len]), Ok(Parsed::Header { len, source }));
                    for cut in 0..len {
                        assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "{data:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn v2_headers() {
        let mut body = vec![192, 0, 2, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        // A TLV (type 0x04, NOOP) after the addresses is skipped.
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&[h.as_slice(), b"rest"].concat()),
            Ok(Parsed::Header {
                len: h.len(),
                source: Some("192.0.2.9:8080".parse().unwrap())
            })
        );
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
        let mut body6 = vec![0u8; 36];
        body6[0] = 0x20;
        body6[1] = 0x01;
        body6[15] = 7;
        body6[32] = 0x30;
        body6[33] = 0x39;
        assert_eq!(
            parse(&v2(1, 0x21, &body6)),
            Ok(Parsed::Header {
                len: 52,
                source: Some("[2001::7]:12345".parse().unwrap())
            })
        );
        // LOCAL: no address, whatever follows.
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Ok(Parsed::Header {
                len: 16,
                source: None
            })
        );
        assert!(parse(&v2(2, 0x11, &body)).is_err());
        assert!(parse(&v2(1, 0x11, &body[..8])).is_err());
        assert!(parse(&v2(1, 0x41, &body)).is_err());
        let mut bad_version = v2(1, 0x11, &body);
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&huge).is_err());
    }
}
