//! A claimed request's body, read whole before anything is sent upstream: it is held for
//! the stream's life, so that a failover to another host sends it again unchanged.
//!
//! Its framing is the head's (`wire::framing`, the rule the gate already checked the head
//! by); a declared length over the limit is refused before a byte is read, a chunked body
//! as soon as it grows past it; the host's `read_timeout` (what is left of it at the
//! handoff) bounds the whole read. The bytes the host read past the head come first.

use abi::{HttpVersion, RequestHead};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use wire::framing::{self, Framing, FramingError};

use crate::session::ClientTransport;

/// How much of a body the route takes, and until when.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub deadline: Option<Instant>,
}

/// What the host handed over of a request's body: the bytes it read past the head, and
/// what delimits it.
pub struct Incoming {
    pub read_ahead: Vec<u8>,
    pub limits: BodyLimits,
    /// HTTP/1.1: the head's framing; HTTP/2: the stream's end, when the head declares no
    /// length (a browser's `fetch` with a stream body sends none).
    pub version: HttpVersion,
}

/// Why a request body is refused: answered 413, 408 or 400 before any upstream is dialled.
#[derive(Debug, thiserror::Error)]
pub enum BodyRefused {
    #[error("the request body is over max_body_bytes ({0})")]
    TooLarge(u64),
    #[error("the request body was not in within read_timeout")]
    TimedOut,
    #[error("the request body's framing: {0}")]
    Framing(#[from] FramingError),
    #[error("the request body's chunks: {0}")]
    Chunk(#[from] chunked::MalformedChunk),
    #[error("the client closed the connection inside the request body")]
    Closed,
}

const READ_CHUNK: usize = 8 * 1024;

/// A body still to be read: its framing, taken from the head (which can then be dropped),
/// and what the host handed over.
pub struct Unread {
    framing: Framing,
    incoming: Incoming,
    /// The client waits for `100 Continue` before it sends the body (`Expect:
    /// 100-continue`, which curl sends with any body over 1 KiB).
    expects_continue: bool,
}

impl Unread {
    pub fn new(head: &RequestHead, incoming: Incoming) -> Result<Self, BodyRefused> {
        let headers: Vec<httparse::Header<'_>> = head
            .headers
            .iter()
            .map(|h| httparse::Header {
                name: &h.name,
                value: &h.value,
            })
            .collect();
        let expects_continue = head.expects_continue();
        let framing = match incoming.version {
            HttpVersion::Http11 => framing::request(&headers)?,
            HttpVersion::Http2 => framing::stream_request(&headers)?,
        };
        Ok(Self {
            framing,
            incoming,
            expects_continue,
        })
    }

    /// Reads the whole body from `client`, the read-ahead first.
    pub async fn read<C: ClientTransport>(self, client: &mut C) -> Result<Vec<u8>, BodyRefused> {
        let Self {
            mut framing,
            incoming: Incoming {
                read_ahead, limits, ..
            },
            expects_continue,
        } = self;
        if let Framing::Length(declared) = framing {
            if declared > limits.max_bytes {
                return Err(BodyRefused::TooLarge(limits.max_bytes));
            }
        }
        let mut body = Vec::new();
        take(&mut framing, &read_ahead, &mut body, limits.max_bytes)?;
        if framing.is_done() {
            return Ok(body);
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let reading = async {
            // Only now, once the declared length is known to fit.
            if expects_continue && read_ahead.is_empty() {
                client
                    .write_continue()
                    .await
                    .map_err(|_| BodyRefused::Closed)?;
            }
            while !framing.is_done() {
                let n = client
                    .read(&mut buf)
                    .await
                    .map_err(|_| BodyRefused::Closed)?;
                if n == 0 {
                    // The end of an HTTP/2 stream is the end of a body it does not frame.
                    return match framing {
                        Framing::UntilClose => Ok(()),
                        _ => Err(BodyRefused::Closed),
                    };
                }
                take(&mut framing, &buf[..n], &mut body, limits.max_bytes)?;
            }
            Ok(())
        };
        match limits.deadline {
            Some(at) => tokio::time::timeout_at(at, reading)
                .await
                .map_err(|_| BodyRefused::TimedOut)??,
            None => reading.await?,
        }
        Ok(body)
    }
}

/// Adds the payload of `input` to `body` (what follows the body's end is ignored: the
/// connection is the stream's, and closes with it).
fn take(
    framing: &mut Framing,
    input: &[u8],
    body: &mut Vec<u8>,
    max_bytes: u64,
) -> Result<(), BodyRefused> {
    let mut over = false;
    framing.take(input, |range| {
        if body.len() as u64 + range.len() as u64 > max_bytes {
            over = true;
        } else if !over {
            body.extend_from_slice(&input[range]);
        }
    })?;
    match over {
        true => Err(BodyRefused::TooLarge(max_bytes)),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::testing::{connected, TestClient};
    use tokio::io::AsyncWriteExt;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            path: "/c".into(),
            query: Default::default(),
            headers: headers
                .iter()
                .map(|(n, v)| abi::Header {
                    name: (*n).into(),
                    value: v.as_bytes().to_vec().into(),
                })
                .collect(),
            peer: "127.0.0.1:1".into(),
        }
    }

    const NO_DEADLINE: BodyLimits = BodyLimits {
        max_bytes: 10,
        deadline: None,
    };

    async fn read(
        client: &mut TestClient,
        head: &RequestHead,
        read_ahead: &[u8],
        limits: BodyLimits,
    ) -> Result<Vec<u8>, BodyRefused> {
        read_as(HttpVersion::Http11, client, head, read_ahead, limits).await
    }

    async fn read_as(
        version: HttpVersion,
        client: &mut TestClient,
        head: &RequestHead,
        read_ahead: &[u8],
        limits: BodyLimits,
    ) -> Result<Vec<u8>, BodyRefused> {
        let read_ahead = read_ahead.to_vec();
        let incoming = Incoming {
            read_ahead,
            limits,
            version,
        };
        let unread = Unread::new(head, incoming)?;
        unread.read(client).await
    }

    /// Every split of a chunked body between the host's read-ahead and later reads gives
    /// the same payload.
    #[tokio::test]
    async fn a_chunked_body_is_the_same_however_it_is_split() {
        let wire = b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n";
        for split in 0..=wire.len() {
            let (mut client, mut peer) = connected(4096);
            peer.io.write_all(&wire[split..]).await.unwrap();
            let head = head(&[("Transfer-Encoding", "chunked")]);
            let body = read(&mut client, &head, &wire[..split], NO_DEADLINE).await;
            assert_eq!(body.unwrap(), b"abcdefg", "split at {split}");
        }
    }

    #[tokio::test]
    async fn over_the_limit_by_declaration_or_by_growth_is_refused() {
        let (mut client, _peer) = connected(4096);
        let declared = head(&[("Content-Length", "11")]);
        let refused = read(&mut client, &declared, b"", NO_DEADLINE).await;
        assert!(
            matches!(refused, Err(BodyRefused::TooLarge(10))),
            "{refused:?}"
        );
        let chunked = head(&[("Transfer-Encoding", "chunked")]);
        let grown = b"6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n";
        let refused = read(&mut client, &chunked, grown, NO_DEADLINE).await;
        assert!(
            matches!(refused, Err(BodyRefused::TooLarge(10))),
            "{refused:?}"
        );
        let exact = head(&[("Content-Length", "10")]);
        let body = read(&mut client, &exact, b"0123456789extra", NO_DEADLINE).await;
        assert_eq!(
            body.unwrap(),
            b"0123456789",
            "what follows the body is not the body's"
        );
    }

    #[tokio::test]
    async fn a_client_that_expects_100_continue_gets_it_before_it_sends_the_body() {
        use tokio::io::AsyncReadExt;
        let (mut client, mut peer) = connected(4096);
        let head = head(&[("Content-Length", "5"), ("Expect", "100-continue")]);
        let sender = async {
            let mut interim = [0u8; 25];
            peer.io.read_exact(&mut interim).await.unwrap();
            assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
            peer.io.write_all(b"hello").await.unwrap();
        };
        let (body, ()) = tokio::join!(read(&mut client, &head, b"", NO_DEADLINE), sender);
        assert_eq!(body.unwrap(), b"hello");
        let (mut client, _peer) = connected(4096);
        let over = head_over_limit();
        let refused = read(&mut client, &over, b"", NO_DEADLINE).await;
        assert!(
            matches!(refused, Err(BodyRefused::TooLarge(10))),
            "no 100 first: {refused:?}"
        );
    }

    fn head_over_limit() -> RequestHead {
        head(&[("Content-Length", "11"), ("Expect", "100-continue")])
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_in_by_the_deadline_or_cut_short_is_refused() {
        let (mut client, peer) = connected(4096);
        let head = head(&[("Content-Length", "5")]);
        let limits = BodyLimits {
            max_bytes: 10,
            deadline: Some(Instant::now() + std::time::Duration::from_secs(30)),
        };
        let refused = read(&mut client, &head, b"ab", limits).await;
        assert!(matches!(refused, Err(BodyRefused::TimedOut)), "{refused:?}");
        drop(peer);
        let refused = read(&mut client, &head, b"ab", NO_DEADLINE).await;
        assert!(matches!(refused, Err(BodyRefused::Closed)), "{refused:?}");
    }

    /// HTTP/2 delimits a body by the stream's end (a read of 0 here): one sent without
    /// `Content-Length` is read to it, within the limit; HTTP/1.1 takes none without one.
    #[tokio::test]
    async fn an_http2_body_without_a_length_is_read_to_the_stream_end() {
        let no_length = head(&[]);
        let (mut client, mut peer) = connected(4096);
        peer.io.write_all(b"lo").await.unwrap();
        peer.io.shutdown().await.unwrap();
        let body = read_as(
            HttpVersion::Http2,
            &mut client,
            &no_length,
            b"hel",
            NO_DEADLINE,
        );
        assert_eq!(body.await.unwrap(), b"hello");

        let (mut client, mut peer) = connected(4096);
        peer.io.write_all(b"0123456789-").await.unwrap();
        let refused = read_as(
            HttpVersion::Http2,
            &mut client,
            &no_length,
            b"",
            NO_DEADLINE,
        );
        let refused = refused.await;
        assert!(
            matches!(refused, Err(BodyRefused::TooLarge(10))),
            "{refused:?}"
        );

        let (mut client, _peer) = connected(4096);
        let body = read(&mut client, &no_length, b"", NO_DEADLINE).await;
        assert_eq!(body.unwrap(), b"");
    }
}
