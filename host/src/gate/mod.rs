//! The gate: an I/O wrapper between an HTTP/1.1 client's byte stream (a TCP socket, or a
//! TLS session over one) and hyper.
//!
//! The gate parses each request head itself (httparse) and gives hyper exactly one
//! request's bytes at a time: the head, then the body as its framing says, never a byte of
//! the next request. At each head it asks the [`Router`] for the route decision, once: a
//! head routed to hyper leaves its decision in the connection's [`Pending`] queue for
//! hyper's service. At each head it can also stop the connection cleanly:
//!
//! * a head a plugin claims: the gate reports EOF, hyper finishes the response it is
//!   writing (it runs with `half_close(true)` and `without_shutdown()`), and the stream, the
//!   parsed head and the bytes read past it go to the handoff. This works for the first
//!   request and for any later one on a keep-alive connection, pipelined or not;
//! * a bad head: the gate reports EOF the same way and the host answers 400 or 431 itself,
//!   so a malformed request never reaches hyper half-parsed and never affects other clients.
//!   That includes what HTTP/1.1 requires of every request (RFC 9112 §3.2): an HTTP/1.1
//!   request without `Host`, any request with two, or with an invalid one, gets 400, before
//!   a plugin or the pipeline sees it.
//!
//! It also keeps each request's clock, since only it sees when bytes arrive: a head is due
//! within `read_header_timeout`, and the whole request, body included, within
//! `read_timeout`; a body that misses it ends in [`RequestTimedOut`], which the pipeline
//! answers with 408.
//!
//! And it ends a keep-alive connection when the gateway drains, at the first head boundary
//! where the connection idles: EOF to hyper, which closes an idle connection at once and one
//! mid-response after the response. Only the gate knows whether a next head has begun to
//! arrive (hyper sees no byte of it until its end), so it, not hyper's `graceful_shutdown`,
//! decides: a head partly received, and a new connection's first head (accepted just before
//! the signal, its bytes still on the way), are served first.

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
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use wire::framing::{self, Framing};

use crate::route::{Claim, Pending, Route, Router};

