//! HTTP/2 for the multiplexing tests, with the h2 crate, which lets a test do what curl
//! cannot: open N streams on one connection, read each on its own, stop reading one (its
//! window then fills and stays full), and cancel one with RST_STREAM.
//!
//! [`H2Client`] is the client (h2c with prior knowledge, or TLS with ALPN `h2`), with a
//! browser's windows by default; [`H2Origin`] is a scripted HTTP/2 server, which the tests
//! of the client helpers (and of `sse-load`) stand against.
//!
//! ```text
//! let mut client = H2Client::connect_tls(gateway.addr, pki.client_config(ALPN_H2)).await;
//! let mut streams = Vec::new();
//! for i in 0..20 { streams.push(client.get(&format!("/sse/{i}"), &[]).await); }
//! streams[0].read_until(b"id: 1\n").await;
//! streams[1].reset();                     // RST_STREAM(CANCEL)
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::raw::{read_until_count, Receiver};
use crate::STEP;

/// A client's receive windows: what a server may send on a stream, and on the whole
/// connection, before the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub stream: u32,
    pub connection: u32,
}

impl Windows {
    /// Chrome's: 6 MiB per stream, 15 MiB per connection, so that one stream its page
    /// stops reading cannot starve the others (the RFC's 65,535 for both would).
    pub const BROWSER: Windows = Windows {
        stream: 6 * 1024 * 1024,
        connection: 15 * 1024 * 1024,
    };
}

/// One HTTP/2 connection; its frames are driven by a task of its own, so a stream nobody
/// reads never holds up the others.
pub struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    scheme: &'static str,
    /// The connection's task; `None` once [`H2Client::closed`] saw it end.
    connection: Option<JoinHandle<Result<(), h2::Error>>>,
}

impl H2Client {
    /// h2c with prior knowledge, browser windows.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, None, Windows::BROWSER).await
    }

    /// TLS to `addr` with `config` (which must offer `h2`, e.g.
    /// `pki.client_config(ALPN_H2)`), SNI `localhost`, browser windows; panics unless the
    /// server chose `h2`.
    pub async fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        Self::connect_with(addr, Some((config, "localhost")), Windows::BROWSER).await
    }

    /// TLS when `tls` gives a config and the server name to send, h2c otherwise.
    pub async fn connect_with(
        addr: SocketAddr,
        tls: Option<(Arc<rustls::ClientConfig>, &str)>,
        windows: Windows,
    ) -> Self {
        let tcp = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let Some((config, name)) = tls else {
            return Self::handshake(tcp, addr, "http", windows).await;
        };
        let server_name =
            rustls::pki_types::ServerName::try_from(name.to_owned()).expect("a valid server name");
        let tls = timeout(
            STEP,
            tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
        )
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(
            alpn.as_deref(),
            Some(&b"h2"[..]),
            "the server did not choose h2 by ALPN"
        );
        Self::handshake(tls, addr, "https", windows).await
    }

    async fn handshake<T>(io: T, addr: SocketAddr, scheme: &'static str, windows: Windows) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (send, connection) = timeout(
            STEP,
            h2::client::Builder::new()
                .initial_window_size(windows.stream)
                .initial_connection_window_size(windows.connection)
                .handshake::<_, Bytes>(io),
        )
        .await
        .expect("HTTP/2 handshake timed out")
        .expect("HTTP/2 handshake");
        Self {
            send,
            authority: addr.to_string(),
            scheme,
            connection: Some(tokio::spawn(connection)),
        }
    }

    /// Opens a GET stream for `path` with `Accept: text/event-stream` and `headers`, and
    /// waits for its response head.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> H2Stream {
        let mut request = Request::get(format!("{}://{}{path}", self.scheme, self.authority))
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("a valid request");
        self.send(request, true).await.response().await
    }

    /// Opens a `method` stream for `path` with `headers` and a body the test sends
    /// ([`H2Upload::send`]), without waiting for the response head.
    pub async fn upload(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> H2Upload {
        let uri = format!("{}://{}{path}", self.scheme, self.authority);
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("a valid request");
        self.send(request, false).await
    }

    async fn send(&mut self, request: Request<()>, end_of_stream: bool) -> H2Upload {
        let mut send = timeout(STEP, self.send.clone().ready())
            .await
            .expect("the server allows no more streams (max_concurrent_streams)")
            .expect("the connection is open");
        let (response, stream) = send
            .send_request(request, end_of_stream)
            .expect("sending the request head");
        H2Upload { response, stream }
    }

    /// Waits (up to [`STEP`]) for the server to end the connection: after its GOAWAY, once
    /// the streams it still served have ended, or by closing it; the connection's error, if
    /// any.
    pub async fn closed(&mut self) -> Result<(), h2::Error> {
        let connection = self.connection.take().expect("closed() is called once");
        timeout(STEP, connection)
            .await
            .expect("the server did not end the connection")
            .expect("the connection task panicked")
    }
}

