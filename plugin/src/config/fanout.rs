//! The fan-out keys of a route, and the Kafka source.
//!
//! ```json
//! {"endpoint": "/ticker", "backend_url_pattern": "/prices", "backend_host": "http://origin:9081",
//!  "fanout": true, "replay": 1000, "replay_age": "5m", "client_queue": 500, "linger": "5s"}
//! {"endpoint": "/orders/{user}", "backend_host": ["kafka://broker-a:9092", "kafka://broker-b:9092"],
//!  "topic": "orders", "key": "{user}", "start_from": "earliest", "event_header": "type"}
//! ```

use std::time::Duration;

use super::{duration, RawRoute};

/// Events a fan-out source keeps for clients that resume.
pub const DEFAULT_REPLAY: usize = 1000;
/// Live events a client may fall behind before it is disconnected: half the ring, so that
/// the place a dropped client resumes from is usually still held.
pub const DEFAULT_CLIENT_QUEUE: usize = DEFAULT_REPLAY / 2;

#[derive(Debug, Clone)]
pub struct Fanout {
    /// Events kept for replay (`replay`), and for how long (`replay_age`; `None`: no limit).
    pub replay: usize,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The whole topic as the broker keeps it (the latest value per key when compacted).
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// The Kafka source, when the route's hosts are `kafka://` URLs.
pub(super) fn kafka(raw: &RawRoute, hosts: &[String], at: &str) -> Result<Option<Kafka>, String> {
    let key = |name: &str| format!("{at}{name}");
    let brokers: Vec<&str> = hosts
        .iter()
        .filter_map(|h| h.strip_prefix("kafka://"))
        .collect();
    if brokers.is_empty() {
        for (name, set) in [
            ("topic", raw.topic.is_some()),
            ("key", raw.key.is_some()),
            ("start_from", raw.start_from.is_some()),
            ("event_header", raw.event_header.is_some()),
            ("max_catch_ups", raw.max_catch_ups.is_some()),
        ] {
            if set {
                return Err(format!("{}: only for kafka:// hosts", key(name)));
            }
        }
        return Ok(None);
    }
    if brokers.len() != hosts.len() {
        return Err(format!(
            "{}: kafka:// and other hosts cannot be mixed",
            key("backend_host")
        ));
    }
    if let Some(bad) = brokers
        .iter()
        .find(|b| b.is_empty() || b.contains('/') || !b.contains(':'))
    {
        return Err(format!(
            "{}: \"kafka://{bad}\" is not kafka://host:port",
            key("backend_host")
        ));
    }
    let topic = match raw.topic.as_deref().map(str::trim) {
        Some(topic) if !topic.is_empty() => topic.to_owned(),
        Some(_) => return Err(format!("{}: must not be empty", key("topic"))),
        None => return Err(format!("{}: required for kafka:// hosts", key("topic"))),
    };
    let start_from = match raw.start_from.as_deref() {
        None | Some("earliest") => StartFrom::Earliest,
        Some("latest") => StartFrom::Latest,
        Some(other) => {
            return Err(format!(
                "{}: {other:?} is not \"earliest\" or \"latest\"",
                key("start_from")
            ))
        }
    };
    if raw.fanout == Some(false) {
        return Err(format!(
            "{}: a Kafka topic is always fanned out",
            key("fanout")
        ));
    }
    Ok(Some(Kafka {
        brokers: brokers.join(","),
        topic,
        key: raw.key.clone(),
        start_from,
        event_header: raw.event_header.clone(),
        max_catch_ups: raw.max_catch_ups.unwrap_or(DEFAULT_MAX_CATCH_UPS).max(1),
    }))
}

/// The fan-out settings, when the route fans out.
pub(super) fn fanout(raw: &RawRoute, is_kafka: bool, at: &str) -> Result<Option<Fanout>, String> {
    let key = |name: &str| format!("{at}{name}");
    if !is_kafka && raw.fanout != Some(true) {
        for (name, set) in [
            ("replay", raw.replay.is_some()),
            ("replay_age", raw.replay_age.is_some()),
            ("client_queue", raw.client_queue.is_some()),
            ("linger", raw.linger.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{}: only for fan-out routes (\"fanout\": true)",
                    key(name)
                ));
            }
        }
        return Ok(None);
    }
    let replay = raw.replay.unwrap_or(DEFAULT_REPLAY);
    let client_queue = raw
        .client_queue
        .unwrap_or(DEFAULT_CLIENT_QUEUE.min(replay.max(1)));
    if client_queue == 0 {
        return Err(format!("{}: must be at least 1", key("client_queue")));
    }
    let replay_age = duration(&key("replay_age"), raw.replay_age.clone(), "0")?;
    Ok(Some(Fanout {
        // The ring is also every client's queue: it holds at least what a client may owe.
        replay: replay.max(client_queue),
        replay_age: (!replay_age.is_zero()).then_some(replay_age),
        client_queue,
        linger: duration(&key("linger"), raw.linger.clone(), "5s")?,
    }))
}
