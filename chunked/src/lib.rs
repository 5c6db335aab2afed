//! Incremental, zero-copy decoding of the chunked transfer coding (RFC 9112 §7.1).
//!
//! [`Decoder::decode`] never copies: it reports where the payload bytes lie in each input
//! buffer, so one piece of code serves every use. The gate uses it only to find where a
//! request body ends; the streaming plugin hands the payload ranges straight to `writev`;
//! the load tool scans them for events. Chunk sizes, extensions and trailers are checked
//! and bounded, so a malformed or hostile body is an error rather than unbounded work.

#![forbid(unsafe_code)]

use std::ops::Range;

/// The input is not a valid chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct MalformedChunk;

/// The longest chunk-size line (with extensions) accepted, and the most bytes of trailer
/// section (all its lines, with their CRLFs, and the blank line that ends it): a body whose
/// trailers never end is refused rather than read for ever.
pub const MAX_LINE: usize = 4096;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the blank line that ends the trailers).
    TrailerStart,
    Trailer,
    TrailerLf,
    LastLf,
    Done,
}

/// Decodes one chunked body fed in arbitrary pieces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    /// The size being read, then the data left in the current chunk.
    size: u64,
    /// Bytes of the current size line, or of the trailer section so far, to bound it.
    line: usize,
}

impl Decoder {
    /// Decodes `input`, calling `payload` with the range of each run of payload bytes in it.
    /// Returns how many bytes belong to the body: all of `input` unless the body ended
    /// inside it.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut payload: impl FnMut(Range<usize>),
    ) -> Result<usize, MalformedChunk> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let n = self.size.min((input.len() - at) as u64) as usize;
                payload(at..at + n);
                at += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            // The common case, one whole `<hex>\r\n` line (after the CRLF that ends the
            // chunk before it): taken at once instead of byte by byte.
            if self.state == State::DataCr && input[at..].starts_with(b"\r\n") {
                at += 2;
                self.state = State::Size;
            }
            if self.state == State::Size && self.line == 0 {
                if let Some((size, len)) = whole_size_line(&input[at..]) {
                    at += len;
                    self.size = size;
                    self.state = if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                    continue;
                }
            }
            let Some(&byte) = input.get(at) else {
                break;
            };
            at += 1;
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(MalformedChunk);
            }
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    self.size =
                        self.size.checked_mul(16).ok_or(MalformedChunk)? + hex(b).unwrap_or(0);
                    State::Size
                }
                (State::Size, b';' | b'\r') if self.line > 1 => {
                    if byte == b';' {
                        State::Extension
                    } else {
                        State::SizeLf
                    }
                }
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(MalformedChunk),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.line = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::LastLf,
                (State::TrailerStart | State::Trailer, b'\n') => return Err(MalformedChunk),
                (State::Trailer, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::Trailer, _) => State::Trailer,
                // The section's bytes go on counting: `line` bounds all of it.
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::LastLf, b'\n') => State::Done,
                _ => return Err(MalformedChunk),
            };
        }
        Ok(at)
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// The value of `b` as a hex digit.
fn hex(b: u8) -> Option<u64> {
    let value = match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => return None,
    };
    Some(u64::from(value))
}

