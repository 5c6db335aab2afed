//! The listening sockets, bound with an accept backlog as deep as the kernel allows
//! rather than the 128 of `TcpListener::bind`: a burst of connects beyond the backlog is
//! dropped by the kernel and retried by the clients a second later.

use std::io;

use tokio::net::{lookup_host, TcpListener, TcpSocket, ToSocketAddrs};

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

/// Listens on the first of `address`'s resolutions that can be bound, with `backlog`.
pub async fn listen(address: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let mut last_error = None;
    for address in lookup_host(address).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted gateway rebinds at once.
        socket.set_reuseaddr(true)?;
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
