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
