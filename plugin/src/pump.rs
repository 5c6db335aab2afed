//! Moving one upstream's body to the client: the hot path.
//!
//! When the upstream is readable the pump takes a pooled buffer (`read_buffer_bytes`),
//! reads once, skips chunk framing in place (the `chunked` decoder yields payload ranges,
//! nothing is copied), runs the event-stream [`Scanner`] over the payload, and writes every
//! complete event of that read to the client in one `writev`. The bytes of an event not yet
//! complete stay in the buffer (moved to its front) until the read that completes it, so
//! the client is always between events when the upstream fails, a keepalive comment is
//! due or the gateway drains: a stream can resume on another connection with nothing lost
//! or doubled. Idle streams hold no buffer; nothing is allocated per event; one timer per
//! stream serves the keepalive, the upstream idle timeout and the end of the client's
//! token, re-armed only when it fires.

use std::io::IoSlice;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use sse::{Piece, Scanner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::framing::Framing;

use crate::pool::{Buffer, BufferPool};
use crate::stats::{Drop, RouteStats};
use crate::upstream::{self, within, Upstream};
use crate::RouteState;

/// Payload ranges written per `writev` call.
pub const IOV_BATCH: usize = 64;
pub const KEEPALIVE: &[u8] = b":keepalive\n";

/// Why a pump returned.
#[derive(Debug)]
pub enum Ended {
    /// The upstream body ended where its framing said it would (or at EOF when unframed).
    Complete,
    UpstreamBroke(String),
    /// No bytes from the upstream for `upstream_idle_timeout`.
    UpstreamIdle,
    ClientGone,
    /// The client took nothing for `client_write_timeout`.
    ClientStalled,
    CutOff(CutOff),
}

/// Why the gateway ends a stream that could go on. It ends at an event boundary, after
/// the block's `shutdown_event` if one is set, so the browser reconnects at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// The gateway drains.
    Shutdown,
    /// The JWT that authorised the stream expired (`exp` plus the leeway): the browser
    /// comes back with a fresh one, or gets 401.
    TokenExpired,
}

impl CutOff {
    pub fn drop_reason(self) -> Drop {
        match self {
            CutOff::Shutdown => Drop::Shutdown,
            CutOff::TokenExpired => Drop::TokenExpired,
        }
    }

    /// For the stream's access-log line.
    pub fn why(self) -> &'static str {
        match self {
            CutOff::Shutdown => "the gateway drained",
            CutOff::TokenExpired => "the token expired",
        }
    }
}

/// Completes at the stream's next cut-off: the drain, or `expires_at`.
pub async fn next_cut_off(shutdown: &CancellationToken, expires_at: Option<Instant>) -> CutOff {
    let expiry = async {
        match expires_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => CutOff::Shutdown,
        () = expiry => CutOff::TokenExpired,
    }
}

/// What a client's stream carries from one upstream connection to the next.
pub struct ClientStream {
    /// `None` for a non-2xx answer relayed as is: no events to keep whole.
    pub scanner: Option<Scanner>,
    /// The client holds part of an event (one larger than the read buffer): it cannot be
    /// sent a comment now, nor resumed elsewhere without corrupting that event.
    pub mid_event: bool,
    /// Events and bytes written to the client, for its access-log line.
    pub events: u64,
    pub bytes: u64,
    /// When the client's token expires, if a JWT authorised the stream.
    pub expires_at: Option<Instant>,
    /// The start of an event, moved to the buffer's front, waiting for its end.
    carry: Option<(Buffer, usize)>,
    /// Payload ranges of the current read, and of the part kept back; reused.
    ranges: Vec<Range<usize>>,
    tail: Vec<Range<usize>>,
    last_write: Instant,
}

impl ClientStream {
    pub fn new(scanner: Option<Scanner>, expires_at: Option<Instant>) -> Self {
        Self {
            scanner,
            mid_event: false,
            events: 0,
            bytes: 0,
            expires_at,
            carry: None,
            ranges: Vec::new(),
            tail: Vec::new(),
            last_write: Instant::now(),
        }
    }

