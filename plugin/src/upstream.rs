//! Opening a stream's upstream: dial a backend host (failing over along the balancer's
//! order), send the request and read the response head; `wire::response_head` parses it
//! and decides the body's framing under the rules the gate applies to clients.
//!
//! Every value a client sends that goes upstream (forwarded header values, its
//! `Last-Event-ID`, the query string, the captured path parameters) passes `wire::clean`
//! when its [`Request`] is made, before anything is dialled; [`request_bytes`] is the one
//! writer of an upstream request head. A dial that fails because this process ran short
//! (descriptors, buffers, local ports) blames no host: no failover, no ejection.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use abi::RequestHead;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Timeout;
use wire::clean::{self, Unclean};
use wire::framing::Framing;
use wire::response_head::{self, HeadError, Parsed, ResponseHead};

use crate::config::{LoadBalance, Route, StickyKey};
use crate::pool::{Buffer, BufferPool};
use crate::stats::RouteStats;
use crate::RouteState;

/// An answered upstream request.
pub struct Upstream {
    pub stream: TcpStream,
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Framing,
    /// The buffer the head was read into, and the body bytes read with it.
    pub first: Option<(Buffer, Range<usize>)>,
}

/// Why no backend host gave a response head.
#[derive(Debug)]
pub struct Unavailable {
    pub reason: String,
    pub cause: Cause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The last host tried failed (502).
    Failed,
    /// The last host tried timed out (504).
    TimedOut,
    /// This process could not open a connection (503 with `Retry-After`); no host blamed.
    LocalResources,
}

/// Why one host gave no response head.
enum Failure {
    /// The host's failure, or the network's: counted against it (failover, ejection).
    Host { reason: String, timed_out: bool },
    /// This process is short of descriptors, kernel buffers or local ports: another host
    /// would fare no better, and this one is not to blame.
    Local(io::Error),
}

