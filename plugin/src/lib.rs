//! `krakend-server-plugin-streaming`: takes over SSE requests and pumps the upstream event
//! stream straight to the client, outside the gateway's request/response pipeline.
//!
//! The host hands over the raw socket; this plugin runs everything on its own threads
//! (`workers`: one single-threaded tokio runtime per core) and
//! answers with a close-delimited `text/event-stream` body: the upstream's event bytes
//! are written as they arrive, whole events at a time, with no chunk framing to add.
//!
//! `config` reads the block. A claimed request becomes a `session` (the client's side of
//! one stream: its transport, head, counting, keepalives, cut-offs and end), fed either by
//! the `relay` (its own `upstream`, whose body the `pump` moves, with `reconnect` between
//! upstreams) or by `fanout` (one upstream or Kafka topic shared by many clients).
//! `respond` holds the answers that are not events (heads, refusals), `balancer` picks
//! hosts, `pool` lends read buffers, and `stats` counts what happened for `/__stats`.

// No `unsafe` in the plugin: the descriptor's ownership and the FFI objects are `abi`'s,
// which allows it only there, each place with its SAFETY comment; the root module that
// `abi::export_server_plugin!` exports is abi_stable's expansion.
#![deny(unsafe_code)]

mod balancer;
mod body;
mod bridged;
pub mod config;
mod drain;
mod fanout;
mod pool;
mod pump;
mod reconnect;
mod relay;
mod respond;
mod session;
mod stats;
mod upstream;
mod watch;
mod workers;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi::{Claimed, Logger, RouteDecl, ServerPlugin};

use balancer::Balancer;
use config::{Block, Route};
use pool::BufferPool;
use session::{ClientTransport, Session};
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
    drain: drain::Drain,
}

struct RouteState {
    config: Route,
    balancer: Balancer,
    stats: RouteStats,
    /// Fan-out sources open now, by key.
    hubs: Arc<fanout::Hubs>,
    /// Turns for Kafka catch-ups (`max_catch_ups`).
    catch_ups: tokio::sync::Semaphore,
    /// For a route with `https://` hosts: the plugin's one TLS client config.
    tls: Option<tokio_rustls::TlsConnector>,
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

/// Runs `future` within `limit`, if there is one. Without one the deadline is a century
/// away: a `Timeout` registers its timer only if the future has to wait, and one future
/// type for both cases keeps every stream's task small (an `async fn` holding either would
/// reserve room for both).
fn within<F: std::future::Future>(limit: Option<Duration>, future: F) -> tokio::time::Timeout<F> {
    const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    tokio::time::timeout(limit.unwrap_or(NO_LIMIT), future)
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Relaxed);
        self.route.stats.active.fetch_sub(1, Relaxed);
    }
}

impl StreamingPlugin {
    pub fn new(config_json: &str, logger: Logger) -> Result<Self, config::ConfigError> {
        let block = config::parse(config_json)?;
        // Built once (it reads the system's roots), and only if a route dials https.
        let tls =
            block.routes.iter().any(Route::uses_tls).then(|| {
                tokio_rustls::TlsConnector::from(Arc::new(block.client_tls.client_config()))
            });
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
                    tls: tls.clone().filter(|_| route.uses_tls()),
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
                drain: drain::Drain::default(),
            }),
        })
    }
}

/// What the host handed over with a connection, as the stream's task takes it: `C` is the
/// client as it crossed (a socket, or the host's bridged stream).
struct Handoff<C> {
    client: C,
    head: abi::RequestHead,
    response_headers: Vec<abi::Header>,
    token_expires_at: Option<tokio::time::Instant>,
    /// The host counts the connection open until the stream is over.
    slot: abi::ConnectionSlot,
    /// What the host read past the head, and the bounds of the request body.
    body: Box<body::Incoming>,
}

/// A client as it crossed the ABI, and the session's transport it becomes on the stream's
/// runtime. Each kind is its own task type, so a TCP stream's task is no larger for the
/// bridged kind's sake.
trait Crossed: Send + 'static {
    type Transport: ClientTransport;
    fn into_transport(self) -> std::io::Result<Self::Transport>;
}

impl Crossed for std::net::TcpStream {
    type Transport = tokio::net::TcpStream;

    fn into_transport(self) -> std::io::Result<tokio::net::TcpStream> {
        let client = tokio::net::TcpStream::from_std(self)?;
        // Events are written whole, each read's at once: nothing to gain by waiting.
        let _ = client.set_nodelay(true);
        Ok(client)
    }
}

impl Crossed for abi::FfiTransportBox {
    type Transport = bridged::BridgedStream;

    fn into_transport(self) -> std::io::Result<bridged::BridgedStream> {
        Ok(bridged::BridgedStream::new(self))
    }
}

/// The task of one claimed connection, the route's index checked: a fan-out client or a
/// relayed stream, over the connection's socket or the host's bridged stream.
// An async block, not an `async fn`: see `relay::relay` (the arguments stored once).
#[expect(clippy::manual_async_fn, reason = "arguments stored once")]
fn stream_task<C: Crossed>(
    shared: Arc<Shared>,
    route: usize,
    handoff: Handoff<C>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let Handoff {
            client,
            head,
            response_headers,
            token_expires_at,
            slot: _slot,
            body,
        } = handoff;
        let client = match client.into_transport() {
            Ok(client) => client,
            Err(e) => {
                let message = format!("[PLUGIN: {PLUGIN_NAME}] socket: {e}");
                return shared.logger.warn(&message);
            }
        };
        let state = &shared.routes[route];
        let (expires, shared) = (token_expires_at, &shared);
        let session = Session::new(client, &head, response_headers, expires, shared, state);
        match state.config.fanout {
            Some(_) => fanout::serve(session, head, shared, route).await,
            None => relay::serve(session, head, body).await,
        }
    }
}