    /// The cut-off due now, if any: for loops that write without waiting in between.
    pub fn cut_off_due(&self, shutdown: &CancellationToken) -> Option<CutOff> {
        if shutdown.is_cancelled() {
            Some(CutOff::Shutdown)
        } else if self.expires_at.is_some_and(|at| Instant::now() >= at) {
            Some(CutOff::TokenExpired)
        } else {
            None
        }
    }

    /// Forgets an unfinished event (the upstream it came from is gone) and readies the
    /// scanner for a resumed stream.
    pub fn discard_partial_event(&mut self) {
        self.carry = None;
        if let Some(scanner) = &mut self.scanner {
            scanner.restart();
        }
    }

    /// Writes the unfinished event as it is, for a stream that ends here.
    pub async fn flush_partial_event(&mut self, client: &mut TcpStream, route: &RouteState) {
        if let Some((buf, len)) = self.carry.take() {
            let _ = within(
                route.config.client_write_timeout,
                write_ranges(client, &buf, std::slice::from_ref(&(0..len))),
            )
            .await;
        }
    }

    /// [`Self::write_own`] in a box, for the relay's rare writes (the head, a final
    /// event): inline, their futures would enlarge every stream's task for its whole life.
    pub async fn write_own_boxed(
        &mut self,
        client: &mut (impl AsyncWrite + Unpin + Send),
        route: &RouteState,
        bytes: &[u8],
    ) -> Result<(), Ended> {
        Box::pin(self.write_own(client, route, bytes)).await
    }

    /// Writes `bytes` (a comment or event of the plugin's own) between events.
    pub async fn write_own(
        &mut self,
        client: &mut (impl AsyncWrite + Unpin),
        route: &RouteState,
        bytes: &[u8],
    ) -> Result<(), Ended> {
        let len = bytes.len();
        within(
            route.config.client_write_timeout,
            write_ranges(client, bytes, std::slice::from_ref(&(0..len))),
        )
        .await
        .map_err(|_| Ended::ClientStalled)?
        .map_err(|_| Ended::ClientGone)?;
        self.last_write = Instant::now();
        Ok(())
    }
}

/// Relays `upstream`'s body to `client` until one of them ends, the gateway drains, or a
/// timeout fires.
pub async fn pump(
    client: &mut TcpStream,
    upstream: &mut Upstream,
    stream: &mut ClientStream,
    route: &RouteState,
    pool: &Arc<BufferPool>,
    shutdown: &CancellationToken,
) -> Ended {
    let (mut client_reader, mut client_writer) = client.split();
    let mut last_read = Instant::now();
    let timer = pin!(tokio::time::sleep_until(next_deadline(
        route, last_read, stream
    )));
    let mut timer = timer;
    let cancelled = pin!(shutdown.cancelled());
    let mut cancelled = cancelled;
    // The buffer, the length of the kept-back event start at its front, and the new bytes.
    let mut read = upstream.first.take().map(|(buf, filled)| (buf, 0, filled));
    loop {
        if let Some((buf, kept, filled)) = read.take() {
            match forward(
                &mut client_writer,
                buf,
                kept,
                filled,
                &mut upstream.body,
                stream,
                route,
            )
            .await
            {
                Ok(true) => return Ended::Complete,
                Ok(false) => {}
                Err(ended) => return ended,
            }
        }
        // The select only says what happened; the work is done after it, so that its
        // futures are gone before any other await and the task reserves room for one set.
        let timer_fired = tokio::select! {
            biased;
            () = &mut cancelled => return Ended::CutOff(CutOff::Shutdown),
            ready = upstream.stream.readable() => match ready {
                Ok(()) => false,
                Err(e) => return Ended::UpstreamBroke(e.to_string()),
            },
            // What the client sends after its request is ignored; reading it is how EOF is seen.
            () = client_gone(&mut client_reader) => return Ended::ClientGone,
            () = &mut timer => true,
        };
        if timer_fired {
            let now = Instant::now();
            if stream.expires_at.is_some_and(|at| now >= at) {
                return Ended::CutOff(CutOff::TokenExpired);
            }
            if route
                .config
                .upstream_idle_timeout
                .is_some_and(|idle| now >= last_read + idle)
            {
                return Ended::UpstreamIdle;
            }
            let keepalive_due = route
                .config
                .keepalive
                .is_some_and(|every| now >= stream.last_write + every);
            if keepalive_due && stream.scanner.is_some() && !stream.mid_event {
                if let Err(ended) = stream.write_own(&mut client_writer, route, KEEPALIVE).await {
                    return ended;
                }
            }
            timer
                .as_mut()
                .reset(next_deadline(route, last_read, stream));
            continue;
        }
        let (mut buf, kept) = stream.carry.take().unwrap_or_else(|| (pool.take(), 0));
        match read_ready(&mut upstream.stream, &mut buf[kept..]) {
            None => stream.carry = (kept > 0).then_some((buf, kept)),
            Some(Ok(0)) => {
                stream.carry = (kept > 0).then_some((buf, kept));
                return match upstream.body {
                    Framing::UntilClose => Ended::Complete,
                    _ => Ended::UpstreamBroke("closed in the middle of the body".into()),
                };
            }
            Some(Ok(n)) => {
                last_read = Instant::now();
                read = Some((buf, kept, kept..kept + n));
            }
            Some(Err(e)) => return Ended::UpstreamBroke(e.to_string()),
        }
    }
}

