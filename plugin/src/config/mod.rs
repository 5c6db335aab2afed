//! The plugin's config block: the PoC's single route, or a `routes` list.
//!
//! ```json
//! "krakend-server-plugin-streaming": {
//!   "keepalive": "15s",
//!   "max_streams": 10000,
//!   "routes": [
//!     {"endpoint": "/sse/{id}", "backend_url_pattern": "/events-stream/{id}",
//!      "backend_host": "http://localhost:9081"},
//!     {"endpoint": "/notifications/*", "backend_url_pattern": "/feed/{*}",
//!      "backend_host": ["http://a:9081", "http://b:9081"],
//!      "load_balance": "sticky", "sticky_key": "header:X-User-ID"}
//!   ]
//! }
//! ```
//!
//! Every route key may also sit at the top of the block, where it is the default for all
//! routes; without `routes`, the top-level keys are the one route (the PoC's form). Durations
//! are KrakenD strings (`"500ms"`, `"15s"`, `"1m"`); `"0"` turns a timeout or the keepalive off.
//! Unknown keys are refused, so a misspelt timeout is an error rather than a silent default.
//!
//! `keys` reads the JSON into typed keys (once, with serde) and merges the block's route
//! defaults; this file turns them into the [`Block`] the plugin runs on, with the built-in
//! defaults; `error` says where and why a block is refused.

use std::time::Duration;

use path_template::Template;
use rustls::pki_types::ServerName;
use serde_json::Value;

mod error;
mod fanout;
mod keys;
mod set_headers;
pub use error::{ConfigError, Problem};
pub use fanout::{Fanout, Kafka, StartFrom, DEFAULT_REPLAY, DEFAULT_REPLAY_BYTES};
pub use keys::{block_keys, route_keys_names};
use keys::{Balancing, OneOrMany, RouteKeys};

/// Each stream's read buffer: large enough for a burst of events per read and for the
/// upstream's response head, small enough to keep idle streams cheap.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 8 * 1024;
const MIN_READ_BUFFER_BYTES: usize = 1024;
/// The most a fan-out source holds of one event before it is complete, and so the largest
/// event its ring keeps: fan-out carries messages (prices, scores, notifications), and
/// 64 KiB holds any a page renders at once while 10,000 sources each caught in the middle
/// of an endless event hold 640 MiB at most.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;
/// Free read buffers kept for reuse (1 MiB at the default buffer size).
pub const DEFAULT_MAX_POOLED_BUFFERS: usize = 128;
/// Concurrent streams for the whole block: each holds two descriptors, and 20,000 is a
/// common hard per-process limit.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// The drain spreads the streams' ends over 5 s: `max_streams` (10,000) reconnects then
/// reach the next process at 2,000 a second rather than in one burst, and half the host's
/// default `shutdown_timeout` (10 s) is left for the last streams to reach an event
/// boundary. Longer would hold a deploy up for little: browsers add their own `retry:`
/// wait (3 s by default) on top.
pub const DEFAULT_DRAIN_SPREAD: Duration = Duration::from_secs(5);
/// Headers passed upstream when the config lists none.
pub const DEFAULT_FORWARD_HEADERS: [&str; 4] =
    ["Accept", "Last-Event-ID", "Authorization", "Cookie"];

/// The validated block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Most specific first: the first route that matches a request serves it.
    pub routes: Vec<Route>,
    pub max_streams: usize,
    pub read_buffer_bytes: usize,
    /// The largest event a fan-out source holds; a larger one is dropped, with a comment.
    pub max_event_bytes: usize,
    pub max_pooled_buffers: usize,
    /// Consecutive failures after which a backend host is skipped for `eject_for`.
    pub eject_after: u32,
    pub eject_for: Duration,
    /// Sent as `Retry-After` with a 503 when a stream limit is reached.
    pub retry_after: Duration,
    /// Written to each client when the gateway drains, before its stream ends.
    pub shutdown_event: Option<String>,
    /// How long a drain spreads the streams' ends over (see `crate::drain`).
    pub drain_spread: Duration,
    /// The host's root `client_tls`, its files read: how `https://` hosts are verified
    /// (the system's roots by default).
    pub client_tls: tls_config::ClientTls,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub endpoint: String,
    pub template: Template,
    pub methods: Vec<String>,
    pub backend_url_pattern: String,
    pub backends: Vec<Backend>,
    pub load_balance: LoadBalance,
    pub forward_headers: Vec<String>,
    /// Set on every upstream request (`${env:NAME}` resolved when the block was read),
    /// replacing the client's header of the same name.
    pub set_headers: Vec<(String, Vec<u8>)>,
    /// The largest request body; `None`: the host's root `max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Whether a stream whose upstream ends or breaks is resumed (the request sent again
    /// with `Last-Event-ID`); `None`: only a `GET`'s.
    pub resume: Option<bool>,
    /// Statuses of a first answer that fail over to the next host (the request sent again,
    /// the same body), before anything reached the client.
    pub retry_on: Vec<http::StatusCode>,
    /// `None` when off.
    pub keepalive: Option<Duration>,
    pub dial_timeout: Option<Duration>,
    pub response_header_timeout: Option<Duration>,
    pub upstream_idle_timeout: Option<Duration>,
    pub client_write_timeout: Option<Duration>,
    /// 0: only the block's limit applies.
    pub max_streams: usize,
    pub max_reconnects: usize,
    pub reconnect_window: Duration,
    /// The first wait before a reconnection when the stream sent no `retry:`.
    pub reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
    /// One upstream per distinct source, shared by all its clients (`fanout`, and always
    /// for Kafka).
    pub fanout: Option<Fanout>,
    pub kafka: Option<Kafka>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `http://host:port` (or `https://`) as configured, for logs.
    pub base: String,
    /// For the `Host` header.
    pub authority: String,
    /// `host:port` to dial.
    pub addr: String,
    /// For an `https://` host: the name sent as SNI and verified against its certificate.
    pub tls_name: Option<ServerName<'static>>,
}

