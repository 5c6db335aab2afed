//! What tests need to drive a session in-process: a client transport over an in-memory
//! duplex that records an abort (as a reset would be seen), the plugin with a captured
//! log, and a runtime whose clock is paused.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use abi::RequestHead;
use abi_stable::std_types::RStr;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::Instant;

use super::transport::http1;
use super::{ClientTransport, ResponseHead, Session};
use crate::StreamingPlugin;

/// Every line the plugins of these tests log (each test looks for its own paths).
static LOG: Mutex<String> = Mutex::new(String::new());

extern "C" fn capture(_: abi::LogLevel, line: RStr<'_>) {
    let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    log.push_str(line.as_str());
    log.push('\n');
}

pub fn logged(text: &str) -> bool {
    LOG.lock().unwrap().contains(text)
}

/// The logged line that holds `text`.
pub fn log_line(text: &str) -> String {
    let log = LOG.lock().unwrap();
    let line = log.lines().find(|line| line.contains(text));
    line.unwrap_or_else(|| panic!("{text:?} not logged"))
        .to_owned()
}

/// The client's end a session writes to; `abort` is recorded, as a reset would be seen.
pub struct TestClient {
    io: DuplexStream,
    reset: Arc<AtomicBool>,
}

impl AsyncRead for TestClient {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TestClient {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl ClientTransport for TestClient {
    async fn write_head(&mut self, head: &ResponseHead<'_>, body: &[u8]) -> io::Result<()> {
        self.io.write_all(&http1(head, body)).await
    }

    async fn write_continue(&mut self) -> io::Result<()> {
        self.io.write_all(wire::CONTINUE).await
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        super::transport::poll_read_to_end(Pin::new(&mut self.io), cx)
    }

    fn abort(self) {
        self.reset.store(true, Ordering::Relaxed);
    }
}

/// What the test holds of a session's client: what it reads, and whether it was reset.
pub struct Peer {
    pub io: DuplexStream,
    pub received: Vec<u8>,
    pub reset: Arc<AtomicBool>,
}

impl Peer {
    /// Reads until `needle` has arrived (`count` times in all); says when it did.
    pub async fn read_until(&mut self, needle: &[u8], count: usize) -> Instant {
        let mut buf = [0u8; 4096];
        while self
            .received
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
            < count
        {
            let n = self.io.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed; got {:?}",
                String::from_utf8_lossy(&self.received)
            );
            self.received.extend_from_slice(&buf[..n]);
        }
        Instant::now()
    }

    pub async fn read_to_end(&mut self) -> String {
        self.io.read_to_end(&mut self.received).await.unwrap();
        String::from_utf8_lossy(&self.received).into_owned()
    }

    pub fn body(&self) -> &[u8] {
        testkit::body_of(&self.received)
    }
}

/// A duplex of `capacity` bytes each way: the session's client and the test's peer.
pub fn connected(capacity: usize) -> (TestClient, Peer) {
    let (ours, theirs) = tokio::io::duplex(capacity);
    let reset = Arc::new(AtomicBool::new(false));
    let client = TestClient {
        io: ours,
        reset: reset.clone(),
    };
    let peer = Peer {
        io: theirs,
        received: Vec::new(),
        reset,
    };
    (client, peer)
}

/// The plugin for `/s` with `extra` keys, relaying from an origin the tests stand in for.
pub fn plugin(extra: Value) -> StreamingPlugin {
    let mut block = json!({"endpoint": "/s/{id}", "backend_url_pattern": "/e/{id}",
                           "backend_host": "http://127.0.0.1:9"});
    for (key, value) in extra.as_object().unwrap() {
        block[key] = value.clone();
    }
    StreamingPlugin::new(&block.to_string(), abi::Logger { log: capture }).unwrap()
}

pub fn new_session<'a>(
    plugin: &'a StreamingPlugin,
    path: &str,
    client: TestClient,
    expires_at: Option<Instant>,
) -> Session<'a, TestClient> {
    let head = RequestHead {
        method: "GET".into(),
        path: path.into(),
        query: Default::default(),
        headers: Default::default(),
        peer: "127.0.0.1:1".into(),
    };
    let cors = vec![abi::Header {
        name: "Access-Control-Allow-Origin".into(),
        value: b"*".to_vec().into(),
    }];
    let shared = &plugin.shared;
    Session::new(client, &head, cors, expires_at, shared, &shared.routes[0])
}

pub fn stats(plugin: &StreamingPlugin) -> Value {
    let stats: Value = serde_json::from_str(&abi::ServerPlugin::stats(plugin)).unwrap();
    stats["routes"][0].clone()
}

/// Runs `test` on a runtime of its own whose clock is paused (it advances by itself to
/// the next timer whenever every task waits), failing, instead of hanging, if it has not
/// finished within [`testkit::STEP`] of real time (a timer re-armed in the past spins).
pub fn paused<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(test())
    });
    let deadline = std::time::Instant::now() + testkit::STEP;
    while !thread.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the session hung");
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