/// Reads what the socket has, or `None` if its readiness was stale. Unlike `try_read`, a
/// read that does not fill `buf` tells tokio that the socket is drained, so the next wait
/// goes straight to epoll instead of first making a `read` that only returns EAGAIN: one
/// syscall less per event on a paced stream.
fn read_ready(upstream: &mut TcpStream, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = ReadBuf::new(buf);
    match Pin::new(upstream).poll_read(&mut cx, &mut read) {
        Poll::Ready(Ok(())) => Some(Ok(read.filled().len())),
        Poll::Ready(Err(e)) => Some(Err(e)),
        Poll::Pending => None,
    }
}

/// When the stream's one timer should next fire: the earliest of the keepalive, the
/// upstream idle deadline and the token's expiry (far away when all are off).
fn next_deadline(route: &RouteState, last_read: Instant, stream: &ClientStream) -> Instant {
    let config = &route.config;
    let idle = config.upstream_idle_timeout.map(|t| last_read + t);
    let keepalive = config.keepalive.map(|t| stream.last_write + t);
    [idle, keepalive, stream.expires_at]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| last_read + std::time::Duration::from_secs(365 * 24 * 3600))
}

/// Writes the complete events of one read: the kept-back start of an event (`buf[..kept]`)
/// and the payload in `buf[filled]`. Keeps back what follows the last event boundary.
/// `true` once the upstream body is whole.
async fn forward(
    client: &mut (impl AsyncWrite + Unpin),
    mut buf: Buffer,
    kept: usize,
    filled: Range<usize>,
    body: &mut Framing,
    stream: &mut ClientStream,
    route: &RouteState,
) -> Result<bool, Ended> {
    let ranges = &mut stream.ranges;
    ranges.clear();
    if kept > 0 {
        ranges.push(0..kept);
    }
    let whole = upstream::payload(body, &buf[..], filled.clone(), ranges)
        .map_err(|e| Ended::UpstreamBroke(e.to_string()))?;
    let new_payload = usize::from(kept > 0)..ranges.len();
    let payload_end = ranges.last().map_or(0, |r| r.end);
    // Where the client may be cut off: past the read's last event boundary.
    let mut boundary = None;
    let mut events = 0;
    match &mut stream.scanner {
        Some(scanner) => {
            for range in &ranges[new_payload] {
                scanner.feed(&buf[range.clone()], |piece| match piece {
                    Piece::EventEnd { end, .. } => {
                        boundary = Some(range.start + end);
                        events += 1;
                    }
                    Piece::Comment { end } => boundary = Some(range.start + end),
                    _ => {}
                });
            }
        }
        None => boundary = Some(payload_end),
    }
    let cut = match boundary {
        Some(cut) => {
            stream.mid_event = false;
            cut
        }
        None => {
            let unfinished: usize = ranges.iter().map(|r| r.len()).sum();
            if unfinished < buf.len() {
                compact(&mut buf, ranges);
                stream.carry = (unfinished > 0).then_some((buf, unfinished));
                return Ok(whole);
            }
            // An event larger than the buffer: it cannot be held back whole.
            stream.mid_event = true;
            payload_end
        }
    };
    stream.tail.clear();
    split_at(ranges, cut, &mut stream.tail);
    let bytes: usize = ranges.iter().map(|r| r.len()).sum();
    if bytes > 0 {
        within(
            route.config.client_write_timeout,
            write_ranges(client, &buf, ranges),
        )
        .await
        .map_err(|_| Ended::ClientStalled)?
        .map_err(|_| Ended::ClientGone)?;
        stream.last_write = Instant::now();
        RouteStats::add(&route.stats.bytes, bytes as u64);
        RouteStats::add(&route.stats.events, events);
        stream.bytes += bytes as u64;
        stream.events += events;
    }
    let tail = compact(&mut buf, &stream.tail);
    stream.carry = (tail > 0).then_some((buf, tail));
    Ok(whole)
}

