//! `krakend-server-plugin-streaming`: takes over SSE requests and pumps the upstream event
//! stream straight to the client, outside the gateway's request/response pipeline.
//!
//! The host hands over the raw socket; this plugin runs everything on its own threads
//! (`workers`: one single-threaded tokio runtime per core) and
//! answers with a close-delimited `text/event-stream` body: the upstream's event bytes
//! are written as they arrive, whole events at a time, with no chunk framing to add.
//!
//! `config` reads the block, `balancer` picks hosts, `upstream` opens a connection,
//! `pump` moves the bytes, `relay` ties one client's stream together across upstreams,
//! `fanout` shares one upstream or Kafka topic among many clients, and `stats` counts what
//! happened for the host's `/__stats`.

mod balancer;
// The plugin's side of a TLS or HTTP/2 client; phase 2 of issue 14 wires it into the
// session (until then a bridged client is refused in `hijack`).
#[allow(dead_code)]
mod bridged;
pub mod config;
mod fanout;
mod pool;
mod pump;
mod relay;
mod stats;
mod upstream;
mod workers;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi::{Claimed, Logger, RouteDecl, ServerPlugin};
use tokio_util::sync::CancellationToken;

use balancer::Balancer;
use config::{Block, Route};
use pool::BufferPool;
use stats::RouteStats;

pub const PLUGIN_NAME: &str = "krakend-server-plugin-streaming";

abi::export_server_plugin!(PLUGIN_NAME, StreamingPlugin::new);

pub struct StreamingPlugin {
    shared: Arc<Shared>,
}

/// What every stream of one plugin instance shares.
struct Shared {
    block: Block,
    routes: Vec<RouteState>,
    pool: Arc<BufferPool>,
    logger: Logger,
    /// Streams open in the whole block (its `max_streams` counter).
    active: AtomicUsize,
    shutdown: CancellationToken,
}

struct RouteState {
    config: Route,
    balancer: Balancer,
    stats: RouteStats,
    /// Fan-out sources open now, by key.
    hubs: Arc<fanout::Hubs>,
    /// Turns for Kafka catch-ups (`max_catch_ups`).
    catch_ups: tokio::sync::Semaphore,
}

/// A stream's place under the limits; freed when the stream ends.
struct Slot<'a> {
    shared: &'a Shared,
    route: &'a RouteState,
}

impl Shared {
    /// Takes a slot under the block's and the route's `max_streams`, if both have room.
    fn admit<'a>(&'a self, route: &'a RouteState) -> Option<Slot<'a>> {
        let in_block = self.active.fetch_add(1, Relaxed);
        let in_route = route.stats.active.fetch_add(1, Relaxed);
        let slot = Slot {
            shared: self,
            route,
        };
        let route_full = route.config.max_streams > 0 && in_route >= route.config.max_streams;
        (in_block < self.block.max_streams && !route_full).then_some(slot)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Relaxed);
        self.route.stats.active.fetch_sub(1, Relaxed);
    }
}

impl StreamingPlugin {
    pub fn new(config_json: &str, logger: Logger) -> Result<Self, String> {
        let block = config::parse(config_json)?;
        let routes = block
            .routes
            .iter()
            .map(|route| {
                let source = match &route.kafka {
                    Some(kafka) => format!("kafka://{} topic {}", kafka.brokers, kafka.topic),
                    None => {
                        let hosts: Vec<&str> =
                            route.backends.iter().map(|b| b.base.as_str()).collect();
                        format!("{} {}", hosts.join(", "), route.backend_url_pattern)
                    }
                };
                let fanout = if route.fanout.is_some() {
                    " (fan-out)"
                } else {
                    ""
                };
                logger.info(&format!(
                    "[PLUGIN: {PLUGIN_NAME}] streaming {}{fanout} from {source}",
                    route.endpoint,
                ));
                RouteState {
                    config: route.clone(),
                    balancer: Balancer::new(&route.backends, block.eject_after, block.eject_for),
                    stats: RouteStats::default(),
                    hubs: Arc::default(),
                    catch_ups: tokio::sync::Semaphore::new(
                        route.kafka.as_ref().map_or(0, |k| k.max_catch_ups),
                    ),
                }
            })
            .collect();
        let pool = BufferPool::new(block.read_buffer_bytes, block.max_pooled_buffers);
        Ok(Self {
            shared: Arc::new(Shared {
                block,
                routes,
                pool,
                logger,
                active: AtomicUsize::new(0),
                shutdown: CancellationToken::new(),
            }),
        })
    }
}

