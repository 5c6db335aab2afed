//! One claimed request: connect upstream, send the request, relay the response.
//!
//! Each stream is one task with one fixed buffer (`read_buffer_bytes`). An upstream read
//! fills it; the payload ranges of that read (chunk framing skipped in place by the
//! `chunked` decoder, never copied) go to the client in one `writev`; then the next read.
//! Nothing is allocated or copied per event, no channel or second task sits between the
//! two sockets, and several events that arrive together leave together. The client socket
//! is watched for EOF all along, so a client that leaves closes the upstream at once.
//! Upstream failures become a one-line 502; non-2xx answers are relayed with their status
//! and body.

use std::fmt::Write as _;
use std::io::IoSlice;
use std::ops::Range;

use abi::{Logger, RequestHead};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Route;
use crate::PLUGIN_NAME;

/// Payload ranges written per `writev` call.
const IOV_BATCH: usize = 64;
/// Response headers read from an upstream head; more is a 502.
const MAX_UPSTREAM_HEADERS: usize = 64;

/// Why a relay ended early; only logged.
enum Ended {
    ClientGone,
    Upstream(String),
}

/// How the upstream response body is delimited.
enum Body {
    Chunked(chunked::Decoder),
    Length(u64),
    UntilClose,
}

impl Body {
    /// Adds the payload ranges of `input` (offset by `base`); `true` once the body is whole.
    fn payload(
        &mut self,
        input: &[u8],
        base: usize,
        ranges: &mut Vec<Range<usize>>,
    ) -> Result<bool, Ended> {
        match self {
            Body::Chunked(decoder) => {
                decoder
                    .decode(input, |r| ranges.push(base + r.start..base + r.end))
                    .map_err(|e| Ended::Upstream(e.to_string()))?;
                Ok(decoder.is_done())
            }
            Body::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                if n > 0 {
                    ranges.push(base..base + n);
                }
                *left -= n as u64;
                Ok(*left == 0)
            }
            Body::UntilClose => {
                if !input.is_empty() {
                    ranges.push(base..base + input.len());
                }
                Ok(false)
            }
        }
    }
}

/// The upstream's response head, parsed from the start of the buffer.
struct Response {
    status: StatusCode,
    content_type: Option<String>,
    body: Body,
    /// Where the body starts in the buffer, and how much of it is filled.
    head_len: usize,
    filled: usize,
}

pub async fn serve(mut client: TcpStream, head: RequestHead, route: &Route, logger: Logger) {
    let _ = client.set_nodelay(true);
    let target = upstream_target(route, &head);
    let fail = |reason: String| {
        logger.warn(&format!(
            "[PLUGIN: {PLUGIN_NAME}] {} {}: {reason}",
            head.method, head.path
        ));
        reason
    };
    let connected = tokio::select! {
        connected = TcpStream::connect(route.backend_addr.as_str()) => connected,
        () = client_gone(&mut client) => return,
    };
    let mut upstream = match connected {
        Ok(upstream) => upstream,
        Err(e) => {
            let reason = fail(format!(
                "upstream {}{target} unreachable: {e}",
                route.backend_host
            ));
            return respond_error(&mut client, StatusCode::BAD_GATEWAY, &reason).await;
        }
    };
    let _ = upstream.set_nodelay(true);
    let mut buf = vec![0u8; route.read_buffer_bytes];
    let request = upstream_request(route, &head, &target);
    let response = tokio::select! {
        response = exchange(&mut upstream, &request, &mut buf) => response,
        () = client_gone(&mut client) => return,
    };
    let mut response = match response {
        Ok(response) => response,
        Err(e) => {
            let reason = fail(format!("upstream {}{target}: {e}", route.backend_host));
            return respond_error(&mut client, StatusCode::BAD_GATEWAY, &reason).await;
        }
    };
    let client_head = if response.status.is_success() {
        event_stream_head()
    } else {
        passthrough_head(response.status, response.content_type.as_deref())
    };
    if let Err(Ended::Upstream(e)) = pump(
        &mut client,
        &mut upstream,
        &mut buf,
        &mut response,
        &client_head,
    )
    .await
    {
        fail(format!("upstream stream broke: {e}"));
    }
    let _ = client.shutdown().await;
}

