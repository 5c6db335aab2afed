//! Streams that survive the real world: origins that drop mid-event, hang, refuse or go
//! quiet; clients that stall; limits; load balancing; drain. Timeouts are scaled down by
//! config so that each test takes a second or two.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{
    body_of, gateway, origin, unused_port, Gateway, OriginConn, RawClient, ScriptedOrigin,
};

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// A gateway with the streaming plugin configured by `block`.
fn streaming(block: Value) -> Gateway {
    gateway().plugin_block(PLUGIN, block).run()
}

/// One route `/sse/{id}` -> `/events/{id}` on `hosts`, with `extra` keys.
fn route(hosts: &[String], extra: Value) -> Value {
    let mut block = json!({
        "endpoint": "/sse/{id}",
        "backend_url_pattern": "/events/{id}",
        "backend_host": hosts,
        "reconnect_delay": "20ms",
    });
    for (key, value) in extra.as_object().unwrap() {
        block[key] = value.clone();
    }
    block
}

async fn answer(conn: &mut OriginConn, events: &[u8]) {
    conn.send_event_stream_head().await;
    conn.send(events).await;
}

#[tokio::test]
async fn an_origin_dropping_mid_event_costs_the_client_nothing() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(route(&[origin.url()], json!({})));
    let client = RawClient::get(gateway.addr, "/sse/r", &["Last-Event-ID: 0"]).await;

    let mut first = origin.accept().await;
    assert_eq!(first.header("last-event-id"), Some("0"));
    answer(
        &mut first,
        b"retry: 30\nid: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: cut o",
    )
    .await;
    drop(first);

    let mut second = origin.accept().await;
    assert_eq!(
        second.header("last-event-id"),
        Some("2"),
        "resumes after the last whole event"
    );
    answer(
        &mut second,
        b"id: 3\ndata: cut off no more\n\nid: 4\ndata: d\n\n",
    )
    .await;
    drop(second);

    // 204 tells an event-stream client to stop: the stream ends cleanly.
    let mut third = origin.accept().await;
    assert_eq!(third.header("last-event-id"), Some("4"));
    third
        .send(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        .await;
    drop(third);

    let response = client.read_to_end().await;
    assert_eq!(
        String::from_utf8_lossy(body_of(&response)),
        "retry: 30\nid: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: cut off no more\n\nid: 4\ndata: d\n\n"
    );
    let stats = gateway.route_stats("/sse/{id}").await;
    assert_eq!(stats["reconnects"], 2, "{stats}");
    assert_eq!(stats["events"], 4, "{stats}");
    // The stream's access-log line.
    gateway
        .process
        .wait_for_log("GET /sse/r 200 stream ended (the upstream could not be resumed) after ");
    assert!(gateway
        .process
        .log()
        .contains("s: 4 events, 84 bytes, 2 reconnects"));
}

#[tokio::test]
async fn no_event_is_lost_or_doubled_across_an_origin_restart() {
    let port = unused_port();
    let first = origin().port(port).interval_ms(30).run();
    let gateway = streaming(route(
        &[format!("http://127.0.0.1:{port}")],
        json!({"backend_url_pattern": "/events-stream/{id}", "max_reconnects": 50}),
    ));
    let mut client = RawClient::get(gateway.addr, "/sse/restart", &[]).await;
    client.read_until(b"id: 5\n").await;
    drop(first);
    // The plugin retries while the origin is down, then resumes on the new process.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _second = origin().port(port).interval_ms(30).run();
    let received = client.read_until(b"id: 25\n").await.to_vec();
    let ids: Vec<u64> = parse_ids(body_of(&received));
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "ids must run on without gaps or repeats");
    assert!(ids.len() >= 25);
}

fn parse_ids(body: &[u8]) -> Vec<u64> {
    let mut parser = sse::Parser::new();
    let mut ids = Vec::new();
    parser.feed(body, |event| ids.push(event.id.parse().unwrap()));
    ids
}

#[tokio::test]
async fn silence_gets_keepalive_comments_and_a_quiet_upstream_is_replaced() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(route(
        &[origin.url()],
        json!({"keepalive": "100ms", "upstream_idle_timeout": "450ms"}),
    ));
    let mut client = RawClient::get(gateway.addr, "/sse/q", &[]).await;
    let mut quiet = origin.accept().await;
    answer(&mut quiet, b"id: 7\ndata: x\n\n").await;
    let received = client.read_until(b":keepalive\n:keepalive\n").await;
    assert!(
        body_of(received).starts_with(b"id: 7\ndata: x\n\n:keepalive\n"),
        "{}",
        String::from_utf8_lossy(received)
    );
    let replacement = origin.accept().await;
    assert_eq!(replacement.header("last-event-id"), Some("7"));
    assert!(
        quiet.closed_within(Duration::from_secs(1)).await,
        "the idle upstream is closed"
    );
}