/// A chunk-size line without extensions, whole at the start of `input`: its size, and its
/// length with the CRLF. `None` for anything else (part of a line, an extension, more
/// digits than a `u64` surely holds, a malformed line): the byte-by-byte path decides.
fn whole_size_line(input: &[u8]) -> Option<(u64, usize)> {
    let mut size = 0;
    for (i, &b) in input.iter().enumerate().take(17) {
        match hex(b) {
            // A 17th digit ends the loop: a size that long is left to the slow path.
            Some(digit) => size = size << 4 | digit,
            None if b == b'\r' && i > 0 => {
                return (input.get(i + 1) == Some(&b'\n')).then_some((size, i + 2));
            }
            None => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_two(input: &[u8], split: usize) -> Result<(Vec<u8>, usize, bool), MalformedChunk> {
        let mut decoder = Decoder::default();
        let mut payload = Vec::new();
        let first = decoder.decode(&input[..split], |r| {
            payload.extend_from_slice(&input[..split][r])
        })?;
        let rest = &input[first..];
        let second = decoder.decode(rest, |r| payload.extend_from_slice(&rest[r]))?;
        Ok((payload, first + second, decoder.is_done()))
    }

    #[test]
    fn decodes_at_every_split() {
        let body =
            b"5;ext=1\r\nhello\r\n10\r\n, chunked world!\r\n0\r\nX-Trailer: t\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for split in 0..=body.len() {
            let (payload, consumed, done) = decode_in_two(body, split).unwrap();
            assert_eq!(payload, b"hello, chunked world!", "split at {split}");
            assert_eq!(consumed, end, "split at {split}");
            assert!(done);
        }
    }

    /// Sizes as long as a `u64` holds are read whole; longer ones (leading zeros) go byte
    /// by byte, and overflow there.
    #[test]
    fn sizes_of_every_length_split_anywhere() {
        let long = [&b"00000000000000000003\r\nabc\r\n"[..], b"0\r\n\r\n"].concat();
        for split in 0..=long.len() {
            let decoded = decode_in_two(&long, split);
            assert_eq!(decoded, Ok((b"abc".to_vec(), long.len(), true)), "{split}");
        }
        let mut decoder = Decoder::default();
        assert_eq!(decoder.decode(b"ffffffffffffffff\r\nab", |_| {}), Ok(20));
        assert_eq!(decoder.size, u64::MAX - 2, "two of its bytes taken");
        let overflow = b"1ffffffffffffffff\r\n";
        assert_eq!(
            Decoder::default().decode(overflow, |_| {}),
            Err(MalformedChunk)
        );
    }

    #[test]
    fn an_empty_body_is_just_the_last_chunk() {
        assert_eq!(decode_in_two(b"0\r\n\r\n", 2), Ok((vec![], 5, true)));
    }

    #[test]
    fn refuses_malformed_bodies() {
        let bad: [&[u8]; 7] = [
            b"zz\r\n",
            b"\r\n",
            b"5\nhello\r\n",
            b"1\r\nab\r\n",
            b"1\r\na\n\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nbad trailer\n",
        ];
        for input in bad {
            assert_eq!(
                Decoder::default().decode(input, |_| {}),
                Err(MalformedChunk),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_extension = [&b"1;"[..], &[b'x'; MAX_LINE][..], b"\r\n"].concat();
        assert_eq!(
            Decoder::default().decode(&long_extension, |_| {}),
            Err(MalformedChunk)
        );
        // Trailer lines, each short, that never end the section: refused once the section
        // passes MAX_LINE, however the lines are cut.
        let mut endless_trailers = Decoder::default();
        assert_eq!(endless_trailers.decode(b"0\r\n", |_| {}), Ok(3));
        let refused =
            (0..MAX_LINE).find_map(|_| endless_trailers.decode(b"X-T: y\r\n", |_| {}).err());
        assert_eq!(refused, Some(MalformedChunk));
        // A section of MAX_LINE bytes, its blank line included, is whole.
        let line = b"X-T: y\r\n";
        let fill = (MAX_LINE - 2 - 16) / line.len();
        let pad = MAX_LINE - 2 - fill * line.len();
        let section = [
            &b"0\r\n"[..],
            &line.repeat(fill),
            format!("X-P: {}\r\n", "p".repeat(pad - 7)).as_bytes(),
            b"\r\n",
        ]
        .concat();
        assert_eq!(section.len(), 3 + MAX_LINE);
        let mut whole = Decoder::default();
        assert_eq!(whole.decode(&section, |_| {}), Ok(section.len()));
        assert!(whole.is_done());
        let over = [&section[..section.len() - 2], b"X\r\n\r\n"].concat();
        assert_eq!(
            Decoder::default().decode(&over, |_| {}),
            Err(MalformedChunk)
        );
    }
}
