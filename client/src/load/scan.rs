//! Reading a benchmark stream off the wire: a stamped-event scanner (chunked bodies are
//! decoded by the `chunked` crate before it).
//!
//! The load tool must not be the bottleneck at millions of events per second, so it does
//! not build `sse::Event`s: it looks only at `id:` and stamped `data:` lines, and it takes
//! the receive time once per read, since everything in one read arrived together.

use sse::stamp::{parse_stamp, STAMP_PREFIX};

/// What one stamped event told the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    pub id: Option<u64>,
    pub stamp_ns: u64,
}

/// Finds `id:` and stamped `data:` lines in a stream of payload bytes.
#[derive(Debug, Default)]
pub struct EventScanner {
    lines: sse::Lines,
    id: Option<u64>,
}

impl EventScanner {
    /// Calls `on_event` for each stamped data line completed by `bytes`.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Stamped)) {
        // Taken out for the call so the line callback may borrow the scanner.
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(bytes, |line| self.line(line, &mut on_event));
        self.lines = lines;
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(Stamped)) {
        if let Some(id) = line.strip_prefix(b"id: ") {
            self.id = std::str::from_utf8(id)
                .ok()
                .and_then(|id| id.trim().parse().ok());
        } else if line.starts_with(STAMP_PREFIX) {
            if let Some(stamp_ns) = parse_stamp(line) {
                on_event(Stamped {
                    id: self.id.take(),
                    stamp_ns,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped_events(count: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for id in 1..=count {
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

    #[test]
    fn scans_events_through_chunking_at_every_split() {
        let payload = stamped_events(5);
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
            let expected: Vec<Stamped> = (1..=5)
                .map(|id| Stamped {
                    id: Some(id),
                    stamp_ns: 1000 + id,
                })
                .collect();
            assert_eq!(seen, expected, "split at {split}");
        }
    }
}
