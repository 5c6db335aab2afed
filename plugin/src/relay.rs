//! One claimed request, from admission to the end of the client's stream.
//!
//! A request with a value that may not go upstream is refused with 400 first. The stream
//! is admitted under the route's and the block's `max_streams` (503 with
//! `Retry-After` otherwise), opens an upstream (failing over along the balancer's order;
//! 502 or 504 when no host answers), and relays a non-2xx answer as it is. A 2xx answer
//! becomes the client's event stream, which outlives its upstreams: when one ends, breaks
//! or goes idle, the relay reconnects with `Last-Event-ID` set to the last event the
//! client received, waiting the stream's `retry:` (or `reconnect_delay`) with exponential
//! backoff and jitter, at most `max_reconnects` times within `reconnect_window`. Out of
//! attempts, it ends the client's stream cleanly so that the browser reconnects itself.
//! A drain or the expiry of the client's token ends it the same way, at an event boundary.

use std::collections::VecDeque;
use std::time::Duration;

use abi::RequestHead;
use http::StatusCode;
use sse::Scanner;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;

use crate::pump::{client_gone, next_cut_off, pump, ClientStream, CutOff, Ended};
use crate::stats::{Drop, RouteStats};
use crate::upstream::{self, Cause, Refused, Request, Upstream};
use crate::{RouteState, Shared, Slot, PLUGIN_NAME};

/// Serves one claimed request. Only what the stream needs is kept from the head, so a
/// stream that lives for hours does not carry the client's headers.
/// `response_headers` come from the host (CORS, for instance) and go on whatever response
/// the plugin writes; the stream ends by `token_expires_at`.
pub fn serve<'a>(
    client: TcpStream,
    head: RequestHead,
    response_headers: &[abi::Header],
    token_expires_at: Option<Instant>,
    shared: &'a Shared,
    route: &'a RouteState,
) -> impl std::future::Future<Output = ()> + 'a {
    let reply = Reply::new(&head, response_headers);
    let request = Request::new(&route.config, &head);
    drop(head);
    match request {
        Ok(request) => Either::Left(relay(
            client,
            reply,
            request,
            token_expires_at,
            shared,
            route,
        )),
        // Boxed: a refusal is rare, and the stream's task reserves room for the larger side.
        Err(why) => Either::Right(Box::pin(async move {
            let mut client = client;
            refuse(&mut client, shared, route, &reply, &why).await
        })),
    }
}