impl Drop for H2Client {
    fn drop(&mut self) {
        if let Some(connection) = &self.connection {
            connection.abort();
        }
    }
}

/// A stream whose request body is still being sent, its response not yet taken.
pub struct H2Upload {
    response: h2::client::ResponseFuture,
    stream: SendStream<Bytes>,
}

impl H2Upload {
    /// Queues `bytes` as DATA (h2 sends them as the server's window allows), ending the
    /// body with them when `end`.
    pub fn send(&mut self, bytes: &[u8], end: bool) {
        self.stream
            .send_data(Bytes::copy_from_slice(bytes), end)
            .expect("sending the request body");
    }

    /// Waits (up to [`STEP`]) for the next head: `Some` with the status of an interim
    /// (1xx) one, `None` when the final head comes next (or the stream ended).
    pub async fn interim(&mut self) -> Option<StatusCode> {
        let next = std::future::poll_fn(|cx| self.response.poll_informational(cx));
        timeout(STEP, next)
            .await
            .expect("no response head")
            .map(|head| head.expect("a valid interim head").status())
    }

    /// Waits (up to [`STEP`]) for the response head.
    pub async fn response(self) -> H2Stream {
        let response = timeout(STEP, self.response)
            .await
            .expect("no response head")
            .expect("the stream was refused");
        let (head, body) = response.into_parts();
        H2Stream {
            status: head.status,
            headers: head.headers,
            body,
            stream: self.stream,
            received: Vec::new(),
        }
    }
}

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// END_STREAM: the server finished the response.
    Finished,
    /// RST_STREAM (or a GOAWAY that did not cover the stream) with this reason.
    Reset(Reason),
    /// The connection failed under it.
    ConnectionLost(String),
}

/// One stream of an [`H2Client`]: the response head, and the body read so far. The body's
/// window is released as [`H2Stream::read_until`] takes it; a stream not read keeps what
/// arrived, and its window fills.
pub struct H2Stream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: RecvStream,
    stream: SendStream<Bytes>,
    /// Everything read so far.
    pub received: Vec<u8>,
}

impl H2Stream {
    /// Reads until `received` contains `needle`; panics after [`STEP`].
    pub async fn read_until(&mut self, needle: &[u8]) -> &[u8] {
        self.read_until_count(needle, 1).await
    }

    /// Reads until `needle` has been received `count` times in all.
    pub async fn read_until_count(&mut self, needle: &[u8], count: usize) -> &[u8] {
        read_until_count(self, needle, count).await;
        &self.received
    }