impl Failure {
    fn of(what: &str, e: io::Error) -> Self {
        if is_local(&e) {
            Failure::Local(e)
        } else {
            Failure::Host {
                reason: format!("{what}: {e}"),
                timed_out: false,
            }
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

/// A request the plugin will not forward: answered 400 before any upstream is dialled or
/// any fan-out source joined. The reason is logged; the client gets a general one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Unclean(#[from] Unclean),
    /// Named here: forwarded headers come from the config, `Unclean` names static ones.
    #[error("a control character in the forwarded header {0}")]
    ForwardedHeader(String),
}

/// Adds the payload ranges of `body`'s bytes in `buf[filled]` to `ranges` (as ranges of
/// `buf`); `true` once the body is whole.
pub fn payload(
    body: &mut Framing,
    buf: &[u8],
    filled: Range<usize>,
    ranges: &mut Vec<Range<usize>>,
) -> Result<bool, chunked::MalformedChunk> {
    let base = filled.start;
    body.take(&buf[filled], |r| ranges.push(base + r.start..base + r.end))?;
    Ok(body.is_done())
}

/// What to ask every host for: taken from the client's request head, which is then
/// dropped (a stream lives for hours and needs only this).
pub struct Request {
    /// The upstream path and query.
    pub target: String,
    /// The forwarded header lines (`Name: value\r\n`), without `Last-Event-ID`.
    pub headers: Vec<u8>,
    /// Sent as `Last-Event-ID`: the client's (when forwarded) on the first request, the
    /// last event the client received on a resumption.
    pub last_event_id: Option<String>,
    pub sticky_key: Option<Vec<u8>>,
}

impl Request {
    /// The request `head` makes of the route's hosts, once every value copied from it is
    /// clean.
    pub fn new(route: &Route, head: &RequestHead) -> Result<Self, Refused> {
        let mut headers = Vec::new();
        let mut last_event_id = None;
        for name in &route.forward_headers {
            for h in head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
            {
                if name.eq_ignore_ascii_case("last-event-id") {
                    last_event_id = Some(client_last_event_id(&h.value)?);
                    continue;
                }
                clean::header_value("forwarded", &h.value)
                    .map_err(|_| Refused::ForwardedHeader(name.clone()))?;
                wire::header_line(&mut headers, name, &h.value);
            }
        }
        Ok(Self {
            target: target(route, &head.path, &head.query)?,
            headers,
            last_event_id,
            sticky_key: sticky_key(route, head),
        })
    }
}

/// A client's `Last-Event-ID` header value, if it is clean.
pub fn client_last_event_id(value: &[u8]) -> Result<String, Unclean> {
    let id = String::from_utf8_lossy(value).into_owned();
    clean::last_event_id(&id)?;
    Ok(id)
}

/// The upstream path and query: the route's pattern with the captured params, plus the
/// client's query string; refused if any of them is not clean.
pub fn target(route: &Route, path: &str, query: &str) -> Result<String, Unclean> {
    let params = route.template.matches(path).unwrap_or_default();
    for (_, value) in &params {
        // A trailing `/*` captures several segments: each must stay one.
        for segment in value.split('/') {
            clean::path_param(segment)?;
        }
    }
    clean::query(query)?;
    let mut target = path_template::substitute(&route.backend_url_pattern, &params);
    if !query.is_empty() {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(query);
    }
    Ok(target)
}

/// The key a sticky route hashes; `None` (round robin) when the request lacks it.
fn sticky_key(route: &Route, head: &RequestHead) -> Option<Vec<u8>> {
    let LoadBalance::Sticky(key) = &route.load_balance else {
        return None;
    };
    match key {
        StickyKey::Header(name) => head.header(name).map(<[u8]>::to_vec),
        StickyKey::Cookie(name) => head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .find_map(|h| wire::cookie(&h.value, name))
            .map(<[u8]>::to_vec),
        StickyKey::Ip => {
            let peer = head.peer.as_str();
            let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
            Some(ip.as_bytes().to_vec())
        }
    }
}

/// Tries the route's hosts in the balancer's order until one answers with a head.
pub async fn open(
    route: &RouteState,
    request: &Request,
    pool: &std::sync::Arc<BufferPool>,
) -> Result<Upstream, Unavailable> {
    let mut last = Unavailable {
        reason: "no backend host".into(),
        cause: Cause::Failed,
    };
    for (attempt, i) in route
        .balancer
        .order(request.sticky_key.as_deref())
        .into_iter()
        .enumerate()
    {
        if attempt > 0 {
            RouteStats::add(&route.stats.failovers, 1);
        }
        let backend = &route.config.backends[i];
        match open_one(route, i, request, pool).await {
            Ok(upstream) => {
                route.balancer.succeeded(i);
                return Ok(upstream);
            }
            Err(Failure::Local(e)) => {
                return Err(Unavailable {
                    reason: format!(
                        "upstream {}{}: no local resources to dial: {e}",
                        backend.base, request.target
                    ),
                    cause: Cause::LocalResources,
                })
            }
            Err(Failure::Host { reason, timed_out }) => {
                route.balancer.failed(i);
                last = Unavailable {
                    reason: format!("upstream {}{}: {reason}", backend.base, request.target),
                    cause: if timed_out {
                        Cause::TimedOut
                    } else {
                        Cause::Failed
                    },
                };
            }
        }
    }
    Err(last)
}

/// One host.
async fn open_one(
    route: &RouteState,
    i: usize,
    request: &Request,
    pool: &std::sync::Arc<BufferPool>,
) -> Result<Upstream, Failure> {
    let config = &route.config;
    let backend = &config.backends[i];
    let timed_out = |reason: &str| Failure::Host {
        reason: reason.to_owned(),
        timed_out: true,
    };
    let mut stream = within(config.dial_timeout, dial(&backend.addr))
        .await
        .map_err(|_| timed_out("dial timed out"))??;
    let _ = stream.set_nodelay(true);
    let bytes = request_bytes(&backend.authority, request);
    let mut buf = pool.take();
    let (head, filled) = within(
        config.response_header_timeout,
        exchange(&mut stream, &bytes, &mut buf),
    )
    .await
    .map_err(|_| timed_out("no response head in time"))?
    .map_err(|e| Failure::Host {
        reason: e.to_string(),
        timed_out: false,
    })?;
    Ok(Upstream {
        stream,
        status: head.status,
        content_type: head.content_type,
        body: head.framing,
        first: Some((buf, head.len..filled)),
    })
}

/// Connects to `addr` (`host:port`) as `TcpStream::connect` does, trying each address it
/// resolves to, but telling a local shortage (when resolving, making the socket or
/// connecting) from the host's failure.
async fn dial(addr: &str) -> Result<TcpStream, Failure> {
    let addresses = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Failure::of("cannot resolve", e))?;
    let mut last = Failure::Host {
        reason: "resolves to no address".into(),
        timed_out: false,
    };
    for address in addresses {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        };
        let socket = match socket {
            Ok(socket) => socket,
            Err(e) if is_local(&e) => return Err(Failure::Local(e)),
            // No IPv6 here, say: the next address may do.
            Err(e) => {
                last = Failure::of("cannot make a socket", e);
                continue;
            }
        };
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) if is_local(&e) => return Err(Failure::Local(e)),
            Err(e) => last = Failure::of("unreachable", e),
        }
    }
    Err(last)
}

