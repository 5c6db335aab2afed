//! Counters for the host's `/__stats`: plain atomics bumped on the streams' paths (once
//! per read or per stream, never under a lock), read only when someone asks. Two
//! histograms per route, the time to a stream's first event and its duration, go out with
//! their bucket bounds (`{"le", "buckets", "count", "sum"}`), which the host's `/metrics`
//! renders as Prometheus histograms.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

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

/// Bounds of `first_event_seconds`, from the request to the first event written: an LLM's
/// time to first token is tens of milliseconds to seconds.
pub const FIRST_EVENT_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bounds of `stream_duration_seconds`, from the request to the stream's end: a completion
/// lasts seconds, a feed hours.
pub const DURATION_BOUNDS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// A histogram of durations over 12 bounds its owner names (each count is of the
/// observations at or below its bound, as Prometheus has them).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one observation; `bounds` are the histogram's (see [`RouteStats`]).
    fn observe(&self, bounds: &[f64; 12], took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(bounds) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn to_json(&self, bounds: &[f64; 12]) -> Value {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        json!({
            "le": bounds,
            "buckets": buckets,
            "count": self.count.load(Relaxed),
            "sum": self.sum_us.load(Relaxed) as f64 / 1e6,
        })
    }
}

/// The time to a stream's first event, over [`FIRST_EVENT_BOUNDS`].
#[derive(Default)]
pub struct FirstEvent(Histogram);

impl FirstEvent {
    pub fn record(&self, took: Duration) {
        self.0.observe(&FIRST_EVENT_BOUNDS, took);
    }
}

/// A stream's duration, over [`DURATION_BOUNDS`].
#[derive(Default)]
pub struct StreamDuration(Histogram);

impl StreamDuration {
    pub fn record(&self, took: Duration) {
        self.0.observe(&DURATION_BOUNDS, took);
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
    pub first_event: FirstEvent,
    pub duration: StreamDuration,
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
            "first_event_seconds": self.first_event.0.to_json(&FIRST_EVENT_BOUNDS),
            "stream_duration_seconds": self.duration.0.to_json(&DURATION_BOUNDS),
            "drops": drops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_at_and_above_its_bucket() {
        let stats = RouteStats::default();
        for ms in [3, 40, 40, 2_000, 60_000] {
            stats.first_event.record(Duration::from_millis(ms));
        }
        let json = &stats.to_json()["first_event_seconds"];
        assert_eq!(json["le"][0], 0.005);
        assert_eq!(
            json["buckets"],
            json!([1, 1, 1, 3, 3, 3, 3, 3, 4, 4, 4, 4]),
            "{json}"
        );
        assert_eq!(
            json["count"], 5,
            "the one over 30 s is counted in +Inf only"
        );
        assert_eq!(json["sum"], 62.083);
    }

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
