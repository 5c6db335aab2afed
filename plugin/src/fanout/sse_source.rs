//! A hub's upstream SSE stream: opened with the first client, resumed with `Last-Event-ID`
//! whenever it ends, breaks or goes idle, for as long as the hub has clients.
//!
//! Each complete event is copied once into a `Bytes` and published; the upstream's own
//! comments are not (the hub sends its own keepalives). The request carries no client's
//! headers: the stream is shared, so no one client's credentials may shape it.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use sse::{Piece, Scanner};
use tokio::io::AsyncReadExt;
use wire::framing::Framing;

use super::hub::{Hub, Status};
use crate::relay::backoff;
use crate::stats::RouteStats;
use crate::upstream::{self, within, Request, Upstream};
use crate::{Shared, PLUGIN_NAME};

pub async fn run(hub: Arc<Hub>, shared: Arc<Shared>, route_index: usize) {
    let route = &shared.routes[route_index];
    let mut failed_in_a_row = 0;
    let mut retry_ms = None;
    let log = |message: String| {
        shared.logger.warn(&format!(
            "[PLUGIN: {PLUGIN_NAME}] fan-out {}: {message}",
            hub.key
        ))
    };
    loop {
        let request = Request {
            label: format!("fan-out {}", hub.key),
            target: hub.key.clone(),
            headers: b"Accept: text/event-stream\r\n".to_vec(),
            last_event_id: Some(hub.lock().position.clone()),
            sticky_key: None,
            extra_head: Vec::new(),
        };
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
                failed_in_a_row = 0;
                let position = hub.lock().position.clone();
                let mut reader = EventReader::new(&hub, &position);
                let ended = tokio::select! {
                    ended = reader.read(upstream, route.config.upstream_idle_timeout) => ended,
                    () = hub.stop.cancelled() => return,
                };
                retry_ms = reader.scanner.retry_ms().or(retry_ms);
                if let Err(why) = ended {
                    log(why);
                }
            }
            Ok(upstream) => {
                log(format!("answered {}", upstream.status));
                hub.set_status(Status::Down);
            }
            Err(unavailable) => {
                log(unavailable.reason);
                hub.set_status(Status::Down);
            }
        }
        let delay = backoff(&route.config, retry_ms, failed_in_a_row);
        failed_in_a_row += 1;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = hub.stop.cancelled() => return,
        }
        RouteStats::add(&route.stats.reconnects, 1);
    }
}

/// Cuts an upstream body into whole events and publishes them.
struct EventReader<'a> {
    hub: &'a Hub,
    scanner: Scanner,
    /// The bytes of the event being read.
    event: Vec<u8>,
}

impl<'a> EventReader<'a> {
    fn new(hub: &'a Hub, position: &str) -> Self {
        Self {
            hub,
            scanner: Scanner::resuming(position),
            event: Vec::new(),
        }
    }

    /// Reads until the body ends (`Ok`) or breaks or goes idle (`Err`, saying how).
    async fn read(
        &mut self,
        mut upstream: Upstream,
        idle: Option<std::time::Duration>,
    ) -> Result<(), String> {
        let mut ranges = Vec::new();
        let (mut buf, first) = upstream.first.take().expect("a fresh upstream");
        let mut filled = first;
        loop {
            ranges.clear();
            let whole =
                upstream::payload(&mut upstream.body, &buf[..], filled.clone(), &mut ranges)
                    .map_err(|e| e.to_string())?;
            for range in &ranges {
                self.scan(&buf[range.clone()]);
            }
            if whole {
                return Ok(());
            }
            let n = within(idle, upstream.stream.read(&mut buf[..]))
                .await
                .map_err(|_| "no bytes for upstream_idle_timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return match upstream.body {
                    Framing::UntilClose => Ok(()),
                    _ => Err("closed in the middle of the body".into()),
                };
            }
            filled = 0..n;
        }
    }

    fn scan(&mut self, chunk: &[u8]) {
        let mut from = 0;
        let (hub, event) = (self.hub, &mut self.event);
        self.scanner.feed(chunk, |piece| match piece {
            Piece::EventEnd { end, last_event_id } => {
                event.extend_from_slice(&chunk[from..end]);
                from = end;
                // Blank lines alone dispatch nothing in a browser: not worth a publish.
                if event.iter().any(|&b| b != b'\n' && b != b'\r') {
                    hub.publish(last_event_id, None, Bytes::copy_from_slice(event));
                }
                event.clear();
            }
            Piece::Comment { end } => {
                from = end;
                event.clear();
            }
            _ => {}
        });
        self.event.extend_from_slice(&chunk[from..]);
    }
}
