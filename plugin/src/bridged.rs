//! A bridged client (TLS or HTTP/2: the host keeps the connection and lends the plugin one
//! request's stream, see `abi::transport`) as a tokio `AsyncRead + AsyncWrite` and a
//! session's [`ClientTransport`], so that a session serves it through the same code as a
//! TCP socket.
//!
//! Each call crosses into the host's code on this thread, with the task's waker wrapped
//! once per waker ([`WakerCache`]: a poll in the steady state allocates nothing). One
//! cache serves reads, writes and `poll_closed`: a stream is one task with one waker, and
//! the host keeps the waits apart itself. (The session polls `poll_closed` with a waker of
//! its own, see `crate::watch`, but only once the host woke that one: the client
//! sent something or left, or over HTTP/2 the stream's send side moved, a window update.
//! The cache is rebuilt then and at the next write, not per event; a second cache would
//! add 40 bytes to every bridged stream, 96 to its whole task.) The vectored write passes
//! at most [`IOV_BATCH`] slices, built on the stack, as the pump's own `writev` does.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use abi::waker::WakerCache;
use abi::{FfiPoll, FfiTransportBox, Header, ResponseHead};
use abi_stable::std_types::{RIoError, RResult, RSlice, RSliceMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::session::{self, ClientTransport, IOV_BATCH};

pub struct BridgedStream {
    transport: FfiTransportBox,
    waker: WakerCache,
}

fn io_error(error: RIoError) -> io::Error {
    io::Error::new(error.kind().into(), error.to_string())
}

fn io_result<T>(poll: FfiPoll<RResult<T, RIoError>>) -> Poll<io::Result<T>> {
    Poll::<RResult<T, RIoError>>::from(poll).map(|result| result.into_result().map_err(io_error))
}

impl BridgedStream {
    pub fn new(transport: FfiTransportBox) -> Self {
        Self {
            transport,
            waker: WakerCache::default(),
        }
    }

    /// Sends the response head, once, then `body` (all of a short answer's body; empty
    /// for a stream, whose body follows through `AsyncWrite`), flushed.
    pub async fn send_head(&mut self, head: ResponseHead, body: &[u8]) -> io::Result<()> {
        self.transport
            .send_head(head)
            .into_result()
            .map_err(io_error)?;
        self.write_all(body).await?;
        self.flush().await
    }

    /// Ready, with the cause, once the client is gone (it reset the stream, its connection
    /// closed, or it closed its side).
    pub fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let waker = self.waker.get(cx.waker());
        Poll::from(self.transport.poll_closed(waker)).map(io_error)
    }

    /// Ends the response at once, dropping what the client has not taken (RST_STREAM, or
    /// a TLS connection reset): a stalled client's bytes would hold a clean end back.
    pub fn reset(mut self) {
        self.transport.reset();
    }
}

/// The client's bytes after the head: over HTTP/1.1 as the client framed them, over
/// HTTP/2 its DATA frames' payload (none once the response has ended).
impl AsyncRead for BridgedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waker = this.waker.get(cx.waker());
        let unfilled = buf.initialize_unfilled();
        let poll = this
            .transport
            .poll_read(waker, RSliceMut::from_mut_slice(unfilled));
        let n = std::task::ready!(io_result(poll))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BridgedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let waker = this.waker.get(cx.waker());
        let mut slices = [RSlice::<u8>::EMPTY; IOV_BATCH];
        let n = bufs.len().min(IOV_BATCH);
        for (slot, buf) in slices.iter_mut().zip(bufs) {
            *slot = RSlice::from_slice(buf);
        }
        io_result(
            this.transport
                .poll_write(waker, RSlice::from_slice(&slices[..n])),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waker = this.waker.get(cx.waker());
        io_result(this.transport.poll_flush(waker))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waker = this.waker.get(cx.waker());
        io_result(this.transport.poll_shutdown(waker))
    }
}

/// The session's side: the same calls as over TCP, in the transport's terms. The head
/// crosses structured (the host frames it as HTTP/1.1 bytes or an HTTP/2 HEADERS frame,
/// and delimits the body itself); the client is gone when the host says so (a reset, its
/// connection closed, its side of a TLS connection closed), not when a read ends (an
/// HTTP/2 GET's body ends at once).
impl ClientTransport for BridgedStream {
    async fn write_head(
        &mut self,
        head: &session::ResponseHead<'_>,
        body: &[u8],
    ) -> io::Result<()> {
        let plugin = head.headers.iter().map(|(name, value)| Header {
            name: (*name).into(),
            value: value.to_vec().into(),
        });
        let head = ResponseHead {
            status: head.status.as_u16(),
            headers: plugin.chain(head.host_headers.iter().cloned()).collect(),
        };
        self.send_head(head, body).await
    }

    /// Nothing to do: the host sends the interim `100 Continue` (HTTP/1.1 bytes, or an
    /// informational HEADERS frame) at the first `poll_read` of a request that expects
    /// one, as hyper does. The session reads the body only once its declared length
    /// fits, so a 413 goes out with no 100 before it.
    async fn write_continue(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_gone(cx).map(drop)
    }

    fn abort(self) {
        self.reset();
    }
}

#[cfg(test)]
mod tests;