/// Why the gate stopped feeding hyper.
#[derive(Debug)]
pub enum Stop {
    /// The client closed its side (or hyper closed the connection first).
    Eof,
    /// A new connection that sent no byte within `read_header_timeout` of its accept:
    /// closed without an answer, as an idle one (the host counts these apart, so that a
    /// gateway too slow to be read from, or a flood of silent clients, shows).
    Silent,
    Claimed {
        claim: Claim,
        head: RequestHead,
        /// When the request's clock started: its body is due by this plus `read_timeout`.
        started: Instant,
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

/// The largest `max_header_count` the gate can parse with (its header slots live on the
/// stack, uninitialised until used).
pub const MAX_HEADER_COUNT: usize = 512;
const READ_CHUNK: usize = 8 * 1024;

enum State {
    /// Waiting for a head. `started` is when its clock started: the accept for the
    /// connection's first request, the first byte for a later one; `None` while a
    /// keep-alive connection idles between requests.
    AwaitHead {
        started: Option<Instant>,
        scan: HeadScan,
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
    /// A larger head gets 431 (`max_header_bytes`).
    pub max_header_bytes: usize,
    /// More headers in one head get 431; at most [`MAX_HEADER_COUNT`].
    pub max_headers: usize,
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

pub struct Gate<IO> {
    stream: IO,
    peer: SocketAddr,
    /// Bytes read from the socket and not yet given to hyper.
    buf: BytesMut,
    state: State,
    limits: Limits,
    /// When waiting for the current head or body ends: the idle, read-header or read
    /// deadline.
    deadline: Pin<Box<Sleep>>,
    router: Arc<Router>,
    /// Where the decisions of the heads given to hyper wait for its service.
    pending: Arc<Pending>,
    /// Ready once the gateway drains: an idle keep-alive connection then ends.
    drain: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Gate<IO> {
    /// A gate for a connection accepted at `accepted`, whose first bytes (`read`) were
    /// read already: its first head is due within `read_header_timeout` of the accept (a
    /// client that connects and says nothing costs no more). The connection ends at its
    /// first idle moment once `draining` is cancelled.
    pub fn new(
        stream: IO,
        peer: SocketAddr,
        (accepted, read): (Instant, BytesMut),
        limits: Limits,
        router: Arc<Router>,
        pending: Arc<Pending>,
        draining: CancellationToken,
    ) -> Self {
        Self {
            stream,
            peer,
            buf: read,
            state: State::AwaitHead {
                started: Some(accepted),
                scan: HeadScan::default(),
            },
            limits,
            deadline: Box::pin(tokio::time::sleep_until(accepted + limits.head_timeout())),
            router,
            pending,
            drain: Box::pin(draining.cancelled_owned()),
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
        self.state = State::AwaitHead {
            started,
            scan: HeadScan::default(),
        };
        self.deadline.as_mut().reset(now + limit);
    }

    /// Ends the gate: why it stopped, the stream, and the bytes read but not consumed.
    pub fn into_parts(self) -> (Stop, IO, BytesMut) {
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
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADER_COUNT];
        let slots = &mut slots[..self.limits.max_headers.min(MAX_HEADER_COUNT)];
        let mut request = httparse::Request::new(&mut []);
        let head_len = match request.parse_with_uninit_headers(&self.buf, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.buf.len() > self.limits.max_header_bytes => {
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
        if head_len > self.limits.max_header_bytes {
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
        if let Err(e) = host_header(request.version, request.headers) {
            self.reject(http::StatusCode::BAD_REQUEST, e);
            return true;
        }
        let method = request.method.unwrap_or_default();
        let (path, query) = path_and_query(request.path.unwrap_or_default());
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
                State::Stopped(Stop::Claimed {
                    claim,
                    head,
                    started,
                })
            }
            _ => {
                self.pending.push(decision);
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

/// How far the search for a head's end got in the buffered bytes (which only grow while
/// a head is awaited), so that a head sent a byte at a time is searched once, not parsed
/// again at every byte.
#[derive(Debug, Default)]
struct HeadScan {
    /// Bytes that are empty lines before the request-line: a server ignores them (RFC 9112
    /// §2.2) and httparse skips them, so no head ends among them (a flood of CRLFs is not
    /// parsed at every read; it is a head over `max_header_bytes` like any other).
    leading: usize,
    /// Bytes searched for the head's end already.
    scanned: usize,
}

impl HeadScan {
    /// Where the head's first empty line ends (LF, or CRLF, after a line's LF: httparse
    /// takes both), looking only at the bytes of `buf` new since the last call.
    fn end(&mut self, buf: &[u8]) -> Option<usize> {
        // The skip resumes where it stopped: the request-line's first byte (where it stays),
        // or the end of what had come (a CR alone there is the start of an empty line or not).
        loop {
            match &buf[self.leading..] {
                [b'\n', ..] => self.leading += 1,
                [b'\r', b'\n', ..] => self.leading += 2,
                _ => break,
            }
        }
        // An end straddling the searched part starts at most two bytes before it.
        let mut at = self.scanned.saturating_sub(2).max(self.leading);
        self.scanned = buf.len();
        while let Some(lf) = buf[at..].iter().position(|&b| b == b'\n') {
            let lf = at + lf;
            match &buf[lf + 1..] {
                [b'\n', ..] => return Some(lf + 2),
                [b'\r', b'\n', ..] => return Some(lf + 3),
                _ => at = lf + 1,
            }
        }
        None
    }
}

/// The path and the query string (without `?`) of a request-target: origin-form
/// (`/path?query`) as sent, absolute-form (`http://host/path?query`, which a server must
/// accept: RFC 9112 §3.2.2) from its path on, the path `/` when it has none.
pub fn path_and_query(target: &str) -> (&str, &str) {
    let absolute = ["http://", "https://"].into_iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        prefix
            .eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    });
    let origin_form = match absolute {
        None => target,
        Some(rest) => match rest.find(['/', '?']) {
            Some(start) if rest[start..].starts_with('/') => &rest[start..],
            Some(start) => return ("/", &rest[start + 1..]),
            None => return ("/", ""),
        },
    };
    origin_form.split_once('?').unwrap_or((origin_form, ""))
}

/// What RFC 9112 §3.2 asks of a request's `Host`: exactly one in an HTTP/1.1 request, at
/// most one in an HTTP/1.0 one, and a valid `host[:port]` (or empty) when present. Two
/// `Host`s are how a request is made to mean one authority to one hop and another to the
/// next.
fn host_header(version: Option<u8>, headers: &[httparse::Header<'_>]) -> Result<(), &'static str> {
    let hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value);
    one_host(hosts, version != Some(0)).map(drop)
}

/// The request's one `Host` value, if it has one: two, an invalid one, or none where one
/// is `required`, are refused with the reason (400). The rule HTTP/2 requests follow too.
pub fn one_host<'a>(
    mut hosts: impl Iterator<Item = &'a [u8]>,
    required: bool,
) -> Result<Option<&'a [u8]>, &'static str> {
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err("more than one Host header"),
        (None, _) if required => Err("missing Host header"),
        (Some(host), None) if !host.is_empty() && !is_authority(host) => Err("invalid Host header"),
        (host, _) => Ok(host),
    }
}

/// `host[:port]`: an authority without user information, its port (if any) a number.
fn is_authority(value: &[u8]) -> bool {
    if value.contains(&b'@') {
        return false;
    }
    let Ok(authority) = http::uri::Authority::try_from(value) else {
        return false;
    };
    match authority.as_str()[authority.host().len()..].strip_prefix(':') {
        None => true,
        Some("") => true,
        Some(port) => port.parse::<u16>().is_ok(),
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gate<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Stopped(_) => return Poll::Ready(Ok(())),
                State::AwaitHead { started, scan } => {
                    let started = *started;
                    // Idle between requests (no byte of a next head yet) as the gateway
                    // drains: the client's next request goes to a process that stays.
                    if started.is_none() && this.drain.as_mut().poll(cx).is_ready() {
                        this.state = State::Stopped(Stop::Eof);
                        continue;
                    }
                    // Bytes of a head are buffered only once its clock started. httparse
                    // runs once the head's end (or more than the largest head) is there.
                    if let (Some(started), false) = (started, this.buf.is_empty()) {
                        let end = scan.end(&this.buf).is_some();
                        if (end || this.buf.len() > this.limits.max_header_bytes)
                            && this.inspect_head(started)
                        {
                            continue;
                        }
                    }
                    match this.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => this.state = State::Stopped(Stop::Eof),
                        Poll::Ready(Ok(_)) if started.is_none() => {
                            let now = Instant::now();
                            this.state = State::AwaitHead {
                                started: Some(now),
                                scan: HeadScan::default(),
                            };
                            let deadline = now + this.limits.head_timeout();
                            this.deadline.as_mut().reset(deadline);
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            ready!(this.deadline.as_mut().poll(cx));
                            if this.buf.is_empty() {
                                // Idle between requests, or a new connection that never
                                // said anything (its clock started at the accept).
                                this.state = State::Stopped(match started {
                                    None => Stop::Eof,
                                    Some(_) => Stop::Silent,
                                });
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

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Gate<IO> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    /// Where one scan finds the head's end as `bytes` arrive `size` bytes at a time.
    fn end_arriving(bytes: &[u8], size: usize) -> Option<usize> {
        let mut scan = HeadScan::default();
        (1..=bytes.len().div_ceil(size))
            .find_map(|reads| scan.end(&bytes[..(reads * size).min(bytes.len())]))
    }

    #[test]
    fn the_end_of_a_head_is_found_in_the_new_bytes_only() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let after_empty_lines = b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        // However the bytes arrive, an end straddling what was searched before included.
        for size in 1..=after_empty_lines.len() {
            assert_eq!(end_arriving(head, size), Some(27), "{size}");
            assert_eq!(
                end_arriving(b"GET / HTTP/1.1\nHost: x\n\nbody", size),
                Some(24)
            );
            assert_eq!(end_arriving(b"GET / HTTP/1.1\r\nHost: x\r\n", size), None);
            // Empty lines before the request-line end no head (RFC 9112 §2.2).
            assert_eq!(end_arriving(after_empty_lines, size), Some(32), "{size}");
            assert_eq!(end_arriving(b"\r\n\r\n\n\r\n", size), None, "{size}");
            assert_eq!(end_arriving(b"\r\n\r\n GET", size), None, "{size}");
            // The request-line's first empty line ends it, malformed or not.
            assert_eq!(end_arriving(b"\r\n\rX\n\n", size), Some(6), "{size}");
        }
        // What was searched is not searched again.
        let twice = b"GET /\n\nGET / HTTP/1.1\r\n";
        assert_eq!(HeadScan::default().end(twice), Some(7));
        let mut searched = HeadScan {
            leading: 0,
            scanned: 9,
        };
        assert_eq!(searched.end(twice), None);
    }

    /// A gate over one end of an in-memory pipe, and the other end; `draining` stands for the
    /// gateway's drain.
    /// Never what ends a test's gate.
    const LONG: Duration = Duration::from_secs(60);

    /// A gate over a pipe, with `timeout` as both its `read_header_timeout` and its
    /// `idle_timeout`.
    fn piped_gate(
        draining: CancellationToken,
        timeout: Duration,
    ) -> (
        Gate<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Pending>,
    ) {
        let config = crate::config::parse("krakend.json", r#"{"version": 3}"#).unwrap();
        let router = Arc::new(Router::new(&config, &[], &[], false).unwrap());
        let limits = Limits {
            max_header_bytes: 1024,
            max_headers: 16,
            read_header_timeout: timeout,
            idle_timeout: timeout,
            read_timeout: None,
            send_buffer: None,
        };
        let (client, server) = tokio::io::duplex(64);
        let peer = "127.0.0.1:1".parse().unwrap();
        let pending = Arc::new(Pending::default());
        let accepted = (Instant::now(), BytesMut::new());
        let gate = Gate::new(
            server,
            peer,
            accepted,
            limits,
            router,
            pending.clone(),
            draining,
        );
        (gate, client, pending)
    }

    /// Sends all of `head` but its last byte one byte at a time, checking after each that
    /// the gate gave hyper nothing and decided nothing (nor stopped, as a parse would have
    /// at a malformed line), then the last byte.
    async fn send_bytewise(
        gate: &mut Gate<tokio::io::DuplexStream>,
        client: &mut tokio::io::DuplexStream,
        pending: &Pending,
        head: &[u8],
    ) {
        use tokio::io::AsyncWriteExt;
        let mut out = [0u8; 256];
        for &byte in &head[..head.len() - 1] {
            client.write_all(&[byte]).await.unwrap();
            let read = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut out);
                Poll::Ready(Pin::new(&mut *gate).poll_read(cx, &mut buf).map(|_| ()))
            });
            assert!(
                read.await.is_pending(),
                "the gate acted before the head's end"
            );
            assert!(pending.pop().is_none(), "a decision before the head's end");
        }
        client.write_all(&head[head.len() - 1..]).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_connection_silent_until_read_header_timeout_stops_as_silent_an_idle_one_as_eof()
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = [0u8; 256];
        let short = Duration::from_millis(10);
        let (mut gate, _client, _pending) = piped_gate(CancellationToken::new(), short);
        assert_eq!(gate.read(&mut out).await.unwrap(), 0);
        assert!(matches!(gate.into_parts().0, Stop::Silent));

        let (mut gate, mut client, _pending) = piped_gate(CancellationToken::new(), short);
        let head = b"GET /__health HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(head).await.unwrap();
        let n = gate.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], head);
        assert_eq!(gate.read(&mut out).await.unwrap(), 0, "idle_timeout");
        assert!(matches!(gate.into_parts().0, Stop::Eof));
    }

    #[tokio::test]
    async fn a_head_sent_a_byte_at_a_time_is_parsed_once_its_end_arrives() {
        use tokio::io::AsyncReadExt;
        let (mut gate, mut client, pending) = piped_gate(CancellationToken::new(), LONG);
        let head = b"GET /__health HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        send_bytewise(&mut gate, &mut client, &pending, head).await;
        let mut out = [0u8; 256];
        let n = gate.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], head);
        assert!(matches!(
            pending.pop().map(|d| d.route),
            Some(Route::Health)
        ));

        // A malformed line is found when the head is parsed, at its end, not at the line.
        let (mut gate, mut client, pending) = piped_gate(CancellationToken::new(), LONG);
        let head = b"GET /__health HTTP/1.1\r\nBad Header Line\r\nHost: x\r\n\r\n";
        send_bytewise(&mut gate, &mut client, &pending, head).await;
        assert_eq!(gate.read(&mut out).await.unwrap(), 0, "stopped");
        match gate.into_parts().0 {
            Stop::Rejected(rejection) => assert_eq!(rejection.status, 400),
            other => panic!("{other:?}"),
        }
    }

    /// The gate's stop once the client sent `bytes` (at once) and closed, read out in
    /// reads of `size` bytes; and what it gave hyper.
    async fn stop_after(bytes: &[u8], size: usize) -> (Stop, Vec<u8>, Arc<Pending>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut gate, mut client, pending) = piped_gate(CancellationToken::new(), LONG);
        let bytes = bytes.to_vec();
        // The pipe holds 64 bytes: the client writes as the gate reads.
        let writer = tokio::spawn(async move { client.write_all(&bytes).await });
        let mut given = Vec::new();
        let mut out = vec![0u8; size];
        loop {
            match gate.read(&mut out).await.unwrap() {
                0 => break,
                n => given.extend_from_slice(&out[..n]),
            }
        }
        writer.abort();
        (gate.into_parts().0, given, pending)
    }

    /// Fuzz input 6e742d742d6e744c6e742d48090d0a0d0a (`fuzz/fuzz_targets/gate.rs`) is,
    /// through `reference::cuts_and_payload`, six reads of 2 bytes of the payload `\r\n\r\n`:
    /// two empty lines, then the client's EOF. Empty lines before a request-line are
    /// ignored (RFC 9112 §2.2), so that is a connection that sent no request: EOF, no
    /// answer. Nor are they a head's end at which the gate would parse what came.
    #[tokio::test]
    async fn empty_lines_before_a_request_line_are_ignored_and_end_no_head() {
        let (stop, given, _) = stop_after(b"\r\n\r\n", 2).await;
        assert!(matches!(stop, Stop::Eof), "{stop:?}");
        assert!(given.is_empty());

        // Not parsed at the empty lines, so no 400 for a head cut short after them.
        let (stop, given, _) = stop_after(b"\r\n\r\n GET", 2).await;
        assert!(matches!(stop, Stop::Eof), "{stop:?}");
        assert!(given.is_empty());

        // The head after them is parsed at its end and given to hyper with them.
        let head = b"\r\n\nGET /__health HTTP/1.1\r\nHost: x\r\n\r\n";
        let (stop, given, pending) = stop_after(head, 7).await;
        assert!(matches!(stop, Stop::Eof), "{stop:?}");
        assert_eq!(given, head);
        assert!(matches!(
            pending.pop().map(|d| d.route),
            Some(Route::Health)
        ));

        // A flood of them is a head over max_header_bytes (1024 here).
        let (stop, given, _) = stop_after(&b"\r\n".repeat(600), 64).await;
        match stop {
            Stop::Rejected(rejection) => assert_eq!(rejection.status, 431),
            other => panic!("{other:?}"),
        }
        assert!(given.is_empty());
    }

    #[tokio::test]
    async fn a_drain_ends_a_connection_when_it_idles_and_serves_a_head_begun_before() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let head = b"GET /__health HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut out = [0u8; 256];

        // A new connection's first head, on its way when the drain starts, is served;
        // the connection ends at the head boundary after it.
        let draining = CancellationToken::new();
        let (mut gate, mut client, _pending) = piped_gate(draining.clone(), LONG);
        draining.cancel();
        client.write_all(head).await.unwrap();
        let n = gate.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], head);
        assert_eq!(gate.read(&mut out).await.unwrap(), 0, "ended once idle");
        assert!(matches!(gate.into_parts().0, Stop::Eof));

        // A keep-alive connection idle between requests ends when the drain starts, with
        // nothing from the client.
        let draining = CancellationToken::new();
        let (mut gate, mut client, _pending) = piped_gate(draining.clone(), LONG);
        client.write_all(head).await.unwrap();
        let n = gate.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], head);
        let idle = tokio::spawn(async move {
            let n = gate.read(&mut [0u8; 256]).await.unwrap();
            (n, gate.into_parts().0)
        });
        tokio::task::yield_now().await;
        draining.cancel();
        let waited = tokio::time::timeout(Duration::from_secs(10), idle).await;
        let (n, stop) = waited.expect("the drain woke the idle gate").unwrap();
        assert_eq!(n, 0);
        assert!(matches!(stop, Stop::Eof));
        drop(client);
    }

    #[test]
    fn the_path_of_any_request_target_form() {
        for (target, expected) in [
            ("/sse/1?x=1", ("/sse/1", "x=1")),
            ("/sse/1", ("/sse/1", "")),
            ("http://gw:8080/sse/1?x=1", ("/sse/1", "x=1")),
            ("HTTPS://gw/a/b", ("/a/b", "")),
            ("http://gw", ("/", "")),
            ("http://gw?x=1", ("/", "x=1")),
            ("*", ("*", "")),
            ("ftp://gw/a", ("ftp://gw/a", "")),
        ] {
            assert_eq!(path_and_query(target), expected, "{target}");
        }
    }

    #[test]
    fn a_request_has_one_valid_host() {
        let host = header("Host", "example.com:8080");
        assert_eq!(host_header(Some(1), &[host]), Ok(()));
        assert_eq!(host_header(Some(1), &[header("host", "")]), Ok(()));
        assert_eq!(
            host_header(Some(0), &[]),
            Ok(()),
            "HTTP/1.0 may leave it out"
        );
        assert_eq!(host_header(Some(1), &[]), Err("missing Host header"));
        assert_eq!(
            host_header(Some(0), &[host, header("HOST", "other")]),
            Err("more than one Host header")
        );
        for valid in ["[::1]:8080", "[::1]", "10.0.0.1:80", "x:"] {
            assert_eq!(
                host_header(Some(1), &[header("Host", valid)]),
                Ok(()),
                "{valid}"
            );
        }
        for invalid in [
            "user@example.com",
            "a b",
            "example.com:port",
            "/path",
            "[::1",
            "x:99999",
        ] {
            assert_eq!(
                host_header(Some(1), &[header("Host", invalid)]),
                Err("invalid Host header"),
                "{invalid}"
            );
        }
    }
}
