//! An upstream connection: a socket, or TLS over one (an `https://` backend host).
//!
//! Both kinds are read through the same three calls, `readable`, a poll of `poll_read`
//! (the pump's `read_ready`) and `read`, so the relay, the pump and fan-out keep one code
//! path. A plain socket is read as before, with nothing in between; TLS is boxed so that
//! a plain stream's enum is a socket and a tag, and a plain stream's task is no larger
//! for TLS's sake.
//!
//! TLS's readiness is not only the socket's: rustls may hold plaintext it decrypted with
//! an earlier read (several records arrive in one segment, or a record is larger than the
//! buffer), which no epoll event announces. `readable` is ready at once then, so the
//! pump's read-when-readable loop never waits on a socket with events already received.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl From<TcpStream> for Stream {
    fn from(socket: TcpStream) -> Self {
        Stream::Plain(socket)
    }
}

/// TLS over `socket` to the host `name` (sent as SNI, and the name its certificate must
/// hold), with the plugin's one client config (`client_tls`); the error says why it
/// failed (`invalid peer certificate: UnknownIssuer`, `received fatal alert:
/// CertificateRequired`).
pub async fn handshake(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    socket: TcpStream,
) -> io::Result<Stream> {
    let tls = connector.connect(name.clone(), socket).await?;
    Ok(Stream::Tls(Box::new(tls)))
}

impl Stream {
    /// Waits until a read would return something (bytes, the end, or an error).
    ///
    /// Through the socket's read waker (`poll_read_ready`, the slot `poll_read` uses too),
    /// not tokio's `readable`, whose wait joins and leaves a list of waiters (a lock each
    /// time) on every wake of the pump; one task reads a stream, so one slot is enough.
    pub async fn readable(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| match &*self {
            Stream::Plain(socket) => socket.poll_read_ready(cx),
            Stream::Tls(tls) => {
                let (socket, session) = tls.get_ref();
                // `wants_read` is false when plaintext is buffered or the origin's
                // close_notify came: a read returns without the socket.
                if session.wants_read() {
                    socket.poll_read_ready(cx)
                } else {
                    Poll::Ready(Ok(()))
                }
            }
        })
        .await
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_read(cx, buf),
            // An origin that closes without close_notify is an error here (a truncation),
            // which the relay logs as a broken upstream and resumes.
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Waker;

    use testkit::{ClientAuth, TestPki, ALPN_HTTP1};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;

    /// A record read in part leaves the rest as rustls' plaintext, with the socket drained:
    /// `readable` must not wait for the socket then (the pump would sit on received events).
    #[tokio::test]
    async fn plaintext_that_rustls_holds_is_readable_without_the_socket() {
        let pki = TestPki::new();
        let config = pki.server_config(&pki.server, ALPN_HTTP1, ClientAuth::None);
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(socket).await.unwrap();
            tls.write_all(&[b'x'; 100]).await.unwrap();
            tls.flush().await.unwrap();
            tls
        });
        let connector = TlsConnector::from(pki.client_config(ALPN_HTTP1));
        let name = ServerName::try_from("localhost").unwrap();
        let socket = TcpStream::connect(addr).await.unwrap();
        let mut stream = handshake(&connector, &name, socket).await.unwrap();
        let _origin = origin.await.unwrap();
        let mut first = [0; 10];
        stream.read_exact(&mut first).await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let ready = pin!(stream.readable()).poll(&mut cx);
        assert!(matches!(ready, Poll::Ready(Ok(()))), "{ready:?}");
        let mut rest = [0; 90];
        stream.read_exact(&mut rest).await.unwrap();
        assert!(first.iter().chain(&rest).all(|&b| b == b'x'));
    }
}
