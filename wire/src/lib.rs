//! HTTP/1.1 bytes written or read on raw sockets, by the host (answers it gives on a
//! connection hyper no longer drives) and by plugins (which own their connections): one
//! copy of each rule, on both sides of the ABI, including what may go upstream ([`clean`]),
//! where a request or response body ends ([`framing`]), an origin's response head
//! ([`response_head`]) and the lingering close after a last answer ([`linger`]).

#![forbid(unsafe_code)]

pub mod clean;
pub mod framing;
pub mod linger;
pub mod response_head;

use http::StatusCode;

/// The interim answer to `Expect: 100-continue` over HTTP/1.1: the plugin writes it on a
/// socket it owns, the host on a TLS connection it keeps.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends the header line `name: value` and its CRLF.
pub fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A close-delimited response head: the status line, `headers` (CRLF-terminated lines),
/// `Connection: close` and the blank line.
pub fn close_delimited_head(status: StatusCode, headers: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    head.extend_from_slice(headers);
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    head
}

/// A whole plain-text response, then close: `headers` go after the content headers.
pub fn plain_text_response(status: StatusCode, headers: &[u8], body: &str) -> Vec<u8> {
    let mut lines = Vec::with_capacity(64 + headers.len());
    header_line(&mut lines, "Content-Type", b"text/plain; charset=utf-8");
    header_line(
        &mut lines,
        "Content-Length",
        body.len().to_string().as_bytes(),
    );
    lines.extend_from_slice(headers);
    let mut response = close_delimited_head(status, &lines);
    response.extend_from_slice(body.as_bytes());
    response
}

/// The value of the cookie `name` in a `Cookie` header value.
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        pair.trim_ascii()
            .strip_prefix(name.as_bytes())?
            .strip_prefix(b"=")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_response_bytes() {
        let mut extra = Vec::new();
        header_line(&mut extra, "Retry-After", b"5");
        let response = plain_text_response(StatusCode::SERVICE_UNAVAILABLE, &extra, "busy\n");
        assert_eq!(
            String::from_utf8(response).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 5\r\nRetry-After: 5\r\nConnection: close\r\n\r\nbusy\n"
        );
    }

    #[test]
    fn cookies_by_name() {
        let header = b"theme=dark; session=abc=; sessionx=no";
        assert_eq!(cookie(header, "session"), Some(&b"abc="[..]));
        assert_eq!(cookie(header, "theme"), Some(&b"dark"[..]));
        assert_eq!(cookie(header, "sess"), None);
        assert_eq!(cookie(b"", "session"), None);
    }
}
