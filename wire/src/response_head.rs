//! An origin's response head, parsed from the bytes read so far: the status, the content
//! type and how the body is framed ([`crate::framing`], the rules the gate applies to
//! clients), so that whoever reads an origin's answer only does the I/O.
//!
//! A plain function over bytes, no state: the caller reads more and calls again until the
//! head is whole (the head is bounded by the caller's buffer, the header count here).

use http::{Method, StatusCode};

use crate::framing::{self, Framing, FramingError};

/// Response headers read from one head; more is [`HeadError::TooManyHeaders`].
pub const MAX_HEADERS: usize = 64;

/// The parts of a response head a gateway acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The `Content-Type` value, if any (not UTF-8 bytes replaced).
    pub content_type: Option<String>,
    pub framing: Framing,
    /// The head's length with its blank line: the body starts there.
    pub len: usize,
}

/// What the bytes read so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not the whole head yet: read more.
    Partial,
    Complete(ResponseHead),
}

/// Why a response head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("invalid response head: {0}")]
    Invalid(httparse::Error),
    #[error("more than {MAX_HEADERS} response headers")]
    TooManyHeaders,
    #[error("invalid status {0}")]
    Status(u16),
    #[error(transparent)]
    Framing(#[from] FramingError),
}

/// Parses the head at the start of `bytes`, the answer to a `method` request.
pub fn parse(bytes: &[u8], method: &Method) -> Result<Parsed, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Invalid(e)),
    };
    // httparse reads three digits, so 000-099 is the only way to be out of range.
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Status(code))?;
    let framing = framing::response(method, status, response.headers)?;
    let content_type = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Ok(Parsed::Complete(ResponseHead {
        status,
        content_type,
        framing,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(bytes: &[u8]) -> Result<Parsed, HeadError> {
        parse(bytes, &Method::GET)
    }

    /// `head` parsed whole, after checking that every strict prefix of it is `Partial`
    /// and that body bytes after it change nothing.
    fn parsed_by_prefixes(head: &[u8]) -> Result<Parsed, HeadError> {
        for end in 0..head.len() {
            assert_eq!(get(&head[..end]), Ok(Parsed::Partial), "{end} bytes");
        }
        let whole = get(head);
        let mut with_body = head.to_vec();
        with_body.extend_from_slice(b"0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(get(&with_body), whole);
        whole
    }

    fn complete(
        status: u16,
        content_type: Option<&str>,
        framing: Framing,
        len: usize,
    ) -> Result<Parsed, HeadError> {
        Ok(Parsed::Complete(ResponseHead {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: content_type.map(str::to_owned),
            framing,
            len,
        }))
    }

    #[test]
    fn heads_whole_and_in_prefixes() {
        let sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parsed_by_prefixes(sse),
            complete(
                200,
                Some("text/event-stream"),
                Framing::Chunked(chunked::Decoder::default()),
                sse.len()
            )
        );
        let refused = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 17\r\n\r\n";
        assert_eq!(
            parsed_by_prefixes(refused),
            complete(403, None, Framing::Length(17), refused.len())
        );
        let bare = b"HTTP/1.0 200 \r\n\r\n";
        assert_eq!(
            parsed_by_prefixes(bare),
            complete(200, None, Framing::UntilClose, bare.len())
        );
        let no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(
            parsed_by_prefixes(no_content),
            complete(204, None, Framing::Length(0), no_content.len())
        );
        let to_head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(
            parse(to_head, &Method::HEAD),
            complete(200, None, Framing::Length(0), to_head.len())
        );
    }

    #[test]
    fn refused_heads() {
        assert_eq!(
            get(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Framing(FramingError::LengthAndTransferEncoding))
        );
        assert_eq!(
            get(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(HeadError::Framing(FramingError::InvalidLength))
        );
        assert_eq!(get(b"HTTP/1.1 099 Odd\r\n\r\n"), Err(HeadError::Status(99)));
        assert_eq!(
            get(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(HeadError::Invalid(httparse::Error::Status))
        );
        assert_eq!(
            get(b"ICY 200 OK\r\n\r\n"),
            Err(HeadError::Invalid(httparse::Error::Version))
        );
        assert_eq!(
            get(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
            Err(HeadError::Invalid(httparse::Error::HeaderName))
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(get(&many), Err(HeadError::TooManyHeaders));
    }

    /// A valid head: a status line and up to 12 header lines, some of them framing.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        let header = prop_oneof![
            "[A-Za-z][A-Za-z0-9-]{0,12}: [ -~]{0,20}".prop_map(String::into_bytes),
            Just(b"Content-Type: text/event-stream".to_vec()),
            Just(b"Transfer-Encoding: chunked".to_vec()),
            (0u64..100_000).prop_map(|n| format!("Content-Length: {n}").into_bytes()),
        ];
        (
            100u16..600,
            "[ -~]{0,16}",
            proptest::collection::vec(header, 0..12),
        )
            .prop_map(|(status, reason, headers)| {
                let mut head = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
                for line in headers {
                    head.extend_from_slice(&line);
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"\r\n");
                head
            })
    }

    proptest! {
        #[test]
        fn any_prefix_is_partial_and_the_whole_head_is_one_answer(head in head()) {
            let whole = parsed_by_prefixes(&head);
            // A head that parses is whole at its end; one refused is refused for its framing.
            match whole {
                Ok(Parsed::Complete(parsed)) => prop_assert_eq!(parsed.len, head.len()),
                Ok(Parsed::Partial) => prop_assert!(false, "a whole head read as partial"),
                Err(e) => prop_assert!(matches!(e, HeadError::Framing(_)), "{e}"),
            }
        }
    }
}
