//! The answers the pipeline gives instead of a backend's, each mapped to its response here.
//!
//! A client learns what happened in general terms ("upstream unavailable") and never which
//! host, port or error stood behind it: that is for the log, which gets the full reason
//! where the failure happens.

use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use super::{text, Body};

/// Why the pipeline answered itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A value the client sent may not go upstream.
    #[error("bad request: {0}")]
    Unclean(#[from] wire::clean::Unclean),
    #[error("bad request: a control character in the header {0}")]
    UncleanHeader(HeaderName),
    #[error("bad request: an empty segment in the path")]
    EmptySegment,
    /// The client broke its body (a bad chunk, a connection closed inside it).
    #[error("bad request: the request body could not be read")]
    Body,
    /// The request body is over `max_body_bytes` (the limit).
    #[error("413 request body too large")]
    BodyTooLarge(u64),
    /// The request was not received within `read_timeout`.
    #[error("408 request body not received in time")]
    BodyTimedOut,
    /// No backend could be reached, or it broke the exchange.
    #[error("upstream unavailable")]
    Unavailable,
    #[error("upstream timed out")]
    UpstreamTimedOut,
    /// Every backend of a `json` endpoint failed (an error status, not JSON, unreachable).
    #[error("upstream failed")]
    Failed,
    /// The backend request could not be built.
    #[error("internal error")]
    Internal,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unclean(_)
            | Refusal::UncleanHeader(_)
            | Refusal::EmptySegment
            | Refusal::Body => StatusCode::BAD_REQUEST,
            Refusal::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimedOut => StatusCode::REQUEST_TIMEOUT,
            Refusal::Unavailable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimedOut => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Failed | Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn response(&self) -> Response<Body> {
        let mut response = text(self.status(), format!("{self}\n"));
        let headers = response.headers_mut();
        headers.insert("X-KrakenD-Completed", HeaderValue::from_static("false"));
        // What is left of a body refused on the way is not worth reading.
        if matches!(self, Refusal::BodyTooLarge(_) | Refusal::BodyTimedOut) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
