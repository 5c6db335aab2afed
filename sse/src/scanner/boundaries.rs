//! Where events end, for a relay that forwards the bytes it scans and needs nothing else
//! from them: [`Scanner::boundaries`].
//!
//! Read line by line, as [`Scanner::feed`] does, a 100-byte event costs some 290
//! instructions: a search for each line's end and the states each line goes through. A
//! relay only needs where events end, how many there are and the last event ID, and most
//! streams' events have one shape: LF line ends, no `retry`, plain ASCII ids. Those are
//! read here from bitmasks of the line ends in 64 bytes at a time, looking only at the
//! first byte of each line (and at the whole of an `id` line). From the start of the
//! first event that is not of that shape (a CR, a `retry` line, an id that needs
//! decoding or is too long), `feed` reads the rest of the chunk, and it reads the start
//! of a stream and a line cut off by the previous chunk: what the two readings report is
//! the same by construction, and a property test holds them to it.

use std::ops::Range;

use super::{is_plain_ascii, Line, Piece, Scanner, MAX_ID_BYTES};

/// What a relay learns from a chunk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Boundaries {
    /// The offset just past the chunk's last event end or comment between events: where
    /// the stream may be cut off. `None` when the chunk holds neither.
    pub last: Option<usize>,
    /// Events the chunk ended (blank lines).
    pub events: u64,
}

impl Boundaries {
    fn record(&mut self, base: usize, piece: Piece<'_>) {
        match piece {
            Piece::EventEnd { end, .. } => {
                self.last = Some(base + end);
                self.events += 1;
            }
            Piece::Comment { end } => self.last = Some(base + end),
            Piece::Value(..) | Piece::LineEnd(_) => {}
        }
    }
}

/// The events read from masks: those in `..len`, with the value of the last `id` line
/// among them (a range of the bytes read).
#[derive(Default)]
struct WholeEvents {
    len: usize,
    events: u64,
    id: Option<Range<usize>>,
}

impl Scanner {
    /// Scans `chunk` as [`Scanner::feed`] does, reporting only where events end.
    pub fn boundaries(&mut self, chunk: &[u8]) -> Boundaries {
        let mut found = Boundaries::default();
        let mut head = 0;
        if !self.at_plain_line_start() {
            // The states of a stream's start, a CR pair or a line cut off are the line
            // reading's: up to the first LF, after which a line starts.
            let Some(lf) = memchr::memchr(b'\n', chunk) else {
                self.feed(chunk, |piece| found.record(0, piece));
                return found;
            };
            head = lf + 1;
            self.feed(&chunk[..head], |piece| found.record(0, piece));
        }
        let whole = whole_events(&chunk[head..]);
        if whole.events > 0 {
            found.events += whole.events;
            found.last = Some(head + whole.len);
            self.in_event = false;
            match whole.id {
                Some(id) => {
                    self.last_event_id.clear();
                    self.last_event_id
                        .extend_from_slice(&chunk[head + id.start..head + id.end]);
                    if let Some(replaced) = self.next_id.take() {
                        self.recycle(replaced);
                    }
                }
                None => {
                    self.commit_next_id();
                }
            }
        }
        let rest = head + whole.len;
        if rest < chunk.len() {
            self.feed(&chunk[rest..], |piece| found.record(rest, piece));
        }
        found
    }

    /// At the start of a line, past the stream's start and any CR whose LF may follow.
    fn at_plain_line_start(&self) -> bool {
        self.bom.is_none() && !self.after_cr && matches!(self.line, Line::Start)
    }
}

/// The whole events at the start of `bytes` (which starts a line) that have the common
/// shape, up to the start of the first that does not.
fn whole_events(bytes: &[u8]) -> WholeEvents {
    // A CR, and everything from the event that holds it on, is the line reading's. In a
    // few blocks CRs are looked for with the LFs; in more, one search for the first costs
    // less than a compare in every block.
    let mut read = if bytes.len() <= CR_SEARCH_FROM {
        lf_events::<true>(bytes)
    } else {
        let end = memchr::memchr(b'\r', bytes).unwrap_or(bytes.len());
        lf_events::<false>(&bytes[..end])
    };
    // The id kept is checked once, not every one read: if it is not plain, the line
    // reading has the whole chunk.
    if let Some(line) = read.id.take() {
        let value = line.start + id_value_start(&bytes[line.clone()])..line.end;
        if value.len() > MAX_ID_BYTES || !is_plain_ascii(&bytes[value.clone()]) {
            return WholeEvents::default();
        }
        read.id = Some(value);
    }
    read
}

/// From how many bytes [`whole_events`] searches for a CR before reading blocks.
const CR_SEARCH_FROM: usize = 512;

