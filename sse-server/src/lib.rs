//! A demo and test SSE origin: `GET /events-stream/{id}` streams numbered events.
//!
//! Each stream starts with `retry:` and sends `id:`, `event:` and `data:` fields, every
//! fifth event with multi-line data. A request with `Last-Event-ID: N` resumes at N+1.
//! The count and interval come from [`Settings`], and per request from the query
//! parameters `count` and `interval_ms`. Each stream is a small state machine polled by
//! hyper: no task or channel per connection.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the origin streams when a request does not say otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Events per stream; `None` streams until the client leaves.
    pub count: Option<u64>,
    pub interval: Duration,
    /// The `retry:` sent at the start of each stream, in milliseconds.
    pub retry_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            count: None,
            interval: Duration::from_secs(1),
            retry_ms: 3000,
        }
    }
}

/// Serves until `shutdown` completes.
pub async fn run(listener: TcpListener, settings: Settings, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| async move {
                Ok::<_, Infallible>(respond(&request, settings))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

fn respond(request: &Request<hyper::body::Incoming>, defaults: Settings) -> Response<ResponseBody> {
    let Some(stream_id) = request
        .uri()
        .path()
        .strip_prefix("/events-stream/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
    else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: use /events-stream/{id}\n",
        );
    };
    let mut settings = defaults;
    for (key, value) in request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        match (key, value.parse::<u64>()) {
            ("count", Ok(n)) => settings.count = Some(n),
            ("interval_ms", Ok(ms)) => settings.interval = Duration::from_millis(ms),
            ("count" | "interval_ms", Err(_)) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "count and interval_ms take integers\n",
                )
            }
            _ => {}
        }
    }
    let last_id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let body = EventStream::new(stream_id.to_owned(), last_id + 1, settings);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body.boxed_unsync())
        .expect("static response parts are valid")
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync())
        .expect("static response parts are valid")
}

/// The body of one stream: the next event each time the interval ticks.
struct EventStream {
    stream_id: String,
    next_id: u64,
    /// Events still to send; `None` for endless.
    left: Option<u64>,
    retry_ms: Option<u64>,
    ticks: tokio::time::Interval,
}

impl EventStream {
    fn new(stream_id: String, first_id: u64, settings: Settings) -> Self {
        let mut ticks = tokio::time::interval(settings.interval.max(Duration::from_micros(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            stream_id,
            next_id: first_id,
            left: settings.count,
            retry_ms: Some(settings.retry_ms),
            ticks,
        }
    }

    fn next_event(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(160);
        if let Some(ms) = self.retry_ms.take() {
            sse::write_retry(&mut out, ms);
        }
        let n = self.next_id;
        self.next_id += 1;
        let event = if n.is_multiple_of(5) {
            sse::Event {
                id: n.to_string(),
                event: "multiline".into(),
                data: format!(
                    "event {n} of stream {}\nsecond line of event {n}",
                    self.stream_id
                ),
            }
        } else {
            sse::Event {
                id: n.to_string(),
                event: "tick".into(),
                data: format!(r#"{{"stream":"{}","n":{n}}}"#, self.stream_id),
            }
        };
        sse::write_event(&mut out, &event);
        Bytes::from(out)
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == Some(0) {
            return Poll::Ready(None);
        }
        ready!(self.ticks.poll_tick(cx));
        if let Some(left) = &mut self.left {
            *left -= 1;
        }
        Poll::Ready(Some(Ok(Frame::data(self.next_event()))))
    }
}
