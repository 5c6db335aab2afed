//! The event stream's grammar as a byte-level state machine, shared by [`crate::Parser`]
//! and by relays that forward the bytes they scan.
//!
//! It copies nothing it does not keep: `data` and `event` values come out as slices of the
//! input (a value split across chunks comes out in pieces), and only what every user needs
//! is stored: the `id` being read, the last event ID, and the `retry` time. A relay can
//! therefore scan a multi-megabyte stream with a few bytes of state, and learn where each
//! event ends in the chunk it is about to forward. An `id` longer than [`MAX_ID_BYTES`] is
//! ignored as it arrives, so no stream makes the scanner hold more than that.

use std::ops::Range;

mod boundaries;
pub use boundaries::Boundaries;

const BOM: &[u8] = "\u{feff}".as_bytes();
/// The longest field name the scanner tells apart (`retry`); longer names are ignored, so
/// a name is looked at for at most one byte more than this.
const NAME_CAPACITY: usize = 5;
/// The longest `id` kept; a longer one is ignored, as one holding a NUL is. An id travels
/// back to the origin as a `Last-Event-ID` header, and 4 KiB fits in the header limits of
/// common servers (8 KiB) while holding any id in use (a UUID, an offset, the plugin's
/// Kafka position of a few hundred partitions).
pub const MAX_ID_BYTES: usize = 4096;

/// A field whose value the scanner hands to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Data,
    Event,
}

/// What scanning a chunk yields, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Part of a `data` or `event` value (the leading space removed).
    Value(Field, &'a [u8]),
    /// The end of a `data` or `event` line.
    LineEnd(Field),
    /// A blank line: the event (if any) is complete. `end` is the offset in the chunk just
    /// past the blank line; `last_event_id` is the stream's last event ID from now on.
    EventEnd {
        end: usize,
        last_event_id: LastEventId<'a>,
    },
    /// A comment line between events ended at offset `end`: the stream is still between
    /// events there (comments inside an event are not reported).
    Comment { end: usize },
}

/// The stream's last event ID at an event's end, decoded when asked for: a relay that
/// only needs to know where events end never decodes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastEventId<'a>(&'a [u8]);

impl<'a> LastEventId<'a> {
    pub fn as_str(self) -> &'a str {
        decoded(self.0)
    }
}

/// An ID the scanner keeps: UTF-8 by construction (checked, or decoded lossily, as its
/// line ended), so this never falls back to "".
fn decoded(id: &[u8]) -> &str {
    std::str::from_utf8(id).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Event,
    Id,
    Retry,
    Comment,
    Ignored,
}

#[derive(Debug, Clone, Copy)]
enum Line {
    Start,
    /// Reading the field name, `len` bytes of it so far (never more than [`NAME_CAPACITY`]:
    /// a longer one is [`Kind::Ignored`] at once).
    Name {
        name: [u8; NAME_CAPACITY],
        len: usize,
    },
    /// Just after the colon, where one space is skipped.
    ValueStart(Kind),
    Value(Kind),
}

/// Scans an event stream fed in arbitrary chunks.
#[derive(Debug)]
pub struct Scanner {
    /// Bytes of a leading BOM matched so far; `None` once the stream's start is past.
    bom: Option<usize>,
    /// The previous chunk ended in CR: a leading LF in the next one belongs to it.
    after_cr: bool,
    line: Line,
    /// A field line was read since the last blank line.
    in_event: bool,
    /// The value of the `id` line being read (in the allocation of an ID it replaced, so
    /// that an `id` on every event allocates nothing).
    id_value: Vec<u8>,
    /// That value went past [`MAX_ID_BYTES`]: the line is ignored.
    id_too_long: bool,
    /// The spec's "last event ID buffer" when an `id` line set it since the last blank
    /// line; `None` while it equals `last_event_id`. Committed by moving it, not copying.
    /// IDs are kept as bytes, UTF-8 by construction, and decoded only when read.
    next_id: Option<Vec<u8>>,
    /// Committed from the last event ID buffer at each blank line.
    last_event_id: Vec<u8>,
    /// The `retry` line being read: `None` once a non-digit (or overflow) is seen.
    retry_value: Option<u64>,
    retry_digits: usize,
    retry_ms: Option<u64>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::resuming("")
    }
}

