//! The relay: one client's stream fed by its own upstream, across as many upstream
//! connections as it takes.
//!
//! A request with a value that may not go upstream is refused with 400 first. The stream
//! is admitted under the route's and the block's `max_streams` (503 with `Retry-After`
//! otherwise), opens an upstream (failing over along the balancer's order; 502 or 504
//! when no host answers), and relays a non-2xx answer as it is. A 2xx answer becomes the
//! client's event stream, which outlives its upstreams: when one ends, breaks or goes
//! idle, the relay reconnects with `Last-Event-ID` set to the last event the client
//! received, waiting as [`Reconnect`] says, within its budget. Out of attempts, it ends the
//! client's stream cleanly so that the browser reconnects itself. A drain or the expiry of
//! the client's token ends it the same way, at an event boundary.

use abi::RequestHead;
use http::StatusCode;
use sse::Scanner;
use tokio_util::either::Either;

use crate::pump::{pump, Scan, UpstreamEnd};
use crate::reconnect::{Reconnect, Waited};
use crate::respond::Refusal;
use crate::session::{ClientTransport, End, Session};
use crate::upstream::{self, Request, Upstream};

/// Serves one claimed request. Only what the stream needs is kept from the head, so a
/// stream that lives for hours does not carry the client's headers.
pub fn serve<'a, C: ClientTransport + 'a>(
    session: Session<'a, C>,
    head: RequestHead,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    let request = Request::new(&session.route().config, &head);
    drop(head);
    match request {
        Ok(request) => Either::Left(relay(session, request)),
        // Boxed: a refusal is rare, and the stream's task reserves room for the larger side.
        Err(why) => Either::Right(Box::pin(session.refuse(Refusal::BadRequest(why)))),
    }
}

// An async block, not an `async fn`: an `async fn` moves each argument into a local of its
// own, and the stream's task would keep both copies for its whole life (rust-lang/rust#62958).
#[expect(clippy::manual_async_fn, reason = "arguments stored once")]
fn relay<'a, C: ClientTransport + 'a>(
    mut session: Session<'a, C>,
    mut request: Request,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    async move {
        let _slot = match session.admit() {
            Ok(slot) => slot,
            Err(refusal) => return Box::pin(session.refuse(refusal)).await,
        };
        let (route, pool) = (session.route(), &session.shared().pool);
        let opened = tokio::select! {
            // Boxed here and below: these futures run once per connection, and inline they
            // would enlarge every stream's task for its whole life.
            opened = Box::pin(upstream::open(route, &request, pool)) => opened,
            () = session.closed() => return,
        };
        let upstream = match opened {
            Ok(upstream) => upstream,
            Err(unavailable) => {
                return Box::pin(session.refuse(Refusal::Upstream(unavailable))).await
            }
        };
        if !upstream.status.is_success() {
            return Box::pin(relay_as_is(session, upstream)).await;
        }
        let scanner = Scanner::resuming(request.last_event_id.as_deref().unwrap_or(""));
        let mut scan = Scan::new(Some(scanner));
        if session.start_event_stream().await.is_err() {
            return;
        }
        let mut reconnect = Reconnect::budgeted(&route.config);
        let mut upstream = upstream;
        let end = loop {
            let pumped = pump(&mut session, &mut upstream, &mut scan, pool).await;
            // Closed now, not when a successor is found: an idle or broken origin connection
            // must not linger through the reconnection wait.
            drop(upstream);
            match pumped {
                Err(End::ClientStalled) => {
                    session.warn("client read nothing for client_write_timeout; dropped");
                    break End::ClientStalled;
                }
                Err(End::CutOff(cut)) => break session.cut_off(cut).await,
                Err(end) => break end,
                Ok(ended) => {
                    if let UpstreamEnd::Broke(broken) = &ended {
                        if !matches!(broken, upstream::Broken::Idle) {
                            session.warn(format_args!("upstream stream broke: {broken}"));
                        }
                    }
                    if session.mid_event() {
                        // The client holds part of an event no other connection can finish.
                        session.warn("upstream ended inside an event larger than read_buffer_bytes; ending the stream");
                        break End::UpstreamEndedInsideEvent;
                    }
                    request.last_event_id =
                        scan.scanner.as_ref().map(|s| s.last_event_id().to_owned());
                    let retry_ms = scan.scanner.as_ref().and_then(Scanner::retry_ms);
                    let next = Box::pin(resume(&mut session, &request, &mut reconnect, retry_ms));
                    match next.await {
                        Ok(next) => {
                            scan.discard_partial_event();
                            upstream = next;
                        }
                        Err(End::CutOff(cut)) => break session.cut_off(cut).await,
                        Err(end @ (End::ReconnectsExhausted | End::UpstreamStopped)) => {
                            Box::pin(scan.flush_partial_event(&mut session)).await;
                            break end;
                        }
                        Err(end) => break end,
                    }
                }
            }
        };
        session.end(end).await;
    }
}

/// A non-2xx answer: relayed with its status and body, no events to keep whole.
async fn relay_as_is<C: ClientTransport>(mut session: Session<'_, C>, mut upstream: Upstream) {
    let status = upstream.status;
    let started = session.start_as_is(status, upstream.content_type.as_deref());
    let end = match started.await {
        Ok(()) => {
            let pool = &session.shared().pool;
            let mut scan = Scan::new(None);
            match pump(&mut session, &mut upstream, &mut scan, pool).await {
                Ok(_) => End::AnswerRelayed,
                Err(end) => end,
            }
        }
        Err(end) => end,
    };
    session.end(end).await;
}

/// Waits and reconnects until an upstream answers 2xx or `reconnect`'s budget runs out,
/// waiting the stream's `retry_ms`, and no longer than its token lasts.
async fn resume<C: ClientTransport>(
    session: &mut Session<'_, C>,
    request: &Request,
    reconnect: &mut Reconnect<'_>,
    retry_ms: Option<u64>,
) -> Result<Upstream, End> {
    let (route, shared) = (session.route(), session.shared());
    loop {
        let cut_off = session.next_cut_off();
        let stop = async {
            tokio::select! {
                () = session.closed() => End::ClientLeft,
                cut = cut_off => End::CutOff(cut),
            }
        };
        match reconnect.wait(retry_ms, stop).await {
            Waited::Retry => {}
            Waited::OutOfAttempts => return Err(End::ReconnectsExhausted),
            Waited::Stopped(end) => return Err(end),
        }
        session.count_reconnect();
        let opened = tokio::select! {
            opened = upstream::open(route, request, &shared.pool) => opened,
            () = session.closed() => return Err(End::ClientLeft),
        };
        match opened {
            // 204 is how an origin tells EventSource to stop reconnecting.
            Ok(upstream)
                if upstream.status.is_success() && upstream.status != StatusCode::NO_CONTENT =>
            {
                reconnect.connected();
                return Ok(upstream);
            }
            Ok(upstream) => {
                shared.logger.info(&format!(
                    "[PLUGIN: {}] {}: resuming got {}; ending the stream",
                    crate::PLUGIN_NAME,
                    request.target,
                    upstream.status
                ));
                return Err(End::UpstreamStopped);
            }
            Err(unavailable) => shared.logger.warn(&format!(
                "[PLUGIN: {}] resuming {unavailable}",
                crate::PLUGIN_NAME
            )),
        }
    }
}
