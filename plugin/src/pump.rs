//! Moving one upstream's body into a client's session: the hot path.
//!
//! When the upstream is readable the pump takes a pooled buffer (`read_buffer_bytes`),
//! reads once, skips chunk framing in place (the `chunked` decoder yields payload ranges,
//! nothing is copied), runs the event-stream [`Scanner`] over the payload, and hands every
//! complete event of that read to the session in one `writev`. The bytes of an event not
//! yet complete stay in the buffer (moved to its front) until the read that completes it,
//! so the client is always between events when the upstream fails, a keepalive comment is
//! due or the gateway drains: a stream can resume on another connection with nothing lost
//! or doubled. Idle streams hold no buffer; nothing is allocated per event; one timer per
//! stream serves the keepalive, the upstream idle timeout and the end of the client's
//! token, re-armed only when it fires.

use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use sse::Scanner;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use wire::framing::Framing;

use crate::pool::{Buffer, BufferPool};
use crate::session::{ClientTransport, CutOff, End, Session};
use crate::upstream::{self, Broken, Upstream};

/// How one upstream stopped feeding a stream that can go on with another.
#[derive(Debug)]
pub enum UpstreamEnd {
    /// Its body ended where its framing said it would (or at EOF when unframed).
    Whole,
    /// It broke, or sent nothing for `upstream_idle_timeout` ([`Broken::Idle`]).
    Broke(Broken),
}

/// What the relay keeps of a client's stream from one upstream connection to the next.
pub struct Scan {
    /// Event boundaries, the last id and `retry:`; `None` for a non-2xx answer relayed as
    /// it is, which has no events to keep whole.
    pub scanner: Option<Scanner>,
    /// The start of an event, moved to the buffer's front, waiting for its end.
    carry: Option<(Buffer, usize)>,
    /// Payload ranges of the current read, and of the part kept back; reused.
    ranges: Vec<Range<usize>>,
    tail: Vec<Range<usize>>,
}

