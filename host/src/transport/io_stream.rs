//! The bridged transport of a claimed HTTP/1.1 request over TLS: the plugin's calls poll
//! the host's `TlsStream` directly, on the plugin's thread, with the plugin task's waker
//! (a tokio I/O resource may be polled from any thread: its registration carries the
//! host's reactor, which wakes whatever waker the last poll left).
//!
//! Backpressure: rustls takes plaintext up to [`CLAIMED_BUFFER_LIMIT`], then the write
//! pends; with the kernel's send buffer (`client_send_buffer`) that is what a stalled TLS
//! client can hold, and the plugin's `client_write_timeout` measures the pending write as
//! on TCP. The body is close-delimited as the plugin's answers over TCP are: a clean end
//! is close_notify then FIN; [`FfiTransport::reset`] closes with a TCP reset instead.
//!
//! `Expect: 100-continue`: the interim `100 Continue` is queued where the head goes, at
//! the plugin's first read when no response head was sent and no body byte came with the
//! head, and written out (flushed) before that read waits for the body.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use abi::{FfiPoll, FfiTransport, FfiWaker, ResponseHead};
use abi_stable::std_types::{RIoError, RResult, RSlice, RSliceMut};
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::error;
use super::wakers::{StreamWakers, Wait};

/// Plaintext rustls holds for a claimed stream before a write pends (rustls' default is
/// 64 KiB): a stalled client's cost in user space, beside the kernel's send buffer.
pub const CLAIMED_BUFFER_LIMIT: usize = 16 * 1024;
/// How long a dropped transport's close_notify may take before the connection is just
/// closed: one small record, which a live client takes at once.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Slices passed to one vectored write, as the plugin's own batches.
const IOV_BATCH: usize = 64;

pub struct IoTransport {
    /// `None` once reset.
    io: Option<TlsStream<TcpStream>>,
    /// Bytes the gate read past the head: the plugin reads them first.
    read_ahead: Bytes,
    /// What goes before the body, from `queue` until written out: the interim `100
    /// Continue`, the serialized head.
    head: Vec<u8>,
    /// The client waits for `100 Continue`, not sent yet.
    continue_due: bool,
    head_sent: bool,
    /// Whether the plugin ended the body itself (`poll_shutdown`).
    shut_down: bool,
    /// The host's runtime, for a dropped transport's close_notify.
    runtime: tokio::runtime::Handle,
    wakers: StreamWakers,
}

impl IoTransport {
    /// Takes over `io` after the gate, with the bytes it read past the head. Called on
    /// the host's runtime.
    pub fn new(mut io: TlsStream<TcpStream>, read_ahead: Bytes, expects_continue: bool) -> Self {
        io.get_mut().1.set_buffer_limit(Some(CLAIMED_BUFFER_LIMIT));
        Self {
            io: Some(io),
            // A client that sent body bytes with its head is not waiting.
            continue_due: expects_continue && read_ahead.is_empty(),
            read_ahead,
            head: Vec::new(),
            head_sent: false,
            shut_down: false,
            runtime: tokio::runtime::Handle::current(),
            wakers: StreamWakers::separate(),
        }
    }

