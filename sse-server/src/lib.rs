//! A demo and test SSE origin.
//!
//! `GET /events-stream/{id}` streams numbered events ([`demo`]): each stream starts with
//! `retry:` and sends `id:`, `event:` and `data:` fields, every fifth event with multi-line
//! data, and a request with `Last-Event-ID: N` resumes at N+1. `GET /bench/{id}` and
//! `GET /broadcast/{id}` stream timestamped events for the benchmark ([`bench`]).
//! `GET /stats` answers `{"open_streams": N}`. Each stream is a small state machine polled
//! by hyper: no task or channel per connection.

#![forbid(unsafe_code)]

pub mod bench;
mod demo;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use bench::{BenchStream, Broadcast, OpenStreams};

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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            count: None,
            interval: Duration::from_secs(1),
            retry_ms: 3000,
            broadcast_rate: 0,
            broadcast_size: 100,
        }
    }
}

/// What every connection of one origin shares.
struct Origin {
    settings: Settings,
    open: OpenStreams,
    broadcast: Option<Broadcast>,
}

/// Serves until `shutdown` completes.
pub async fn run(listener: TcpListener, settings: Settings, shutdown: impl Future<Output = ()>) {
    let origin = Arc::new(Origin {
        settings,
        open: OpenStreams::default(),
        broadcast: (settings.broadcast_rate > 0)
            .then(|| Broadcast::start(settings.broadcast_rate, settings.broadcast_size)),
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
                let response = respond(&request, &origin);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

fn respond<B>(request: &Request<B>, origin: &Origin) -> Response<ResponseBody> {
    let path = request.uri().path();
    if path == "/stats" {
        let stats = serde_json::json!({ "open_streams": origin.open.count() });
        return Response::new(Full::new(Bytes::from(stats.to_string())).boxed_unsync());
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
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static response parts are valid")
}

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(text.into()).boxed_unsync())
        .expect("static response parts are valid")
}
