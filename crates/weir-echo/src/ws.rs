//! `/ws`: a WebSocket endpoint (RFC 6455) that echoes every message back, as the
//! conformance echo server does. The handshake answers 101 with the Sec-WebSocket-Accept
//! for the client's key; after the switch, text and binary messages (reassembled from
//! fragments) come back unmasked with the same opcode, pings get pongs, a close is
//! answered with a close.

use base64::Engine as _;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http::Body;

/// The GUID RFC 6455 §1.3 appends to the key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Messages above this size end the connection (close code 1009).
const MAX_MESSAGE: usize = 16 << 20;

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// Whether the request asks to switch to WebSocket.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has_token = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(UPGRADE, "websocket") && has_token(CONNECTION, "upgrade")
}

/// Answer the handshake and start echoing on the upgraded connection; a request that is
/// not a valid handshake gets 400.
pub fn handshake<B: Send + 'static>(mut req: Request<B>) -> Response<Body> {
    let bad = |why: &'static str| {
        let mut r = Response::new(Body::new(why));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    if !is_upgrade(&req) {
        return bad("expected a WebSocket upgrade\n");
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return bad("Sec-WebSocket-Version must be 13\n");
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return bad("missing Sec-WebSocket-Key\n");
    };
    let Ok(accept) = HeaderValue::from_str(&accept_key(key.as_bytes())) else {
        return bad("invalid Sec-WebSocket-Key\n");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                if let Err(err) = echo_frames(TokioIo::new(upgraded)).await {
                    eprintln!("weir-echo: websocket: {err}");
                }
            }
            Err(err) => eprintln!("weir-echo: websocket upgrade failed: {err}"),
        }
    });
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// One frame as read: FIN, opcode, unmasked payload.
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Read one frame (unmasking it when masked).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Frame> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0F;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7F {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_MESSAGE)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"))?;
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Frame {
        fin,
        opcode,
        payload,
    })
}

/// Write one final frame; `mask` is the client's masking key (servers send none).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    w.write_all(&out).await?;
    w.flush().await
}

/// Echo messages until the peer closes.
async fn echo_frames<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> std::io::Result<()> {
    let mut message: Option<(u8, Vec<u8>)> = None;
    loop {
        let frame = read_frame(&mut io).await?;
        match frame.opcode {
            TEXT | BINARY => {
                if frame.fin {
                    write_frame(&mut io, frame.opcode, &frame.payload, None).await?;
                } else {
                    message = Some((frame.opcode, frame.payload));
                }
            }
            CONTINUATION => {
                let Some((opcode, mut data)) = message.take() else {
                    return close(&mut io, 1002).await;
                };
                data.extend_from_slice(&frame.payload);
                if data.len() > MAX_MESSAGE {
                    return close(&mut io, 1009).await;
                }
                if frame.fin {
                    write_frame(&mut io, opcode, &data, None).await?;
                } else {
                    message = Some((opcode, data));
                }
            }
            PING => write_frame(&mut io, PONG, &frame.payload, None).await?,
            PONG => {}
            CLOSE => {
                let code = frame.payload.get(..2).unwrap_or(&[0x03, 0xE8]).to_vec();
                write_frame(&mut io, CLOSE, &code, None).await?;
                return Ok(());
            }
            _ => return close(&mut io, 1002).await,
        }
    }
}

async fn close<W: AsyncWrite + Unpin>(w: &mut W, code: u16) -> std::io::Result<()> {
    write_frame(w, CLOSE, &code.to_be_bytes(), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn frames_echo_with_fragments_and_ping() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(echo_frames(server));
        let mask = Some([1, 2, 3, 4]);
        write_frame(&mut client, TEXT, b"hello", mask)
            .await
            .unwrap();
        let f = read_frame(&mut client).await.unwrap();
        assert_eq!((f.opcode, f.payload.as_slice()), (TEXT, &b"hello"[..]));
        // A fragmented binary message: first frame without FIN, then a continuation.
        let big = vec![7u8; 70_000];
        let mut first = vec![BINARY, 0x80 | 3, 9, 9, 9, 9];
        first.extend([1u8, 2, 3].iter().map(|b| b ^ 9));
        client.write_all(&first).await.unwrap();
        write_frame(&mut client, CONTINUATION, &big, mask)
            .await
            .unwrap();
        let f = read_frame(&mut client).await.unwrap();
        assert_eq!(f.opcode, BINARY);
        assert_eq!(&f.payload[..3], &[1, 2, 3]);
        assert_eq!(f.payload.len(), 3 + big.len());
        write_frame(&mut client, PING, b"p", mask).await.unwrap();
        let f = read_frame(&mut client).await.unwrap();
        assert_eq!((f.opcode, f.payload.as_slice()), (PONG, &b"p"[..]));
        write_frame(&mut client, CLOSE, &1000u16.to_be_bytes(), mask)
            .await
            .unwrap();
        let f = read_frame(&mut client).await.unwrap();
        assert_eq!(f.opcode, CLOSE);
        task.await.unwrap().unwrap();
    }
}
