//! Bodies on the upstream side: what a request to an upstream carries, and the response body
//! that returns its HTTP/1.1 connection to the pool once it has been read to the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

use super::pool::{Http1Conn, Inner, PoolKey, Pools};
use crate::body::BoxError;

/// The body of a request sent upstream: the client's body streamed through, or bytes the
/// proxy holds (e.g. a copy of a buffered request). An enum, not a box: no allocation per
/// request (only a mirrored request's body, the rare case, is boxed).
pub(crate) enum UpstreamBody {
    Incoming(Incoming),
    /// The client's body, failed with [`BodyStalled`] when it sends nothing for a while
    /// (requests that have a body; boxed, as the timer is only needed there).
    Watched(Box<Watched>),
    /// `None` once sent (or for no body at all).
    Bytes(Option<Bytes>),
    /// The client's body, each data frame also handed to mirror copies.
    Teed(Box<Tee>),
    /// A mirror copy's body: the frames the main request's [`Tee`] handed over.
    Copy(CopyBody),
    /// Another body, its data bytes counted (for the access log; boxed, as only logged
    /// requests with a body have it).
    Counted(Box<Counted>),
}

/// A body whose data bytes are added to a counter another party reads.
pub(crate) struct Counted {
    pub(crate) body: UpstreamBody,
    pub(crate) bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// How many data frames a mirror copy may lag behind the main request before it is given up
/// (the main request never waits for a mirror).
const COPY_FRAMES: usize = 16;

/// The client's body with its stall timer.
pub(crate) struct Watched {
    body: Incoming,
    stall: Stall,
}

/// A client body that moves nothing for `limit` while the upstream waits for it fails with
/// [`BodyStalled`] (the client gets 408). The timer is armed at the first poll that finds no
/// data and pushed back at the next such poll after data came; it is polled only while
/// the upstream asks for more, so a slow upstream never times the client out.
pub(crate) struct Stall {
    limit: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Data came since the timer was last (re)armed.
    progress: bool,
    /// A deadline for the whole body (never pushed back), not a stall timer.
    fixed: bool,
}

/// How long a client's request body may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyTimer {
    /// Nothing of it for this long (`--idle-timeout`, HTTP/1.x).
    Stall(std::time::Duration),
    /// All of it within this from now (a ClientTrafficPolicy's `requestReceivedTimeout`).
    Deadline(std::time::Duration),
}

impl Stall {
    fn new(timer: BodyTimer) -> Self {
        match timer {
            BodyTimer::Stall(limit) => Self {
                limit,
                timer: None,
                progress: false,
                fixed: false,
            },
            BodyTimer::Deadline(limit) => Self {
                limit,
                timer: Some(Box::pin(tokio::time::sleep(limit))),
                progress: false,
                fixed: true,
            },
        }
    }

