//! RFC 9112 §6 message framing read from the text, with the gateway's refusals (anything
//! two implementations could read two ways), as an oracle for `wire::framing`.
//!
//! Where several rules are broken at once, which one `wire::framing` names depends on the
//! order of the headers; the oracle gives every rule that is broken, and the name given
//! must be one of them.

use http::{Method, StatusCode};
use wire::framing::{Framing, FramingError};

/// What the headers declare, when they are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Nothing,
    Length(u64),
    Chunked,
}

/// The framing `headers` declare, or every rule they break.
pub fn declared(headers: &[(&str, &[u8])]) -> Result<Declared, Vec<FramingError>> {
    let named = |name: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    };
    let lengths = named("Content-Length");
    let codings = named("Transfer-Encoding");
    let mut broken = Vec::new();
    if lengths.len() > 1 {
        broken.push(FramingError::DuplicateLength);
    }
    let parsed: Vec<Option<u64>> = lengths.iter().map(|v| length(v)).collect();
    if parsed.contains(&None) {
        broken.push(FramingError::InvalidLength);
    }
    if !lengths.is_empty() && !codings.is_empty() {
        broken.push(FramingError::LengthAndTransferEncoding);
    }
    if codings.len() > 1 {
        broken.push(FramingError::UnsupportedTransferCoding);
    }
    if let Some(value) = codings.first() {
        // A list of codings separated by commas with optional whitespace (RFC 9110 §5.6.1).
        let list: Vec<&[u8]> = value.split(|&b| b == b',').map(ows_trimmed).collect();
        let last = list.last().copied().unwrap_or_default();
        if !last.eq_ignore_ascii_case(b"chunked") {
            broken.push(FramingError::ChunkedNotLast);
        } else if list.len() > 1 {
            broken.push(FramingError::UnsupportedTransferCoding);
        }
    }
    if !broken.is_empty() {
        return Err(broken);
    }
    Ok(match (parsed.first(), codings.is_empty()) {
        (Some(&Some(n)), _) => Declared::Length(n),
        (_, false) => Declared::Chunked,
        _ => Declared::Nothing,
    })
}

/// `Content-Length = 1*DIGIT`, between optional whitespace (SP, HTAB), fitting a `u64`.
fn length(value: &[u8]) -> Option<u64> {
    let digits = ows_trimmed(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn ows_trimmed(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Whether `framing` is what the oracle's `expected` reading says, with `absent` the
/// framing of a message that declares none (no body for a request, to the close for a
/// response).
pub fn check(
    got: &Result<Framing, FramingError>,
    expected: &Result<Declared, Vec<FramingError>>,
    absent: &Framing,
) {
    match (got, expected) {
        (Ok(Framing::Length(n)), Ok(Declared::Length(m))) if n == m => {}
        (Ok(Framing::Chunked(decoder)), Ok(Declared::Chunked)) => {
            assert_eq!(*decoder, chunked::Decoder::default())
        }
        (Ok(framing), Ok(Declared::Nothing)) if framing == absent => {}
        (Err(e), Err(broken)) if broken.contains(e) => {}
        _ => panic!("framing {got:?}, the reference reads {expected:?}"),
    }
}

/// Whether a response to `method` with `status` has no body whatever its headers say
/// (RFC 9112 §6.3 rules 1 and 2).
pub fn response_has_no_body(method: &Method, status: StatusCode) -> bool {
    method == Method::HEAD
        || (100..200).contains(&status.as_u16())
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}
