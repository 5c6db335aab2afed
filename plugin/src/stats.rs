//! Counters for the host's `/__stats`: plain atomics bumped on the streams' paths (once
//! per read or per stream, never under a lock), read only when someone asks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use serde_json::{json, Value};

/// Why the plugin ended a stream (a client that leaves is not a drop).
#[derive(Debug, Clone, Copy)]
pub enum Drop {
    /// Refused with 503: a `max_streams` limit was reached.
    OverLimit,
    /// No backend host answered the first request (502/504).
    UpstreamUnavailable,
    /// The upstream kept failing: `max_reconnects` within `reconnect_window` were used.
    ReconnectsExhausted,
    /// The client read nothing for `client_write_timeout`.
    ClientStalled,
    /// The gateway drained for a shutdown.
    Shutdown,
    /// A fan-out client fell more than `client_queue` events behind its source.
    ClientLagged,
}

const DROP_NAMES: [&str; 6] = [
    "over_limit",
    "upstream_unavailable",
    "reconnects_exhausted",
    "client_stalled",
    "shutdown",
    "client_lagged",
];

#[derive(Default)]
pub struct RouteStats {
    /// Streams open now (also the route's `max_streams` counter).
    pub active: AtomicUsize,
    pub streams: AtomicU64,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub reconnects: AtomicU64,
    pub failovers: AtomicU64,
    drops: [AtomicU64; 6],
}

impl RouteStats {
    pub fn dropped(&self, why: Drop) {
        self.drops[why as usize].fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn to_json(&self) -> Value {
        let drops: serde_json::Map<String, Value> = DROP_NAMES
            .iter()
            .zip(&self.drops)
            .map(|(name, n)| ((*name).to_owned(), n.load(Relaxed).into()))
            .collect();
        json!({
            "active": self.active.load(Relaxed),
            "streams": self.streams.load(Relaxed),
            "events": self.events.load(Relaxed),
            "bytes": self.bytes.load(Relaxed),
            "reconnects": self.reconnects.load(Relaxed),
            "failovers": self.failovers.load(Relaxed),
            "drops": drops,
        })
    }
}
