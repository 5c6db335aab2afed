//! Reading a load stream off the wire: the events an `EventSource` would dispatch (chunked
//! bodies are decoded by the `chunked` crate before), and the check of each stream's ids.
//!
//! The load tool must not be the bottleneck at millions of events per second, so it does
//! not build `sse::Event`s: per line it looks only at the field name, the `id` and `retry`
//! values and a benchmark stamp at the start of the data (the receive time is taken once
//! per read, since everything in one read arrived together). An event counts when its
//! blank line arrives, as in `EventSource`: a cut-off event is not one.

use sse::stamp::{parse_stamp, STAMP_PREFIX};

/// What one dispatched event told the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The event's own `id:` line as a number (`None` without one, or another kind of id).
    pub id: Option<u64>,
    /// The benchmark stamp of its first data line, if it has one.
    pub stamp_ns: Option<u64>,
}

/// Finds the events in a stream of payload bytes.
#[derive(Debug, Default)]
pub struct EventScanner {
    lines: sse::Lines,
    /// Past the stream's first line (where a BOM may stand).
    started: bool,
    /// The event being read: its id line, whether it has data, its stamp.
    id: Option<u64>,
    has_data: bool,
    stamp_ns: Option<u64>,
    /// The spec's last event ID buffer, and the last event ID committed at a blank line.
    id_buffer: String,
    last_event_id: String,
    retry_ms: Option<u64>,
}

impl EventScanner {
    /// Calls `on_event` for each event completed by `bytes`.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Received)) {
        // Taken out for the call so the line callback may borrow the scanner.
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(bytes, |line| self.line(line, &mut on_event));
        self.lines = lines;
    }

    /// What a reconnection sends as `Last-Event-ID` ("" for nothing).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the stream asked for with `retry:`, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Readies the scanner for a new connection's stream, as `EventSource` does: a partial
    /// event is forgotten; the last event ID and `retry` are kept.
    pub fn restart(&mut self) {
        *self = Self {
            id_buffer: self.last_event_id.clone(),
            last_event_id: std::mem::take(&mut self.last_event_id),
            retry_ms: self.retry_ms,
            ..Self::default()
        };
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(Received)) {
        let line = match std::mem::replace(&mut self.started, true) {
            false => line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line),
            true => line,
        };
        if line.is_empty() {
            self.last_event_id.clone_from(&self.id_buffer);
            if std::mem::take(&mut self.has_data) {
                on_event(Received {
                    id: self.id,
                    stamp_ns: self.stamp_ns,
                });
            }
            (self.id, self.stamp_ns) = (None, None);
            return;
        }
        let Some((field, value)) = sse::field(line) else {
            return;
        };
        match field {
            b"data" if !self.has_data => {
                self.has_data = true;
                if line.starts_with(STAMP_PREFIX) {
                    self.stamp_ns = parse_stamp(line);
                }
            }
            b"data" => {}
            // As `sse::Scanner` reads them: an id with a NUL or over its bound (raw or
            // decoded) is ignored.
            b"id" if !value.contains(&0) && value.len() <= sse::MAX_ID_BYTES => {
                let id = String::from_utf8_lossy(value);
                if id.len() <= sse::MAX_ID_BYTES {
                    self.id_buffer = id.into_owned();
                    self.id = self.id_buffer.parse().ok();
                }
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry_ms = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .or(self.retry_ms);
            }
            _ => {}
        }
    }
}

/// Where an event's id stands among the ids a stream delivered before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The stream's first id, or the one after the highest so far.
    InOrder,
    /// Ids between the highest so far and this one never came (yet): this many.
    Gap(u64),
    /// The highest id so far again: an event delivered twice.
    Duplicate,
    /// Below the highest so far: delivered again, or out of order.
    Backwards,
}

/// The ids of one stream, across its reconnections: every id should be the highest so far
/// plus one.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdCheck {
    highest: Option<u64>,
}

