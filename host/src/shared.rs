//! What every connection of the gateway shares: the plugins, the one router, the
//! protections, the pipeline, the counters and the limits. Built once at `run`.

use std::sync::Arc;

use crate::connections::Connections;
use crate::gate::Limits;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::plugins::ServerPlugins;
use crate::protect::Protections;
use crate::route::Router;
use crate::static_files::StaticFiles;

/// The gateway's state, shared by all its connections.
pub struct Shared {
    pub plugins: Arc<ServerPlugins>,
    /// The one route decision per request head.
    pub router: Arc<Router>,
    /// Client connections open now, handed-over ones included.
    pub connections: Arc<Connections>,
    pub protections: Protections,
    pub metrics: Arc<Metrics>,
    /// `host run -d`: `/__debug/*` answers and logs what it received.
    pub debug: bool,
    pub pipeline: Pipeline,
    pub limits: Limits,
    /// The root `max_body_bytes`, handed to plugins with each claimed request: their
    /// routes' default.
    pub max_body_bytes: u64,
    /// `static-filesystem`, when configured.
    pub static_files: Option<StaticFiles>,
    /// Root `tls`: the port speaks TLS only.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub http2: crate::http2::Settings,
    /// Cancelled when the gateway drains: HTTP/2 connections send GOAWAY, HTTP/1.1 ones
    /// close once idle (the gate) and answer with `Connection: close`.
    pub draining: tokio_util::sync::CancellationToken,
}
