//! A raw HTTP/1.1 client over TCP: the bytes on the wire are exactly what tests assert on.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::STEP;

pub struct RawClient {
    stream: TcpStream,
    /// Everything read so far.
    pub received: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self {
            stream,
            received: Vec::new(),
        }
    }

    /// Connects and sends `GET path` with `Accept: text/event-stream` and `extra` header lines.
    pub async fn get(addr: SocketAddr, path: &str, extra: &[&str]) -> Self {
        let mut client = Self::connect(addr).await;
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for line in extra {
            request.push_str(line);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        client.send(request.as_bytes()).await;
        client
    }

    /// Connects, sends `request` (a whole raw request, normally with `Connection: close`)
    /// and returns everything the server sent until it closed.
    pub async fn exchange(addr: SocketAddr, request: impl AsRef<[u8]>) -> Vec<u8> {
        let mut client = Self::connect(addr).await;
        client.send(request.as_ref()).await;
        client.read_to_end().await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("sending to the gateway");
    }

    /// Reads until `received` contains `needle`; panics after [`STEP`].
    pub async fn read_until(&mut self, needle: &[u8]) -> &[u8] {
        self.read_until_count(needle, 1).await
    }

    /// Reads until `needle` has been received `count` times in all.
    pub async fn read_until_count(&mut self, needle: &[u8], count: usize) -> &[u8] {
        read_until_count(self, needle, count).await;
        &self.received
    }

    /// Reads until the server closes the connection; panics after [`STEP`].
    pub async fn read_to_end(mut self) -> Vec<u8> {
        let result = timeout(STEP, self.stream.read_to_end(&mut self.received)).await;
        assert!(
            result.is_ok(),
            "the server did not close; got {:?}",
            String::from_utf8_lossy(&self.received)
        );
        self.received
    }
}

impl Receiver for RawClient {
    fn received(&self) -> &[u8] {
        &self.received
    }

    async fn read_more(&mut self) -> bool {
        read_into(&mut self.stream, &mut self.received).await
    }
}

/// One read of `reader` appended to `received`; `false` at its end (or an error).
pub(crate) async fn read_into(
    reader: &mut (impl AsyncRead + Unpin),
    received: &mut Vec<u8>,
) -> bool {
    let mut buf = [0u8; 16 * 1024];
    match reader.read(&mut buf).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            received.extend_from_slice(&buf[..n]);
            true
        }
    }
}

/// A client of a test, as the `read_until` helpers see it: the bytes received so far, and a
/// way to receive more.
pub(crate) trait Receiver {
    fn received(&self) -> &[u8];
    /// Receives more bytes into `received`; `false` once the stream has ended.
    async fn read_more(&mut self) -> bool;
}

/// Receives until `needle` has been received `count` times in all; panics with what was
/// received after [`STEP`] or when the stream ends first.
pub(crate) async fn read_until_count(client: &mut impl Receiver, needle: &[u8], count: usize) {
    let seen = |received: &[u8]| {
        received
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    };
    let found = timeout(STEP, async {
        while seen(client.received()) < count {
            if !client.read_more().await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "never received {:?} {count} times; got {:?}",
        String::from_utf8_lossy(needle),
        String::from_utf8_lossy(client.received())
    );
}

/// `GET path` on a new connection, its body parsed as JSON; panics with the response when
/// it is not JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let response = RawClient::exchange(addr, request).await;
    serde_json::from_slice(body_of(&response)).unwrap_or_else(|e| {
        panic!(
            "{path} is not JSON ({e}): {}",
            String::from_utf8_lossy(&response)
        )
    })
}

/// The part of a response after its head.
pub fn body_of(response: &[u8]) -> &[u8] {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    &response[end + 4..]
}

/// How a connection the test stopped reading ends once it reads again: what its buffers
/// hold is read and dropped, then `Ok` at an orderly end, or the error's kind (a reset is
/// `ConnectionReset`). Fails the test if no byte and no end come within [`STEP`].
pub async fn how_it_ends(stream: &mut (impl AsyncRead + Unpin)) -> Result<(), std::io::ErrorKind> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match timeout(STEP, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.kind()),
            Err(_) => panic!("the connection stayed open"),
        }
    }
}
