//! BackendTrafficPolicy `compression` over real sockets: each coding decoded with its real
//! decoder and compared byte for byte; the responses left alone (already encoded,
//! `no-transform`, too small, not a text type, HEAD, 206, no acceptable coding, a route
//! without the policy); `Vary` merged; a strong ETag weakened; and server-sent events that
//! reach the client while the stream is still open.

use std::sync::Arc;
use std::time::Duration;

use async_compression::tokio::write::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use weir_snapshot::{BackendPolicy, Coding, Compression, Compressor};

use crate::origin::{fetch, open, Origin, TestBody};
use crate::support::*;

pub(crate) fn compression(codings: &[Coding], min: u64) -> Compression {
    Compression {
        compressors: codings
            .iter()
            .map(|&coding| Compressor {
                coding,
                level: None,
                min_content_length: min,
                content_types: None,
            })
            .collect::<Vec<_>>()
            .into(),
    }
}

fn policy(c: Compression) -> BackendPolicy {
    BackendPolicy {
        name: "ns/p".into(),
        id: 21,
        compression: Some(Arc::new(c)),
        ..BackendPolicy::default()
    }
    .compiled()
}

/// Text that compresses well, `n` bytes.
pub(crate) fn text(n: usize) -> Bytes {
    let unit = b"Weir compresses this line of text; ";
    unit.iter()
        .copied()
        .cycle()
        .take(n)
        .collect::<Vec<u8>>()
        .into()
}

/// `bytes` decoded with the real decoder of `coding`.
pub(crate) async fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    async fn run<W: tokio::io::AsyncWrite + Unpin>(mut d: W, bytes: &[u8]) -> W {
        d.write_all(bytes).await.unwrap();
        d.shutdown().await.unwrap();
        d
    }
    match coding {
        "gzip" => run(GzipDecoder::new(Vec::new()), bytes).await.into_inner(),
        "br" => run(BrotliDecoder::new(Vec::new()), bytes)
            .await
            .into_inner(),
        "zstd" => run(ZstdDecoder::new(Vec::new()), bytes).await.into_inner(),
        other => panic!("no decoder for {other}"),
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: Bytes) -> Response<TestBody> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.header("content-length", body.len())
        .body(TestBody::full(body))
        .unwrap()
}

/// The origin behind the tests: the path picks the answer.
async fn origin() -> Origin {
    Origin::start(|req| {
        let body = text(20_000);
        match req.uri.path().strip_prefix("/p").unwrap_or_default() {
            "/encoded" => reply(
                200,
                &[("content-type", "text/plain"), ("content-encoding", "gzip")],
                Bytes::from_static(b"these bytes claim to be gzip already, and pass as they are"),
            ),
            "/no-transform" => reply(
                200,
                &[
                    ("content-type", "text/plain"),
                    ("cache-control", "public, no-transform"),
                ],
                body,
            ),
            "/small" => reply(200, &[("content-type", "text/plain")], text(99)),
            "/png" => reply(200, &[("content-type", "image/png")], body),
            "/range" => reply(
                206,
                &[
                    ("content-type", "text/plain"),
                    ("content-range", "bytes 0-19999/40000"),
                ],
                body,
            ),
            "/vary" => reply(
                200,
                &[("content-type", "application/json"), ("vary", "Origin")],
                body,
            ),
            "/chunked" => {
                let (tx, rx) = mpsc::channel(8);
                tokio::spawn(async move {
                    for chunk in body.chunks(3000) {
                        let _ = tx.send(Bytes::copy_from_slice(chunk)).await;
                    }
                });
                Response::builder()
                    .header("content-type", "text/html; charset=utf-8")
                    .body(TestBody::Chan(rx))
                    .unwrap()
            }
            _ => reply(
                200,
                &[
                    ("content-type", "text/html; charset=utf-8"),
                    ("etag", "\"v1\""),
                    ("accept-ranges", "bytes"),
                ],
                body,
            ),
        }
    })
    .await
}