impl Route {
    /// Whether a host of the route is dialled with TLS.
    pub fn uses_tls(&self) -> bool {
        self.backends.iter().any(|b| b.tls_name.is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadBalance {
    RoundRobin,
    Sticky(StickyKey),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum StickyKey {
    Header(String),
    Cookie(String),
    Ip,
}

/// Parses and validates the block; the error names the key (as a JSON path) and the reason.
pub fn parse(json: &str) -> Result<Block, ConfigError> {
    let (block, defaults) = keys::split(json)?;
    let read_buffer_bytes = block.read_buffer_bytes.unwrap_or(DEFAULT_READ_BUFFER_BYTES);
    if read_buffer_bytes < MIN_READ_BUFFER_BYTES {
        let problem = Problem::BelowMinimum {
            value: read_buffer_bytes,
            min: MIN_READ_BUFFER_BYTES,
        };
        return Err(ConfigError::at("", "read_buffer_bytes", problem));
    }
    let max_event_bytes = block.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT_BYTES);
    if max_event_bytes == 0 {
        return Err(ConfigError::at("", "max_event_bytes", Problem::Zero));
    }
    // The defaults on their own first, so that an error in one names its own key.
    let own: RouteKeys = keys::read(Value::Object(defaults.clone()), "")?;
    let mut routes = match block.routes {
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let at = format!("routes[{i}].");
                route(keys::route_keys(&defaults, value, &at)?, &at)
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![route(own, "")?],
    };
    if routes.is_empty() {
        return Err(ConfigError::at("", "routes", Problem::EmptyList("route")));
    }
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if a.template.same_shape(&b.template) && a.methods.iter().any(|m| b.methods.contains(m))
            {
                let problem = Problem::Ambiguous(a.endpoint.clone(), b.endpoint.clone());
                return Err(ConfigError::at("", "routes", problem));
            }
        }
    }
    routes.sort_by_cached_key(|r| r.template.specificity());
    let client_tls = match &block.client_tls {
        Some(raw) => tls_config::ClientTls::load(raw).map_err(|e| {
            ConfigError::at("", &format!("client_tls.{}", e.key), Problem::Tls(e.cause))
        })?,
        None => tls_config::ClientTls::default(),
    };
    Ok(Block {
        client_tls,
        routes,
        max_streams: block.max_streams.unwrap_or(DEFAULT_MAX_STREAMS),
        read_buffer_bytes,
        max_event_bytes,
        max_pooled_buffers: block
            .max_pooled_buffers
            .unwrap_or(DEFAULT_MAX_POOLED_BUFFERS),
        eject_after: block.eject_after.unwrap_or(3).max(1),
        eject_for: block.eject_for.unwrap_or(Duration::from_secs(10)),
        retry_after: block.retry_after.unwrap_or(Duration::from_secs(5)),
        // Whatever line endings it was given with, it must end the event it starts.
        shutdown_event: block
            .shutdown_event
            .map(|event| format!("{}\n\n", event.trim_end_matches(['\r', '\n']))),
        drain_spread: block.drain_spread.unwrap_or(DEFAULT_DRAIN_SPREAD),
    })
}

/// The route whose keys (defaults merged in) were written at `at`.
fn route(keys: RouteKeys, at: &str) -> Result<Route, ConfigError> {
    let invalid = |name: &str, problem| ConfigError::at(at, name, problem);
    let is_kafka = keys.backend_host.as_ref().is_some_and(OneOrMany::is_kafka);
    let fanout = fanout::fanout(&keys, is_kafka, at)?;
    let endpoint = required(keys.endpoint.clone(), at, "endpoint")?;
    let template = Template::parse(&endpoint).map_err(|error| {
        let endpoint = endpoint.clone();
        invalid("endpoint", Problem::Template { endpoint, error })
    })?;
    let hosts = match keys.backend_host.clone().map(OneOrMany::into_vec) {
        None => return Err(invalid("backend_host", Problem::Missing)),
        Some(hosts) if hosts.is_empty() => {
            return Err(invalid("backend_host", Problem::EmptyList("host")))
        }
        Some(hosts) => hosts,
    };
    let kafka = fanout::kafka(&keys, &hosts, at)?;
    let backend_url_pattern = match (&kafka, keys.backend_url_pattern.clone()) {
        (Some(_), pattern) => pattern.unwrap_or_default(),
        (None, pattern) => required(pattern, at, "backend_url_pattern")?,
    };
    if kafka.is_none() && !backend_url_pattern.starts_with('/') {
        let problem = Problem::NotAbsolute(backend_url_pattern);
        return Err(invalid("backend_url_pattern", problem));
    }
    let backends = hosts
        .iter()
        .filter(|_| kafka.is_none())
        .map(|host| {
            let uri = config_values::base_url(host)
                .map_err(|e| invalid("backend_host", Problem::BaseUrl(e)))?;
            let authority = uri.authority().expect("checked").as_str().to_owned();
            let tls_name = config_values::tls_name(&uri)
                .map(|name| {
                    ServerName::try_from(name.clone())
                        .map_err(|_| invalid("backend_host", Problem::NotATlsName(name)))
                })
                .transpose()?;
            Ok(Backend {
                base: format!("{}://{authority}", uri.scheme_str().expect("checked")),
                addr: config_values::dial_addr(&uri),
                authority,
                tls_name,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let methods = keys
        .methods
        .unwrap_or_else(|| vec!["GET".into()])
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect::<Vec<_>>();
    if let Some(bad) = methods
        .iter()
        .find(|m| http::Method::from_bytes(m.as_bytes()).is_err())
    {
        return Err(invalid("methods", Problem::NotAMethod(bad.clone())));
    }
    let load_balance = keys
        .load_balance
        .unwrap_or(Balancing::RoundRobin)
        .with(keys.sticky_key)
        .ok_or_else(|| invalid("sticky_key", Problem::StickyKeyRequired))?;
    let forward_headers = keys
        .forward_headers
        .unwrap_or_else(|| DEFAULT_FORWARD_HEADERS.map(String::from).to_vec());
    if let Some(bad) = forward_headers
        .iter()
        .find(|name| http::HeaderName::from_bytes(name.as_bytes()).is_err())
    {
        return Err(invalid(
            "forward_headers",
            Problem::NotAHeaderName(bad.clone()),
        ));
    }
    let set_headers = set_headers::resolve(keys.set_headers, at, |name| std::env::var(name).ok())?;
    let retry_on = keys
        .retry_on
        .unwrap_or_default()
        .into_iter()
        .map(|code| {
            http::StatusCode::from_u16(code)
                .ok()
                .filter(|_| code <= 599)
                .ok_or_else(|| invalid("retry_on", Problem::NotAStatus(code)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // `"0"` turns these off.
    let or_off =
        |value: Option<Duration>, default| Some(value.unwrap_or(default)).filter(|d| !d.is_zero());
    Ok(Route {
        endpoint,
        template,
        methods,
        backend_url_pattern,
        backends,
        load_balance,
        forward_headers,
        set_headers,
        max_body_bytes: keys.max_body_bytes,
        resume: keys.resume,
        retry_on,
        keepalive: or_off(keys.keepalive, Duration::from_secs(15)),
        dial_timeout: or_off(keys.dial_timeout, Duration::from_secs(5)),
        response_header_timeout: or_off(keys.response_header_timeout, Duration::from_secs(10)),
        upstream_idle_timeout: or_off(keys.upstream_idle_timeout, Duration::from_secs(60)),
        client_write_timeout: or_off(keys.client_write_timeout, Duration::from_secs(30)),
        max_streams: keys.max_streams.unwrap_or(0),
        max_reconnects: keys.max_reconnects.unwrap_or(5),
        reconnect_window: keys.reconnect_window.unwrap_or(Duration::from_secs(60)),
        reconnect_delay: keys.reconnect_delay.unwrap_or(Duration::from_secs(1)),
        max_reconnect_delay: keys.max_reconnect_delay.unwrap_or(Duration::from_secs(30)),
        fanout,
        kafka,
    })
}

/// A key that must be there and not blank.
fn required(value: Option<String>, at: &str, name: &str) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(ConfigError::at(at, name, Problem::Empty)),
        None => Err(ConfigError::at(at, name, Problem::Missing)),
    }
}

#[cfg(test)]
mod tests;
