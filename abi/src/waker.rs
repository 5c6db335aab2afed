//! The plugin's side of the waker protocol: a task's `std::task::Waker` as the
//! [`FfiWaker`] the host keeps.
//!
//! A poll in the steady state allocates nothing: [`WakerCache`] builds a new [`FfiWaker`]
//! only when the task's waker changes (`Waker::will_wake`), and hands the host the same
//! reference-counted object otherwise.

use std::task::Waker;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::RArc;

use crate::transport::{FfiWake, FfiWake_TO, FfiWaker};

/// A plugin task's waker, as the host calls it.
#[derive(Clone)]
struct TaskWaker(Waker);

impl FfiWake for TaskWaker {
    fn wake(&self) {
        self.0.wake_by_ref();
    }
}

/// The last waker handed to the host, with the task waker it wraps.
#[derive(Default)]
pub struct WakerCache {
    last: Option<(Waker, FfiWaker)>,
}

impl WakerCache {
    /// The [`FfiWaker`] for `waker`, the same one while the task's waker stays the same.
    pub fn get(&mut self, waker: &Waker) -> &FfiWaker {
        let fresh = !matches!(&self.last, Some((cached, _)) if cached.will_wake(waker));
        if fresh {
            let ffi = FfiWake_TO::from_ptr(RArc::new(TaskWaker(waker.clone())), TD_Opaque);
            self.last = Some((waker.clone(), ffi));
        }
        &self.last.as_ref().expect("just filled").1
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn the_host_wakes_the_task_whose_waker_the_cache_holds() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cache = WakerCache::default();
        let first = cache.get(&waker).clone();
        first.wake();
        first.clone().wake();
        assert_eq!(count.0.load(SeqCst), 2);
        drop(first);
        cache.get(&waker.clone()).wake();
        assert_eq!(count.0.load(SeqCst), 3);

        let other = Arc::new(Count(AtomicUsize::new(0)));
        cache.get(&Waker::from(other.clone())).wake();
        assert_eq!((count.0.load(SeqCst), other.0.load(SeqCst)), (3, 1));
    }
}