#[tokio::test]
async fn a_dead_host_is_failed_over_then_ejected() {
    let live = origin().interval_ms(50).run();
    let dead = format!("http://127.0.0.1:{}", unused_port());
    let gateway = streaming(route(
        &[dead, live.url()],
        json!({"backend_url_pattern": "/events-stream/{id}", "eject_after": 2, "eject_for": "1m"}),
    ));
    // Round robin starts streams 1, 3 and 5 on the dead host: two failures eject it.
    for i in 0..5 {
        let mut client = RawClient::get(gateway.addr, &format!("/sse/f{i}"), &[]).await;
        client.read_until(b"id: 1\n").await;
    }
    let stats = gateway.route_stats("/sse/{id}").await;
    assert_eq!(stats["failovers"], 2, "{stats}");
    assert_eq!(stats["hosts"][0]["failures"], 2, "{stats}");
    assert_eq!(stats["hosts"][0]["ejections"], 1, "{stats}");
    assert_eq!(stats["hosts"][0]["ejected"], true, "{stats}");
    assert_eq!(stats["hosts"][1]["failures"], 0, "{stats}");
}

#[tokio::test]
async fn round_robin_alternates_hosts() {
    let (mut a, mut b) = (ScriptedOrigin::start().await, ScriptedOrigin::start().await);
    let gateway = streaming(route(&[a.url(), b.url()], json!({})));
    // Connections are kept open: one that closed unanswered would fail over.
    let mut open = Vec::new();
    for i in 0..4 {
        let client = RawClient::get(gateway.addr, &format!("/sse/{i}"), &[]).await;
        let conn = if i % 2 == 0 {
            a.accept().await
        } else {
            b.accept().await
        };
        assert!(
            conn.head.starts_with(&format!("GET /events/{i} ")),
            "{}",
            conn.head
        );
        open.push((client, conn));
    }
}

#[tokio::test]
async fn sticky_users_keep_their_host_across_reconnects() {
    let (mut a, mut b) = (ScriptedOrigin::start().await, ScriptedOrigin::start().await);
    let gateway = streaming(route(
        &[a.url(), b.url()],
        json!({"load_balance": "sticky", "sticky_key": "header:X-User-ID"}),
    ));
    let mut hosts_used = [0, 0];
    for user in 0..16 {
        let header = format!("X-User-ID: user-{user}");
        let _client = RawClient::get(gateway.addr, "/sse/s", &[&header]).await;
        let mut seen = Vec::new();
        // The first connection and two reconnections after the origin drops the stream.
        for _ in 0..3 {
            let (host, mut conn) = tokio::select! {
                conn = a.accept() => (0, conn),
                conn = b.accept() => (1, conn),
            };
            answer(&mut conn, b"id: 1\ndata: x\n\n").await;
            seen.push(host);
        }
        assert!(
            seen.iter().all(|&h| h == seen[0]),
            "user-{user} moved: {seen:?}"
        );
        hosts_used[seen[0]] += 1;
    }
    assert!(
        hosts_used.iter().all(|&n| n > 0),
        "16 users all hashed to one host: {hosts_used:?}"
    );
}

