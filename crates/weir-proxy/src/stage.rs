//! The futures a request's stages build, as plain structs instead of `async` blocks.
//!
//! Why: a request's future lives in its connection for the whole exchange (HTTP/1.1) or is
//! copied into a task per stream (HTTP/2), and everything it holds is moved around with it.
//! An `async fn` keeps each by-value argument twice (as an argument and as a local), and an
//! `async` block that awaits a future it captured holds that future twice (the capture and
//! the pinned copy it polls), so a request passed down five async levels was stored about
//! ten times (a 5 KB future, two thirds of it copies of the request). Here the request
//! stages run as plain functions, and what is left to wait for is one chain of these
//! combinators around the exchange, each holding its inner future once, in place.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::ProxyError;

pin_project! {
    /// A stage's outcome: settled already (an answer or an error from a stage that needed
    /// no I/O), or a future still to wait for.
    #[project = StagedProj]
    pub(crate) enum Staged<F, T> {
        Done { out: Option<Result<T, ProxyError>> },
        Waiting { #[pin] fut: F },
    }
}

impl<F, T> Staged<F, T> {
    pub(crate) fn done(out: Result<T, ProxyError>) -> Self {
        Staged::Done { out: Some(out) }
    }

    pub(crate) fn waiting(fut: F) -> Self {
        Staged::Waiting { fut }
    }
}

impl<F, T> Future for Staged<F, T>
where
    F: Future<Output = Result<T, ProxyError>>,
{
    type Output = Result<T, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            StagedProj::Waiting { fut } => fut.poll(cx),
            StagedProj::Done { out } => match out.take() {
                Some(out) => Poll::Ready(out),
                // Polled again after it finished: never done by the callers (an `.await`).
                None => Poll::Pending,
            },
        }
    }
}

pin_project! {
    /// `fut`, failed with the error `elapsed` makes once `limit` has passed since it was
    /// built (no limit: `fut` as it is, and no timer).
    pub(crate) struct Bounded<F, E> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Option<Sleep>,
        elapsed: Option<E>,
    }
}

impl<F, E> Bounded<F, E> {
    /// Always inlined: called out of line it takes `fut` (the request's whole exchange) by
    /// value and copies it once more.
    #[inline(always)]
    pub(crate) fn new(fut: F, limit: Option<Duration>, elapsed: E) -> Self {
        Self {
            fut,
            sleep: limit.map(tokio::time::sleep),
            elapsed: Some(elapsed),
        }
    }
}

impl<F, E, T> Future for Bounded<F, E>
where
    F: Future<Output = Result<T, ProxyError>>,
    E: FnOnce() -> ProxyError,
{
    type Output = Result<T, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(out);
        }
        let Some(sleep) = this.sleep.as_pin_mut() else {
            return Poll::Pending;
        };
        if sleep.poll(cx).is_pending() {
            return Poll::Pending;
        }
        match this.elapsed.take() {
            Some(elapsed) => Poll::Ready(Err(elapsed())),
            None => Poll::Pending,
        }
    }
}

pin_project! {
    /// `fut`'s success passed through `f`, which may fail (a stage's work on the response,
    /// or a check of it).
    pub(crate) struct AndThen<F, M> {
        #[pin]
        fut: F,
        f: Option<M>,
    }
}

impl<F, M> AndThen<F, M> {
    pub(crate) fn new(fut: F, f: M) -> Self {
        Self { fut, f: Some(f) }
    }
}

impl<F, M, T, U> Future for AndThen<F, M>
where
    F: Future<Output = Result<T, ProxyError>>,
    M: FnOnce(T) -> Result<U, ProxyError>,
{
    type Output = Result<U, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.fut.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(out) => match this.f.take() {
                Some(f) => Poll::Ready(out.and_then(f)),
                None => Poll::Pending,
            },
        }
    }
}

pin_project! {
    /// One of two futures with the same output (the exchange on HTTP/1.1 or on HTTP/2).
    #[project = EitherProj]
    pub(crate) enum Either<A, B> {
        Left { #[pin] fut: A },
        Right { #[pin] fut: B },
    }
}

impl<A, B> Future for Either<A, B>
where
    A: Future,
    B: Future<Output = A::Output>,
{
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EitherProj::Left { fut } => fut.poll(cx),
            EitherProj::Right { fut } => fut.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fails_with_its_error_once_the_limit_passes() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, ProxyError>(1)
        };
        let limit = Duration::from_millis(50);
        let started = std::time::Instant::now();
        let out = Bounded::new(slow, Some(limit), || ProxyError::RequestTimeout(limit)).await;
        assert!(matches!(out, Err(ProxyError::RequestTimeout(l)) if l == limit));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn bounded_passes_through_what_finishes_in_time_or_has_no_limit() {
        let quick = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, ProxyError>(1)
        };
        let limit = Duration::from_millis(50);
        let out = Bounded::new(quick, Some(Duration::from_secs(5)), || {
            ProxyError::RequestTimeout(limit)
        })
        .await;
        assert_eq!(out.unwrap(), 1);
        let slower = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, ProxyError>(2)
        };
        let out = Bounded::new(slower, None, || ProxyError::RequestTimeout(limit)).await;
        assert_eq!(out.unwrap(), 2);
    }

    #[tokio::test]
    async fn staged_and_and_then_carry_results_and_errors() {
        let done: Staged<std::future::Ready<Result<u8, ProxyError>>, u8> = Staged::done(Ok(7));
        assert_eq!(done.await.unwrap(), 7);
        let waiting = Staged::waiting(std::future::ready(Ok::<u8, ProxyError>(8)));
        assert_eq!(AndThen::new(waiting, |n| Ok(n * 2)).await.unwrap(), 16);
        let failed: Staged<std::future::Ready<Result<u8, ProxyError>>, u8> =
            Staged::done(Err(ProxyError::NoRoute));
        let mapped = AndThen::new(failed, |n| Ok(n * 2)).await;
        assert!(matches!(mapped, Err(ProxyError::NoRoute)));
        let refused = Staged::waiting(std::future::ready(Ok::<u8, ProxyError>(8)));
        let checked = AndThen::new(refused, |_| Err::<u8, _>(ProxyError::NoBackend)).await;
        assert!(matches!(checked, Err(ProxyError::NoBackend)));
        let right: Either<std::future::Ready<u8>, std::future::Ready<u8>> = Either::Right {
            fut: std::future::ready(3),
        };
        assert_eq!(right.await, 3);
    }
}
