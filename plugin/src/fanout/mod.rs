//! Fan-out: one source, many clients.
//!
//! A fan-out route keeps one upstream connection per distinct backend URL (after `{param}`
//! substitution, without the client's `lastEventId`), or one Kafka consumer per topic, in
//! a [`hub::Hub`]. The source's events are serialized once into the hub's ring; every
//! client follows the ring at its own pace (`follow`). A client that sends `Last-Event-ID`
//! (or `?lastEventId=`) resumes just past that event when the ring holds it; when it does
//! not, the client gets everything the ring holds, announced by a comment line, never a
//! silent gap. A client more than `client_queue` live events behind is disconnected (it
//! resumes by `Last-Event-ID`); the source and the other clients never wait for it.

mod follow;
mod hub;
mod kafka;
mod ring;
mod sse_source;

use std::sync::Arc;

use abi::RequestHead;

use crate::config::Route;
use crate::respond::Refusal;
use crate::session::{ClientTransport, Session};
use crate::upstream::{self, Refused};
use crate::Shared;
use follow::Follow;
pub use hub::Hubs;
use hub::{Hub, Status};

/// What a fan-out client wants: the source, and its place in the stream.
struct Wanted {
    last_event_id: Option<String>,
    /// The upstream path and query (without `lastEventId`): the hub's key.
    target: String,
    path: String,
}

impl Wanted {
    /// The client's request, once every value that may go upstream is clean: the query
    /// and path parameters make the shared upstream's target, and its `Last-Event-ID` (the
    /// header, or `?lastEventId=` decoded) may start that upstream.
    fn new(route: &Route, head: &RequestHead) -> Result<Self, Refused> {
        let (query, from_query) = split_last_event_id(&head.query);
        let last_event_id = match head.header("last-event-id") {
            Some(id) => Some(upstream::client_last_event_id(id)?),
            None => from_query
                .map(|id| wire::clean::last_event_id(&id).map(|()| id))
                .transpose()?,
        };
        Ok(Self {
            last_event_id,
            target: upstream::target(route, &head.path, &query)?,
            path: head.path.to_string(),
        })
    }
}

/// Serves one client of a fan-out route (`route_index` of `shared`, the session's).
pub async fn serve<C: ClientTransport>(
    mut session: Session<'_, C>,
    head: RequestHead,
    shared: &Arc<Shared>,
    route_index: usize,
) {
    let route = session.route();
    let request = Wanted::new(&route.config, &head);
    drop(head);
    let request = match request {
        Ok(request) => request,
        Err(why) => return session.refuse(Refusal::BadRequest(why)).await,
    };
    let _slot = match session.admit() {
        Ok(slot) => slot,
        Err(refusal) => return session.refuse(refusal).await,
    };
    let joined = match &route.config.kafka {
        None => join_sse(&request, shared, route_index),
        Some(_) => kafka::join(&request, shared, route_index),
    };
    let membership = joined.membership;
    let hub = &membership.hub;
    let mut signal = hub.subscribe();
    let status = tokio::select! {
        status = signal.wait_for(|s| s.status != Status::Connecting) => status.map(|s| s.status),
        () = session.closed() => return,
    };
    match status {
        Ok(Status::Up) => {}
        Ok(Status::NoResources) => return session.refuse(Refusal::SourceShortOfResources).await,
        _ => return session.refuse(Refusal::SourceDown).await,
    }
    if session.start_event_stream().await.is_err() {
        return;
    }
    let follow = Follow {
        hub,
        key: joined.key_filter.as_deref(),
    };
    let end = match (joined.place)(hub) {
        Place::Ring { cursor, note } => follow.run(&mut session, signal, cursor, note).await,
        Place::CatchUp(catch_up) => {
            kafka::catch_up_then_follow(catch_up, &follow, &mut session, signal).await
        }
    };
    session.end(end).await;
}

/// A client's hub, and how to find its place in it once the source is up.
struct Joined {
    membership: hub::Membership,
    key_filter: Option<Vec<u8>>,
    place: Box<dyn FnOnce(&Hub) -> Place + Send>,
}

/// Where a client starts.
enum Place {
    /// At number `cursor` of the ring, after the comment `note`.
    Ring { cursor: u64, note: Option<String> },
    /// Kafka: read from the broker up to the hub's position, then follow the ring.
    CatchUp(kafka::CatchUp),
}

fn join_sse(request: &Wanted, shared: &Arc<Shared>, route_index: usize) -> Joined {
    let route = &shared.routes[route_index];
    let config = route.config.fanout.as_ref().expect("a fan-out route");
    let membership = route.hubs.join(
        &request.target,
        config,
        || request.last_event_id.clone().unwrap_or_default(),
        |hub| start(hub, shared, route_index, sse_source::run),
    );
    let last_event_id = request.last_event_id.clone();
    // A new client's stream starts where the source was when it joined, even if the
    // source publishes before the client is told that it is up.
    let joined_at = membership.hub.lock().ring.end();
    Joined {
        membership,
        key_filter: None,
        place: Box::new(move |hub| {
            let mut state = hub.lock();
            let Some(id) = last_event_id else {
                return Place::Ring {
                    cursor: joined_at,
                    note: None,
                };
            };
            let (cursor, note) = state.resume(&id);
            Place::Ring { cursor, note }
        }),
    }
}

/// Starts a new hub's source and its keepalive ticker on the plugin's workers.
fn start<F>(
    hub: Arc<Hub>,
    shared: &Arc<Shared>,
    route_index: usize,
    source: fn(Arc<Hub>, Arc<Shared>, usize) -> F,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if let Some(every) = shared.routes[route_index].config.keepalive {
        crate::workers::spawn(hub::keep_alive(hub.clone(), every));
    }
    crate::workers::spawn(source(hub, shared.clone(), route_index));
}

/// What a fan-out client gets in place of an event over `max_event_bytes`: a comment that
/// says so, then the event's `id` alone, which moves the client's `Last-Event-ID` past it
/// without dispatching anything (an event with no data fires nothing in a browser).
fn dropped_event(id: &str, max_event_bytes: usize) -> Vec<u8> {
    format!(
        ": an event larger than max_event_bytes ({max_event_bytes}) was dropped here\nid: {id}\n\n"
    )
    .into_bytes()
}

/// Splits `lastEventId` (for clients that cannot set headers) off a query string: the
/// rest, as it was written, and the decoded value.
fn split_last_event_id(query: &str) -> (String, Option<String>) {
    let mut id = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let ours = pair.starts_with("lastEventId=") || *pair == "lastEventId";
            if ours {
                id = form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned());
            }
            !ours && !pair.is_empty()
        })
        .collect();
    (rest.join("&"), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_comes_off_the_query() {
        assert_eq!(
            split_last_event_id("a=1&lastEventId=4%3A7&b=2"),
            ("a=1&b=2".to_owned(), Some("4:7".to_owned()))
        );
        assert_eq!(split_last_event_id("a=1"), ("a=1".to_owned(), None));
        assert_eq!(split_last_event_id(""), (String::new(), None));
    }
}
