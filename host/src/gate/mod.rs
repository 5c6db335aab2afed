//! The gate: an I/O wrapper between a client socket and hyper.
//!
//! The gate parses each request head itself (httparse) and gives hyper exactly one
//! request's bytes at a time: the head, then the body as its framing says, never a byte of
//! the next request. At each head it can therefore stop the connection cleanly:
//!
//! At each head the gate asks the [`Router`] for the route decision, once: a head routed
//! to hyper leaves its decision in the connection's [`Pending`] queue for hyper's service.
//!
//! * a head a plugin claims: the gate reports EOF, hyper finishes the response it is
//!   writing (it runs with `half_close(true)` and `without_shutdown()`), and the socket, the
//!   parsed head and the bytes read past it go to the plugin. This works for the first
//!   request and for any later one on a keep-alive connection, pipelined or not;
//! * a bad head: the gate reports EOF the same way and the host answers 400 or 431 itself,
//!   so a malformed request never reaches hyper half-parsed and never affects other clients.

mod framing;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use abi::{Header, RequestHead};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use framing::{framing, Framing};

use crate::route::{Claim, Pending, Route, Router};

/// Why the gate stopped feeding hyper.
#[derive(Debug)]
pub enum Stop {
    /// The client closed its side (or hyper closed the connection first).
    Eof,
    Claimed {
        claim: Claim,
        head: RequestHead,
    },
    Rejected(Rejection),
}

/// A request the host answers itself, then closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: http::StatusCode,
    pub message: String,
}

/// Headers per request head; more is answered with 431 like an oversized head.
const MAX_HEADERS: usize = 128;
const READ_CHUNK: usize = 8 * 1024;

enum State {
    AwaitHead,
    Forward { head_left: usize, body: Framing },
    Stopped(Stop),
}

/// What the gate allows a client while it waits for a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A larger head gets 431.
    pub max_head_bytes: usize,
    /// From a head's first byte to its end; slower gets 408 (slow-loris clients).
    pub read_header_timeout: Duration,
    /// With no request started, a connection is closed after this long.
    pub idle_timeout: Duration,
    /// The client socket's kernel send buffer (`None`: the kernel's autotuning).
    pub send_buffer: Option<usize>,
}

pub struct Gate {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read from the socket and not yet given to hyper.
    buf: BytesMut,
    state: State,
    limits: Limits,
    /// When waiting for the current head ends: the idle or the read-header deadline.
    deadline: Pin<Box<Sleep>>,
    /// Whether bytes of the awaited head have arrived (the read-header deadline is armed).
    head_started: bool,
    router: Arc<Router>,
    /// Where the decisions of the heads given to hyper wait for its service.
    pending: Arc<Pending>,
}

impl Gate {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        limits: Limits,
        router: Arc<Router>,
        pending: Arc<Pending>,
    ) -> Self {
        Self {
            stream,
            peer,
            buf: BytesMut::new(),
            state: State::AwaitHead,
            limits,
            deadline: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            head_started: false,
            router,
            pending,
        }
    }

    /// Waits for the next head: idle time until its first byte, then the header timeout.
    fn await_head(&mut self) {
        self.state = State::AwaitHead;
        self.head_started = !self.buf.is_empty();
        let limit = if self.head_started {
            self.limits.read_header_timeout
        } else {
            self.limits.idle_timeout
        };
        self.deadline.as_mut().reset(Instant::now() + limit);
    }

    /// Ends the gate: why it stopped, the socket, and the bytes read but not consumed.
    pub fn into_parts(self) -> (Stop, TcpStream, BytesMut) {
        let stop = match self.state {
            State::Stopped(stop) => stop,
            // hyper closed first (an error, or `Connection: close`): nothing more to do.
            State::AwaitHead | State::Forward { .. } => Stop::Eof,
        };
        (stop, self.stream, self.buf)
    }

    fn reject(&mut self, status: http::StatusCode, message: impl Into<String>) {
        self.state = State::Stopped(Stop::Rejected(Rejection {
            status,
            message: message.into(),
        }));
    }

    /// Looks at the buffered bytes for a complete head; `false` when more bytes are needed.
    fn inspect_head(&mut self) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.buf.len() > self.limits.max_head_bytes => {
                self.reject(
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head too large",
                );
                return true;
            }
            Ok(httparse::Status::Partial) => return false,
            Err(httparse::Error::TooManyHeaders) => {
                self.reject(
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "too many request headers",
                );
                return true;
            }
            Err(e) => {
                self.reject(
                    http::StatusCode::BAD_REQUEST,
                    format!("malformed request head: {e}"),
                );
                return true;
            }
        };
        if head_len > self.limits.max_head_bytes {
            self.reject(
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            );
            return true;
        }
        let body = match framing(request.headers) {
            Ok(body) => body,
            Err(e) => {
                self.reject(http::StatusCode::BAD_REQUEST, e.to_string());
                return true;
            }
        };
        let method = request.method.unwrap_or_default();
        let target = request.path.unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let decision = self.router.decide(method, path);
        self.state = match decision.route {
            Route::Plugin(claim) => {
                let head = RequestHead {
                    method: method.into(),
                    path: path.into(),
                    query: query.into(),
                    headers: request
                        .headers
                        .iter()
                        .map(|h| Header {
                            name: h.name.into(),
                            value: h.value.to_vec().into(),
                        })
                        .collect(),
                    peer: self.peer.to_string().into(),
                };
                self.buf.advance(head_len);
                State::Stopped(Stop::Claimed { claim, head })
            }
            _ => {
                self.pending.push(decision);
                State::Forward {
                    head_left: head_len,
                    body,
                }
            }
        };
        true
    }

    /// Reads more from the socket into `buf`; `Ok(0)` at EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

impl AsyncRead for Gate {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Stopped(_) => return Poll::Ready(Ok(())),
                State::AwaitHead => {
                    if !this.buf.is_empty() && this.inspect_head() {
                        continue;
                    }
                    match this.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => this.state = State::Stopped(Stop::Eof),
                        Poll::Ready(Ok(_)) if !this.head_started => {
                            this.head_started = true;
                            let deadline = Instant::now() + this.limits.read_header_timeout;
                            this.deadline.as_mut().reset(deadline);
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            ready!(this.deadline.as_mut().poll(cx));
                            if this.head_started {
                                this.reject(
                                    http::StatusCode::REQUEST_TIMEOUT,
                                    "request head not received in time",
                                );
                            } else {
                                this.state = State::Stopped(Stop::Eof);
                            }
                        }
                    }
                }
                State::Forward { head_left, body } => {
                    if this.buf.is_empty() {
                        if ready!(this.poll_fill(cx))? == 0 {
                            // EOF inside a request: hyper sees the truncation and drops it.
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    let room = out.remaining().min(this.buf.len());
                    let n = if *head_left > 0 {
                        let n = room.min(*head_left);
                        *head_left -= n;
                        n
                    } else {
                        match body {
                            Framing::Length(left) => {
                                let n = room.min(usize::try_from(*left).unwrap_or(usize::MAX));
                                *left -= n as u64;
                                n
                            }
                            Framing::Chunked(decoder) => decoder
                                .decode(&this.buf[..room], |_| {})
                                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                        }
                    };
                    out.put_slice(&this.buf[..n]);
                    this.buf.advance(n);
                    let body_done = match body {
                        Framing::Length(left) => *left == 0,
                        Framing::Chunked(decoder) => decoder.is_done(),
                    };
                    if *head_left == 0 && body_done {
                        this.await_head();
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncWrite for Gate {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
