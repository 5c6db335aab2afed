//! Where an HTTP/1.1 message body ends, decided once from its head (RFC 9112 §6.3), for
//! the requests the host's gate passes to hyper and the responses the plugin reads from
//! its origins.
//!
//! Two parties that disagree on where a message ends is how requests are smuggled and
//! responses split, so both directions go through the same reading of `Content-Length`
//! and `Transfer-Encoding`, and whatever two implementations could read two ways is
//! refused rather than guessed: `Content-Length` with `Transfer-Encoding`, a second
//! `Content-Length`, a length that is not plain digits, a transfer coding other than a
//! single `chunked`. The bodies themselves pass through untouched; [`Framing::take`] only
//! says which bytes belong to the body and, for a chunked one, where its payload lies.

use std::ops::Range;

use http::{Method, StatusCode};

/// How the body that follows a head is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (0: no body).
    Length(u64),
    Chunked(chunked::Decoder),
    /// No framing: a response's body ends when the server closes the connection, an
    /// HTTP/2 request's when the client ends its stream.
    UntilClose,
}

/// Why a head's framing was refused: a 400 for a client's request, a broken head for an
/// origin's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("more than one Content-Length")]
    DuplicateLength,
    #[error("invalid Content-Length")]
    InvalidLength,
    #[error("Transfer-Encoding whose last coding is not chunked")]
    ChunkedNotLast,
    #[error("a transfer coding other than a single chunked")]
    UnsupportedTransferCoding,
}

/// The framing of a request body from its headers; no framing headers means no body.
pub fn request(headers: &[httparse::Header<'_>]) -> Result<Framing, FramingError> {
    Ok(declared(headers)?.unwrap_or(Framing::Length(0)))
}

/// The framing of an HTTP/2 request body, which the stream's END_STREAM delimits: its
/// `Content-Length` when it declares one (h2 checks that the DATA frames add up to it),
/// else [`Framing::UntilClose`], the stream's end. `Transfer-Encoding` is
/// connection-specific, a malformed HTTP/2 request (RFC 9113 §8.2.2): refused.
pub fn stream_request(headers: &[httparse::Header<'_>]) -> Result<Framing, FramingError> {
    match declared(headers)? {
        Some(Framing::Chunked(_)) => Err(FramingError::UnsupportedTransferCoding),
        Some(framing) => Ok(framing),
        None => Ok(Framing::UntilClose),
    }
}

/// The framing of the body of a response with `status` to a `method` request, from its
/// headers; no framing headers means the body runs until the server closes.
///
/// RFC 9112 lets a proxy that sees `Content-Length` with `Transfer-Encoding` go by the
/// coding and drop the length. A gateway refuses instead (the plugin fails over to the
/// next host, as for any broken head): an origin that sends both is broken or is being
/// used to split the response, and a guess that some other hop makes differently is
/// exactly the desync this module exists to prevent.
pub fn response(
    method: &Method,
    status: StatusCode,
    headers: &[httparse::Header<'_>],
) -> Result<Framing, FramingError> {
    // Whatever the headers say: a HEAD response's `Content-Length` is the GET's, and a
    // 304's that of the representation the client already has.
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Length(0));
    }
    Ok(declared(headers)?.unwrap_or(Framing::UntilClose))
}

/// The framing `headers` declare, `None` when they declare none; one reading for both
/// directions.
fn declared(headers: &[httparse::Header<'_>]) -> Result<Option<Framing>, FramingError> {
    let mut length = None;
    let mut transfer_encoding = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(FramingError::DuplicateLength);
            }
            length = Some(content_length(header.value)?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // A second line appends codings (`chunked` twice, or another one).
            if transfer_encoding.is_some() {
                return Err(FramingError::UnsupportedTransferCoding);
            }
            transfer_encoding = Some(header.value);
        }
    }
    match (length, transfer_encoding) {
        (Some(_), Some(_)) => Err(FramingError::LengthAndTransferEncoding),
        (Some(n), None) => Ok(Some(Framing::Length(n))),
        (None, Some(codings)) => chunked_only(codings).map(Some),
        (None, None) => Ok(None),
    }
}

/// A `Content-Length` value: ASCII digits (between optional whitespace) that fit a `u64`;
/// no sign, no list.
fn content_length(value: &[u8]) -> Result<u64, FramingError> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return Err(FramingError::InvalidLength);
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b)
            .to_digit(10)
            .ok_or(FramingError::InvalidLength)?;
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or(FramingError::InvalidLength)
    })
}

