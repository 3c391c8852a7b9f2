//! A minimal gRPC client for the conformance echo service
//! (`gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`): one unary call per new HTTP/2
//! connection (h2c with prior knowledge, or TLS with SNI and ALPN h2), the status read as a
//! gRPC client reads it (`grpc-status` from trailers or a trailers-only answer; otherwise the
//! HTTP status mapped the way grpc-go maps it, so a plain 404 is UNIMPLEMENTED), and the
//! `EchoResponse` decoded from the protobuf wire format by hand.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// gRPC status codes by name (the `codes` package's spelling).
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "?",
    }
}

/// The code for a name as [`code_name`] spells it.
pub fn code_by_name(name: &str) -> Option<u32> {
    (0..=16).find(|&c| code_name(c) == name)
}

/// One unary call to the echo service.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `Echo`, `EchoTwo` or `EchoThree`.
    pub method: &'a str,
    /// The `:authority` to send.
    pub authority: &'a str,
    /// Outgoing metadata (header names are sent lowercased, as gRPC does).
    pub metadata: Vec<(&'a str, &'a str)>,
}

impl Call<'_> {
    pub fn path(&self) -> String {
        format!("/{SERVICE}/{}", self.method)
    }

    fn build(&self, scheme: &str) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder()
            .method("POST")
            .version(http::Version::HTTP_2)
            .uri(format!("{scheme}://{}{}", self.authority, self.path()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "weir-testkit-grpc");
        for (n, v) in &self.metadata {
            builder = builder.header(n.to_ascii_lowercase(), *v);
        }
        // An empty EchoRequest: not compressed, length 0.
        builder
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .map_err(|e| e.to_string())
    }
}

