//! `krakend-server-plugin-streaming`: takes over SSE requests and pumps the upstream event
//! stream straight to the client, outside the gateway's request/response pipeline.
//!
//! The host hands over the raw socket; this plugin runs everything on its own tokio runtime
//! (a cdylib has its own copy of tokio, so nothing runtime-bound crosses the ABI) and
//! answers with a close-delimited `text/event-stream` body: the upstream's event bytes
//! are written as they arrive, unchanged, with no chunk framing to add.

pub mod config;
mod pool;
mod relay;

use std::sync::Arc;

use abi::{Logger, RequestHead, ServerPlugin};
use once_cell::sync::Lazy;

use config::Route;
use pool::BufferPool;

pub const PLUGIN_NAME: &str = "krakend-server-plugin-streaming";

abi::export_server_plugin!(PLUGIN_NAME, StreamingPlugin::new);

/// One runtime for every instance of the plugin in this process.
static RUNTIME: Lazy<tokio::runtime::Runtime> = Lazy::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("streaming-plugin")
        .enable_all()
        .build()
        .expect("the streaming plugin cannot start its runtime")
});

pub struct StreamingPlugin {
    route: Arc<Route>,
    pool: Arc<BufferPool>,
    logger: Logger,
}

impl StreamingPlugin {
    pub fn new(config_json: &str, logger: Logger) -> Result<Self, String> {
        let route = config::parse(config_json)?;
        logger.info(&format!(
            "[PLUGIN: {PLUGIN_NAME}] streaming {} from {}{}",
            route.endpoint, route.backend_host, route.backend_url_pattern
        ));
        let pool = BufferPool::new(route.read_buffer_bytes, route.max_pooled_buffers);
        Ok(Self {
            route: Arc::new(route),
            pool,
            logger,
        })
    }
}

impl ServerPlugin for StreamingPlugin {
    fn claims(&self, method: &str, path: &str) -> bool {
        method == "GET" && self.route.template.matches(path).is_some()
    }

    fn hijack(
        &self,
        stream: std::net::TcpStream,
        head: RequestHead,
        _read_ahead: Vec<u8>,
    ) -> Result<(), String> {
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        let (route, pool, logger) = (self.route.clone(), self.pool.clone(), self.logger);
        RUNTIME.spawn(async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(client) => relay::serve(client, head, &route, &pool, logger).await,
                Err(e) => logger.warn(&format!("[PLUGIN: {PLUGIN_NAME}] socket: {e}")),
            }
        });
        Ok(())
    }
}
