//! One client's stream, whatever feeds it: the relay's upstream (`pump`), a fan-out ring
//! (`fanout::follow`) or a Kafka catch-up (`fanout::kafka`).
//!
//! A [`Session`] owns the client's side: its transport (any [`ClientTransport`]), the
//! response head (written once, with the host's headers), every write to the client (each
//! within `client_write_timeout`: a client that takes nothing for that long is
//! [`End::ClientStalled`]), the counting of events, bytes, reconnects and drops, the
//! keepalive comment, the stream's cut-offs (the drain and the end of the client's token,
//! at an event boundary, after the `shutdown_event`), and the end: the client closed or
//! reset, and the access-log line. Sources only say what to write and, when they stop,
//! which [`End`] it was; they never count, and never touch the client themselves.

mod end;
mod transport;

use std::fmt::Display;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;

use abi::RequestHead;
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};

use crate::body::{BodyRefused, Unread};
use crate::drain::{Drain, Turn};
use crate::respond::{LogLine, Refusal, EVENT_STREAM_HEADERS};
use crate::stats::RouteStats;
use crate::watch::Watch;
use crate::{RouteState, Shared, Slot, PLUGIN_NAME};
pub use end::{CutOff, End};
pub use transport::{write_parts, ClientTransport, ResponseHead, IOV_BATCH};

/// The comment a stream gets after `keepalive` without bytes.
pub const KEEPALIVE: &[u8] = b":keepalive\n";

pub struct Session<'a, C> {
    client: C,
    /// The client's end, asked of `client` only when it may have changed.
    closed: Watch,
    shared: &'a Shared,
    route: &'a RouteState,
    /// `METHOD /path` of the client's request, for the log.
    label: String,
    /// The host's headers (CORS, for instance), until a response head takes them.
    host_headers: Vec<abi::Header>,
    answered: Answered,
    /// When the client's token expires, if a JWT authorised the stream.
    expires_at: Option<Instant>,
    /// When the request was handed over: the stream's duration and its first event's
    /// latency are counted from here.
    started: Instant,
    /// How long after `started` the first stream bytes were written (microseconds; 0:
    /// none yet): the client's time to first token, what an LLM stream is judged by.
    first_event_us: u64,
    last_write: Instant,
    /// The client holds part of an event (one larger than the relay's read buffer): it
    /// cannot be sent a comment now, nor resumed elsewhere without corrupting that event.
    mid_event: bool,
    /// What the stream carried, for its access-log line.
    events: u64,
    bytes: u64,
    reconnects: u32,
    /// When, within the drain's spread, this stream ends.
    drain_turn: Turn,
}

/// What the client has been answered so far.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answered {
    Nothing,
    EventStream,
    /// A non-2xx answer relayed with its status and body: no events, no keepalives.
    AsIs,
    /// A 2xx stream that is no event stream (NDJSON, chunked JSON, text), relayed byte
    /// for byte: a stream with a log line, but no events to keep whole and no comment
    /// ever written into it.
    Passthrough,
}

impl<'a, C: ClientTransport> Session<'a, C> {
    /// The session of the request `head`, handed over with the host's `host_headers`;
    /// only the label is kept from the head.
    pub fn new(
        client: C,
        head: &RequestHead,
        host_headers: Vec<abi::Header>,
        expires_at: Option<Instant>,
        shared: &'a Shared,
        route: &'a RouteState,
    ) -> Self {
        let now = Instant::now();
        Self {
            client,
            closed: Watch::default(),
            shared,
            route,
            label: format!("{} {}", head.method, head.path),
            host_headers,
            answered: Answered::Nothing,
            expires_at,
            started: now,
            first_event_us: 0,
            last_write: now,
            mid_event: false,
            events: 0,
            bytes: 0,
            reconnects: 0,
            drain_turn: shared.drain.turn(),
        }
    }

