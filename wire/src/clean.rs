//! What may be written into an upstream request head, checked in one place for the host's
//! pipeline and the plugins alike.
//!
//! Every value a client controls and a gateway copies upstream (a header value, the
//! `Last-Event-ID`, the query string, a path parameter) passes here first. A CR or LF
//! would end a header line early and let a client write headers, or a whole second
//! request, onto a connection the gateway opened (and, for a shared fan-out upstream,
//! that every later client then reads from); a NUL or other control byte is how parsers
//! are made to disagree. Values are checked as they arrive and, where the gateway or an
//! origin decodes them, percent-decoded too: `%0d%0a` is refused like CR LF.
//!
//! Path parameters have one more rule: `.`, `..`, or an encoded `/` or `\` would let an
//! origin that normalises paths be reached outside the route's `backend_url_pattern`.

/// Why a value may not go upstream; each is a 400 to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unclean {
    #[error("a control character in the header {0}")]
    HeaderValue(&'static str),
    #[error("a control character in Last-Event-ID")]
    LastEventId,
    #[error("a control character in the query string")]
    Query,
    #[error("a control character in a path parameter")]
    PathParamControl,
    #[error("a path parameter that is '.' or '..'")]
    PathParamDots,
    #[error("an encoded '/' or '\\' in a path parameter")]
    PathParamSeparator,
}

/// A byte no header value, id, query or path may hold: C0 controls but HTAB, and DEL.
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// The byte a `%XY` escape stands for.
fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    Some(digit(high)? << 4 | digit(low)?)
}

/// Calls `each` with every byte of `text` as percent-decoding gives it (an escape that is
/// not two hex digits stands for itself, as in WHATWG URL parsing); `true` if any call did.
fn any_decoded(text: &[u8], mut each: impl FnMut(u8) -> bool) -> bool {
    let mut i = 0;
    while i < text.len() {
        let decoded = match text.get(i..i + 3) {
            Some([b'%', high, low]) => hex_pair(*high, *low).inspect(|_| i += 2),
            _ => None,
        };
        if each(decoded.unwrap_or(text[i])) {
            return true;
        }
        i += 1;
    }
    false
}

/// A header value as received (header values are not percent-decoded by anyone).
pub fn header_value(name: &'static str, value: &[u8]) -> Result<(), Unclean> {
    match value.iter().any(|&b| is_control(b)) {
        true => Err(Unclean::HeaderValue(name)),
        false => Ok(()),
    }
}

/// A `Last-Event-ID`, from the header or already decoded from `?lastEventId=`.
pub fn last_event_id(id: &str) -> Result<(), Unclean> {
    match id.bytes().any(is_control) {
        true => Err(Unclean::LastEventId),
        false => Ok(()),
    }
}

/// A query string, raw (without the `?`): refused if it holds a control byte, or an
/// escape of one, since the origin decodes it.
pub fn query(query: &str) -> Result<(), Unclean> {
    match any_decoded(query.as_bytes(), is_control) {
        true => Err(Unclean::Query),
        false => Ok(()),
    }
}

/// A captured path parameter, raw, before it is substituted into a backend path.
pub fn path_param(param: &str) -> Result<(), Unclean> {
    let bytes = param.as_bytes();
    if any_decoded(bytes, is_control) {
        return Err(Unclean::PathParamControl);
    }
    if bytes.contains(&b'\\') || any_decoded(bytes, |b| b == b'/' || b == b'\\') {
        return Err(Unclean::PathParamSeparator);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    any_decoded(bytes, |b| {
        decoded.push(b);
        false
    });
    if decoded == b"." || decoded == b".." {
        return Err(Unclean::PathParamDots);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_refused_raw_and_encoded() {
        assert_eq!(header_value("Accept", b"text/event-stream"), Ok(()));
        assert_eq!(header_value("Accept", b"a\tb \x80\xff"), Ok(()));
        for bad in [&b"a\r\nb"[..], b"a\nb", b"\0", b"\x7f", b"\x1b[0m"] {
            assert_eq!(
                header_value("Accept", bad),
                Err(Unclean::HeaderValue("Accept"))
            );
        }
        assert_eq!(last_event_id("4:7,1:2"), Ok(()));
        assert_eq!(
            last_event_id("7\r\nAuthorization: x"),
            Err(Unclean::LastEventId)
        );
        assert_eq!(last_event_id("7\0"), Err(Unclean::LastEventId));
        assert_eq!(query("a=1&b=%20x%zz%4"), Ok(()));
        for bad in ["a=%0d%0aX", "a=%0A", "a=%00", "a=%7F", "a=%1b"] {
            assert_eq!(query(bad), Err(Unclean::Query), "{bad}");
        }
    }

    #[test]
    fn path_params_stay_one_segment() {
        for good in ["abc", "a.b", "...", "%41", "a%20b", "%2e%2e%2e", "%"] {
            assert_eq!(path_param(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            (".", Unclean::PathParamDots),
            ("..", Unclean::PathParamDots),
            ("%2e%2E", Unclean::PathParamDots),
            (".%2e", Unclean::PathParamDots),
            ("a%2Fb", Unclean::PathParamSeparator),
            ("a%2fb", Unclean::PathParamSeparator),
            ("a%5cb", Unclean::PathParamSeparator),
            ("a\\b", Unclean::PathParamSeparator),
            ("a%0d%0a", Unclean::PathParamControl),
            ("a%00", Unclean::PathParamControl),
        ] {
            assert_eq!(path_param(bad), Err(why), "{bad}");
        }
    }
}