impl Scan {
    pub fn new(scanner: Option<Scanner>) -> Self {
        Self {
            scanner,
            carry: None,
            ranges: Vec::new(),
            tail: Vec::new(),
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
    pub async fn flush_partial_event<C: ClientTransport>(&mut self, session: &mut Session<'_, C>) {
        if let Some((buf, len)) = self.carry.take() {
            let _ = session.send(&[&buf[..len]], |part| part, 0).await;
        }
    }
}

/// Relays `upstream`'s body into `session` until the upstream ends (`Ok`) or the client's
/// stream does (`Err`: the client left or stalled, the gateway drains, the token expired).
pub async fn pump<C: ClientTransport>(
    session: &mut Session<'_, C>,
    upstream: &mut Upstream,
    scan: &mut Scan,
    pool: &Arc<BufferPool>,
) -> Result<UpstreamEnd, End> {
    let route = session.route();
    let idle_timeout = route.config.upstream_idle_timeout;
    let mut last_read = Instant::now();
    let mut timer = pin!(tokio::time::sleep_until(next_deadline(
        idle_timeout,
        last_read,
        session
    )));
    let mut drained = pin!(session.drained());
    // The buffer, the length of the kept-back event start at its front, and the new bytes.
    let mut read = upstream.first.take().map(|(buf, filled)| (buf, 0, filled));
    loop {
        if let Some((buf, kept, filled)) = read.take() {
            // `last_read` is this wake's one reading of the clock: the write's start too.
            match forward(
                session,
                buf,
                kept,
                filled,
                last_read,
                &mut upstream.body,
                scan,
            )
            .await
            {
                Ok(true) => return Ok(UpstreamEnd::Whole),
                Ok(false) => {}
                Err(Forward::Broke(broken)) => return Ok(UpstreamEnd::Broke(broken)),
                Err(Forward::End(end)) => return Err(end),
            }
        }
        // The select only says what happened; the work is done after it, so that its
        // futures are gone before any other await and the task reserves room for one set.
        let timer_fired = tokio::select! {
            biased;
            () = &mut drained => return Err(CutOff::Drain.into()),
            ready = upstream.stream.readable() => match ready {
                Ok(()) => false,
                Err(e) => return Ok(UpstreamEnd::Broke(e.into())),
            },
            () = session.closed() => return Err(End::ClientLeft),
            () = &mut timer => true,
        };
        if timer_fired {
            let now = Instant::now();
            if session.expires_at().is_some_and(|at| now >= at) {
                return Err(CutOff::TokenExpired.into());
            }
            if idle_timeout.is_some_and(|idle| now >= last_read + idle) {
                return Ok(UpstreamEnd::Broke(Broken::Idle));
            }
            if session.keepalive_at().is_some_and(|at| now >= at) {
                session.send_keepalive().await?;
            }
            timer
                .as_mut()
                .reset(next_deadline(idle_timeout, last_read, session));
            continue;
        }
        let (mut buf, kept) = scan.carry.take().unwrap_or_else(|| (pool.take(), 0));
        match read_ready(&mut upstream.stream, &mut buf[kept..]) {
            None => scan.carry = (kept > 0).then_some((buf, kept)),
            Some(Ok(0)) => {
                scan.carry = (kept > 0).then_some((buf, kept));
                return Ok(match upstream::closed(&upstream.body) {
                    Ok(()) => UpstreamEnd::Whole,
                    Err(broken) => UpstreamEnd::Broke(broken),
                });
            }
            Some(Ok(n)) => {
                last_read = Instant::now();
                read = Some((buf, kept, kept..kept + n));
            }
            Some(Err(e)) => return Ok(UpstreamEnd::Broke(e.into())),
        }
    }
}

/// Reads what the socket has, or `None` if its readiness was stale. Unlike `try_read`, a
/// read that does not fill `buf` tells tokio that the socket is drained, so the next wait
/// goes straight to epoll instead of first making a `read` that only returns EAGAIN: one
/// syscall less per event on a paced stream.
fn read_ready(upstream: &mut upstream::Stream, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = ReadBuf::new(buf);
    match Pin::new(upstream).poll_read(&mut cx, &mut read) {
        Poll::Ready(Ok(())) => Some(Ok(read.filled().len())),
        Poll::Ready(Err(e)) => Some(Err(e)),
        Poll::Pending => None,
    }
}

/// When the stream's one timer should next fire: the earliest of the upstream idle
/// deadline and the session's keepalive and token expiry (far away when all are off).
fn next_deadline<C: ClientTransport>(
    idle_timeout: Option<std::time::Duration>,
    last_read: Instant,
    session: &Session<'_, C>,
) -> Instant {
    let idle = idle_timeout.map(|t| last_read + t);
    [idle, session.keepalive_at(), session.expires_at()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| last_read + std::time::Duration::from_secs(365 * 24 * 3600))
}

/// Why a read's events could not all be forwarded.
enum Forward {
    Broke(Broken),
    End(End),
}

/// Hands the complete events of one read to the session: the kept-back start of an event
/// (`buf[..kept]`) and the payload in `buf[filled]`, read at `now`. Keeps back what
/// follows the last event boundary. `true` once the upstream body is whole.
async fn forward<C: ClientTransport>(
    session: &mut Session<'_, C>,
    mut buf: Buffer,
    kept: usize,
    filled: Range<usize>,
    now: Instant,
    body: &mut Framing,
    scan: &mut Scan,
) -> Result<bool, Forward> {
    let ranges = &mut scan.ranges;
    ranges.clear();
    if kept > 0 {
        ranges.push(0..kept);
    }
    let whole =
        upstream::payload(body, &buf[..], filled.clone(), ranges).map_err(Forward::Broke)?;
    let new_payload = usize::from(kept > 0)..ranges.len();
    let payload_end = ranges.last().map_or(0, |r| r.end);
    // Where the client may be cut off: past the read's last event boundary.
    let mut boundary = None;
    let mut events = 0;
    match &mut scan.scanner {
        Some(scanner) => {
            for range in &ranges[new_payload] {
                let found = scanner.boundaries(&buf[range.clone()]);
                if let Some(end) = found.last {
                    boundary = Some(range.start + end);
                }
                events += found.events;
            }
        }
        None => boundary = Some(payload_end),
    }
    if kept > 0 && ranges.get(1).is_some_and(|r| r.start == kept) {
        // The kept-back start of an event and the new payload are one run of bytes (no
        // chunk framing between them): one part to write, not two.
        ranges[0].end = ranges[1].end;
        ranges.remove(1);
    }
    let cut = match boundary {
        Some(cut) => {
            session.set_mid_event(false);
            cut
        }
        None => {
            let unfinished: usize = ranges.iter().map(|r| r.len()).sum();
            if unfinished < buf.len() {
                compact(&mut buf, ranges);
                scan.carry = (unfinished > 0).then_some((buf, unfinished));
                return Ok(whole);
            }
            // An event larger than the buffer: it cannot be held back whole.
            session.set_mid_event(true);
            payload_end
        }
    };
    scan.tail.clear();
    split_at(ranges, cut, &mut scan.tail);
    if ranges.iter().any(|r| !r.is_empty()) {
        let ranges = &scan.ranges;
        session
            .send_at(now, ranges, |r| &buf[r.clone()], events)
            .await
            .map_err(Forward::End)?;
    }
    let tail = compact(&mut buf, &scan.tail);
    scan.carry = (tail > 0).then_some((buf, tail));
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

#[cfg(test)]
mod tests;
