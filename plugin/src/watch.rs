//! A future polled only when the waker it was last given has been woken, not at every wake
//! of its task: the session's wait for its client's end, and the pump's timer.
//!
//! A relayed stream's task wakes once per upstream read, and each wake polls, beside the
//! upstream, the client's end and the stream's timer. Polled as they are, these cost a
//! lock and a waker store per wake (tokio's reactor stores the client socket's read waker
//! under the socket's lock, the host's bridged stream keeps its waker under a lock too, a
//! timer compares and swaps its waker in) although nothing changed. So they are polled
//! with a waker of the watch's own, which notes that it was woken before waking the task:
//! until it is, their answer cannot have changed (a pending poll's waker is woken when it
//! may), and a poll is one load. A watched future that was ready is polled again at the
//! next poll (a timer reset after it fired, or an end seen, is asked afresh).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// The waker the transport holds: it notes the wake, then wakes the task.
struct Noted {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for Noted {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake_by_ref();
    }
}

/// `None` until the first poll: a stream that never waits on it allocates nothing.
#[derive(Default)]
pub struct Watch(Option<Arc<Noted>>);

impl Watch {
    /// `poll`'s answer, asked again only if the watch's waker was woken since the last
    /// time (or the last answer was ready, or the task's waker changed, or this is the
    /// first time). Inline, as at most wakes it is this one load and compare.
    #[inline]
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<()>,
    ) -> Poll<()> {
        match &self.0 {
            Some(noted)
                if !noted.woken.load(Ordering::Acquire) && noted.task.will_wake(cx.waker()) =>
            {
                Poll::Pending
            }
            _ => self.ask(cx, poll),
        }
    }

    /// Polls with the watch's waker, made anew for another task's waker.
    fn ask(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<()>,
    ) -> Poll<()> {
        let noted = match &self.0 {
            Some(noted) if noted.task.will_wake(cx.waker()) => {
                // Before the poll: a wake during it is noted for the next.
                noted.woken.store(false, Ordering::SeqCst);
                noted
            }
            _ => self.0.insert(Arc::new(Noted {
                woken: AtomicBool::new(false),
                task: cx.waker().clone(),
            })),
        };
        let waker = Waker::from(noted.clone());
        let poll = poll(&mut Context::from_waker(&waker));
        if poll.is_ready() {
            // Asked again, it answers again.
            noted.woken.store(true, Ordering::SeqCst);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A task: counts its wake-ups.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A watched future (a transport's end): pending, keeping the waker it was polled
    /// with, until `gone`; counts its polls.
    #[derive(Default)]
    struct End {
        polls: usize,
        gone: bool,
        waker: Option<Waker>,
    }

    impl End {
        fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            if self.gone {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn the_future_is_polled_again_only_after_its_waker_was_woken() {
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut watch, mut end) = (Watch::default(), End::default());
        for _ in 0..3 {
            assert!(watch.poll(&mut cx, |cx| end.poll(cx)).is_pending());
        }
        assert_eq!(end.polls, 1, "the wakes in between changed nothing");

        end.gone = true;
        end.waker.take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(watch.poll(&mut cx, |cx| end.poll(cx)).is_ready());
        assert!(watch.poll(&mut cx, |cx| end.poll(cx)).is_ready());
        assert_eq!(end.polls, 3, "an end, once seen, is seen again");
    }

    #[test]
    fn another_task_s_waker_is_given_to_the_future() {
        let (first, second) = (
            Arc::new(Task(AtomicUsize::new(0))),
            Arc::new(Task(AtomicUsize::new(0))),
        );
        let (mut watch, mut end) = (Watch::default(), End::default());
        let waker = Waker::from(first.clone());
        assert!(watch
            .poll(&mut Context::from_waker(&waker), |cx| end.poll(cx))
            .is_pending());
        let waker = Waker::from(second.clone());
        assert!(watch
            .poll(&mut Context::from_waker(&waker), |cx| end.poll(cx))
            .is_pending());
        assert_eq!(end.polls, 2);
        end.waker.take().unwrap().wake();
        assert_eq!(
            (
                first.0.load(Ordering::SeqCst),
                second.0.load(Ordering::SeqCst)
            ),
            (0, 1),
            "the task polling last is woken"
        );
    }
}
