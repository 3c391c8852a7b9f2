//! Client connection limits: the idle timeout and the global connection cap.
//!
//! - **Idle timeout.** A client connection with no request in flight that moves no byte for
//!   `idle_timeout` is closed: one that never sends a byte, a TLS connection that finishes
//!   the handshake and sends nothing, an HTTP/1.1 keep-alive connection between requests,
//!   an HTTP/2 connection with no streams. Activity is counted by the connection's IO
//!   (one relaxed add per read or write that moved bytes) and by the requests it serves
//!   (a guard per request), and a timer per connection looks at it four times per period,
//!   so an idle connection is closed between 1 and 1.25 periods after its last activity.
//!   A request in flight keeps its connection (its own timeouts bound it).
//! - **Connection cap.** At most `max_connections` client connections at once across all
//!   sockets; beyond it a new connection is closed at once and counted
//!   (`weir_connections_rejected_total`), so the process never runs out of descriptors and
//!   the admin server and upstream connections keep their headroom.
//! - **Memory after a spike.** glibc keeps what the closed connections freed (see
//!   `weir_alloc`); once the number of open connections has fallen by [`TRIM_DROP`] from
//!   its peak, [`release_memory_after_drops`] gives it back.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection has done, as the idle timer sees it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Reads and writes that moved bytes, plus requests started.
    events: AtomicU64,
    /// Requests whose response head has not been produced yet.
    in_flight: AtomicU32,
}

impl Activity {
    fn touch(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Mark a request in flight until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.touch();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves once the connection has been idle for `timeout` (checked every quarter of
    /// it); never resolves while requests are in flight or bytes move.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        let tick = (timeout / 4).max(Duration::from_millis(1));
        let mut last = self.events.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            let now = self.events.load(Ordering::Relaxed);
            if now != last || self.in_flight.load(Ordering::Relaxed) > 0 {
                last = now;
                quiet = Duration::ZERO;
                continue;
            }
            quiet += tick;
            if quiet >= timeout {
                return;
            }
        }
    }
}

/// A request in flight on a connection (see [`Activity::request`]).
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A request's future holding its [`InFlight`] mark, released as soon as the response is
    /// ready. Not an `async move { fut.await }` block: such a block keeps the captured future
    /// and the awaited one as two fields of its state, so it is twice the request future's
    /// size (2 × ~1.7 KB), and every move of it (hyper stores it per connection, HTTP/2
    /// spawns it per stream) copies both.
    pub(crate) struct Serving<F> {
        #[pin]
        fut: F,
        busy: Option<InFlight>,
    }
}

impl<F> Serving<F> {
    pub(crate) fn new(fut: F, busy: InFlight) -> Self {
        Serving {
            fut,
            busy: Some(busy),
        }
    }
}

impl<F: std::future::Future> std::future::Future for Serving<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        this.busy.take();
        std::task::Poll::Ready(out)
    }
}

