//! How the load tool's streams reach the server, chosen once per run: cleartext or TLS
//! (`https://`), HTTP/1.1 (a connection per stream) or HTTP/2 (streams multiplexed over
//! connections: ALPN `h2` over TLS, prior knowledge over cleartext, h2c). The four
//! combinations are the only difference between runs; reading and counting events is the
//! same for all of them ([`Body`] is what the reader sees).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::Bytes;
use socket2::{Domain, Socket as Socket2, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::tls::{client_config, TlsError, Trust};
use super::url::StreamUrl;

/// The HTTP version a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One connection per stream.
    Http1,
    /// This many streams on each connection (the last connection takes what is left).
    Http2 {
        streams_per_connection: NonZeroUsize,
    },
}

impl Protocol {
    /// What the TLS client offers by ALPN: one protocol, so the server cannot pick another.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => b"http/1.1",
            Protocol::Http2 { .. } => b"h2",
        }
    }
}

/// How HTTP/2 is asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2 {
    /// `--http2`: over TLS, negotiated by ALPN (what browsers speak).
    OverTls,
    /// `--h2c`: cleartext with prior knowledge (RFC 9113 §3.3).
    Cleartext,
}

/// A run's transport: TLS or not, and the protocol over it.
#[derive(Debug, Clone)]
pub struct Transport {
    /// For `https://`: the client config, offering `protocol`'s ALPN.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub protocol: Protocol,
    /// The address connections come from; `None`: the kernel's choice. One source
    /// address has about 28,000 ephemeral ports towards one server address.
    pub source: Option<IpAddr>,
}

/// Why the options do not make a transport for the URL.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("https:// needs --cacert FILE (the CA to trust) or --insecure")]
    NoTrust,
    #[error("--cacert and --insecure are for https:// URLs")]
    TrustWithoutTls,
    #[error("--http2 is HTTP/2 over TLS (an https:// URL); --h2c is cleartext HTTP/2")]
    Http2WithoutTls,
    #[error("--h2c is cleartext HTTP/2 (an http:// URL); over TLS --http2 negotiates h2")]
    H2cOverTls,
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Transport {
    /// The transport for `url` with the command line's `trust` and `http2` (and its
    /// streams per connection).
    pub fn choose(
        url: &StreamUrl,
        trust: Option<Trust>,
        http2: Option<(Http2, NonZeroUsize)>,
    ) -> Result<Self, TransportError> {
        let protocol = match http2 {
            None => Protocol::Http1,
            Some((Http2::OverTls, _)) if !url.tls => return Err(TransportError::Http2WithoutTls),
            Some((Http2::Cleartext, _)) if url.tls => return Err(TransportError::H2cOverTls),
            Some((_, streams_per_connection)) => Protocol::Http2 {
                streams_per_connection,
            },
        };
        let tls = match (url.tls, trust) {
            (true, Some(trust)) => Some(client_config(&trust, protocol.alpn())?),
            (true, None) => return Err(TransportError::NoTrust),
            (false, Some(_)) => return Err(TransportError::TrustWithoutTls),
            (false, None) => None,
        };
        Ok(Self {
            tls,
            protocol,
            source: None,
        })
    }

    /// Cleartext HTTP/1.1, a connection per stream.
    pub fn plain() -> Self {
        Self {
            tls: None,
            protocol: Protocol::Http1,
            source: None,
        }
    }
}

/// A connection to the server: TCP, or TLS over it (boxed: rustls' state is a kilobyte).
pub(super) type Socket = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Dials `addr`, with TLS makes the handshake for `url`'s host, and writes `first` (the
/// request head; empty for HTTP/2, whose handshake writes its own). The server must have
/// chosen the offered protocol by ALPN; an HTTP/1.1 server that chose none is taken as
/// speaking HTTP/1.1, as curl does, but HTTP/2 must be agreed on.
pub(super) async fn dial(
    addr: SocketAddr,
    url: &StreamUrl,
    transport: &Transport,
    first: &[u8],
) -> std::io::Result<Socket> {
    let Some(config) = &transport.tls else {
        return connect_writing(addr, transport.source, first)
            .await
            .map(Either::Left);
    };
    let tcp = connect_writing(addr, transport.source, &[]).await?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| std::io::Error::other(format!("{}: {e}", url.host)))?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?;
    let chosen = tls.get_ref().1.alpn_protocol();
    let wanted = transport.protocol.alpn();
    let http2 = matches!(transport.protocol, Protocol::Http2 { .. });
    if chosen.is_some_and(|chosen| chosen != wanted) || (http2 && chosen.is_none()) {
        return Err(std::io::Error::other(format!(
            "the server chose {} by ALPN, not {}",
            chosen.map_or("nothing".into(), String::from_utf8_lossy),
            String::from_utf8_lossy(wanted)
        )));
    }
    let mut tls = Box::new(tls);
    tls.write_all(first).await?;
    Ok(Either::Right(tls))
}