impl IdCheck {
    pub fn see(&mut self, id: u64) -> Order {
        let order = match self.highest {
            None => Order::InOrder,
            Some(highest) if id == highest => Order::Duplicate,
            Some(highest) if id < highest => Order::Backwards,
            Some(highest) if id == highest + 1 => Order::InOrder,
            Some(highest) => Order::Gap(id - highest - 1),
        };
        self.highest = self.highest.max(Some(id));
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped_events(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for id in ids {
            sse::stamp::write_stamped_event(&mut out, id, 1000 + id, 100);
        }
        out
    }

    fn chunk_encode(payload: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in payload.chunks(chunk) {
            out.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn scanned(input: &[u8]) -> (Vec<Received>, EventScanner) {
        let mut scanner = EventScanner::default();
        let mut seen = Vec::new();
        scanner.feed(input, |e| seen.push(e));
        (seen, scanner)
    }

    #[test]
    fn scans_events_through_chunking_at_every_split() {
        let payload = stamped_events(1..=5);
        let wire = chunk_encode(&payload, 37);
        for split in 0..wire.len() {
            let (mut decoder, mut scanner, mut seen) = (
                chunked::Decoder::default(),
                EventScanner::default(),
                Vec::new(),
            );
            for part in [&wire[..split], &wire[split..]] {
                decoder
                    .decode(part, |r| scanner.feed(&part[r], |e| seen.push(e)))
                    .unwrap();
            }
            let expected: Vec<Received> = (1..=5)
                .map(|id| Received {
                    id: Some(id),
                    stamp_ns: Some(1000 + id),
                })
                .collect();
            assert_eq!(seen, expected, "split at {split}");
        }
    }

    #[test]
    fn an_event_is_what_eventsource_would_dispatch() {
        let input =
            "\u{feff}retry: 250\nid:7\ndata\n\n: comment\nid: 8\n\ndata: t=5 x\ndata: more\n\n\
                     event: tick\ndata: {}\nid: x\n\nid: 9\ndata: cut off";
        let (seen, scanner) = scanned(input.as_bytes());
        let event = |id, stamp_ns| Received { id, stamp_ns };
        // `id: 8` without data dispatches nothing; the stamped event has no id line of
        // its own; an id that is not a number is none for the check.
        assert_eq!(
            seen,
            [
                event(Some(7), None),
                event(None, Some(5)),
                event(None, None)
            ]
        );
        assert_eq!(scanner.last_event_id(), "x");
        assert_eq!(scanner.retry_ms(), Some(250));
    }

    #[test]
    fn a_restart_forgets_the_partial_event_and_keeps_the_id() {
        let (_, mut scanner) = scanned(b"id: 3\ndata: a\n\nid: 4\ndata: cut");
        scanner.restart();
        let mut seen = Vec::new();
        scanner.feed(b"\ndata: b\n\n", |e| seen.push(e));
        // The first line of the new stream is blank: nothing of the old event survives.
        assert_eq!(
            seen,
            [Received {
                id: None,
                stamp_ns: None
            }]
        );
        assert_eq!(scanner.last_event_id(), "3");
    }

    #[test]
    fn ids_in_order_with_gaps_duplicates_and_going_back() {
        let mut check = IdCheck::default();
        let orders: Vec<Order> = [5, 6, 6, 9, 7, 10, 3, 11]
            .into_iter()
            .map(|id| check.see(id))
            .collect();
        assert_eq!(
            orders,
            [
                Order::InOrder,
                Order::InOrder,
                Order::Duplicate,
                Order::Gap(2),
                Order::Backwards,
                Order::InOrder,
                Order::Backwards,
                Order::InOrder,
            ]
        );
    }

    #[test]
    fn a_replayed_stream_is_counted_as_doubled() {
        // An origin that restarts at 1 instead of resuming: everything again.
        let payload = stamped_events((1..=4).chain(1..=5));
        let (seen, _) = scanned(&payload);
        let mut check = IdCheck::default();
        let orders: Vec<Order> = seen.iter().map(|e| check.see(e.id.unwrap())).collect();
        let count = |order| orders.iter().filter(|&&o| o == order).count();
        assert_eq!(
            (
                count(Order::InOrder),
                count(Order::Backwards),
                count(Order::Duplicate)
            ),
            (5, 3, 1)
        );
    }
}
