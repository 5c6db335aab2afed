//! Origins that a test drives step by step, to misbehave or to pace events exactly, over
//! plain TCP or behind rustls (the https origins of the upstream-TLS tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::STEP;

/// What an origin connection is read and written through: a socket, or TLS over one.
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// An origin whose connections the test accepts and answers by hand.
pub struct ScriptedOrigin {
    pub addr: SocketAddr,
    scheme: &'static str,
    accepted: mpsc::UnboundedReceiver<OriginConn>,
    /// Why TLS handshakes failed, in order (always empty over plain TCP).
    handshake_failures: mpsc::UnboundedReceiver<String>,
}

impl ScriptedOrigin {
    pub async fn start() -> Self {
        Self::listen(None).await
    }

    /// An https origin: each connection's TLS handshake (with `config`, e.g.
    /// [`crate::TestPki::server_config`], with or without client certificates) completes
    /// before [`ScriptedOrigin::accept`] sees it; a failed one is told by
    /// [`ScriptedOrigin::handshake_failure`].
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::listen(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn listen(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a scripted origin");
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (tx, accepted) = mpsc::unbounded_channel();
        let (failed, handshake_failures) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Some(acceptor) = tls.clone() else {
                    if tx.send(OriginConn::new(Box::new(stream), 0)).is_err() {
                        return;
                    }
                    continue;
                };
                // Each handshake on its own task: a silent client holds up no other.
                let (tx, failed) = (tx.clone(), failed.clone());
                tokio::spawn(async move {
                    match timeout(STEP, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let certs = tls.get_ref().1.peer_certificates().map_or(0, |c| c.len());
                            let _ = tx.send(OriginConn::new(Box::new(tls), certs));
                        }
                        Ok(Err(error)) => drop(failed.send(error.to_string())),
                        Err(_) => drop(failed.send("the handshake timed out".into())),
                    }
                });
            }
        });
        Self {
            addr,
            scheme,
            accepted,
            handshake_failures,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a TLS origin (the PKI's server
    /// certificate holds the IP address).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The URL with `host` in place of the address (`https://localhost:PORT`): SNI sends
    /// a name, never an address.
    pub fn url_with_host(&self, host: &str) -> String {
        format!("{}://{host}:{}", self.scheme, self.addr.port())
    }

    /// The next connection, with its request head already read.
    pub async fn accept(&mut self) -> OriginConn {
        let mut conn = timeout(STEP, self.accepted.recv())
            .await
            .expect("no connection reached the origin")
            .unwrap();
        conn.read_head().await;
        conn
    }

    /// Why the next TLS handshake failed, as rustls says it (`peer sent no certificates`,
    /// `received fatal alert: UnknownCA`, ...); panics if none fails within [`STEP`].
    pub async fn handshake_failure(&mut self) -> String {
        timeout(STEP, self.handshake_failures.recv())
            .await
            .expect("no TLS handshake failed at the origin")
            .unwrap()
    }
}

impl ScriptedOrigin {
    /// Whether no new connection arrives within `limit`.
    pub async fn quiet_for(&mut self, limit: Duration) -> bool {
        timeout(limit, self.accepted.recv()).await.is_err()
    }
}

/// One connection to a [`ScriptedOrigin`].
pub struct OriginConn {
    stream: Box<dyn Transport>,
    /// The request head as received, lines joined by CRLF.
    pub head: String,
    /// How many certificates the client showed in the TLS handshake (mTLS; 0 over TCP).
    pub client_certificates: usize,
}

impl OriginConn {
    fn new(stream: Box<dyn Transport>, client_certificates: usize) -> Self {
        Self {
            stream,
            head: String::new(),
            client_certificates,
        }
    }

    async fn read_head(&mut self) {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        while !bytes.ends_with(b"\r\n\r\n") {
            let n = timeout(STEP, self.stream.read(&mut byte))
                .await
                .expect("request head timed out")
                .unwrap_or(0);
            assert!(n == 1, "the connection closed inside the request head");
            bytes.push(byte[0]);
        }
        self.head = String::from_utf8(bytes).expect("an ASCII head");
    }

    /// The value of a request header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Writes bytes and flushes them to the socket.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the origin could not write");
    }

    /// Sends `start`, then `filler` over and over until the peer stops taking it (a write
    /// fails: it closed the connection), as a hostile origin's endless head or line would;
    /// returns how many bytes of filler it took. Panics once it took `max` of them.
    pub async fn send_until_refused(&mut self, start: &[u8], filler: &[u8], max: usize) -> usize {
        self.send(start).await;
        let mut sent = 0;
        while sent < max {
            match timeout(STEP, self.stream.write_all(filler)).await {
                Ok(Ok(())) => sent += filler.len(),
                Ok(Err(_)) => return sent,
                Err(_) => panic!("the peer stopped reading, but kept the connection"),
            }
        }
        panic!("the peer took {sent} bytes of it");
    }

    /// Reads the `len` bytes of the request body that follow the head (within [`STEP`]).
    pub async fn read_body(&mut self, len: usize) -> Vec<u8> {
        let mut body = vec![0u8; len];
        timeout(STEP, self.stream.read_exact(&mut body))
            .await
            .expect("request body timed out")
            .expect("the connection closed inside the request body");
        body
    }

    /// Starts a close-delimited event-stream response.
    pub async fn send_event_stream_head(&mut self) {
        self.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        )
        .await;
    }

    /// Ends the connection cleanly: over TLS a close_notify first, which tells a client that
    /// a close-delimited body is complete (dropping the connection instead is a truncation,
    /// as an origin that crashes leaves it).
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Whether nothing more arrives from the peer within `limit` (the connection stays
    /// open and silent): nothing was smuggled behind the request head, say.
    pub async fn nothing_more_within(&mut self, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        timeout(limit, self.stream.read(&mut byte)).await.is_err()
    }

    /// Whether the peer closes the connection within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 1024];
        timeout(limit, async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

/// A backend that answers every request with `status` and the JSON `body`, then closes.
pub async fn json_backend(status: u16, body: &'static str) -> SocketAddr {
    fixed_server(status, "application/json", body.to_owned()).await
}

/// A web server that answers every request with the HTML `page` (a browser test's origin).
pub async fn page_server(page: String) -> SocketAddr {
    fixed_server(200, "text/html; charset=utf-8", page).await
}

/// Answers every request with the same response, then closes the connection.
async fn fixed_server(status: u16, content_type: &'static str, body: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a test server");
    let addr = listener.local_addr().unwrap();
    let response = std::sync::Arc::new(format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertKey, ClientAuth, TestPki, ALPN_HTTP1};
    use tokio::net::TcpStream;

    /// A rustls client's GET to `origin`, showing `cert` when given; what it read until the
    /// origin closed, or the TLS error that ended it.
    async fn tls_get(
        pki: &TestPki,
        origin: SocketAddr,
        cert: Option<&CertKey>,
    ) -> Result<Vec<u8>, String> {
        let tcp = TcpStream::connect(origin).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(pki.client_config_with(cert, ALPN_HTTP1));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"GET /tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut received = Vec::new();
        // Under TLS 1.3 a refused client certificate is told at the first read.
        timeout(STEP, tls.read_to_end(&mut received))
            .await
            .expect("the origin did not close")
            .map_err(|e| e.to_string())?;
        Ok(received)
    }

    /// Answers one request with a short event stream, then closes.
    async fn answer(origin: &mut ScriptedOrigin) -> usize {
        let mut conn = origin.accept().await;
        assert!(
            conn.head.starts_with("GET /tls HTTP/1.1\r\n"),
            "{}",
            conn.head
        );
        conn.send_event_stream_head().await;
        conn.send(b"data: secure\n\n").await;
        let certificates = conn.client_certificates;
        conn.close().await;
        certificates
    }

    #[tokio::test]
    async fn an_https_origin_serves_a_rustls_client() {
        let pki = TestPki::new();
        let config = pki.server_config(&pki.server, ALPN_HTTP1, ClientAuth::None);
        let mut origin = ScriptedOrigin::start_tls(config).await;
        assert_eq!(origin.url(), format!("https://{}", origin.addr));
        let (received, certificates) =
            tokio::join!(tls_get(&pki, origin.addr, None), answer(&mut origin));
        let received = String::from_utf8(received.unwrap()).unwrap();
        assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
        assert!(received.ends_with("\r\n\r\ndata: secure\n\n"), "{received}");
        assert_eq!(certificates, 0);
    }

    #[tokio::test]
    async fn an_mtls_origin_serves_only_clients_with_a_certificate_of_the_client_ca() {
        let pki = TestPki::new();
        let config = pki.server_config(&pki.server, ALPN_HTTP1, ClientAuth::Required);
        let mut origin = ScriptedOrigin::start_tls(config).await;
        let refused = tls_get(&pki, origin.addr, None).await.unwrap_err();
        assert!(refused.contains("CertificateRequired"), "{refused}");
        let why = origin.handshake_failure().await;
        assert!(why.contains("peer sent no certificates"), "{why}");
        let refused = tls_get(&pki, origin.addr, Some(&pki.wrong_client))
            .await
            .unwrap_err();
        assert!(refused.contains("UnknownCA"), "{refused}");
        let why = origin.handshake_failure().await;
        assert!(why.contains("UnknownIssuer"), "{why}");
        let (received, certificates) = tokio::join!(
            tls_get(&pki, origin.addr, Some(&pki.client)),
            answer(&mut origin)
        );
        assert!(received.unwrap().ends_with(b"data: secure\n\n"));
        assert_eq!(certificates, 1);
    }

    #[tokio::test]
    async fn a_client_that_does_not_trust_the_origin_fails_its_handshake() {
        let pki = TestPki::new();
        let config = pki.server_config(&pki.wrong_server, ALPN_HTTP1, ClientAuth::None);
        let mut origin = ScriptedOrigin::start_tls(config).await;
        let refused = tls_get(&pki, origin.addr, None).await.unwrap_err();
        assert!(refused.contains("UnknownIssuer"), "{refused}");
        let why = origin.handshake_failure().await;
        assert!(why.contains("UnknownCA"), "{why}");
    }
}
