//! A session driven in-process: its client is an in-memory duplex behind a test transport
//! (`testing`), its upstream a loopback socket the test writes to, and time is tokio's
//! paused clock, so that keepalives, client and idle timeouts and token expiry are checked
//! to the exact instant they are due, without waiting for them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use wire::framing::Framing;

use super::testing::{
    connected, log_line, logged, new_session, paused, plugin, stats, Peer, TestClient,
};
use super::*;
use crate::pump::{pump, Scan, UpstreamEnd};
use crate::respond::Refusal;
use crate::upstream::{Broken, Upstream};

/// An answered upstream (200, body to the close) and the origin's end of its socket.
async fn upstream() -> (Upstream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let upstream = Upstream {
        stream: stream.into(),
        status: StatusCode::OK,
        content_type: None,
        body: Framing::UntilClose,
        first: None,
    };
    (upstream, origin)
}

#[test]
fn keepalives_come_after_keepalive_of_silence_until_the_upstream_idles_out() {
    paused(|| async {
        let plugin = plugin(json!({"keepalive": "15s", "upstream_idle_timeout": "1m"}));
        let (client, mut peer) = connected(4096);
        let mut session = new_session(&plugin, "/s/keepalive", client, None);
        let (mut upstream, mut origin) = upstream().await;
        let started = Instant::now();
        session.start_event_stream().await.unwrap();
        let pool = plugin.shared.pool.clone();
        let mut scan = Scan::new(Some(sse::Scanner::default()));
        let pumping = pump(&mut session, &mut upstream, &mut scan, &pool);
        let client_side = async {
            let at = peer.read_until(KEEPALIVE, 1).await;
            assert_eq!(at - started, Duration::from_secs(15));
            // An event puts the next keepalive off: due 15 s after the event.
            origin.write_all(b"id: 1\ndata: a\n\n").await.unwrap();
            let event_at = peer.read_until(b"data: a\n\n", 1).await;
            let at = peer.read_until(KEEPALIVE, 2).await;
            assert_eq!(at - event_at, Duration::from_secs(15));
            let at = peer.read_until(KEEPALIVE, 3).await;
            assert_eq!(at - event_at, Duration::from_secs(30));
            event_at
        };
        let (ended, event_at) = tokio::join!(pumping, client_side);
        // Nothing from the upstream for a minute since its last bytes: it is replaced.
        assert!(
            matches!(ended, Ok(UpstreamEnd::Broke(Broken::Idle))),
            "{ended:?}"
        );
        assert_eq!(Instant::now() - event_at, Duration::from_secs(60));
        session.end(End::ClientLeft).await;
        peer.read_to_end().await;
        let keepalives = peer
            .received
            .windows(KEEPALIVE.len())
            .filter(|w| *w == KEEPALIVE);
        assert_eq!(
            keepalives.count(),
            4,
            "at 15 s, then 15, 30 and 45 s after the event"
        );
    });
}

#[test]
fn a_stream_inside_an_event_sends_no_keepalive_and_its_timer_does_not_spin() {
    paused(|| async {
        let plugin = plugin(json!({"keepalive": "1s", "upstream_idle_timeout": "10s",
                                   "read_buffer_bytes": 1024}));
        let (client, mut peer) = connected(8192);
        let mut session = new_session(&plugin, "/s/mid-event", client, None);
        let (mut upstream, mut origin) = upstream().await;
        session.start_event_stream().await.unwrap();
        // An event larger than the read buffer, not finished: the client gets its start.
        let mut event = b"id: 1\ndata: ".to_vec();
        event.extend([b'x'; 2000]);
        origin.write_all(&event).await.unwrap();
        let pool = plugin.shared.pool.clone();
        let mut scan = Scan::new(Some(sse::Scanner::default()));
        let started = Instant::now();
        let ended = pump(&mut session, &mut upstream, &mut scan, &pool).await;
        assert!(matches!(ended, Ok(UpstreamEnd::Broke(Broken::Idle))));
        assert_eq!(Instant::now() - started, Duration::from_secs(10));
        assert!(session.mid_event());
        session.end(End::UpstreamEndedInsideEvent).await;
        let received = peer.read_to_end().await;
        assert!(!received.contains(":keepalive"), "{received}");
        assert!(peer.body().starts_with(b"id: 1\ndata: xxx"));
    });
}

