//! The last events of one fan-out source, kept for replay and read by every client.
//!
//! Each event is stored once, as the serialized bytes every client is sent (`Bytes`: a
//! client's batch takes reference counts, not copies). Events are numbered in publishing
//! order; a client's place in the stream is the number of the next event it needs, so the
//! ring is at once the replay buffer and every client's queue: a client that falls behind
//! costs nothing until its place leaves the ring.
//!
//! The ring is bounded twice: by a count of events (`replay`) and by the bytes they hold
//! (`replay_bytes`), so a source of large events (up to `max_event_bytes` each) cannot make
//! one hub hold `replay` times that. The newest event is always kept, whatever its size:
//! it is the one every client is about to be sent.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// One published event.
pub struct Entry {
    /// Its `id` (the stream's last event ID after it), which a client resumes from.
    pub id: Box<str>,
    /// The Kafka message key, for routes that filter on it.
    pub key: Option<Bytes>,
    pub bytes: Bytes,
    at: Instant,
}

impl Entry {
    /// What it holds, as counted against `replay_bytes`.
    fn size(&self) -> usize {
        self.id.len() + self.key.as_ref().map_or(0, Bytes::len) + self.bytes.len()
    }
}

/// Where a resuming client's `Last-Event-ID` puts it.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// Just past the event with that id.
    At(u64),
    /// The ring no longer (or never) held it: from the oldest event kept.
    NotHeld(u64),
}

pub struct Ring {
    entries: VecDeque<Entry>,
    /// The number of `entries[0]`.
    first: u64,
    capacity: usize,
    /// The most the entries may hold together (`replay_bytes`), and what they hold.
    max_bytes: usize,
    held: usize,
    max_age: Option<Duration>,
}

impl Ring {
    pub fn new(capacity: usize, max_bytes: usize, max_age: Option<Duration>) -> Self {
        Self {
            entries: VecDeque::new(),
            first: 0,
            capacity,
            max_bytes,
            held: 0,
            max_age,
        }
    }

    /// The number the next published event gets.
    pub fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// The oldest number still held.
    pub fn start(&mut self) -> u64 {
        self.expire();
        self.first
    }

    pub fn push(&mut self, id: Box<str>, key: Option<Bytes>, bytes: Bytes) {
        let entry = Entry {
            id,
            key,
            bytes,
            at: Instant::now(),
        };
        self.held += entry.size();
        self.entries.push_back(entry);
        while self.entries.len() > self.capacity
            || (self.held > self.max_bytes && self.entries.len() > 1)
        {
            self.drop_oldest();
        }
        self.expire();
    }

    fn drop_oldest(&mut self) {
        if let Some(oldest) = self.entries.pop_front() {
            self.held -= oldest.size();
            self.first += 1;
        }
    }

    fn expire(&mut self) {
        let Some(max_age) = self.max_age else { return };
        let now = Instant::now();
        while self
            .entries
            .front()
            .is_some_and(|e| now.duration_since(e.at) > max_age)
        {
            self.drop_oldest();
        }
    }

    /// Where a client that last saw `id` goes on. The newest match wins: it is the only
    /// one a client can have seen last when an origin repeats an id.
    pub fn resume(&mut self, id: &str) -> Resume {
        let start = self.start();
        match self.entries.iter().rposition(|e| &*e.id == id) {
            Some(i) => Resume::At(start + i as u64 + 1),
            None => Resume::NotHeld(start),
        }
    }

    /// The events from number `from` on (at most `max`), or `None` if `from` has left the
    /// ring.
    pub fn read(&mut self, from: u64, max: usize) -> Option<impl Iterator<Item = &Entry>> {
        let start = self.start();
        if from < start {
            return None;
        }
        let skip = (from - start) as usize;
        Some(self.entries.iter().skip(skip).take(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(ids: &[&str], capacity: usize) -> Ring {
        let mut ring = Ring::new(capacity, usize::MAX, None);
        for id in ids {
            ring.push((*id).into(), None, Bytes::from(format!("id: {id}\n\n")));
        }
        ring
    }

    fn ids(ring: &mut Ring, from: u64) -> Vec<String> {
        ring.read(from, usize::MAX)
            .unwrap()
            .map(|e| e.id.to_string())
            .collect()
    }

    #[test]
    fn resumes_just_past_the_last_seen_event() {
        let mut ring = ring_of(&["1", "2", "3", "4"], 10);
        let Resume::At(next) = ring.resume("2") else {
            panic!("2 is held")
        };
        assert_eq!(ids(&mut ring, next), ["3", "4"]);
        assert_eq!(ring.resume("4"), Resume::At(4));
        assert_eq!(ids(&mut ring, 4), Vec::<String>::new());
    }

    #[test]
    fn an_evicted_id_resumes_from_the_oldest_held() {
        let mut ring = ring_of(&["1", "2", "3", "4", "5"], 3);
        assert_eq!(ring.start(), 2);
        assert_eq!(ring.resume("1"), Resume::NotHeld(2));
        assert_eq!(ids(&mut ring, 2), ["3", "4", "5"]);
        assert!(ring.read(1, 10).is_none(), "number 1 left the ring");
    }

    #[test]
    fn a_repeated_id_resumes_after_its_newest_copy() {
        let mut ring = ring_of(&["a", "b", "a", "c"], 10);
        assert_eq!(ring.resume("a"), Resume::At(3));
    }

    /// 64 KiB events under the default count would be 62.5 MiB in one hub: the byte bound
    /// evicts the oldest first, and the newest is kept even when it alone is over.
    #[test]
    fn the_ring_holds_at_most_replay_bytes_and_always_the_newest_event() {
        const EVENT: usize = 64 * 1024;
        let max_bytes = crate::config::DEFAULT_REPLAY_BYTES;
        let mut ring = Ring::new(crate::config::DEFAULT_REPLAY, max_bytes, None);
        for i in 0..1000 {
            ring.push(i.to_string().into(), None, Bytes::from(vec![b'x'; EVENT]));
            assert!(ring.held <= max_bytes, "{} at {i}", ring.held);
        }
        let held = ring.end() - ring.start();
        assert_eq!(
            held as usize,
            max_bytes / (EVENT + 3),
            "whole events, the newest"
        );
        assert_eq!(
            ring.read(999, 1).unwrap().next().unwrap().id.as_ref(),
            "999"
        );
        assert_eq!(ring.resume("0"), Resume::NotHeld(ring.start()));

        let mut small = Ring::new(10, 100, None);
        small.push("big".into(), None, Bytes::from(vec![b'x'; 1000]));
        assert_eq!(ids(&mut small, 0), ["big"], "the newest, however large");
        small.push("next".into(), None, Bytes::from_static(b"id: next\n\n"));
        assert_eq!(ids(&mut small, 1), ["next"]);
        assert_eq!(small.held, 4 + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn old_events_expire() {
        let mut ring = Ring::new(10, usize::MAX, Some(Duration::from_secs(5)));
        ring.push("1".into(), None, Bytes::new());
        tokio::time::advance(Duration::from_secs(3)).await;
        ring.push("2".into(), None, Bytes::new());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(ring.start(), 1, "event 1 is six seconds old");
        assert_eq!(ring.resume("1"), Resume::NotHeld(1));
        assert_eq!(ids(&mut ring, 1), ["2"]);
    }
}