    pub fn route(&self) -> &'a RouteState {
        self.route
    }

    pub fn shared(&self) -> &'a Shared {
        self.shared
    }

    /// Takes the stream's place under the `max_streams` limits, and counts the stream.
    pub fn admit(&mut self) -> Result<Slot<'a>, Refusal> {
        let slot = self.shared.admit(self.route).ok_or(Refusal::OverLimit)?;
        RouteStats::add(&self.route.stats.streams, 1);
        Ok(slot)
    }

    /// Reads the request's body (see `crate::body`), before the stream starts.
    pub async fn read_body(&mut self, body: Unread) -> Result<Vec<u8>, BodyRefused> {
        body.read(&mut self.client).await
    }

    /// Answers `refusal` (with its status, body and `Retry-After`), counts and logs it.
    pub async fn refuse(mut self, refusal: Refusal) {
        match refusal.log_line() {
            Some(LogLine::Info(line)) => self.log().info(&self.line(line)),
            Some(LogLine::Warn(line)) => self.warn(line),
            None => {}
        }
        self.route.stats.dropped(refusal.drop_reason());
        let body = refusal.body();
        let length = body.len().to_string();
        let retry_after = self.shared.block.retry_after.as_secs().max(1).to_string();
        let status = refusal.status();
        let headers: [(&str, &[u8]); 3] = [
            ("Content-Type", b"text/plain; charset=utf-8"),
            ("Content-Length", length.as_bytes()),
            ("Retry-After", retry_after.as_bytes()),
        ];
        let retries = status == StatusCode::SERVICE_UNAVAILABLE;
        let headers = &headers[..if retries { 3 } else { 2 }];
        if self
            .write_head(status, headers, body.as_bytes())
            .await
            .is_ok()
        {
            let _ = self.client.shutdown().await;
            // What the client still sends (a body not read, or read only in part) is read
            // and dropped, within the host's bounds: closing with it unread would reset
            // the connection, and the client could lose the answer before reading it.
            wire::linger::discard(&mut self.client).await;
        }
    }

    /// Answers with the event stream's head; from here on the stream has a log line.
    pub async fn start_event_stream(&mut self) -> Result<(), End> {
        // Boxed: written once, and inline its future would enlarge every stream's task
        // for its whole life.
        Box::pin(self.write_head(StatusCode::OK, &EVENT_STREAM_HEADERS, &[])).await?;
        self.answered = Answered::EventStream;
        Ok(())
    }

    /// Answers with an upstream's `status` and `content_type`, a non-2xx answer or a 2xx
    /// stream that is no event stream; its body follows as it is.
    pub async fn start_as_is(
        &mut self,
        status: StatusCode,
        content_type: Option<&str>,
    ) -> Result<(), End> {
        let content_type = content_type.map(|value| ("Content-Type", value.as_bytes()));
        let streaming = status.is_success();
        // A stream's, as for an event stream: no cache, no buffering by a proxy in front.
        let headers: Vec<(&str, &[u8])> = content_type
            .into_iter()
            .chain(
                EVENT_STREAM_HEADERS[1..]
                    .iter()
                    .copied()
                    .filter(|_| streaming),
            )
            .collect();
        Box::pin(self.write_head(status, &headers, &[])).await?;
        self.answered = match streaming {
            true => Answered::Passthrough,
            false => Answered::AsIs,
        };
        Ok(())
    }

    /// The response head, once: it takes the host's headers.
    async fn write_head(
        &mut self,
        status: StatusCode,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<(), End> {
        debug_assert!(self.answered == Answered::Nothing, "one response head");
        let host_headers = std::mem::take(&mut self.host_headers);
        let head = ResponseHead {
            status,
            headers,
            host_headers: &host_headers,
        };
        self.timed(Instant::now(), |client| client.write_head(&head, body))
            .await
    }

    /// Writes `events` events, given as `parts` of bytes, and counts them.
    pub async fn send<'p, T>(
        &mut self,
        parts: &'p [T],
        bytes: impl Fn(&'p T) -> &'p [u8],
        events: u64,
    ) -> Result<(), End> {
        self.send_at(Instant::now(), parts, bytes, events).await
    }

    /// [`Self::send`] for a caller that has read the clock in this wake already (the
    /// pump, at its read): `now` is when the write starts, so the clock is read once per
    /// wake, not once more here.
    pub async fn send_at<'p, T>(
        &mut self,
        now: Instant,
        parts: &'p [T],
        bytes: impl Fn(&'p T) -> &'p [u8],
        events: u64,
    ) -> Result<(), End> {
        let len: usize = parts.iter().map(|p| bytes(p).len()).sum();
        self.timed(now, |client| write_parts(client, parts, bytes))
            .await?;
        if self.first_event_us == 0 && len > 0 {
            let after = self.last_write.duration_since(self.started);
            self.first_event_us = u64::try_from(after.as_micros()).unwrap_or(u64::MAX).max(1);
            self.route.stats.first_event.record(after);
        }
        RouteStats::add(&self.route.stats.bytes, len as u64);
        RouteStats::add(&self.route.stats.events, events);
        self.bytes += len as u64;
        self.events += events;
        Ok(())
    }

    /// Writes bytes of the plugin's own (a comment, the `shutdown_event`) between events;
    /// not the stream's, so not counted.
    pub async fn send_own(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.timed(Instant::now(), |client| client.write_all(bytes))
            .await
    }

    /// Runs a write of `client`, started at `now`, within `client_write_timeout`. Most
    /// writes complete at their first poll: the deadline's timer is made only for one
    /// that waits (its first `Poll::Pending`), and only then is the clock read again, for
    /// the time of the write's end.
    async fn timed<'c, F, W>(&'c mut self, now: Instant, write: W) -> Result<(), End>
    where
        W: FnOnce(&'c mut C) -> F,
        F: Future<Output = std::io::Result<()>>,
    {
        let at = self
            .route
            .config
            .client_write_timeout
            .map(|limit| now + limit);
        let last_write = &mut self.last_write;
        let mut write = pin!(write(&mut self.client));
        // Boxed: made only for a write that waits, and inline it would enlarge every
        // stream's task for its whole life.
        let mut deadline: Option<Pin<Box<Sleep>>> = None;
        let mut waited = false;
        let (written, waited) = std::future::poll_fn(move |cx| {
            if let Poll::Ready(written) = write.as_mut().poll(cx) {
                return Poll::Ready(Ok((written, waited)));
            }
            waited = true;
            let Some(at) = at else {
                return Poll::Pending;
            };
            let deadline = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            deadline.as_mut().poll(cx).map(|()| Err(End::ClientStalled))
        })
        .await?;
        written.map_err(|_| End::ClientLeft)?;
        // A write that waited ended later than it started.
        *last_write = if waited { Instant::now() } else { now };
        Ok(())
    }

    /// Says whether the client now holds part of an event; see [`Self::mid_event`].
    pub fn set_mid_event(&mut self, mid_event: bool) {
        self.mid_event = mid_event;
    }

    pub fn mid_event(&self) -> bool {
        self.mid_event
    }

    /// When the keepalive comment is due, if one may be sent: an event stream, between
    /// events, with `keepalive` on.
    pub fn keepalive_at(&self) -> Option<Instant> {
        let every = self.route.config.keepalive?;
        let between_events = self.answered == Answered::EventStream && !self.mid_event;
        between_events.then(|| self.last_write + every)
    }

    pub async fn send_keepalive(&mut self) -> Result<(), End> {
        self.send_own(KEEPALIVE).await
    }

    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// The cut-off due now, if any: for loops that write without waiting in between.
    pub fn cut_off_due(&self) -> Option<CutOff> {
        if self.shared.drain.is_due(self.drain_turn) {
            Some(CutOff::Drain)
        } else if self.expires_at.is_some_and(|at| Instant::now() >= at) {
            Some(CutOff::TokenExpired)
        } else {
            None
        }
    }

    /// Completes at the stream's next cut-off: the drain, or the token's expiry. It
    /// borrows nothing of the session, so it can be polled beside its writes.
    pub fn next_cut_off(&self) -> impl Future<Output = CutOff> + Send + 'a {
        next_cut_off(&self.shared.drain, self.drain_turn, self.expires_at)
    }

    /// Completes at this stream's moment of the drain (see [`crate::drain`]), for selects
    /// that poll it beside the session's own futures.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'a {
        self.shared.drain.due(self.drain_turn)
    }

    /// Completes once the client is gone.
    pub fn closed(&mut self) -> impl Future<Output = ()> + Send + '_ {
        let (watch, client) = (&mut self.closed, &mut self.client);
        std::future::poll_fn(move |cx| watch.poll(cx, |cx| client.poll_closed(cx)))
    }

    /// Ends the stream for `cut`: the `shutdown_event` first, when the client is between
    /// events.
    pub async fn cut_off(&mut self, cut: CutOff) -> End {
        let shared = self.shared;
        if let Some(event) = shared.block.shutdown_event.as_deref() {
            if !self.mid_event {
                // Boxed, as the head is: rare, and inline it would enlarge every task.
                let _ = Box::pin(self.send_own(event.as_bytes())).await;
            }
        }
        End::CutOff(cut)
    }

    /// A reconnection was made (the stream's upstream replaced).
    pub fn count_reconnect(&mut self) {
        RouteStats::add(&self.route.stats.reconnects, 1);
        self.reconnects += 1;
    }

    /// A warning about this stream, for the host's log.
    pub fn warn(&self, what: impl Display) {
        self.log().warn(&self.line(what));
    }

    fn log(&self) -> &'a abi::Logger {
        &self.shared.logger
    }

    fn line(&self, what: impl Display) -> String {
        format!("[PLUGIN: {PLUGIN_NAME}] {}: {what}", self.label)
    }

    /// Ends the stream: counts `end`'s drop, closes the client (or resets it, when it
    /// stopped taking its stream) and writes the access-log line of an event stream.
    pub async fn end(mut self, end: End) {
        if let Some(reason) = end.drop_reason() {
            self.route.stats.dropped(reason);
        }
        let log = self.shared.logger;
        if end.resets() {
            self.client.abort();
        } else {
            let _ = self.client.shutdown().await;
        }
        if matches!(self.answered, Answered::EventStream | Answered::Passthrough) {
            let lasted = self.started.elapsed();
            self.route.stats.duration.record(lasted);
            let first_event = match self.first_event_us {
                0 => "none".to_owned(),
                us => format!("{:.3}s", us as f64 / 1e6),
            };
            log.info(&format!(
                "[PLUGIN: {PLUGIN_NAME}] {} 200 stream ended ({end}) after {:.3}s: {} events, {} bytes, {} reconnects, first event {first_event}",
                self.label,
                lasted.as_secs_f64(),
                self.events,
                self.bytes,
                self.reconnects,
            ));
        }
    }
}

/// Completes at the next cut-off: the stream's moment of the `drain`, or `expires_at`.
async fn next_cut_off(drain: &Drain, turn: Turn, expires_at: Option<Instant>) -> CutOff {
    let expiry = async {
        match expires_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = drain.due(turn) => CutOff::Drain,
        () = expiry => CutOff::TokenExpired,
    }
}

#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;
