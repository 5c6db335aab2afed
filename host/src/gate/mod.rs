//! The gate: an I/O wrapper between a client socket and hyper.
//!
//! The gate parses each request head itself (httparse) and gives hyper exactly one
//! request's bytes at a time: the head, then the body as its framing says, never a byte of
//! the next request. At each head it can therefore stop the connection cleanly:
//!
//! * a head a plugin claims: the gate reports EOF, hyper finishes the response it is
//!   writing (it runs with `half_close(true)` and `without_shutdown()`), and the socket, the
//!   parsed head and the bytes read past it go to the plugin. This works for the first
//!   request and for any later one on a keep-alive connection, pipelined or not;
//! * a bad head: the gate reports EOF the same way and the host answers 400 or 431 itself,
//!   so a malformed request never reaches hyper half-parsed and never affects other clients.
//!
//! It also keeps each request's clock, since only it sees when bytes arrive: a head is due
//! within `read_header_timeout`, and the whole request, body included, within
//! `read_timeout`; a body that misses it ends in [`RequestTimedOut`], which the pipeline
//! answers with 408.

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

use wire::framing::{self, Framing};

/// Decides, per request head, whether a plugin takes the connection over.
pub trait Claim: Send + Sync {
    /// The claiming plugin and the index of its route, if any.
    fn claim(&self, method: &str, path: &str) -> Option<(usize, u32)>;
}

