//! How long a request's body is, decided from its head, and where a chunked body ends.
//!
//! The gate passes bodies through untouched; it only needs to know where each request
//! ends so it can stop at the next head (for chunked bodies, the `chunked` crate finds it). Ambiguous framing is refused (RFC 9112 §6.3):
//! two proxies that disagree on where a request ends is how requests get smuggled.

/// The body that follows a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked(chunked::Decoder),
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
                Ok(Framing::Chunked(chunked::Decoder::default()))
            } else {
                Err(FramingError::UnsupportedTransferEncoding)
            }
        }
        (None, None) => Ok(Framing::Length(0)),
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
}
