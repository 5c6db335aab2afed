//! Fan-out of one SSE origin stream to many clients: one upstream connection, replay from
//! the ring at the seam, slow clients dropped without slowing the others, the upstream
//! closed after the last client lingers out, and ten thousand clients at once.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{body_of, gateway, origin, Gateway, OriginConn, RawClient, ScriptedOrigin};
use tokio::io::AsyncReadExt;

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// A gateway fanning `/ticker/{room}` out from `/events/{room}` on `origin`.
fn fanout(origin: &str, extra: Value) -> Gateway {
    let mut block = json!({
        "endpoint": "/ticker/{room}",
        "backend_url_pattern": "/events/{room}",
        "backend_host": origin,
        "fanout": true,
        "reconnect_delay": "20ms",
    });
    for (key, value) in extra.as_object().unwrap() {
        block[key] = value.clone();
    }
    gateway().plugin_block(PLUGIN, block).run()
}

fn events(ids: std::ops::RangeInclusive<u32>) -> String {
    ids.map(|i| format!("id: {i}\ndata: tick {i}\n\n"))
        .collect()
}

async fn open_upstream(origin: &mut ScriptedOrigin) -> OriginConn {
    let mut conn = origin.accept().await;
    conn.send_event_stream_head().await;
    conn
}

#[tokio::test]
async fn one_upstream_serves_every_client_and_resumes_at_the_seam() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = fanout(&origin.url(), json!({}));

    let mut first =
        RawClient::get(gateway.addr, "/ticker/a", &["Authorization: Bearer alice"]).await;
    let mut upstream = open_upstream(&mut origin).await;
    assert_eq!(
        upstream.header("authorization"),
        None,
        "a shared stream carries no client's credentials"
    );
    let mut second = RawClient::get(gateway.addr, "/ticker/a", &[]).await;
    first.read_until(b"text/event-stream").await;
    second.read_until(b"text/event-stream").await;

    upstream.send(events(1..=3).as_bytes()).await;
    for client in [&mut first, &mut second] {
        client.read_until(b"id: 3\ndata: tick 3\n\n").await;
        assert!(body_of(&client.received).ends_with(events(1..=3).as_bytes()));
    }

    // Resuming clients get what they missed from the ring, then live events: no gap, no
    // duplicate at the seam. One uses the header, one the query parameter.
    let mut by_header = RawClient::get(gateway.addr, "/ticker/a", &["Last-Event-ID: 1"]).await;
    let mut by_query = RawClient::get(gateway.addr, "/ticker/a?lastEventId=2", &[]).await;
    by_header.read_until(b"id: 3\ndata: tick 3\n\n").await;
    by_query.read_until(b"id: 3\ndata: tick 3\n\n").await;
    upstream.send(events(4..=4).as_bytes()).await;
    by_header.read_until(b"id: 4\n").await;
    by_query.read_until(b"id: 4\n").await;
    first.read_until(b"id: 4\n").await;
    assert_eq!(body_of(&by_header.received), events(2..=4).as_bytes());
    assert_eq!(body_of(&by_query.received), events(3..=4).as_bytes());

    assert!(
        origin.quiet_for(Duration::from_millis(300)).await,
        "four clients, one upstream connection"
    );
    // A different room is a different stream.
    let _other = RawClient::get(gateway.addr, "/ticker/b", &[]).await;
    let other_upstream = origin.accept().await;
    assert!(
        other_upstream.head.starts_with("GET /events/b "),
        "{}",
        other_upstream.head
    );
    let stats = gateway.route_stats("/ticker/{room}").await;
    assert_eq!(stats["sources"], 2, "{stats}");
    assert_eq!(stats["streams"], 5, "{stats}");
}

#[tokio::test]
async fn an_id_the_ring_no_longer_holds_is_announced_not_skipped() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = fanout(&origin.url(), json!({"replay": 3, "client_queue": 3}));
    let mut watcher = RawClient::get(gateway.addr, "/ticker/a", &[]).await;
    let mut upstream = open_upstream(&mut origin).await;
    for i in 1..=6 {
        upstream.send(events(i..=i).as_bytes()).await;
        watcher.read_until(format!("id: {i}\n").as_bytes()).await;
    }

    let mut late = RawClient::get(gateway.addr, "/ticker/a", &["Last-Event-ID: 2"]).await;
    late.read_until(b"id: 6\ndata: tick 6\n\n").await;
    let body = String::from_utf8_lossy(body_of(&late.received)).into_owned();
    assert_eq!(
        body,
        format!(
            ": Last-Event-ID \"2\" is not among the 3 events kept for replay; they follow\n{}",
            events(4..=6)
        )
    );
}