#[test]
fn events_and_bytes_are_counted_once_in_the_stats_and_the_access_log() {
    paused(|| async {
        let plugin = plugin(json!({}));
        let (client, mut peer) = connected(4096);
        let mut session = new_session(&plugin, "/s/counted", client, None);
        let (mut upstream, mut origin) = upstream().await;
        session.start_event_stream().await.unwrap();
        let events = b"id: 1\ndata: a\n\nid: 2\ndata: bb\n\nid: 3\ndata: par";
        origin.write_all(events).await.unwrap();
        let pool = plugin.shared.pool.clone();
        let mut scan = Scan::new(Some(sse::Scanner::default()));
        let pumping = async {
            let ended = pump(&mut session, &mut upstream, &mut scan, &pool).await;
            assert!(matches!(ended, Err(End::ClientLeft)), "{ended:?}");
        };
        let client_leaves = async {
            peer.read_until(b"data: bb\n\n", 1).await;
            peer.io.shutdown().await.unwrap();
        };
        tokio::join!(pumping, client_leaves);
        session.end(End::ClientLeft).await;
        let whole = b"id: 1\ndata: a\n\nid: 2\ndata: bb\n\n";
        assert_eq!(peer.body(), whole);
        let route = stats(&plugin);
        assert_eq!(
            (route["events"].as_u64(), route["bytes"].as_u64()),
            (Some(2), Some(whole.len() as u64))
        );
        assert!(
            route["drops"].as_object().unwrap().values().all(|n| n == 0),
            "{route}"
        );
        assert!(!peer.reset.load(Ordering::Relaxed));
        let line = log_line("GET /s/counted 200 stream ended (the client left) after ");
        let counts = format!(
            "s: 2 events, {} bytes, 0 reconnects, first event 0.000s",
            whole.len()
        );
        assert!(line.ends_with(&counts), "{line}");
    });
}

/// Ends `session` for the drain's `cut`; the client got event 1, then the shutdown event.
async fn drained_after_event_1(mut session: Session<'_, TestClient>, cut: CutOff, peer: &mut Peer) {
    let end = session.cut_off(cut).await;
    session.end(end).await;
    peer.read_to_end().await;
    assert_eq!(
        peer.body(),
        b"id: 1\ndata: a\n\nevent: bye\ndata: drain\n\n"
    );
}

#[test]
fn a_drain_ends_the_stream_between_events_with_the_shutdown_event() {
    paused(|| async {
        let plugin = plugin(json!({"shutdown_event": "event: bye\ndata: drain"}));
        let (client, mut peer) = connected(4096);
        let mut session = new_session(&plugin, "/s/drained", client, None);
        let (mut upstream, mut origin) = upstream().await;
        session.start_event_stream().await.unwrap();
        origin
            .write_all(b"id: 1\ndata: a\n\nid: 2\ndata: unfinis")
            .await
            .unwrap();
        let pool = plugin.shared.pool.clone();
        let mut scan = Scan::new(Some(sse::Scanner::default()));
        let pumping = pump(&mut session, &mut upstream, &mut scan, &pool);
        let drain = async {
            peer.read_until(b"data: a\n\n", 1).await;
            plugin.shared.drain.start(Duration::ZERO);
        };
        let (ended, ()) = tokio::join!(pumping, drain);
        let Err(End::CutOff(cut)) = ended else {
            panic!("{ended:?}")
        };
        assert_eq!(cut, CutOff::Drain);
        drained_after_event_1(session, cut, &mut peer).await;
        assert_eq!(stats(&plugin)["drops"]["shutdown"], 1);
        assert!(logged(
            "GET /s/drained 200 stream ended (the gateway drained) after "
        ));
    });
}

#[test]
fn a_spread_drain_ends_each_stream_at_its_own_moment_at_an_event_boundary() {
    paused(|| async {
        let plugin =
            plugin(json!({"drain_spread": "8s", "shutdown_event": "event: bye\ndata: drain"}));
        // The first session takes the first turn, at the drain's start.
        let (first_client, _first_peer) = connected(4096);
        let first = new_session(&plugin, "/s/first", first_client, None);
        let (client, mut peer) = connected(4096);
        let mut session = new_session(&plugin, "/s/later", client, None);
        let (mut upstream, mut origin) = upstream().await;
        session.start_event_stream().await.unwrap();
        let started = Instant::now();
        plugin.shared.drain.start(plugin.shared.block.drain_spread);
        assert_eq!(first.cut_off_due(), Some(CutOff::Drain));
        assert_eq!(session.cut_off_due(), None, "its moment is later");
        let pool = plugin.shared.pool.clone();
        let mut scan = Scan::new(Some(sse::Scanner::default()));
        let pumping = pump(&mut session, &mut upstream, &mut scan, &pool);
        let origin_side = async {
            // Streamed on during the drain, until the stream's own moment.
            tokio::time::sleep(Duration::from_secs(4)).await;
            origin.write_all(b"id: 1\ndata: a\n\n").await.unwrap();
            peer.read_until(b"data: a\n\n", 1).await;
        };
        let (ended, ()) = tokio::join!(pumping, origin_side);
        let Err(End::CutOff(cut)) = ended else {
            panic!("{ended:?}")
        };
        // The second turn: 1 / φ of the spread.
        let moment = Duration::from_secs_f64(8.0 * 0.618_034);
        let ended_after = Instant::now() - started;
        assert!(
            ended_after.abs_diff(moment) < Duration::from_millis(1),
            "{ended_after:?}"
        );
        drained_after_event_1(session, cut, &mut peer).await;
    });
}

