//! The fan-out keys of a route, and the Kafka source.
//!
//! ```json
//! {"endpoint": "/ticker", "backend_url_pattern": "/prices", "backend_host": "http://origin:9081",
//!  "fanout": true, "replay": 1000, "replay_age": "5m", "client_queue": 500, "linger": "5s"}
//! {"endpoint": "/orders/{user}", "backend_host": ["kafka://broker-a:9092", "kafka://broker-b:9092"],
//!  "topic": "orders", "key": "{user}", "start_from": "earliest", "event_header": "type"}
//! ```

use std::time::Duration;

use super::error::{ConfigError, Problem};
use super::keys::RouteKeys;

/// Events a fan-out source keeps for clients that resume.
pub const DEFAULT_REPLAY: usize = 1000;
/// The bytes a fan-out source's ring holds at most: 1,000 events of 4 KiB, more than a
/// price, a score, a chat token or a notification takes, so for those the count (`replay`)
/// is what binds; a source of `max_event_bytes` (64 KiB) events keeps 63 of them instead
/// of 62.5 MiB.
pub const DEFAULT_REPLAY_BYTES: usize = 4 * 1024 * 1024;
/// Live events a client may fall behind before it is disconnected: half the ring, so that
/// the place a dropped client resumes from is usually still held.
pub const DEFAULT_CLIENT_QUEUE: usize = DEFAULT_REPLAY / 2;
/// How long a source stays open after its last client left: a page reload rejoins it.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Fanout {
    /// Events kept for replay (`replay`), and for how long (`replay_age`; `None`: no limit).
    pub replay: usize,
    /// The bytes those events may hold together (`replay_bytes`).
    pub replay_bytes: usize,
    pub replay_age: Option<Duration>,
    /// Live events a client may have yet to take before it is dropped (`client_queue`).
    pub client_queue: usize,
    /// How long a source stays open after its last client left (`linger`).
    pub linger: Duration,
}

#[derive(Debug, Clone)]
pub struct Kafka {
    /// `host:port,host:port`, librdkafka's `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// Only messages with this key (a template of the endpoint's `{param}`s).
    pub key: Option<String>,
    pub start_from: StartFrom,
    /// The message header whose value becomes the event's `event:` field.
    pub event_header: Option<String>,
    /// Clients reading their missing part of the topic from the broker at once, each with
    /// a consumer of its own (`max_catch_ups`).
    pub max_catch_ups: usize,
}

pub const DEFAULT_MAX_CATCH_UPS: usize = 8;

/// Where a client with no `Last-Event-ID` starts reading a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum StartFrom {
    /// The whole topic as the broker keeps it (the latest value per key when compacted).
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// The Kafka source, when the route's hosts are `kafka://` URLs.
pub(super) fn kafka(
    keys: &RouteKeys,
    hosts: &[String],
    at: &str,
) -> Result<Option<Kafka>, ConfigError> {
    let invalid = |name: &str, problem| ConfigError::at(at, name, problem);
    let brokers: Vec<&str> = hosts
        .iter()
        .filter_map(|h| h.strip_prefix("kafka://"))
        .collect();
    if brokers.is_empty() {
        for (name, set) in [
            ("topic", keys.topic.is_some()),
            ("key", keys.key.is_some()),
            ("start_from", keys.start_from.is_some()),
            ("event_header", keys.event_header.is_some()),
            ("max_catch_ups", keys.max_catch_ups.is_some()),
        ] {
            if set {
                return Err(invalid(name, Problem::KafkaOnly));
            }
        }
        return Ok(None);
    }
    if brokers.len() != hosts.len() {
        return Err(invalid("backend_host", Problem::MixedHosts));
    }
    if let Some(bad) = brokers
        .iter()
        .find(|b| b.is_empty() || b.contains('/') || !b.contains(':'))
    {
        return Err(invalid(
            "backend_host",
            Problem::NotABroker(bad.to_string()),
        ));
    }
    let topic = match keys.topic.as_deref().map(str::trim) {
        Some(topic) if !topic.is_empty() => topic.to_owned(),
        Some(_) => return Err(invalid("topic", Problem::Empty)),
        None => return Err(invalid("topic", Problem::KafkaRequired)),
    };
    if keys.fanout == Some(false) {
        return Err(invalid("fanout", Problem::KafkaAlwaysFansOut));
    }
    Ok(Some(Kafka {
        brokers: brokers.join(","),
        topic,
        key: keys.key.clone(),
        start_from: keys.start_from.unwrap_or(StartFrom::Earliest),
        event_header: keys.event_header.clone(),
        max_catch_ups: keys.max_catch_ups.unwrap_or(DEFAULT_MAX_CATCH_UPS).max(1),
    }))
}

/// The fan-out settings, when the route fans out.
pub(super) fn fanout(
    keys: &RouteKeys,
    is_kafka: bool,
    at: &str,
) -> Result<Option<Fanout>, ConfigError> {
    if !is_kafka && keys.fanout != Some(true) {
        for (name, set) in [
            ("replay", keys.replay.is_some()),
            ("replay_bytes", keys.replay_bytes.is_some()),
            ("replay_age", keys.replay_age.is_some()),
            ("client_queue", keys.client_queue.is_some()),
            ("linger", keys.linger.is_some()),
        ] {
            if set {
                return Err(ConfigError::at(at, name, Problem::FanoutOnly));
            }
        }
        return Ok(None);
    }
    // One upstream serves every client of a source: no client's request (its body, its
    // method, the headers the route would set for it) can shape it.
    let request_keys = [
        (
            "methods",
            keys.methods
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| !m.eq_ignore_ascii_case("GET"))),
        ),
        ("max_body_bytes", keys.max_body_bytes.is_some()),
        ("resume", keys.resume.is_some()),
        ("retry_on", keys.retry_on.is_some()),
    ];
    if let Some((name, _)) = request_keys.into_iter().find(|(_, set)| *set) {
        return Err(ConfigError::at(at, name, Problem::NotForFanout));
    }
    let replay = keys.replay.unwrap_or(DEFAULT_REPLAY);
    let client_queue = keys
        .client_queue
        .unwrap_or(DEFAULT_CLIENT_QUEUE.min(replay.max(1)));
    if client_queue == 0 {
        return Err(ConfigError::at(at, "client_queue", Problem::Zero));
    }
    let replay_bytes = keys.replay_bytes.unwrap_or(DEFAULT_REPLAY_BYTES);
    if replay_bytes == 0 {
        return Err(ConfigError::at(at, "replay_bytes", Problem::Zero));
    }
    Ok(Some(Fanout {
        // The ring is also every client's queue: it holds at least what a client may owe.
        replay: replay.max(client_queue),
        replay_bytes,
        replay_age: keys.replay_age.filter(|age| !age.is_zero()),
        client_queue,
        linger: keys.linger.unwrap_or(DEFAULT_LINGER),
    }))
}
