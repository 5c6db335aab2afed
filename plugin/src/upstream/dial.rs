//! One host: dial it, send the request, read the response head; and why that failed,
//! as a type, because what follows depends on it: a timeout is a 504 and a refusal or a
//! broken head a 502 (both count against the host: failover, ejection), while a dial that
//! fails because this process ran short (descriptors, buffers, local ports) blames no host
//! (503, no failover, no ejection).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wire::response_head::{self, HeadError, Parsed, ResponseHead};

/// Why one host gave no response head.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("dial timed out")]
    DialTimedOut,
    #[error("no response head in time")]
    HeadTimedOut,
    #[error("cannot resolve: {0}")]
    Resolve(io::Error),
    #[error("resolves to no address")]
    NoAddress,
    #[error("cannot make a socket: {0}")]
    Socket(io::Error),
    /// Refused, unreachable, reset while connecting.
    #[error("unreachable: {0}")]
    Unreachable(io::Error),
    /// The TLS handshake failed: the certificate is not trusted or not the host's, the
    /// origin wants a client certificate, or it speaks no TLS.
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    /// Connected, but no usable answer.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// This process is short of descriptors, kernel buffers or local ports: another host
    /// would fare no better, and this one is not to blame.
    #[error("no local resources to dial: {0}")]
    LocalResources(io::Error),
    /// Answered with a status in the route's `retry_on`, with another host left to try.
    #[error("answered {0}, which the route retries elsewhere (retry_on)")]
    RetryOn(http::StatusCode),
    /// The route lists no host (the config refuses that; kept total rather than panicking).
    #[error("no backend host")]
    NoHost,
}

impl Failure {
    /// Counts against the host: failover to the next one, and ejection after
    /// `eject_after` in a row.
    pub fn blames_host(&self) -> bool {
        !matches!(self, Failure::LocalResources(_))
    }

    /// The request may have reached the host (it was sent, or being sent): one that is
    /// not resumed is not sent to another, which could act on it a second time.
    pub fn after_sending(&self) -> bool {
        matches!(self, Failure::HeadTimedOut | Failure::Exchange(_))
    }

    pub fn timed_out(&self) -> bool {
        matches!(self, Failure::DialTimedOut | Failure::HeadTimedOut)
    }

    /// `e`, a failure while dialling, as the host's (`host`) or as this process's.
    fn dialling(e: io::Error, host: fn(io::Error) -> Failure) -> Self {
        if is_local(&e) {
            Failure::LocalResources(e)
        } else {
            host(e)
        }
    }
}

/// Errors that say this process ran short, not the host: descriptors (EMFILE, ENFILE),
/// kernel memory and buffers (ENOBUFS, ENOMEM), local ports (EADDRNOTAVAIL).
fn is_local(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Connects to `addr` (`host:port`) as `TcpStream::connect` does, trying each address it
/// resolves to, but telling a local shortage (when resolving, making the socket or
/// connecting) from the host's failure.
pub async fn dial(addr: &str) -> Result<TcpStream, Failure> {
    let addresses = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Failure::dialling(e, Failure::Resolve))?;
    let mut last = Failure::NoAddress;
    for address in addresses {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        };
        let socket = match socket.map_err(|e| Failure::dialling(e, Failure::Socket)) {
            Ok(socket) => socket,
            Err(local @ Failure::LocalResources(_)) => return Err(local),
            // No IPv6 here, say: the next address may do.
            Err(failure) => {
                last = failure;
                continue;
            }
        };
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => match Failure::dialling(e, Failure::Unreachable) {
                local @ Failure::LocalResources(_) => return Err(local),
                failure => last = failure,
            },
        }
    }
    Err(last)
}

/// Why a connected host gave no usable response head.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("sending the request: {0}")]
    Send(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    #[error("closed the connection before answering")]
    Closed,
    #[error("response head larger than read_buffer_bytes ({0})")]
    TooLarge(usize),
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// Sends the request and reads the response head into `buf`; returns it with how much of
/// `buf` was filled (the body's first bytes follow the head).
pub async fn exchange(
    upstream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    method: &http::Method,
    request: &[u8],
    buf: &mut [u8],
) -> Result<(ResponseHead, usize), ExchangeError> {
    upstream
        .write_all(request)
        .await
        .map_err(ExchangeError::Send)?;
    // TLS may hold the last records back until flushed (a socket has nothing to flush).
    upstream.flush().await.map_err(ExchangeError::Send)?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(ExchangeError::TooLarge(buf.len()));
        }
        let n = upstream
            .read(&mut buf[filled..])
            .await
            .map_err(ExchangeError::Read)?;
        if n == 0 {
            return Err(ExchangeError::Closed);
        }
        filled += n;
        if let Parsed::Complete(head) = response_head::parse(&buf[..filled], method)? {
            return Ok((head, filled));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use wire::framing::{self, FramingError};

    use super::*;

    /// An origin's head whose framing two readers could take two ways is refused by the
    /// rule the gate applies to a client's request (one `wire::framing` decision), and the
    /// refusal is the host's fault: a 502 that fails over and counts towards ejection.
    #[tokio::test]
    async fn an_origin_head_is_refused_where_a_client_s_would_be() {
        let cases: [(&[(&str, &str)], FramingError); 4] = [
            (
                &[("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
                FramingError::LengthAndTransferEncoding,
            ),
            (
                &[("Content-Length", "3"), ("Content-Length", "3")],
                FramingError::DuplicateLength,
            ),
            (
                &[("Transfer-Encoding", "chunked, identity")],
                FramingError::ChunkedNotLast,
            ),
            (
                &[("Transfer-Encoding", "gzip, chunked")],
                FramingError::UnsupportedTransferCoding,
            ),
        ];
        for (headers, expected) in cases {
            let as_parsed: Vec<_> = headers
                .iter()
                .map(|&(name, value)| httparse::Header {
                    name,
                    value: value.as_bytes(),
                })
                .collect();
            assert_eq!(framing::request(&as_parsed), Err(expected), "the gate");

            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut upstream = dial(&listener.local_addr().unwrap().to_string())
                .await
                .unwrap();
            let (mut origin, _) = listener.accept().await.unwrap();
            let lines: String = headers
                .iter()
                .map(|(n, v)| format!("{n}: {v}\r\n"))
                .collect();
            let answer = format!("HTTP/1.1 200 OK\r\n{lines}\r\n3\r\nabc\r\n0\r\n\r\n");
            origin.write_all(answer.as_bytes()).await.unwrap();
            let mut buf = [0; 1024];
            let failure = Failure::from(
                exchange(
                    &mut upstream,
                    &http::Method::GET,
                    b"GET / HTTP/1.1\r\n\r\n",
                    &mut buf,
                )
                .await
                .unwrap_err(),
            );
            assert!(
                matches!(
                    &failure,
                    Failure::Exchange(ExchangeError::Head(HeadError::Framing(e))) if *e == expected
                ),
                "{headers:?}: {failure}"
            );
            assert!(failure.blames_host() && !failure.timed_out(), "{failure}");
        }
    }
}
