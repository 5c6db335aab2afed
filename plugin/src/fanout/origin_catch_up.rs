//! A fan-out client whose `Last-Event-ID` its hub's ring does not hold (a fresh hub, in a
//! process that replaced another, holds only what came after its first client's id; an
//! old id has left the ring) reads what it missed from the origin, on an upstream of its
//! own resumed from its id, one event at a time, until the ring holds the last event it
//! got (or that event is where the hub's source started); from there it follows the ring.
//! No gap and no duplicate at the seam, and no comment announcing a gap. When the origin
//! cannot give the missing events (it is down, or ends the stream first), the client gets
//! what the ring holds, announced by the comment, as before.

use std::sync::Mutex;

use bytes::Bytes;
use http::StatusCode;
use tokio::sync::watch;

use super::follow::Follow;
use super::hub::Signal;
use super::sse_source::hub_request;
use super::sse_source::{Body, EventReader};
use crate::session::{ClientTransport, End, Session};
use crate::upstream;

/// Catches the client up from `last_event_id` through the origin, then follows the ring.
pub async fn catch_up_then_follow<C: ClientTransport>(
    last_event_id: String,
    follow: &Follow<'_>,
    session: &mut Session<'_, C>,
    mut signal: watch::Receiver<Signal>,
) -> End {
    let (route, shared, hub) = (session.route(), session.shared(), follow.hub);
    let request = hub_request(route, &hub.key, last_event_id.clone());
    let cut = session.next_cut_off();
    let opened = tokio::select! {
        opened = upstream::open(route, &request, &shared.pool) => opened,
        cut = cut => return session.cut_off(cut).await,
        () = session.closed() => return End::ClientLeft,
    };
    let mut last = last_event_id;
    let upstream = match opened {
        Ok(upstream)
            if upstream.status.is_success() && upstream.status != StatusCode::NO_CONTENT =>
        {
            upstream
        }
        _ => return from_the_ring(follow, session, signal, &last).await,
    };
    let received: Mutex<Vec<(Box<str>, Bytes)>> = Mutex::default();
    let publish = |id: &str, bytes| received.lock().unwrap().push((id.into(), bytes));
    let ignore = |_| {};
    let max_event_bytes = shared.block.max_event_bytes;
    let mut reader = EventReader::new(&publish, &last, max_event_bytes, &ignore);
    let mut body = Body::new(upstream);
    let cursor = 'seam: loop {
        if let Some(cursor) = seam(follow, &last) {
            break cursor;
        }
        let cut = session.next_cut_off();
        let stepped = tokio::select! {
            biased;
            cut = cut => return session.cut_off(cut).await,
            () = session.closed() => return End::ClientLeft,
            // The ring moved on: it may hold the client's place now.
            _ = signal.changed() => continue,
            stepped = body.step(&mut reader, route.config.upstream_idle_timeout) => stepped,
        };
        let events = std::mem::take(&mut *received.lock().unwrap());
        for (id, bytes) in events {
            if let Err(end) = session
                .send(std::slice::from_ref(&bytes), |b| &b[..], 1)
                .await
            {
                return end;
            }
            last = id.into();
            // Past the seam, the rest of this read is in the ring too.
            if let Some(cursor) = seam(follow, &last) {
                break 'seam cursor;
            }
        }
        match stepped {
            Ok(false) => {}
            // The origin ended or broke the stream before the seam.
            Ok(true) | Err(_) => {
                drop(body);
                return from_the_ring(follow, session, signal, &last).await;
            }
        }
    };
    // The origin's own stream is done with: the ring serves the client from here.
    drop(body);
    follow.run(session, signal, cursor, None).await
}

/// The ring's number just past `last`, when the ring holds it (or the hub's source
/// started from it): where the client goes on from the ring.
fn seam(follow: &Follow<'_>, last: &str) -> Option<u64> {
    match follow.hub.lock().resume(last) {
        (cursor, None) => Some(cursor),
        (_, Some(_)) => None,
    }
}

/// Follows the ring from where `last` puts the client, with the comment if it is a gap.
async fn from_the_ring<C: ClientTransport>(
    follow: &Follow<'_>,
    session: &mut Session<'_, C>,
    signal: watch::Receiver<Signal>,
    last: &str,
) -> End {
    let (cursor, note) = follow.hub.lock().resume(last);
    follow.run(session, signal, cursor, note).await
}
