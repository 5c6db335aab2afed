//! The listener: one task per connection, the gate in front of hyper, the service that
//! serves what hyper parsed as its route decision says, and the handoff.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use abi::HijackRequest;
use http::StatusCode;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::DEFAULT_MAX_HEADER_COUNT;
use crate::connections::{Connections, Slot};
use crate::gate::{Gate, Limits, Rejection, Stop};
use crate::listener::Acceptor;
use crate::metrics::Metrics;
use crate::pipeline::{self, Body, Pipeline};
use crate::plugins::ServerPlugins;
use crate::protect::{Answer, Guard, RequestInfo, Verdict};
use crate::route::{Decision, Pending, Route, Router};
use crate::static_files::StaticFiles;

/// Everything a connection needs, shared by all of them.
pub struct Gateway {
    pub plugins: Arc<ServerPlugins>,
    /// The one route decision per request head.
    pub router: Arc<Router>,
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

/// Where the plugins' counters are served, as JSON, on the metrics listener only: they
/// name routes and hosts, which is nothing for the public port to tell.
pub const STATS_PATH: &str = "/__stats";

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
                    let response = match request.uri().path() {
                        "/metrics" => {
                            let text = gateway
                                .metrics
                                .render(&gateway.plugins.stats(), &gateway.connections);
                            let mut response = http::Response::new(pipeline::full_text(text));
                            response.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("text/plain; version=0.0.4"),
                            );
                            response
                        }
                        STATS_PATH => pipeline::json(gateway.plugins.stats()),
                        _ => pipeline::answer(Answer::new(StatusCode::NOT_FOUND, "not found\n")),
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
    let pending = Arc::new(Pending::default());
    let gate = Gate::new(
        stream,
        peer,
        gateway.limits,
        gateway.router.clone(),
        pending.clone(),
    );
    let service_gateway = gateway.clone();
    let service = service_fn(move |request| {
        let gateway = service_gateway.clone();
        // hyper calls the service for a connection's requests in the order of their heads,
        // the order in which the gate decided them.
        let decision = pending.pop();
        async move {
            let response = match decision {
                Some(decision) => respond(&gateway, decision, request, peer).await,
                None => {
                    tracing::error!("connection from {peer}: a request without a route decision");
                    pipeline::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
                }
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut http1 = http1::Builder::new();
    // The gate has counted the headers already; hyper must take as many. (Its own limit,
    // the default's, needs no per-request allocation, so it is raised only when needed.)
    if gateway.limits.max_headers > DEFAULT_MAX_HEADER_COUNT {
        http1.max_headers(gateway.limits.max_headers);
    }
    let parts = match http1
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
        (Stop::Claimed { claim, head }, stream, read_ahead) => {
            let info = RequestInfo {
                method: &head.method,
                peer: peer.ip(),
                headers: &head,
            };
            let pass = match gateway.guard.check(&info, claim.twin) {
                Verdict::Pass(pass) => pass,
                Verdict::Answer(answer) => {
                    let template = gateway.router.template_of_claim(&claim);
                    tracing::info!(
                        "{} {} from {peer}: answered {} before the handoff to {template}",
                        head.method,
                        head.path,
                        answer.status.as_u16()
                    );
                    gateway.metrics.record(
                        template,
                        &head.method,
                        answer.status.as_u16(),
                        Duration::ZERO,
                    );
                    return answer_and_close(stream, answer).await;
                }
            };
            let plugin = claim.plugin;
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
                client: abi::ClientTransport::Socket(socket),
                http_version: abi::HttpVersion::Http11,
                route: claim.route,
                head,
                read_ahead: read_ahead.to_vec().into(),
                response_headers: pass
                    .headers
                    .into_iter()
                    .map(|(name, value)| abi::Header {
                        name: name.into(),
                        value: value.into_bytes().into(),
                    })
                    .collect(),
                token_expires_in_ms: pass
                    .token
                    .map(|token| {
                        let left = token.valid_for(std::time::SystemTime::now());
                        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
                    })
                    .into(),
                slot: slot.into_ffi(),
            };
            if let Err(e) = gateway.plugins.hijack(plugin, request) {
                tracing::error!("[PLUGIN: {name}] hijack failed: {e}");
            }
        }
    }
}

/// Serves one request hyper parsed, as the route decision of its head says.
async fn respond(
    gateway: &Gateway,
    decision: Decision,
    request: http::Request<Incoming>,
    peer: SocketAddr,
) -> http::Response<Body> {
    match decision.route {
        Route::Health => return pipeline::json(serde_json::json!({"status": "ok"})),
        Route::Debug => {
            tracing::debug!(
                "/__debug/: {} {} from {peer}, headers {:?}",
                request.method(),
                request.uri(),
                Redacted(request.headers())
            );
            return pipeline::json(serde_json::json!({"message": "pong"}));
        }
        _ => {}
    }
    let started = std::time::Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let info = RequestInfo {
        method: method.as_str(),
        peer: peer.ip(),
        headers: request.headers(),
    };
    let response = match gateway.guard.check(&info, decision.protected_by()) {
        Verdict::Answer(answer) => pipeline::answer(answer),
        Verdict::Pass(pass) => {
            let mut response = match &decision.route {
                Route::Endpoint { index, params } => {
                    gateway.pipeline.handle(*index, params, request, peer).await
                }
                Route::StaticFiles { path } => match &gateway.static_files {
                    Some(files) => files.serve(&method, path).await,
                    // The table has a static route only when the files are configured.
                    None => not_found(request).await,
                },
                Route::MethodNotAllowed => {
                    let status = StatusCode::METHOD_NOT_ALLOWED;
                    pipeline::refuse(status, "405 method not allowed\n", request).await
                }
                // Health and Debug were answered above, and a plugin's route never reaches
                // hyper: the gate hands its connection over at the head.
                Route::NotFound | Route::Health | Route::Debug | Route::Plugin(_) => {
                    not_found(request).await
                }
            };
            pipeline::add_headers(response.headers_mut(), pass.headers);
            response
        }
    };
    // The access log: one line per request, when its head is answered (a `no-op` body may
    // stream on after it).
    let took = started.elapsed();
    let status = response.status().as_u16();
    let template = gateway.router.template_of(&decision);
    let secs = took.as_secs_f64();
    tracing::info!("{peer} {method} {path} {status} {secs:.3}s {template}");
    gateway
        .metrics
        .record(template, method.as_str(), status, took);
    response
}

async fn not_found(request: http::Request<Incoming>) -> http::Response<Body> {
    pipeline::refuse(StatusCode::NOT_FOUND, "404 page not found\n", request).await
}

/// Request headers as `-d` logs them: credentials by name only.
struct Redacted<'a>(&'a http::HeaderMap);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
        let entries = self.0.iter().map(|(name, value)| {
            let credential = [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION].contains(name);
            let value: &dyn std::fmt::Debug = if credential { &"[redacted]" } else { value };
            (name, value)
        });
        f.debug_map().entries(entries).finish()
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