/// What a call returned.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub code: u32,
    pub message: String,
    pub http_status: u16,
    /// The decoded answer when the code is OK.
    pub response: Option<EchoResponse>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoResponse {
    pub fully_qualified_method: String,
    pub headers: Vec<(String, String)>,
    pub authority: String,
    pub namespace: String,
    pub ingress: String,
    pub service_name: String,
    pub pod: String,
    pub tls: Option<TlsAssertions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsAssertions {
    pub version: String,
    pub negotiated_protocol: String,
    pub server_name: String,
    pub cipher_suite: String,
}

impl EchoResponse {
    /// The values of header `name` (lowercase) the backend saw.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A unary call over h2c (HTTP/2 with prior knowledge).
pub async fn h2c(addr: SocketAddr, call: &Call<'_>) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    send(stream, call.build("http")?).await
}

/// A unary call over TLS: SNI `server_name`, trusting only `ca_pem`, ALPN h2 only.
pub async fn h2(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    call: &Call<'_>,
) -> Result<Reply, String> {
    let (tls, alpn) = crate::client::tls_connect(addr, server_name, ca_pem, &[b"h2"]).await?;
    if alpn.as_deref() != Some(b"h2") {
        return Err(format!("the server did not negotiate h2 (ALPN {alpn:?})"));
    }
    send(tls, call.build("https")?).await
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<Reply, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending the call: {e}"))?;
    let (parts, body) = resp.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    let mut reply = status_of(parts.status, &parts.headers, trailers.as_ref());
    if reply.code == 0 {
        let message = unframe(&data)?;
        reply.response = Some(decode_echo_response(message)?);
    }
    Ok(reply)
}

/// The call's status as grpc-go reports it.
fn status_of(status: StatusCode, headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Reply {
    let is_grpc = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let http_status = status.as_u16();
    if status != StatusCode::OK || !is_grpc {
        // Not a gRPC answer: grpc-go's HTTP status conversion table.
        let code = match http_status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502 | 503 | 504 => 14,
            _ => 2,
        };
        return Reply {
            code,
            message: format!("HTTP status {http_status} (not a gRPC answer)"),
            http_status,
            response: None,
        };
    }
    let source = trailers
        .filter(|t| t.contains_key("grpc-status"))
        .unwrap_or(headers);
    let code = source
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match code {
        Some(code) => Reply {
            code,
            message: source
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            http_status,
            response: None,
        },
        None => Reply {
            code: 13,
            message: "no grpc-status in the answer".into(),
            http_status,
            response: None,
        },
    }
}

/// The one message of a unary answer, without its 5-byte frame header.
fn unframe(data: &[u8]) -> Result<&[u8], String> {
    if data.len() < 5 {
        return Err(format!("answer too short for a gRPC frame: {data:?}"));
    }
    if data[0] != 0 {
        return Err("compressed answers are not supported".into());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.get(5..5 + len)
        .ok_or_else(|| format!("frame says {len} bytes, {} follow", data.len() - 5))
}

/// Length-delimited fields of one message, as (field number, bytes); other wire types are
/// skipped.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    fn varint(buf: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf)?;
        let skip = match tag & 7 {
            0 => {
                varint(&mut buf)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|e| e.to_string())?;
                let value = buf.get(..len).ok_or("truncated field")?;
                out.push((tag >> 3, value));
                len
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        buf = buf.get(skip..).ok_or("truncated field")?;
    }
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decode an `EchoResponse` (grpcecho.proto).
pub fn decode_echo_response(buf: &[u8]) -> Result<EchoResponse, String> {
    let mut out = EchoResponse::default();
    for (field, assertions) in fields(buf)? {
        if field != 1 {
            continue;
        }
        for (f, v) in fields(assertions)? {
            match f {
                1 => out.fully_qualified_method = text(v),
                2 => {
                    let mut kv = (String::new(), String::new());
                    for (hf, hv) in fields(v)? {
                        match hf {
                            1 => kv.0 = text(hv),
                            2 => kv.1 = text(hv),
                            _ => {}
                        }
                    }
                    out.headers.push(kv);
                }
                3 => out.authority = text(v),
                4 => {
                    for (cf, cv) in fields(v)? {
                        match cf {
                            1 => out.namespace = text(cv),
                            2 => out.ingress = text(cv),
                            3 => out.service_name = text(cv),
                            4 => out.pod = text(cv),
                            _ => {}
                        }
                    }
                }
                5 => {
                    let mut tls = TlsAssertions::default();
                    for (tf, tv) in fields(v)? {
                        match tf {
                            1 => tls.version = text(tv),
                            2 => tls.negotiated_protocol = text(tv),
                            3 => tls.server_name = text(tv),
                            4 => tls.cipher_suite = text(tv),
                            _ => {}
                        }
                    }
                    out.tls = Some(tls);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field `f` holding `bytes`, length-delimited.
    fn ld(f: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![f << 3 | 2, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_an_echo_response() {
        let header = [ld(1, b"version"), ld(2, b"one")].concat();
        let context = [ld(1, b"ns"), ld(4, b"pod-a")].concat();
        let assertions = [
            ld(1, b"/x.Y/Echo"),
            ld(2, &header),
            // A varint field (wire type 0) is skipped.
            vec![6 << 3, 0x96, 0x01],
            ld(3, b"host.example"),
            ld(4, &context),
        ]
        .concat();
        let msg = [ld(1, &assertions), ld(2, &[])].concat();
        let r = decode_echo_response(&msg).unwrap();
        assert_eq!(r.fully_qualified_method, "/x.Y/Echo");
        assert_eq!(r.header("Version"), vec!["one"]);
        assert_eq!(r.authority, "host.example");
        assert_eq!((r.namespace.as_str(), r.pod.as_str()), ("ns", "pod-a"));
        assert_eq!(r.tls, None);
        assert!(decode_echo_response(&[0x0a, 5, 1]).is_err());
    }

    #[test]
    fn statuses_are_read_like_grpc_go() {
        let grpc = |extra: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            h.insert("content-type", "application/grpc".parse().unwrap());
            for (k, v) in extra {
                h.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        // Trailers-only.
        let r = status_of(StatusCode::OK, &grpc(&[("grpc-status", "12")]), None);
        assert_eq!(r.code, 12);
        // Trailers after data.
        let t = grpc(&[("grpc-status", "0")]);
        assert_eq!(status_of(StatusCode::OK, &grpc(&[]), Some(&t)).code, 0);
        // Plain HTTP answers.
        let plain = HeaderMap::new();
        assert_eq!(status_of(StatusCode::NOT_FOUND, &plain, None).code, 12);
        assert_eq!(
            status_of(StatusCode::SERVICE_UNAVAILABLE, &plain, None).code,
            14
        );
        assert_eq!(
            status_of(StatusCode::INTERNAL_SERVER_ERROR, &plain, None).code,
            2
        );
        assert_eq!(status_of(StatusCode::OK, &plain, None).code, 2);
        // gRPC content type without a status.
        assert_eq!(status_of(StatusCode::OK, &grpc(&[]), None).code, 13);
        assert_eq!(code_by_name("Unimplemented"), Some(12));
        assert_eq!(code_name(0), "OK");
    }
}