/// A TCP connection to `addr` (from `source`), with `first` written in the same step as
/// the connect, before this task yields: a server times a new connection's first bytes
/// from its accept (`read_header_timeout`), and a load process that waits for the
/// connect's completion to come round among thousands of streams' reads (tokio's
/// `TcpSocket::connect` waits for the reactor even when the handshake is done, as on
/// loopback by the time `connect` returns) can write them seconds late. When the connect
/// is still in progress, what is not sent yet is written once it completes.
async fn connect_writing(
    addr: SocketAddr,
    source: Option<IpAddr>,
    first: &[u8],
) -> std::io::Result<TcpStream> {
    let socket = Socket2::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => return Err(e),
        _ => {}
    }
    let sent = match socket.send(first) {
        Ok(sent) => sent,
        // Still connecting (or `first` is empty): the rest after the handshake.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let mut tcp = TcpStream::from_std(socket.into())?;
    if first.is_empty() {
        // Connected, or why not, as `TcpSocket::connect` tells it.
        tcp.writable().await?;
        if let Some(e) = tcp.take_error()? {
            return Err(e);
        }
    }
    // A connect that failed fails this write.
    tcp.write_all(&first[sent..]).await?;
    Ok(tcp)
}

/// A stream's body as it arrives, whatever carries it. HTTP/1.1 framing (chunked or not)
/// is the reader's; over HTTP/2 the DATA frames are the payload.
pub(super) enum Body {
    Http1 {
        socket: Socket,
        buf: Vec<u8>,
    },
    Http2 {
        stream: h2::RecvStream,
        /// The last DATA frame read.
        data: Bytes,
    },
}

impl Body {
    pub(super) fn http1(socket: Socket) -> Self {
        Body::Http1 {
            socket,
            buf: vec![0; 64 * 1024],
        }
    }

    pub(super) fn http2(stream: h2::RecvStream) -> Self {
        Body::Http2 {
            stream,
            data: Bytes::new(),
        }
    }

    /// The next bytes that arrived together; `None` once the stream ended or broke.
    pub(super) async fn next(&mut self) -> Option<&[u8]> {
        match self {
            Body::Http1 { socket, buf } => match socket.read(buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(&buf[..n]),
            },
            Body::Http2 { stream, data } => {
                *data = stream.data().await?.ok()?;
                // Released at once: the stream's window is the server's to fill, so what is
                // measured is the server's latency, never this client's reading.
                let _ = stream.flow_control().release_capacity(data.len());
                Some(&data[..])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUNDRED: NonZeroUsize = NonZeroUsize::new(100).unwrap();

    fn choose(
        url: &str,
        trust: Option<Trust>,
        http2: Option<Http2>,
    ) -> Result<Transport, TransportError> {
        Transport::choose(&url.parse().unwrap(), trust, http2.map(|h| (h, HUNDRED)))
    }

    #[test]
    fn the_url_and_the_flags_make_one_of_four_transports() {
        let pki = testkit::TestPki::new();
        let ca = || Some(Trust::Ca(pki.ca.clone()));
        let plain = choose("http://h:1/", None, None).unwrap();
        assert!(plain.tls.is_none());
        assert_eq!(plain.protocol, Protocol::Http1);
        let tls = choose("https://h:1/", ca(), None).unwrap();
        assert_eq!(tls.tls.unwrap().alpn_protocols, [b"http/1.1".to_vec()]);
        assert_eq!(tls.protocol, Protocol::Http1);
        let h2 = choose("https://h:1/", Some(Trust::Insecure), Some(Http2::OverTls)).unwrap();
        assert_eq!(h2.tls.unwrap().alpn_protocols, [b"h2".to_vec()]);
        let h2c = choose("http://h:1/", None, Some(Http2::Cleartext)).unwrap();
        assert!(h2c.tls.is_none());
        let per = Protocol::Http2 {
            streams_per_connection: HUNDRED,
        };
        assert_eq!((h2.protocol, h2c.protocol), (per, per));
    }

    #[test]
    fn a_flag_that_does_not_fit_the_url_is_refused() {
        let refused = |url, trust, http2| choose(url, trust, http2).unwrap_err().to_string();
        let insecure = Some(Trust::Insecure);
        assert_eq!(
            refused("https://h/", None, None),
            "https:// needs --cacert FILE (the CA to trust) or --insecure"
        );
        assert_eq!(
            refused("http://h/", insecure.clone(), None),
            "--cacert and --insecure are for https:// URLs"
        );
        assert!(refused("http://h/", None, Some(Http2::OverTls))
            .starts_with("--http2 is HTTP/2 over TLS"));
        assert!(refused("https://h/", insecure, Some(Http2::Cleartext))
            .starts_with("--h2c is cleartext"));
    }
}