#[tokio::test]
async fn the_upstream_resumes_with_the_last_event_id_and_closes_after_the_last_client() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = fanout(&origin.url(), json!({"linger": "200ms"}));
    let mut client = RawClient::get(gateway.addr, "/ticker/a", &["Last-Event-ID: 7"]).await;
    let mut upstream = origin.accept().await;
    assert_eq!(
        upstream.header("last-event-id"),
        Some("7"),
        "the first client's place starts the stream"
    );
    upstream.send_event_stream_head().await;
    upstream.send(events(8..=9).as_bytes()).await;
    drop(upstream);

    let mut resumed = open_upstream(&mut origin).await;
    assert_eq!(resumed.header("last-event-id"), Some("9"));
    resumed.send(events(10..=10).as_bytes()).await;
    client.read_until(b"id: 10\n").await;
    assert_eq!(body_of(&client.received), events(8..=10).as_bytes());

    drop(client);
    assert!(
        resumed.closed_within(Duration::from_secs(3)).await,
        "the upstream closes once the last client has lingered out"
    );
    let stats = gateway.route_stats("/ticker/{room}").await;
    assert_eq!(stats["sources"], 0, "{stats}");
}

#[tokio::test]
async fn a_slow_client_is_dropped_without_delaying_the_others() {
    const EVENTS: u32 = 4000;
    let mut origin = ScriptedOrigin::start().await;
    let gateway = fanout(
        &origin.url(),
        json!({"client_queue": 1000, "client_write_timeout": "0"}),
    );
    let stalled = RawClient::get(gateway.addr, "/ticker/a", &[]).await;
    let mut upstream = open_upstream(&mut origin).await;
    let mut reader = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut reader,
        b"GET /ticker/a HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    // Wait until both are subscribed, then send 4,000 events of 4 KiB: 16 MB, far more
    // than the socket buffers plus `client_queue` hold for the client that reads nothing.
    let start = tokio::time::Instant::now();
    while gateway.route_stats("/ticker/{room}").await["active"] != 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let payload = "x".repeat(4096);
    // Paced in bursts of 20 (about 16 MB/s), a rate the reading client keeps up with.
    let feed = tokio::spawn(async move {
        for burst in 0..EVENTS / 20 {
            let events: String = (burst * 20 + 1..=burst * 20 + 20)
                .map(|i| format!("id: {i}\ndata: {payload}\n\n"))
                .collect();
            upstream.send(events.as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        upstream
    });
    // The reader takes every event, in order.
    let mut parser = sse::Parser::new();
    let mut next = 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    while next <= EVENTS {
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
            .await
            .expect("the reading client was held up")
            .unwrap();
        assert!(n > 0, "the reading client was cut off at event {next}");
        let mut body = &buf[..n];
        if head.len() < 4 || !head.ends_with(b"\r\n\r\n") {
            head.extend_from_slice(body);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let rest = head.split_off(end + 4);
            parser.feed(&rest, |e| {
                assert_eq!(e.id, next.to_string());
                next += 1;
            });
            body = &[];
        }
        parser.feed(body, |e| {
            assert_eq!(e.id, next.to_string());
            next += 1;
        });
    }
    let _upstream = feed.await.unwrap();
    let stats = gateway.route_stats("/ticker/{room}").await;
    assert_eq!(stats["drops"]["client_lagged"], 1, "{stats}");
    let dropped = stalled.read_to_end().await;
    assert!(
        dropped.len() < (EVENTS as usize) * 4096,
        "the stalled client was cut off"
    );
}

/// Ten thousand clients on one origin stream, each checked for every event in order by
/// the project's load generator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_share_one_stream() {
    const CLIENTS: u64 = 10_000;
    let origin = origin().run();
    let gateway = fanout(
        &origin.url(),
        json!({"endpoint": "/bench/{id}", "backend_url_pattern": "/bench/{id}", "max_streams": 20000}),
    );
    let url = format!("http://{}/bench/shared?rate=10&size=100", gateway.addr);
    let output = tokio::process::Command::new(testkit::bin("sse-load"))
        .args([
            &url,
            "-c",
            &CLIENTS.to_string(),
            "-d",
            "3",
            "--after-connect",
            "--json",
        ])
        .output()
        .await
        .expect("running sse-load");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["connections_ok"], CLIENTS, "{report}");
    assert_eq!(report["connections_failed"], 0, "{report}");
    assert_eq!(report["id_gaps"], 0, "{report}");
    assert_eq!(report["premature_disconnects"], 0, "{report}");
    // Every client got the events published while it was connected: at 10/s over the
    // seconds all were connected, at least a few each.
    assert!(
        report["events"].as_u64().unwrap() >= CLIENTS * 10,
        "{report}"
    );
    let stats = gateway.route_stats("/bench/{id}").await;
    assert_eq!(stats["sources"], 1, "{stats}");
}

#[tokio::test]
async fn drain_ends_fan_out_clients_with_the_final_event() {
    let origin = origin().interval_ms(20).run();
    let mut gateway = gateway()
        .plugin_block(
            PLUGIN,
            json!({"endpoint": "/live/{id}", "backend_url_pattern": "/events-stream/{id}",
                   "backend_host": origin.url(), "fanout": true,
                   "shutdown_event": "event: shutdown\ndata: bye"}),
        )
        .root("shutdown_timeout", json!("5s"))
        .run();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::get(gateway.addr, "/live/room", &[]).await;
        client.read_until(b"\n\n").await;
        clients.push(client);
    }
    gateway
        .drain_ending_with(clients, "event: shutdown\ndata: bye\n\n")
        .await;
}
