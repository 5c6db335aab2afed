//! The drain, spread: on the host's `shutdown`, each stream ends at its own moment within
//! `drain_spread`, at the first event boundary after it, not all at once, so that the
//! clients' reconnects reach the process that replaces this one gradually rather than as
//! one thundering herd.
//!
//! Each stream draws a turn when it starts, a fraction of the spread; the turns follow a
//! Weyl sequence (multiples of 2^32 / the golden ratio, modulo 2^32), which spreads any
//! number of consecutive streams near-evenly over the window without a random source:
//! whichever streams are still open at the drain, their ends cover it.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::OnceLock;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// 2^32 / φ, odd: consecutive multiples modulo 2^32 visit every turn, well apart.
const GOLDEN_STEP: u32 = 2_654_435_769;

/// A stream's place in the drain's window: `turn / 2^32` of `drain_spread` after its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn(u32);

#[derive(Debug, Default)]
pub struct Drain {
    started: CancellationToken,
    /// When the drain started and over how long it spreads; set before `started` fires.
    window: OnceLock<(Instant, Duration)>,
    next_turn: AtomicU32,
}

impl Drain {
    /// A turn for a stream that starts now.
    pub fn turn(&self) -> Turn {
        Turn(
            self.next_turn
                .fetch_add(1, Relaxed)
                .wrapping_mul(GOLDEN_STEP),
        )
    }

    /// Starts the drain, the streams' ends spread over `spread` from now. Once only: a
    /// second call changes nothing.
    pub fn start(&self, spread: Duration) {
        let _ = self.window.set((Instant::now(), spread));
        self.started.cancel();
    }

    /// When the stream of `turn` is to end; `None` before the drain.
    fn moment(&self, turn: Turn) -> Option<Instant> {
        let (start, spread) = self.window.get()?;
        Some(*start + spread.mul_f64(f64::from(turn.0) / 4_294_967_296.0))
    }

    /// Whether the stream of `turn` is past its moment.
    pub fn is_due(&self, turn: Turn) -> bool {
        self.moment(turn).is_some_and(|at| Instant::now() >= at)
    }

    /// Completes at the moment of the stream of `turn`. Small while it waits for the drain
    /// (every stream's task polls one): the timer is boxed, made only once the drain starts.
    /// Cheap to poll on every wake of its task: once the token holds the task's waker, it
    /// is asked again (its poll takes the token's lock) only when the drain has started,
    /// which `window` says in one atomic load, or when the waker to wake is another.
    pub async fn due(&self, turn: Turn) {
        let mut started = pin!(self.started.cancelled());
        let mut registered: Option<Waker> = None;
        std::future::poll_fn(move |cx| {
            let waiting = self.window.get().is_none();
            if waiting && registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            let poll = started.as_mut().poll(cx);
            registered = Some(cx.waker().clone());
            poll
        })
        .await;
        if let Some(at) = self.moment(turn) {
            Box::pin(tokio::time::sleep_until(at)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Context;

    use super::*;

    #[test]
    fn any_run_of_consecutive_turns_covers_the_window_near_evenly() {
        let drain = Drain::default();
        // Streams that started earlier (and may have ended) took other turns.
        for _ in 0..1234 {
            drain.turn();
        }
        for streams in [10u32, 100, 1000, 10_000] {
            let mut turns: Vec<u64> = (0..streams).map(|_| u64::from(drain.turn().0)).collect();
            turns.sort_unstable();
            turns.push(turns[0] + (1 << 32));
            let widest = turns.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            // Evenly, each gap would be 1/streams of the window; the golden step's widest
            // is under twice that.
            let share = widest as f64 * f64::from(streams) / 4_294_967_296.0;
            assert!(
                share < 2.0,
                "{streams} streams: the widest gap is {share} shares"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_due_at_its_own_moment_within_the_spread() {
        let drain = Drain::default();
        let (first, second) = (drain.turn(), drain.turn());
        assert!(!drain.is_due(first), "no drain yet");
        let started = Instant::now();
        drain.start(Duration::from_secs(8));
        assert!(drain.is_due(first), "turn 0 ends at the drain's start");
        drain.due(first).await;
        assert_eq!(Instant::now(), started);
        assert!(!drain.is_due(second));
        drain.due(second).await;
        // 2654435769 / 2^32 (1 / φ) of 8 s.
        let waited = Instant::now() - started;
        assert!(
            (waited.as_secs_f64() - 8.0 * 0.618_034).abs() < 0.001,
            "{waited:?}"
        );
        assert!(drain.is_due(second));
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn counting() -> (std::sync::Arc<Wakes>, Waker) {
        let wakes = std::sync::Arc::new(Wakes(0.into()));
        (wakes.clone(), Waker::from(wakes))
    }

    /// `due` skips the token while its waker is the one registered: the drain's start must
    /// still wake that waker, or, polled since with another waker, that one only.
    #[tokio::test]
    async fn the_drain_wakes_a_due_polled_again_and_again_with_its_latest_waker() {
        for switched in [false, true] {
            let drain = Drain::default();
            let turn = drain.turn();
            let (first_wakes, first) = counting();
            let (latest_wakes, latest) = counting();
            let mut due = pin!(drain.due(turn));
            let mut poll = |waker: &Waker| due.as_mut().poll(&mut Context::from_waker(waker));
            for _ in 0..3 {
                assert!(poll(&first).is_pending());
            }
            let (woken, not_woken) = match switched {
                true => {
                    assert!(poll(&latest).is_pending());
                    (&latest_wakes, &first_wakes)
                }
                false => (&first_wakes, &latest_wakes),
            };
            drain.start(Duration::ZERO);
            assert_eq!(
                woken.0.load(Relaxed),
                1,
                "switched {switched}: the waker is woken"
            );
            assert_eq!(not_woken.0.load(Relaxed), 0, "switched {switched}");
            tokio::time::timeout(testkit::STEP, due)
                .await
                .expect("turn 0 ends at the drain's start");
        }
    }
}
