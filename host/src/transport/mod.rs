//! How a claimed request's client reaches its plugin (`abi::ClientTransport`): a plain
//! TCP socket goes over as itself (the fast path: the plugin owns the descriptor); a
//! stream the host must keep is lent through the bridged transport, whose calls the
//! plugin makes on its own thread into the host's code: [`IoTransport`] for HTTP/1.1 over
//! TLS (the host holds the session keys), [`H2Transport`] for an HTTP/2 stream (the
//! connection carries other streams). Neither costs a descriptor, a pipe or a host task,
//! and a poll allocates nothing: each stream's wakers are made once ([`wakers`]).

mod h2_stream;
mod io_stream;
mod wakers;

use std::io;

use abi::{ClientTransport, FfiTransportBox, FfiTransport_TO};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::RIoError;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub use h2_stream::H2Transport;
pub use io_stream::IoTransport;

/// A client byte stream the HTTP/1.1 side serves, and what it becomes at a claim.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The transport the plugin gets, with the bytes read past the head that it must see
    /// first in the request's `read_ahead` (a bridged transport reads them out itself).
    /// `expects_continue`: the client waits for `100 Continue`, which a bridged transport
    /// sends at the body's first read (the plugin writes it on a socket it owns).
    fn into_transport(
        self,
        read_ahead: BytesMut,
        expects_continue: bool,
    ) -> io::Result<(ClientTransport, Vec<u8>)>;
}

impl ClientStream for TcpStream {
    fn into_transport(
        self,
        read_ahead: BytesMut,
        _expects_continue: bool,
    ) -> io::Result<(ClientTransport, Vec<u8>)> {
        let socket = self.into_std()?;
        Ok((ClientTransport::Socket(socket.into()), read_ahead.to_vec()))
    }
}

impl ClientStream for TlsStream<TcpStream> {
    fn into_transport(
        self,
        read_ahead: BytesMut,
        expects_continue: bool,
    ) -> io::Result<(ClientTransport, Vec<u8>)> {
        let transport = IoTransport::new(self, read_ahead.freeze(), expects_continue);
        Ok((ClientTransport::Bridged(bridged(transport)), Vec::new()))
    }
}

/// A host transport as the object that crosses the ABI.
pub fn bridged(transport: impl abi::FfiTransport + 'static) -> FfiTransportBox {
    FfiTransport_TO::from_value(transport, TD_Opaque)
}

/// An error of `kind` with a message, as it crosses to the plugin.
fn error(kind: io::ErrorKind, message: impl Into<String>) -> RIoError {
    RIoError::from(io::Error::new(kind, message.into()))
}
