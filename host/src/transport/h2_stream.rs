//! The bridged transport of a claimed HTTP/2 stream, on the h2 crate: the plugin's calls
//! (through the vtable, on the plugin's thread) drive the stream's `SendStream` and
//! `RecvStream` themselves. No pipe and no host task per stream.
//!
//! * A write takes only what the stream's flow-control capacity allows (`capacity()`,
//!   else `reserve_capacity` + `poll_capacity`), copies it into one `Bytes` (the one copy)
//!   and queues it with `send_data`. So the host holds at most what the client's window
//!   already allows, a client that stops reading makes the plugin's write pend at its
//!   window (where `client_write_timeout` measures it), and no other stream waits for it.
//! * `reset` is `send_reset(CANCEL)`, possible at any moment, flow-blocked or not (why
//!   the host serves HTTP/2 with h2 itself and not with hyper, which cannot).
//! * h2 keeps one waker per stream for `poll_capacity` and `poll_reset`; the plugin may
//!   wait on a write and on `poll_closed` at once, so both its wakers are kept here and
//!   h2 gets one waker that wakes both ([`StreamWakers::shared_send`]): no wake-up is lost
//!   either way.
//! * `Expect: 100-continue`: the first read, while no response head was sent, sends the
//!   interim 100 as an informational HEADERS frame (`SendResponse::send_informational`).

use std::io;
use std::task::{Context, Poll};

use abi::{FfiPoll, FfiTransport, FfiWaker, ResponseHead};
use abi_stable::std_types::{RIoError, RResult, RSlice, RSliceMut};
use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use super::error;
use super::wakers::{StreamWakers, Wait};
use crate::http2::CONNECTION_SPECIFIC;

/// The largest write taken at once: four DATA frames of the default 16 KiB, more than the
/// plugin's read buffer, which bounds one write anyway.
const MAX_WRITE: usize = 64 * 1024;

pub struct H2Transport {
    /// Until the head is sent.
    respond: Option<SendResponse<Bytes>>,
    /// After the head, until the end or a reset.
    send: Option<SendStream<Bytes>>,
    /// The request body, until its end.
    recv: Option<RecvStream>,
    /// Request-body bytes taken from h2 and not yet read by the plugin.
    request_left: Bytes,
    /// h2 keeps one waker for the stream's send side: writes and `poll_closed` share it.
    wakers: StreamWakers,
    /// The plugin ended the body or reset it.
    ended: bool,
    /// The client waits for `100 Continue`, not sent yet.
    continue_due: bool,
}

fn gone(cause: Option<h2::Error>) -> RIoError {
    let why = "the client reset the stream or its connection closed";
    match cause {
        Some(cause) => error(io::ErrorKind::ConnectionReset, format!("{why}: {cause}")),
        None => error(io::ErrorKind::ConnectionReset, why),
    }
}

impl H2Transport {
    pub fn new(
        request_body: RecvStream,
        respond: SendResponse<Bytes>,
        expects_continue: bool,
    ) -> Self {
        Self {
            continue_due: expects_continue && !request_body.is_end_stream(),
            respond: Some(respond),
            send: None,
            recv: Some(request_body),
            request_left: Bytes::new(),
            wakers: StreamWakers::shared_send(),
            ended: false,
        }
    }
}

