//! The bridged transport: how a claimed request reaches a plugin when the host must keep
//! its connection and so cannot hand over a socket (TLS, where the host holds the session
//! keys; HTTP/2, where the connection carries other streams).
//!
//! Host and plugin each link their own copy of tokio (a cdylib has its own statics), so
//! nothing runtime-bound crosses: the plugin polls the host's [`FfiTransport`] object with
//! an [`FfiWaker`], a stable-ABI object around the plugin task's `std::task::Waker`. The
//! host keeps it and calls [`FfiWake::wake`] (plugin code, through the vtable, from any
//! host thread) once the transport can make progress, which schedules the plugin's task on
//! the plugin's runtime. The plugin's calls run the host's code on the plugin's thread: no
//! pipe, no host task and no descriptor per stream; one copy per direction.
//!
//! Plain-TCP HTTP/1.1 keeps the fast path: the socket itself ([`ClientTransport::Socket`]).

use abi_stable::std_types::{RIoError, RResult, RSlice, RSliceMut, RVec};
use abi_stable::StableAbi;

use crate::request::{ClientSocket, Header};

pub use ffi::{FfiTransport, FfiTransport_TO, FfiWake, FfiWake_TO};

/// `std::task::Poll` with a stable layout.
#[repr(u8)]
#[derive(StableAbi, Debug, PartialEq, Eq)]
pub enum FfiPoll<T> {
    Ready(T),
    Pending,
}

impl<T> From<std::task::Poll<T>> for FfiPoll<T> {
    fn from(poll: std::task::Poll<T>) -> Self {
        match poll {
            std::task::Poll::Ready(value) => FfiPoll::Ready(value),
            std::task::Poll::Pending => FfiPoll::Pending,
        }
    }
}

impl<T> From<FfiPoll<T>> for std::task::Poll<T> {
    fn from(poll: FfiPoll<T>) -> Self {
        match poll {
            FfiPoll::Ready(value) => std::task::Poll::Ready(value),
            FfiPoll::Pending => std::task::Poll::Pending,
        }
    }
}

/// The response head a plugin answers with, structured so that the host can write it as
/// HTTP/1.1 bytes (over TLS) or as an HTTP/2 HEADERS frame. The body is delimited by the
/// transport: END_STREAM on HTTP/2, the connection's end (TLS close_notify, then FIN) on
/// HTTP/1.1, where the host adds `Connection: close`. For HTTP/2 the host drops the
/// headers that are connection-specific there (`Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`): they are a protocol error.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: RVec<Header>,
}

/// Reference counted: the host stores one with an atomic increment.
pub type FfiWaker = FfiWake_TO<'static, abi_stable::std_types::RArc<()>>;

/// A boxed transport as it crosses the boundary; the plugin owns it.
pub type FfiTransportBox = FfiTransport_TO<'static, abi_stable::std_types::RBox<()>>;

/// The protocol the client spoke, for the plugin's logs and stats.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    Http11,
    Http2,
}

impl std::fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HttpVersion::Http11 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
        })
    }
}

/// How a claimed request's client reaches the plugin.
#[repr(u8)]
#[derive(StableAbi, Debug)]
pub enum ClientTransport {
    /// Plain-TCP HTTP/1.1: the socket itself.
    Socket(ClientSocket),
    /// TLS or HTTP/2: the host keeps the connection and lends this one request's stream.
    Bridged(FfiTransportBox),
}

impl std::fmt::Debug for FfiTransportBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FfiTransportBox")
    }
}

/// The FFI objects' traits, on their own because `#[sabi_trait]` generates `unsafe` code.
mod ffi {
    #![allow(unsafe_code)]

    use abi_stable::sabi_trait;

    use super::*;

    /// Wakes one plugin task. Implemented by the plugin around its task's `Waker`, called
    /// by the host from any thread.
    #[sabi_trait]
    pub trait FfiWake: Send + Sync + Clone + Unpin {
        /// Schedules the task again; any number of times, from any thread.
        #[sabi(last_prefix_field)]
        fn wake(&self);
    }

    /// A client's byte stream for one claimed request, owned by the plugin, implemented by
    /// the host. Each `poll_*` follows `std::future`'s rules: `Pending` means the host kept
    /// `waker` and will wake it once the call can make progress. The host keeps the waker
    /// of the latest read, write (and flush and shutdown) and `poll_closed` apart, so one
    /// task may wait on all of them at once.
    ///
    /// Dropping the transport ends the response cleanly (END_STREAM; close_notify and
    /// FIN), as closing a socket ends a close-delimited body; [`FfiTransport::reset`]
    /// aborts it. A plugin that drops it without having sent a head gets its client a 502.
    #[sabi_trait]
    pub trait FfiTransport: Send + Unpin {
        /// Sends (HTTP/2) or queues (HTTP/1.1: the next write or flush writes it) the
        /// response head. Exactly once, before any body byte; a second call is an error.
        fn send_head(&mut self, head: ResponseHead) -> RResult<(), RIoError>;

        /// Reads request bytes into `buf`: what the host had read past the head first,
        /// then the rest of the body (HTTP/2) or of the connection (HTTP/1.1).
        /// `Ready(Ok(0))` is their end, at once for an HTTP/2 GET, which ends its stream
        /// with its HEADERS: it does not mean the client left (see `poll_closed`).
        /// The first call on a request that expects `100 Continue` (`Expect:
        /// 100-continue`), before any response head and before any body byte came, sends
        /// the interim first: a plugin that refuses the body answers without reading it.
        fn poll_read(
            &mut self,
            waker: &FfiWaker,
            buf: RSliceMut<'_, u8>,
        ) -> FfiPoll<RResult<usize, RIoError>>;

        /// Writes response-body bytes gathered from `bufs`; `Ready(Ok(n))` took the first
        /// `n`. Pending while the client's flow-control window (HTTP/2) or rustls' buffer
        /// and the socket (TLS) are full: a client that stops reading makes this pend, as
        /// a TCP socket's write does. Once the client is gone, an error of kind
        /// `ConnectionReset`.
        fn poll_write(
            &mut self,
            waker: &FfiWaker,
            bufs: RSlice<'_, RSlice<'_, u8>>,
        ) -> FfiPoll<RResult<usize, RIoError>>;

        /// Writes out what the host still holds: the queued HTTP/1.1 head, TLS records.
        /// Ready at once on HTTP/2, where accepted bytes are the connection's to send.
        fn poll_flush(&mut self, waker: &FfiWaker) -> FfiPoll<RResult<(), RIoError>>;

        /// Ready, with the cause, once the client is gone: it reset the stream, its
        /// connection closed, or (HTTP/1.1) it closed its side. What the plugin waits on
        /// while it has nothing to write. On HTTP/1.1 it reads and drops what the client
        /// sends after the request, so a plugin uses it or `poll_read`, not both.
        fn poll_closed(&mut self, waker: &FfiWaker) -> FfiPoll<RIoError>;

        /// Ends the response body cleanly (END_STREAM; close_notify then FIN). Ready once
        /// the host took the end; bytes written before it still reach the client.
        fn poll_shutdown(&mut self, waker: &FfiWaker) -> FfiPoll<RResult<(), RIoError>>;

        /// Aborts the response: RST_STREAM(CANCEL) on HTTP/2; on HTTP/1.1 the connection
        /// closed with a reset and no close_notify. For a stalled client, whose unread
        /// bytes a clean end would wait behind.
        #[sabi(last_prefix_field)]
        fn reset(&mut self);
    }
}
