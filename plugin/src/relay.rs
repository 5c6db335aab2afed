//! One claimed request: connect upstream, send the request, relay the response.
//!
//! Each stream is one task. When the upstream is readable it takes a pooled buffer
//! (`read_buffer_bytes`), reads, and hands the payload ranges of that read (chunk framing
//! skipped in place by the `chunked` decoder, never copied) to the client in one `writev`;
//! then the buffer goes back to the pool. Idle streams hold no buffer, nothing is allocated
//! or copied per event, no channel or second task sits between the two sockets, and
//! several events that arrive together leave together. The client socket
//! is watched for EOF all along, so a client that leaves closes the upstream at once.
//! Upstream failures become a one-line 502; non-2xx answers are relayed with their status
//! and body.

use std::fmt::Write as _;
use std::io::IoSlice;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use abi::{Logger, RequestHead};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Route;
use crate::pool::{Buffer, BufferPool};
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

pub async fn serve(
    mut client: TcpStream,
    head: RequestHead,
    route: &Route,
    pool: &Arc<BufferPool>,
    logger: Logger,
) {
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
    let mut buf = pool.take();
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
    // A stream lives for hours: keep nothing in its task that it no longer needs.
    drop((request, target));
    let client_head = if response.status.is_success() {
        event_stream_head()
    } else {
        passthrough_head(response.status, response.content_type.as_deref())
    };
    if let Err(Ended::Upstream(e)) = pump(
        &mut client,
        &upstream,
        pool,
        buf,
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

/// Writes the client head and the body bytes read with it, then each upstream read's
/// payload as it arrives, holding a buffer only from a read until its write is done.
async fn pump(
    client: &mut TcpStream,
    upstream: &TcpStream,
    pool: &Arc<BufferPool>,
    first: Buffer,
    response: &mut Response,
    client_head: &str,
) -> Result<(), Ended> {
    let (mut client_reader, mut client_writer) = client.split();
    client_writer
        .write_all(client_head.as_bytes())
        .await
        .map_err(|_| Ended::ClientGone)?;
    // Grows to the most chunks one read has held, once; idle streams keep it empty.
    let mut ranges = Vec::new();
    let mut read: Option<(Buffer, Range<usize>)> =
        Some((first, response.head_len..response.filled));
    loop {
        if let Some((buf, filled)) = read.take() {
            ranges.clear();
            let whole = response
                .body
                .payload(&buf[filled.clone()], filled.start, &mut ranges)?;
            write_ranges(&mut client_writer, &buf, &ranges)
                .await
                .map_err(|_| Ended::ClientGone)?;
            if whole {
                return Ok(());
            }
        }
        // What the client sends after its request is ignored; reading it is how EOF is seen.
        tokio::select! {
            ready = upstream.readable() => ready.map_err(|e| Ended::Upstream(e.to_string()))?,
            () = client_gone(&mut client_reader) => return Err(Ended::ClientGone),
        }
        let mut buf = pool.take();
        match upstream.try_read(&mut buf) {
            Ok(0) => {
                return match response.body {
                    Body::UntilClose => Ok(()),
                    _ => Err(Ended::Upstream("closed in the middle of the body".into())),
                }
            }
            Ok(n) => read = Some((buf, 0..n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Ended::Upstream(e.to_string())),
        }
    }
}

/// Writes the given ranges of `buf`, up to [`IOV_BATCH`] per `writev`. The iovec is built
/// on the stack inside each poll, so an idle stream's future keeps only two indices.
async fn write_ranges(
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &[u8],
    ranges: &[Range<usize>],
) -> std::io::Result<()> {
    // The next range to write, and how much of it is already written.
    let (mut next, mut offset) = (0, 0);
    while next < ranges.len() {
        let written = std::future::poll_fn(|cx| {
            let mut iov = [IoSlice::new(&[]); IOV_BATCH];
            let group = &ranges[next..ranges.len().min(next + IOV_BATCH)];
            for (i, (slot, range)) in iov.iter_mut().zip(group).enumerate() {
                let start = if i == 0 {
                    range.start + offset
                } else {
                    range.start
                };
                *slot = IoSlice::new(&buf[start..range.end]);
            }
            Pin::new(&mut *writer).poll_write_vectored(cx, &iov[..group.len()])
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = written;
        while left > 0 {
            let range_left = ranges[next].len() - offset;
            if left < range_left {
                offset += left;
                left = 0;
            } else {
                left -= range_left;
                (next, offset) = (next + 1, 0);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll};

    /// Takes at most 3 bytes per write, to exercise partial vectored writes.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = data.len().min(3);
            self.0.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_inside_and_across_ranges() {
        let buf: Vec<u8> = (0..=255u8).collect();
        // More ranges than one writev takes, of uneven lengths, with gaps between them.
        let ranges: Vec<Range<usize>> = (0..100).map(|i| i * 2..i * 2 + 1 + i % 2).collect();
        let expected: Vec<u8> = ranges
            .iter()
            .flat_map(|r| buf[r.clone()].to_vec())
            .collect();
        let mut writer = Trickle(Vec::new());
        write_ranges(&mut writer, &buf, &ranges).await.unwrap();
        assert_eq!(writer.0, expected);
    }
}
