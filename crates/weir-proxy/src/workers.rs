//! Per-core serving (`weir run --runtime per-core`): N single-threaded tokio runtimes, one
//! per OS thread, each running its own accept loop on its own `SO_REUSEPORT` socket for every
//! TCP listener port (the kernel spreads new connections across them), so a connection, its
//! requests and the upstream connections they use stay on one thread: no work stealing, no
//! cross-thread wake-ups, and each runtime's upstream pools are its own.
//!
//! What the runtimes share is process-wide and thread-safe already: the snapshot (one
//! arc-swap), the runtime policy state (rate-limit buckets, circuit breakers, endpoint
//! health and outlier state, caches, sessions: `Mutex`es and atomics in [`crate::Shared`]),
//! and the metrics (prometheus' atomic counters). What each runtime has of its own is
//! selected by [`PerWorker`], by the index [`enter`] gave the thread.

use std::cell::Cell;
use std::ops::Deref;

use crate::upstream::UpstreamLimits;

thread_local! {
    /// The index of the worker runtime this thread serves (0 off per-core mode).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Mark the calling thread as worker runtime `index`'s (call it once, on that runtime's
/// thread, before it serves anything). Threads never marked count as worker 0.
pub fn enter(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The worker runtime index of the calling thread.
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// One `T` per worker runtime; dereferences to the calling thread's (worker 0's on threads
/// that are no worker's, or for an index past the end).
pub(crate) struct PerWorker<T> {
    each: Box<[T]>,
}

impl<T> PerWorker<T> {
    /// `n` values (at least one) made by `make(index)`.
    pub(crate) fn new(n: usize, make: impl FnMut(usize) -> T) -> Self {
        Self {
            each: (0..n.max(1)).map(make).collect(),
        }
    }
}

impl<T> From<T> for PerWorker<T> {
    fn from(one: T) -> Self {
        Self {
            each: Box::new([one]),
        }
    }
}

impl<T> Deref for PerWorker<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // `each` is never empty (`new` makes at least one); an index past the end (a thread
        // marked for more workers than this value has) gets worker 0's, as documented.
        match self.each.get(current()) {
            Some(mine) => mine,
            None => &self.each[0],
        }
    }
}

/// The share of the per-endpoint upstream limits each of `n` runtimes' pools gets, so the
/// process as a whole keeps about the configured cap (rounded up: never below 1 each).
pub(crate) fn split_limits(limits: UpstreamLimits, n: usize) -> UpstreamLimits {
    let n = n.max(1);
    UpstreamLimits {
        max_connections: limits.max_connections.div_ceil(n).max(1),
        max_pending: limits.max_pending.div_ceil(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_sees_its_own_worker_value() {
        let values = std::sync::Arc::new(PerWorker::new(3, |i| i * 10));
        assert_eq!(*values.as_ref().deref(), 0, "unmarked thread: worker 0");
        let seen: Vec<usize> = (0..4)
            .map(|i| {
                let values = values.clone();
                std::thread::spawn(move || {
                    enter(i);
                    **values
                })
                .join()
                .unwrap_or(usize::MAX)
            })
            .collect();
        // Index 3 is past the end: worker 0's.
        assert_eq!(seen, vec![0, 10, 20, 0]);
    }

    #[test]
    fn limits_are_split_rounding_up() {
        let l = UpstreamLimits {
            max_connections: 1024,
            max_pending: 5,
        };
        assert_eq!(
            split_limits(l, 2),
            UpstreamLimits {
                max_connections: 512,
                max_pending: 3
            }
        );
        assert_eq!(split_limits(l, 1), l);
        let one = UpstreamLimits {
            max_connections: 1,
            max_pending: 0,
        };
        assert_eq!(split_limits(one, 4).max_connections, 1);
    }
}