impl ServerPlugin for StreamingPlugin {
    fn routes(&self) -> Vec<RouteDecl> {
        self.shared
            .routes
            .iter()
            .map(|r| RouteDecl {
                endpoint: r.config.endpoint.as_str().into(),
                methods: r.config.methods.iter().map(|m| m.as_str().into()).collect(),
            })
            .collect()
    }

    fn hijack(&self, claimed: Claimed) -> Result<(), String> {
        let Claimed {
            client,
            route,
            head,
            response_headers,
            token_expires_at,
            slot,
            ..
        } = claimed;
        let token_expires_at = token_expires_at.map(tokio::time::Instant::from_std);
        if route >= self.shared.routes.len() {
            return Err(format!("no route {route}"));
        }
        // Dropping a bridged transport answers its client 502 (phase 2 serves it).
        let abi::Client::Tcp(stream) = client else {
            return Err("TLS and HTTP/2 clients are not served yet".into());
        };
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        let shared = self.shared.clone();
        workers::spawn(async move {
            // The host counts the connection open until the stream is over.
            let _slot = slot;
            match tokio::net::TcpStream::from_std(stream) {
                Ok(client) if shared.routes[route].config.fanout.is_some() => {
                    let (headers, expires) = (&response_headers, token_expires_at);
                    fanout::serve(client, head, headers, expires, &shared, route).await
                }
                Ok(client) => {
                    let route = &shared.routes[route];
                    let (headers, expires) = (&response_headers, token_expires_at);
                    relay::serve(client, head, headers, expires, &shared, route).await
                }
                Err(e) => shared
                    .logger
                    .warn(&format!("[PLUGIN: {PLUGIN_NAME}] socket: {e}")),
            }
        });
        Ok(())
    }

    fn stats(&self) -> String {
        let routes: Vec<serde_json::Value> = self
            .shared
            .routes
            .iter()
            .map(|r| {
                let mut route = r.stats.to_json();
                route["endpoint"] = r.config.endpoint.clone().into();
                route["hosts"] = r.balancer.to_json();
                if r.config.fanout.is_some() {
                    route["sources"] = r.hubs.len().into();
                }
                route
            })
            .collect();
        serde_json::json!({
            "active": self.shared.active.load(Relaxed),
            "max_streams": self.shared.block.max_streams,
            "routes": routes,
        })
        .to_string()
    }

    fn shutdown(&self, deadline: Duration) -> usize {
        self.shared.shutdown.cancel();
        let until = Instant::now() + deadline;
        loop {
            let open = self.shared.active.load(Relaxed);
            if open == 0 || Instant::now() >= until {
                return open;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
#[cfg(test)]
mod handoff_tests;

#[cfg(test)]
mod tests {
    /// Every open stream is one task holding this future for hours: its size is most of
    /// what an idle stream costs (see the benchmark's S3), so growth should be a decision.
    #[tokio::test]
    async fn a_stream_task_stays_small() {
        extern "C" fn no_log(_: abi::LogLevel, _: abi_stable::std_types::RStr<'_>) {}
        let plugin = super::StreamingPlugin::new(
            r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h"}"#,
            abi::Logger { log: no_log },
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let head = abi::RequestHead {
            method: "GET".into(),
            path: "/s".into(),
            query: Default::default(),
            headers: Default::default(),
            peer: "127.0.0.1:1".into(),
        };
        let shared = &plugin.shared;
        let task = super::relay::serve(client, head, &[], None, shared, &shared.routes[0]);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2304, "a stream's future is {size} bytes");
    }
}
