//! End to end through the real gateway and plugin: what an SSE client sees.

use std::time::Duration;

use serde_json::json;
use testkit::{body_of, gateway, origin, unused_port, Gateway, RawClient, ScriptedOrigin};

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n";

#[tokio::test]
async fn events_pass_through_byte_for_byte() {
    let (mut upstream, gateway) = scripted_stream().await;
    let client = RawClient::get(gateway.addr, "/sse/abc", &[]).await;
    let mut conn = upstream.accept().await;
    assert!(
        conn.head.starts_with("GET /events-stream/abc HTTP/1.1\r\n"),
        "{}",
        conn.head
    );
    // Every field kind, CR/LF/CRLF endings, UTF-8, and a last line without a newline,
    // written in pieces that split lines and events.
    let events: &[&[u8]] = &[
        b"retry: 2500\n",
        b": a comment\n\nid: 1\nevent: first\ndata: line one\ndata: line two\n\n",
        b"id: 2\r\ndata: {\"json\": true, \"text\": \"\xc3\xa9t\xc3\xa9\"}\r\n\r\nda",
        b"ta: split across writes\rid: 3\r\r",
        b"data: last line without newline",
    ];
    conn.send_event_stream_head().await;
    for piece in events {
        conn.send(piece).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conn);
    let response = client.read_to_end().await;
    assert!(
        response.starts_with(SSE_HEAD.as_bytes()),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(body_of(&response), events.concat());
}

#[tokio::test]
async fn a_chunked_origin_is_unframed_byte_for_byte() {
    let (mut upstream, gateway) = scripted_stream().await;
    let client = RawClient::get(gateway.addr, "/sse/c", &[]).await;
    let mut conn = upstream.accept().await;
    let payload: &[u8] =
        b"id: 1\ndata: one\n\nid: 2\ndata: two\r\ndata: lines\r\n\n: comment\n\ndata: tail";
    conn.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    // Chunk boundaries fall inside events and lines; the last chunk ends the stream.
    for piece in payload.chunks(7) {
        conn.send(format!("{:x};ext=x\r\n", piece.len()).as_bytes())
            .await;
        conn.send(piece).await;
        conn.send(b"\r\n").await;
    }
    conn.send(b"0\r\n\r\n").await;
    let response = client.read_to_end().await;
    assert!(
        response.starts_with(SSE_HEAD.as_bytes()),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(body_of(&response), payload);
}

#[tokio::test]
async fn the_first_event_arrives_before_the_origin_sends_the_second() {
    let (mut upstream, gateway) = scripted_stream().await;
    let mut client = RawClient::get(gateway.addr, "/sse/x", &[]).await;
    let mut conn = upstream.accept().await;
    conn.send_event_stream_head().await;
    conn.send(b"id: 1\ndata: first\n\n").await;
    // The origin holds the second event until the client has the first: only an
    // unbuffered path can pass this.
    client.read_until(b"data: first\n\n").await;
    conn.send(b"id: 2\ndata: second\n\n").await;
    client.read_until(b"data: second\n\n").await;
}

#[tokio::test]
async fn request_headers_and_query_reach_the_origin() {
    let (mut upstream, gateway) = scripted_stream().await;
    let headers = [
        "Last-Event-ID: 41",
        "Authorization: Bearer t0ken",
        "Cookie: session=s1",
        "X-Not-Forwarded: no",
    ];
    let _client = RawClient::get(gateway.addr, "/sse/u1?topic=news&since=5", &headers).await;
    let conn = upstream.accept().await;
    assert!(
        conn.head
            .starts_with("GET /events-stream/u1?topic=news&since=5 HTTP/1.1\r\n"),
        "{}",
        conn.head
    );
    assert_eq!(conn.header("last-event-id"), Some("41"));
    assert_eq!(conn.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(conn.header("cookie"), Some("session=s1"));
    assert_eq!(conn.header("accept"), Some("text/event-stream"));
    assert_eq!(conn.header("x-not-forwarded"), None);
}

#[tokio::test]
async fn last_event_id_resumes_the_demo_origin() {
    let origin = origin().count(3).interval_ms(10).run();
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        // A finite origin stream ends the client's: no resumption.
        .plugin_key("max_reconnects", json!(0))
        .run();
    let response = RawClient::get(gateway.addr, "/sse/r", &["Last-Event-ID: 7"])
        .await
        .read_to_end()
        .await;
    let events = parse(body_of(&response));
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["8", "9", "10"]);
    assert_eq!(events[2].event, "multiline");
    assert_eq!(
        events[2].data,
        "event 10 of stream r\nsecond line of event 10"
    );
}

#[tokio::test]
async fn a_client_that_leaves_closes_the_upstream() {
    let (mut upstream, gateway) = scripted_stream().await;
    let mut client = RawClient::get(gateway.addr, "/sse/x", &[]).await;
    let mut conn = upstream.accept().await;
    conn.send_event_stream_head().await;
    conn.send(b"data: hello\n\n").await;
    client.read_until(b"data: hello\n\n").await;
    drop(client);
    assert!(
        conn.closed_within(Duration::from_secs(1)).await,
        "the upstream stayed open after the client left"
    );
}

#[tokio::test]
async fn an_unreachable_origin_gives_502_and_the_gateway_keeps_serving() {
    let backend = testkit::json_backend(200, r#"{"ok":true}"#).await;
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &format!("http://127.0.0.1:{}", unused_port()))
        .endpoint(serde_json::json!({"endpoint": "/api", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/"}]}))
        .run();
    for _ in 0..3 {
        let response = RawClient::get(gateway.addr, "/sse/x", &[])
            .await
            .read_to_end()
            .await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
        // General terms to the client; the cause, with the host it concerns, in the log.
        assert_eq!(body_of(&response), b"upstream unavailable\n", "{text}");
    }
    gateway.process.wait_for_log_count("unreachable", 3);
    let response = RawClient::get(gateway.addr, "/api", &["Connection: close"])
        .await
        .read_to_end()
        .await;
    assert_eq!(
        body_of(&response),
        br#"{"ok":true}"#,
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(
        gateway.process.wait_for_log_count("unreachable", 3),
        3,
        "logged once per failed stream"
    );
}

#[tokio::test]
async fn an_origin_error_reaches_the_client_with_its_status_and_body() {
    let (mut upstream, gateway) = scripted_stream().await;
    let client = RawClient::get(gateway.addr, "/sse/x", &[]).await;
    let mut conn = upstream.accept().await;
    conn.send(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"error\":\"nope\"}\n").await;
    let response = client.read_to_end().await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"),
        "{text}"
    );
    assert_eq!(body_of(&response), b"{\"error\":\"nope\"}\n");
}

#[tokio::test]
async fn five_hundred_concurrent_streams_all_receive_their_events() {
    let origin = origin().count(5).interval_ms(100).run();
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        // A finite origin stream ends the client's: no resumption.
        .plugin_key("max_reconnects", json!(0))
        .run();
    let streams: Vec<_> = (0..500)
        .map(|i| {
            let addr = gateway.addr;
            tokio::spawn(async move {
                let response = RawClient::get(addr, &format!("/sse/s{i}"), &[])
                    .await
                    .read_to_end()
                    .await;
                (i, parse(body_of(&response)))
            })
        })
        .collect();
    for stream in streams {
        let (i, events) = stream.await.unwrap();
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5"], "stream {i}");
        assert!(
            events[0].data.contains(&format!("\"stream\":\"s{i}\"")),
            "stream {i} got another stream's events"
        );
    }
}

#[tokio::test]
async fn curl_streams_through_the_gateway() {
    let origin = origin().count(3).interval_ms(50).run();
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        // A finite origin stream ends the client's: no resumption.
        .plugin_key("max_reconnects", json!(0))
        .run();
    let url = format!("http://{}/sse/testid", gateway.addr);
    let output = tokio::process::Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "10",
            "-H",
            "Accept: text/event-stream",
            &url,
        ])
        .output()
        .await
        .expect("curl is installed");
    assert!(output.status.success(), "curl failed: {output:?}");
    let ids: Vec<String> = parse(&output.stdout).into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["1", "2", "3"]);
}

#[tokio::test]
async fn the_client_reconnects_with_last_event_id_and_honours_retry() {
    let (mut upstream, gateway) = scripted_stream().await;
    let url = format!("http://{}/sse/c", gateway.addr);
    let client = tokio::process::Command::new(testkit::bin("client"))
        .args([url.as_str(), "--json", "--max-events", "3"])
        .output();
    let script = async {
        let mut first = upstream.accept().await;
        assert_eq!(first.header("last-event-id"), None);
        first.send_event_stream_head().await;
        first.send(b"retry: 50\nid: 1\ndata: one\n\nid: 2\nevent: two\ndata: a\ndata: b\n\nid: 3\ndata: cut off").await;
        drop(first);
        let mut second = upstream.accept().await;
        assert_eq!(
            second.header("last-event-id"),
            Some("2"),
            "resumes after the last complete event"
        );
        second.send_event_stream_head().await;
        second.send(b"id: 3\ndata: three\n\n").await;
        second
    };
    let (output, _second) = tokio::join!(client, script);
    let output = output.unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"id": "1", "event": "message", "data": "one"}),
            serde_json::json!({"id": "2", "event": "two", "data": "a\nb"}),
            serde_json::json!({"id": "3", "event": "message", "data": "three"}),
        ]
    );
}

/// A gateway whose plugin streams `/sse/{id}` from a scripted origin.
async fn scripted_stream() -> (ScriptedOrigin, Gateway) {
    let upstream = ScriptedOrigin::start().await;
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &upstream.url())
        // A finite origin stream ends the client's: no resumption.
        .plugin_key("max_reconnects", json!(0))
        .run();
    (upstream, gateway)
}

fn parse(body: &[u8]) -> Vec<sse::Event> {
    let mut parser = sse::Parser::new();
    let mut events = Vec::new();
    parser.feed(body, |e| events.push(e));
    events
}