// An async block, not an `async fn`: an `async fn` moves each argument into a local of its
// own, and the stream's task would keep both copies for its whole life (rust-lang/rust#62958).
#[expect(clippy::manual_async_fn, reason = "arguments stored once")]
fn relay<'a>(
    mut client: TcpStream,
    mut reply: Reply,
    mut request: Request,
    token_expires_at: Option<Instant>,
    shared: &'a Shared,
    route: &'a RouteState,
) -> impl std::future::Future<Output = ()> + 'a {
    async move {
        let Some(_slot) = Box::pin(admit(&mut client, shared, route, &reply.extra_head)).await
        else {
            return;
        };
        let log = |label: &str, reason: &str| {
            shared
                .logger
                .warn(&format!("[PLUGIN: {PLUGIN_NAME}] {label}: {reason}"));
        };
        let opened = tokio::select! {
            // Boxed here and below: these futures run once per connection, and inline they
            // would enlarge every stream's task for its whole life.
            opened = Box::pin(upstream::open(route, &request, &shared.pool)) => opened,
            () = client_gone(&mut client) => return,
        };
        let upstream = match opened {
            Ok(upstream) => upstream,
            Err(unavailable) => {
                log(&reply.label, &unavailable.reason);
                let answer = respond_unavailable(&mut client, &unavailable, shared, route, &reply);
                return Box::pin(answer).await;
            }
        };
        if !upstream.status.is_success() {
            let head = passthrough_head(
                upstream.status,
                upstream.content_type.as_deref(),
                &reply.extra_head,
            );
            return Box::pin(relay_as_is(client, upstream, head, shared, route)).await;
        }
        let scanner = Scanner::resuming(request.last_event_id.as_deref().unwrap_or(""));
        let mut stream = ClientStream::new(Some(scanner), token_expires_at);
        let head = event_stream_head(&std::mem::take(&mut reply.extra_head));
        if stream
            .write_own_boxed(&mut client, route, &head)
            .await
            .is_err()
        {
            return;
        }
        drop(head);
        let mut budget = ReconnectBudget::default();
        let started = Instant::now();
        // One slot for the current upstream, so a stream's task reserves room for one.
        let mut upstream = Some(upstream);
        let why = loop {
            let Some(current) = upstream.as_mut() else {
                break "ended";
            };
            let ended = pump(
                &mut client,
                current,
                &mut stream,
                route,
                &shared.pool,
                &shared.shutdown,
            )
            .await;
            // Closed now, not when a successor is found: an idle or broken origin connection
            // must not linger through the reconnection wait.
            drop(upstream.take());
            match ended {
                Ended::ClientGone => break "the client left",
                Ended::ClientStalled => {
                    log(
                        &reply.label,
                        "client read nothing for client_write_timeout; dropped",
                    );
                    drop_slow_client(&client, route, Drop::ClientStalled);
                    break "the client stalled";
                }
                Ended::CutOff(cut) => {
                    break cut_off(&mut client, &mut stream, shared, route, cut).await
                }
                Ended::Complete | Ended::UpstreamBroke(_) | Ended::UpstreamIdle => {
                    if let Ended::UpstreamBroke(reason) = &ended {
                        log(&reply.label, &format!("upstream stream broke: {reason}"));
                    }
                    if stream.mid_event {
                        // The client holds part of an event no other connection can finish.
                        log(&reply.label, "upstream ended inside an event larger than read_buffer_bytes; ending the stream");
                        break "the upstream ended inside an event";
                    }
                    request.last_event_id = stream
                        .scanner
                        .as_ref()
                        .map(|s| s.last_event_id().to_owned());
                    match Box::pin(reconnect(
                        &mut client,
                        &request,
                        &mut budget,
                        &stream,
                        shared,
                        route,
                    ))
                    .await
                    {
                        Reconnected::Yes(next) => {
                            stream.discard_partial_event();
                            upstream = Some(next);
                        }
                        Reconnected::ClientGone => break "the client left",
                        Reconnected::CutOff(cut) => {
                            break cut_off(&mut client, &mut stream, shared, route, cut).await
                        }
                        Reconnected::No => {
                            Box::pin(stream.flush_partial_event(&mut client, route)).await;
                            break "the upstream could not be resumed";
                        }
                    }
                }
            }
        };
        end_stream(
            &mut client,
            shared,
            &reply.label,
            why,
            started,
            &stream,
            budget.attempts,
        )
        .await;
    }
}

/// A non-2xx answer: relayed with its status and body, no events to keep whole.
async fn relay_as_is(
    mut client: TcpStream,
    mut upstream: Upstream,
    head: Vec<u8>,
    shared: &Shared,
    route: &RouteState,
) {
    let mut stream = ClientStream::new(None, None);
    let ended = match stream.write_own(&mut client, route, &head).await {
        Ok(()) => {
            let pool = &shared.pool;
            pump(
                &mut client,
                &mut upstream,
                &mut stream,
                route,
                pool,
                &shared.shutdown,
            )
            .await
        }
        Err(ended) => ended,
    };
    if let Ended::ClientStalled = ended {
        drop_slow_client(&client, route, Drop::ClientStalled);
    }
    let _ = client.shutdown().await;
}

enum Reconnected {
    Yes(Upstream),
    /// Out of attempts, or the origin said to stop: end the client's stream.
    No,
    ClientGone,
    CutOff(CutOff),
}

/// Waits and reconnects until an upstream answers 2xx or the budget runs out, waiting the
/// `stream`'s `retry:` and no longer than its token lasts.
async fn reconnect(
    client: &mut TcpStream,
    request: &Request,
    budget: &mut ReconnectBudget,
    stream: &ClientStream,
    shared: &Shared,
    route: &RouteState,
) -> Reconnected {
    let config = &route.config;
    let retry_ms = stream.scanner.as_ref().and_then(Scanner::retry_ms);
    loop {
        let Some(delay) = budget.next_delay(config, retry_ms) else {
            route.stats.dropped(Drop::ReconnectsExhausted);
            return Reconnected::No;
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = client_gone(client) => return Reconnected::ClientGone,
            cut = next_cut_off(&shared.shutdown, stream.expires_at) => {
                return Reconnected::CutOff(cut)
            }
        }
        RouteStats::add(&route.stats.reconnects, 1);
        let opened = tokio::select! {
            opened = upstream::open(route, request, &shared.pool) => opened,
            () = client_gone(client) => return Reconnected::ClientGone,
        };
        match opened {
            // 204 is how an origin tells EventSource to stop reconnecting.
            Ok(upstream)
                if upstream.status.is_success() && upstream.status != StatusCode::NO_CONTENT =>
            {
                budget.connected();
                return Reconnected::Yes(upstream);
            }
            Ok(upstream) => {
                shared.logger.info(&format!(
                    "[PLUGIN: {PLUGIN_NAME}] {}: resuming got {}; ending the stream",
                    request.target, upstream.status
                ));
                return Reconnected::No;
            }
            Err(unavailable) => shared.logger.warn(&format!(
                "[PLUGIN: {PLUGIN_NAME}] resuming {}",
                unavailable.reason
            )),
        }
    }
}

