//! The listener: one task per connection, the gate in front of hyper, and the handoff.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use abi::HijackRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::connections::{Connections, Slot};
use crate::gate::{Gate, Limits, Rejection, Stop};
use crate::listener::Acceptor;
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline};
use crate::plugins::ServerPlugins;
use crate::protect::{Answer, Guard, RequestInfo, Verdict};
use crate::static_files::StaticFiles;

/// Everything a connection needs, shared by all of them.
pub struct Gateway {
    pub plugins: Arc<ServerPlugins>,
    /// Client connections open now, handed-over ones included.
    pub connections: Arc<Connections>,
    pub guard: Guard,
    pub metrics: Arc<Metrics>,
    /// `host run -d`: `/__debug/*` answers and logs what it received.
    pub debug: bool,
    pub pipeline: Pipeline,
    pub limits: Limits,
    /// `static-filesystem`, when configured.
    pub static_files: Option<StaticFiles>,
}

/// Where the plugins' counters are served, as JSON.
pub const STATS_PATH: &str = "/__stats";
/// With `-d`, anything under it is logged and answered `{"message": "pong"}`, as KrakenD's
/// debug endpoint does.
pub const DEBUG_PREFIX: &str = "/__debug/";
/// Answers 200 while the gateway serves, for load balancers and orchestrators.
pub const HEALTH_PATH: &str = "/__health";

