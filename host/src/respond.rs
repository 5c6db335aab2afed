//! Answers a request whose route was decided and which the host serves itself: the admin
//! paths (`/__health`, `/__debug/*`, without protections), then the protections, then
//! the KrakenD pipeline, the static files or a 404/405; one access-log line and one metric
//! per request.

use std::net::SocketAddr;

use crate::pipeline::{self, Body, ClientBody};
use crate::protect::{RequestInfo, Verdict};
use crate::route::{Decision, Route};
use crate::shared::Shared;
use http::StatusCode;

/// Serves one request (HTTP/1.1 as hyper parsed it, or an HTTP/2 stream's), as the route
/// decision of its head says.
pub async fn respond(
    shared: &Shared,
    decision: Decision,
    request: http::Request<ClientBody>,
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
    let response = match shared.protections.check(&info, decision.protected_by()) {
        Verdict::Answer(answer) => pipeline::answer(answer),
        Verdict::Pass(pass) => {
            let mut response = match &decision.route {
                Route::Endpoint { index, params } => {
                    shared.pipeline.handle(*index, params, request, peer).await
                }
                Route::StaticFiles { path } => match &shared.static_files {
                    Some(files) => files.serve(&method, path).await,
                    // The table has a static route only when the files are configured.
                    None => not_found(request).await,
                },
                Route::MethodNotAllowed => {
                    let status = StatusCode::METHOD_NOT_ALLOWED;
                    pipeline::refuse(status, "405 method not allowed\n", request).await
                }
                // Health and Debug were answered above, and a plugin's route is handed
                // over at its head (by the gate, or the HTTP/2 stream's own decision).
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
    let template = shared.router.template_of(&decision);
    let secs = took.as_secs_f64();
    tracing::info!("{peer} {method} {path} {status} {secs:.3}s {template}");
    shared
        .metrics
        .record(template, method.as_str(), status, took);
    response
}

async fn not_found(request: http::Request<ClientBody>) -> http::Response<Body> {
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
