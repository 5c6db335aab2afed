//! How long a request's body is, decided from its head, and where a chunked body ends.
//!
//! The gate passes bodies through untouched; it only needs to know where each request
//! ends so it can stop at the next head. Ambiguous framing is refused (RFC 9112 §6.3):
//! two proxies that disagree on where a request ends is how requests get smuggled.

/// The body that follows a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked(ChunkedTracker),
}

/// Why a head's framing was refused; each maps to 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("more than one Content-Length")]
    DuplicateLength,
    #[error("invalid Content-Length")]
    InvalidLength,
    #[error("unsupported Transfer-Encoding (only chunked, last)")]
    UnsupportedTransferEncoding,
    #[error("malformed chunked body")]
    MalformedChunk,
}

/// Decides the framing of a request body from its headers.
pub fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, FramingError> {
    let mut length = None;
    let mut transfer_encoding = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(FramingError::DuplicateLength);
            }
            let text = std::str::from_utf8(header.value)
                .map_err(|_| FramingError::InvalidLength)?
                .trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::InvalidLength);
            }
            length = Some(
                text.parse::<u64>()
                    .map_err(|_| FramingError::InvalidLength)?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(FramingError::UnsupportedTransferEncoding);
            }
            transfer_encoding = Some(header.value);
        }
    }
    match (length, transfer_encoding) {
        (Some(_), Some(_)) => Err(FramingError::LengthAndTransferEncoding),
        (Some(n), None) => Ok(Framing::Length(n)),
        (None, Some(te)) => {
            let last = te.rsplit(|&b| b == b',').next().unwrap_or(te);
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked")
                && te.trim_ascii().eq_ignore_ascii_case(b"chunked")
            {
                Ok(Framing::Chunked(ChunkedTracker::default()))
            } else {
                Err(FramingError::UnsupportedTransferEncoding)
            }
        }
        (None, None) => Ok(Framing::Length(0)),
    }
}

/// Follows a chunked body byte by byte to find its end, without changing it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkedTracker {
    state: ChunkState,
    /// The size line or trailer line seen so far (bounded by `MAX_LINE`).
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    #[default]
    SizeLine,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

const MAX_LINE: usize = 4096;

impl ChunkedTracker {
    /// Consumes bytes of the body; returns how many belong to it (fewer than `bytes.len()`
    /// only when the body ended inside `bytes`).
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, FramingError> {
        let mut used = 0;
        while used < bytes.len() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Data(left) => {
                    let take = left.min((bytes.len() - used) as u64);
                    used += take as usize;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::SizeLine | ChunkState::DataEnd | ChunkState::Trailer => {
                    let byte = bytes[used];
                    used += 1;
                    self.line.push(byte);
                    if self.line.len() > MAX_LINE {
                        return Err(FramingError::MalformedChunk);
                    }
                    if byte == b'\n' {
                        self.end_line()?;
                    }
                }
                ChunkState::Done => unreachable!(),
            }
        }
        Ok(used)
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    fn end_line(&mut self) -> Result<(), FramingError> {
        let line = std::mem::take(&mut self.line);
        self.state = match self.state {
            ChunkState::SizeLine => match httparse::parse_chunk_size(&line) {
                Ok(httparse::Status::Complete((_, 0))) => ChunkState::Trailer,
                Ok(httparse::Status::Complete((_, size))) => ChunkState::Data(size),
                _ => return Err(FramingError::MalformedChunk),
            },
            ChunkState::DataEnd if line == b"\r\n" => ChunkState::SizeLine,
            ChunkState::DataEnd => return Err(FramingError::MalformedChunk),
            ChunkState::Trailer if line == b"\r\n" => ChunkState::Done,
            ChunkState::Trailer => ChunkState::Trailer,
            ChunkState::Data(_) | ChunkState::Done => unreachable!("lines end only in line states"),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> Vec<httparse::Header<'static>> {
        list.iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect()
    }

    #[test]
    fn decides_framing() {
        assert_eq!(framing(&headers(&[])), Ok(Framing::Length(0)));
        assert_eq!(
            framing(&headers(&[("Content-Length", "12")])),
            Ok(Framing::Length(12))
        );
        assert!(matches!(
            framing(&headers(&[("transfer-encoding", "chunked")])),
            Ok(Framing::Chunked(_))
        ));
        let refused = [
            (
                vec![("Content-Length", "1"), ("Transfer-Encoding", "chunked")],
                FramingError::LengthAndTransferEncoding,
            ),
            (
                vec![("Content-Length", "1"), ("content-length", "1")],
                FramingError::DuplicateLength,
            ),
            (vec![("Content-Length", "-1")], FramingError::InvalidLength),
            (vec![("Content-Length", "1,1")], FramingError::InvalidLength),
            (
                vec![("Transfer-Encoding", "gzip")],
                FramingError::UnsupportedTransferEncoding,
            ),
            (
                vec![("Transfer-Encoding", "chunked, gzip")],
                FramingError::UnsupportedTransferEncoding,
            ),
        ];
        for (list, expected) in refused {
            assert_eq!(framing(&headers(&list)), Err(expected), "{list:?}");
        }
    }

    #[test]
    fn finds_the_end_of_a_chunked_body_across_splits() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for split in 0..body.len() {
            let mut tracker = ChunkedTracker::default();
            let first = tracker.advance(&body[..split]).unwrap();
            assert_eq!(first, split.min(end));
            let second = tracker.advance(&body[first..]).unwrap();
            assert_eq!(first + second, end, "split at {split}");
            assert!(tracker.is_done());
        }
    }

    #[test]
    fn refuses_malformed_chunks() {
        assert!(ChunkedTracker::default().advance(b"zz\r\n").is_err());
        assert!(ChunkedTracker::default().advance(b"1\r\nab\r\n").is_err());
    }
}
