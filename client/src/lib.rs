//! An SSE client that behaves like a browser's EventSource: it sends `Last-Event-ID` when it
//! reconnects after a drop, waits the stream's `retry:` before doing so, stops for good on
//! 204 or on an answer that is not an event stream. [`load`] is the benchmark's load mode.

#![forbid(unsafe_code)]

pub mod load;

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sse::{Event, Parser};

/// A stream that cannot go on; reconnecting would not help.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}: only http:// URLs are supported")]
    InvalidUrl(String),
    #[error("invalid header {0:?}: use \"Name: value\"")]
    InvalidHeader(String),
    #[error("the server answered {0}")]
    Status(StatusCode),
    #[error("the server answered with Content-Type {0:?}, not text/event-stream")]
    NotEventStream(String),
    #[error("gave up after {0} reconnection attempts")]
    OutOfReconnects(u32),
}

/// What happens on a stream, in order.
#[derive(Debug)]
pub enum Notice<'a> {
    Connected,
    Event(&'a Event),
    Reconnecting {
        after: Duration,
        last_event_id: &'a str,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Extra request headers, as `Name: value`.
    pub headers: Vec<String>,
    /// Stop after this many events.
    pub max_events: Option<u64>,
    /// The reconnection delay until the stream sends `retry:` (browsers use about 3 s).
    pub default_retry: Duration,
    /// Give up after this many reconnections in a row without an event; `None`: never.
    pub max_reconnects: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            max_events: None,
            default_retry: Duration::from_secs(3),
            max_reconnects: None,
        }
    }
}

/// Follows the stream at `url`, reconnecting as EventSource does, until `max_events`.
pub async fn subscribe(
    url: &str,
    options: &Options,
    mut notify: impl FnMut(Notice<'_>),
) -> Result<(), ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ClientError::InvalidUrl(url.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(ClientError::InvalidUrl(url.into()));
    }
    let headers = options
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| ClientError::InvalidHeader(h.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut last_event_id = String::new();
    let mut retry = options.default_retry;
    let mut received = 0u64;
    let mut failures = 0u32;
    loop {
        let mut request = Request::get(uri.clone())
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache");
        if !last_event_id.is_empty() {
            request = request.header("Last-Event-ID", last_event_id.as_str());
        }
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Empty::new())
            .map_err(|_| ClientError::InvalidHeader(format!("{headers:?}")))?;
        let mut parser = Parser::resuming(&last_event_id);
        let reason = match client.request(request).await {
            Err(e) => format!("connect: {e}"),
            Ok(response) => {
                match response.status() {
                    StatusCode::OK => {}
                    StatusCode::NO_CONTENT => return Ok(()),
                    status => return Err(ClientError::Status(status)),
                }
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !content_type.starts_with("text/event-stream") {
                    return Err(ClientError::NotEventStream(content_type.into()));
                }
                notify(Notice::Connected);
                let mut body = response.into_body();
                loop {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else {
                                continue;
                            };
                            let mut done = false;
                            parser.feed(&data, |event| {
                                if done {
                                    return;
                                }
                                received += 1;
                                failures = 0;
                                notify(Notice::Event(&event));
                                done = options.max_events.is_some_and(|max| received >= max);
                            });
                            if done {
                                return Ok(());
                            }
                        }
                        Some(Err(e)) => break format!("stream broke: {e}"),
                        None => break "the server closed the stream".to_owned(),
                    }
                }
            }
        };
        last_event_id = parser.last_event_id().to_owned();
        if let Some(ms) = parser.retry_ms() {
            retry = Duration::from_millis(ms);
        }
        failures += 1;
        if options.max_reconnects.is_some_and(|max| failures > max) {
            return Err(ClientError::OutOfReconnects(failures - 1));
        }
        notify(Notice::Reconnecting {
            after: retry,
            last_event_id: &last_event_id,
            reason,
        });
        tokio::time::sleep(retry).await;
    }
}
