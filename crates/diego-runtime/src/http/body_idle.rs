//! A request body that fails when the client stops sending it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::{Bytes, Incoming};
use tokio::time::{Instant, Sleep};

/// The error a handler reads from a body that stalled.
#[derive(Debug, thiserror::Error)]
#[error("no part of the request body arrived for {0:?}")]
pub struct BodyStalled(pub Duration);

/// Set once the body stalled, so the server answers 408 whatever the handler made of the
/// error.
#[derive(Debug, Clone, Default)]
pub struct Stalled(Arc<AtomicBool>);

impl Stalled {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `inner`, failing with [`BodyStalled`] when the handler has waited `idle` for its next
/// frame. Only time spent waiting on the client counts: a handler that reads late, or
/// slowly, is not the client's fault, and a large upload that keeps moving is never cut.
pub struct IdleTimeoutBody {
    inner: Incoming,
    idle: Duration,
    /// Armed when the handler starts waiting for a frame, disarmed when one arrives.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    stalled: Stalled,
}

impl IdleTimeoutBody {
    pub fn new(inner: Incoming, idle: Duration, stalled: Stalled) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            waiting: false,
            stalled,
        }
    }
}

impl Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.idle;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.waiting {
            timer.as_mut().reset(deadline);
            this.waiting = true;
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.stalled.0.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(BodyStalled(this.idle).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
