//! Kafka topics as event streams.
//!
//! One consumer per topic (a hub's source) reads from the topic's end at the time it
//! starts, with partitions assigned explicitly: no consumer group, no commits. Each
//! message becomes one event: `data:` is its value, `event:` the value of the configured
//! header, and `id:` the topic's position just past it, as the next offset of every
//! partition (`0:15,1:7`). That id is a complete place in the topic, so `Last-Event-ID`
//! resumes exactly, across gateway restarts too.
//!
//! A client whose place the hub's ring does not hold (a new client with `start_from:
//! earliest`, or one resuming from before the hub started) first catches up with a
//! consumer of its own, reading each partition from its place up to the hub's position at
//! the moment it joined, then follows the ring from there: no gap and no duplicate at the
//! seam (`catch_up`). At most `max_catch_ups` catch-ups run at once per route; others wait
//! their turn.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::dropped_event;
use super::hub::{Hub, Status};
use crate::config::Kafka;
use crate::reconnect::{Reconnect, Waited};
use crate::stats::RouteStats;
use crate::{Shared, PLUGIN_NAME};

mod catch_up;
pub use catch_up::{catch_up_then_follow, join, CatchUp};

/// Metadata and watermark requests wait at most this long when `dial_timeout` is off.
const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// A place in a topic: the next offset to read in each partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(pub BTreeMap<i32, i64>);

impl Offsets {
    pub fn parse(text: &str) -> Option<Self> {
        text.split(',')
            .map(|pair| {
                let (partition, offset) = pair.split_once(':')?;
                Some((partition.parse().ok()?, offset.parse().ok()?))
            })
            .collect::<Option<BTreeMap<_, _>>>()
            .filter(|map| !map.is_empty())
            .map(Self)
    }
}

impl fmt::Display for Offsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (partition, offset)) in self.0.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            write!(f, "{comma}{partition}:{offset}")?;
        }
        Ok(())
    }
}

/// Why a consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("kafka client: {0}")]
    Client(KafkaError),
    #[error("metadata: {0}")]
    Metadata(KafkaError),
    #[error("topic {0:?} not found")]
    NoTopic(String),
    #[error("watermarks of partition {0}: {1}")]
    Watermarks(i32, KafkaError),
    #[error("{0}")]
    Partition(KafkaError),
    #[error("assign: {0}")]
    Assign(KafkaError),
    /// The blocking metadata call's thread failed.
    #[error("{0}")]
    Blocking(#[from] tokio::task::JoinError),
}

pub fn consumer(kafka: &Kafka, partition_eof: bool) -> Result<Arc<StreamConsumer>, BrokerError> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        // librdkafka wants a group for `assign`, though an assign-only consumer never
        // joins it nor commits to it.
        .set("group.id", "krakend-server-plugin-streaming")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", partition_eof.to_string())
        // An offset the broker no longer has (deleted or compacted away) reads on from
        // the oldest one it does have.
        .set("auto.offset.reset", "earliest")
        .create()
        .map(Arc::new)
        .map_err(BrokerError::Client)
}

/// The topic's end: the high watermark of every partition.
async fn topic_end(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    timeout: Duration,
) -> Result<Offsets, BrokerError> {
    let (consumer, topic) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(BrokerError::Metadata)?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| BrokerError::NoTopic(topic.clone()))?;
        let mut end = BTreeMap::new();
        for partition in partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(|e| BrokerError::Watermarks(partition, e))?;
            end.insert(partition, high);
        }
        Ok(Offsets(end))
    })
    .await?
}

pub fn assign(consumer: &StreamConsumer, topic: &str, from: &Offsets) -> Result<(), BrokerError> {
    let mut list = TopicPartitionList::new();
    for (&partition, &offset) in &from.0 {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(BrokerError::Partition)?;
    }
    consumer.assign(&list).map_err(BrokerError::Assign)
}

/// The serialized event for `message`, with `id` the place just past it; `None` when it
/// would be over `max_event_bytes`.
pub fn event_bytes(
    id: &str,
    message: &BorrowedMessage<'_>,
    event_header: Option<&str>,
    max_event_bytes: usize,
) -> Option<Vec<u8>> {
    let payload = message.payload().unwrap_or_default();
    if payload.len() > max_event_bytes {
        return None;
    }
    let header = |name: &str| {
        let headers = message.headers()?;
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let event = sse::Event {
        id: id.to_owned(),
        event: event_header
            .and_then(header)
            .unwrap_or_else(|| "message".into()),
        data: String::from_utf8_lossy(payload).into_owned(),
    };
    let mut out = Vec::with_capacity(event.data.len() + id.len() + 16);
    sse::write_event(&mut out, &event);
    (out.len() <= max_event_bytes).then_some(out)
}

/// The hub's source: one consumer following the topic from its end.
pub async fn run(hub: Arc<Hub>, shared: Arc<Shared>, route_index: usize) {
    let route = &shared.routes[route_index];
    let kafka = route.config.kafka.as_ref().expect("a Kafka route");
    let timeout = route
        .config
        .dial_timeout
        .unwrap_or(DEFAULT_METADATA_TIMEOUT);
    let log = |message: &dyn std::fmt::Display| {
        shared.logger.warn(&format!(
            "[PLUGIN: {PLUGIN_NAME}] kafka topic {}: {message}",
            kafka.topic
        ))
    };
    let mut reconnect = Reconnect::unlimited(&route.config);
    let (consumer, mut position) = loop {
        let started = async {
            let consumer = consumer(kafka, false)?;
            let end = topic_end(&consumer, &kafka.topic, timeout).await?;
            assign(&consumer, &kafka.topic, &end)?;
            Ok::<_, BrokerError>((consumer, end))
        };
        let started = tokio::select! {
            started = started => started,
            () = hub.stop.cancelled() => return,
        };
        match started {
            Ok(started) => break started,
            Err(why) => {
                log(&why);
                hub.set_status(Status::Down);
            }
        }
        if let Waited::Stopped(()) = reconnect.wait(None, hub.stop.cancelled()).await {
            return;
        }
    };
    hub.lock().position = position.to_string();
    hub.set_status(Status::Up);
    loop {
        let received = tokio::select! {
            received = consumer.recv() => received,
            () = hub.stop.cancelled() => return,
        };
        match received {
            Ok(message) => {
                position.0.insert(message.partition(), message.offset() + 1);
                let id = position.to_string();
                let max = shared.block.max_event_bytes;
                let bytes = event_bytes(&id, &message, kafka.event_header.as_deref(), max)
                    .unwrap_or_else(|| {
                        RouteStats::add(&route.stats.oversized_events, 1);
                        dropped_event(&id, max)
                    });
                let key = message.key().map(Bytes::copy_from_slice);
                hub.publish(&id, key, Bytes::from(bytes));
            }
            // The client reconnects to the brokers by itself; clients get keepalives meanwhile.
            Err(e) => log(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        let offsets = Offsets::parse("0:15,2:7,1:0").unwrap();
        assert_eq!(offsets.to_string(), "0:15,1:0,2:7");
        assert_eq!(Offsets::parse(&offsets.to_string()), Some(offsets));
        for bad in ["", "0", "0:x", "a:1", "0:1,", "42"] {
            assert_eq!(Offsets::parse(bad), None, "{bad:?}");
        }
    }
}
