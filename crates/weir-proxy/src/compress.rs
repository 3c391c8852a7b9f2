//! Response compression (BackendTrafficPolicy `compression`): gzip, brotli or zstd,
//! negotiated from the client's `Accept-Encoding`, streamed frame by frame.
//!
//! - Request side ([`negotiate`], phase 2): which of the policy's codings the client takes
//!   best (q-values; `q=0` refuses; `*` stands for the codings not named; an `identity`
//!   with a higher q than every coding we have means "rather not"; a tie goes to the
//!   earlier coding in the policy's list). Nothing for HEAD or an upgrade.
//! - Response side ([`response`], phase 7): nothing for 1xx, 204, 206 and 304, a response
//!   with a `Content-Encoding` (other than `identity`) or a `Content-Range`, a content type
//!   the coding does not take (`contentTypes`, else the default list in
//!   [`weir_snapshot::compression`]), `Cache-Control: no-transform`. A response of a
//!   compressible type gets `Vary: Accept-Encoding` (merged into its `Vary`) whether or not
//!   this client accepted a coding, so a cache in front keeps the two apart. It is
//!   compressed when a coding was accepted and its `Content-Length` (when it has one) is at
//!   least `minContentLength`: `Content-Length` and `Accept-Ranges` go, `Content-Encoding`
//!   is set, a strong `ETag` becomes weak (`W/`: the bytes differ from the identity ones).
//! - The body ([`Compressed`]) streams: each upstream frame goes through the encoder, and
//!   whenever the upstream has nothing more ready (its body is pending) the encoder is
//!   flushed (a sync flush) and what it produced is sent, so server-sent events and other
//!   slow streams arrive as they are written; frames that arrive together are compressed
//!   together. Nothing is buffered beyond the encoder's window and one output chunk.
//!   Trailers pass after the compressed data.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use prometheus::{opts, IntCounterVec, Registry};
use tokio::io::AsyncWrite;
use weir_snapshot::{Coding, Compression, Compressor};

use crate::body::{BoxError, ProxyBody};

/// What the request phase found: the index (in the policy's list) of the coding the client
/// accepts best, if any. Only routes with `compression` have one, and only for requests
/// whose response may be compressed (not HEAD, not an upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted(pub(crate) Option<u8>);

/// `weir_compressed_responses_total{encoding}`: responses Weir compressed.
pub(crate) struct CompressMetrics {
    compressed: IntCounterVec,
}

impl CompressMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let compressed = IntCounterVec::new(
            opts!(
                "weir_compressed_responses_total",
                "Responses Weir compressed (BackendTrafficPolicy compression), by coding."
            ),
            &["encoding"],
        )?;
        registry.register(Box::new(compressed.clone()))?;
        Ok(Self { compressed })
    }
}

/// A qvalue in thousandths (RFC 9110 §12.4.2); `None` when malformed.
fn qvalue(s: &str) -> Option<u16> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        let place = [100, 10, 1][i];
        thousandths += u16::from(b - b'0') * place;
    }
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
}

/// Phase 2: the coding of `compression` the request's `Accept-Encoding` takes best (its
/// index), or `None` (no header, nothing acceptable, or `identity` preferred).
pub(crate) fn negotiate(compression: &Compression, headers: &HeaderMap) -> Accepted {
    let list = &compression.compressors;
    // Per compressor: the q of its token, if named; then `*` and `identity`.
    let mut named = [None::<u16>; 3];
    let (mut star, mut identity) = (None::<u16>, None::<u16>);
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or_default().trim();
            if token.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                if let Some((name, v)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = qvalue(v);
                    }
                }
            }
            let Some(q) = q else { continue };
            let slot = if token == "*" {
                &mut star
            } else if token.eq_ignore_ascii_case("identity") {
                &mut identity
            } else if let Some(i) = list.iter().position(|c| {
                token.eq_ignore_ascii_case(c.coding.token())
                    || (c.coding == Coding::Gzip && token.eq_ignore_ascii_case("x-gzip"))
            }) {
                match named.get_mut(i) {
                    Some(slot) => slot,
                    None => continue,
                }
            } else {
                continue;
            };
            // A token named twice: the higher q (lenient).
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    let mut best: Option<(u8, u16)> = None;
    for (i, _) in list.iter().enumerate().take(named.len()) {
        let q = named[i].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = u8::try_from(i).ok().map(|i| (i, q));
        }
    }
    match (best, identity) {
        (Some((_, q)), Some(id)) if id > q => Accepted(None),
        (best, _) => Accepted(best.map(|(i, _)| i)),
    }
}

/// Whether a header list (`Cache-Control`, `Vary`) has `token` (any case).
fn has_token(headers: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                let t = t.split_once('=').map_or(t, |(k, _)| k.trim());
                t.eq_ignore_ascii_case(token)
            })
        })
    })
}

