//! The demo streams: `GET /events-stream/{id}`, numbered events that resume after
//! `Last-Event-ID`, with `count` and `interval_ms` query parameters.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use hyper::body::{Body, Frame};

use crate::bench::OpenStream;
use crate::{boxed, event_stream, plain, ResponseBody, Settings};

pub fn respond<B>(
    request: &Request<B>,
    stream_id: &str,
    defaults: Settings,
    open: OpenStream,
) -> http::Response<ResponseBody> {
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
    event_stream(boxed(EventStream::new(
        stream_id.to_owned(),
        last_id + 1,
        settings,
        open,
    )))
}

/// The body of one stream: the next event each time the interval ticks.
struct EventStream {
    stream_id: String,
    next_id: u64,
    /// Events still to send; `None` for endless.
    left: Option<u64>,
    retry_ms: Option<u64>,
    ticks: tokio::time::Interval,
    _open: OpenStream,
}

impl EventStream {
    fn new(stream_id: String, first_id: u64, settings: Settings, open: OpenStream) -> Self {
        let mut ticks = tokio::time::interval(settings.interval.max(Duration::from_micros(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            stream_id,
            next_id: first_id,
            left: settings.count,
            retry_ms: Some(settings.retry_ms),
            ticks,
            _open: open,
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