/// Runs `future` within `limit`, if there is one. Without one the deadline is a century
/// away: a `Timeout` registers its timer only if the future has to wait, and one future
/// type for both cases keeps every stream's task small (an `async fn` holding either would
/// reserve room for both).
pub fn within<F: std::future::Future>(limit: Option<Duration>, future: F) -> Timeout<F> {
    const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    tokio::time::timeout(limit.unwrap_or(NO_LIMIT), future)
}

/// The method of every upstream request, a stream's; its response is framed by it too.
const METHOD: Method = Method::GET;

fn request_bytes(authority: &str, request: &Request) -> Vec<u8> {
    let mut bytes = format!(
        "{METHOD} {} HTTP/1.1\r\nHost: {authority}\r\n",
        request.target
    )
    .into_bytes();
    bytes.extend_from_slice(&request.headers);
    if let Some(id) = request.last_event_id.as_deref().filter(|id| !id.is_empty()) {
        wire::header_line(&mut bytes, "Last-Event-ID", id.as_bytes());
    }
    // One stream per connection: nothing to pool, and the close ends an unframed body.
    bytes.extend_from_slice(b"Connection: close\r\n\r\n");
    bytes
}

/// Why a host gave no usable response head.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("sending the request: {0}")]
    Send(std::io::Error),
    #[error("reading the response: {0}")]
    Read(std::io::Error),
    #[error("closed the connection before answering")]
    Closed,
    #[error("response head larger than read_buffer_bytes ({0})")]
    TooLarge(usize),
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// Sends the request and reads the response head into `buf`; returns it with how much of
/// `buf` was filled (the body's first bytes follow the head).
async fn exchange(
    upstream: &mut TcpStream,
    request: &[u8],
    buf: &mut [u8],
) -> Result<(ResponseHead, usize), ExchangeError> {
    upstream
        .write_all(request)
        .await
        .map_err(ExchangeError::Send)?;
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
        if let Parsed::Complete(head) = response_head::parse(&buf[..filled], &METHOD)? {
            return Ok((head, filled));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(block: &str) -> Route {
        crate::config::parse(block).unwrap().routes.remove(0)
    }

    fn head(path: &str, query: &str, headers: &[(&str, &[u8])]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            headers: headers
                .iter()
                .map(|(name, value)| abi::Header {
                    name: (*name).into(),
                    value: value.to_vec().into(),
                })
                .collect(),
            peer: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn every_value_copied_upstream_is_checked_when_the_request_is_made() {
        let route = route(
            r#"{"endpoint": "/s/{id}", "backend_url_pattern": "/e/{id}", "backend_host": "http://h",
                "forward_headers": ["Last-Event-ID", "X-Trace"]}"#,
        );
        let made = |path, query, headers: &[(&str, &[u8])]| {
            Request::new(&route, &head(path, query, headers)).map(|r| {
                let bytes = request_bytes("h", &r);
                String::from_utf8(bytes).unwrap()
            })
        };
        assert_eq!(
            made("/s/a", "x=1", &[("x-trace", b"t\t1"), ("last-event-id", b"4")]).unwrap(),
            "GET /e/a?x=1 HTTP/1.1\r\nHost: h\r\nX-Trace: t\t1\r\nLast-Event-ID: 4\r\nConnection: close\r\n\r\n"
        );
        for (headers, why) in [
            (
                &[("x-trace", &b"a\r\nInjected: 1"[..])][..],
                Refused::ForwardedHeader("X-Trace".into()),
            ),
            (
                &[("X-TRACE", b"\0")],
                Refused::ForwardedHeader("X-Trace".into()),
            ),
            (&[("last-event-id", b"7\n")], Unclean::LastEventId.into()),
            (&[("last-event-id", b"7\x1b")], Unclean::LastEventId.into()),
        ] {
            assert_eq!(made("/s/a", "", headers).err(), Some(why), "{headers:?}");
        }
        assert_eq!(
            made("/s/a", "x=%0d%0aGET%20/", &[]).err(),
            Some(Unclean::Query.into())
        );
        assert_eq!(
            made("/s/..", "", &[]).err(),
            Some(Unclean::PathParamDots.into())
        );
        assert_eq!(
            made("/s/a%2F..", "", &[]).err(),
            Some(Unclean::PathParamSeparator.into())
        );
    }

    #[test]
    fn each_segment_a_wildcard_captures_is_checked() {
        let route = route(
            r#"{"endpoint": "/n/*", "backend_url_pattern": "/feed/{*}", "backend_host": "http://h"}"#,
        );
        assert_eq!(
            target(&route, "/n/a/b.c/...", "").unwrap(),
            "/feed/a/b.c/..."
        );
        assert_eq!(target(&route, "/n/a/../b", ""), Err(Unclean::PathParamDots));
        assert_eq!(target(&route, "/n/a/./b", ""), Err(Unclean::PathParamDots));
    }
}
