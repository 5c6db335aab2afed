//! What the plugin answers besides the upstream's events, in one place: the event stream's
//! head, the head of a non-2xx answer relayed as it is, and every refusal (400, 502, 503,
//! 504) with its status, its body, its drop reason and its log line.
//!
//! A refusal's body says what happened in general terms; which host failed and how, or
//! which value was refused, goes to the log, never into a body an attacker can read. A 503
//! carries `Retry-After`: the client should come back soon.

use http::StatusCode;

use crate::stats::DropReason;
use crate::upstream::{Refused, Unavailable};

/// The headers of every event stream the plugin answers: no caching, and no buffering by
/// a proxy in front (`X-Accel-Buffering` is nginx's).
pub const EVENT_STREAM_HEADERS: [(&str, &[u8]); 3] = [
    ("Content-Type", b"text/event-stream"),
    ("Cache-Control", b"no-cache"),
    ("X-Accel-Buffering", b"no"),
];

/// Why a request gets no stream; each is answered, counted and logged its own way.
#[derive(Debug)]
pub enum Refusal {
    /// A value the client sent may not go upstream (`wire::clean`).
    BadRequest(Refused),
    /// A `max_streams` limit was reached.
    OverLimit,
    /// No backend host gave a response head, or this process could not dial.
    Upstream(Unavailable),
    /// A fan-out source is down.
    SourceDown,
    /// A fan-out source cannot dial for want of local resources.
    SourceShortOfResources,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Upstream(unavailable) => unavailable.status(),
            Refusal::OverLimit | Refusal::SourceDown | Refusal::SourceShortOfResources => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The body, in general terms.
    pub fn body(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad request: it holds a value that cannot be forwarded\n",
            Refusal::OverLimit => "too many streams; retry later\n",
            Refusal::SourceDown => "the stream's source is unavailable; retry later\n",
            Refusal::SourceShortOfResources => "the gateway is short of resources; retry later\n",
            Refusal::Upstream(unavailable) => match unavailable.status() {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the gateway is short of resources; retry later\n"
                }
                StatusCode::GATEWAY_TIMEOUT => "upstream timed out\n",
                _ => "upstream unavailable\n",
            },
        }
    }

    pub fn drop_reason(&self) -> DropReason {
        match self {
            Refusal::BadRequest(_) => DropReason::BadRequest,
            Refusal::OverLimit => DropReason::OverLimit,
            Refusal::SourceDown => DropReason::UpstreamUnavailable,
            Refusal::SourceShortOfResources => DropReason::LocalResources,
            Refusal::Upstream(unavailable) if unavailable.is_local() => DropReason::LocalResources,
            Refusal::Upstream(_) => DropReason::UpstreamUnavailable,
        }
    }

    /// What the log says about it, beyond the count (`None`: the count says it all).
    pub fn log_line(&self) -> Option<LogLine> {
        match self {
            Refusal::BadRequest(why) => Some(LogLine::Info(format!("refused with 400: {why}"))),
            Refusal::Upstream(unavailable) => Some(LogLine::Warn(unavailable.to_string())),
            Refusal::OverLimit | Refusal::SourceDown | Refusal::SourceShortOfResources => None,
        }
    }
}

/// A line for the host's log, at its level.
pub enum LogLine {
    Info(String),
    Warn(String),
}
