//! UDP modes.
//!
//! - The conformance UDP echo server (`UDP_ECHO_SERVER`, echo-basic `udpechoserver`, on
//!   `UDP_PORT`, default 8080): every datagram is answered, to its sender, with one JSON
//!   object `{"request": <the datagram as text>, "namespace", "ingress", "service", "pod"}`.
//! - A DNS stand-in (`--dns-whoami`) for the suite's coredns backend of the UDPRoute test,
//!   whose Corefile answers `foo.bar.com` with the `whoami` plugin: a query (one question)
//!   gets a response with the same ID and question and, for class IN type A, one A record
//!   with the sender's IPv4 address (as `whoami` reports it); other types get no answer
//!   records; malformed datagrams get nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::echo::Context;

/// echo-basic's `udpechoserver` reads into a 1024-byte buffer: longer datagrams are cut.
const MAX_REQUEST: usize = 1024;

#[derive(Serialize)]
struct EchoResponse<'a> {
    request: &'a str,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
}

/// Which answer the socket gives.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Echo,
    DnsWhoami,
}

pub async fn run(
    socket: UdpSocket,
    mode: Mode,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                let data = buf.get(..n).unwrap_or_default();
                let reply = match mode {
                    Mode::Echo => echo(data, &ctx, from),
                    Mode::DnsWhoami => dns_whoami(data, from.ip()),
                };
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

fn echo(data: &[u8], ctx: &Context, from: SocketAddr) -> Option<Vec<u8>> {
    let data = data.get(..MAX_REQUEST).unwrap_or(data);
    let request = String::from_utf8_lossy(data);
    eprintln!("Received UDP {request} from {from}");
    serde_json::to_vec(&EchoResponse {
        request: &request,
        namespace: &ctx.namespace,
        ingress: &ctx.ingress,
        service: &ctx.service,
        pod: &ctx.pod,
    })
    .ok()
}

/// The DNS response to a one-question query (RFC 1035 §4.1), or `None` if it is not one.
pub fn dns_whoami(query: &[u8], client: IpAddr) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    // A query (QR = 0), standard opcode, one question.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount != 1 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None; // no compression pointers in a question
        }
        i += 1 + len;
    }
    let question = query.get(12..i + 4)?;
    let qtype = u16::from_be_bytes([question[question.len() - 4], question[question.len() - 3]]);
    let qclass = u16::from_be_bytes([question[question.len() - 2], question[question.len() - 1]]);
    let answer = match client {
        IpAddr::V4(v4) if qtype == 1 && qclass == 1 => Some(v4.octets()),
        _ => None,
    };
    let mut out = Vec::with_capacity(question.len() + 28);
    out.extend_from_slice(&header[..2]); // ID
                                         // QR, the query's RD, RA; opcode 0, RCODE 0 (NOERROR).
    let rd = flags & 0x0100;
    out.extend_from_slice(&(0x8000 | 0x0400 | rd | 0x0080).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&u16::from(answer.is_some()).to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    out.extend_from_slice(question);
    if let Some(octets) = answer {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&1u16.to_be_bytes()); // A
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&0u32.to_be_bytes()); // TTL 0, as whoami
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&octets);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig foo.bar.com. A` as miekg/dns `SetQuestion` builds it (ID 0x1234, RD set).
    fn query(qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["foo", "bar", "com"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn an_a_query_gets_the_clients_address() {
        let q = query(1);
        let r = dns_whoami(&q, "10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34], "same ID");
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&r[4..8], &[0, 1, 0, 1], "one question, one answer");
        assert_eq!(&r[12..q.len()], &q[12..], "the question echoed");
        assert_eq!(&r[r.len() - 4..], &[10, 1, 2, 3]);
        // Other types: the question, no answer.
        let r = dns_whoami(&query(28), "10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(&r[4..8], &[0, 1, 0, 0]);
    }

    #[test]
    fn what_is_not_a_query_gets_nothing() {
        let ip = "10.1.2.3".parse().unwrap();
        assert!(dns_whoami(b"gateway-api-conformance-udp-echo", ip).is_none());
        let mut response = query(1);
        response[2] |= 0x80;
        assert!(dns_whoami(&response, ip).is_none());
        let q = query(1);
        assert!(dns_whoami(&q[..q.len() - 1], ip).is_none());
        assert!(dns_whoami(&[], ip).is_none());
    }
}