    /// Reads until the stream ends (within [`STEP`]) and says how.
    pub async fn end(&mut self) -> StreamEnd {
        timeout(STEP, async {
            loop {
                if let Err(end) = self.read_some().await {
                    return end;
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the stream did not end; got {:?}",
                String::from_utf8_lossy(&self.received)
            )
        })
    }

    /// Whether the stream stays open and nothing arrives within `limit`.
    pub async fn nothing_within(&mut self, limit: Duration) -> bool {
        timeout(limit, self.read_some()).await.is_err()
    }

    /// One DATA frame's bytes into `received`, releasing their window; how the stream ended
    /// when it has.
    async fn read_some(&mut self) -> Result<(), StreamEnd> {
        match self.body.data().await {
            None => Err(StreamEnd::Finished),
            Some(Ok(data)) => {
                self.received.extend_from_slice(&data);
                let _ = self.body.flow_control().release_capacity(data.len());
                Ok(())
            }
            Some(Err(error)) => Err(match error.reason() {
                Some(reason) if error.is_reset() || error.is_go_away() => StreamEnd::Reset(reason),
                _ => StreamEnd::ConnectionLost(error.to_string()),
            }),
        }
    }

    /// Bytes that arrived but were not read: what the stream's window holds.
    pub fn unread(&mut self) -> usize {
        self.body.flow_control().used_capacity()
    }

    /// Cancels the stream: RST_STREAM(CANCEL), as a browser closing an EventSource.
    pub fn reset(&mut self) {
        self.stream.send_reset(Reason::CANCEL);
    }
}

impl Receiver for H2Stream {
    fn received(&self) -> &[u8] {
        &self.received
    }

    async fn read_more(&mut self) -> bool {
        self.read_some().await.is_ok()
    }
}

/// A scripted HTTP/2 server (h2c, or TLS with ALPN `h2`): the test takes each request and
/// answers it by hand.
pub struct H2Origin {
    pub addr: SocketAddr,
    scheme: &'static str,
    requests: mpsc::UnboundedReceiver<H2Request>,
    connections: Arc<AtomicUsize>,
}

impl H2Origin {
    /// h2c with prior knowledge when `tls` is `None`.
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding an HTTP/2 origin");
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let (tx, requests) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tx, counted, acceptor) = (tx.clone(), counted.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_h2(tls, tx, counted).await;
                            }
                        }
                        None => serve_h2(tcp, tx, counted).await,
                    }
                });
            }
        });
        Self {
            addr,
            scheme,
            requests,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Connections that completed the HTTP/2 handshake so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The next request, on any connection.
    pub async fn accept(&mut self) -> H2Request {
        timeout(STEP, self.requests.recv())
            .await
            .expect("no request reached the HTTP/2 origin")
            .unwrap()
    }
}

async fn serve_h2<T>(io: T, requests: mpsc::UnboundedSender<H2Request>, count: Arc<AtomicUsize>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok((request, respond))) = connection.accept().await {
        let (head, _body) = request.into_parts();
        let request = H2Request {
            head: Request::from_parts(head, ()),
            respond,
            body: None,
        };
        if requests.send(request).is_err() {
            return;
        }
    }
}

/// One request to an [`H2Origin`] and its response.
pub struct H2Request {
    /// The request head (`:path` is `head.uri().path()`).
    pub head: Request<()>,
    respond: h2::server::SendResponse<Bytes>,
    body: Option<SendStream<Bytes>>,
}

