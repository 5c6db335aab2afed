//! One HTTP/2 connection (TLS with ALPN `h2`, or cleartext with prior knowledge under
//! `use_h2c`), served with the h2 crate: each stream's request takes the way an HTTP/1.1
//! head takes (one route decision, the protections, then the plugin's claim or
//! [`respond`](crate::respond)). A claimed stream goes to the plugin as an
//! [`H2Transport`] (the plugin's calls drive the stream, flow control included); the
//! others are answered here, body pumped with the stream's window and dropped at its
//! reset. On drain, or after `idle_timeout` without a stream, the connection sends GOAWAY
//! and serves its open streams to their end.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use abi::{ConnectionSlot, FfiConnectionSlot, Header, HttpVersion, RequestHead};
use abi_stable::sabi_trait::TD_Opaque;
use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use h2::RecvStream;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connections::Slot;
use crate::gate::RequestTimedOut;
use crate::handoff::{self, Client};
use crate::pipeline::{self, Body, BoxError};
use crate::protect::Answer;
use crate::respond::respond;
use crate::route::Route;
use crate::shared::Shared;
use crate::transport::{bridged, H2Transport};

/// What a client sends first on an HTTP/2 connection (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connection-specific headers, a protocol error in HTTP/2 (RFC 9113 §8.2.2): left out of
/// every response head the host sends on a stream, its own or a plugin's.
pub const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Bytes h2 may queue per stream beyond what the client's window took: what a stream
/// costs the host when its whole connection stalls (h2's default, 400 KiB, would let a
/// stalled 100-stream connection hold 40 MiB).
const MAX_SEND_BUFFER: usize = 32 * 1024;
/// The receive windows the host grants: request bodies only (an SSE GET has none).
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The HTTP/2 settings from the config.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Root `use_h2c`: prior-knowledge HTTP/2 on the cleartext port.
    pub use_h2c: bool,
    /// Root `max_concurrent_streams`, per connection.
    pub max_concurrent_streams: u32,
    /// Root `http2_ping_interval`: a connection whose PING is not answered by the next one
    /// is closed (`None`: no PINGs).
    pub ping_interval: Option<Duration>,
}

/// Serves an HTTP/2 connection whose preface is still to be read from `io`.
pub async fn serve<IO>(io: IO, peer: SocketAddr, slot: Slot, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(shared.http2.max_concurrent_streams)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(u32::try_from(shared.limits.max_header_bytes).unwrap_or(u32::MAX));
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut connection =
        match tokio::time::timeout(shared.limits.read_header_timeout, handshake).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return tracing::debug!("HTTP/2 connection from {peer}: {e}"),
            Err(_) => return tracing::debug!("HTTP/2 connection from {peer}: no preface in time"),
        };
    // Held by each stream while it is served (by the host's task, or by the plugin with
    // the stream's slot): the connection is idle when only this one is left.
    let open = Arc::new(());
    let idle_timeout = shared.limits.idle_timeout;
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut going_away = false;
    let mut pings = Pings::new(&mut connection, shared.http2.ping_interval);
    loop {
        tokio::select! {
            alive = pings.tick() => if !alive {
                return tracing::debug!("HTTP/2 connection from {peer}: no PING answer, closed");
            },
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let stream = serve_stream(request, respond, peer, shared.clone(), open.clone());
                    tokio::spawn(stream);
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                }
                Some(Err(e)) => return tracing::debug!("HTTP/2 connection from {peer}: {e}"),
                None => return,
            },
            // No stream for `idle_timeout`: closed as an idle HTTP/1.1 connection is.
            () = &mut idle, if !going_away => {
                if Arc::strong_count(&open) == 1 {
                    going_away = true;
                    connection.graceful_shutdown();
                } else {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                }
            }
            // GOAWAY: no new streams; the open ones end as their servers end them (the
            // plugins' drain, bounded by `shutdown_timeout`).
            () = shared.draining.cancelled(), if !going_away => {
                going_away = true;
                connection.graceful_shutdown();
            }
        }
    }
}

