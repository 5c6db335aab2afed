//! A hub's upstream SSE stream: opened with the first client, resumed with `Last-Event-ID`
//! whenever it ends, breaks or goes idle, for as long as the hub has clients.
//!
//! Each complete event is copied once into a `Bytes` and published; the upstream's own
//! comments are not (the hub sends its own keepalives). The request carries no client's
//! headers: the stream is shared, so no one client's credentials may shape it.
//!
//! An event is held until it is complete, up to `max_event_bytes`. One that grows past it
//! is dropped as it arrives (its bytes are scanned, not kept), and when it ends the clients
//! get a comment and its id in its place: memory stays bounded, no client ever gets part
//! of an event, and the stream goes on (resuming the upstream instead would have the
//! origin send the same event again).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use sse::{Piece, Scanner};
use tokio::io::AsyncReadExt;

use super::dropped_event;
use super::hub::{Hub, Status};
use crate::pool::Buffer;
use crate::reconnect::{Reconnect, Waited};
use crate::stats::RouteStats;
use crate::upstream::{self, Broken, Request, Upstream};
use crate::{within, RouteState, Shared, PLUGIN_NAME};

pub async fn run(hub: Arc<Hub>, shared: Arc<Shared>, route_index: usize) {
    let route = &shared.routes[route_index];
    let mut reconnect = Reconnect::unlimited(&route.config);
    let mut retry_ms = None;
    let log = |message: String| {
        shared.logger.warn(&format!(
            "[PLUGIN: {PLUGIN_NAME}] fan-out {}: {message}",
            hub.key
        ))
    };
    loop {
        let request = hub_request(route, &hub.key, hub.lock().position.clone());
        let opened = tokio::select! {
            opened = upstream::open(route, &request, &shared.pool) => opened,
            () = hub.stop.cancelled() => return,
        };
        match opened {
            Ok(upstream) if upstream.status == StatusCode::NO_CONTENT => {
                hub.set_status(Status::Ended);
                return;
            }
            Ok(upstream) if upstream.status.is_success() => {
                hub.set_status(Status::Up);
                reconnect.connected();
                let position = hub.lock().position.clone();
                let max_event_bytes = shared.block.max_event_bytes;
                let oversized = |dropped| {
                    RouteStats::add(&route.stats.oversized_events, 1);
                    if dropped == 1 {
                        log(format!(
                            "dropped an event over max_event_bytes ({max_event_bytes}); \
                             more on this connection are only counted"
                        ));
                    }
                };
                let publish = |id: &str, bytes| hub.publish(id, None, bytes);
                let mut reader = EventReader::new(&publish, &position, max_event_bytes, &oversized);
                let ended = tokio::select! {
                    ended = reader.read(upstream, route.config.upstream_idle_timeout) => ended,
                    () = hub.stop.cancelled() => return,
                };
                retry_ms = reader.scanner.retry_ms().or(retry_ms);
                if let Err(why) = ended {
                    log(why.to_string());
                }
            }
            Ok(upstream) => {
                log(format!("answered {}", upstream.status));
                hub.set_status(Status::Down);
            }
            Err(unavailable) => {
                log(unavailable.to_string());
                hub.set_status(match unavailable.is_local() {
                    true => Status::NoResources,
                    false => Status::Down,
                });
            }
        }
        if let Waited::Stopped(()) = reconnect.wait(retry_ms, hub.stop.cancelled()).await {
            return;
        }
        RouteStats::add(&route.stats.reconnects, 1);
    }
}

/// Cuts an upstream body into whole events and publishes them (the hub's source) or hands
/// them over (a client's catch-up from the origin).
pub struct EventReader<'a> {
    /// Told of each whole event: its id (the stream's last event ID after it), its bytes.
    publish: &'a (dyn Fn(&str, Bytes) + Sync),
    scanner: Scanner,
    event: Pending,
    /// Events dropped for their size on this connection.
    oversized: u64,
    /// Told of each, with the count so far.
    on_oversized: &'a (dyn Fn(u64) + Sync),
}

/// The bytes of the event being read, up to `max` of them.
struct Pending {
    bytes: Vec<u8>,
    max: usize,
    /// The event went past `max`: the rest of it is skipped.
    oversized: bool,
}

impl Pending {
    fn hold(&mut self, part: &[u8]) {
        if self.oversized {
            return;
        }
        let len = self.bytes.len() + part.len();
        if len > self.max {
            self.oversized = true;
            self.bytes = Vec::new();
            return;
        }
        // Grown by doubling, but never past `max`.
        if len > self.bytes.capacity() {
            let capacity = len.next_power_of_two().min(self.max);
            self.bytes.reserve_exact(capacity - self.bytes.len());
        }
        self.bytes.extend_from_slice(part);
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.oversized = false;
    }
}

impl<'a> EventReader<'a> {
    pub fn new(
        publish: &'a (dyn Fn(&str, Bytes) + Sync),
        position: &str,
        max_event_bytes: usize,
        on_oversized: &'a (dyn Fn(u64) + Sync),
    ) -> Self {
        Self {
            publish,
            scanner: Scanner::resuming(position),
            event: Pending {
                bytes: Vec::new(),
                max: max_event_bytes,
                oversized: false,
            },
            oversized: 0,
            on_oversized,
        }
    }

    /// Reads until the body ends (`Ok`) or breaks or goes idle (`Err`, saying how).
    async fn read(
        &mut self,
        upstream: Upstream,
        idle: Option<std::time::Duration>,
    ) -> Result<(), Broken> {
        let mut body = Body::new(upstream);
        while !body.step(self, idle).await? {}
        Ok(())
    }