/// Merge `Accept-Encoding` into `Vary` (nothing when it is there, or `*`).
fn add_vary(headers: &mut HeaderMap) {
    if has_token(headers, VARY, "accept-encoding") || has_token(headers, VARY, "*") {
        return;
    }
    let existing: Vec<&str> = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let merged = if existing.is_empty() {
        HeaderValue::from_static("Accept-Encoding")
    } else {
        match HeaderValue::from_str(&format!("{}, Accept-Encoding", existing.join(", "))) {
            Ok(v) => v,
            Err(_) => return,
        }
    };
    headers.insert(VARY, merged);
}

/// Phase 7: compress the response when the policy and the response allow it (see the
/// module's comment); otherwise it passes as it is.
pub(crate) fn response(
    metrics: &CompressMetrics,
    compression: &Compression,
    accepted: Accepted,
    mut response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let status = response.status();
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return response;
    }
    let headers = response.headers();
    let encoded = headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded || headers.contains_key(CONTENT_RANGE) {
        return response;
    }
    let chosen: Option<&Compressor> = accepted
        .0
        .and_then(|i| compression.compressors.get(usize::from(i)));
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let compressible = match chosen {
        Some(c) => c.compresses(content_type),
        None => compression
            .compressors
            .iter()
            .any(|c| c.compresses(content_type)),
    };
    if !compressible || has_token(headers, CACHE_CONTROL, "no-transform") {
        return response;
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    add_vary(response.headers_mut());
    let Some(chosen) = chosen else {
        return response;
    };
    if length.is_some_and(|n| n < chosen.min_content_length) || response.body().is_end_stream() {
        return response;
    }
    let headers = response.headers_mut();
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    headers.insert(
        CONTENT_ENCODING,
        HeaderValue::from_static(chosen.coding.token()),
    );
    if let Some(etag) = headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                headers.insert(ETAG, weak);
            }
        }
    }
    metrics
        .compressed
        .with_label_values(&[chosen.coding.token()])
        .inc();
    let encoder = Encoder::new(chosen);
    response.map(|inner| {
        Compressed {
            inner,
            encoder,
            unflushed: false,
            done: false,
            trailers: None,
        }
        .boxed_unsync()
    })
}

/// An encoder writing into its own buffer (taken after each write or flush). Each is boxed:
/// brotli's state is 5 KiB, gzip's 150 bytes.
enum Encoder {
    Gzip(Box<GzipEncoder<Vec<u8>>>),
    Brotli(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(Box<ZstdEncoder<Vec<u8>>>),
}

impl Encoder {
    fn new(c: &Compressor) -> Self {
        // Envoy's defaults: zlib's 6, brotli 3, zstd 3.
        let level = |default: u32| {
            Level::Precise(i32::try_from(c.level.unwrap_or(default)).unwrap_or(i32::MAX))
        };
        match c.coding {
            Coding::Gzip => {
                Encoder::Gzip(Box::new(GzipEncoder::with_quality(Vec::new(), level(6))))
            }
            Coding::Brotli => {
                Encoder::Brotli(Box::new(BrotliEncoder::with_quality(Vec::new(), level(3))))
            }
            Coding::Zstd => {
                Encoder::Zstd(Box::new(ZstdEncoder::with_quality(Vec::new(), level(3))))
            }
        }
    }

    fn writer(&mut self) -> Pin<&mut (dyn AsyncWrite + Send + Unpin)> {
        let w: &mut (dyn AsyncWrite + Send + Unpin) = match self {
            Encoder::Gzip(e) => &mut **e,
            Encoder::Brotli(e) => &mut **e,
            Encoder::Zstd(e) => &mut **e,
        };
        Pin::new(w)
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    /// Everything produced so far, as one frame's bytes.
    fn take(&mut self) -> Option<Bytes> {
        let out = self.output();
        (!out.is_empty()).then(|| Bytes::from(std::mem::take(out)))
    }

    // Writes go into a `Vec`, which is always ready: the encoder never waits. A `Pending`
    // would be a bug in it; it fails the body rather than hang it.
    fn write(&mut self, cx: &mut Context<'_>, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.writer().poll_write(cx, data) {
                Poll::Ready(Ok(0)) => return Err(io::Error::other("compressor took no bytes")),
                Poll::Ready(Ok(n)) => data = data.get(n..).unwrap_or_default(),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Err(io::Error::other("compressor stalled")),
            }
        }
        Ok(())
    }

    fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.writer().poll_flush(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::Error::other("compressor stalled")),
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.writer().poll_shutdown(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::Error::other("compressor stalled")),
        }
    }
}

/// Send what the encoder has once this much has piled up, even while the upstream has more
/// ready (so a fast upstream does not grow one frame without bound).
const OUT_CHUNK: usize = 16 * 1024;

/// A response body, compressed as it streams.
pub(crate) struct Compressed {
    inner: ProxyBody,
    encoder: Encoder,
    /// Data went into the encoder since its last flush.
    unflushed: bool,
    /// The encoder has finished (the upstream body ended).
    done: bool,
    trailers: Option<HeaderMap>,
}

fn boxed(e: io::Error) -> BoxError {
    Box::new(e)
}

