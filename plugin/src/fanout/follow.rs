//! One fan-out client following its hub's ring.
//!
//! The client's place is a number in the ring. Each time it wakes it takes, under the
//! hub's lock, reference counts of up to [`IOV_BATCH`] events from its place on (those
//! that pass its key filter), and writes them in one `writev` after the lock is released.
//! It is dropped when it owes more than `client_queue` live events, or its place has left
//! the ring: the others, and the source, never wait for it. A drain or the expiry of the
//! client's token ends it between two batches, that is between events.

use std::pin::pin;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::hub::{Hub, Signal, Status};
use crate::pump::{client_gone, next_cut_off, write_parts, ClientStream, IOV_BATCH, KEEPALIVE};
use crate::relay::{cut_off, drop_slow_client};
use crate::stats::{Drop, RouteStats};
use crate::upstream::within;
use crate::{RouteState, Shared};

pub struct Follow<'a> {
    pub hub: &'a Hub,
    /// Only events with this Kafka message key.
    pub key: Option<&'a [u8]>,
    pub route: &'a RouteState,
    pub shared: &'a Shared,
}

impl Follow<'_> {
    /// Follows the ring from number `cursor` (after writing `note`) until the client
    /// leaves or is dropped, the source ends, the gateway drains or the client's token
    /// expires. Says why it ended.
    pub async fn run(
        &self,
        client: &mut TcpStream,
        stream: &mut ClientStream,
        mut signal: watch::Receiver<Signal>,
        mut cursor: u64,
        note: Option<String>,
    ) -> &'static str {
        if let Some(note) = note {
            if stream
                .write_own(client, self.route, note.as_bytes())
                .await
                .is_err()
            {
                return "the client left";
            }
        }
        // Live events are those published after the client joined; the replay it asked
        // for does not count against its queue.
        let joined = self.hub.lock().ring.end();
        let mut keepalives = signal.borrow().keepalives;
        let mut batch: Vec<Bytes> = Vec::new();
        // Whether the last pass wrote: only then is a backlog the client's doing.
        let mut wrote = false;
        let (mut reader, mut writer) = client.split();
        let mut next_cut = pin!(next_cut_off(&self.shared.shutdown, stream.expires_at));
        loop {
            let seen = *signal.borrow_and_update();
            if let Some(cut) = stream.cut_off_due(&self.shared.shutdown) {
                return cut_off(&mut writer, stream, self.shared, self.route, cut).await;
            }
            let more = match self.take(&mut cursor, joined, wrote, &mut batch) {
                Ok(more) => more,
                Err(why) => {
                    drop_slow_client(writer.as_ref(), self.route, Drop::ClientLagged);
                    return why;
                }
            };
            wrote = !batch.is_empty();
            if wrote {
                let bytes: usize = batch.iter().map(Bytes::len).sum();
                let written = {
                    let mut write = pin!(within(
                        self.route.config.client_write_timeout,
                        write_parts(&mut writer, &batch, |b| &b[..]),
                    ));
                    // While the client is not taking this batch, the source goes on: past
                    // `client_queue` more, the client is dropped rather than waited for.
                    loop {
                        tokio::select! {
                            biased;
                            written = &mut write => break Some(written),
                            _ = signal.changed() => {
                                if self.backlog(cursor, joined) > self.client_queue() {
                                    break None;
                                }
                            }
                        }
                    }
                };
                let events = batch.len() as u64;
                batch.clear();
                match written {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(_))) => return "the client left",
                    Some(Err(_)) => {
                        drop_slow_client(writer.as_ref(), self.route, Drop::ClientStalled);
                        return "the client stalled";
                    }
                    None => {
                        drop_slow_client(writer.as_ref(), self.route, Drop::ClientLagged);
                        return "the client fell more than client_queue events behind";
                    }
                }
                RouteStats::add(&self.route.stats.events, events);
                RouteStats::add(&self.route.stats.bytes, bytes as u64);
                stream.events += events;
                stream.bytes += bytes as u64;
            }
            if more {
                continue;
            }
            if seen.status == Status::Ended {
                return "the source ended";
            }
            if seen.keepalives != keepalives {
                keepalives = seen.keepalives;
                if stream
                    .write_own(&mut writer, self.route, KEEPALIVE)
                    .await
                    .is_err()
                {
                    return "the client left";
                }
            }
            tokio::select! {
                biased;
                cut = &mut next_cut => {
                    return cut_off(&mut writer, stream, self.shared, self.route, cut).await;
                }
                changed = signal.changed() => if changed.is_err() {
                    return "the source ended";
                },
                () = client_gone(&mut reader) => return "the client left",
            }
        }
    }

    /// Takes the events from `cursor` on into `batch`; `true` if more are waiting.
    /// `after_write`: the client has just taken a write, so a backlog over `client_queue`
    /// built up while it was slow to take it (a burst that arrives while the client waits
    /// is not held against it).
    fn take(
        &self,
        cursor: &mut u64,
        joined: u64,
        after_write: bool,
        batch: &mut Vec<Bytes>,
    ) -> Result<bool, &'static str> {
        if after_write && self.backlog(*cursor, joined) > self.client_queue() {
            return Err("the client fell more than client_queue events behind");
        }
        let mut state = self.hub.lock();
        let end = state.ring.end();
        let Some(entries) = state.ring.read(*cursor, IOV_BATCH) else {
            return Err("the client fell behind the replay buffer");
        };
        let mut taken = 0;
        for entry in entries {
            taken += 1;
            if self.key.is_none_or(|key| entry.key.as_deref() == Some(key)) {
                batch.push(entry.bytes.clone());
            }
        }
        *cursor += taken;
        Ok(*cursor < end)
    }

    /// Live events published and not yet taken by a client at `cursor`.
    fn backlog(&self, cursor: u64, joined: u64) -> u64 {
        self.hub
            .lock()
            .ring
            .end()
            .saturating_sub(cursor.max(joined))
    }

    fn client_queue(&self) -> u64 {
        let fanout = self.route.config.fanout.as_ref();
        fanout.map_or(u64::MAX, |f| f.client_queue as u64)
    }
}
