//! The client's side of a stream, as a [`Session`](super::Session) uses it: a transport
//! trait rather than a `TcpStream`, so that a client reached over TLS or HTTP/2 (the host
//! keeps that connection and lends the plugin one stream of it) can be handed to the same
//! session without touching the sources that feed it.
//!
//! Why each method exists, and what it means on plain TCP (the only transport so far) and
//! on a bridged HTTP/2 stream (the next one):
//! - [`ClientTransport::write_head`]: a response head is not body bytes on every transport.
//!   TCP writes it as HTTP/1.1 bytes; a bridged stream sends it structured (an HTTP/2
//!   HEADERS frame), which is why [`ResponseHead`] is fields, not bytes.
//! - `AsyncWrite` (vectored): the events, written as they are (the pump's `writev` of the
//!   payload ranges of one read), and `poll_shutdown` to end the body cleanly (TCP: FIN;
//!   HTTP/2: END_STREAM).
//! - [`ClientTransport::write_continue`]: `100 Continue` for a client that waits for it
//!   before its body (on a bridged stream the host sends it at the body's first read).
//! - `AsyncRead`: the request body past what the host read with the head, read before the
//!   stream starts (TCP: from the socket; HTTP/2: its DATA frames), and after a refusal
//!   what the client still sends (`wire::linger`; HTTP/2: nothing, the stream is over).
//! - [`ClientTransport::poll_closed`]: how the session learns that the client left while
//!   nothing is being written. TCP reads to EOF (what the client sends after its request
//!   is ignored); on HTTP/2 a GET's request body ends at once, so "read returned 0" does
//!   not mean the client left, and the bridged stream waits for a reset instead. A poll,
//!   not a future: the session polls it only once the waker it last gave was woken (see
//!   `crate::watch`), not at every wake of a busy stream.
//! - [`ClientTransport::abort`]: a client that stopped taking its stream is dropped
//!   without waiting behind the bytes it left unread (TCP: `SO_LINGER` 0 then close, a
//!   reset; HTTP/2: RST_STREAM).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Payload parts written per `writev` call.
pub const IOV_BATCH: usize = 64;

/// A response head as the plugin answers: structured, so that each transport frames it
/// its own way. Framing headers are the transport's (on TCP every answer is
/// close-delimited: `Connection: close`).
pub struct ResponseHead<'a> {
    pub status: StatusCode,
    /// The plugin's own headers: the content type, cache control, `Retry-After`...
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The host's (CORS, for instance): every response the plugin writes carries them.
    pub host_headers: &'a [abi::Header],
}