/// The plugin's head as an HTTP/2 response head, connection-specific headers left out.
fn response(head: &ResponseHead) -> Result<http::Response<()>, RIoError> {
    let mut response = http::Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(head.status)
        .map_err(|e| error(io::ErrorKind::InvalidInput, e.to_string()))?;
    for header in head.headers.iter() {
        if CONNECTION_SPECIFIC
            .iter()
            .any(|name| header.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let name = http::HeaderName::from_bytes(header.name.as_bytes());
        let value = http::HeaderValue::from_bytes(&header.value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => {
                let bad = format!("an invalid response header {:?}", header.name);
                return Err(error(io::ErrorKind::InvalidInput, bad));
            }
        }
    }
    Ok(response)
}

impl FfiTransport for H2Transport {
    fn send_head(&mut self, head: ResponseHead) -> RResult<(), RIoError> {
        let Some(respond) = self.respond.as_mut() else {
            return RResult::RErr(error(io::ErrorKind::AlreadyExists, "a second head"));
        };
        let response = match response(&head) {
            Ok(response) => response,
            Err(e) => return RResult::RErr(e),
        };
        match respond.send_response(response, false) {
            Ok(send) => {
                self.respond = None;
                self.send = Some(send);
                RResult::ROk(())
            }
            Err(e) => RResult::RErr(gone(Some(e))),
        }
    }

    fn poll_read(
        &mut self,
        waker: &FfiWaker,
        mut buf: RSliceMut<'_, u8>,
    ) -> FfiPoll<RResult<usize, RIoError>> {
        if std::mem::take(&mut self.continue_due) {
            // Once the head is sent (`respond` taken), a 100 has no place.
            if let Some(respond) = self.respond.as_mut() {
                let mut interim = http::Response::new(());
                *interim.status_mut() = http::StatusCode::CONTINUE;
                if let Err(e) = respond.send_informational(interim) {
                    return FfiPoll::Ready(RResult::RErr(gone(Some(e))));
                }
            }
        }
        if self.ended {
            // The response is over: the rest of the body is not wanted, and dropping the
            // stream tells the client so (RST_STREAM(NO_ERROR)).
            return FfiPoll::Ready(RResult::ROk(0));
        }
        loop {
            if !self.request_left.is_empty() {
                let n = buf.len().min(self.request_left.len());
                buf[..n].copy_from_slice(&self.request_left[..n]);
                self.request_left.advance(n);
                return FfiPoll::Ready(RResult::ROk(n));
            }
            let Some(recv) = self.recv.as_mut() else {
                return FfiPoll::Ready(RResult::ROk(0));
            };
            if recv.is_end_stream() {
                self.recv = None;
                continue;
            }
            let waker = self.wakers.register(Wait::Read, waker);
            match recv.poll_data(&mut Context::from_waker(waker)) {
                Poll::Pending => return FfiPoll::Pending,
                Poll::Ready(None) => self.recv = None,
                Poll::Ready(Some(Err(e))) => {
                    self.recv = None;
                    return FfiPoll::Ready(RResult::RErr(gone(Some(e))));
                }
                Poll::Ready(Some(Ok(data))) => {
                    // Taken out at once, so the client's window reopens at once.
                    let _ = recv.flow_control().release_capacity(data.len());
                    self.request_left = data;
                }
            }
        }
    }

    fn poll_write(
        &mut self,
        waker: &FfiWaker,
        bufs: RSlice<'_, RSlice<'_, u8>>,
    ) -> FfiPoll<RResult<usize, RIoError>> {
        let Some(send) = self.send.as_mut() else {
            let why = "a body write before the response head, or after its end";
            return FfiPoll::Ready(RResult::RErr(error(io::ErrorKind::InvalidInput, why)));
        };
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
        if total == 0 {
            return FfiPoll::Ready(RResult::ROk(0));
        }
        loop {
            let capacity = send.capacity();
            if capacity > 0 {
                let take = capacity.min(total);
                let mut chunk = BytesMut::with_capacity(take);
                for buf in bufs.iter() {
                    let n = buf.len().min(take - chunk.len());
                    chunk.extend_from_slice(&buf[..n]);
                    if chunk.len() == take {
                        break;
                    }
                }
                return match send.send_data(chunk.freeze(), false) {
                    Ok(()) => FfiPoll::Ready(RResult::ROk(take)),
                    Err(e) => FfiPoll::Ready(RResult::RErr(gone(Some(e)))),
                };
            }
            send.reserve_capacity(total);
            let waker = self.wakers.register(Wait::Write, waker);
            match send.poll_capacity(&mut Context::from_waker(waker)) {
                Poll::Pending => return FfiPoll::Pending,
                Poll::Ready(None) => return FfiPoll::Ready(RResult::RErr(gone(None))),
                Poll::Ready(Some(Err(e))) => return FfiPoll::Ready(RResult::RErr(gone(Some(e)))),
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
    }

    fn poll_flush(&mut self, _waker: &FfiWaker) -> FfiPoll<RResult<(), RIoError>> {
        // Accepted bytes are the connection's to send; its task flushes them.
        FfiPoll::Ready(RResult::ROk(()))
    }

    fn poll_closed(&mut self, waker: &FfiWaker) -> FfiPoll<RIoError> {
        let mut cx = Context::from_waker(self.wakers.register(Wait::Closed, waker));
        let poll = match (self.send.as_mut(), self.respond.as_mut()) {
            (Some(send), _) => send.poll_reset(&mut cx),
            (None, Some(respond)) => respond.poll_reset(&mut cx),
            (None, None) => return FfiPoll::Ready(gone(None)),
        };
        match poll {
            Poll::Pending => FfiPoll::Pending,
            Poll::Ready(Ok(reason)) => FfiPoll::Ready(error(
                io::ErrorKind::ConnectionReset,
                format!("the client reset the stream ({reason})"),
            )),
            Poll::Ready(Err(e)) => FfiPoll::Ready(gone(Some(e))),
        }
    }

    fn poll_shutdown(&mut self, _waker: &FfiWaker) -> FfiPoll<RResult<(), RIoError>> {
        self.ended = true;
        if let Some(mut send) = self.send.take() {
            // END_STREAM needs no window: it leaves right after the bytes queued, which
            // the window already allowed.
            if let Err(e) = send.send_data(Bytes::new(), true) {
                return FfiPoll::Ready(RResult::RErr(gone(Some(e))));
            }
        }
        FfiPoll::Ready(RResult::ROk(()))
    }

    fn reset(&mut self) {
        self.ended = true;
        if let Some(send) = self.send.as_mut() {
            send.send_reset(h2::Reason::CANCEL);
        } else if let Some(respond) = self.respond.as_mut() {
            respond.send_reset(h2::Reason::CANCEL);
        }
        self.send = None;
        self.respond = None;
    }
}

impl Drop for H2Transport {
    /// Dropping ends the body, as closing a socket ends a close-delimited one; a plugin
    /// that never answered gets its client a 502.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Some(send) = self.send.as_mut() {
            let _ = send.send_data(Bytes::new(), true);
        } else if let Some(respond) = self.respond.as_mut() {
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            let _ = respond.send_response(response, true);
        }
    }
}
