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
use tokio::sync::watch;

use super::hub::{Hub, Signal, Status};
use crate::session::{ClientTransport, End, Session, IOV_BATCH};

pub struct Follow<'a> {
    pub hub: &'a Hub,
    /// Only events with this Kafka message key.
    pub key: Option<&'a [u8]>,
}

impl Follow<'_> {
    /// Follows the ring from number `cursor` (after writing `note`) until the client
    /// leaves or is dropped, the source ends, the gateway drains or the client's token
    /// expires. Says why it ended.
    pub async fn run<C: ClientTransport>(
        &self,
        session: &mut Session<'_, C>,
        mut signal: watch::Receiver<Signal>,
        mut cursor: u64,
        note: Option<String>,
    ) -> End {
        if let Some(note) = note {
            if let Err(end) = session.send_own(note.as_bytes()).await {
                return end;
            }
        }
        let client_queue = session
            .route()
            .config
            .fanout
            .as_ref()
            .map_or(u64::MAX, |f| f.client_queue as u64);
        // Live events are those published after the client joined; the replay it asked
        // for does not count against its queue.
        let joined = self.hub.lock().ring.end();
        let mut keepalives = signal.borrow().keepalives;
        let mut batch: Vec<Bytes> = Vec::new();
        // Whether the last pass wrote: only then is a backlog the client's doing.
        let mut wrote = false;
        let mut next_cut = pin!(session.next_cut_off());
        loop {
            let seen = *signal.borrow_and_update();
            if let Some(cut) = session.cut_off_due() {
                return session.cut_off(cut).await;
            }
            let more = match self.take(&mut cursor, joined, client_queue, wrote, &mut batch) {
                Ok(more) => more,
                Err(end) => return end,
            };
            wrote = !batch.is_empty();
            if wrote {
                let events = batch.len() as u64;
                let written = {
                    let mut write = pin!(session.send(&batch, |b| &b[..], events));
                    // While the client is not taking this batch, the source goes on: past
                    // `client_queue` more, the client is dropped rather than waited for.
                    loop {
                        tokio::select! {
                            biased;
                            written = &mut write => break written,
                            _ = signal.changed() => {
                                if self.backlog(cursor, joined) > client_queue {
                                    break Err(End::ClientLagged);
                                }
                            }
                        }
                    }
                };
                batch.clear();
                if let Err(end) = written {
                    return end;
                }
            }
            if more {
                continue;
            }
            if seen.status == Status::Ended {
                return End::SourceEnded;
            }
            if seen.keepalives != keepalives {
                keepalives = seen.keepalives;
                if let Err(end) = session.send_keepalive().await {
                    return end;
                }
            }
            tokio::select! {
                biased;
                cut = &mut next_cut => return session.cut_off(cut).await,
                changed = signal.changed() => if changed.is_err() {
                    return End::SourceEnded;
                },
                () = session.closed() => return End::ClientLeft,
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
        client_queue: u64,
        after_write: bool,
        batch: &mut Vec<Bytes>,
    ) -> Result<bool, End> {
        if after_write && self.backlog(*cursor, joined) > client_queue {
            return Err(End::ClientLagged);
        }
        let mut state = self.hub.lock();
        let end = state.ring.end();
        let Some(entries) = state.ring.read(*cursor, IOV_BATCH) else {
            return Err(End::FellOffTheRing);
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::fanout::Hubs;
    use crate::session::testing::{connected, new_session, paused, plugin, stats, Peer};
    use crate::session::KEEPALIVE;

    fn event(id: u64, size: usize) -> Bytes {
        Bytes::from(format!("id: {id}\ndata: {}\n\n", "x".repeat(size)))
    }

    /// A fan-out route's plugin with `extra` keys, a hub of it, and a session's client.
    fn fan_out(extra: serde_json::Value) -> (crate::StreamingPlugin, Arc<Hubs>) {
        let mut block = json!({"fanout": true, "keepalive": "0"});
        for (key, value) in extra.as_object().unwrap() {
            block[key] = value.clone();
        }
        (plugin(block), Arc::new(Hubs::default()))
    }

    #[test]
    fn a_client_gets_the_ring_and_the_hub_s_keepalives_and_its_events_are_counted() {
        paused(|| async {
            let (plugin, hubs) = fan_out(json!({}));
            let config = plugin.shared.routes[0].config.fanout.clone().unwrap();
            let membership = hubs.join("/e", &config, String::new, |_| {});
            let hub = &membership.hub;
            hub.set_status(Status::Up);
            let (client, mut peer) = connected(4096);
            let mut session = new_session(&plugin, "/s/follows", client, None);
            session.start_event_stream().await.unwrap();
            let follow = Follow { hub, key: None };
            let following = follow.run(&mut session, hub.subscribe(), 0, None);
            let (a, b) = (event(1, 1), event(2, 2));
            let feeding = async {
                hub.publish("1", None, a.clone());
                peer.read_until(b"id: 1", 1).await;
                hub.publish("2", None, b.clone());
                hub.keepalive();
                peer.read_until(KEEPALIVE, 1).await;
                peer.io.shutdown().await.unwrap();
            };
            let (end, ()) = tokio::join!(following, feeding);
            assert_eq!(end, End::ClientLeft);
            session.end(end).await;
            assert_eq!(peer.body(), [&a[..], &b[..], KEEPALIVE].concat());
            let route = stats(&plugin);
            let bytes = (a.len() + b.len()) as u64;
            assert_eq!(
                (route["events"].as_u64(), route["bytes"].as_u64()),
                (Some(2), Some(bytes))
            );
        });
    }

    #[test]
    fn a_client_that_owes_more_than_client_queue_live_events_is_reset_while_the_hub_goes_on() {
        paused(|| async {
            let (plugin, hubs) = fan_out(json!({"client_queue": 2, "replay": 100}));
            let config = plugin.shared.routes[0].config.fanout.clone().unwrap();
            let membership = hubs.join("/e", &config, String::new, |_| {});
            let hub = &membership.hub;
            hub.set_status(Status::Up);
            // Room for the head and a little: the client reads nothing.
            let (client, peer): (_, Peer) = connected(300);
            let mut session = new_session(&plugin, "/s/lags", client, None);
            session.start_event_stream().await.unwrap();
            let follow = Follow { hub, key: None };
            let following = follow.run(&mut session, hub.subscribe(), 0, None);
            // One event a millisecond: the paused clock moves on only once the client's
            // task waits, so each event finds it blocked on its first write.
            let publishing = async {
                for id in 1..=4 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    hub.publish(&id.to_string(), None, event(id, 500));
                }
            };
            let started = tokio::time::Instant::now();
            let (end, ()) = tokio::join!(following, publishing);
            assert_eq!(end, End::ClientLagged);
            let waited = started.elapsed();
            assert_eq!(
                waited,
                std::time::Duration::from_millis(4),
                "at the 4th event"
            );
            session.end(end).await;
            assert!(peer.reset.load(Ordering::Relaxed), "reset, not closed");
            let route = stats(&plugin);
            assert_eq!(route["drops"]["client_lagged"], 1, "{route}");
            assert_eq!(hub.lock().ring.end(), 4, "the hub published every event");
        });
    }
}