    /// Writes what is left of the head; Ready(Ok) once it is all out.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        while !self.head.is_empty() {
            let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.head))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.head.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes out and flushes a queued interim `100 Continue` (the client sends its body
    /// only once it has it); Ready(Ok) at once when none is queued.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.head.is_empty() {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.poll_head(cx))?;
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    /// Runs `f` with the stream, once the head is out, in the plugin waker's context.
    fn after_head<T>(
        &mut self,
        waker: &FfiWaker,
        f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> FfiPoll<RResult<T, RIoError>> {
        // A clone of the stream's own waker (a count's increment), as `poll_head` takes
        // all of `self`.
        let waker = self.wakers.register(Wait::Write, waker).clone();
        let mut cx = Context::from_waker(&waker);
        let poll = match self.poll_head(&mut cx) {
            Poll::Ready(Ok(())) => match self.io.as_mut() {
                Some(io) => f(Pin::new(io), &mut cx),
                None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        };
        ffi(poll)
    }
}

/// What a call gets once the plugin reset the response.
fn reset() -> RIoError {
    error(io::ErrorKind::NotConnected, "the response was reset")
}

fn ffi<T>(poll: Poll<io::Result<T>>) -> FfiPoll<RResult<T, RIoError>> {
    match poll {
        Poll::Pending => FfiPoll::Pending,
        Poll::Ready(result) => FfiPoll::Ready(result.map_err(RIoError::from).into()),
    }
}

impl FfiTransport for IoTransport {
    fn send_head(&mut self, head: ResponseHead) -> RResult<(), RIoError> {
        if self.head_sent {
            return RResult::RErr(error(io::ErrorKind::AlreadyExists, "a second head"));
        }
        self.head_sent = true;
        self.continue_due = false;
        let status =
            http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        let mut lines = Vec::new();
        for header in head.headers.iter() {
            // The body ends with the connection: `close_delimited_head` says so itself.
            if !header.name.eq_ignore_ascii_case("connection") {
                wire::header_line(&mut lines, &header.name, &header.value);
            }
        }
        // After what is left of an interim 100.
        self.head
            .extend_from_slice(&wire::close_delimited_head(status, &lines));
        RResult::ROk(())
    }

    fn poll_read(
        &mut self,
        waker: &FfiWaker,
        mut buf: RSliceMut<'_, u8>,
    ) -> FfiPoll<RResult<usize, RIoError>> {
        if !self.read_ahead.is_empty() {
            let n = buf.len().min(self.read_ahead.len());
            buf[..n].copy_from_slice(&self.read_ahead[..n]);
            self.read_ahead.advance(n);
            return FfiPoll::Ready(RResult::ROk(n));
        }
        if self.io.is_none() {
            return FfiPoll::Ready(RResult::RErr(reset()));
        }
        if std::mem::take(&mut self.continue_due) {
            self.head.extend_from_slice(wire::CONTINUE);
        }
        // A clone of the stream's own waker, as `poll_interim` takes all of `self`.
        let waker = self.wakers.register(Wait::Read, waker).clone();
        let mut cx = Context::from_waker(&waker);
        if !self.head_sent {
            match self.poll_interim(&mut cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return FfiPoll::Ready(RResult::RErr(e.into())),
                Poll::Pending => return FfiPoll::Pending,
            }
        }
        let Some(io) = self.io.as_mut() else {
            return FfiPoll::Ready(RResult::RErr(reset()));
        };
        let mut read = ReadBuf::new(&mut buf);
        let poll = Pin::new(io).poll_read(&mut cx, &mut read);
        ffi(poll.map_ok(|()| read.filled().len()))
    }

    fn poll_write(
        &mut self,
        waker: &FfiWaker,
        bufs: RSlice<'_, RSlice<'_, u8>>,
    ) -> FfiPoll<RResult<usize, RIoError>> {
        let mut slices = [IoSlice::new(&[]); IOV_BATCH];
        let n = bufs.len().min(IOV_BATCH);
        for (slot, buf) in slices.iter_mut().zip(bufs.iter()) {
            *slot = IoSlice::new(buf);
        }
        self.after_head(waker, |io, cx| io.poll_write_vectored(cx, &slices[..n]))
    }

    fn poll_flush(&mut self, waker: &FfiWaker) -> FfiPoll<RResult<(), RIoError>> {
        self.after_head(waker, |io, cx| io.poll_flush(cx))
    }

    fn poll_closed(&mut self, waker: &FfiWaker) -> FfiPoll<RIoError> {
        // The client is gone when its side ends; what it sends after the request (nothing,
        // for an EventSource) is read and dropped, as the plugin does over TCP.
        let Some(io) = self.io.as_mut() else {
            return FfiPoll::Ready(reset());
        };
        let mut cx = Context::from_waker(self.wakers.register(Wait::Closed, waker));
        let mut scratch = [0u8; 256];
        loop {
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io).poll_read(&mut cx, &mut read) {
                Poll::Pending => return FfiPoll::Pending,
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    let gone = "the client closed the connection";
                    return FfiPoll::Ready(error(io::ErrorKind::ConnectionReset, gone));
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return FfiPoll::Ready(e.into()),
            }
        }
    }

    fn poll_shutdown(&mut self, waker: &FfiWaker) -> FfiPoll<RResult<(), RIoError>> {
        let poll = self.after_head(waker, |io, cx| io.poll_shutdown(cx));
        if let FfiPoll::Ready(RResult::ROk(())) = poll {
            self.shut_down = true;
        }
        poll
    }

    fn reset(&mut self) {
        if let Some(io) = self.io.take() {
            // A TCP reset, no close_notify: the client must not take the end as clean, and
            // nothing waits behind the bytes it has not read.
            let _ = socket2::SockRef::from(io.get_ref().0).set_linger(Some(Duration::ZERO));
        }
    }
}

impl Drop for IoTransport {
    /// The clean end of a close-delimited body: what is queued (the head, if the plugin
    /// wrote nothing after it; a 502 if it never answered), close_notify, then FIN, on the
    /// host's runtime.
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else {
            return;
        };
        if self.shut_down {
            return;
        }
        let mut head = std::mem::take(&mut self.head);
        if !self.head_sent {
            // The plugin never answered.
            let bad_gateway = "bad gateway\n";
            head.extend(wire::plain_text_response(
                http::StatusCode::BAD_GATEWAY,
                b"",
                bad_gateway,
            ));
        }
        self.runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                io.write_all(&head).await?;
                io.shutdown().await
            })
            .await;
        });
    }
}