/// Reconnection attempts: at most `max_reconnects` within `reconnect_window`, spaced by
/// the stream's retry time doubled after each failed attempt, with jitter so that the
/// clients of a restarted origin do not return all at once.
#[derive(Default)]
struct ReconnectBudget {
    recent: VecDeque<Instant>,
    failed_in_a_row: u32,
    /// All attempts over the stream's life, for its access-log line.
    attempts: u32,
}

impl ReconnectBudget {
    fn next_delay(
        &mut self,
        config: &crate::config::Route,
        retry_ms: Option<u64>,
    ) -> Option<Duration> {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= config.reconnect_window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= config.max_reconnects {
            return None;
        }
        self.recent.push_back(now);
        self.attempts += 1;
        let delay = backoff(config, retry_ms, self.failed_in_a_row);
        self.failed_in_a_row += 1;
        Some(delay)
    }

    fn connected(&mut self) {
        self.failed_in_a_row = 0;
    }
}

/// The wait before reconnecting after `failed_in_a_row` failed attempts: the stream's
/// `retry:` (or `reconnect_delay`) doubled per failure up to `max_reconnect_delay`, times a
/// random factor in [0.5, 1] so that the clients of a restarted origin do not all return
/// at once.
pub fn backoff(
    config: &crate::config::Route,
    retry_ms: Option<u64>,
    failed_in_a_row: u32,
) -> Duration {
    let base = retry_ms.map_or(config.reconnect_delay, Duration::from_millis);
    let delay = base
        .saturating_mul(1 << failed_in_a_row.min(16))
        .min(config.max_reconnect_delay);
    delay.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// How the plugin answers one client: the label its log lines carry, and the host's header
/// lines (CORS, for instance) that every response head gets.
pub struct Reply {
    /// `METHOD /path` of the client's request.
    pub label: String,
    /// Emptied once the event stream's head is written.
    pub extra_head: Vec<u8>,
}

impl Reply {
    pub fn new(head: &RequestHead, response_headers: &[abi::Header]) -> Self {
        let mut extra_head = Vec::new();
        for h in response_headers {
            wire::header_line(&mut extra_head, &h.name, &h.value);
        }
        Self {
            label: format!("{} {}", head.method, head.path),
            extra_head,
        }
    }
}

/// Answers a request with a value that may not go upstream: 400, nothing dialled or
/// joined. The client is told in general terms; the log says which value.
pub async fn refuse(
    client: &mut TcpStream,
    shared: &Shared,
    route: &RouteState,
    reply: &Reply,
    why: &Refused,
) {
    shared.logger.info(&format!(
        "[PLUGIN: {PLUGIN_NAME}] {}: refused with 400: {why}",
        reply.label
    ));
    route.stats.dropped(Drop::BadRequest);
    let reason = "bad request: it holds a value that cannot be forwarded";
    respond_error(
        client,
        StatusCode::BAD_REQUEST,
        reason,
        None,
        &reply.extra_head,
    )
    .await
}

/// Takes a stream's slot under the `max_streams` limits and counts the stream, or answers
/// 503 (`None`).
pub async fn admit<'a>(
    client: &mut TcpStream,
    shared: &'a Shared,
    route: &'a RouteState,
    extra_head: &[u8],
) -> Option<Slot<'a>> {
    let _ = client.set_nodelay(true);
    let Some(slot) = shared.admit(route) else {
        route.stats.dropped(Drop::OverLimit);
        unavailable(client, shared, "too many streams", extra_head).await;
        return None;
    };
    RouteStats::add(&route.stats.streams, 1);
    Some(slot)
}

/// Drops a client that stopped taking its stream (`why`: it stalled or lagged): counted,
/// and closed with a reset (`SO_LINGER` 0) when the caller drops it, so that the kernel
/// frees its send buffer at once instead of holding it in FIN-WAIT-1 for as long as the
/// client keeps its window shut.
pub fn drop_slow_client(client: &TcpStream, route: &RouteState, why: Drop) {
    route.stats.dropped(why);
    let _ = socket2::SockRef::from(client).set_linger(Some(Duration::ZERO));
}

