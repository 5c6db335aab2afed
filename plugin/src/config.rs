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

use std::time::Duration;

use path_template::Template;
use serde::Deserialize;
use serde_json::{Map, Value};

mod fanout;
pub use fanout::{Fanout, Kafka, StartFrom};

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
    /// `http://host:port` as configured, for logs.
    pub base: String,
    /// For the `Host` header.
    pub authority: String,
    /// `host:port` to dial.
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadBalance {
    RoundRobin,
    Sticky(StickyKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Header(String),
    Cookie(String),
    Ip,
}

/// Keys of a route; at the top of the block they are defaults for every route.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    endpoint: Option<String>,
    methods: Option<Vec<String>>,
    backend_url_pattern: Option<String>,
    backend_host: Option<OneOrMany>,
    load_balance: Option<String>,
    sticky_key: Option<String>,
    forward_headers: Option<Vec<String>>,
    keepalive: Option<String>,
    dial_timeout: Option<String>,
    response_header_timeout: Option<String>,
    upstream_idle_timeout: Option<String>,
    client_write_timeout: Option<String>,
    max_streams: Option<usize>,
    max_reconnects: Option<usize>,
    reconnect_window: Option<String>,
    reconnect_delay: Option<String>,
    max_reconnect_delay: Option<String>,
    fanout: Option<bool>,
    replay: Option<usize>,
    replay_age: Option<String>,
    client_queue: Option<usize>,
    linger: Option<String>,
    topic: Option<String>,
    key: Option<String>,
    start_from: Option<String>,
    event_header: Option<String>,
    max_catch_ups: Option<usize>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Keys that belong to the block only.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    routes: Option<Vec<Value>>,
    read_buffer_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
    max_pooled_buffers: Option<usize>,
    eject_after: Option<u32>,
    eject_for: Option<String>,
    retry_after: Option<String>,
    shutdown_event: Option<String>,
}

const BLOCK_KEYS: [&str; 8] = [
    "routes",
    "read_buffer_bytes",
    "max_event_bytes",
    "max_pooled_buffers",
    "eject_after",
    "eject_for",
    "retry_after",
    "shutdown_event",
];

/// Parses and validates the block; the error names the key (as a JSON path) and the reason.
pub fn parse(json: &str) -> Result<Block, String> {
    let all: Map<String, Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let (block_keys, route_keys): (Map<_, _>, Map<_, _>) = all
        .into_iter()
        .partition(|(key, _)| BLOCK_KEYS.contains(&key.as_str()));
    let raw: RawBlock = deserialize(Value::Object(block_keys), "")?;
    let read_buffer_bytes = raw.read_buffer_bytes.unwrap_or(DEFAULT_READ_BUFFER_BYTES);
    if read_buffer_bytes < MIN_READ_BUFFER_BYTES {
        return Err(format!("read_buffer_bytes: {read_buffer_bytes} is below the minimum of {MIN_READ_BUFFER_BYTES}"));
    }
    let max_event_bytes = raw.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT_BYTES);
    if max_event_bytes == 0 {
        return Err("max_event_bytes: must be at least 1".into());
    }
    let eject_for = duration("eject_for", raw.eject_for, "10s")?;
    let retry_after = duration("retry_after", raw.retry_after, "5s")?;
    let max_streams = route_keys.get("max_streams").cloned();
    let defaults: RawRoute = deserialize(Value::Object(route_keys), "")?;
    let max_streams = match max_streams {
        Some(limit) => deserialize(limit, "max_streams")?,
        None => DEFAULT_MAX_STREAMS,
    };
    let mut routes = match raw.routes {
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let at = format!("routes[{i}].");
                let raw: RawRoute = deserialize(value, &at)?;
                // The block's max_streams is the block's limit, not a per-route default.
                let defaults = RawRoute {
                    max_streams: None,
                    ..defaults.clone()
                };
                route(raw.or(defaults), &at)
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![route(
            RawRoute {
                max_streams: None,
                ..defaults
            },
            "",
        )?],
    };
    if routes.is_empty() {
        return Err("routes: must list at least one route".into());
    }
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if a.template.same_shape(&b.template) && a.methods.iter().any(|m| b.methods.contains(m))
            {
                return Err(format!(
                    "routes: {:?} and {:?} match the same requests; neither is more specific",
                    a.endpoint, b.endpoint
                ));
            }
        }
    }
    routes.sort_by_cached_key(|r| r.template.specificity());
    Ok(Block {
        routes,
        max_streams,
        read_buffer_bytes,
        max_event_bytes,
        max_pooled_buffers: raw.max_pooled_buffers.unwrap_or(DEFAULT_MAX_POOLED_BUFFERS),
        eject_after: raw.eject_after.unwrap_or(3).max(1),
        eject_for,
        retry_after,
        // Whatever line endings it was given with, it must end the event it starts.
        shutdown_event: raw
            .shutdown_event
            .map(|event| format!("{}\n\n", event.trim_end_matches(['\r', '\n']))),
    })
}

