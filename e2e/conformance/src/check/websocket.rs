//! httproute-backend-protocol-websocket.go: a WebSocket client (RFC 6455, the few parts the
//! test needs) that dials `ws://<gateway>/ws`, checks the 101 and Sec-WebSocket-Accept, then
//! sends a text and a binary message and expects each echoed back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{target, Env, REQUEST_TIMEOUT, STEP_TIMEOUT};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;

/// `AwaitConvergence`: three dial-and-echo rounds in a row succeed within the step timeout.
pub(super) async fn websocket(env: &Env<'_>, gateway: &str, path: &str) -> Result<(), String> {
    let (port, ip, addr) = target(env, gateway, None, false).await?;
    let host = super::default_host(ip, port, false);
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut successes = 0;
    loop {
        let round = tokio::time::timeout(REQUEST_TIMEOUT, echo_round(addr, &host, path)).await;
        match round.unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}"))) {
            Ok(()) => {
                successes += 1;
                if successes >= 3 {
                    return Ok(());
                }
                continue;
            }
            Err(e) if Instant::now() >= deadline => return Err(format!("ws://{host}{path}: {e}")),
            Err(_) => successes = 0,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn echo_round(addr: SocketAddr, host: &str, path: &str) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("failed to dial: {e}"))?;
    let key = base64::engine::general_purpose::STANDARD.encode(rand_bytes());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: ws://gateway/{path}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let head = read_head(&mut tcp).await?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(format!("failed to dial: handshake answered {status:?}"));
    }
    let want = accept_key(&key);
    let accept = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim().to_string());
    if accept.as_deref() != Some(want.as_str()) {
        return Err(format!("Sec-WebSocket-Accept {accept:?}, want {want:?}"));
    }
    let text = b"Websocket Support!";
    exchange(&mut tcp, TEXT, text).await?;
    exchange(&mut tcp, BINARY, &[1, 2, 3, 4, 5, 6, 7]).await
}

/// Send one masked message and expect the same message back.
async fn exchange(tcp: &mut TcpStream, opcode: u8, payload: &[u8]) -> Result<(), String> {
    let mask: [u8; 4] = rand_bytes()[..4].try_into().unwrap_or([1, 2, 3, 4]);
    let mut frame = vec![0x80 | opcode];
    // The messages here are short (< 126 bytes).
    frame.push(0x80 | u8::try_from(payload.len()).map_err(|e| e.to_string())?);
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame)
        .await
        .map_err(|e| format!("failed to send: {e}"))?;
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head)
        .await
        .map_err(|e| format!("failed to receive: {e}"))?;
    let len = match head[1] & 0x7F {
        126 => usize::from(tcp.read_u16().await.map_err(|e| e.to_string())?),
        127 => return Err("unexpectedly long reply".into()),
        n => usize::from(n),
    };
    if head[1] & 0x80 != 0 {
        return Err("the server masked its frame".into());
    }
    let mut reply = vec![0u8; len];
    tcp.read_exact(&mut reply)
        .await
        .map_err(|e| format!("failed to receive: {e}"))?;
    if head[0] & 0x0F != opcode || reply != payload {
        return Err(format!(
            "unexpected reply - want: opcode {opcode} {payload:?} got: opcode {} {reply:?}",
            head[0] & 0x0F
        ));
    }
    Ok(())
}

async fn read_head(tcp: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return Err("handshake answer too long".into());
        }
        let n = tcp.read(&mut byte).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed during the handshake".into());
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

fn rand_bytes() -> [u8; 16] {
    let mut out = [0u8; 16];
    // A fresh key per handshake; its quality does not matter for the test.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
