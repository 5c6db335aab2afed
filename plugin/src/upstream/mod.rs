//! A stream's upstream: the request made of the client's head (`request`, where every
//! value is checked), the hosts tried in the balancer's order until one answers with a
//! head (failing over, and ejecting a host that keeps failing), and the answer's body read
//! under the framing `wire::response_head` decided, the rules the gate applies to clients.
//!
//! `dial` does the I/O with one host and says, as a type, why it failed; [`Unavailable`]
//! carries the last failure to whoever answers the client (502, 504 or 503). `stream` is
//! the connection, a socket or TLS over one for an `https://` host.

mod dial;
mod request;
mod stream;

use std::io;
use std::ops::Range;
use std::sync::Arc;

use http::StatusCode;
use wire::framing::Framing;

use crate::pool::{Buffer, BufferPool};
use crate::stats::RouteStats;
use crate::{within, RouteState};
use dial::{dial, exchange, Failure};
pub use request::{client_last_event_id, target, Refused, Request};
pub use stream::Stream;

/// An answered upstream request.
pub struct Upstream {
    pub stream: Stream,
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Framing,
    /// The buffer the head was read into, and the body bytes read with it.
    pub first: Option<(Buffer, Range<usize>)>,
}

impl Upstream {
    /// Whether the body is an event stream (kept whole events at a time, given keepalive
    /// comments, resumed); an answer without a `Content-Type` is taken for one, as the
    /// route promises one.
    pub fn is_event_stream(&self) -> bool {
        self.content_type.as_deref().is_none_or(|value| {
            let media_type = value.split(';').next().unwrap_or("").trim();
            media_type.eq_ignore_ascii_case("text/event-stream")
        })
    }
}

/// Why no backend host gave a response head: the last one's failure.
#[derive(Debug, thiserror::Error)]
#[error("upstream {base}{target}: {failure}")]
pub struct Unavailable {
    /// `http://host:port` (or `https://`) of the last host tried.
    base: String,
    target: String,
    failure: Failure,
}

impl Unavailable {
    /// This process could not open a connection: no host is to blame.
    pub fn is_local(&self) -> bool {
        !self.failure.blames_host()
    }

    /// The answer when nothing better can be said: 503 (with `Retry-After`) when this
    /// process could not dial, 504 after a timeout, 502 otherwise.
    pub fn status(&self) -> StatusCode {
        if self.is_local() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if self.failure.timed_out() {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        }
    }
}

/// Why an upstream body stopped short of its end.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("{0}")]
    Read(#[from] io::Error),
    #[error("closed in the middle of the body")]
    ClosedMidBody,
    #[error(transparent)]
    Chunk(#[from] chunked::MalformedChunk),
    #[error("no bytes for upstream_idle_timeout")]
    Idle,
}

/// Adds the payload ranges of `body`'s bytes in `buf[filled]` to `ranges` (as ranges of
/// `buf`); `true` once the body is whole.
pub fn payload(
    body: &mut Framing,
    buf: &[u8],
    filled: Range<usize>,
    ranges: &mut Vec<Range<usize>>,
) -> Result<bool, Broken> {
    let base = filled.start;
    body.take(&buf[filled], |r| ranges.push(base + r.start..base + r.end))?;
    Ok(body.is_done())
}

/// What a read of zero bytes means for `body`: its end, or a break.
pub fn closed(body: &Framing) -> Result<(), Broken> {
    match body {
        Framing::UntilClose => Ok(()),
        _ => Err(Broken::ClosedMidBody),
    }
}

/// Tries the route's hosts in the balancer's order until one answers with a head whose
/// status is not in the route's `retry_on` (the last host's answer is taken whatever it
/// is). A request that is not resumed fails over only when the failed host cannot have
/// received it (it could not be dialled) or refused it with a `retry_on` status.
pub async fn open(
    route: &RouteState,
    request: &Request,
    pool: &Arc<BufferPool>,
) -> Result<Upstream, Unavailable> {
    let mut last = Unavailable {
        base: String::new(),
        target: request.target.clone(),
        failure: Failure::NoHost,
    };
    let order = route.balancer.order(request.sticky_key.as_deref());
    let hosts = order.len();
    for (attempt, i) in order.into_iter().enumerate() {
        if attempt > 0 {
            RouteStats::add(&route.stats.failovers, 1);
        }
        let failure = match open_one(route, i, request, pool).await {
            Ok(upstream)
                if attempt + 1 < hosts && route.config.retry_on.contains(&upstream.status) =>
            {
                Failure::RetryOn(upstream.status)
            }
            Ok(upstream) => {
                route.balancer.succeeded(i);
                return Ok(upstream);
            }
            Err(failure) => failure,
        };
        let (blames_host, sent) = (failure.blames_host(), failure.after_sending());
        last = Unavailable {
            base: route.config.backends[i].base.clone(),
            target: request.target.clone(),
            failure,
        };
        if !blames_host {
            // Another host would fare no better.
            return Err(last);
        }
        route.balancer.failed(i);
        if sent && !request.resume {
            return Err(last);
        }
    }
    Err(last)
}

/// The host `i` of the route.
async fn open_one(
    route: &RouteState,
    i: usize,
    request: &Request,
    pool: &Arc<BufferPool>,
) -> Result<Upstream, Failure> {
    let config = &route.config;
    let backend = &config.backends[i];
    // The TLS handshake is part of the dial, under the same timeout.
    let connect = async {
        let socket = dial(&backend.addr).await?;
        let _ = socket.set_nodelay(true);
        match (&backend.tls_name, &route.tls) {
            (Some(name), Some(connector)) => stream::handshake(connector, name, socket)
                .await
                .map_err(Failure::Tls),
            _ => Ok(Stream::Plain(socket)),
        }
    };
    let mut stream = within(config.dial_timeout, connect)
        .await
        .map_err(|_| Failure::DialTimedOut)??;
    let bytes = request.bytes(&backend.authority);
    let mut buf = pool.take();
    let (head, filled) = within(
        config.response_header_timeout,
        exchange(&mut stream, &request.method, &bytes, &mut buf),
    )
    .await
    .map_err(|_| Failure::HeadTimedOut)??;
    Ok(Upstream {
        stream,
        status: head.status,
        content_type: head.content_type,
        body: head.framing,
        first: Some((buf, head.len..filled)),
    })
}
