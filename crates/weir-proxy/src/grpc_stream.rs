//! Bidirectional gRPC streams straight on an `h2` connection: the ext_proc client of
//! endpoint pickers and ExtensionPolicy processors (`inference::Stream`).
//!
//! Why not tonic's `Channel`: a `Channel` is a tower `Buffer` over hyper's HTTP/2 client, so
//! opening a stream hops from the request's task to the buffer's worker task, and every
//! message the request sends goes through an mpsc channel to hyper's body-pipe task before
//! the h2 connection task writes it: three tasks per message on the proxy's one worker, for
//! an exchange whose whole cost should be the processor's round trip
//! (bench/results/2026-12-07-inference-row.md). Here the request's task opens the stream,
//! frames its messages (gRPC's 5-byte prefix + protobuf) into the h2 stream's send buffer
//! and reads the answers from the h2 receive stream itself; only the connection task (one
//! per processor address, shared by every request) sits between it and the socket.
//!
//! One [`GrpcConn`] per address: connected on first use (connect timeout, TCP_NODELAY), its
//! `SendRequest` handle cloned for every stream; when the connection is gone (the server
//! closed it, GOAWAY, a reset socket) the next stream drops it and connects again, once per
//! stream. Concurrent requests connecting at once wait on one connect.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};

use crate::outbound::connect_tcp;

/// The largest message accepted from a server (tonic's default decoding limit).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// One HTTP/2 connection (made on demand, remade when gone) to a gRPC server.
pub(crate) struct GrpcConn {
    addr: SocketAddr,
    uri: Uri,
    connect_timeout: Duration,
    /// The live connection's handle and its generation (so a stream that saw it fail
    /// forgets that one, not a newer one).
    current: Mutex<Option<(u64, SendRequest<Bytes>)>>,
    /// Held while connecting: one connect at a time per address.
    connecting: tokio::sync::Mutex<u64>,
}

impl GrpcConn {
    /// A connection to `addr` for the method `path` (`/package.Service/Method`).
    pub(crate) fn new(
        addr: SocketAddr,
        path: &str,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let uri = format!("http://{addr}{path}")
            .parse::<Uri>()
            .map_err(|e| format!("gRPC address {addr}: {e}"))?;
        Ok(Self {
            addr,
            uri,
            connect_timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
        })
    }