/// A client stream that counts its reads and writes into an [`Activity`].
pub(crate) struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connection cap shared by every socket: a permit per open client connection.
pub(crate) struct ConnectionCap {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl ConnectionCap {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// Client connections open now.
    pub(crate) fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// A permit for one more connection, or `None` at the cap.
    pub(crate) fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// How often [`release_memory_after_drops`] looks at the number of open connections.
const TRIM_TICK: Duration = Duration::from_secs(2);

/// A fall of this many open connections from their peak since the last release gives freed
/// memory back: each held 22-30 KB (docs/SECURITY.md, "Memory per connection"), so at
/// least 5 MB are free.
pub(crate) const TRIM_DROP: usize = 256;

/// Tracks the peak of open connections between releases.
#[derive(Debug, Default)]
struct DropWatch {
    peak: usize,
    /// A release happened at the last tick: release once more at this one. A connection
    /// leaves the count when its permit drops, before its task has run to the end and freed
    /// its buffers; on a busy machine many of those frees land after the first release, and
    /// without a second one they stayed resident (an e2e run under load ended 35 MB over
    /// its baseline instead of 11).
    again: bool,
}

impl DropWatch {
    /// Whether memory should be released now that `open` connections are open.
    fn released_after(&mut self, open: usize) -> bool {
        if std::mem::take(&mut self.again) {
            self.peak = self.peak.max(open);
            return true;
        }
        if open >= self.peak {
            self.peak = open;
            return false;
        }
        if self.peak - open < TRIM_DROP {
            return false;
        }
        self.peak = open;
        self.again = true;
        true
    }
}

/// Runs until aborted: every [`TRIM_TICK`], gives the memory the allocator holds free back
/// to the system once open connections have fallen by [`TRIM_DROP`] since their peak, so a
/// spike of clients does not leave the process at its peak RSS (glibc would keep it).
pub(crate) async fn release_memory_after_drops(open: impl Fn() -> usize) {
    let mut watch = DropWatch::default();
    let mut tick = tokio::time::interval(TRIM_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = open();
        if watch.released_after(now) {
            // It walks and locks every arena: not on a worker thread.
            let released = tokio::task::spawn_blocking(weir_alloc::release_free_memory).await;
            tracing::debug!(
                open = now,
                ?released,
                "connections fell: released free memory"
            );
        }
    }
}

/// The default cap: the soft limit on open files, less headroom for the admin server,
/// listening sockets, upstream connections (one per client connection in the worst case
/// of HTTP/1.1 proxying, so half the rest), logs and the control plane.
pub fn default_max_connections() -> usize {
    let soft = nofile_soft_limit().unwrap_or(1024);
    let headroom = 64u64;
    usize::try_from(soft.saturating_sub(headroom) / 2)
        .unwrap_or(usize::MAX)
        .max(16)
}

/// RLIMIT_NOFILE's soft limit, read from /proc (no unsafe code, no libc binding needed).
fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_means_no_request_and_no_bytes_for_the_whole_period() {
        let activity = Arc::new(Activity::default());
        let timeout = Duration::from_millis(80);
        // Idle from the start: done after one period (timers may only be late).
        let started = tokio::time::Instant::now();
        activity.idle_for(timeout).await;
        let took = started.elapsed();
        assert!(took >= timeout && took < Duration::from_secs(5), "{took:?}");

        // A request in flight for three periods keeps it busy.
        let guard = activity.request();
        let started = tokio::time::Instant::now();
        let idle = activity.idle_for(timeout);
        tokio::pin!(idle);
        tokio::select! {
            _ = &mut idle => panic!("idle with a request in flight"),
            _ = tokio::time::sleep(timeout * 3) => {}
        }
        drop(guard);
        idle.await;
        assert!(
            started.elapsed() >= timeout * 4,
            "counted from the request's end"
        );
    }

    #[test]
    fn the_default_cap_leaves_headroom() {
        let cap = default_max_connections();
        let soft = nofile_soft_limit().expect("linux /proc");
        assert!(cap >= 16);
        assert!(
            (cap as u64) < soft || soft < 100,
            "cap {cap} of soft limit {soft}"
        );
    }

    #[test]
    fn the_cap_refuses_beyond_its_permits() {
        let cap = ConnectionCap::new(2);
        let a = cap.admit().expect("first");
        let _b = cap.admit().expect("second");
        assert_eq!(cap.open(), 2);
        assert!(cap.admit().is_none());
        drop(a);
        assert_eq!(cap.open(), 1);
        assert!(cap.admit().is_some());
    }

    #[test]
    fn memory_is_released_twice_per_fall_from_a_peak() {
        let mut watch = DropWatch::default();
        assert!(!watch.released_after(1000), "rising");
        assert!(!watch.released_after(1000 - TRIM_DROP + 1), "a small fall");
        assert!(
            watch.released_after(1000 - TRIM_DROP),
            "fell by TRIM_DROP from the peak"
        );
        let low = 1000 - TRIM_DROP;
        assert!(
            watch.released_after(low),
            "once more at the next tick: frees that lag the count"
        );
        assert!(!watch.released_after(low), "counted from the last release");
        assert!(!watch.released_after(low - TRIM_DROP + 1));
        assert!(watch.released_after(0), "fell again");
        assert!(watch.released_after(0), "and the follow-up");
        assert!(!watch.released_after(TRIM_DROP * 2), "a new peak");
        assert!(watch.released_after(TRIM_DROP));
        assert!(watch.released_after(TRIM_DROP * 3), "the follow-up, rising");
        assert!(
            !watch.released_after(TRIM_DROP * 2 + 1),
            "a small fall from the new peak"
        );
    }
}