/// A client's side of one stream. See the module's header for why each method exists.
pub trait ClientTransport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Writes the response head, once, then `body` (all of a short answer's body; empty
    /// for a stream, whose body follows through `AsyncWrite`), in one write where the
    /// transport can.
    fn write_head(
        &mut self,
        head: &ResponseHead<'_>,
        body: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Tells a client that waits (`Expect: 100-continue`) to send its body, once its
    /// declared length fits (TCP: the interim `100 Continue`; a bridged stream: nothing,
    /// the host sends the interim itself at the body's first read).
    fn write_continue(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Ready once the client is gone; when pending, `cx`'s waker is woken when that may
    /// have changed (and not only then: a spurious wake is allowed).
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// Ends the response at once, dropping what the client has not taken.
    fn abort(self);
}

impl ClientTransport for TcpStream {
    async fn write_head(&mut self, head: &ResponseHead<'_>, body: &[u8]) -> io::Result<()> {
        self.write_all(&http1(head, body)).await
    }

    async fn write_continue(&mut self) -> io::Result<()> {
        self.write_all(wire::CONTINUE).await
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        poll_read_to_end(Pin::new(self), cx)
    }

    fn abort(self) {
        let _ = socket2::SockRef::from(&self).set_linger(Some(Duration::ZERO));
    }
}

/// Ready at `io`'s end (EOF or an error); what it reads before is dropped.
pub fn poll_read_to_end(mut io: Pin<&mut impl AsyncRead>, cx: &mut Context<'_>) -> Poll<()> {
    let mut discard = [0u8; 64];
    loop {
        let mut read = ReadBuf::new(&mut discard);
        match io.as_mut().poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
            Poll::Ready(_) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// `head` and `body` as HTTP/1.1 bytes, close-delimited: the plugin's headers, then the
/// host's.
pub fn http1(head: &ResponseHead<'_>, body: &[u8]) -> Vec<u8> {
    let mut lines = Vec::with_capacity(128);
    for (name, value) in head.headers {
        wire::header_line(&mut lines, name, value);
    }
    for header in head.host_headers {
        wire::header_line(&mut lines, &header.name, &header.value);
    }
    let mut bytes = wire::close_delimited_head(head.status, &lines);
    bytes.extend_from_slice(body);
    bytes
}

/// Writes `parts` (each seen as bytes through `bytes`), up to [`IOV_BATCH`] per `writev`
/// (one part alone: a plain `write`). The iovec is built on the stack inside each poll, so
/// an idle stream's future keeps only two indices.
pub async fn write_parts<'a, T>(
    writer: &mut (impl AsyncWrite + Unpin),
    parts: &'a [T],
    bytes: impl Fn(&'a T) -> &'a [u8],
) -> io::Result<()> {
    // The next part to write, and how much of it is already written.
    let (mut next, mut offset) = (0, 0);
    while next < parts.len() {
        let written = std::future::poll_fn(|cx| {
            let group = &parts[next..parts.len().min(next + IOV_BATCH)];
            if let [part] = group {
                // One contiguous run (a paced stream's one event): a plain write, without
                // an iovec array to fill.
                return Pin::new(&mut *writer).poll_write(cx, &bytes(part)[offset..]);
            }
            let mut iov = [IoSlice::new(&[]); IOV_BATCH];
            for (i, (slot, part)) in iov.iter_mut().zip(group).enumerate() {
                let skip = if i == 0 { offset } else { 0 };
                *slot = IoSlice::new(&bytes(part)[skip..]);
            }
            Pin::new(&mut *writer).poll_write_vectored(cx, &iov[..group.len()])
        })
        .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = written;
        while left > 0 {
            let part_left = bytes(&parts[next]).len() - offset;
            if left < part_left {
                offset += left;
                left = 0;
            } else {
                left -= part_left;
                (next, offset) = (next + 1, 0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Takes at most 3 bytes per write, to exercise partial vectored writes.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = data.len().min(3);
            self.0.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_inside_and_across_ranges() {
        let buf: Vec<u8> = (0..=255u8).collect();
        // More ranges than one writev takes, of uneven lengths, with gaps between them.
        let ranges: Vec<std::ops::Range<usize>> =
            (0..100).map(|i| i * 2..i * 2 + 1 + i % 2).collect();
        let expected: Vec<u8> = ranges
            .iter()
            .flat_map(|r| buf[r.clone()].to_vec())
            .collect();
        let mut writer = Trickle(Vec::new());
        write_parts(&mut writer, &ranges, |r| &buf[r.clone()])
            .await
            .unwrap();
        assert_eq!(writer.0, expected);
    }

    #[test]
    fn a_head_is_the_plugin_s_headers_then_the_host_s_close_delimited() {
        let host = [abi::Header {
            name: "Access-Control-Allow-Origin".into(),
            value: b"*".to_vec().into(),
        }];
        let head = ResponseHead {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers: &[("Content-Length", b"5"), ("Retry-After", b"5")],
            host_headers: &host,
        };
        assert_eq!(
            String::from_utf8(http1(&head, b"busy\n")).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nRetry-After: 5\r\n\
             Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\nbusy\n"
        );
    }

    #[tokio::test]
    async fn over_tcp_closed_sees_the_client_leave_and_abort_resets_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client
            .write_all(b"ignored after the request")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        tokio::time::timeout(
            testkit::STEP,
            std::future::poll_fn(|cx| server.poll_closed(cx)),
        )
        .await
        .expect("the client's FIN is seen");

        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        server.write_all(b"unread").await.unwrap();
        server.abort();
        let mut buf = [0u8; 16];
        let mut read = client.read(&mut buf).await;
        if let Ok(n) = read {
            // The bytes may arrive before the reset does.
            assert!(n > 0, "a reset, not a clean end");
            read = client.read(&mut buf).await;
        }
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
    }
}
