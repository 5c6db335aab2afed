//! What travels with a hijacked connection: the client's transport (the socket, or a
//! bridged stream: [`crate::transport`]), the host's route decision, the parsed head, and
//! what the host's protections decided about the stream.

use std::os::fd::{FromRawFd, IntoRawFd};

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// One request header; the value is bytes because HTTP does not promise UTF-8.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: RString,
    pub value: RVec<u8>,
}

/// The request head the host parsed before handing the connection over.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: RString,
    /// The path without the query string, as the client sent it.
    pub path: RString,
    /// The query string without the `?`; empty when there is none.
    pub query: RString,
    pub headers: RVec<Header>,
    /// The client's address, `ip:port`.
    pub peer: RString,
}

impl RequestHead {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Whether the client waits for `100 Continue` before it sends its body (`Expect:
    /// 100-continue`, which curl sends with an HTTP/1.1 body over 1 KiB).
    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
    }
}

/// A route a plugin serves, as it declares it once when the host starts it: the host's
/// one routing rule (the most specific template wins) decides every request, and a
/// claimed request carries the index of its route here, so nothing matches a path twice.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct RouteDecl {
    /// The path template, in `path-template`'s syntax (`/sse/{id}`, `/feed/*`).
    pub endpoint: RString,
    /// Upper-case method names.
    pub methods: RVec<RString>,
}

/// A connected client TCP socket, owned: dropping it closes the socket.
///
/// Safe code can only make one from a `TcpStream` it owns; the raw constructor is
/// `unsafe` because a descriptor number alone proves nothing about who else uses it.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct ClientSocket {
    fd: i32,
}

impl ClientSocket {
    /// Takes ownership of `fd`.
    ///
    /// # Safety
    /// `fd` must be an open, connected TCP socket that no other owner will use or close:
    /// from this call on, the `ClientSocket` closes it.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw_fd(fd: i32) -> Self {
        Self { fd }
    }

    /// The socket as a standard stream (blocking mode as the host left it).
    #[allow(unsafe_code)]
    pub fn into_std(self) -> std::net::TcpStream {
        let fd = std::mem::ManuallyDrop::new(self).fd;
        // SAFETY: a `ClientSocket` is built only from a descriptor it owns (`From<TcpStream>`
        // or the `unsafe` constructor's contract), and `ManuallyDrop` keeps `Drop` from
        // closing it: ownership moves to the stream exactly once.
        unsafe { std::net::TcpStream::from_raw_fd(fd) }
    }
}

impl From<std::net::TcpStream> for ClientSocket {
    fn from(stream: std::net::TcpStream) -> Self {
        Self {
            fd: stream.into_raw_fd(),
        }
    }
}

impl Drop for ClientSocket {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: as in `into_std`: the descriptor is this socket's alone, closed once here.
        drop(unsafe { std::net::TcpStream::from_raw_fd(self.fd) });
    }
}

/// A claimed request: its client's transport, the head, and what the host read past it.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct HijackRequest {
    pub client: crate::ClientTransport,
    /// The protocol the client spoke (for logs and stats; the transport frames it).
    pub http_version: crate::HttpVersion,
    /// Which of the plugin's [`RouteDecl`]s the host's route decision picked.
    pub route: u32,
    pub head: RequestHead,
    /// Bytes the host had already read after the head (a body, pipelined requests), for a
    /// socket; a bridged transport gives them first through its `poll_read` instead.
    pub read_ahead: RVec<u8>,
    /// Headers the plugin must add to the response it writes (the host's CORS headers, for
    /// instance): the protections the host applied before the handoff reach the client.
    pub response_headers: RVec<Header>,
    /// When a JWT authorised the request: milliseconds until it expires (its `exp` plus
    /// the validator's leeway, from the handoff). The stream must end by then.
    pub token_expires_in_ms: ROption<u64>,
    /// Held for as long as the connection (or the HTTP/2 stream) is open; see
    /// [`crate::ConnectionSlot`].
    pub slot: crate::ConnectionSlot,
    /// The host's root `max_body_bytes`: the largest request body the plugin takes unless
    /// its route sets its own (a larger one gets 413 before anything is sent upstream).
    pub max_body_bytes: u64,
    /// Milliseconds left of the host's `read_timeout` (from the request's first byte):
    /// the body must be in by then, or the plugin answers 408. `RNone`: no limit.
    pub body_deadline_in_ms: ROption<u64>,
}