/// Moves the part of `ranges` at or past `cut` into `tail`; a range that straddles `cut`
/// is split between the two.
fn split_at(ranges: &mut Vec<Range<usize>>, cut: usize, tail: &mut Vec<Range<usize>>) {
    let first_after = ranges.partition_point(|r| r.end <= cut);
    let straddling = ranges
        .get(first_after)
        .map(|r| r.start)
        .filter(|&s| s < cut);
    tail.extend(ranges.drain(first_after..).map(|r| r.start.max(cut)..r.end));
    if let Some(start) = straddling {
        ranges.push(start..cut);
    }
}

/// Moves `ranges` of `buf` to its front, in order; returns their total length.
fn compact(buf: &mut [u8], ranges: &[Range<usize>]) -> usize {
    let mut front = 0;
    for range in ranges {
        buf.copy_within(range.clone(), front);
        front += range.len();
    }
    front
}

/// Writes the given ranges of `buf`, up to [`IOV_BATCH`] per `writev`.
pub async fn write_ranges(
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &[u8],
    ranges: &[Range<usize>],
) -> std::io::Result<()> {
    write_parts(writer, ranges, |r| &buf[r.clone()]).await
}

/// Writes `parts` (each seen as bytes through `bytes`), up to [`IOV_BATCH`] per `writev`.
/// The iovec is built on the stack inside each poll, so an idle stream's future keeps only
/// two indices.
pub async fn write_parts<'a, T>(
    writer: &mut (impl AsyncWrite + Unpin),
    parts: &'a [T],
    bytes: impl Fn(&'a T) -> &'a [u8],
) -> std::io::Result<()> {
    // The next part to write, and how much of it is already written.
    let (mut next, mut offset) = (0, 0);
    while next < parts.len() {
        let written = std::future::poll_fn(|cx| {
            let mut iov = [IoSlice::new(&[]); IOV_BATCH];
            let group = &parts[next..parts.len().min(next + IOV_BATCH)];
            for (i, (slot, part)) in iov.iter_mut().zip(group).enumerate() {
                let skip = if i == 0 { offset } else { 0 };
                *slot = IoSlice::new(&bytes(part)[skip..]);
            }
            Pin::new(&mut *writer).poll_write_vectored(cx, &iov[..group.len()])
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = written;
        while left > 0 {
            let part_left = bytes(&parts[next]).len() - offset;
            if left < part_left {
                offset += left;
                left = 0;
            } else {
                left -= part_left;
                (next, offset) = (next + 1, 0);
            }
        }
    }
    Ok(())
}

/// Completes when the client closes its side or the socket fails.
pub async fn client_gone(client: &mut (impl AsyncRead + Unpin)) {
    let mut discard = [0u8; 64];
    while let Ok(n) = client.read(&mut discard).await {
        if n == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
