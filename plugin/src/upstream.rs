//! Opening a stream's upstream: dial a backend host (failing over along the balancer's
//! order), send the request and read the response head; `wire::response_head` parses it
//! and decides the body's framing under the rules the gate applies to clients.

use std::ops::Range;
use std::time::Duration;

use abi::RequestHead;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Timeout;
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
    /// The last host timed out (504) rather than failed (502).
    pub timed_out: bool,
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
    /// `METHOD /path` of the client's request, for logs.
    pub label: String,
    /// The upstream path and query.
    pub target: String,
    /// The forwarded header lines (`Name: value\r\n`), without `Last-Event-ID`.
    pub headers: Vec<u8>,
    /// Sent as `Last-Event-ID`: the client's (when forwarded) on the first request, the
    /// last event the client received on a resumption.
    pub last_event_id: Option<String>,
    pub sticky_key: Option<Vec<u8>>,
    /// Header lines the host asked to add to the client's response; emptied once the
    /// response head is written.
    pub extra_head: Vec<u8>,
}

impl Request {
    pub fn new(route: &Route, head: &RequestHead, response_headers: &[abi::Header]) -> Self {
        let mut extra_head = Vec::new();
        for h in response_headers {
            wire::header_line(&mut extra_head, &h.name, &h.value);
        }
        let mut headers = Vec::new();
        let mut last_event_id = None;
        for name in &route.forward_headers {
            for h in head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
            {
                if name.eq_ignore_ascii_case("last-event-id") {
                    last_event_id = Some(String::from_utf8_lossy(&h.value).into_owned());
                    continue;
                }
                wire::header_line(&mut headers, name, &h.value);
            }
        }
        Self {
            label: format!("{} {}", head.method, head.path),
            target: target(route, &head.path, &head.query),
            headers,
            last_event_id,
            sticky_key: sticky_key(route, head),
            extra_head,
        }
    }
}

/// The upstream path and query: the route's pattern with the captured params, plus the
/// client's query string.
pub fn target(route: &Route, path: &str, query: &str) -> String {
    let params = route.template.matches(path).unwrap_or_default();
    let mut target = path_template::substitute(&route.backend_url_pattern, &params);
    if !query.is_empty() {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(query);
    }
    target
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
        timed_out: false,
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
            Err((reason, timed_out)) => {
                route.balancer.failed(i);
                last = Unavailable {
                    reason: format!("upstream {}{}: {reason}", backend.base, request.target),
                    timed_out,
                };
            }
        }
    }
    Err(last)
}

/// One host; the error says why and whether it was a timeout.
async fn open_one(
    route: &RouteState,
    i: usize,
    request: &Request,
    pool: &std::sync::Arc<BufferPool>,
) -> Result<Upstream, (String, bool)> {
    let config = &route.config;
    let backend = &config.backends[i];
    let mut stream = within(
        config.dial_timeout,
        TcpStream::connect(backend.addr.as_str()),
    )
    .await
    .map_err(|_| ("dial timed out".to_owned(), true))?
    .map_err(|e| (format!("unreachable: {e}"), false))?;
    let _ = stream.set_nodelay(true);
    let bytes = request_bytes(&backend.authority, request);
    let mut buf = pool.take();
    let (head, filled) = within(
        config.response_header_timeout,
        exchange(&mut stream, &bytes, &mut buf),
    )
    .await
    .map_err(|_| ("no response head in time".to_owned(), true))?
    .map_err(|e| (e.to_string(), false))?;
    Ok(Upstream {
        stream,
        status: head.status,
        content_type: head.content_type,
        body: head.framing,
        first: Some((buf, head.len..filled)),
    })
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
