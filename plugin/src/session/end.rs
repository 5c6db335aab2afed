//! Why a client's stream ended, as a type: each end knows the drop it counts (none when
//! the client left or the source ended), whether the client is reset rather than closed,
//! and the words of the stream's access-log line. Sources return an [`End`]; only
//! [`super::Session::end`] acts on it.

use crate::stats::DropReason;

/// Why the gateway ends a stream that could go on. It ends at an event boundary, after
/// the block's `shutdown_event` if one is set, so the browser reconnects at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CutOff {
    /// The gateway drains.
    #[error("the gateway drained")]
    Drain,
    /// The JWT that authorised the stream expired (`exp` plus the leeway): the browser
    /// comes back with a fresh one, or gets 401.
    #[error("the token expired")]
    TokenExpired,
}

/// How a client's stream ended; the text is its access-log line's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum End {
    /// The client closed its side, or its socket failed.
    #[error("the client left")]
    ClientLeft,
    /// The client took nothing for `client_write_timeout`.
    #[error("the client stalled")]
    ClientStalled,
    /// A fan-out client owes more than `client_queue` live events.
    #[error("the client fell more than client_queue events behind")]
    ClientLagged,
    /// A fan-out client's place left the ring before it took it.
    #[error("the client fell behind the replay buffer")]
    FellOffTheRing,
    #[error("the client left during its catch-up")]
    ClientLeftInCatchUp,
    #[error("the client stalled during its catch-up")]
    ClientStalledInCatchUp,
    #[error(transparent)]
    CutOff(#[from] CutOff),
    /// The client holds part of an event (larger than `read_buffer_bytes`) that no other
    /// connection can finish.
    #[error("the upstream ended inside an event")]
    UpstreamEndedInsideEvent,
    /// `max_reconnects` within `reconnect_window` were used.
    #[error("the upstream could not be resumed")]
    ReconnectsExhausted,
    /// Resuming, the origin answered 204 (EventSource's "stop") or another non-2xx.
    #[error("the upstream could not be resumed")]
    UpstreamStopped,
    /// A non-2xx answer was relayed as it is, to its end.
    #[error("the upstream's answer was relayed")]
    AnswerRelayed,
    /// A fan-out source said it has no more events (an SSE origin's 204).
    #[error("the source ended")]
    SourceEnded,
    /// A Kafka catch-up could not reach the brokers.
    #[error("the broker is unavailable")]
    BrokerUnavailable,
    #[error("the catch-up could not start")]
    NoCatchUpTurn,
}

impl End {
    /// The drop it counts in `/__stats`; `None` for ends that are no one's fault.
    pub fn drop_reason(self) -> Option<DropReason> {
        match self {
            End::ClientStalled | End::ClientStalledInCatchUp => Some(DropReason::ClientStalled),
            End::ClientLagged | End::FellOffTheRing => Some(DropReason::ClientLagged),
            End::CutOff(CutOff::Drain) => Some(DropReason::Shutdown),
            End::CutOff(CutOff::TokenExpired) => Some(DropReason::TokenExpired),
            End::ReconnectsExhausted => Some(DropReason::ReconnectsExhausted),
            End::ClientLeft
            | End::ClientLeftInCatchUp
            | End::UpstreamEndedInsideEvent
            | End::UpstreamStopped
            | End::AnswerRelayed
            | End::SourceEnded
            | End::BrokerUnavailable
            | End::NoCatchUpTurn => None,
        }
    }

    /// The client stopped taking its stream: it is reset, so that the kernel frees what it
    /// left unread at once instead of holding it for as long as the client keeps its
    /// window shut.
    pub fn resets(self) -> bool {
        matches!(
            self.drop_reason(),
            Some(DropReason::ClientStalled | DropReason::ClientLagged)
        )
    }

    /// The same end, reached while the client was catching up from the broker.
    pub fn in_catch_up(self) -> Self {
        match self {
            End::ClientLeft => End::ClientLeftInCatchUp,
            End::ClientStalled => End::ClientStalledInCatchUp,
            other => other,
        }
    }
}