impl H2Request {
    /// Sends the response head: `status` and `text/event-stream`.
    pub fn send_event_stream_head(&mut self, status: u16) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "text/event-stream")
            .body(())
            .expect("a valid response head");
        let body = self
            .respond
            .send_response(response, false)
            .expect("sending the response head");
        self.body = Some(body);
    }

    /// Queues body bytes (h2 sends them as the client's window allows).
    pub fn send(&mut self, bytes: &[u8]) {
        self.body_stream()
            .send_data(Bytes::copy_from_slice(bytes), false)
            .expect("sending body bytes");
    }

    /// Ends the response (END_STREAM).
    pub fn finish(&mut self) {
        self.body_stream()
            .send_data(Bytes::new(), true)
            .expect("ending the stream");
    }

    /// Resets the stream (RST_STREAM with `reason`), as a server drops a stalled client.
    pub fn reset(&mut self, reason: Reason) {
        match &mut self.body {
            Some(body) => body.send_reset(reason),
            None => self.respond.send_reset(reason),
        }
    }

    /// The client's RST_STREAM reason, if one arrives within `limit`.
    pub async fn reset_within(&mut self, limit: Duration) -> Option<Reason> {
        let body = self.body_stream();
        timeout(limit, std::future::poll_fn(|cx| body.poll_reset(cx)))
            .await
            .ok()?
            .ok()
    }

    fn body_stream(&mut self) -> &mut SendStream<Bytes> {
        self.body
            .as_mut()
            .expect("send_event_stream_head comes first")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientAuth, TestPki, ALPN_H2};

    /// Opens a stream for `path` and answers its head from the origin.
    async fn open(
        client: &mut H2Client,
        origin: &mut H2Origin,
        path: &str,
    ) -> (H2Stream, H2Request) {
        let answer = async {
            let mut request = origin.accept().await;
            request.send_event_stream_head(200);
            request
        };
        let (stream, request) = tokio::join!(client.get(path, &[("x-test", "1")]), answer);
        assert_eq!(request.head.uri().path(), path);
        assert_eq!(request.head.headers()["accept"], "text/event-stream");
        assert_eq!(request.head.headers()["x-test"], "1");
        assert_eq!(stream.status, 200);
        (stream, request)
    }

    #[tokio::test]
    async fn streams_share_one_connection_and_an_unread_one_holds_only_its_window() {
        let mut origin = H2Origin::start(None).await;
        let windows = Windows {
            stream: 65_535,
            ..Windows::BROWSER
        };
        let mut client = H2Client::connect_with(origin.addr, None, windows).await;
        let mut pairs = Vec::new();
        for i in 0..3 {
            pairs.push(open(&mut client, &mut origin, &format!("/s/{i}")).await);
        }
        assert_eq!(origin.connections(), 1);
        // Stream 1 is never read while 200 KB are sent to it: the origin can send only its
        // window, and streams 0 and 2 go on.
        pairs[1].1.send(&vec![b'x'; 200_000]);
        for round in 0..3 {
            for i in [0, 2] {
                let (stream, request) = &mut pairs[i];
                request.send(format!("data: {i}.{round}\n\n").as_bytes());
                stream
                    .read_until(format!("data: {i}.{round}\n\n").as_bytes())
                    .await;
            }
        }
        let deadline = tokio::time::Instant::now() + STEP;
        while pairs[1].0.unread() < 65_535 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} unread",
                pairs[1].0.unread()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pairs[1].0.unread(), 65_535);
        assert!(pairs[1].0.received.is_empty());
        // Read, it takes the rest.
        pairs[1].1.finish();
        assert_eq!(pairs[1].0.end().await, StreamEnd::Finished);
        assert_eq!(pairs[1].0.received.len(), 200_000);
    }

    #[tokio::test]
    async fn a_reset_reaches_the_origin_and_the_other_streams_go_on() {
        let mut origin = H2Origin::start(None).await;
        let mut client = H2Client::connect(origin.addr).await;
        let (mut cancelled, mut its_request) = open(&mut client, &mut origin, "/a").await;
        let (mut other, mut other_request) = open(&mut client, &mut origin, "/b").await;
        cancelled.reset();
        assert_eq!(its_request.reset_within(STEP).await, Some(Reason::CANCEL));
        other_request.send(b"data: still here\n\n");
        other.read_until(b"still here").await;
    }

    #[tokio::test]
    async fn a_stream_the_origin_resets_ends_with_the_reason() {
        let mut origin = H2Origin::start(None).await;
        let mut client = H2Client::connect(origin.addr).await;
        let (mut stream, mut request) = open(&mut client, &mut origin, "/a").await;
        request.send(b"data: 1\n\n");
        stream.read_until(b"data: 1").await;
        request.reset(Reason::CANCEL);
        assert_eq!(stream.end().await, StreamEnd::Reset(Reason::CANCEL));
    }

    #[tokio::test]
    async fn over_tls_the_client_negotiates_h2_by_alpn() {
        let pki = TestPki::new();
        let server = pki.server_config(&pki.server, ALPN_H2, ClientAuth::None);
        let mut origin = H2Origin::start(Some(server)).await;
        assert!(origin.url().starts_with("https://"));
        let mut client = H2Client::connect_tls(origin.addr, pki.client_config(ALPN_H2)).await;
        let (mut stream, mut request) = open(&mut client, &mut origin, "/tls").await;
        assert_eq!(request.head.uri().scheme_str(), Some("https"));
        request.send(b"data: over tls\n\n");
        request.finish();
        assert_eq!(stream.end().await, StreamEnd::Finished);
        assert_eq!(stream.received, b"data: over tls\n\n");
    }
}
