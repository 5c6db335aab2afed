//! Reading a benchmark stream off the wire: chunked de-framing and a stamped-event scanner.
//!
//! The load tool must not be the bottleneck at millions of events per second, so it does
//! not build `sse::Event`s: it looks only at `id:` and stamped `data:` lines, and it takes
//! the receive time once per read, since everything in one read arrived together.

use sse::stamp::{parse_stamp, STAMP_PREFIX};

/// Strips `Transfer-Encoding: chunked` framing, passing payload bytes on.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size digits: an extension, then LF.
    SizeLine,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The last chunk was seen; anything more is trailers, ignored.
    Done,
}

impl Dechunker {
    /// Feeds raw bytes; `payload` gets each run of body bytes. Errors on a bad size line.
    pub fn feed(&mut self, mut bytes: &[u8], mut payload: impl FnMut(&[u8])) -> Result<(), String> {
        while !bytes.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match (b as char).to_digit(16) {
                        Some(d) => {
                            self.size =
                                self.size.checked_mul(16).ok_or("chunk size overflow")? + d as u64
                        }
                        None if b == b'\r' || b == b';' => self.state = ChunkState::SizeLine,
                        None if b == b'\n' => self.end_size_line(),
                        None => return Err(format!("bad chunk size byte {b:#x}")),
                    }
                }
                ChunkState::SizeLine => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        self.end_size_line();
                    }
                }
                ChunkState::Data => {
                    let n = (self.size.min(bytes.len() as u64)) as usize;
                    payload(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        self.state = ChunkState::Size;
                    }
                }
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data
        };
    }
}

/// What one stamped event told the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    pub id: Option<u64>,
    pub stamp_ns: u64,
}

/// Finds `id:` and stamped `data:` lines in a stream of payload bytes.
#[derive(Debug, Default)]
pub struct EventScanner {
    partial: Vec<u8>,
    id: Option<u64>,
}

impl EventScanner {
    /// Calls `on_event` for each stamped data line completed by `bytes`.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Stamped)) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&bytes[..end], &mut on_event);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[..end]);
                self.line(&line, &mut on_event);
                line.clear();
                self.partial = line;
            }
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
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

    fn chunked(payload: &[u8], chunk: usize) -> Vec<u8> {
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
        let wire = chunked(&payload, 37);
        for split in 0..wire.len() {
            let (mut dechunker, mut scanner, mut seen) =
                (Dechunker::default(), EventScanner::default(), Vec::new());
            for part in [&wire[..split], &wire[split..]] {
                dechunker
                    .feed(part, |bytes| scanner.feed(bytes, |e| seen.push(e)))
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

    #[test]
    fn refuses_a_bad_chunk_size() {
        assert!(Dechunker::default().feed(b"zz\r\n", |_| {}).is_err());
    }
}