/// Ends a client's stream for a drain or its token's expiry: counts it, and sends the
/// `shutdown_event` when the client is between events. Says why the stream ended.
pub async fn cut_off(
    client: &mut (impl AsyncWrite + Unpin + Send),
    stream: &mut ClientStream,
    shared: &Shared,
    route: &RouteState,
    cut: CutOff,
) -> &'static str {
    route.stats.dropped(cut.drop_reason());
    if let Some(event) = shared
        .block
        .shutdown_event
        .as_deref()
        .filter(|_| !stream.mid_event)
    {
        let _ = stream
            .write_own_boxed(client, route, event.as_bytes())
            .await;
    }
    cut.why()
}

/// Closes a client's event stream and writes its access-log line.
pub async fn end_stream(
    client: &mut TcpStream,
    shared: &Shared,
    label: &str,
    why: &str,
    started: Instant,
    stream: &ClientStream,
    reconnects: u32,
) {
    let _ = client.shutdown().await;
    shared.logger.info(&format!(
        "[PLUGIN: {PLUGIN_NAME}] {label} 200 stream ended ({why}) after {:.3}s: {} events, {} bytes, {reconnects} reconnects",
        started.elapsed().as_secs_f64(),
        stream.events,
        stream.bytes,
    ));
}

/// The head of a client's event stream, with the host's header lines `extra`.
pub fn event_stream_head(extra: &[u8]) -> Vec<u8> {
    let mut headers = EVENT_STREAM_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    wire::close_delimited_head(StatusCode::OK, &headers)
}

const EVENT_STREAM_HEADERS: &[u8] =
    b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";

fn passthrough_head(status: StatusCode, content_type: Option<&str>, extra: &[u8]) -> Vec<u8> {
    let mut headers = Vec::new();
    if let Some(content_type) = content_type {
        wire::header_line(&mut headers, "Content-Type", content_type.as_bytes());
    }
    headers.extend_from_slice(extra);
    wire::close_delimited_head(status, &headers)
}

/// The answer when no host gave a response head: 502, or 504 after a timeout; 503 with
/// `Retry-After` when this process could not dial (the client should come back soon).
async fn respond_unavailable(
    client: &mut TcpStream,
    why: &upstream::Unavailable,
    shared: &Shared,
    route: &RouteState,
    reply: &Reply,
) {
    let status = match why.cause {
        Cause::LocalResources => {
            route.stats.dropped(Drop::LocalResources);
            let reason = "the gateway is short of resources";
            return unavailable(client, shared, reason, &reply.extra_head).await;
        }
        Cause::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        Cause::Failed => StatusCode::BAD_GATEWAY,
    };
    route.stats.dropped(Drop::UpstreamUnavailable);
    respond_error(client, status, &why.reason, None, &reply.extra_head).await
}

/// 503 with `Retry-After`: the client should come back later (a limit was reached, or a
/// fan-out source is down).
pub async fn unavailable(client: &mut TcpStream, shared: &Shared, reason: &str, extra: &[u8]) {
    let retry_after = shared.block.retry_after.as_secs().max(1);
    let reason = format!("{reason}; retry later");
    respond_error(
        client,
        StatusCode::SERVICE_UNAVAILABLE,
        &reason,
        Some(retry_after),
        extra,
    )
    .await
}

async fn respond_error(
    client: &mut TcpStream,
    status: StatusCode,
    reason: &str,
    retry_after_secs: Option<u64>,
    extra: &[u8],
) {
    let mut headers = Vec::new();
    if let Some(secs) = retry_after_secs {
        wire::header_line(&mut headers, "Retry-After", secs.to_string().as_bytes());
    }
    headers.extend_from_slice(extra);
    let response = wire::plain_text_response(status, &headers, &format!("{reason}\n"));
    let _ = client.write_all(&response).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_backs_off_and_runs_out_within_the_window() {
        let config = crate::config::parse(
            r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h",
                "max_reconnects": 3, "reconnect_delay": "100ms", "max_reconnect_delay": "300ms"}"#,
        )
        .unwrap()
        .routes
        .remove(0);
        let mut budget = ReconnectBudget::default();
        let delays: Vec<Duration> = (0..3)
            .map(|_| budget.next_delay(&config, None).unwrap())
            .collect();
        let ceilings = [100, 200, 300].map(Duration::from_millis);
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            assert!(
                *delay <= ceiling && *delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
        }
        assert_eq!(
            budget.next_delay(&config, None),
            None,
            "three within the window"
        );
        budget.connected();
        budget.recent.clear();
        let from_retry = budget.next_delay(&config, Some(40)).unwrap();
        assert!(from_retry <= Duration::from_millis(40), "{from_retry:?}");
    }
}
