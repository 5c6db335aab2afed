//! The last events of one fan-out source, kept for replay and read by every client.
//!
//! Each event is stored once, as the serialized bytes every client is sent (`Bytes`: a
//! client's batch takes reference counts, not copies). Events are numbered in publishing
//! order; a client's place in the stream is the number of the next event it needs, so the
//! ring is at once the replay buffer and every client's queue: a client that falls behind
//! costs nothing until its place leaves the ring.

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
    max_age: Option<Duration>,
}

impl Ring {
    pub fn new(capacity: usize, max_age: Option<Duration>) -> Self {
        Self {
            entries: VecDeque::new(),
            first: 0,
            capacity,
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
        self.entries.push_back(Entry {
            id,
            key,
            bytes,
            at: Instant::now(),
        });
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
            self.first += 1;
        }
        self.expire();
    }

    fn expire(&mut self) {
        let Some(max_age) = self.max_age else { return };
        let now = Instant::now();
        while self
            .entries
            .front()
            .is_some_and(|e| now.duration_since(e.at) > max_age)
        {
            self.entries.pop_front();
            self.first += 1;
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
        let mut ring = Ring::new(capacity, None);
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

    #[tokio::test(start_paused = true)]
    async fn old_events_expire() {
        let mut ring = Ring::new(10, Some(Duration::from_secs(5)));
        ring.push("1".into(), None, Bytes::new());
        tokio::time::advance(Duration::from_secs(3)).await;
        ring.push("2".into(), None, Bytes::new());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(ring.start(), 1, "event 1 is six seconds old");
        assert_eq!(ring.resume("1"), Resume::NotHeld(1));
        assert_eq!(ids(&mut ring, 1), ["2"]);
    }
}
