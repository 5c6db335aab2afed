//! Where a connection starts: the listening sockets, their accept loop, and each accepted
//! connection's first step: its socket options, the TLS handshake when the port speaks
//! TLS (within `read_header_timeout`; a failed one closes that connection only), then the
//! protocol that serves it: HTTP/2 for ALPN `h2` or (under `use_h2c`, cleartext) a client
//! that opens with the HTTP/2 preface, HTTP/1.1 otherwise.
//!
//! A listener is bound with an accept backlog as deep as the kernel allows rather than
//! the 128 of `TcpListener::bind`: a burst of connects beyond the backlog is dropped by
//! the kernel and retried by the clients a second later. The accept loop admits a
//! connection only under its [`Connections`] limit: over it the connection is closed at
//! once, unread, so the descriptors kept back stay free for what already runs (streams'
//! upstream dials, the metrics listener). When `accept` itself fails (out of descriptors)
//! it backs off instead of spinning, and both say so in the log at most once a second.
//!
//! With `reuse_port` the main listener is bound with `SO_REUSEPORT`, so that several
//! gateway processes share one port and the kernel spreads new connections across them.
//! The listener may also come ready-made from a service manager ([`crate::activation`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{lookup_host, TcpListener, TcpSocket, TcpStream, ToSocketAddrs};

use crate::connections::{Connections, Slot};
use crate::shared::Shared;
use crate::{http1, http2};

/// The backlog when `net.core.somaxconn` cannot be read: Linux's default since 5.4.
const FALLBACK_BACKLOG: u32 = 4096;

/// The deepest accept backlog the kernel grants (`net.core.somaxconn`; a larger request
/// is cut to it).
pub fn system_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Listens on the first of `address`'s resolutions that can be bound, with `backlog`, and
/// with `SO_REUSEPORT` when `reuse_port`.
pub async fn listen(
    address: impl ToSocketAddrs,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    let mut last_error = None;
    for address in lookup_host(address).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted gateway rebinds at once.
        socket.set_reuseaddr(true)?;
        // Every process on the port must set it, and the kernel lets only processes of
        // the same user join (so another user cannot take a share of the connections).
        if reuse_port {
            socket.set_reuseport(true)?;
        }
        match socket.bind(address).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// The first wait after `accept` fails; doubled while it keeps failing.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between attempts: descriptors freed are used within a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections from a listener while its [`Connections`] are under their limit.
pub struct Acceptor {
    listener: TcpListener,
    connections: Arc<Connections>,
    /// Names the listener in log lines (`HTTP Server`, `Metrics`).
    service: &'static str,
    refusals: EverySecond,
    failures: EverySecond,
    backoff: Duration,
}

impl Acceptor {
    pub fn new(
        listener: TcpListener,
        connections: Arc<Connections>,
        service: &'static str,
    ) -> Self {
        Self {
            listener,
            connections,
            service,
            refusals: EverySecond::default(),
            failures: EverySecond::default(),
            backoff: MIN_BACKOFF,
        }
    }

    /// The next connection admitted, with its place in the count. Cancel-safe.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = MIN_BACKOFF;
                    if let Some(slot) = self.connections.try_open() {
                        return (stream, peer, slot);
                    }
                    // Closed unread: the client sees its connection end at once.
                    drop(stream);
                    if let Some(held) = self.refusals.ready(Instant::now()) {
                        tracing::warn!(
                            "[SERVICE: {}] refused a connection from {peer}: all {} allowed connections are open{}",
                            self.service,
                            self.connections.limit(),
                            held_back(held, "refused")
                        );
                    }
                }
                // That one connection went away before it was accepted.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    if let Some(held) = self.failures.ready(Instant::now()) {
                        tracing::warn!(
                            "[SERVICE: {}] accept failed: {e}; retrying in {:?}{}",
                            self.service,
                            self.backoff,
                            held_back(held, "failed")
                        );
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Serves the connections `acceptor` admits until `shutdown` completes.
pub async fn run(mut acceptor: Acceptor, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer, slot) = acceptor.accept() => {
                tokio::spawn(serve_connection(stream, peer, slot, shared.clone()));
            }
            () = &mut shutdown => return,
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, slot: Slot, shared: Arc<Shared>) {
    let accepted = tokio::time::Instant::now();
    // Events are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    // What a client that stops reading can cost in kernel memory, and how soon a write
    // to it blocks (which is what `client_write_timeout` measures).
    if let Some(bytes) = shared.limits.send_buffer {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
    }
    // The handshake, like a first head, is due within `read_header_timeout` of the accept.
    let deadline = accepted + shared.limits.read_header_timeout;
    if let Some(tls) = &shared.tls {
        let tls = match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer} failed: {e}"),
            Err(_) => return tracing::debug!("TLS handshake with {peer}: not done in time"),
        };
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            return http2::serve(tls, peer, slot, shared).await;
        }
        return http1::serve(tls, peer, (accepted, BytesMut::new()), slot, shared).await;
    }
    if !shared.http2.use_h2c {
        return http1::serve(stream, peer, (accepted, BytesMut::new()), slot, shared).await;
    }
    let mut stream = stream;
    let read = match tokio::time::timeout_at(deadline, read_preface(&mut stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return tracing::debug!("connection from {peer}: {e}"),
        // Silent until the deadline: the gate closes it as it closes any such connection.
        Err(_) => BytesMut::new(),
    };
    if read.as_ref() == http2::PREFACE {
        let stream = http2::Rewound::new(read.freeze(), stream);
        return http2::serve(stream, peer, slot, shared).await;
    }
    http1::serve(stream, peer, (accepted, read), slot, shared).await;
}

/// Reads until the bytes are the HTTP/2 preface or cannot become it (an HTTP/1.1 head,
/// which the gate reads on from these bytes), or the client's side ends.
async fn read_preface(stream: &mut TcpStream) -> io::Result<BytesMut> {
    let mut read = BytesMut::with_capacity(http2::PREFACE.len());
    while read.len() < http2::PREFACE.len() && http2::PREFACE.starts_with(&read) {
        if stream.read_buf(&mut read).await? == 0 {
            break;
        }
    }
    Ok(read)
}

/// Errors of one connection (reset or aborted before it was accepted), not of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

fn held_back(count: u64, what: &str) -> String {
    match count {
        0 => String::new(),
        n => format!(" ({n} more {what} since the last such line)"),
    }
}

/// Lets a repeated log line through at most once a second.
#[derive(Debug, Default)]
struct EverySecond {
    last: Option<Instant>,
    /// Occurrences held back since the last line.
    held: u64,
}

impl EverySecond {
    /// `Some(held back since the last line)` when a line may be logged now.
    fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_line_is_logged_once_a_second_with_the_count_held_back() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut lines = EverySecond::default();
        assert_eq!(lines.ready(at(0)), Some(0));
        assert_eq!(lines.ready(at(10)), None);
        assert_eq!(lines.ready(at(999)), None);
        assert_eq!(lines.ready(at(1000)), Some(2));
        assert_eq!(lines.ready(at(1500)), None);
        assert_eq!(lines.ready(at(5000)), Some(1));
        assert_eq!(lines.ready(at(6000)), Some(0));
    }
}