/// Why a connection could not be taken over (the host logs it and closes the socket).
#[derive(Debug, thiserror::Error)]
pub enum HijackError {
    #[error("no route {0}")]
    NoRoute(usize),
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
}

impl ServerPlugin for StreamingPlugin {
    type HijackError = HijackError;

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

    fn hijack(&self, claimed: Claimed) -> Result<(), HijackError> {
        let Claimed {
            client,
            route,
            head,
            response_headers,
            token_expires_at,
            slot,
            read_ahead,
            max_body_bytes,
            body_deadline,
            http_version,
        } = claimed;
        let token_expires_at = token_expires_at.map(tokio::time::Instant::from_std);
        if route >= self.shared.routes.len() {
            return Err(HijackError::NoRoute(route));
        }
        let limits = body::BodyLimits {
            max_bytes: self.shared.routes[route]
                .config
                .max_body_bytes
                .unwrap_or(max_body_bytes),
            deadline: body_deadline.map(tokio::time::Instant::from_std),
        };
        let body = Box::new(body::Incoming {
            read_ahead,
            limits,
            version: http_version,
        });
        macro_rules! spawn {
            ($client:expr) => {
                workers::spawn(stream_task(
                    self.shared.clone(),
                    route,
                    Handoff {
                        client: $client,
                        head,
                        response_headers,
                        token_expires_at,
                        slot,
                        body,
                    },
                ))
            };
        }
        match client {
            abi::Client::Tcp(stream) => {
                stream.set_nonblocking(true)?;
                spawn!(stream)
            }
            abi::Client::Bridged(transport) => spawn!(transport),
        }
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
        // Half the deadline at most: the rest is for the last streams to reach an event
        // boundary and close.
        let wanted = self.shared.block.drain_spread;
        let spread = wanted.min(deadline / 2);
        if spread < wanted {
            self.shared.logger.warn(&format!(
                "[PLUGIN: {PLUGIN_NAME}] drain_spread {wanted:?} is more than half the host's shutdown_timeout {deadline:?}: streams end over {spread:?}"
            ));
        }
        self.shared.drain.start(spread);
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
    /// A plugin with one relay route, `/s`, and a GET's head for it: what the task size
    /// tests (here and the bridged stream's) measure a stream of.
    pub(crate) fn relay_plugin() -> (super::StreamingPlugin, abi::RequestHead) {
        extern "C" fn no_log(_: abi::LogLevel, _: abi_stable::std_types::RStr<'_>) {}
        let plugin = super::StreamingPlugin::new(
            r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h"}"#,
            abi::Logger { log: no_log },
        )
        .unwrap();
        let head = abi::RequestHead {
            method: "GET".into(),
            path: "/s".into(),
            query: Default::default(),
            headers: Default::default(),
            peer: "127.0.0.1:1".into(),
        };
        (plugin, head)
    }

    /// A GET's empty body, as it arrives over `version`.
    pub(crate) fn no_body(version: abi::HttpVersion) -> Box<super::body::Incoming> {
        Box::new(super::body::Incoming {
            read_ahead: Vec::new(),
            limits: super::body::BodyLimits {
                max_bytes: 0,
                deadline: None,
            },
            version,
        })
    }

    /// Every open stream is one task holding this future for hours: its size is most of
    /// what an idle stream costs (see the benchmark's S3), so growth should be a decision.
    /// 2,304 bytes, then 2,312 with the session's watch on the client's end (its waker, 8
    /// bytes: the end is no longer polled at every wake), 2,320 with the pump's on its
    /// timer (`crate::watch`); the bound rounds up to 64.
    #[tokio::test]
    async fn a_stream_task_stays_small() {
        let (plugin, head) = relay_plugin();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let shared = &plugin.shared;
        let session =
            super::Session::new(client, &head, Vec::new(), None, shared, &shared.routes[0]);
        let task = super::relay::serve(session, head, no_body(abi::HttpVersion::Http11));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2368, "a stream's future is {size} bytes");
    }

    /// The whole task of a claimed connection (the handoff and either kind of route) is
    /// what each connection holds, beyond the relay's future above: 2,744 bytes when this
    /// was written; 2,768 once a request carried its method, body and `resume` (the body
    /// itself is on the heap, the handoff's body bounds boxed), and then with the drain's
    /// spread (each stream's turn, and its wait for it in the selects); 2,800 before, 2,848
    /// after the per-wake cuts (the drain's wait keeps the waker it registered, a client
    /// write keeps its start and deadline instant, its timer boxed instead of inline), 2,864
    /// with the session's watch on the client's end (and with the pump's on its timer); the
    /// bound rounds the measured size up to 64.
    #[test]
    fn a_claimed_connection_s_whole_task_stays_small() {
        #[derive(Debug)]
        struct Uncounted;
        impl abi::FfiConnectionSlot for Uncounted {}
        let (plugin, head) = relay_plugin();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let handoff = super::Handoff {
            client: std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap(),
            head,
            response_headers: Vec::new(),
            token_expires_at: None,
            slot: abi::ConnectionSlot::from_value(Uncounted, abi_stable::sabi_trait::TD_Opaque),
            body: no_body(abi::HttpVersion::Http11),
        };
        let task = super::stream_task(plugin.shared.clone(), 0, handoff);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2880, "a claimed connection's task is {size} bytes");
    }
}
