//! A demo and test SSE origin.
//!
//! `GET /events-stream/{id}` streams numbered events ([`demo`]): each stream starts with
//! `retry:` and sends `id:`, `event:` and `data:` fields, every fifth event with multi-line
//! data, and a request with `Last-Event-ID: N` resumes at N+1. `GET /bench/{id}` and
//! `GET /broadcast/{id}` stream timestamped events for the benchmark ([`bench`]).
//! `POST /v1/chat/completions` is an OpenAI-compatible mock and `/ndjson/{id}` streams
//! NDJSON lines ([`llm`]). Every request's body is read within bounds and the last requests
//! are kept for `GET /mock/requests` ([`received`]); `POST /mock/release` lets a held stream
//! go on. `GET /stats` answers `{"open_streams": N}`. Each stream is a small state machine
//! polled by hyper: no task or channel per connection.

#![forbid(unsafe_code)]

pub mod bench;
mod demo;
mod llm;
mod paced;
mod received;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use bench::{BenchStream, Broadcast, OpenStreams};
use llm::Mock;
use paced::StreamCut;
use received::{read_body, ReceivedLog};

/// How the origin streams when a request does not say otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Events per demo stream; `None` streams until the client leaves.
    pub count: Option<u64>,
    pub interval: Duration,
    /// The `retry:` sent at the start of each demo stream, in milliseconds.
    pub retry_ms: u64,
    /// Events per second of the `/broadcast/{id}` ticker; 0 turns it off.
    pub broadcast_rate: u64,
    /// Bytes per broadcast event.
    pub broadcast_size: usize,
    /// The largest request body read; larger gets 413.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive; slower gets 408.
    pub body_timeout: Duration,
    /// How many of the last requests `GET /mock/requests` shows.
    pub recorded_requests: usize,
    /// The status the mock endpoints answer instead of serving, while failures are left.
    pub fail_status: Option<StatusCode>,
    /// How many requests get `fail_status`; `None` for every one.
    pub fail_count: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            count: None,
            interval: Duration::from_secs(1),
            retry_ms: 3000,
            broadcast_rate: 0,
            broadcast_size: 100,
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            recorded_requests: 64,
            fail_status: None,
            fail_count: None,
        }
    }
}

/// What every connection of one origin shares.
struct Origin {
    settings: Settings,
    open: OpenStreams,
    broadcast: Option<Broadcast>,
    received: ReceivedLog,
    mock: Mock,
}

/// Serves until `shutdown` completes.
pub async fn run(listener: TcpListener, settings: Settings, shutdown: impl Future<Output = ()>) {
    let origin = Arc::new(Origin {
        settings,
        open: OpenStreams::default(),
        broadcast: (settings.broadcast_rate > 0)
            .then(|| Broadcast::start(settings.broadcast_rate, settings.broadcast_size)),
        received: ReceivedLog::new(settings.recorded_requests),
        mock: Mock::new(settings.fail_status, settings.fail_count),
    });
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
        let origin = origin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let origin = origin.clone();
                async move { Ok::<_, Infallible>(serve(request, &origin).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A response body: only the mock's streams fail, when a request asks them to break.
type ResponseBody = UnsyncBoxBody<Bytes, StreamCut>;

/// A body that cannot fail, boxed as a [`ResponseBody`].
fn boxed(body: impl Body<Data = Bytes, Error = Infallible> + Send + 'static) -> ResponseBody {
    body.map_err(|never| match never {}).boxed_unsync()
}

/// The inspection endpoints, else the request read, recorded and answered.
async fn serve(request: Request<Incoming>, origin: &Origin) -> Response<ResponseBody> {
    let inspection = match (request.method(), request.uri().path()) {
        (_, "/stats") => Some(serde_json::json!({ "open_streams": origin.open.count() })),
        (&Method::GET, "/mock/requests") => Some(origin.received.to_json()),
        (&Method::POST, "/mock/release") => {
            origin.mock.releases.release_one();
            Some(serde_json::json!({ "released": 1 }))
        }
        _ => None,
    };
    if let Some(json) = inspection {
        return json_response(StatusCode::OK, json.to_string());
    }
    let settings = &origin.settings;
    let (head, body) = request.into_parts();
    let body = read_body(&head, body, settings.max_body_bytes, settings.body_timeout).await;
    origin.received.record(&head, body.as_ref().ok());
    match body {
        Ok(body) => respond(&Request::from_parts(head, body), origin),
        Err(refusal) => refusal.response(),
    }
}

fn respond(request: &Request<Bytes>, origin: &Origin) -> Response<ResponseBody> {
    let path = request.uri().path();
    if path == "/v1/chat/completions" {
        return llm::chat(request, &origin.mock, origin.open.open())
            .unwrap_or_else(|refusal| refusal.response());
    }
    let Some((kind, stream_id)) = path[1..]
        .split_once('/')
        .filter(|(_, id)| !id.is_empty() && !id.contains('/'))
    else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: use /events-stream/{id}\n",
        );
    };
    match kind {
        "events-stream" => demo::respond(request, stream_id, origin.settings, origin.open.open()),
        "ndjson" => llm::ndjson(request, stream_id, &origin.mock, origin.open.open())
            .unwrap_or_else(|refusal| refusal.response()),
        "bench" => match BenchStream::from_query(request.uri().query().unwrap_or("")) {
            Ok(stream) => event_stream(stream.body(origin.open.open())),
            Err(reason) => plain(StatusCode::BAD_REQUEST, format!("{reason}\n")),
        },
        "broadcast" => match &origin.broadcast {
            Some(broadcast) => event_stream(broadcast.subscribe(origin.open.open())),
            None => plain(
                StatusCode::NOT_FOUND,
                "the broadcast is off: start with --broadcast-rate\n",
            ),
        },
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: use /events-stream/{id}\n",
        ),
    }
}

fn event_stream(body: ResponseBody) -> Response<ResponseBody> {
    streaming("text/event-stream", body)
}

/// A streamed response of `content_type` (hyper sends it chunked).
fn streaming(content_type: &'static str, body: ResponseBody) -> Response<ResponseBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static response parts are valid")
}

fn json_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(boxed(Full::new(Bytes::from(body))))
        .expect("static response parts are valid")
}

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(boxed(Full::new(text.into())))
        .expect("static response parts are valid")
}