    fn cached(&self) -> Option<(u64, SendRequest<Bytes>)> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// The live connection's handle, connecting when there is none.
    async fn sender(&self) -> Result<(u64, SendRequest<Bytes>, bool), String> {
        if let Some((g, s)) = self.cached() {
            return Ok((g, s, true));
        }
        let mut generation = self.connecting.lock().await;
        // Someone else may have connected while this one waited.
        if let Some((g, s)) = self.cached() {
            return Ok((g, s, true));
        }
        let addr = self.addr;
        let tcp = connect_tcp(addr, self.connect_timeout)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let (sender, connection) =
            tokio::time::timeout(self.connect_timeout, h2::client::handshake(tcp))
                .await
                .map_err(|_| {
                    format!(
                        "HTTP/2 handshake with {addr}: no answer within {:?}",
                        self.connect_timeout
                    )
                })?
                .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%addr, error = %err, "gRPC connection ended with an error");
            }
        });
        *generation += 1;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((*generation, sender.clone()));
        Ok((*generation, sender, false))
    }

    /// Opens a stream: the request's HEADERS go out now, its messages with [`Stream::send`].
    pub(crate) async fn open(&self, timeout: Duration) -> Result<Stream, String> {
        let mut last = String::new();
        // A cached connection may be gone: then once more on a new one.
        for _ in 0..2 {
            let (generation, sender, was_cached) = self.sender().await?;
            let result = match sender.ready().await {
                Ok(mut ready) => ready.send_request(self.request(), false),
                Err(e) => Err(e),
            };
            match result {
                Ok((response, send)) => {
                    return Ok(Stream {
                        send,
                        response: Some(response),
                        recv: None,
                        buf: BytesMut::new(),
                        timeout,
                        closed: false,
                    })
                }
                Err(e) => {
                    self.forget(generation);
                    last = format!("stream: {e}");
                    if !was_cached {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn request(&self) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        req
    }
}

/// One open gRPC stream: messages out, messages in. Dropping it half-closes the sending
/// side (as a finished request stream does) and cancels the receiving side.
pub(crate) struct Stream {
    send: SendStream<Bytes>,
    response: Option<ResponseFuture>,
    recv: Option<RecvStream>,
    buf: BytesMut,
    timeout: Duration,
    closed: bool,
}

/// `m` framed as one gRPC message onto `out`.
pub(crate) fn frame(m: &impl prost::Message, out: &mut BytesMut) {
    let len = m.encoded_len();
    out.reserve(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Cannot fail: the space was reserved above.
    let _ = m.encode(out);
}

impl Stream {
    /// Sends these messages (already framed) now, in one DATA frame; never waits (the h2
    /// stream buffers what the flow-control window does not take yet).
    pub(crate) fn send_framed(&mut self, framed: Bytes) -> Result<(), String> {
        self.send
            .send_data(framed, false)
            .map_err(|e| format!("send: {e}"))
    }

    /// Sends one message.
    pub(crate) fn send(&mut self, m: &impl prost::Message) -> Result<(), String> {
        let mut out = BytesMut::new();
        frame(m, &mut out);
        self.send_framed(out.freeze())
    }

    /// The next message, within the stream's timeout; a stream the server ended (or failed)
    /// is an error.
    pub(crate) async fn next<M: prost::Message + Default>(&mut self) -> Result<M, String> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.read())
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    async fn read<M: prost::Message + Default>(&mut self) -> Result<M, String> {
        loop {
            if let Some(m) = take_from(&mut self.buf)? {
                return Ok(m);
            }
            if self.recv.is_none() {
                let Some(response) = self.response.take() else {
                    return Err("the server closed the stream".into());
                };
                let response = response.await.map_err(|e| format!("stream: {e}"))?;
                if response.status() != http::StatusCode::OK {
                    return Err(format!("stream: HTTP status {}", response.status()));
                }
                // A trailers-only answer: the status is in the headers.
                status(response.headers())?;
                self.recv = Some(response.into_body());
            }
            let Some(recv) = self.recv.as_mut() else {
                return Err("the server closed the stream".into());
            };
            match recv.data().await {
                Some(Ok(chunk)) => {
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(format!("stream: {e}")),
                None => {
                    let trailers = recv.trailers().await.map_err(|e| format!("stream: {e}"))?;
                    self.recv = None;
                    if let Some(t) = &trailers {
                        status(t)?;
                    }
                    return Err("the server closed the stream".into());
                }
            }
        }
    }
}

/// A whole message from the buffer, if one is there.
fn take_from<M: prost::Message + Default>(buf: &mut BytesMut) -> Result<Option<M>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let compressed = buf[0];
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&buf[1..5]);
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
    if compressed != 0 {
        return Err("stream: a compressed message (none was asked for)".into());
    }
    if len > MAX_MESSAGE {
        return Err(format!(
            "stream: a message of {len} bytes (limit {MAX_MESSAGE})"
        ));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    let body = buf.split_to(len);
    M::decode(body.freeze())
        .map(Some)
        .map_err(|e| format!("stream: undecodable message: {e}"))
}

/// `grpc-status` (and `grpc-message`) of headers or trailers: 0 or absent is fine.
fn status(headers: &HeaderMap) -> Result<(), String> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    if code.as_bytes() == b"0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .unwrap_or_default();
    Err(format!(
        "stream: status {}: {message}",
        String::from_utf8_lossy(code.as_bytes())
    ))
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let m = ProcessingResponse {
            mode_override: None,
            ..Default::default()
        };
        let mut out = BytesMut::new();
        frame(&m, &mut out);
        assert_eq!(&out[..5], &[0, 0, 0, 0, 0]);
        let mut header = BytesMut::new();
        header.put_u8(0);
        header.put_u32(u32::try_from(MAX_MESSAGE + 1).unwrap_or(u32::MAX));
        let mut too_big = header.clone();
        too_big.extend_from_slice(&[0; 8]);
        let mut compressed = BytesMut::new();
        compressed.put_u8(1);
        compressed.put_u32(0);
        for (mut buf, ok) in [(out, true), (too_big, false), (compressed, false)] {
            assert_eq!(take_from::<ProcessingResponse>(&mut buf).is_ok(), ok);
        }
        let mut partial = BytesMut::from(&[0u8, 0, 0, 0, 9, 1][..]);
        assert!(matches!(
            take_from::<ProcessingResponse>(&mut partial),
            Ok(None)
        ));
    }
}