/// A `Transfer-Encoding` value, which must be `chunked` alone. With `chunked` not last, a
/// request has no knowable end and a response would run to the close (RFC 9112 §6.3),
/// which hops read differently. A coding before a last `chunked` frames the body, but
/// nobody here undoes it: the plugin would relay gzip bytes as events (it sends no `TE`,
/// so an origin may not use one anyway), and behind the gate hyper would take off only
/// the chunking and pass the coded bytes on as the body. Both are refused.
fn chunked_only(codings: &[u8]) -> Result<Framing, FramingError> {
    let is_chunked = |coding: &[u8]| coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
    if is_chunked(codings) {
        return Ok(Framing::Chunked(chunked::Decoder::default()));
    }
    // `rsplit` yields at least one piece, the whole value when it has no comma.
    let last = codings.rsplit(|&b| b == b',').next().unwrap_or(codings);
    Err(match is_chunked(last) {
        true => FramingError::UnsupportedTransferCoding,
        false => FramingError::ChunkedNotLast,
    })
}

impl Framing {
    /// Takes the bytes of `input` that belong to the body: returns how many (all of
    /// `input` unless the body ends inside it) and calls `payload` with the range of each
    /// run of payload bytes among them (the chunk framing skipped).
    pub fn take(
        &mut self,
        input: &[u8],
        mut payload: impl FnMut(Range<usize>),
    ) -> Result<usize, chunked::MalformedChunk> {
        let n = match self {
            Framing::Chunked(decoder) => return decoder.decode(input, payload),
            Framing::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                *left -= n as u64;
                n
            }
            Framing::UntilClose => input.len(),
        };
        if n > 0 {
            payload(0..n);
        }
        Ok(n)
    }

    /// Whether the whole body has been taken (never, for a body that runs to the close).
    pub fn is_done(&self) -> bool {
        match self {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(decoder) => decoder.is_done(),
            Framing::UntilClose => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(list: &[(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        list.iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect()
    }

    fn response_to_get(status: u16, list: &[(&str, &str)]) -> Result<Framing, FramingError> {
        let status = StatusCode::from_u16(status).unwrap();
        response(&Method::GET, status, &headers(list))
    }

    fn chunked() -> Framing {
        Framing::Chunked(chunked::Decoder::default())
    }

    #[test]
    fn an_http2_request_body_runs_to_the_stream_end_unless_it_declares_a_length() {
        assert_eq!(stream_request(&headers(&[])), Ok(Framing::UntilClose));
        assert_eq!(
            stream_request(&headers(&[("content-length", "5")])),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            stream_request(&headers(&[("transfer-encoding", "chunked")])),
            Err(FramingError::UnsupportedTransferCoding)
        );
        assert_eq!(
            stream_request(&headers(&[
                ("content-length", "1"),
                ("content-length", "1")
            ])),
            Err(FramingError::DuplicateLength)
        );
    }

    #[test]
    fn decides_request_framing() {
        assert_eq!(request(&headers(&[])), Ok(Framing::Length(0)));
        assert_eq!(
            request(&headers(&[("Content-Length", "12")])),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            request(&headers(&[("Content-Length", " 007\t")])),
            Ok(Framing::Length(7))
        );
        assert_eq!(
            request(&headers(&[("transfer-encoding", "chunked")])),
            Ok(chunked())
        );
        assert_eq!(
            request(&headers(&[("Transfer-Encoding", " Chunked ")])),
            Ok(chunked())
        );
        let refused = [
            (
                vec![("Content-Length", "1"), ("Transfer-Encoding", "chunked")],
                FramingError::LengthAndTransferEncoding,
            ),
            (
                vec![("Transfer-Encoding", "chunked"), ("Content-Length", "1")],
                FramingError::LengthAndTransferEncoding,
            ),
            (
                vec![("Content-Length", "1"), ("content-length", "1")],
                FramingError::DuplicateLength,
            ),
            (vec![("Content-Length", "-1")], FramingError::InvalidLength),
            (vec![("Content-Length", "+1")], FramingError::InvalidLength),
            (vec![("Content-Length", "1,1")], FramingError::InvalidLength),
            (vec![("Content-Length", "")], FramingError::InvalidLength),
            (
                vec![("Content-Length", "0x10")],
                FramingError::InvalidLength,
            ),
            (
                vec![("Content-Length", "18446744073709551616")],
                FramingError::InvalidLength,
            ),
            (
                vec![("Transfer-Encoding", "gzip")],
                FramingError::ChunkedNotLast,
            ),
            (
                vec![("Transfer-Encoding", "chunked, gzip")],
                FramingError::ChunkedNotLast,
            ),
            (
                vec![("Transfer-Encoding", "gzip, chunked")],
                FramingError::UnsupportedTransferCoding,
            ),
            (
                vec![("Transfer-Encoding", ", chunked")],
                FramingError::UnsupportedTransferCoding,
            ),
            (
                vec![
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
                FramingError::UnsupportedTransferCoding,
            ),
        ];
        for (list, expected) in refused {
            assert_eq!(request(&headers(&list)), Err(expected), "{list:?}");
        }
        assert_eq!(
            request(&headers(&[("Content-Length", "18446744073709551615")])),
            Ok(Framing::Length(u64::MAX))
        );
    }

    #[test]
    fn decides_response_framing() {
        assert_eq!(response_to_get(200, &[]), Ok(Framing::UntilClose));
        assert_eq!(
            response_to_get(200, &[("Content-Length", "5")]),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            response_to_get(502, &[("Transfer-Encoding", "chunked")]),
            Ok(chunked())
        );
        let refused = [
            (
                vec![("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                FramingError::LengthAndTransferEncoding,
            ),
            (
                vec![("Content-Length", "5"), ("Content-Length", "6")],
                FramingError::DuplicateLength,
            ),
            // Even an equal one: RFC 9110 lets a recipient refuse, and one rule serves both
            // directions.
            (
                vec![("Content-Length", "5"), ("Content-Length", "5")],
                FramingError::DuplicateLength,
            ),
            (
                vec![("Content-Length", "5, 6")],
                FramingError::InvalidLength,
            ),
            (
                vec![("Transfer-Encoding", "gzip, chunked")],
                FramingError::UnsupportedTransferCoding,
            ),
            (
                vec![("Transfer-Encoding", "chunked, gzip")],
                FramingError::ChunkedNotLast,
            ),
        ];
        for (list, expected) in refused {
            assert_eq!(response_to_get(200, &list), Err(expected), "{list:?}");
        }
    }

    #[test]
    fn some_responses_never_have_a_body() {
        let misleading = [("Content-Length", "5"), ("Transfer-Encoding", "chunked")];
        for status in [100, 101, 103, 204, 304] {
            assert_eq!(
                response_to_get(status, &misleading),
                Ok(Framing::Length(0)),
                "{status}"
            );
            assert_eq!(response_to_get(status, &[]), Ok(Framing::Length(0)));
        }
        let head = Method::HEAD;
        assert_eq!(
            response(&head, StatusCode::OK, &headers(&[("Content-Length", "5")])),
            Ok(Framing::Length(0))
        );
        assert_eq!(
            response(&head, StatusCode::OK, &headers(&[])),
            Ok(Framing::Length(0))
        );
        assert_eq!(
            response(&Method::POST, StatusCode::OK, &headers(&[])),
            Ok(Framing::UntilClose)
        );
    }

    /// The body bytes `framing` takes from `input` fed in pieces cut at `cuts`, its
    /// payload, and whether it saw the end.
    fn take_in_pieces(
        mut framing: Framing,
        input: &[u8],
        cuts: &[usize],
    ) -> (usize, Vec<u8>, bool) {
        let mut payload = Vec::new();
        let mut taken = 0;
        let mut from = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            let piece = &input[from..cut];
            taken += framing
                .take(piece, |r| payload.extend_from_slice(&piece[r]))
                .unwrap();
            from = cut;
        }
        (taken, payload, framing.is_done())
    }

    #[test]
    fn takes_each_body_and_no_more() {
        let input = b"hello, next";
        assert_eq!(
            take_in_pieces(Framing::Length(5), input, &[2]),
            (5, b"hello".to_vec(), true)
        );
        assert_eq!(
            take_in_pieces(Framing::Length(0), input, &[]),
            (0, Vec::new(), true)
        );
        assert_eq!(
            take_in_pieces(Framing::Length(u64::MAX), input, &[3]),
            (input.len(), input.to_vec(), false)
        );
        assert_eq!(
            take_in_pieces(Framing::UntilClose, input, &[4, 4]),
            (input.len(), input.to_vec(), false)
        );
        let body = b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\nnext";
        assert_eq!(
            take_in_pieces(chunked(), body, &[5, 12]),
            (body.len() - 4, b"hello".to_vec(), true)
        );
        assert_eq!(
            chunked().take(b"z\r\n", |_| {}),
            Err(chunked::MalformedChunk)
        );
    }
}
