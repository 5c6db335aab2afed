//! A Kafka client's catch-up: a client whose place the hub's ring does not hold reads its
//! missing part of the topic from the broker with a consumer of its own, each partition
//! from its place up to the hub's position at the moment it joined, then follows the
//! ring from there, so there is no gap and no duplicate at the seam. The catch-up's
//! events go to the client's session in writes of about [`CATCH_UP_WRITE_BYTES`]; a drain
//! or the token's expiry stops it between two of them.

use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::sync::watch;

use super::{assign, consumer, event_bytes, run, BrokerError, Offsets};
use crate::config::{Kafka, StartFrom};
use crate::fanout::follow::Follow;
use crate::fanout::hub::{Hub, Signal};
use crate::fanout::{dropped_event, start, Joined, Place, Wanted};
use crate::session::{ClientTransport, CutOff, End, Session};
use crate::{Shared, PLUGIN_NAME};

/// Catch-up events are written in batches of about this many bytes.
const CATCH_UP_WRITE_BYTES: usize = 16 * 1024;

/// What a client must read from the broker before it can follow the ring.
pub struct CatchUp {
    from: Offsets,
    to: Offsets,
    /// The ring's number at `to`.
    cursor: u64,
}

pub fn join(request: &Wanted, shared: &Arc<Shared>, route_index: usize) -> Joined {
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
    let from = match last_event_id.map(|id| (id, state.ring.resume(id))) {
        Some((_, crate::fanout::ring::Resume::At(cursor))) => return Place::Ring { cursor, note },
        Some((id, _)) => {
            Offsets::parse(id).or_else(|| {
                let id: String = id.chars().filter(|c| !c.is_control()).collect();
                note =
                    Some(format!(
                ": Last-Event-ID {id:?} is not a place in this topic; starting from the {}\n",
                if start_from == StartFrom::Earliest { "beginning" } else { "end" }
            ));
                None
            })
        }
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
pub async fn catch_up_then_follow<C: ClientTransport>(
    catch_up: CatchUp,
    follow: &Follow<'_>,
    session: &mut Session<'_, C>,
    signal: watch::Receiver<Signal>,
) -> End {
    let route = session.route();
    let kafka = route.config.kafka.as_ref().expect("a Kafka route");
    let turn = tokio::select! {
        turn = route.catch_ups.acquire() => turn,
        cut = session.next_cut_off() => return session.cut_off(cut).await,
    };
    // The semaphore is never closed.
    let Ok(_turn) = turn else {
        return End::NoCatchUpTurn;
    };
    match read_missing(&catch_up, follow.key, kafka, session).await {
        Ok(()) => follow.run(session, signal, catch_up.cursor, None).await,
        Err(Stop::Ended(end)) => end,
        Err(Stop::CutOff(cut)) => session.cut_off(cut).await,
    }
}

/// Why a catch-up stopped before the client's place was reached.
enum Stop {
    Ended(End),
    /// Between two writes, so between events.
    CutOff(CutOff),
}

async fn read_missing<C: ClientTransport>(
    catch_up: &CatchUp,
    key_filter: Option<&[u8]>,
    kafka: &Kafka,
    session: &mut Session<'_, C>,
) -> Result<(), Stop> {
    let shared = session.shared();
    let log = |message: &dyn std::fmt::Display| {
        shared.logger.warn(&format!(
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
    let unavailable = |e: BrokerError| {
        log(&e);
        Stop::Ended(End::BrokerUnavailable)
    };
    let consumer = consumer(kafka, true).map_err(unavailable)?;
    let pending = Offsets(behind.iter().map(|p| (*p, catch_up.from.0[p])).collect());
    assign(&consumer, &kafka.topic, &pending).map_err(unavailable)?;
    let mut position = catch_up.from.clone();
    let mut out = Vec::new();
    let mut events = 0;
    while !behind.is_empty() {
        // Events not yet written are dropped: the client's place is the last one it got.
        if let Some(cut) = session.cut_off_due() {
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
                flush(session, &mut out, &mut events).await?;
                tokio::select! {
                    received = consumer.recv() => received,
                    cut = session.next_cut_off() => return Err(Stop::CutOff(cut)),
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
                let wanted = key_filter.is_none_or(|key| message.key() == Some(key));
                if wanted {
                    let id = if behind.is_empty() {
                        // The last catch-up event carries the hub's place, where the ring takes over.
                        catch_up.to.to_string()
                    } else {
                        position.to_string()
                    };
                    let max = shared.block.max_event_bytes;
                    let header = kafka.event_header.as_deref();
                    let bytes = event_bytes(&id, &message, header, max);
                    out.extend(bytes.unwrap_or_else(|| dropped_event(&id, max)));
                    events += 1;
                    if out.len() >= CATCH_UP_WRITE_BYTES {
                        flush(session, &mut out, &mut events).await?;
                    }
                }
            }
            Err(KafkaError::PartitionEOF(partition)) => behind.retain(|&p| p != partition),
            Err(e) => log(&e),
        }
    }
    flush(session, &mut out, &mut events).await
}

/// Writes the catch-up's `events` gathered in `out`.
async fn flush<C: ClientTransport>(
    session: &mut Session<'_, C>,
    out: &mut Vec<u8>,
    events: &mut u64,
) -> Result<(), Stop> {
    if out.is_empty() {
        return Ok(());
    }
    session
        .send(std::slice::from_ref(out), |bytes| &bytes[..], *events)
        .await
        .map_err(|end| Stop::Ended(end.in_catch_up()))?;
    out.clear();
    *events = 0;
    Ok(())
}