impl Scanner {
    /// A scanner for a reconnection: like EventSource, the last event ID carries over.
    pub fn resuming(last_event_id: &str) -> Self {
        Self {
            bom: Some(0),
            after_cr: false,
            line: Line::Start,
            in_event: false,
            id_value: Vec::new(),
            id_too_long: false,
            next_id: None,
            last_event_id: last_event_id.into(),
            retry_value: None,
            retry_digits: 0,
            retry_ms: None,
        }
    }

    /// Readies the scanner for the stream of a new connection, as EventSource does on a
    /// reconnection: a partial event is forgotten; the last event ID and `retry` are kept.
    pub fn restart(&mut self) {
        let retry_ms = self.retry_ms;
        *self = Self::resuming(self.last_event_id());
        self.retry_ms = retry_ms;
    }

    /// The ID a reconnecting client sends as `Last-Event-ID`: set at each blank line, so an
    /// event cut off mid-way does not move it.
    pub fn last_event_id(&self) -> &str {
        decoded(&self.last_event_id)
    }

    /// The reconnection time the stream asked for with `retry:`, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Scans `chunk`, calling `on` for each piece it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on: impl FnMut(Piece<'_>)) {
        let mut start = 0;
        while let Some(matched) = self.bom {
            let Some(&byte) = chunk.get(start) else {
                return;
            };
            if byte == BOM[matched] {
                start += 1;
                self.bom = (matched + 1 < BOM.len()).then_some(matched + 1);
            } else {
                // Not a BOM after all: the bytes taken for one are the stream's first.
                self.bom = None;
                self.scan(&BOM[..matched], 0, &mut on);
            }
        }
        if self.after_cr && start < chunk.len() {
            self.after_cr = false;
            if chunk[start] == b'\n' {
                start += 1;
            }
        }
        self.scan(&chunk[start..], start, &mut on);
    }

    /// Scans `bytes`, which start at offset `base` of the caller's chunk.
    fn scan(&mut self, bytes: &[u8], base: usize, on: &mut impl FnMut(Piece<'_>)) {
        let mut ids = ChunkIds::default();
        let line_ends = LineEnds::get();
        let mut i = 0;
        while i < bytes.len() {
            match self.line {
                Line::Start => match bytes[i] {
                    b'\r' | b'\n' => {
                        i = self.line_ending(bytes, i);
                        self.in_event = false;
                        if let Some(id) = ids.next.take() {
                            ids.last = Some(id);
                        } else if self.commit_next_id() {
                            ids.last = None;
                        }
                        let last_event_id = match &ids.last {
                            Some(id) => &bytes[id.clone()],
                            None => &self.last_event_id,
                        };
                        on(Piece::EventEnd {
                            end: base + i,
                            last_event_id: LastEventId(last_event_id),
                        });
                    }
                    first => {
                        // A line whole in the chunk is read in one go, from one search for
                        // its end; one cut off by the chunk's end goes through the states
                        // below, into the next chunk.
                        let Some(end) = line_ends.find(&bytes[i..]) else {
                            if first == b':' {
                                self.line = Line::Value(Kind::Comment);
                                i += 1;
                            } else {
                                self.in_event = true;
                                self.line = Line::Name {
                                    name: [0; NAME_CAPACITY],
                                    len: 0,
                                };
                            }
                            continue;
                        };
                        self.whole_line(bytes, i..i + end, &mut ids, on);
                        i = self.line_ending(bytes, i + end);
                        if first == b':' && !self.in_event {
                            on(Piece::Comment { end: base + i });
                        }
                    }
                },
                Line::Name { mut name, mut len } => {
                    // Only a name of up to NAME_CAPACITY bytes matters, so the search for
                    // its end is a few bytes long: cheaper in a loop than with SIMD.
                    let rest = &bytes[i..];
                    let window = &rest[..rest.len().min(NAME_CAPACITY + 1 - len)];
                    let stop = window
                        .iter()
                        .position(|&b| matches!(b, b':' | b'\r' | b'\n'));
                    let Some(stop) = stop else {
                        if len + window.len() > NAME_CAPACITY {
                            // Longer than any name told apart: whatever follows, the line
                            // is ignored.
                            self.line = Line::Value(Kind::Ignored);
                            i += window.len();
                            continue;
                        }
                        name[len..len + window.len()].copy_from_slice(window);
                        self.line = Line::Name {
                            name,
                            len: len + window.len(),
                        };
                        break;
                    };
                    name[len..len + stop].copy_from_slice(&window[..stop]);
                    len += stop;
                    let kind = classify(&name[..len]);
                    self.begin_value(kind);
                    i += stop;
                    if bytes[i] == b':' {
                        self.line = Line::ValueStart(kind);
                        i += 1;
                    } else {
                        self.end_value(kind, &mut ids, on);
                        i = self.line_ending(bytes, i);
                    }
                }
                Line::ValueStart(kind) => {
                    if bytes[i] == b' ' {
                        i += 1;
                    }
                    self.line = Line::Value(kind);
                }
                Line::Value(kind) => {
                    let rest = &bytes[i..];
                    let stop = line_ends.find(rest);
                    let part = &rest[..stop.unwrap_or(rest.len())];
                    self.value(kind, part, on);
                    let Some(stop) = stop else {
                        break;
                    };
                    self.end_value(kind, &mut ids, on);
                    i = self.line_ending(bytes, i + stop);
                    if kind == Kind::Comment && !self.in_event {
                        on(Piece::Comment { end: base + i });
                    }
                }
            }
        }
        ids.keep(self, bytes);
    }

    /// A comment or field line, without its line ending (`line`, a range of `bytes`): what
    /// the states from [`Line::Name`] on make of it when it comes in pieces. The fields of
    /// most events (`data`, and an `id` that is ASCII without NUL, as most are) are told
    /// apart by their prefix and an `id` is kept as where it is in `bytes`, not copied.
    #[inline]
    fn whole_line(
        &mut self,
        bytes: &[u8],
        line: Range<usize>,
        ids: &mut ChunkIds,
        on: &mut impl FnMut(Piece<'_>),
    ) {
        let end = line.end;
        let line = &bytes[line];
        if let Some(value) = line.strip_prefix(b"data:") {
            self.in_event = true;
            self.value(Kind::Data, value.strip_prefix(b" ").unwrap_or(value), on);
            return self.end_value(Kind::Data, ids, on);
        }
        if let Some(value) = line.strip_prefix(b"id:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if value.len() <= MAX_ID_BYTES && is_plain_ascii(value) {
                self.in_event = true;
                if let Some(replaced) = self.next_id.take() {
                    self.recycle(replaced);
                }
                ids.next = Some(end - value.len()..end);
                return;
            }
        }
        let (kind, value) = match line.split_first() {
            Some((b':', comment)) => (Kind::Comment, comment),
            _ => {
                self.in_event = true;
                let window = &line[..line.len().min(NAME_CAPACITY + 1)];
                match window.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        let value = value.strip_prefix(b" ").unwrap_or(value);
                        (classify(&line[..colon]), value)
                    }
                    // A name alone, or one longer than any told apart.
                    None if line.len() <= NAME_CAPACITY => (classify(line), &[][..]),
                    None => (Kind::Ignored, &[][..]),
                }
            }
        };
        self.begin_value(kind);
        self.value(kind, value, on);
        self.end_value(kind, ids, on);
    }

    /// Consumes the line ending at `at` and returns the offset past it.
    #[inline]
    fn line_ending(&mut self, bytes: &[u8], at: usize) -> usize {
        self.line = Line::Start;
        match (bytes[at], bytes.get(at + 1)) {
            (b'\r', Some(b'\n')) => at + 2,
            (b'\r', None) => {
                self.after_cr = true;
                at + 1
            }
            _ => at + 1,
        }
    }

    /// At a blank line: the last event ID buffer, when an `id` line set it since the last
    /// one, becomes the last event ID (moved, not copied). `false` when none did.
    #[inline]
    fn commit_next_id(&mut self) -> bool {
        let Some(id) = self.next_id.take() else {
            return false;
        };
        let old = std::mem::replace(&mut self.last_event_id, id);
        self.recycle(old);
        true
    }

    /// Keeps an ID's allocation for the next `id` line's value (within the bound on what
    /// a stream makes the scanner hold).
    #[inline]
    fn recycle(&mut self, id: Vec<u8>) {
        if self.id_value.capacity() < id.capacity() && id.capacity() <= MAX_ID_BYTES {
            self.id_value = id;
        }
    }

    fn begin_value(&mut self, kind: Kind) {
        match kind {
            Kind::Id => {
                self.id_value.clear();
                self.id_too_long = false;
            }
            Kind::Retry => (self.retry_value, self.retry_digits) = (Some(0), 0),
            _ => {}
        }
    }

    #[inline]
    fn value(&mut self, kind: Kind, part: &[u8], on: &mut impl FnMut(Piece<'_>)) {
        match kind {
            Kind::Data if !part.is_empty() => on(Piece::Value(Field::Data, part)),
            Kind::Event if !part.is_empty() => on(Piece::Value(Field::Event, part)),
            Kind::Id if self.id_value.len() + part.len() > MAX_ID_BYTES => {
                self.id_too_long = true;
                self.id_value = Vec::new();
            }
            Kind::Id if !self.id_too_long => self.id_value.extend_from_slice(part),
            Kind::Retry => {
                self.retry_digits += part.len();
                for &b in part {
                    self.retry_value = self
                        .retry_value
                        .filter(|_| b.is_ascii_digit())
                        .and_then(|v| v.checked_mul(10)?.checked_add(u64::from(b - b'0')));
                }
            }
            _ => {}
        }
    }

    #[inline]
    fn end_value(&mut self, kind: Kind, ids: &mut ChunkIds, on: &mut impl FnMut(Piece<'_>)) {
        match kind {
            Kind::Data => on(Piece::LineEnd(Field::Data)),
            Kind::Event => on(Piece::LineEnd(Field::Event)),
            Kind::Id if !self.id_too_long => {
                let value = &self.id_value;
                // Plain ASCII, as most IDs are, is UTF-8 as it is: it is moved, not copied,
                // into the ID.
                let id = if is_plain_ascii(value) {
                    Some(std::mem::take(&mut self.id_value))
                } else if value.contains(&0) {
                    None
                } else {
                    // The bound is on what is kept and sent back upstream, so it is checked
                    // again once decoded: each byte that is not UTF-8 becomes a U+FFFD of
                    // three.
                    Some(String::from_utf8_lossy(value).into_owned().into_bytes())
                        .filter(|id| id.len() <= MAX_ID_BYTES)
                };
                if let Some(id) = id {
                    ids.next = None;
                    if let Some(replaced) = self.next_id.replace(id) {
                        self.recycle(replaced);
                    }
                }
            }
            Kind::Retry if self.retry_digits > 0 => {
                if let Some(ms) = self.retry_value {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
}

/// ASCII without NUL (bytes 1 to 0x7f): an `id` that is UTF-8 as it is and kept.
#[inline]
fn is_plain_ascii(id: &[u8]) -> bool {
    id.iter().all(|&b| b.wrapping_sub(1) < 0x7f)
}

/// The IDs of one [`Scanner::scan`] call that are still where they are in its bytes: the
/// last event ID buffer (`next`) when the latest `id` line set it, and the last event ID
/// (`last`) when committed from one of those. Copied into the scanner once, at the end.
#[derive(Default)]
struct ChunkIds {
    next: Option<Range<usize>>,
    last: Option<Range<usize>>,
}

impl ChunkIds {
    fn keep(self, scanner: &mut Scanner, bytes: &[u8]) {
        if let Some(last) = self.last {
            scanner.last_event_id.clear();
            scanner.last_event_id.extend_from_slice(&bytes[last]);
        }
        if let Some(next) = self.next {
            // The allocation kept for the next `id` line's value, unless one is being read.
            let mut id = match scanner.line {
                Line::ValueStart(Kind::Id) | Line::Value(Kind::Id) => Vec::new(),
                _ => std::mem::take(&mut scanner.id_value),
            };
            id.clear();
            id.extend_from_slice(&bytes[next]);
            scanner.next_id = Some(id);
        }
    }
}

/// Finds where a line ends (CR or LF). Most of a stream's bytes are values, so this is
/// SIMD: memchr's AVX2 searcher where the CPU has it, made once per process, since
/// `memchr::memchr2` checks for AVX2 and sets up its needles again at each call, which on
/// 100-byte events cost half as much as the search itself; made once per chunk, it cost a
/// hundred instructions a wake-up, and kept in each scanner, it made every stream's task
/// 256 bytes larger (it is 32-byte aligned).
#[derive(Debug)]
struct LineEnds {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::memchr::Two>,
}

impl LineEnds {
    fn get() -> &'static Self {
        static LINE_ENDS: std::sync::OnceLock<LineEnds> = std::sync::OnceLock::new();
        LINE_ENDS.get_or_init(Self::new)
    }

    fn new() -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            avx2: memchr::arch::x86_64::avx2::memchr::Two::new(b'\r', b'\n'),
        }
    }

    // Inlined, or the call costs what the searcher saved.
    #[inline(always)]
    fn find(&self, bytes: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = &self.avx2 {
            return avx2.find(bytes);
        }
        memchr::memchr2(b'\r', b'\n', bytes)
    }
}

fn classify(name: &[u8]) -> Kind {
    match name {
        b"data" => Kind::Data,
        b"event" => Kind::Event,
        b"id" => Kind::Id,
        b"retry" => Kind::Retry,
        _ => Kind::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every boundary the scanner reports, as absolute stream offsets, with the IDs at
    /// each event end, when `input` is fed in the given pieces.
    fn boundaries(input: &[u8], splits: &[usize]) -> Vec<(usize, Option<String>)> {
        let mut scanner = Scanner::default();
        let mut seen = Vec::new();
        let mut offset = 0;
        let mut cuts: Vec<usize> = splits.iter().map(|&s| s.min(input.len())).collect();
        cuts.sort_unstable();
        cuts.push(input.len());
        for cut in cuts {
            scanner.feed(&input[offset..cut], |piece| match piece {
                Piece::EventEnd { end, last_event_id } => {
                    seen.push((offset + end, Some(last_event_id.as_str().to_owned())))
                }
                Piece::Comment { end } => seen.push((offset + end, None)),
                _ => {}
            });
            offset = cut;
        }
        seen
    }

    #[test]
    fn reports_where_events_and_outside_comments_end() {
        let input = b":hi\nid: 1\ndata: a\n: inside\n\r\n:ka\r\ndata: b";
        assert_eq!(
            boundaries(input, &[]),
            [(4, None), (29, Some("1".into())), (34, None)]
        );
    }

    #[test]
    fn an_id_longer_than_the_limit_raw_or_decoded_is_ignored_without_being_held() {
        let mut scanner = Scanner::resuming("7");
        let mut ids = Vec::new();
        let mut record = |piece: Piece<'_>| {
            if let Piece::EventEnd { last_event_id, .. } = piece {
                ids.push(last_event_id.as_str().to_owned());
            }
        };
        let longest = "x".repeat(MAX_ID_BYTES);
        scanner.feed(format!("id: {longest}\n\n").as_bytes(), &mut record);
        // An endless id line, a chunk at a time: what is kept never grows past the limit.
        scanner.feed(b"id: ", &mut record);
        for _ in 0..100 {
            scanner.feed(&[b'y'; 1000], &mut record);
            assert!(scanner.id_value.capacity() <= MAX_ID_BYTES);
        }
        scanner.feed(b"\ndata: after\n\nid: 8\n\n", &mut record);
        // The bound holds once decoded too (caught by the `sse` fuzz target's check of it,
        // seed fuzz/corpus/sse/long-invalid-id): 2,000 bytes that are not UTF-8 are within
        // the raw bound but made a 6,000-byte id; 1,365 decode to 4,095 bytes and are kept.
        let invalid = |n: usize| [&b"id: "[..], &vec![0xff; n], b"\n\n"].concat();
        scanner.feed(&invalid(2000), &mut record);
        scanner.feed(&invalid(1365), &mut record);
        let kept = "\u{fffd}".repeat(1365);
        assert_eq!(ids, [&longest, &longest, "8", "8", &kept]);
    }

    #[test]
    fn a_cr_at_the_end_of_a_chunk_takes_the_next_lf() {
        // The CR ends the blank line; the LF that follows in the next chunk is its pair,
        // not a second blank line.
        assert_eq!(
            boundaries(b"data: a\r\r\ndata: b\n\n", &[9]),
            [(9, Some("".into())), (19, Some("".into()))]
        );
    }

    pub(crate) fn stream() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            Just(b"data: x".to_vec()),
            Just(b"data".to_vec()),
            Just("data: é".as_bytes().to_vec()),
            Just(b"id: 7".to_vec()),
            Just(b"id: a\0".to_vec()),
            Just(b"event: e".to_vec()),
            Just(b"retry: 25".to_vec()),
            Just(b"retry: 2x".to_vec()),
            Just(b": comment".to_vec()),
            Just(b"unknown: y".to_vec()),
            Just(Vec::new()),
        ];
        lines_of(line, 24)
    }

    /// Up to `max` of `line`s, each with any line ending, after a BOM or not.
    fn lines_of(
        line: impl Strategy<Value = Vec<u8>>,
        max: usize,
    ) -> impl Strategy<Value = Vec<u8>> {
        let ending = prop_oneof![Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"\r\n"[..])];
        lines_ending(line, ending, max)
    }

    /// Up to `max` of `line`s, each with an `ending`, after a BOM or not.
    pub(crate) fn lines_ending(
        line: impl Strategy<Value = Vec<u8>>,
        ending: impl Strategy<Value = &'static [u8]>,
        max: usize,
    ) -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            proptest::collection::vec((line, ending), 0..max),
        )
            .prop_map(|(bom, lines)| {
                let mut out = if bom { BOM.to_vec() } else { Vec::new() };
                for (line, ending) in lines {
                    out.extend_from_slice(&line);
                    out.extend_from_slice(ending);
                }
                out
            })
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_events_and_boundaries(
            input in stream(),
            splits in proptest::collection::vec(0usize..400, 0..6),
        ) {
            // A chunk that ends in CR ends its line there; the LF that the next chunk
            // starts with is that line's, so the boundary may sit one byte earlier.
            let lf_included = |found: Vec<(usize, Option<String>)>| -> Vec<_> {
                found
                    .into_iter()
                    .map(|(end, id)| match input.get(end) {
                        Some(b'\n') if input[end - 1] == b'\r' => (end + 1, id),
                        _ => (end, id),
                    })
                    .collect()
            };
            let whole = lf_included(boundaries(&input, &[]));
            prop_assert_eq!(lf_included(boundaries(&input, &splits)), whole);

            let parse = |cuts: &[usize]| {
                let mut parser = crate::Parser::new();
                let mut events = Vec::new();
                let mut offset = 0;
                let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
                cuts.sort_unstable();
                cuts.push(input.len());
                for cut in cuts {
                    parser.feed(&input[offset..cut], |e| events.push(e));
                    offset = cut;
                }
                (events, parser.retry_ms(), parser.last_event_id().to_owned())
            };
            prop_assert_eq!(parse(&splits), parse(&[]));
        }

        #[test]
        fn long_lines_and_line_ends_split_anywhere_read_as_the_spec_says(
            input in varied_stream(),
            splits in proptest::collection::vec(any::<proptest::sample::Index>(), 0..48),
        ) {
            let mut cuts: Vec<usize> = splits.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(input.len());
            let mut parser = crate::Parser::new();
            let mut events = Vec::new();
            let mut offset = 0;
            for cut in cuts {
                parser.feed(&input[offset..cut], |e| events.push(e));
                offset = cut;
            }
            let read = (events, parser.retry_ms(), parser.last_event_id().to_owned());
            prop_assert_eq!(read, spec_reading(&input));
        }
    }

    /// Lines of every kind, values from empty to longer than [`MAX_ID_BYTES`] (so that they
    /// span many chunks), `id`s that differ from each other (ASCII, with NUL, not UTF-8),
    /// and every line ending, CRs next to LFs included.
    fn varied_stream() -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![
            4 => proptest::collection::vec(prop_oneof![Just(b'x'), Just(b':'), Just(b' ')], 0..12),
            1 => proptest::collection::vec(Just(b'y'), 0..6000),
            2 => proptest::collection::vec(any::<u8>().prop_filter("no line end", |b| {
                !matches!(b, b'\r' | b'\n')
            }), 0..40),
        ];
        let name = prop_oneof![
            Just(&b"data: "[..]),
            Just(&b"data:"[..]),
            Just(&b"data"[..]),
            Just(&b"id: "[..]),
            Just(&b"id:"[..]),
            Just(&b"id"[..]),
            Just(&b"event: "[..]),
            Just(&b"retry: "[..]),
            Just(&b":"[..]),
            Just(&b"dat: "[..]),
            Just(&b"datas: "[..]),
            Just(&b""[..]),
        ];
        let digits = (0u64..100_000).prop_map(|n| n.to_string().into_bytes());
        let line = prop_oneof![
            (name, value).prop_map(|(name, value)| [name, &value].concat()),
            digits.clone().prop_map(|n| [&b"id: "[..], &n].concat()),
            digits.prop_map(|n| [&b"retry:"[..], &n].concat()),
        ];
        lines_of(line, 32)
    }

    /// What "Interpreting an event stream" makes of `input` read whole, line by line
    /// ([`crate::Lines`], [`crate::field`]): the events, `retry` and the last event ID.
    fn spec_reading(input: &[u8]) -> (Vec<crate::Event>, Option<u64>, String) {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut events = Vec::new();
        let (mut data, mut event_type) = (Vec::new(), Vec::new());
        let (mut buffer, mut last_event_id, mut retry) = (String::new(), String::new(), None);
        let mut lines = crate::Lines::default();
        lines.feed(input.strip_prefix(BOM).unwrap_or(input), |line| {
            if line.is_empty() {
                last_event_id = buffer.clone();
                if data.is_empty() {
                    event_type.clear();
                    return;
                }
                data.pop();
                events.push(crate::Event {
                    id: last_event_id.clone(),
                    event: if event_type.is_empty() {
                        "message".into()
                    } else {
                        text(&event_type)
                    },
                    data: text(&data),
                });
                data.clear();
                event_type.clear();
                return;
            }
            match crate::field(line) {
                Some((b"data", value)) => {
                    data.extend_from_slice(value);
                    data.push(b'\n');
                }
                Some((b"event", value)) => event_type = value.to_vec(),
                Some((b"id", value)) if !value.contains(&0) => {
                    let id = text(value);
                    if id.len() <= MAX_ID_BYTES {
                        buffer = id;
                    }
                }
                Some((b"retry", value))
                    if !value.is_empty() && value.iter().all(u8::is_ascii_digit) =>
                {
                    retry = text(value).parse().ok().or(retry);
                }
                _ => {}
            }
        });
        (events, retry, last_event_id)
    }
}