    fn scan(&mut self, chunk: &[u8]) {
        let mut from = 0;
        let (publish, event, oversized) = (self.publish, &mut self.event, &mut self.oversized);
        let on_oversized = self.on_oversized;
        self.scanner.feed(chunk, |piece| match piece {
            Piece::EventEnd { end, last_event_id } => {
                let last_event_id = last_event_id.as_str();
                event.hold(&chunk[from..end]);
                from = end;
                if event.oversized {
                    *oversized += 1;
                    on_oversized(*oversized);
                    let note = dropped_event(last_event_id, event.max);
                    publish(last_event_id, Bytes::from(note));
                } else if event.bytes.iter().any(|&b| b != b'\n' && b != b'\r') {
                    // Blank lines alone dispatch nothing in a browser: not worth a publish.
                    publish(last_event_id, Bytes::copy_from_slice(&event.bytes));
                }
                event.clear();
            }
            // A comment line, however long, is not an event: nothing stands in for it.
            Piece::Comment { end } => {
                from = end;
                event.clear();
            }
            _ => {}
        });
        self.event.hold(&chunk[from..]);
    }
}

/// An upstream body, read a buffer at a time.
pub struct Body {
    upstream: Upstream,
    buf: Buffer,
    /// The body bytes read with the head, until the first step takes them.
    first: Option<Range<usize>>,
    ranges: Vec<Range<usize>>,
}

impl Body {
    pub fn new(mut upstream: Upstream) -> Self {
        let (buf, first) = upstream.first.take().expect("a fresh upstream");
        Self {
            upstream,
            buf,
            first: Some(first),
            ranges: Vec::new(),
        }
    }

    /// Reads once (the bytes read with the head, the first time) and feeds the payload to
    /// `reader`; says whether the body is whole. Cancel-safe: nothing is read or fed
    /// until the read completes, and nothing is awaited after.
    pub async fn step(
        &mut self,
        reader: &mut EventReader<'_>,
        idle: Option<std::time::Duration>,
    ) -> Result<bool, Broken> {
        let filled = match self.first.take() {
            Some(first) => first,
            None => {
                let n = within(idle, self.upstream.stream.read(&mut self.buf[..]))
                    .await
                    .map_err(|_| Broken::Idle)??;
                if n == 0 {
                    return upstream::closed(&self.upstream.body).map(|()| true);
                }
                0..n
            }
        };
        self.ranges.clear();
        let whole = upstream::payload(
            &mut self.upstream.body,
            &self.buf[..],
            filled,
            &mut self.ranges,
        )?;
        for range in &self.ranges {
            reader.scan(&self.buf[range.clone()]);
        }
        Ok(whole)
    }
}

/// The request of a shared stream from `last_event_id`: the hub's, and a catching-up
/// client's, which must see the same events. No client's headers shape it; the route's
/// `set_headers` do.
pub fn hub_request(route: &RouteState, key: &str, last_event_id: String) -> Request {
    let mut headers = b"Accept: text/event-stream\r\n".to_vec();
    for (name, value) in &route.config.set_headers {
        wire::header_line(&mut headers, name, value);
    }
    Request {
        method: http::Method::GET,
        target: key.to_owned(),
        headers,
        last_event_id: Some(last_event_id),
        sticky_key: None,
        body: Vec::new(),
        resume: true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::Fanout;
    use crate::fanout::Hubs;

    #[test]
    fn an_event_over_max_event_bytes_is_dropped_as_it_arrives_and_noted_in_its_place() {
        const MAX: usize = 24;
        let hubs = Arc::new(Hubs::default());
        let config = Fanout {
            replay: 10,
            replay_bytes: usize::MAX,
            replay_age: None,
            client_queue: 10,
            linger: Duration::ZERO,
        };
        let membership = hubs.join("/events", &config, || "0".into(), |_| {});
        let hub = &membership.hub;
        let told = std::sync::Mutex::new(Vec::new());
        let on_oversized = |n| told.lock().unwrap().push(n);
        let publish = |id: &str, bytes| hub.publish(id, None, bytes);
        let mut reader = EventReader::new(&publish, "0", MAX, &on_oversized);
        let mut stream = b"id: 1\ndata: small\n\nid: 2\ndata: ".to_vec();
        stream.extend([b'x'; 1000]);
        stream.extend(b"\n\nid: 3\ndata: after\n\n: ");
        stream.extend([b'c'; 1000]);
        stream.extend(b"\ndata: no id\n\n");
        for chunk in stream.chunks(7) {
            reader.scan(chunk);
            assert!(reader.event.bytes.capacity() <= MAX, "held more than MAX");
        }
        let mut state = hub.lock();
        let published: Vec<(String, Vec<u8>)> = state
            .ring
            .read(0, 10)
            .unwrap()
            .map(|e| (e.id.to_string(), e.bytes.to_vec()))
            .collect();
        let expected = [
            ("1", b"id: 1\ndata: small\n\n".to_vec()),
            ("2", crate::fanout::dropped_event("2", MAX)),
            ("3", b"id: 3\ndata: after\n\n".to_vec()),
            ("3", b"data: no id\n\n".to_vec()),
        ]
        .map(|(id, bytes)| (id.to_owned(), bytes));
        assert_eq!(published, expected);
        assert_eq!(*told.lock().unwrap(), [1]);
        assert_eq!(
            String::from_utf8(expected[1].1.clone()).unwrap(),
            ": an event larger than max_event_bytes (24) was dropped here\nid: 2\n\n"
        );
    }
}