/// Connections the metrics listener serves at once: a few scrapers, and never the
/// descriptors client connections need.
pub const MAX_METRICS_CONNECTIONS: usize = 16;
/// How long a metrics connection may stay open: a scrape takes milliseconds, and a
/// silent connection must not hold one of the few places.
const METRICS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` (Prometheus text) from `listener` until the process ends, to at
/// most [`MAX_METRICS_CONNECTIONS`] at once, so that it answers when clients have taken
/// every connection they may.
pub async fn serve_metrics(listener: TcpListener, gateway: Arc<Gateway>) {
    let places = Arc::new(Connections::new(MAX_METRICS_CONNECTIONS));
    let mut acceptor = Acceptor::new(listener, places, "Metrics");
    loop {
        let (stream, _, slot) = acceptor.accept().await;
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let gateway = gateway.clone();
                async move {
                    let response = if request.uri().path() == "/metrics" {
                        let text = gateway
                            .metrics
                            .render(&gateway.plugins.stats(), &gateway.connections);
                        let mut response = http::Response::new(pipeline::full_text(text));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        response
                    } else {
                        pipeline::answer(Answer::new(http::StatusCode::NOT_FOUND, "not found\n"))
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(METRICS_CONNECTION_TIMEOUT, connection).await;
        });
    }
}

/// After answering a rejected request, how long the host keeps reading (and discarding)
/// what the client still sends, so closing does not reset the connection before the
/// client has read the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Serves the connections `acceptor` admits until `shutdown` completes.
pub async fn run(
    mut acceptor: Acceptor,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer, slot) = acceptor.accept() => {
                tokio::spawn(serve_connection(stream, peer, slot, gateway.clone()));
            }
            () = &mut shutdown => return,
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, slot: Slot, gateway: Arc<Gateway>) {
    // Events are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    // What a client that stops reading can cost in kernel memory, and how soon a write
    // to it blocks (which is what `client_write_timeout` measures).
    if let Some(bytes) = gateway.limits.send_buffer {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
    }
    let gate = Gate::new(stream, peer, gateway.limits, gateway.plugins.clone());
    let service_gateway = gateway.clone();
    let service = service_fn(move |request| {
        let gateway = service_gateway.clone();
        async move {
            if gateway.debug && request.uri().path().starts_with(DEBUG_PREFIX) {
                tracing::debug!(
                    "{DEBUG_PREFIX}: {} {} from {peer}, headers {:?}",
                    request.method(),
                    request.uri(),
                    request.headers()
                );
                return Ok(pipeline::json(serde_json::json!({"message": "pong"})));
            }
            if request.method() == http::Method::GET {
                match request.uri().path() {
                    STATS_PATH => return Ok(pipeline::json(gateway.plugins.stats())),
                    HEALTH_PATH => return Ok(pipeline::json(serde_json::json!({"status": "ok"}))),
                    _ => {}
                }
            }
            let started = std::time::Instant::now();
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let info = RequestInfo {
                method: method.as_str(),
                path: &path,
                peer: peer.ip(),
                headers: request.headers(),
            };
            let response = match gateway.guard.check(&info) {
                Verdict::Answer(answer) => pipeline::answer(answer),
                Verdict::Pass(extra) => {
                    let file = match &gateway.static_files {
                        Some(files) => files.serve(&method, &path).await,
                        None => None,
                    };
                    let mut response = match file {
                        Some(response) => response,
                        None => {
                            let Ok(response) = gateway.pipeline.handle(request, peer).await;
                            response
                        }
                    };
                    pipeline::add_headers(response.headers_mut(), extra);
                    response
                }
            };
            // The access log: one line per request, when its head is answered (a `no-op`
            // body may stream on after it).
            let took = started.elapsed();
            let status = response.status().as_u16();
            tracing::info!("{peer} {method} {path} {status} {:.3}s", took.as_secs_f64());
            let endpoint = gateway.guard.endpoint_of(method.as_str(), &path);
            gateway.metrics.record(
                endpoint.unwrap_or("unmatched"),
                method.as_str(),
                status,
                took,
            );
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let parts = match http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(gate), service)
        .without_shutdown()
        .await
    {
        Ok(parts) => parts,
        Err(e) => {
            tracing::debug!("connection from {peer}: {e}");
            return;
        }
    };
    debug_assert!(
        parts.read_buf.is_empty(),
        "the gate gives hyper whole requests only"
    );
    match parts.io.into_inner().into_parts() {
        (Stop::Eof, _, _) => {}
        (Stop::Rejected(rejection), stream, _) => reject(stream, peer, rejection).await,
        (
            Stop::Claimed {
                plugin,
                route,
                head,
            },
            stream,
            read_ahead,
        ) => {
            let info = RequestInfo {
                method: &head.method,
                path: &head.path,
                peer: peer.ip(),
                headers: &head,
            };
            let response_headers = match gateway.guard.check(&info) {
                Verdict::Pass(headers) => headers,
                Verdict::Answer(answer) => {
                    tracing::info!(
                        "{} {} from {peer}: answered {} before the handoff",
                        head.method,
                        head.path,
                        answer.status.as_u16()
                    );
                    let endpoint = gateway.guard.endpoint_of(&head.method, &head.path);
                    gateway.metrics.record(
                        endpoint.unwrap_or("unmatched"),
                        &head.method,
                        answer.status.as_u16(),
                        Duration::ZERO,
                    );
                    return answer_and_close(stream, answer).await;
                }
            };
            let name = gateway.plugins.name(plugin);
            tracing::info!(
                "[PLUGIN: {name}] {} {} from {peer}: connection handed over",
                head.method,
                head.path
            );
            let socket = match stream.into_std() {
                Ok(stream) => stream.into(),
                Err(e) => {
                    return tracing::warn!("connection from {peer}: cannot detach the socket: {e}")
                }
            };
            let request = HijackRequest {
                socket,
                route,
                head,
                read_ahead: read_ahead.to_vec().into(),
                response_headers: response_headers
                    .into_iter()
                    .map(|(name, value)| abi::Header {
                        name: name.into(),
                        value: value.into_bytes().into(),
                    })
                    .collect(),
                token_expires_in_ms: abi_stable::std_types::ROption::RNone,
                slot: slot.into_ffi(),
            };
            if let Err(e) = gateway.plugins.hijack(plugin, request) {
                tracing::error!("[PLUGIN: {name}] hijack failed: {e}");
            }
        }
    }
}

async fn reject(stream: TcpStream, peer: SocketAddr, rejection: Rejection) {
    tracing::info!(
        "rejected a request from {peer}: {} {}",
        rejection.status.as_u16(),
        rejection.message
    );
    let answer = Answer::new(rejection.status, format!("{}\n", rejection.message));
    answer_and_close(stream, answer).await;
}

/// Writes a response the host gives itself on a connection hyper no longer drives, closes
/// it, and lingers so the close does not reset the connection before the client has read it.
async fn answer_and_close(mut stream: TcpStream, answer: Answer) {
    let mut headers = Vec::new();
    for (name, value) in &answer.headers {
        wire::header_line(&mut headers, name, value.as_bytes());
    }
    let response = wire::plain_text_response(answer.status, &headers, &answer.body);
    if stream.write_all(&response).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