#[test]
fn the_token_s_expiry_ends_the_stream_when_it_is_due() {
    paused(|| async {
        let plugin = plugin(json!({"shutdown_event": "event: bye\ndata: token"}));
        let (client, mut peer) = connected(4096);
        let expires_at = Instant::now() + Duration::from_secs(2);
        let mut session = new_session(&plugin, "/s/expiring", client, Some(expires_at));
        let (mut upstream, mut origin) = upstream().await;
        session.start_event_stream().await.unwrap();
        origin.write_all(b"id: 1\ndata: a\n\n").await.unwrap();
        let pool = plugin.shared.pool.clone();
        let mut scan = Scan::new(Some(sse::Scanner::default()));
        let ended = pump(&mut session, &mut upstream, &mut scan, &pool).await;
        assert!(
            matches!(ended, Err(End::CutOff(CutOff::TokenExpired))),
            "{ended:?}"
        );
        assert_eq!(
            Instant::now(),
            expires_at,
            "at its expiry, not a keepalive later"
        );
        let end = session.cut_off(CutOff::TokenExpired).await;
        session.end(end).await;
        peer.read_to_end().await;
        assert_eq!(
            peer.body(),
            b"id: 1\ndata: a\n\nevent: bye\ndata: token\n\n"
        );
        assert_eq!(stats(&plugin)["drops"]["token_expired"], 1);
    });
}

#[test]
fn a_client_that_takes_nothing_is_reset_after_client_write_timeout() {
    paused(|| async {
        let plugin = plugin(json!({"client_write_timeout": "30s", "keepalive": "0"}));
        // Room for the head and little else: the client never reads.
        let (client, peer) = connected(256);
        let mut session = new_session(&plugin, "/s/stalled", client, None);
        let (mut upstream, mut origin) = upstream().await;
        session.start_event_stream().await.unwrap();
        let event = format!("data: {}\n\n", "x".repeat(500));
        origin.write_all(event.as_bytes()).await.unwrap();
        let pool = plugin.shared.pool.clone();
        let mut scan = Scan::new(Some(sse::Scanner::default()));
        let started = Instant::now();
        let ended = pump(&mut session, &mut upstream, &mut scan, &pool).await;
        assert!(matches!(ended, Err(End::ClientStalled)), "{ended:?}");
        assert_eq!(Instant::now() - started, Duration::from_secs(30));
        session.end(End::ClientStalled).await;
        assert!(peer.reset.load(Ordering::Relaxed), "reset, not closed");
        let route = stats(&plugin);
        assert_eq!(route["drops"]["client_stalled"], 1, "{route}");
        assert_eq!(
            route["events"], 0,
            "an event the client did not take is not counted"
        );
    });
}

#[test]
fn a_refusal_is_answered_with_the_host_s_headers_counted_and_logged() {
    paused(|| async {
        let plugin = plugin(json!({"retry_after": "7s"}));
        let (client, mut peer) = connected(4096);
        let session = new_session(&plugin, "/s/refused", client, None);
        session.refuse(Refusal::OverLimit).await;
        let response = peer.read_to_end().await;
        assert_eq!(
            response,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 30\r\nRetry-After: 7\r\nAccess-Control-Allow-Origin: *\r\n\
             Connection: close\r\n\r\ntoo many streams; retry later\n"
        );
        assert_eq!(stats(&plugin)["drops"]["over_limit"], 1);

        let (client, mut peer) = connected(4096);
        let session = new_session(&plugin, "/s/bad", client, None);
        let why = wire::clean::Unclean::Query.into();
        session.refuse(Refusal::BadRequest(why)).await;
        let response = peer.read_to_end().await;
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{response}"
        );
        assert!(!response.contains("Retry-After"), "{response}");
        assert!(logged("GET /s/bad: refused with 400: "));
        assert_eq!(stats(&plugin)["drops"]["bad_request"], 1);
    });
}

#[test]
fn ends_know_their_drop_and_whether_the_client_is_reset() {
    use crate::stats::DropReason;
    let cases = [
        (End::ClientLeft, None, false),
        (End::ClientStalled, Some(DropReason::ClientStalled), true),
        (
            End::ClientStalledInCatchUp,
            Some(DropReason::ClientStalled),
            true,
        ),
        (End::ClientLagged, Some(DropReason::ClientLagged), true),
        (End::FellOffTheRing, Some(DropReason::ClientLagged), true),
        (
            End::CutOff(CutOff::Drain),
            Some(DropReason::Shutdown),
            false,
        ),
        (
            End::CutOff(CutOff::TokenExpired),
            Some(DropReason::TokenExpired),
            false,
        ),
        (
            End::ReconnectsExhausted,
            Some(DropReason::ReconnectsExhausted),
            false,
        ),
        (End::UpstreamStopped, None, false),
        (End::SourceEnded, None, false),
    ];
    for (end, drop, resets) in cases {
        assert_eq!((end.drop_reason(), end.resets()), (drop, resets), "{end:?}");
    }
    assert_eq!(End::ClientLeft.in_catch_up(), End::ClientLeftInCatchUp);
    assert_eq!(
        End::ReconnectsExhausted.to_string(),
        End::UpstreamStopped.to_string(),
        "both are \"could not be resumed\" in the access log"
    );
}
