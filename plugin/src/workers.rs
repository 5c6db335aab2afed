//! The plugin's threads: one single-threaded tokio runtime per core, streams dealt to them
//! in turn.
//!
//! A stream's two sockets then wake one thread, which runs the pump to completion: no work
//! stealing, no second thread woken to take a task the first one could have run, which on a
//! shared VM costs more latency than the pump itself. It is nginx's worker model inside one
//! process. (A cdylib has its own copy of tokio, so these runtimes are the plugin's own;
//! nothing runtime-bound crosses the ABI.)

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use once_cell::sync::Lazy;
use tokio::runtime::{Builder, Handle};

/// Shared by every instance of the plugin in this process.
static WORKERS: Lazy<Workers> = Lazy::new(Workers::start);

struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    fn start() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let handles = (0..threads)
            .map(|i| {
                let runtime = Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the streaming plugin cannot start its runtime");
                let handle = runtime.handle().clone();
                std::thread::Builder::new()
                    .name(format!("streaming-{i}"))
                    .spawn(move || runtime.block_on(std::future::pending::<()>()))
                    .expect("the streaming plugin cannot start its threads");
                handle
            })
            .collect();
        Self {
            handles,
            next: AtomicUsize::new(0),
        }
    }
}

/// Runs `task` on the next worker thread.
pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    let workers = &*WORKERS;
    let i = workers.next.fetch_add(1, Relaxed) % workers.handles.len();
    workers.handles[i].spawn(task);
}
