//! The conformance gRPC echo service, `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`
//! (schema: `gateway-api/v1.6.1/echo/grpcecho.proto`): unary `Echo` and `EchoTwo` answer an
//! `EchoResponse` whose assertions hold the request's fully qualified method, headers,
//! `:authority`, the pod context and the TLS details; `EchoThree` and every other method are
//! UNIMPLEMENTED (a trailers-only answer).
//!
//! The messages are small, so the protobuf wire format is written by hand here: each field
//! is a length-delimited record (tag `field << 3 | 2`, varint length, bytes); empty strings
//! and empty messages are left out, as proto3 does.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::body::Body;
use crate::echo::{request_host, Context};
use crate::http::ConnInfo;
use crate::tls::TlsInfo;

pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// gRPC status codes used here.
const OK: u16 = 0;
const UNIMPLEMENTED: u16 = 12;

/// Whether a request is a gRPC call (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// Answer one gRPC call. The request message (an empty `EchoRequest`) is not read.
pub fn handle<B>(req: &Request<B>, ctx: &Context, conn: &ConnInfo) -> Response<Body> {
    let path = req.uri().path();
    let method = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, _)| *service == SERVICE)
        .map(|(_, method)| method);
    match method {
        Some("Echo" | "EchoTwo") => {
            let message = echo_response(req, ctx, conn.tls.as_ref());
            let mut framed = Vec::with_capacity(5 + message.len());
            framed.push(0); // not compressed
            framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
            framed.extend_from_slice(&message);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(OK));
            response(Body::with_trailers(Bytes::from(framed), trailers))
        }
        _ => {
            // Trailers-only: the status rides on the only HEADERS frame.
            let mut resp = response(Body::default());
            let headers = resp.headers_mut();
            headers.insert("grpc-status", HeaderValue::from(UNIMPLEMENTED));
            if let Ok(message) = HeaderValue::from_str(&format!("unknown method {path}")) {
                headers.insert("grpc-message", message);
            }
            resp
        }
    }
}

fn response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

/// The encoded `EchoResponse { assertions: Assertions { … }, request: EchoRequest {} }`.
pub fn echo_response<B>(req: &Request<B>, ctx: &Context, tls: Option<&TlsInfo>) -> Vec<u8> {
    let mut assertions = Vec::new();
    put_str(&mut assertions, 1, req.uri().path());
    for (name, value) in req.headers() {
        let mut header = Vec::new();
        put_str(&mut header, 1, name.as_str());
        put_str(&mut header, 2, &String::from_utf8_lossy(value.as_bytes()));
        put_bytes(&mut assertions, 2, &header);
    }
    put_str(&mut assertions, 3, &request_host(req));
    let mut context = Vec::new();
    put_str(&mut context, 1, &ctx.namespace);
    put_str(&mut context, 2, &ctx.ingress);
    put_str(&mut context, 3, &ctx.service);
    put_str(&mut context, 4, &ctx.pod);
    put_bytes(&mut assertions, 4, &context);
    if let Some(tls) = tls {
        let mut t = Vec::new();
        put_str(&mut t, 1, &tls.version);
        put_str(&mut t, 2, &tls.negotiated_protocol);
        put_str(&mut t, 3, &tls.server_name);
        put_str(&mut t, 4, &tls.cipher_suite);
        for cert in &tls.peer_certificates {
            put_field(&mut t, 5, cert.as_bytes());
        }
        put_bytes(&mut assertions, 5, &t);
    }
    let mut out = Vec::new();
    put_bytes(&mut out, 1, &assertions);
    // `request`: the (empty) EchoRequest, present as an empty message.
    put_field(&mut out, 2, &[]);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field, written even when empty.
fn put_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A string or message field; proto3 leaves empty ones out.
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_field(out, field, bytes);
    }
}

fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    put_bytes(out, field, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ListenerKind;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;

    fn ctx() -> Context {
        Context {
            namespace: "ns".into(),
            pod: "pod-1".into(),
            grpc: true,
            ..Context::default()
        }
    }

    fn conn() -> ConnInfo {
        ConnInfo {
            kind: ListenerKind::Http,
            port: "3000".into(),
            remote: SocketAddr::from(([127, 0, 0, 1], 5555)),
            tls: None,
        }
    }

    fn call(method: &str) -> Request<()> {
        Request::builder()
            .method("POST")
            .uri(format!("http://grpc.example/{method}"))
            .header("content-type", "application/grpc")
            .header("x-md", "v")
            .body(())
            .unwrap()
    }

    #[test]
    fn grpc_calls_are_recognised_by_content_type() {
        assert!(is_grpc(&call("a/b")));
        let mut req = call("a/b");
        req.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&req));
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpcx"));
        assert!(!is_grpc(&req));
        req.headers_mut().remove(CONTENT_TYPE);
        assert!(!is_grpc(&req));
    }

    #[test]
    fn the_echo_response_encodes_the_assertions() {
        let req = call(&format!("{SERVICE}/Echo"));
        let bytes = echo_response(&req, &ctx(), None);
        let method = format!("/{SERVICE}/Echo");
        // Hand-assembled expectation of the wire format.
        let mut assertions = vec![0x0a, method.len() as u8];
        assertions.extend_from_slice(method.as_bytes());
        for (k, v) in [("content-type", "application/grpc"), ("x-md", "v")] {
            let header_len = 2 + k.len() + 2 + v.len();
            assertions.extend_from_slice(&[0x12, header_len as u8, 0x0a, k.len() as u8]);
            assertions.extend_from_slice(k.as_bytes());
            assertions.extend_from_slice(&[0x12, v.len() as u8]);
            assertions.extend_from_slice(v.as_bytes());
        }
        assertions.extend_from_slice(&[0x1a, 12]);
        assertions.extend_from_slice(b"grpc.example");
        assertions.extend_from_slice(&[0x22, 11, 0x0a, 2, b'n', b's', 0x22, 5]);
        assertions.extend_from_slice(b"pod-1");
        // Longer than 127 bytes: a two-byte varint length.
        let len = assertions.len();
        assert!((128..16384).contains(&len), "{len}");
        let mut want = vec![0x0a, 0x80 | (len & 0x7f) as u8, (len >> 7) as u8];
        want.extend_from_slice(&assertions);
        want.extend_from_slice(&[0x12, 0]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn varints_use_seven_bits_per_byte() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[tokio::test]
    async fn echo_answers_with_a_framed_message_and_ok_trailers() {
        for method in ["Echo", "EchoTwo"] {
            let resp = handle(&call(&format!("{SERVICE}/{method}")), &ctx(), &conn());
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
            let body = collected.to_bytes();
            assert_eq!(body[0], 0);
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            assert_eq!(len, body.len() - 5);
            let method_path = format!("/{SERVICE}/{method}");
            assert!(body
                .windows(method_path.len())
                .any(|w| w == method_path.as_bytes()));
        }
    }

    #[tokio::test]
    async fn echo_three_and_unknown_methods_are_unimplemented_trailers_only() {
        for method in [
            format!("{SERVICE}/EchoThree"),
            "other.Service/Echo".into(),
            "x".into(),
        ] {
            let resp = handle(&call(&method), &ctx(), &conn());
            assert_eq!(resp.status(), StatusCode::OK, "{method}");
            assert_eq!(resp.headers()["grpc-status"], "12", "{method}");
            assert!(hyper::body::Body::is_end_stream(resp.body()), "{method}");
        }
    }
}
