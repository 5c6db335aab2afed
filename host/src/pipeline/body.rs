//! A client's request body on its way to backends, bounded: at most the endpoint's
//! `max_body_bytes` (a declared `Content-Length` over it is refused before a byte is
//! read, a chunked body as soon as it grows past it) and within `read_timeout` (which the
//! gate keeps, see [`RequestTimedOut`]). A refusal is answered 413 or 408 when no response
//! has started; it is also remembered, since a `no-op` backend call that the body cut
//! short only reports that the call failed.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{ClientBody, Refusal};
use crate::gate::RequestTimedOut;

/// How reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Refused(Refusal),
    /// The client broke the body (a bad chunk, a connection closed inside it).
    #[error("reading the request body: {0}")]
    Client(super::BoxError),
}

/// The refusal a [`RequestBody`] ended in, if any, for whoever gave the body away.
pub type Refused = Arc<OnceLock<Refusal>>;

pub struct RequestBody {
    incoming: ClientBody,
    limit: u64,
    /// Bytes taken so far.
    taken: u64,
    refused: Refused,
}

impl RequestBody {
    /// `incoming` bounded by `limit` bytes, or the refusal when its declared length is over.
    pub fn new(incoming: ClientBody, limit: u64) -> Result<(Self, Refused), Refusal> {
        if incoming.size_hint().lower() > limit {
            return Err(Refusal::BodyTooLarge(limit));
        }
        let refused = Refused::default();
        let body = Self {
            incoming,
            limit,
            taken: 0,
            refused: refused.clone(),
        };
        Ok((body, refused))
    }

    fn refuse(&self, refusal: Refusal) -> BodyError {
        let _ = self.refused.set(refusal.clone());
        BodyError::Refused(refusal)
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = match ready!(Pin::new(&mut this.incoming).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Ok(frame)) => frame,
            Some(Err(e)) if RequestTimedOut::caused(&*e) => {
                return Poll::Ready(Some(Err(this.refuse(Refusal::BodyTimedOut))))
            }
            Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Client(e)))),
        };
        if let Some(data) = frame.data_ref() {
            this.taken += data.len() as u64;
            if this.taken > this.limit {
                return Poll::Ready(Some(Err(this.refuse(Refusal::BodyTooLarge(this.limit)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