/// The PING keep-alive of one connection: a PING each interval, and the connection closed
/// when the last one is still unanswered at the next.
struct Pings {
    ping_pong: Option<h2::PingPong>,
    interval: Option<tokio::time::Interval>,
    awaiting: bool,
}

impl Pings {
    fn new<IO: AsyncRead + AsyncWrite + Unpin>(
        connection: &mut h2::server::Connection<IO, Bytes>,
        every: Option<Duration>,
    ) -> Self {
        let interval = every.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Self {
            ping_pong: interval.as_ref().and_then(|_| connection.ping_pong()),
            interval,
            awaiting: false,
        }
    }

    /// Completes at each interval (never without PINGs), or when a PONG arrives; `false`
    /// when the connection is to be closed.
    async fn tick(&mut self) -> bool {
        let (Some(ping_pong), Some(interval)) = (self.ping_pong.as_mut(), self.interval.as_mut())
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interval.tick() => {
                if self.awaiting {
                    return false;
                }
                self.awaiting = ping_pong.send_ping(h2::Ping::opaque()).is_ok();
                true
            }
            pong = std::future::poll_fn(|cx| ping_pong.poll_pong(cx)), if self.awaiting => {
                self.awaiting = false;
                pong.is_ok()
            }
        }
    }
}

/// One stream: the route decision, then the claim or the host's own answer.
async fn serve_stream(
    request: http::Request<RecvStream>,
    mut respond_to: SendResponse<Bytes>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    open: Arc<()>,
) {
    // The stream's HEADERS are in: its body is due by this plus `read_timeout`.
    let started = tokio::time::Instant::now();
    if let Err(why) = one_host(&request) {
        tracing::info!("rejected an HTTP/2 request from {peer}: 400 {why}");
        let answer = Answer::new(StatusCode::BAD_REQUEST, format!("{why}\n"));
        return send(respond_to, pipeline::answer(answer)).await;
    }
    let decision = shared
        .router
        .decide(request.method().as_str(), request.uri().path());
    let claim = match decision.route {
        Route::Plugin(claim) => claim,
        _ => {
            let deadline = shared.limits.read_timeout.map(|limit| started + limit);
            let request = request.map(|body| H2Body::new(body, deadline).boxed());
            let response = respond(&shared, decision, request, peer).await;
            return send(respond_to, response).await;
        }
    };
    let (parts, body) = request.into_parts();
    let head = request_head(&parts, peer);
    let pass = match handoff::protect(&shared, &claim, &head, peer) {
        Ok(pass) => pass,
        Err(answer) => return send(respond_to, pipeline::answer(answer)).await,
    };
    // A claimed stream holds a place in the count as a connection does: it holds an
    // upstream descriptor for as long.
    let Some(slot) = shared.connections.try_open() else {
        tracing::warn!("HTTP/2 stream from {peer} refused: all allowed connections are open");
        respond_to.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    };
    let transport = H2Transport::new(body, respond_to, head.expects_continue());
    let client = Client {
        transport: abi::ClientTransport::Bridged(bridged(transport)),
        version: HttpVersion::Http2,
        read_ahead: Vec::new(),
        peer,
        started,
        slot: ConnectionSlot::from_value(
            StreamSlot {
                _counted: slot,
                _open: open,
            },
            TD_Opaque,
        ),
    };
    handoff::hand_over(&shared, claim, head, pass, client);
}

/// A claimed stream's place: in the connection count, and among its connection's open
/// streams, for as long as the plugin keeps it.
#[derive(Debug)]
struct StreamSlot {
    _counted: Slot,
    _open: Arc<()>,
}

impl FfiConnectionSlot for StreamSlot {}