impl RawRoute {
    /// This route's keys, with `defaults` where it has none.
    fn or(self, defaults: RawRoute) -> RawRoute {
        RawRoute {
            endpoint: self.endpoint.or(defaults.endpoint),
            methods: self.methods.or(defaults.methods),
            backend_url_pattern: self.backend_url_pattern.or(defaults.backend_url_pattern),
            backend_host: self.backend_host.or(defaults.backend_host),
            load_balance: self.load_balance.or(defaults.load_balance),
            sticky_key: self.sticky_key.or(defaults.sticky_key),
            forward_headers: self.forward_headers.or(defaults.forward_headers),
            keepalive: self.keepalive.or(defaults.keepalive),
            dial_timeout: self.dial_timeout.or(defaults.dial_timeout),
            response_header_timeout: self
                .response_header_timeout
                .or(defaults.response_header_timeout),
            upstream_idle_timeout: self
                .upstream_idle_timeout
                .or(defaults.upstream_idle_timeout),
            client_write_timeout: self.client_write_timeout.or(defaults.client_write_timeout),
            max_streams: self.max_streams.or(defaults.max_streams),
            max_reconnects: self.max_reconnects.or(defaults.max_reconnects),
            reconnect_window: self.reconnect_window.or(defaults.reconnect_window),
            reconnect_delay: self.reconnect_delay.or(defaults.reconnect_delay),
            max_reconnect_delay: self.max_reconnect_delay.or(defaults.max_reconnect_delay),
            fanout: self.fanout.or(defaults.fanout),
            replay: self.replay.or(defaults.replay),
            replay_age: self.replay_age.or(defaults.replay_age),
            client_queue: self.client_queue.or(defaults.client_queue),
            linger: self.linger.or(defaults.linger),
            topic: self.topic.or(defaults.topic),
            key: self.key.or(defaults.key),
            start_from: self.start_from.or(defaults.start_from),
            event_header: self.event_header.or(defaults.event_header),
            max_catch_ups: self.max_catch_ups.or(defaults.max_catch_ups),
        }
    }
}