    /// After a poll of the body: data resets, a `Pending` checks the timer.
    fn after<T>(&mut self, polled: &Poll<T>, cx: &mut Context<'_>) -> Result<(), BoxError> {
        if polled.is_ready() {
            self.progress = !self.fixed;
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = match &mut self.timer {
            Some(timer) => {
                if std::mem::take(&mut self.progress) {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(Box::new(BodyStalled(self.limit))),
            Poll::Pending => Ok(()),
        }
    }
}

/// The client sent no part of its request body for this long.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of its request body for {0:?}")]
pub(crate) struct BodyStalled(pub(crate) std::time::Duration);

/// The main request's body, teed to mirror copies.
pub(crate) struct Tee {
    stall: Option<Stall>,
    body: Incoming,
    copies: Vec<mpsc::Sender<Bytes>>,
    /// Each copy's completion flag, set when the body has ended cleanly.
    complete: Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Tee {
    fn hand_over(&mut self, frame: &Frame<Bytes>) {
        let Some(data) = frame.data_ref() else {
            return;
        };
        let mut i = 0;
        while i < self.copies.len() {
            // A copy that cannot keep up (or whose request is gone) is dropped; its body then
            // ends without its completion flag, which fails that copy only.
            if self.copies[i].try_send(data.clone()).is_err() {
                self.copies.swap_remove(i);
                self.complete.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn finish(&mut self) {
        for flag in self.complete.drain(..) {
            flag.store(true, std::sync::atomic::Ordering::Release);
        }
        self.copies.clear();
    }
}

/// The receiving end of a tee. When the tee gives up on it (the copy fell behind, or the
/// client's body failed), the copy's body ends in an error, so a truncated copy is never
/// sent as if it were complete.
pub(crate) struct CopyBody {
    rx: mpsc::Receiver<Bytes>,
    /// Set by the tee once the whole body has been handed over.
    complete: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A channel for one mirror copy of a request body: the sender goes to [`tee`], the body to
/// the copy's request.
pub(crate) fn copy_channel() -> (CopySender, UpstreamBody) {
    let (tx, rx) = mpsc::channel(COPY_FRAMES);
    let complete = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    (
        CopySender {
            tx,
            complete: complete.clone(),
        },
        UpstreamBody::Copy(CopyBody { rx, complete }),
    )
}

/// The tee's end of a mirror copy's body.
pub(crate) struct CopySender {
    tx: mpsc::Sender<Bytes>,
    complete: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The client's `body`, with every data frame also handed to each of `copies`.
/// `stall`: fail the body with [`BodyStalled`] when it moves nothing for a while, or has not
/// ended by a deadline ([`BodyTimer`]).
pub(crate) fn tee(
    body: Incoming,
    copies: Vec<CopySender>,
    stall: Option<BodyTimer>,
) -> UpstreamBody {
    if copies.is_empty() {
        // No body (most requests), or no limit: nothing to watch.
        return match stall {
            Some(limit) if !body.is_end_stream() => UpstreamBody::Watched(Box::new(Watched {
                body,
                stall: Stall::new(limit),
            })),
            _ => UpstreamBody::Incoming(body),
        };
    }
    let mut senders = Vec::with_capacity(copies.len());
    let mut flags = Vec::with_capacity(copies.len());
    for copy in copies {
        senders.push(copy.tx);
        flags.push(copy.complete);
    }
    UpstreamBody::Teed(Box::new(Tee {
        stall: stall.map(Stall::new),
        body,
        copies: senders,
        complete: flags,
    }))
}

/// A body read whole already (by a request phase), handed to each of `copies` at once.
pub(crate) fn tee_bytes(bytes: Bytes, copies: Vec<CopySender>) -> UpstreamBody {
    for copy in copies {
        // A fresh channel has room for one frame; an empty body is complete as it is.
        if bytes.is_empty() || copy.tx.try_send(bytes.clone()).is_ok() {
            copy.complete
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
    UpstreamBody::Bytes((!bytes.is_empty()).then_some(bytes))
}

/// The client's request body failed (a malformed chunk, a connection cut mid-body): carried
/// as the source of the upstream client's error, so the request is answered 400, not 502
/// (see `upstream::request_error`).
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub(crate) struct ClientBodyError(#[source] pub(crate) hyper::Error);

fn client_fault(err: hyper::Error) -> BoxError {
    Box::new(ClientBodyError(err))
}

impl UpstreamBody {
    pub(crate) fn empty() -> Self {
        UpstreamBody::Bytes(None)
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody::Incoming(body)
    }
}

impl From<Bytes> for UpstreamBody {
    fn from(bytes: Bytes) -> Self {
        UpstreamBody::Bytes((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(client_fault),
            UpstreamBody::Watched(w) => {
                let polled = Pin::new(&mut w.body).poll_frame(cx);
                if let Err(stalled) = w.stall.after(&polled, cx) {
                    return Poll::Ready(Some(Err(stalled)));
                }
                polled.map_err(client_fault)
            }
            UpstreamBody::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Teed(tee) => {
                let polled = Pin::new(&mut tee.body).poll_frame(cx);
                if let Err(stalled) = tee.stall.as_mut().map_or(Ok(()), |s| s.after(&polled, cx)) {
                    // The copies are dropped unfinished: they fail too.
                    tee.copies.clear();
                    tee.complete.clear();
                    return Poll::Ready(Some(Err(stalled)));
                }
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        tee.hand_over(frame);
                        if tee.body.is_end_stream() {
                            tee.finish();
                        }
                    }
                    Poll::Ready(None) => tee.finish(),
                    // The copies are dropped unfinished: they fail too.
                    Poll::Ready(Some(Err(_))) => {
                        tee.copies.clear();
                        tee.complete.clear();
                    }
                    Poll::Pending => {}
                }
                polled.map_err(client_fault)
            }
            UpstreamBody::Copy(copy) => match copy.rx.poll_recv(cx) {
                Poll::Ready(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Poll::Ready(None) => {
                    if copy.complete.load(std::sync::atomic::Ordering::Acquire) {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(BoxError::from(
                            "the mirrored request body was cut short (the copy fell behind)",
                        ))))
                    }
                }
                Poll::Pending => Poll::Pending,
            },
            UpstreamBody::Counted(counted) => {
                let polled = Pin::new(&mut counted.body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        counted
                            .bytes
                            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(body) => body.is_end_stream(),
            UpstreamBody::Watched(w) => w.body.is_end_stream(),
            UpstreamBody::Bytes(bytes) => bytes.is_none(),
            UpstreamBody::Teed(tee) => tee.body.is_end_stream(),
            UpstreamBody::Copy(_) => false,
            UpstreamBody::Counted(c) => c.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(body) => body.size_hint(),
            UpstreamBody::Watched(w) => w.body.size_hint(),
            UpstreamBody::Bytes(None) => SizeHint::with_exact(0),
            UpstreamBody::Bytes(Some(b)) => SizeHint::with_exact(b.len() as u64),
            UpstreamBody::Teed(tee) => tee.body.size_hint(),
            UpstreamBody::Copy(_) => SizeHint::default(),
            UpstreamBody::Counted(c) => c.body.size_hint(),
        }
    }
}

/// An upstream response body. For HTTP/1.1 it holds the connection, drives it while the body
/// is read (see [`Http1Conn`]) and puts it back on the idle list as soon as the body has ended
/// (or, if hyper never polls an empty body, when it is dropped at its end). A body dropped
/// before its end takes the connection with it: the rest of that response is still on the
/// wire.
pub(crate) struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
}

struct Checkin {
    pool: Arc<Inner>,
    key: PoolKey,
    conn: Http1Conn,
    /// Requests the connection has served, this one included.
    uses: u32,
}

impl PooledBody {
    /// A body whose connection is not pooled here (HTTP/2, upgrades).
    pub(crate) fn unpooled(body: Incoming) -> Self {
        Self {
            body,
            checkin: None,
        }
    }

    pub(crate) fn pooled(
        body: Incoming,
        pools: &Pools,
        key: PoolKey,
        conn: Http1Conn,
        uses: u32,
    ) -> Self {
        Self {
            body,
            checkin: Some(Checkin {
                pool: pools.inner().clone(),
                key,
                conn,
                uses,
            }),
        }
    }

    /// The exchange is over: the connection goes back to the pool once hyper is ready for
    /// the next request on it (at once, unless the request body is still being sent).
    fn release(&mut self) {
        if let Some(Checkin {
            pool,
            key,
            mut conn,
            uses,
        }) = self.checkin.take()
        {
            // Usually hyper asked for the next request in the poll that read the end of the
            // body; else one more poll may get it there. (Not always that poll: hyper's
            // request queue keeps this task's waker from the poll that asked, so the next
            // request on the connection wakes this task once for nothing, unless the reaper
            // polled the connection first. A poll here to clear it costs about 780
            // instructions per request; callgrind measured it level with those wake-ups at
            // 16 connections, where they happen 0.4 times per request, and 2 % worse at
            // 128 and 512, where the task is mostly awake already.)
            if !conn.is_idle() && !conn.drive_idle() {
                return;
            }
            if conn.is_idle() {
                Pools::checkin_http1(&pool, key, conn, uses);
            } else {
                conn.detach(Some((pool, key, uses)));
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.checkin {
            None => Pin::new(&mut this.body).poll_frame(cx),
            Some(checkin) => {
                // The body moves only when the connection runs (here, or while the response
                // head was awaited, which usually read the body too): see `Http1Conn`.
                let mut noop = Context::from_waker(std::task::Waker::noop());
                match Pin::new(&mut this.body).poll_frame(&mut noop) {
                    Poll::Pending => {
                        checkin.conn.drive(cx);
                        Pin::new(&mut this.body).poll_frame(&mut noop)
                    }
                    ready => ready,
                }
            }
        };
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            // The connection is broken: never reuse it.
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.checkin.is_some() && self.body.is_end_stream() {
            self.release();
        }
    }
}