async fn start(c: Compression) -> (Origin, TestProxy, std::net::SocketAddr) {
    let o = origin().await;
    let up = upstream("svc", &[o.addr]);
    let (proxy, addr) = crate::fault::start(&up, policy(c)).await;
    (o, proxy, addr)
}

const ALL: [Coding; 3] = [Coding::Brotli, Coding::Gzip, Coding::Zstd];

#[tokio::test]
async fn each_coding_decodes_to_the_same_bytes() {
    let (_o, proxy, addr) = start(compression(&ALL, 30)).await;
    for token in ["gzip", "br", "zstd"] {
        let r = fetch(addr, "GET", "/p/page", &[("accept-encoding", token)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-encoding"), Some(token));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert!(r.header("content-length").is_none(), "{token}");
        assert!(r.header("accept-ranges").is_none(), "{token}");
        assert_eq!(r.header("etag"), Some("W/\"v1\""), "{token}");
        assert!(r.body.len() < 2_000, "{token}: {} bytes", r.body.len());
        assert_eq!(decode(token, &r.body).await, text(20_000), "{token}");
        assert_eq!(
            proxy.metric("weir_compressed_responses_total", &[("encoding", token)]),
            1.0
        );
    }
    // A body without Content-Length (chunked upstream), in several frames.
    let r = fetch(addr, "GET", "/p/chunked", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body).await, text(20_000));
}

#[tokio::test]
async fn the_clients_q_values_then_the_policys_order_choose() {
    let (_o, _proxy, addr) = start(compression(&[Coding::Gzip, Coding::Brotli], 30)).await;
    for (accept, want) in [
        ("br, gzip", Some("gzip")),
        ("br;q=1, gzip;q=0.5", Some("br")),
        ("gzip;q=0, br;q=0.1", Some("br")),
        ("*", Some("gzip")),
        ("zstd", None),
        ("gzip;q=0.5, identity", None),
        ("", None),
    ] {
        let r = fetch(addr, "GET", "/p/page", &[("accept-encoding", accept)]).await;
        assert_eq!(r.header("content-encoding"), want, "{accept:?}");
        match want {
            Some(token) => assert_eq!(decode(token, &r.body).await, text(20_000)),
            None => assert_eq!(r.body, text(20_000)),
        }
        // Compressible: the Vary is there whether or not this client got a coding.
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{accept:?}");
    }
}

#[tokio::test]
async fn responses_that_must_not_be_compressed_pass_as_they_are() {
    let (o, _proxy, addr) = start(compression(&ALL, 100)).await;
    let gzip = [("accept-encoding", "gzip, br, zstd")];
    let r = fetch(addr, "GET", "/p/encoded", &gzip).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        &r.body[..],
        b"these bytes claim to be gzip already, and pass as they are"
    );
    for (path, status) in [
        ("/p/no-transform", 200),
        ("/p/small", 200),
        ("/p/png", 200),
        ("/p/range", 206),
    ] {
        let r = fetch(addr, "GET", path, &gzip).await;
        assert_eq!(r.status.as_u16(), status, "{path}");
        assert!(r.header("content-encoding").is_none(), "{path}");
        assert!(r.header("content-length").is_some(), "{path}: {r:?}");
        let want = if path == "/p/small" {
            text(99)
        } else {
            text(20_000)
        };
        assert_eq!(r.body, want, "{path}");
    }
    // Not a compressible type, or no-transform: no Vary either.
    for path in ["/p/png", "/p/no-transform"] {
        let r = fetch(addr, "GET", path, &gzip).await;
        assert!(r.header("vary").is_none(), "{path}");
    }
    // HEAD: the headers of the uncompressed response (its length).
    let r = fetch(addr, "HEAD", "/p/page", &gzip).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-encoding").is_none());
    assert_eq!(r.header("content-length"), Some("20000"));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let seen = o.seen.lock().unwrap().last().map(|p| p.method.clone());
    assert_eq!(seen, Some(http::Method::HEAD));
    // The route without the policy never compresses.
    let r = fetch(addr, "GET", "/page", &gzip).await;
    assert!(r.header("content-encoding").is_none());
    assert!(r.header("vary").is_none());
    assert_eq!(r.body, text(20_000));
    assert!(o.hits() >= 8);
}

