//! One upstream HTTP/1.1 connection, driven by whoever is using it rather than by a task of
//! its own.
//!
//! hyper splits a client connection into a sender and a connection future that does the
//! I/O. Spawning that future costs a second task per connection: each request wakes it (to
//! write), it wakes the request's task (with the response head), and again for each body
//! chunk, with its own cold state each time. Callgrind at 512 client connections put that
//! task at a third of the proxy's instructions and L2 misses per request. Here the future is
//! polled by the request that owns the connection (while it waits for the response head and
//! while its body is read), so one task does the whole exchange. Between requests the
//! connection sits in the pool unpolled; a close by the peer is read by the next request's
//! first poll (hyper then hands the request back unsent) or by the reaper's.
//!
//! Only the connection future is polled with the caller's waker: it is what waits on the
//! socket and the request body. The response head and the response body only move when the
//! connection future runs, which happens in the same poll just before, so they are polled
//! with a no-op waker and never wake the task for nothing. (Off the request path, `detach`
//! also waits on the sender's readiness.)

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;

use super::{ConnPermit, Http1Sender, Inner, PoolKey, Pools};
use crate::upstream::body::UpstreamBody;

/// What sending a request comes to: the response head, or hyper's error (with the request
/// when it was not written).
pub(crate) type Sent = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>;

/// An open HTTP/1.1 connection: hyper's sender and its connection future (for either
/// transport, TCP or TLS), behind one pointer: every request's future holds one.
pub(crate) struct Http1Conn(Box<dyn Drive>);

/// What [`Http1Conn`] needs of a connection, whatever its transport.
trait Drive: Send {
    /// See [`Http1Conn::drive`].
    fn drive(&mut self, cx: &mut Context<'_>) -> bool;
    fn tx(&mut self) -> &mut Http1Sender;
    /// Open and between exchanges (hyper wants the next request).
    fn idle(&self) -> bool;
}

struct Driven<F> {
    tx: Http1Sender,
    /// hyper's connection future (with upgrades); `None` once it has ended.
    conn: Option<F>,
    addr: SocketAddr,
    /// The connection's place under the endpoint's cap, given back when it is dropped.
    _permit: ConnPermit,
}

impl<F> Drive for Driven<F>
where
    F: Future<Output = hyper::Result<()>> + Send + Unpin,
{
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match Pin::new(conn).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(err) = result {
                    tracing::debug!(addr = %self.addr, error = %err, "upstream connection ended with an error");
                }
                self.conn = None;
                false
            }
        }
    }

    fn tx(&mut self) -> &mut Http1Sender {
        &mut self.tx
    }

    fn idle(&self) -> bool {
        self.conn.is_some() && self.tx.is_ready()
    }
}

impl Http1Conn {
    pub(super) fn new<F>(tx: Http1Sender, conn: F, addr: SocketAddr, permit: ConnPermit) -> Self
    where
        F: Future<Output = hyper::Result<()>> + Send + Unpin + 'static,
    {
        Self(Box::new(Driven {
            tx,
            conn: Some(conn),
            addr,
            _permit: permit,
        }))
    }

    /// Run the connection's I/O as far as it goes now; false once the connection has ended
    /// (closed by the peer, failed, or handed to an upgrade). Its end drops hyper's state,
    /// which answers anything still waiting on it (the response, an unsent request).
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.0.drive(cx)
    }

    /// [`Self::drive`] without a waker: for a connection nobody is waiting on (idle in the
    /// pool), so its socket does not wake the last task that used it.
    pub(crate) fn drive_idle(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()))
    }

    /// Whether the connection is open and between exchanges (hyper wants the next request).
    pub(crate) fn is_idle(&self) -> bool {
        self.0.idle()
    }

    /// Send `req` and wait for the response head, driving the connection meanwhile. As
    /// hyper's `try_send_request`: a request the connection closed before writing comes back
    /// in the error.
    pub(crate) fn send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Exchange<'_, impl Future<Output = Sent>> {
        let response = self.0.tx().try_send_request(req);
        Exchange {
            conn: self,
            response,
        }
    }

    /// Keep the connection going on a task of its own: for an upgrade (hyper hands the
    /// socket to the tunnel from the connection future), or an exchange whose response ended
    /// before its request body did (back to `pool` once it is idle).
    pub(crate) fn detach(mut self, checkin: Option<(Arc<Inner>, PoolKey, u32)>) {
        // A body dropped outside the runtime (at shutdown) must not panic in `spawn`: the
        // connection is closed instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let idle = std::future::poll_fn(|cx| {
                // Twice: hyper only asks for the next request when it polls for one, and a
                // poll whose flush sends the last of a request body returns before that,
                // with nothing left to wake it (the task would wait for ever).
                for _ in 0..2 {
                    if !self.drive(cx) {
                        return Poll::Ready(false);
                    }
                    if checkin.is_some() {
                        if let Poll::Ready(ready) = self.0.tx().poll_ready(cx) {
                            return Poll::Ready(ready.is_ok());
                        }
                    }
                }
                Poll::Pending
            })
            .await;
            if let (true, Some((pool, key, uses))) = (idle, checkin) {
                Pools::checkin_http1(&pool, key, self, uses);
            }
        });
    }
}

pin_project_lite::pin_project! {
    /// A request on its way ([`Http1Conn::send`]): the connection is driven until the
    /// response head is in. A named future rather than an `async` block, so that it holds
    /// nothing but these two (every request's future carries it).
    pub(crate) struct Exchange<'a, F> {
        conn: &'a mut Http1Conn,
        #[pin]
        response: F,
    }
}

impl<F: Future<Output = Sent>> Future for Exchange<'_, F> {
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        let this = self.project();
        let open = this.conn.drive(cx);
        // Answered only from `drive`, or by the connection's end, which drops hyper's
        // dispatcher and with it the request's callback (that answers at once): no waker is
        // needed.
        let polled = this.response.poll(&mut Context::from_waker(Waker::noop()));
        debug_assert!(open || polled.is_ready(), "an ended connection answers");
        polled
    }
}