/// [`whole_events`] up to its CR (found in each block with `CRS`, else known to be none),
/// keeping the last `id` line (its range, without the LF) rather than its value.
fn lf_events<const CRS: bool>(bytes: &[u8]) -> WholeEvents {
    let mut lines = LfLines {
        read: WholeEvents::default(),
        id_line: None,
        id: None,
    };
    // Whether the previous block's last byte was an LF, so that its next byte starts a line.
    let mut carry = 1;
    let mut blocks = bytes.chunks_exact(64);
    for (block, at) in blocks.by_ref().zip((0..).step_by(64)) {
        let (lf, cr) = masks::<CRS>(block.try_into().expect("64 bytes"));
        if !lines.read_block(bytes, (lf << 1) | carry, cr, at) {
            return lines.read;
        }
        carry = lf >> 63;
    }
    let tail = blocks.remainder().len();
    if tail > 0 {
        let (lf, cr) = match bytes.len().checked_sub(64) {
            // The last 64 bytes, which end with the tail's: no copy.
            Some(from) => {
                let (lf, cr) = masks::<CRS>(bytes[from..].try_into().expect("64 bytes"));
                (lf >> (64 - tail), cr >> (64 - tail))
            }
            None => {
                // Padded with zeros, which are neither LF nor CR.
                let mut padded = [0; 64];
                padded[..tail].copy_from_slice(bytes);
                masks::<CRS>(&padded)
            }
        };
        let starts = ((lf << 1) | carry) & ((1 << tail) - 1);
        lines.read_block(bytes, starts, cr, bytes.len() - tail);
    }
    lines.read
}

/// The state of [`lf_events`] between blocks.
struct LfLines {
    read: WholeEvents,
    /// The start of the line being read when it starts with `i`: an `id`, perhaps, read
    /// once its end is known, at the next line's start.
    id_line: Option<usize>,
    /// The last `id` line so far.
    id: Option<Range<usize>>,
}

impl LfLines {
    /// Reads the lines that start in one block of `bytes`, at offset `at`, where `starts`
    /// has a bit set, up to the block's first CR (a bit of `cr`); `false` at a line for
    /// the line reading.
    #[inline(always)]
    fn read_block(&mut self, bytes: &[u8], starts: u64, cr: u64, at: usize) -> bool {
        if cr == 0 {
            return self.read_starts(bytes, starts, at);
        }
        // A CR, and everything from the event that holds it on, is the line reading's.
        self.read_starts(bytes, starts & ((1 << cr.trailing_zeros()) - 1), at);
        false
    }

    /// Reads the lines that start in one block of `bytes`, at offset `at`, where
    /// `starts` has a bit set; `false` at a line for the line reading.
    #[inline(always)]
    fn read_starts(&mut self, bytes: &[u8], mut starts: u64, at: usize) -> bool {
        while starts != 0 {
            let start = at + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            if let Some(line) = self.id_line.take() {
                let line = line..start - 1;
                if is_id_field(&bytes[line.clone()]) {
                    self.id = Some(line);
                }
            }
            match bytes[start] {
                b'\n' => {
                    self.read.len = start + 1;
                    self.read.events += 1;
                    self.read.id.clone_from(&self.id);
                }
                b'i' => self.id_line = Some(start),
                // A `retry` line is rare: it is the line reading's.
                b'r' if bytes[start..].starts_with(b"retry") => return false,
                _ => {}
            }
        }
        true
    }
}

/// Whether `line` (without its LF), which starts with `i`, is an `id` field.
fn is_id_field(line: &[u8]) -> bool {
    line == b"id" || line.starts_with(b"id:")
}

/// Where the value of an `id` line starts: past the name, the colon and one space.
fn id_value_start(line: &[u8]) -> usize {
    match line.get(2..4) {
        Some(b": ") => 4,
        Some(_) => 3,
        None => line.len(),
    }
}

/// Where `block` has LF and (with `CRS`; else none) where CR, as bitmasks. SSE2, which
/// every x86_64 CPU has: 16 bytes compared in one instruction.
#[cfg(target_arch = "x86_64")]
#[inline]
fn masks<const CRS: bool>(block: &[u8; 64]) -> (u64, u64) {
    use safe_arch::{cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i};
    use safe_arch::{m128i, set_splat_i8_m128i as splat};
    let bits = |eq: m128i| u64::from(move_mask_i8_m128i(eq) as u16);
    let (lf, cr) = (splat(b'\n' as i8), splat(b'\r' as i8));
    let (mut lfs, mut crs) = (0, 0);
    for (part, shift) in block.chunks_exact(16).zip((0..).step_by(16)) {
        let part = load_unaligned_m128i(part.try_into().expect("16 bytes"));
        lfs |= bits(cmp_eq_mask_i8_m128i(part, lf)) << shift;
        if CRS {
            crs |= bits(cmp_eq_mask_i8_m128i(part, cr)) << shift;
        }
    }
    (lfs, crs)
}

/// Byte by byte: what the SIMD version computes (and is tested against).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn masks_bytewise<const CRS: bool>(block: &[u8; 64]) -> (u64, u64) {
    let mask = |byte| {
        (block.iter().enumerate())
            .filter(|&(_, &b)| b == byte)
            .fold(0, |mask, (at, _)| mask | 1 << at)
    };
    (mask(b'\n'), if CRS { mask(b'\r') } else { 0 })
}

#[cfg(not(target_arch = "x86_64"))]
use masks_bytewise as masks;

#[cfg(test)]
mod tests;