#[tokio::test]
async fn a_stalled_client_is_dropped_while_a_reader_keeps_receiving() {
    let origin = origin().run();
    let gateway = streaming(route(
        &[origin.url()],
        json!({"endpoint": "/b/{id}", "backend_url_pattern": "/bench/{id}", "client_write_timeout": "300ms"}),
    ));
    // Never reads: the kernel's buffers fill, then the plugin's write stalls.
    let _stalled = RawClient::get(gateway.addr, "/b/stalled?rate=5000&size=1000", &[]).await;
    let mut reader = RawClient::get(gateway.addr, "/b/reader?rate=50&size=100", &[]).await;
    let deadline = tokio::time::Instant::now() + testkit::STEP;
    loop {
        let stats = gateway.route_stats("/b/{id}").await;
        if stats["drops"]["client_stalled"] == 1 {
            assert_eq!(stats["active"], 1, "the reader's stream stays: {stats}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dropped: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reader's stream runs on: ten events past the last one it has now.
    let so_far = reader.read_until(b"\n\n").await;
    let last = parse_ids(body_of(so_far)).last().copied().unwrap_or(0);
    reader
        .read_until(format!("id: {}\n", last + 10).as_bytes())
        .await;
}

#[tokio::test]
async fn over_max_streams_is_503_with_retry_after() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(route(&[origin.url()], json!({"max_streams": 2})));
    let mut open = Vec::new();
    for i in 0..2 {
        let mut client = RawClient::get(gateway.addr, &format!("/sse/{i}"), &[]).await;
        let mut conn = origin.accept().await;
        answer(&mut conn, b"data: hi\n\n").await;
        client.read_until(b"data: hi\n\n").await;
        open.push((client, conn));
    }
    let refused = RawClient::get(gateway.addr, "/sse/third", &[])
        .await
        .read_to_end()
        .await;
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("\r\nRetry-After: 5\r\n"), "{refused}");
    let stats = gateway.route_stats("/sse/{id}").await;
    assert_eq!(
        (
            stats["active"].clone(),
            stats["drops"]["over_limit"].clone()
        ),
        (json!(2), json!(1))
    );

    drop(open.pop());
    let deadline = tokio::time::Instant::now() + testkit::STEP;
    while gateway.route_stats("/sse/{id}").await["active"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _admitted = RawClient::get(gateway.addr, "/sse/again", &[]).await;
    origin.accept().await;
}

#[tokio::test]
async fn an_origin_that_never_answers_is_a_504() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(route(
        &[origin.url()],
        json!({"response_header_timeout": "300ms"}),
    ));
    let client = RawClient::get(gateway.addr, "/sse/hang", &[]).await;
    let _hanging = origin.accept().await;
    let response = client.read_to_end().await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 504 "), "{response}");
    assert!(
        response.ends_with("\r\n\r\nupstream timed out\n"),
        "{response}"
    );
    gateway.process.wait_for_log("no response head in time");
}

#[tokio::test]
async fn an_origin_head_that_frames_its_body_two_ways_is_a_502() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(route(&[origin.url()], json!({})));
    // Read by its chunks, each body is an event; read by a length, it is something else.
    let event = "id: 66\ndata: smuggled\n\n";
    let body = format!("{:x}\r\n{event}\r\n0\r\n\r\n", event.len());
    for (framing, reason) in [
        (
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length together with Transfer-Encoding",
        ),
        (
            "Content-Length: 3\r\nContent-Length: 29\r\n",
            "more than one Content-Length",
        ),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            "a transfer coding other than a single chunked",
        ),
        (
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding whose last coding is not chunked",
        ),
    ] {
        let client = RawClient::get(gateway.addr, "/sse/framing", &[]).await;
        let mut conn = origin.accept().await;
        conn.send(
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{framing}\r\n{body}")
                .as_bytes(),
        )
        .await;
        let response = client.read_to_end().await;
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 502 "),
            "{framing}: {response}"
        );
        // The client is told in general terms; the log says which head and why.
        assert!(
            response.ends_with("\r\n\r\nupstream unavailable\n"),
            "{framing}: {response}"
        );
        assert!(!response.contains("smuggled"), "{framing}: {response}");
        gateway.process.wait_for_log(reason);
    }
}

#[tokio::test]
async fn routes_pick_the_most_specific_match_and_wildcards_carry_the_rest() {
    let (mut one, mut rest) = (ScriptedOrigin::start().await, ScriptedOrigin::start().await);
    let gateway = streaming(json!({
        "routes": [
            {"endpoint": "/n/*", "backend_url_pattern": "/feed/{*}", "backend_host": rest.url()},
            {"endpoint": "/n/{id}", "backend_url_pattern": "/one/{id}", "backend_host": one.url()},
        ]
    }));
    let _a = RawClient::get(gateway.addr, "/n/x", &[]).await;
    assert!(one.accept().await.head.starts_with("GET /one/x HTTP/1.1"));
    let _b = RawClient::get(gateway.addr, "/n/x/y?z=1", &[]).await;
    assert!(rest
        .accept()
        .await
        .head
        .starts_with("GET /feed/x/y?z=1 HTTP/1.1"));
}

#[tokio::test]
async fn drain_ends_streams_at_an_event_boundary_with_a_final_event() {
    let origin = origin().interval_ms(20).run();
    let mut gateway = gateway()
        .plugin_block(
            PLUGIN,
            route(
                &[origin.url()],
                json!({"backend_url_pattern": "/events-stream/{id}", "shutdown_event": "event: shutdown\ndata: bye"}),
            ),
        )
        .root("shutdown_timeout", json!("5s"))
        .run();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut client = RawClient::get(gateway.addr, &format!("/sse/d{i}"), &[]).await;
        client.read_until(b"id: 3\n").await;
        clients.push(client);
    }
    gateway
        .drain_ending_with(clients, "event: shutdown\ndata: bye\n\n")
        .await;
    assert!(gateway.process.log().contains("All streams ended"));
}