impl Body for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if !data.is_empty() {
                            this.encoder.write(cx, &data).map_err(boxed)?;
                            this.unflushed = true;
                        }
                        if this.encoder.output().len() >= OUT_CHUNK {
                            if let Some(out) = this.encoder.take() {
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                        this.encoder.finish(cx).map_err(boxed)?;
                        this.done = true;
                        if let Some(out) = this.encoder.take() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.encoder.finish(cx).map_err(boxed)?;
                    this.done = true;
                    if let Some(out) = this.encoder.take() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Pending => {
                    // The upstream has nothing more for now: send what is compressed so far.
                    if this.unflushed {
                        this.encoder.flush(cx).map_err(boxed)?;
                        this.unflushed = false;
                    }
                    return match this.encoder.take() {
                        Some(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(codings: &[Coding]) -> Compression {
        Compression {
            compressors: codings
                .iter()
                .map(|&coding| Compressor {
                    coding,
                    level: None,
                    min_content_length: 30,
                    content_types: None,
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn pick(codings: &[Coding], accept: &[&str]) -> Option<Coding> {
        let p = policy(codings);
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(ACCEPT_ENCODING, HeaderValue::from_str(a).unwrap());
        }
        negotiate(&p, &h)
            .0
            .map(|i| p.compressors[usize::from(i)].coding)
    }

    use Coding::{Brotli as Br, Gzip, Zstd};

    #[test]
    fn the_highest_q_wins_and_ties_go_to_the_policys_order() {
        let all = [Br, Gzip, Zstd];
        assert_eq!(pick(&all, &["gzip, br"]), Some(Br));
        assert_eq!(pick(&[Gzip, Br], &["br, gzip"]), Some(Gzip));
        assert_eq!(pick(&all, &["gzip;q=1, br;q=0.5"]), Some(Gzip));
        assert_eq!(pick(&all, &["zstd;q=0.9, gzip;q=0.8"]), Some(Zstd));
        assert_eq!(pick(&all, &["GZIP"]), Some(Gzip));
        assert_eq!(pick(&all, &["x-gzip"]), Some(Gzip));
        // Two header fields are one list.
        assert_eq!(pick(&[Gzip, Zstd], &["gzip;q=0.1", "zstd"]), Some(Zstd));
        // Parameters and spaces.
        assert_eq!(pick(&all, &[" gzip ; q=0.500 , br ; q = 0.4"]), Some(Gzip));
    }

    #[test]
    fn q_zero_refuses_and_star_stands_for_the_rest() {
        let all = [Br, Gzip, Zstd];
        assert_eq!(pick(&all, &["br;q=0, gzip"]), Some(Gzip));
        assert_eq!(pick(&all, &["br;q=0, gzip;q=0, zstd;q=0"]), None);
        assert_eq!(pick(&all, &["*"]), Some(Br));
        assert_eq!(pick(&all, &["br;q=0, *"]), Some(Gzip));
        assert_eq!(pick(&all, &["*;q=0"]), None);
        assert_eq!(pick(&all, &["gzip;q=0.2, *;q=0.5"]), Some(Br));
        // Unknown codings are ignored.
        assert_eq!(pick(&all, &["compress, deflate"]), None);
        assert_eq!(pick(&[Gzip], &["br"]), None);
    }

    #[test]
    fn no_header_empty_or_identity_preferred_means_no_compression() {
        assert_eq!(pick(&[Gzip], &[]), None);
        assert_eq!(pick(&[Gzip], &[""]), None);
        assert_eq!(pick(&[Gzip], &["identity"]), None);
        assert_eq!(pick(&[Gzip], &["gzip;q=0.5, identity"]), None);
        assert_eq!(pick(&[Gzip], &["gzip, identity;q=0.5"]), Some(Gzip));
        // An implicit identity is acceptable, not preferred.
        assert_eq!(pick(&[Gzip], &["gzip;q=0.5"]), Some(Gzip));
    }

    #[test]
    fn malformed_q_values_drop_their_item() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        assert_eq!(qvalue("1.000"), Some(1000));
        for bad in ["1.5", "2", "0.1234", "-1", "x", "", "0.a"] {
            assert_eq!(qvalue(bad), None, "{bad}");
        }
        assert_eq!(pick(&[Gzip, Br], &["gzip;q=2, br"]), Some(Br));
    }

    #[test]
    fn vary_is_merged_once() {
        let mut h = HeaderMap::new();
        add_vary(&mut h);
        assert_eq!(h[VARY], "Accept-Encoding");
        add_vary(&mut h);
        assert_eq!(h.get_all(VARY).iter().count(), 1);
        let mut h = HeaderMap::new();
        h.append(VARY, HeaderValue::from_static("Origin"));
        h.append(VARY, HeaderValue::from_static("Cookie"));
        add_vary(&mut h);
        assert_eq!(h[VARY], "Origin, Cookie, Accept-Encoding");
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("*"));
        add_vary(&mut h);
        assert_eq!(h[VARY], "*");
    }
}
