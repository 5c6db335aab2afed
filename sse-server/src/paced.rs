//! A streamed body sent one frame per write, `interval` apart (the first at once), that can
//! be held after K frames until a test releases it, or cut after K frames: what the mock's
//! chat and NDJSON streams are made of ([`crate::llm`]).
//!
//! A hold is what lets a test prove a stream is live without timing anything: the origin
//! cannot send frame K+1 before the test, having seen frame K arrive, releases it. A cut is
//! a body error, on which hyper closes the connection without the chunked body's last
//! chunk: the client sees a stream that broke, not one that ended. hyper drops what it has
//! not flushed when a body fails, so the stream first yields once: hyper flushes frame K
//! whenever the body is pending.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::Semaphore;
use tokio_util::sync::PollSemaphore;

use crate::bench::OpenStream;

/// How a paced stream is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub interval: Duration,
    /// Wait for a release after this many frames.
    pub hold_after: Option<usize>,
    /// Cut the connection after this many frames.
    pub cut_after: Option<usize>,
}

/// The error that cuts a paced stream on purpose.
#[derive(Debug, thiserror::Error)]
#[error("the stream was cut after {0} frames, as the request asked (X-Mock-Break-After)")]
pub struct StreamCut(pub usize);

/// Lets held streams go on: each permit added releases one hold.
#[derive(Clone)]
pub struct Releases(Arc<Semaphore>);

impl Default for Releases {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }
}

impl Releases {
    /// Lets one held stream go on, or the next one to reach its hold.
    pub fn release_one(&self) {
        self.0.add_permits(1);
    }
}

pub struct PacedStream<F> {
    frames: F,
    pacing: Pacing,
    sent: usize,
    ticks: tokio::time::Interval,
    /// `None` once the hold (if any) is behind.
    release: Option<PollSemaphore>,
    /// The cut is due and hyper had its chance to flush what came before.
    cut_due: bool,
    _open: OpenStream,
}

impl<F: Iterator<Item = Bytes>> PacedStream<F> {
    pub fn new(frames: F, pacing: Pacing, releases: &Releases, open: OpenStream) -> Self {
        let mut ticks = tokio::time::interval(pacing.interval.max(Duration::from_micros(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            frames,
            pacing,
            sent: 0,
            ticks,
            release: pacing
                .hold_after
                .map(|_| PollSemaphore::new(releases.0.clone())),
            cut_due: false,
            _open: open,
        }
    }
}

impl<F: Iterator<Item = Bytes> + Unpin> Body for PacedStream<F> {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = &mut *self;
        if this.pacing.cut_after == Some(this.sent) {
            if this.cut_due {
                return Poll::Ready(Some(Err(StreamCut(this.sent))));
            }
            this.cut_due = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.pacing.hold_after == Some(this.sent) {
            if let Some(release) = &mut this.release {
                let permit = ready!(release.poll_acquire(cx));
                permit
                    .expect("the release semaphore is never closed")
                    .forget();
                this.release = None;
            }
        }
        ready!(this.ticks.poll_tick(cx));
        Poll::Ready(this.frames.next().map(|frame| {
            this.sent += 1;
            Ok(Frame::data(frame))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::OpenStreams;
    use http_body_util::BodyExt;

    fn frames(n: usize) -> impl Iterator<Item = Bytes> + Unpin {
        (0..n).map(|i| Bytes::from(format!("{i};")))
    }

    fn pacing(hold_after: Option<usize>, cut_after: Option<usize>) -> Pacing {
        Pacing {
            interval: Duration::ZERO,
            hold_after,
            cut_after,
        }
    }

    #[tokio::test]
    async fn sends_every_frame_as_one_write() {
        let streams = OpenStreams::default();
        let mut body = PacedStream::new(
            frames(3),
            pacing(None, None),
            &Releases::default(),
            streams.open(),
        );
        for expected in ["0;", "1;", "2;"] {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), expected);
        }
        assert!(body.frame().await.is_none());
        drop(body);
        assert_eq!(streams.count(), 0);
    }

    #[tokio::test]
    async fn a_cut_stream_fails_after_k_frames() {
        let body = PacedStream::new(
            frames(5),
            pacing(None, Some(2)),
            &Releases::default(),
            OpenStreams::default().open(),
        );
        let mut body = std::pin::pin!(body);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        let cut = body.frame().await.unwrap().unwrap_err();
        assert_eq!(cut.0, 2);
    }

    #[tokio::test]
    async fn a_held_stream_waits_for_its_release() {
        let releases = Releases::default();
        let mut body = PacedStream::new(
            frames(3),
            pacing(Some(1), None),
            &releases,
            OpenStreams::default().open(),
        );
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "0;"
        );
        let waiting = tokio::time::timeout(Duration::from_millis(50), body.frame()).await;
        assert!(waiting.is_err(), "frame 1 went out before the release");
        releases.release_one();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "1;"
        );
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "2;"
        );
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_release_given_before_the_hold_is_kept_for_it() {
        let releases = Releases::default();
        releases.release_one();
        let body = PacedStream::new(
            frames(2),
            pacing(Some(1), None),
            &releases,
            OpenStreams::default().open(),
        );
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all, "0;1;");
    }
}
