//! The plugin's wakers as one bridged stream's host objects keep them (a TLS stream in
//! tokio's reactor, an h2 stream), without an allocation per poll: each wait (read, write,
//! closed) has a slot that holds the plugin's latest [`FfiWaker`], updated in place at each
//! poll (a reference count's increment), and the `std::task::Waker`s the host's objects
//! keep are made once, when the stream is handed over, each waking the slots of its waits.
//!
//! A wake takes the plugin's wakers out of their slots and wakes them outside the lock: the
//! plugin's task polls again and so registers again, and its `wake` never runs under a
//! host lock.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use abi::FfiWaker;

/// What a poll waits for. The ABI keeps the wakers of the three apart, so one task may
/// wait on all of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Read = 0,
    /// Writes, flushes and shutdowns.
    Write = 1,
    Closed = 2,
}

type Slots = Mutex<[Option<FfiWaker>; 3]>;

/// A host-side waker: wakes the plugin wakers in the slots of `waits`.
struct Wakes {
    slots: Arc<Slots>,
    waits: &'static [Wait],
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut taken: [Option<FfiWaker>; 3] = Default::default();
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            for &wait in self.waits {
                taken[wait as usize] = slots[wait as usize].take();
            }
        }
        for waker in taken.into_iter().flatten() {
            waker.wake();
        }
    }
}

fn wakes(slots: &Arc<Slots>, waits: &'static [Wait]) -> Waker {
    let slots = slots.clone();
    Waker::from(Arc::new(Wakes { slots, waits }))
}

/// One bridged stream's wakers.
pub struct StreamWakers {
    slots: Arc<Slots>,
    /// The host-side waker of each wait, by [`Wait`]'s index.
    wakers: [Waker; 3],
}

impl StreamWakers {
    /// A waker per wait: a TLS stream's (tokio's reactor keeps its read and write wakers
    /// apart, and `poll_closed` reads).
    pub fn separate() -> Self {
        let slots = Arc::new(Slots::default());
        let wakers = [
            wakes(&slots, &[Wait::Read]),
            wakes(&slots, &[Wait::Write]),
            wakes(&slots, &[Wait::Closed]),
        ];
        Self { slots, wakers }
    }

    /// Writes and `poll_closed` share one waker that wakes both: an h2 stream's (h2 keeps
    /// one waker for a stream's send side, `poll_capacity` and `poll_reset` alike, so
    /// either wait's wake-up must reach both).
    pub fn shared_send() -> Self {
        let slots = Arc::new(Slots::default());
        let send = wakes(&slots, &[Wait::Write, Wait::Closed]);
        let wakers = [wakes(&slots, &[Wait::Read]), send.clone(), send];
        Self { slots, wakers }
    }

    /// Keeps `waker` as the one `wait` wakes, in place of the last, and gives the
    /// host-side waker to poll with: the same one at every poll of the stream's life.
    pub fn register(&self, wait: Wait, waker: &FfiWaker) -> &Waker {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())[wait as usize] = Some(waker.clone());
        &self.wakers[wait as usize]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use abi::waker::WakerCache;

    use super::*;

    /// A plugin task: counts its wake-ups.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn task() -> (Arc<Task>, WakerCache, Waker) {
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        (task, WakerCache::default(), waker)
    }

    fn woken(task: &Task) -> usize {
        task.0.load(SeqCst)
    }

    /// The pending path allocates no waker: every poll, whatever the plugin's waker, gets
    /// the host-side waker made at the start (`will_wake`: the same allocation), and its
    /// wake-up reaches the plugin's latest waker only.
    #[test]
    fn each_poll_reuses_the_stream_s_waker_and_wakes_the_latest_plugin_waker() {
        let wakers = StreamWakers::separate();
        let (first, mut first_cache, first_waker) = task();
        let (second, mut second_cache, second_waker) = task();
        let kept = wakers
            .register(Wait::Read, first_cache.get(&first_waker))
            .clone();
        for _ in 0..3 {
            let again = wakers.register(Wait::Read, first_cache.get(&first_waker));
            assert!(again.will_wake(&kept));
        }
        let replaced = wakers.register(Wait::Read, second_cache.get(&second_waker));
        assert!(
            replaced.will_wake(&kept),
            "a new plugin waker, the same host waker"
        );
        kept.wake_by_ref();
        assert_eq!((woken(&first), woken(&second)), (0, 1));
        // Taken by the wake: the plugin registers again when it polls again.
        kept.wake_by_ref();
        assert_eq!(woken(&second), 1);
    }

    #[test]
    fn separate_waits_wake_only_their_own_and_a_shared_send_waker_wakes_both() {
        let (task, mut cache, waker) = task();
        let separate = StreamWakers::separate();
        let read = separate.register(Wait::Read, cache.get(&waker)).clone();
        let write = separate.register(Wait::Write, cache.get(&waker)).clone();
        assert!(!read.will_wake(&write));
        write.wake_by_ref();
        assert_eq!(woken(&task), 1, "the write's plugin waker");
        write.wake_by_ref();
        assert_eq!(woken(&task), 1, "the read's is still in its slot");
        read.wake_by_ref();
        assert_eq!(woken(&task), 2);

        let (writer, mut writer_cache, writer_waker) = self::task();
        let (closer, mut closer_cache, closer_waker) = self::task();
        let shared = StreamWakers::shared_send();
        let send = shared
            .register(Wait::Write, writer_cache.get(&writer_waker))
            .clone();
        let closed = shared.register(Wait::Closed, closer_cache.get(&closer_waker));
        assert!(closed.will_wake(&send));
        send.wake_by_ref();
        assert_eq!((woken(&writer), woken(&closer)), (1, 1));
    }
}
