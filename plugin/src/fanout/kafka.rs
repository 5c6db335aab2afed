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
//! seam. At most `max_catch_ups` catch-ups run at once per route; others wait their turn.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::follow::Follow;
use super::hub::{Hub, Signal, Status};
use super::{dropped_event, start, Client, Joined, Place};
use crate::config::{Kafka, StartFrom};
use crate::pump::{next_cut_off, ClientStream, CutOff, Ended};
use crate::relay::{backoff, cut_off, drop_slow_client};
use crate::stats::{Drop, RouteStats};
use crate::{Shared, PLUGIN_NAME};

/// Metadata and watermark requests wait at most this long when `dial_timeout` is off.
const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Catch-up events are written in batches of about this many bytes.
const CATCH_UP_WRITE_BYTES: usize = 16 * 1024;

/// A place in a topic: the next offset to read in each partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(BTreeMap<i32, i64>);

impl Offsets {
    fn parse(text: &str) -> Option<Self> {
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

fn consumer(kafka: &Kafka, partition_eof: bool) -> Result<Arc<StreamConsumer>, String> {
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
        .map_err(|e| format!("kafka client: {e}"))
}

/// The topic's end: the high watermark of every partition.
async fn topic_end(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    timeout: Duration,
) -> Result<Offsets, String> {
    let (consumer, topic) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| format!("metadata: {e}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("topic {topic:?} not found"))?;
        let mut end = BTreeMap::new();
        for partition in partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(|e| format!("watermarks of partition {partition}: {e}"))?;
            end.insert(partition, high);
        }
        Ok(Offsets(end))
    })
    .await
    .map_err(|e| e.to_string())?
}

fn assign(consumer: &StreamConsumer, topic: &str, from: &Offsets) -> Result<(), String> {
    let mut list = TopicPartitionList::new();
    for (&partition, &offset) in &from.0 {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&list).map_err(|e| format!("assign: {e}"))
}

/// The serialized event for `message`, with `id` the place just past it; `None` when it
/// would be over `max_event_bytes`.
fn event_bytes(
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
    let log = |message: &str| {
        shared.logger.warn(&format!(
            "[PLUGIN: {PLUGIN_NAME}] kafka topic {}: {message}",
            kafka.topic
        ))
    };
    let mut failed_in_a_row = 0;
    let (consumer, mut position) = loop {
        let started = async {
            let consumer = consumer(kafka, false)?;
            let end = topic_end(&consumer, &kafka.topic, timeout).await?;
            assign(&consumer, &kafka.topic, &end)?;
            Ok::<_, String>((consumer, end))
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
        let delay = backoff(&route.config, None, failed_in_a_row);
        failed_in_a_row += 1;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = hub.stop.cancelled() => return,
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
            Err(e) => log(&e.to_string()),
        }
    }
}

/// What a client must read from the broker before it can follow the ring.
pub struct CatchUp {
    from: Offsets,
    to: Offsets,
    /// The ring's number at `to`.
    cursor: u64,
}

pub(super) fn join(request: &Client, shared: &Arc<Shared>, route_index: usize) -> Joined {
    let route = &shared.routes[route_index];
    let config = route.config.fanout.as_ref().expect("a fan-out route");
    let kafka = route.config.kafka.as_ref().expect("a Kafka route");
    let membership = route.hubs.join(&kafka.topic, config, String::new, |hub| {
        start(hub, shared, route_index, run)
    });
    let key_filter = kafka.key.as_ref().map(|template| {
        let params = route
            .config
            .template
            .matches(&request.path)
            .unwrap_or_default();
        path_template::substitute(template, &params).into_bytes()
    });
    let last_event_id = request.last_event_id.clone();
    let start_from = kafka.start_from;
    let joined_at = membership.hub.lock().ring.end();
    Joined {
        membership,
        key_filter,
        place: Box::new(move |hub| place(hub, last_event_id.as_deref(), start_from, joined_at)),
    }
}

/// Where a client starts: in the ring if it holds the client's place, else a catch-up.
/// `joined_at`: the ring's end when the client joined, where a client of `latest` starts.
fn place(hub: &Hub, last_event_id: Option<&str>, start_from: StartFrom, joined_at: u64) -> Place {
    let mut state = hub.lock();
    let end = state.ring.end();
    let to = Offsets::parse(&state.position).unwrap_or_default();
    let mut note = None;
    let from =
        match last_event_id.map(|id| (id, state.ring.resume(id))) {
            Some((_, super::ring::Resume::At(cursor))) => return Place::Ring { cursor, note },
            Some((id, _)) => Offsets::parse(id).or_else(|| {
                let id: String = id.chars().filter(|c| !c.is_control()).collect();
                note =
                    Some(format!(
                ": Last-Event-ID {id:?} is not a place in this topic; starting from the {}\n",
                if start_from == StartFrom::Earliest { "beginning" } else { "end" }
            ));
                None
            }),
            None => None,
        };
    let from = match (from, start_from) {
        (Some(from), _) => from,
        (None, StartFrom::Earliest) => Offsets::default(),
        (None, StartFrom::Latest) => {
            return Place::Ring {
                cursor: joined_at,
                note,
            }
        }
    };
    // A partition the client's place does not name is read from its beginning.
    let from = Offsets(
        to.0.iter()
            .map(|(&p, &to)| (p, from.0.get(&p).copied().unwrap_or(0).min(to)))
            .collect(),
    );
    if from == to {
        return Place::Ring { cursor: end, note };
    }
    Place::CatchUp(CatchUp {
        from,
        to,
        cursor: end,
    })
}

