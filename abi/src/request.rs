//! The parsed request that travels with a hijacked connection.

use abi_stable::{
    std_types::{RString, RVec},
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
}

/// A claimed connection: the socket, the head, and what the host read past the head.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct HijackRequest {
    /// A connected TCP socket the receiver owns from the moment of the call.
    pub fd: i32,
    pub head: RequestHead,
    /// Bytes the host had already read after the head (a body, pipelined requests).
    pub read_ahead: RVec<u8>,
    /// Headers the plugin must add to the response it writes (the host's CORS headers, for
    /// instance): the protections the host applied before the handoff reach the client.
    pub response_headers: RVec<Header>,
}
