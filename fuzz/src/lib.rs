//! What the fuzz targets share: how an input names the places where it is cut into reads,
//! and plain reference readings (RFC 9112 framing and heads, WHATWG event streams,
//! percent-decoding) written for clarity rather than speed, as oracles for the incremental
//! parsers.
//!
//! A reference here is written from the specification's text, not from the code it
//! checks, so that a bug would have to be made twice, in two different shapes, to pass.

pub mod config;
pub mod framing;
pub mod gate;
pub mod json;
pub mod sse_events;

/// Splits a fuzz input into cut positions and the payload they cut: the first byte says
/// how many cuts (0-7) follow as little-endian `u16`s, taken modulo the payload's length.
/// A seed is therefore a test's input behind one `0` byte.
pub fn cuts_and_payload(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count % 8).min(rest.len() / 2);
    let (positions, payload) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> = positions
        .chunks_exact(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (payload.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, payload)
}

/// `payload` cut at `cuts` (sorted, within bounds), empty pieces included.
pub fn pieces<'a>(payload: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in cuts.iter().chain([&payload.len()]) {
        out.push(&payload[from..cut]);
        from = cut;
    }
    out
}

/// Percent-decoding as WHATWG URL does it: `%` and two hex digits is that byte; any
/// other `%` stands for itself.
pub fn percent_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' && i + 2 < text.len() {
            let hex = &text[i + 1..i + 3];
            if let Some(byte) = std::str::from_utf8(hex)
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// The outcome of feeding a body through `wire::framing::Framing::take` piece by piece.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    /// The payload bytes reported, in order.
    pub payload: Vec<u8>,
    /// Bytes that belonged to the body (only meaningful without an error).
    pub taken: usize,
    pub done: bool,
    pub malformed: bool,
}

/// Feeds `pieces` through `framing` as a reader would (each piece's unread rest is not
/// offered again: after the body ends, the rest is the next message's), checking what
/// every call must satisfy: it takes at most its input, all of it unless the body ended
/// inside it, and reports payload ranges in order, without overlap, inside what it took.
pub fn take_pieces(mut framing: wire::framing::Framing, pieces: &[&[u8]]) -> Taken {
    let mut out = Taken {
        payload: Vec::new(),
        taken: 0,
        done: framing.is_done(),
        malformed: false,
    };
    for piece in pieces {
        let was_done = framing.is_done();
        let mut ranges = Vec::new();
        match framing.take(piece, |r| ranges.push(r)) {
            Ok(n) => {
                assert!(n <= piece.len(), "took {n} of {} bytes", piece.len());
                assert!(
                    n == piece.len() || framing.is_done(),
                    "took {n} of {} bytes and the body goes on",
                    piece.len()
                );
                if was_done {
                    assert_eq!(n, 0, "took bytes after the body ended");
                }
                let mut end = 0;
                for r in &ranges {
                    assert!(
                        end <= r.start && r.start < r.end && r.end <= n,
                        "{ranges:?} in {n}"
                    );
                    end = r.end;
                    out.payload.extend_from_slice(&piece[r.clone()]);
                }
                out.taken += n;
            }
            Err(chunked::MalformedChunk) => {
                for r in ranges {
                    out.payload.extend_from_slice(&piece[r]);
                }
                out.malformed = true;
                out.taken = 0;
                break;
            }
        }
        out.done = framing.is_done();
    }
    out
}
