//! Counters for the host's `/__stats`: plain atomics bumped on the streams' paths (once
//! per read or per stream, never under a lock), read only when someone asks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use serde_json::{json, Value};

/// Why the plugin ended a stream, or refused one (a client that leaves is not a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
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
    /// Refused with 400: a value the client sent may not go upstream (`wire::clean`).
    BadRequest,
    /// The JWT that authorised the stream expired (its `exp` plus the leeway).
    TokenExpired,
    /// Refused with 503: this process could not open a connection upstream (descriptors,
    /// buffers or local ports ran out), which is not the origin's failure.
    LocalResources,
}

impl DropReason {
    const ALL: [DropReason; 9] = [
        DropReason::OverLimit,
        DropReason::UpstreamUnavailable,
        DropReason::ReconnectsExhausted,
        DropReason::ClientStalled,
        DropReason::Shutdown,
        DropReason::ClientLagged,
        DropReason::BadRequest,
        DropReason::TokenExpired,
        DropReason::LocalResources,
    ];

    /// The name in `/__stats`, the metrics' `reason` label and README.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::OverLimit => "over_limit",
            DropReason::UpstreamUnavailable => "upstream_unavailable",
            DropReason::ReconnectsExhausted => "reconnects_exhausted",
            DropReason::ClientStalled => "client_stalled",
            DropReason::Shutdown => "shutdown",
            DropReason::ClientLagged => "client_lagged",
            DropReason::BadRequest => "bad_request",
            DropReason::TokenExpired => "token_expired",
            DropReason::LocalResources => "local_resources",
        }
    }
}

#[derive(Default)]
pub struct RouteStats {
    /// Streams open now (also the route's `max_streams` counter).
    pub active: AtomicUsize,
    pub streams: AtomicU64,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub reconnects: AtomicU64,
    pub failovers: AtomicU64,
    /// Events a fan-out source dropped for being over `max_event_bytes`.
    pub oversized_events: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl RouteStats {
    pub fn dropped(&self, why: DropReason) {
        self.drops[why as usize].fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn to_json(&self) -> Value {
        let drops: serde_json::Map<String, Value> = DropReason::ALL
            .iter()
            .zip(&self.drops)
            .map(|(why, n)| (why.name().to_owned(), n.load(Relaxed).into()))
            .collect();
        json!({
            "active": self.active.load(Relaxed),
            "streams": self.streams.load(Relaxed),
            "events": self.events.load(Relaxed),
            "bytes": self.bytes.load(Relaxed),
            "reconnects": self.reconnects.load(Relaxed),
            "failovers": self.failovers.load(Relaxed),
            "oversized_events": self.oversized_events.load(Relaxed),
            "drops": drops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_drop_counts_under_its_own_name() {
        let stats = RouteStats::default();
        for (i, why) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(
                why as usize, i,
                "ALL lists the reasons in declaration order"
            );
            for _ in 0..=i {
                stats.dropped(why);
            }
        }
        let drops = &stats.to_json()["drops"];
        for (i, why) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(drops[why.name()], i + 1, "{drops}");
        }
    }
}
