//! A hub: one source (an upstream SSE stream or a Kafka topic) and the clients that share
//! it, and the registry that makes the first client of a source start it and the last one
//! (after `linger`) stop it.
//!
//! The source publishes into the hub's [`Ring`] and bumps a `watch` signal; every client
//! task wakes on the signal and copies reference counts of the events it still needs out of
//! the ring under a short lock. Publishing therefore costs the same for one client or ten
//! thousand, and never waits for any of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ring::{Resume, Ring};
use crate::config::Fanout;

/// What a hub's clients wake up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The number the next event will get (the ring's end).
    pub published: u64,
    /// Bumped when the source has been silent for `keepalive`.
    pub keepalives: u64,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The source has not been reached yet.
    Connecting,
    Up,
    /// The last attempt to reach the source failed; it is being retried.
    Down,
    /// The last attempt could not even dial: this process is short of descriptors,
    /// buffers or local ports (no host is blamed); it is being retried.
    NoResources,
    /// The source said it has no more events (an SSE origin's 204).
    Ended,
}

pub struct Hub {
    /// The upstream target or the topic: what the hub's clients share.
    pub key: String,
    state: Mutex<State>,
    signal: watch::Sender<Signal>,
    /// Stops the source once the last client has lingered out.
    pub stop: CancellationToken,
}

pub struct State {
    pub ring: Ring,
    /// The source's position after the newest event: the `Last-Event-ID` an SSE upstream
    /// is resumed with, or a Kafka topic's offsets.
    pub position: String,
    /// The position the source started from.
    resumed_from: Box<str>,
    clients: usize,
    idle_since: Option<Instant>,
}

impl Hub {
    fn new(key: String, config: &Fanout, position: String) -> Self {
        Self {
            key,
            state: Mutex::new(State {
                ring: Ring::new(config.replay, config.replay_bytes, config.replay_age),
                resumed_from: position.as_str().into(),
                position,
                clients: 0,
                idle_since: None,
            }),
            signal: watch::Sender::new(Signal {
                published: 0,
                keepalives: 0,
                status: Status::Connecting,
            }),
            stop: CancellationToken::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a ring that is still consistent: every
        // change to it is a single push or pop.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes one event: `id` is the source's position after it.
    pub fn publish(&self, id: &str, key: Option<Bytes>, bytes: Bytes) {
        let published = {
            let mut state = self.lock();
            state.ring.push(id.into(), key, bytes);
            state.position.clear();
            state.position.push_str(id);
            state.ring.end()
        };
        self.signal.send_modify(|s| s.published = published);
    }

    pub fn keepalive(&self) {
        self.signal.send_modify(|s| s.keepalives += 1);
    }

    pub fn set_status(&self, status: Status) {
        self.signal.send_if_modified(|s| {
            let changed = s.status != status;
            s.status = status;
            changed
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Signal> {
        self.signal.subscribe()
    }
}

impl State {
    /// Where a client that last saw `id` goes on, and the comment that tells it when the
    /// ring no longer holds that event (it then gets all the ring holds).
    pub fn resume(&mut self, id: &str) -> (u64, Option<String>) {
        match self.ring.resume(id) {
            Resume::At(next) => (next, None),
            // The source itself resumed from this id: all it sent since is new to the client.
            Resume::NotHeld(0) if *self.resumed_from == *id => (0, None),
            Resume::NotHeld(start) => {
                let held = self.ring.end() - start;
                let id: String = id.chars().filter(|c| !c.is_control()).collect();
                let note = format!(
                    ": Last-Event-ID {id:?} is not among the {held} events kept for replay; they follow\n"
                );
                (start, Some(note))
            }
        }
    }
}

/// Bumps the hub's keepalive signal when its source published nothing for `every`.
pub async fn keep_alive(hub: Arc<Hub>, every: Duration) {
    let mut last = hub.signal.borrow().published;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = hub.stop.cancelled() => return,
        }
        let now = hub.signal.borrow().published;
        if now == last {
            hub.keepalive();
        }
        last = now;
    }
}

/// The hubs of one route, by key.
#[derive(Default)]
pub struct Hubs {
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
}

/// A client's share of a hub; leaving (dropping it) may start the hub's linger.
pub struct Membership {
    pub hub: Arc<Hub>,
    hubs: Arc<Hubs>,
    linger: Duration,
}

impl Hubs {
    /// Joins the hub for `key`, creating it (at `position`) and calling `start` with it
    /// when there is none.
    pub fn join(
        self: &Arc<Self>,
        key: &str,
        config: &Fanout,
        position: impl FnOnce() -> String,
        start: impl FnOnce(Arc<Hub>),
    ) -> Membership {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let hub = match hubs.get(key) {
            Some(hub) => hub.clone(),
            None => {
                let hub = Arc::new(Hub::new(key.to_owned(), config, position()));
                hubs.insert(key.to_owned(), hub.clone());
                start(hub.clone());
                hub
            }
        };
        let mut state = hub.lock();
        state.clients += 1;
        state.idle_since = None;
        drop(state);
        Membership {
            hub,
            hubs: self.clone(),
            linger: config.linger,
        }
    }

    /// Hubs open now, for stats.
    pub fn len(&self) -> usize {
        self.hubs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Stops and forgets `hub` if it has had no client for `linger`; otherwise says how
    /// long to wait before asking again (`None`: it has clients, nothing to do).
    fn close_if_idle(&self, hub: &Arc<Hub>, linger: Duration) -> Option<Duration> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let state = hub.lock();
        let idle_since = state.idle_since?;
        let waited = idle_since.elapsed();
        if waited < linger {
            return Some(linger - waited);
        }
        drop(state);
        if hubs.get(&hub.key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            hubs.remove(&hub.key);
        }
        hub.stop.cancel();
        None
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        state.clients -= 1;
        if state.clients > 0 {
            return;
        }
        state.idle_since = Some(Instant::now());
        drop(state);
        let (hub, hubs, linger) = (self.hub.clone(), self.hubs.clone(), self.linger);
        crate::workers::spawn(async move {
            let mut wait = linger;
            loop {
                tokio::time::sleep(wait).await;
                match hubs.close_if_idle(&hub, linger) {
                    Some(more) => wait = more,
                    None => return,
                }
            }
        });
    }
}
