//! A programmable origin for the compression and cache tests: each test answers requests
//! with its own handler (headers, statuses, streamed bodies) and counts what reached it;
//! and a client that keeps the response body's bytes as they are (compressed ones too).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A response body: whole, or streamed from a channel (each message one frame).
pub enum TestBody {
    Full(Option<Bytes>),
    Chan(mpsc::Receiver<Bytes>),
}

impl TestBody {
    pub fn full(b: impl Into<Bytes>) -> TestBody {
        TestBody::Full(Some(b.into()))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TestBody::Chan(rx) => rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, TestBody::Full(None))
    }
}

pub type Handler = Arc<dyn Fn(&http::request::Parts) -> Response<TestBody> + Send + Sync>;

pub struct Origin {
    pub addr: SocketAddr,
    /// Requests that reached the origin.
    pub hits: Arc<AtomicUsize>,
    /// Each request's head, in arrival order.
    pub seen: Arc<Mutex<Vec<http::request::Parts>>>,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub async fn start(
        handler: impl Fn(&http::request::Parts) -> Response<TestBody> + Send + Sync + 'static,
    ) -> Origin {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, hits, seen) = (handler.clone(), h.clone(), s.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (handler, hits, seen) = (handler.clone(), hits.clone(), seen.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let _ = body.collect().await;
                            hits.fetch_add(1, Ordering::SeqCst);
                            let resp = handler(&parts);
                            seen.lock().unwrap().push(parts);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Origin {
            addr,
            hits,
            seen,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A response as received, body bytes untouched.
#[derive(Debug)]
pub struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request on a new HTTP/1.1 connection: `method path` with `headers` (Host
/// `a.example`).
pub async fn fetch(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let (parts, body) = open(addr, method, path, headers).await.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Raw {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The response head, its body left to stream.
pub async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "a.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender
        .send_request(req.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap()
}