/// The upstream path and query: the route's pattern with the captured params, plus the
/// client's query string.
fn upstream_target(route: &Route, head: &RequestHead) -> String {
    let params = route.template.matches(&head.path).unwrap_or_default();
    let mut target = path_template::substitute(&route.backend_url_pattern, &params);
    if !head.query.is_empty() {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(&head.query);
    }
    target
}

fn upstream_request(route: &Route, head: &RequestHead, target: &str) -> Vec<u8> {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\n",
        route.backend_authority
    )
    .into_bytes();
    for name in &route.forward_headers {
        for header in head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
        {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(&header.value);
            request.extend_from_slice(b"\r\n");
        }
    }
    // One stream per connection: nothing to pool, and the close ends an unframed body.
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    request
}

/// Sends the request and reads the response head into `buf`.
async fn exchange(
    upstream: &mut TcpStream,
    request: &[u8],
    buf: &mut [u8],
) -> Result<Response, String> {
    upstream
        .write_all(request)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(format!(
                "response head larger than read_buffer_bytes ({})",
                buf.len()
            ));
        }
        let n = upstream
            .read(&mut buf[filled..])
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err("closed the connection before answering".into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_UPSTREAM_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("invalid response head: {e}")),
        };
        let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
            .map_err(|e| format!("invalid status: {e}"))?;
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Body::Length(0)
        } else if header("transfer-encoding")
            .is_some_and(|te| te.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        {
            Body::Chunked(chunked::Decoder::default())
        } else if let Some(length) = header("content-length") {
            let length = std::str::from_utf8(length)
                .ok()
                .and_then(|l| l.trim().parse().ok());
            Body::Length(length.ok_or("invalid Content-Length")?)
        } else {
            Body::UntilClose
        };
        let content_type = header("content-type").map(|v| String::from_utf8_lossy(v).into_owned());
        return Ok(Response {
            status,
            content_type,
            body,
            head_len,
            filled,
        });
    }
}

/// Writes the client head, then each upstream read's payload as it arrives.
async fn pump(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    buf: &mut [u8],
    response: &mut Response,
    client_head: &str,
) -> Result<(), Ended> {
    let (mut client_reader, mut client_writer) = client.split();
    client_writer
        .write_all(client_head.as_bytes())
        .await
        .map_err(|_| Ended::ClientGone)?;
    let mut ranges = Vec::with_capacity(IOV_BATCH);
    let (mut start, mut end) = (response.head_len, response.filled);
    // What the client sends after its request is ignored; reading it is how EOF is seen.
    let mut discard = [0u8; 64];
    loop {
        ranges.clear();
        let whole = response
            .body
            .payload(&buf[start..end], start, &mut ranges)?;
        write_ranges(&mut client_writer, buf, &ranges)
            .await
            .map_err(|_| Ended::ClientGone)?;
        if whole {
            return Ok(());
        }
        let n = loop {
            tokio::select! {
                read = upstream.read(buf) => break read.map_err(|e| Ended::Upstream(e.to_string()))?,
                read = client_reader.read(&mut discard) => if matches!(read, Ok(0) | Err(_)) {
                    return Err(Ended::ClientGone);
                },
            }
        };
        if n == 0 {
            return match response.body {
                Body::UntilClose => Ok(()),
                _ => Err(Ended::Upstream("closed in the middle of the body".into())),
            };
        }
        (start, end) = (0, n);
    }
}

/// Writes the given ranges of `buf`, up to [`IOV_BATCH`] per `writev`.
async fn write_ranges(
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &[u8],
    ranges: &[Range<usize>],
) -> std::io::Result<()> {
    for group in ranges.chunks(IOV_BATCH) {
        let mut iov = [IoSlice::new(&[]); IOV_BATCH];
        for (slot, range) in iov.iter_mut().zip(group) {
            *slot = IoSlice::new(&buf[range.clone()]);
        }
        let mut slices = &mut iov[..group.len()];
        while !slices.is_empty() {
            let n = writer.write_vectored(slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
    }
    Ok(())
}

/// Completes when the client closes its side or the socket fails.
async fn client_gone(client: &mut (impl AsyncRead + Unpin)) {
    let mut discard = [0u8; 64];
    while let Ok(n) = client.read(&mut discard).await {
        if n == 0 {
            return;
        }
    }
}

fn event_stream_head() -> String {
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
     X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
        .to_owned()
}

fn passthrough_head(status: StatusCode, content_type: Option<&str>) -> String {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(content_type) = content_type {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

async fn respond_error(client: &mut TcpStream, status: StatusCode, reason: &str) {
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}
