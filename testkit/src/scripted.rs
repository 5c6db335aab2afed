//! Origins that a test drives step by step, to misbehave or to pace events exactly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::STEP;

/// An origin whose connections the test accepts and answers by hand.
pub struct ScriptedOrigin {
    pub addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<TcpStream>,
}

impl ScriptedOrigin {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a scripted origin");
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if tx.send(stream).is_err() {
                    return;
                }
            }
        });
        Self { addr, accepted }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next connection, with its request head already read.
    pub async fn accept(&mut self) -> OriginConn {
        let stream = timeout(STEP, self.accepted.recv())
            .await
            .expect("no connection reached the origin")
            .unwrap();
        let mut conn = OriginConn {
            stream,
            head: String::new(),
        };
        conn.read_head().await;
        conn
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
    stream: TcpStream,
    /// The request head as received, lines joined by CRLF.
    pub head: String,
}

impl OriginConn {
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

    /// Starts a close-delimited event-stream response.
    pub async fn send_event_stream_head(&mut self) {
        self.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        )
        .await;
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