/// Reads the client's missing part of the topic from the broker, then follows the ring.
pub async fn catch_up_then_follow(
    catch_up: CatchUp,
    follow: &Follow<'_>,
    client: &mut TcpStream,
    stream: &mut ClientStream,
    signal: watch::Receiver<Signal>,
) -> &'static str {
    let (route, shared) = (follow.route, follow.shared);
    let kafka = route.config.kafka.as_ref().expect("a Kafka route");
    let turn = tokio::select! {
        turn = route.catch_ups.acquire() => turn,
        cut = next_cut_off(&shared.shutdown, stream.expires_at) => {
            return cut_off(client, stream, shared, route, cut).await;
        }
    };
    // The semaphore is never closed.
    let Ok(_turn) = turn else {
        return "the catch-up could not start";
    };
    match read_missing(&catch_up, follow, kafka, client, stream).await {
        Ok(()) => {
            follow
                .run(client, stream, signal, catch_up.cursor, None)
                .await
        }
        Err(Stop::Ended(why)) => why,
        Err(Stop::CutOff(cut)) => cut_off(client, stream, shared, route, cut).await,
    }
}

/// Why a catch-up stopped before the client's place was reached.
enum Stop {
    Ended(&'static str),
    /// Between two writes, so between events.
    CutOff(CutOff),
}

async fn read_missing(
    catch_up: &CatchUp,
    follow: &Follow<'_>,
    kafka: &Kafka,
    client: &mut TcpStream,
    stream: &mut ClientStream,
) -> Result<(), Stop> {
    let log = |message: &str| {
        follow.shared.logger.warn(&format!(
            "[PLUGIN: {PLUGIN_NAME}] kafka topic {} catch-up: {message}",
            kafka.topic
        ))
    };
    let mut behind: Vec<i32> = catch_up
        .to
        .0
        .iter()
        .filter(|(p, to)| catch_up.from.0[p] < **to)
        .map(|(p, _)| *p)
        .collect();
    let unavailable = |e: String| {
        log(&e);
        Stop::Ended("the broker is unavailable")
    };
    let consumer = consumer(kafka, true).map_err(unavailable)?;
    let pending = Offsets(behind.iter().map(|p| (*p, catch_up.from.0[p])).collect());
    assign(&consumer, &kafka.topic, &pending).map_err(unavailable)?;
    let shutdown = &follow.shared.shutdown;
    let mut position = catch_up.from.clone();
    let mut out = Vec::new();
    let mut events = 0;
    while !behind.is_empty() {
        // Events not yet written are dropped: the client's place is the last one it got.
        if let Some(cut) = stream.cut_off_due(shutdown) {
            return Err(Stop::CutOff(cut));
        }
        // Whatever is already fetched goes out in one write; the write waits for nothing else.
        let ready = tokio::select! {
            biased;
            received = consumer.recv() => Some(received),
            () = std::future::ready(()) => None,
        };
        let received = match ready {
            Some(received) => received,
            None => {
                flush(follow, client, stream, &mut out, &mut events).await?;
                tokio::select! {
                    received = consumer.recv() => received,
                    cut = next_cut_off(shutdown, stream.expires_at) => return Err(Stop::CutOff(cut)),
                }
            }
        };
        match received {
            Ok(message) => {
                let partition = message.partition();
                if message.offset() >= catch_up.to.0[&partition] {
                    behind.retain(|&p| p != partition);
                    continue;
                }
                position.0.insert(partition, message.offset() + 1);
                if position.0[&partition] >= catch_up.to.0[&partition] {
                    behind.retain(|&p| p != partition);
                }
                let wanted = follow.key.is_none_or(|key| message.key() == Some(key));
                if wanted {
                    let id = if behind.is_empty() {
                        // The last catch-up event carries the hub's place, where the ring takes over.
                        catch_up.to.to_string()
                    } else {
                        position.to_string()
                    };
                    let max = follow.shared.block.max_event_bytes;
                    let header = kafka.event_header.as_deref();
                    let bytes = event_bytes(&id, &message, header, max);
                    out.extend(bytes.unwrap_or_else(|| dropped_event(&id, max)));
                    events += 1;
                    if out.len() >= CATCH_UP_WRITE_BYTES {
                        flush(follow, client, stream, &mut out, &mut events).await?;
                    }
                }
            }
            Err(KafkaError::PartitionEOF(partition)) => behind.retain(|&p| p != partition),
            Err(e) => log(&e.to_string()),
        }
    }
    flush(follow, client, stream, &mut out, &mut events).await
}

async fn flush(
    follow: &Follow<'_>,
    client: &mut TcpStream,
    stream: &mut ClientStream,
    out: &mut Vec<u8>,
    events: &mut u64,
) -> Result<(), Stop> {
    if out.is_empty() {
        return Ok(());
    }
    match stream.write_own(client, follow.route, out).await {
        Ok(()) => {}
        Err(Ended::ClientStalled) => {
            drop_slow_client(client, follow.route, Drop::ClientStalled);
            return Err(Stop::Ended("the client stalled during its catch-up"));
        }
        Err(_) => return Err(Stop::Ended("the client left during its catch-up")),
    }
    RouteStats::add(&follow.route.stats.events, *events);
    RouteStats::add(&follow.route.stats.bytes, out.len() as u64);
    stream.events += *events;
    stream.bytes += out.len() as u64;
    out.clear();
    *events = 0;
    Ok(())
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