#[tokio::test]
async fn vary_is_merged_with_the_origins() {
    let (_o, _proxy, addr) = start(compression(&ALL, 30)).await;
    let r = fetch(addr, "GET", "/p/vary", &[("accept-encoding", "br")]).await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("vary"), Some("Origin, Accept-Encoding"));
    assert_eq!(r.headers.get_all("vary").iter().count(), 1);
    assert_eq!(decode("br", &r.body).await, text(20_000));
}

/// Each event must reach the client, decoded, while the stream is still open: the origin
/// sends the next event only after the client has seen the previous one, so a proxy that
/// held the compressed data back until the end (or until a buffer filled) never gets past
/// the first event.
#[tokio::test]
async fn server_sent_events_arrive_as_they_are_sent() {
    let (next_tx, next_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let next_rx = Arc::new(tokio::sync::Mutex::new(next_rx));
    let o = Origin::start(move |_req| {
        let (tx, rx) = mpsc::channel(1);
        let next = next_rx.clone();
        tokio::spawn(async move {
            let mut next = next.lock().await;
            for i in 0..3 {
                let event = format!("id: {i}\ndata: event number {i}\n\n");
                if tx.send(Bytes::from(event)).await.is_err() {
                    return;
                }
                // Wait for the client to have seen it (or give up: the test fails then).
                if tokio::time::timeout(Duration::from_secs(10), next.recv())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(TestBody::Chan(rx))
            .unwrap()
    })
    .await;
    let up = upstream("svc", &[o.addr]);
    let (_proxy, addr) = crate::fault::start(&up, policy(compression(&ALL, 30))).await;
    for token in ["gzip", "br", "zstd"] {
        let resp = open(addr, "GET", "/p/events", &[("accept-encoding", token)]).await;
        assert_eq!(resp.headers()["content-encoding"], token);
        let mut body = resp.into_body();
        let mut wire = Vec::new();
        for i in 0..3 {
            let want = format!("data: event number {i}\n\n");
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let frame = body.frame().await.expect("stream ended early").unwrap();
                    if let Ok(data) = frame.into_data() {
                        wire.extend_from_slice(&data);
                    }
                    let so_far = decode_prefix(token, &wire).await;
                    if String::from_utf8_lossy(&so_far).contains(&want) {
                        return so_far;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{token}: event {i} did not arrive while open"));
            assert!(String::from_utf8_lossy(&got).ends_with(&want), "{token}");
            next_tx.send(()).unwrap();
        }
        // The rest (the encoder's end) follows, and the whole decodes.
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                wire.extend_from_slice(&data);
            }
        }
        let all = String::from_utf8(decode(token, &wire).await).unwrap();
        assert_eq!(all.matches("data: event number").count(), 3, "{token}");
    }
}

/// What a decoder makes of the start of a stream (no end yet).
async fn decode_prefix(coding: &str, bytes: &[u8]) -> Vec<u8> {
    async fn run<W: tokio::io::AsyncWrite + Unpin>(d: &mut W, bytes: &[u8]) {
        d.write_all(bytes).await.unwrap();
        d.flush().await.unwrap();
    }
    match coding {
        "gzip" => {
            let mut d = GzipDecoder::new(Vec::new());
            run(&mut d, bytes).await;
            d.into_inner()
        }
        "br" => {
            let mut d = BrotliDecoder::new(Vec::new());
            run(&mut d, bytes).await;
            d.into_inner()
        }
        _ => {
            let mut d = ZstdDecoder::new(Vec::new());
            run(&mut d, bytes).await;
            d.into_inner()
        }
    }
}
