//! Bodies on the upstream side: what a request to an upstream carries, and the response body
//! that returns its HTTP/1.1 connection to the pool once it has been read to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::pool::{Http1Sender, Inner, PoolKey, Pools};

/// The body of a request sent upstream: the client's body streamed through, or bytes the
/// proxy holds (e.g. a copy of a buffered request). An enum, not a box: no allocation per
/// request.
pub(crate) enum UpstreamBody {
    Incoming(Incoming),
    /// `None` once sent (or for no body at all).
    Bytes(Option<Bytes>),
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(body) => body.is_end_stream(),
            UpstreamBody::Bytes(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(body) => body.size_hint(),
            UpstreamBody::Bytes(None) => SizeHint::with_exact(0),
            UpstreamBody::Bytes(Some(b)) => SizeHint::with_exact(b.len() as u64),
        }
    }
}

/// An upstream response body. For HTTP/1.1 it holds the connection's sender and puts it back
/// on the idle list as soon as the body has ended (or, if hyper never polls an empty body, when
/// it is dropped at its end). A body dropped before its end takes the connection with it:
/// the rest of that response is still on the wire.
pub(crate) struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
}

struct Checkin {
    pool: Arc<Inner>,
    key: PoolKey,
    tx: Http1Sender,
}

impl PooledBody {
    /// A body whose connection is not pooled here (HTTP/2, upgrades).
    pub(crate) fn unpooled(body: Incoming) -> Self {
        Self {
            body,
            checkin: None,
        }
    }

    pub(crate) fn pooled(body: Incoming, pools: &Pools, key: PoolKey, tx: Http1Sender) -> Self {
        Self {
            body,
            checkin: Some(Checkin {
                pool: pools.inner().clone(),
                key,
                tx,
            }),
        }
    }

    fn release(&mut self) {
        if let Some(Checkin { pool, key, tx }) = self.checkin.take() {
            Pools::checkin_http1(&pool, key, tx);
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
        let polled = Pin::new(&mut this.body).poll_frame(cx);
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
