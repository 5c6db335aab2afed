//! The reference reading for the `gate` target: where the host's gate, fed a client's
//! bytes whole, must stop and what it must give hyper, read from the whole input with
//! httparse, `wire::framing` and `Framing::take`. It lives in the library, not the target,
//! so that its cases run as tests without libFuzzer.

use std::sync::OnceLock;

use host::gate::{one_host, path_and_query};
use path_template::Template;

use crate::take_pieces;

/// Small, so that heads over it come cheap.
pub const MAX_HEAD_BYTES: usize = 1024;
/// Few, so that heads over it come cheap too.
pub const MAX_HEADERS: usize = 16;
/// The one plugin route: every GET of a path under `/c/`.
pub const CLAIMED: &str = "/c/*";

pub fn claimed_template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| Template::parse(CLAIMED).unwrap())
}

/// Where the head at the start of `bytes` ends: after the first empty line (LF, or CRLF,
/// after a line's LF, as httparse reads them) that follows the request-line's start. The
/// empty lines before the request-line end nothing: a server ignores them (RFC 9112 §2.2),
/// as httparse does, CRLF or LF alone.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut request_line = 0;
    while let Some(empty) = [&b"\n"[..], b"\r\n"]
        .into_iter()
        .find(|empty| bytes[request_line..].starts_with(empty))
    {
        request_line += empty.len();
    }
    (request_line..bytes.len()).find_map(|i| match &bytes[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// Where a whole-input reading of the client's bytes says the gate stops.
#[derive(Debug, PartialEq, Eq)]
pub enum Expected {
    Eof,
    /// A chunked body that is not one: hyper gets a read error.
    Malformed,
    /// Refused with one of these statuses: a head that breaks the syntax past
    /// `MAX_HEAD_BYTES` is 400 if the gate had it all when it looked, 431 if not yet.
    Status(&'static [u16]),
    Claimed {
        method: String,
        path: String,
        query: String,
        headers: Vec<(String, Vec<u8>)>,
        rest: Vec<u8>,
    },
}

/// The bytes the gate should give hyper, and where it should stop.
pub fn expected(input: &[u8]) -> (Vec<u8>, Expected) {
    let mut given = Vec::new();
    let mut rest = input;
    loop {
        if rest.is_empty() {
            return (given, Expected::Eof);
        }
        // The gate parses once a head's end, or more than MAX_HEAD_BYTES, is buffered;
        // how much more it had buffered depends on its reads, hence the sets of statuses.
        let end = head_end(rest);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let parsed = request.parse(rest);
        let head_len = match (end, parsed) {
            (None, _) if rest.len() <= MAX_HEAD_BYTES => return (given, Expected::Eof),
            (_, Err(httparse::Error::TooManyHeaders)) => return (given, Expected::Status(&[431])),
            (None, Ok(_)) => return (given, Expected::Status(&[431])),
            (None, Err(_)) => return (given, Expected::Status(&[400, 431])),
            (Some(end), Ok(httparse::Status::Complete(_)) | Err(_)) if end > MAX_HEAD_BYTES => {
                return (given, Expected::Status(&[400, 431]))
            }
            (Some(_), Ok(httparse::Status::Complete(len))) => len,
            (Some(_), Err(_)) => return (given, Expected::Status(&[400])),
            (Some(_), Ok(httparse::Status::Partial)) => {
                unreachable!("httparse wants more than a head that ended")
            }
        };
        let Ok(framing) = wire::framing::request(request.headers) else {
            return (given, Expected::Status(&[400]));
        };
        let hosts = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value);
        if one_host(hosts, request.version != Some(0)).is_err() {
            return (given, Expected::Status(&[400]));
        }
        let method = request.method.unwrap_or_default();
        let (path, query) = path_and_query(request.path.unwrap_or_default());
        if method == "GET" && claimed_template().matches(path).is_some() {
            let headers = request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect();
            return (
                given,
                Expected::Claimed {
                    method: method.into(),
                    path: path.into(),
                    query: query.into(),
                    headers,
                    rest: rest[head_len..].to_vec(),
                },
            );
        }
        given.extend_from_slice(&rest[..head_len]);
        let body = &rest[head_len..];
        let taken = take_pieces(framing, &[body]);
        if taken.malformed {
            return (given, Expected::Malformed);
        }
        given.extend_from_slice(&body[..taken.taken]);
        if !taken.done {
            return (given, Expected::Eof);
        }
        rest = &body[taken.taken..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuts_and_payload;

    /// The input the target first failed on ("the gate stopped with Eof; the reference with
    /// Status([400])"): six cuts, so reads of 2 bytes, of the payload `\r\n\r\n`. The
    /// reference took the empty lines before any request-line for a head's end.
    #[test]
    fn empty_lines_before_a_request_line_end_no_head() {
        let input = b"nt-t-ntLnt-H\t\r\n\r\n";
        let (cuts, payload) = cuts_and_payload(input);
        assert_eq!((cuts, payload), (vec![1; 6], &b"\r\n\r\n"[..]));
        assert_eq!(expected(payload), (Vec::new(), Expected::Eof));
        assert_eq!(expected(b"\r\n\n\r\n GET"), (Vec::new(), Expected::Eof));

        let head = b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(head_end(head), Some(head.len()));
        assert_eq!(expected(head), (head.to_vec(), Expected::Eof));
        // A request-line broken by the empty line that ends it is still refused.
        assert_eq!(head_end(b"\r\nGET\n\n"), Some(7));
        assert_eq!(expected(b"\r\nGET\n\n").1, Expected::Status(&[400]));
        // A flood of empty lines is a head over the limit.
        let flood = b"\r\n".repeat(MAX_HEAD_BYTES);
        assert_eq!(expected(&flood).1, Expected::Status(&[431]));
    }
}