/// RFC 9113 §8.3.1: `:authority` and `Host`, when both are sent, say the same; the rest
/// is HTTP/1.1's rule (at most one valid `Host`), an absent one allowed.
fn one_host(request: &http::Request<RecvStream>) -> Result<(), &'static str> {
    let hosts = request.headers().get_all(http::header::HOST);
    let host = crate::gate::one_host(hosts.iter().map(|v| v.as_bytes()), false)?;
    match (host, request.uri().authority()) {
        (Some(host), Some(authority)) if host != authority.as_str().as_bytes() => {
            Err("Host differs from :authority")
        }
        _ => Ok(()),
    }
}

/// The head as the plugin gets it over HTTP/1.1: `:authority` as `Host` when the request
/// has none.
fn request_head(parts: &http::request::Parts, peer: SocketAddr) -> RequestHead {
    let mut headers: Vec<Header> = Vec::with_capacity(parts.headers.len() + 1);
    if let (Some(authority), false) = (
        parts.uri.authority(),
        parts.headers.contains_key(http::header::HOST),
    ) {
        headers.push(Header {
            name: "host".into(),
            value: authority.as_str().as_bytes().to_vec().into(),
        });
    }
    headers.extend(parts.headers.iter().map(|(name, value)| Header {
        name: name.as_str().into(),
        value: value.as_bytes().to_vec().into(),
    }));
    RequestHead {
        method: parts.method.as_str().into(),
        path: parts.uri.path().into(),
        query: parts.uri.query().unwrap_or("").into(),
        headers: headers.into(),
        peer: peer.to_string().into(),
    }
}

/// Sends a host response on its stream: the head, then the body as the stream's window
/// allows, until its end or the client's reset (which drops the body, and with it a
/// `no-op` backend call).
async fn send(mut respond_to: SendResponse<Bytes>, response: http::Response<Body>) {
    let (mut parts, mut body) = response.into_parts();
    for name in CONNECTION_SPECIFIC {
        parts.headers.remove(name);
    }
    let end = body.is_end_stream();
    let head = http::Response::from_parts(parts, ());
    let Ok(mut stream) = respond_to.send_response(head, end) else {
        return;
    };
    if end {
        return;
    }
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let mut data = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => return stream.send_reset(h2::Reason::INTERNAL_ERROR),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: none of the host's answers has them worth keeping.
                Err(_) => continue,
            },
        };
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let capacity = std::future::poll_fn(|cx| match stream.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => stream.poll_capacity(cx),
            })
            .await;
            match capacity {
                Some(Ok(0)) => {}
                Some(Ok(n)) => {
                    let chunk = data.split_to(n.min(data.len()));
                    if stream.send_data(chunk, false).is_err() {
                        return;
                    }
                }
                None | Some(Err(_)) => return,
            }
        }
    }
}

/// An HTTP/2 request body as the pipeline reads one: each chunk's window given back to
/// the client as the pipeline takes it, and due by the request's `read_timeout` as on
/// HTTP/1.1 (the gate's [`RequestTimedOut`], which the pipeline answers with 408).
struct H2Body {
    recv: RecvStream,
    /// Armed when a read pends, as the gate's clock is; `None` without `read_timeout`.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl H2Body {
    fn new(recv: RecvStream, deadline: Option<tokio::time::Instant>) -> Self {
        Self {
            recv,
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

impl HttpBody for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.recv.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let _ = this.recv.flow_control().release_capacity(data.remaining());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Some(deadline) = this.deadline.as_mut() else {
                    return Poll::Pending;
                };
                std::task::ready!(deadline.as_mut().poll(cx));
                let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, RequestTimedOut);
                Poll::Ready(Some(Err(Box::new(timed_out))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// `io` with the bytes already read from it in front: the h2c preface, read to tell
/// HTTP/2 from HTTP/1.1, is read again by h2.
pub struct Rewound<IO> {
    read: Bytes,
    io: IO,
}

impl<IO> Rewound<IO> {
    pub fn new(read: Bytes, io: IO) -> Self {
        Self { read, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewound<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = buf.remaining().min(this.read.len());
        buf.put_slice(&this.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewound<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