fn route(raw: RawRoute, at: &str) -> Result<Route, String> {
    let key = |name: &str| format!("{at}{name}");
    let fanout = fanout::fanout(&raw, raw.backend_host.as_ref().is_some_and(is_kafka), at)?;
    let endpoint = required(&key("endpoint"), raw.endpoint.clone())?;
    let template =
        Template::parse(&endpoint).map_err(|e| format!("{}: {endpoint:?} {e}", key("endpoint")))?;
    let hosts = match raw.backend_host.clone() {
        None => return Err(format!("{}: missing", key("backend_host"))),
        Some(OneOrMany::One(host)) => vec![host],
        Some(OneOrMany::Many(hosts)) if hosts.is_empty() => {
            return Err(format!(
                "{}: must list at least one host",
                key("backend_host")
            ))
        }
        Some(OneOrMany::Many(hosts)) => hosts,
    };
    let kafka = fanout::kafka(&raw, &hosts, at)?;
    let backend_url_pattern = match (&kafka, raw.backend_url_pattern.clone()) {
        (Some(_), pattern) => pattern.unwrap_or_default(),
        (None, pattern) => required(&key("backend_url_pattern"), pattern)?,
    };
    if kafka.is_none() && !backend_url_pattern.starts_with('/') {
        return Err(format!(
            "{}: {backend_url_pattern:?} must start with '/'",
            key("backend_url_pattern")
        ));
    }
    let backends = hosts
        .iter()
        .filter(|_| kafka.is_none())
        .map(|host| {
            let uri = config_values::http_base_url(host)
                .map_err(|e| format!("{}: {e}", key("backend_host")))?;
            let authority = uri.authority().expect("checked").as_str().to_owned();
            Ok(Backend {
                base: format!("http://{authority}"),
                addr: config_values::dial_addr(&uri),
                authority,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let methods = raw
        .methods
        .unwrap_or_else(|| vec!["GET".into()])
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect::<Vec<_>>();
    if let Some(bad) = methods
        .iter()
        .find(|m| http::Method::from_bytes(m.as_bytes()).is_err())
    {
        return Err(format!("{}: {bad:?} is not an HTTP method", key("methods")));
    }
    let load_balance = match (raw.load_balance.as_deref(), raw.sticky_key) {
        (None | Some("round_robin"), _) => LoadBalance::RoundRobin,
        (Some("sticky"), Some(sticky)) => LoadBalance::Sticky(
            sticky_key(&sticky).map_err(|e| format!("{}: {e}", key("sticky_key")))?,
        ),
        (Some("sticky"), None) => {
            return Err(format!(
                "{}: required when load_balance is \"sticky\"",
                key("sticky_key")
            ))
        }
        (Some(other), _) => {
            return Err(format!(
                "{}: {other:?} is not \"round_robin\" or \"sticky\"",
                key("load_balance")
            ))
        }
    };
    let forward_headers = raw
        .forward_headers
        .unwrap_or_else(|| DEFAULT_FORWARD_HEADERS.map(String::from).to_vec());
    if let Some(bad) = forward_headers
        .iter()
        .find(|name| http::HeaderName::from_bytes(name.as_bytes()).is_err())
    {
        return Err(format!(
            "{}: {bad:?} is not a header name",
            key("forward_headers")
        ));
    }
    let optional = |name: &str, value: Option<String>, default: &str| {
        duration(&key(name), value, default).map(|d| (!d.is_zero()).then_some(d))
    };
    Ok(Route {
        endpoint,
        template,
        methods,
        backend_url_pattern,
        backends,
        load_balance,
        forward_headers,
        keepalive: optional("keepalive", raw.keepalive, "15s")?,
        dial_timeout: optional("dial_timeout", raw.dial_timeout, "5s")?,
        response_header_timeout: optional(
            "response_header_timeout",
            raw.response_header_timeout,
            "10s",
        )?,
        upstream_idle_timeout: optional("upstream_idle_timeout", raw.upstream_idle_timeout, "60s")?,
        client_write_timeout: optional("client_write_timeout", raw.client_write_timeout, "30s")?,
        max_streams: raw.max_streams.unwrap_or(0),
        max_reconnects: raw.max_reconnects.unwrap_or(5),
        reconnect_window: duration(&key("reconnect_window"), raw.reconnect_window, "1m")?,
        reconnect_delay: duration(&key("reconnect_delay"), raw.reconnect_delay, "1s")?,
        max_reconnect_delay: duration(&key("max_reconnect_delay"), raw.max_reconnect_delay, "30s")?,
        fanout,
        kafka,
    })
}

fn is_kafka(hosts: &OneOrMany) -> bool {
    match hosts {
        OneOrMany::One(host) => host.starts_with("kafka://"),
        OneOrMany::Many(hosts) => hosts.iter().any(|h| h.starts_with("kafka://")),
    }
}

fn sticky_key(text: &str) -> Result<StickyKey, String> {
    let key = match text.split_once(':') {
        Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
            StickyKey::Header(name.to_owned())
        }
        Some(("cookie", name)) if !name.is_empty() => StickyKey::Cookie(name.to_owned()),
        None if text == "ip" => StickyKey::Ip,
        _ => {
            return Err(format!(
                "{text:?} is not \"header:NAME\", \"cookie:NAME\" or \"ip\""
            ))
        }
    };
    Ok(key)
}

fn deserialize<T: for<'de> Deserialize<'de>>(value: Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let place = match (at.trim_end_matches('.'), path.as_str()) {
            ("", ".") => String::new(),
            (route, ".") => format!("{route}: "),
            (_, path) => format!("{at}{path}: "),
        };
        format!("{place}{}", e.inner())
    })
}

fn duration(key: &str, value: Option<String>, default: &str) -> Result<Duration, String> {
    config_values::duration::parse(value.as_deref().unwrap_or(default))
        .map_err(|e| format!("{key}: {e}"))
}

fn required(key: &str, value: Option<String>) -> Result<String, String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(format!("{key}: must not be empty")),
        None => Err(format!("{key}: missing")),
    }
}

#[cfg(test)]
mod tests;