/// Why the gate stopped feeding hyper.
#[derive(Debug)]
pub enum Stop {
    /// The client closed its side (or hyper closed the connection first).
    Eof,
    Claimed {
        plugin: usize,
        route: u32,
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

/// The error a request body's read ends in when the request misses `read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request was not received within read_timeout")]
pub struct RequestTimedOut;

impl RequestTimedOut {
    /// Whether `error`, or an error it wraps, is the gate's timeout (hyper wraps the
    /// gate's `io::Error` in its own).
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(error) = next {
            let inner = error
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref);
            if inner.is_some_and(|inner| inner.is::<RequestTimedOut>()) {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// Headers per request head; more is answered with 431 like an oversized head.
const MAX_HEADERS: usize = 128;
const READ_CHUNK: usize = 8 * 1024;

enum State {
    /// Waiting for a head. `started` is when its clock started: the accept for the
    /// connection's first request, the first byte for a later one; `None` while a
    /// keep-alive connection idles between requests.
    AwaitHead {
        started: Option<Instant>,
    },
    Forward {
        head_left: usize,
        body: Framing,
    },
    Stopped(Stop),
}

/// What the gate allows a client while it waits for a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A larger head gets 431.
    pub max_head_bytes: usize,
    /// From a head's first byte to its end (from the accept for a connection's first
    /// head); slower gets 408, and a new connection that sends nothing is closed.
    pub read_header_timeout: Duration,
    /// With no request started, a connection is closed after this long.
    pub idle_timeout: Duration,
    /// From a request's first byte (from the accept for the first request) to the end of
    /// its body; `None`: no limit.
    pub read_timeout: Option<Duration>,
    /// The client socket's kernel send buffer (`None`: the kernel's autotuning).
    pub send_buffer: Option<usize>,
}

impl Limits {
    /// How long a head may take: `read_header_timeout`, or `read_timeout` when shorter
    /// (it bounds the whole request).
    fn head_timeout(&self) -> Duration {
        let whole = self.read_timeout.unwrap_or(Duration::MAX);
        self.read_header_timeout.min(whole)
    }
}

pub struct Gate {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read from the socket and not yet given to hyper.
    buf: BytesMut,
    state: State,
    limits: Limits,
    /// When waiting for the current head or body ends: the idle, read-header or read
    /// deadline.
    deadline: Pin<Box<Sleep>>,
    claim: Arc<dyn Claim>,
}

impl Gate {
    /// A gate for a connection accepted just now: its first head is due within
    /// `read_header_timeout` (a client that connects and says nothing costs no more).
    pub fn new(stream: TcpStream, peer: SocketAddr, limits: Limits, claim: Arc<dyn Claim>) -> Self {
        let accepted = Instant::now();
        Self {
            stream,
            peer,
            buf: BytesMut::new(),
            state: State::AwaitHead {
                started: Some(accepted),
            },
            limits,
            deadline: Box::pin(tokio::time::sleep_until(accepted + limits.head_timeout())),
            claim,
        }
    }

    /// Waits for the next head on a keep-alive connection: idle time until its first
    /// byte, then the header timeout.
    fn await_head(&mut self) {
        let now = Instant::now();
        let started = (!self.buf.is_empty()).then_some(now);
        let limit = match started {
            Some(_) => self.limits.head_timeout(),
            None => self.limits.idle_timeout,
        };
        self.state = State::AwaitHead { started };
        self.deadline.as_mut().reset(now + limit);
    }

    /// Ends the gate: why it stopped, the socket, and the bytes read but not consumed.
    pub fn into_parts(self) -> (Stop, TcpStream, BytesMut) {
        let stop = match self.state {
            State::Stopped(stop) => stop,
            // hyper closed first (an error, or `Connection: close`): nothing more to do.
            State::AwaitHead { .. } | State::Forward { .. } => Stop::Eof,
        };
        (stop, self.stream, self.buf)
    }

    fn reject(&mut self, status: http::StatusCode, message: impl Into<String>) {
        self.state = State::Stopped(Stop::Rejected(Rejection {
            status,
            message: message.into(),
        }));
    }

    /// Looks at the buffered bytes for a complete head of a request whose clock started
    /// at `started`; `false` when more bytes are needed.
    fn inspect_head(&mut self, started: Instant) -> bool {
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
        let body = match framing::request(request.headers) {
            Ok(body) => body,
            Err(e) => {
                self.reject(http::StatusCode::BAD_REQUEST, e.to_string());
                return true;
            }
        };
        let method = request.method.unwrap_or_default();
        let target = request.path.unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        self.state = match self.claim.claim(method, path) {
            Some((plugin, route)) => {
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
                State::Stopped(Stop::Claimed {
                    plugin,
                    route,
                    head,
                })
            }
            None => {
                if let Some(limit) = self.limits.read_timeout {
                    self.deadline.as_mut().reset(started + limit);
                }
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
                State::AwaitHead { started } => {
                    let started = *started;
                    // Bytes of a head are buffered only once its clock started.
                    if let (Some(started), false) = (started, this.buf.is_empty()) {
                        if this.inspect_head(started) {
                            continue;
                        }
                    }
                    match this.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => this.state = State::Stopped(Stop::Eof),
                        Poll::Ready(Ok(_)) if started.is_none() => {
                            let now = Instant::now();
                            this.state = State::AwaitHead { started: Some(now) };
                            let deadline = now + this.limits.head_timeout();
                            this.deadline.as_mut().reset(deadline);
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            ready!(this.deadline.as_mut().poll(cx));
                            if this.buf.is_empty() {
                                // Idle, or a new connection that never said anything.
                                this.state = State::Stopped(Stop::Eof);
                            } else {
                                this.reject(
                                    http::StatusCode::REQUEST_TIMEOUT,
                                    "request head not received in time",
                                );
                            }
                        }
                    }
                }
                State::Forward { head_left, body } => {
                    if this.buf.is_empty() {
                        match this.poll_fill(cx) {
                            // EOF inside a request: hyper sees the truncation and drops it.
                            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                            Poll::Ready(Ok(_)) => continue,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending if this.limits.read_timeout.is_none() => {
                                return Poll::Pending
                            }
                            Poll::Pending => {
                                ready!(this.deadline.as_mut().poll(cx));
                                let timed_out =
                                    io::Error::new(io::ErrorKind::TimedOut, RequestTimedOut);
                                return Poll::Ready(Err(timed_out));
                            }
                        }
                    }
                    let room = out.remaining().min(this.buf.len());
                    let n = if *head_left > 0 {
                        let n = room.min(*head_left);
                        *head_left -= n;
                        n
                    } else {
                        body.take(&this.buf[..room], |_| {})
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                    };
                    out.put_slice(&this.buf[..n]);
                    this.buf.advance(n);
                    if *head_left == 0 && body.is_done() {
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
