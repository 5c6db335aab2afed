//! The gate and the normal pipeline: handoff after other requests, bad requests answered
//! without harm to anyone else, a panicking plugin, KrakenD endpoints.

use serde_json::json;
use testkit::{body_of, gateway, json_backend, origin, Gateway, GatewayBuilder, RawClient};

/// A gateway with the streaming plugin on /sse/{id} and a JSON endpoint on /api/{id}.
async fn streaming_and_api() -> (Gateway, testkit::Process) {
    streaming_and_api_with(|builder| builder).await
}

/// The same, with more of the config set by `more`.
async fn streaming_and_api_with(
    more: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> (Gateway, testkit::Process) {
    let origin = origin().count(2).interval_ms(10).run();
    let backend = json_backend(200, r#"{"answer":42}"#).await;
    let gateway = more(gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        // A finite origin stream ends the client's: no resumption.
        .plugin_key("max_reconnects", json!(0))
        .endpoint(json!({"endpoint": "/api/{id}", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/v/{id}"}]})))
        .run();
    (gateway, origin)
}

const API_REQUEST: &[u8] = b"GET /api/1 HTTP/1.1\r\nHost: x\r\n\r\n";
const SSE_REQUEST: &[u8] = b"GET /sse/k HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

fn assert_api_then_stream(received: &[u8]) {
    let text = String::from_utf8_lossy(received);
    let api_end = text
        .find(r#"{"answer":42}"#)
        .unwrap_or_else(|| panic!("no API answer in {text}"));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let rest = &text[api_end..];
    let stream_start = rest
        .find("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream")
        .unwrap_or_else(|| panic!("no stream after the API answer: {text}"));
    assert!(rest[stream_start..].contains("id: 2\n"), "{text}");
}

#[tokio::test]
async fn a_claimed_request_after_a_normal_one_on_a_keep_alive_connection() {
    let (gateway, _origin) = streaming_and_api().await;
    let mut client = RawClient::connect(gateway.addr).await;
    client.send(API_REQUEST).await;
    client.read_until(br#"{"answer":42}"#).await;
    client.send(SSE_REQUEST).await;
    assert_api_then_stream(&client.read_to_end().await);
}

#[tokio::test]
async fn a_claimed_request_pipelined_behind_normal_ones() {
    let (gateway, _origin) = streaming_and_api().await;
    let mut client = RawClient::connect(gateway.addr).await;
    client
        .send(&[API_REQUEST, API_REQUEST, SSE_REQUEST].concat())
        .await;
    let received = client.read_to_end().await;
    assert_eq!(
        String::from_utf8_lossy(&received)
            .matches(r#"{"answer":42}"#)
            .count(),
        2
    );
    assert_api_then_stream(&received);
}

#[tokio::test]
async fn a_request_body_is_passed_whole_before_the_next_head() {
    let (gateway, _origin) = streaming_and_api().await;
    let mut client = RawClient::connect(gateway.addr).await;
    // A chunked body whose bytes look like a request head: the gate must not take them as one.
    let chunked = b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        20\r\nGET /sse/k HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n";
    client.send(chunked).await;
    client
        .send(b"POST /api/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    client.send(SSE_REQUEST).await;
    let received = client.read_to_end().await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    assert!(
        text.contains("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{text}"
    );
    assert!(text.contains("Content-Type: text/event-stream"), "{text}");
}

#[tokio::test]
async fn bad_requests_get_4xx_and_others_are_served() {
    let (gateway, _origin) = streaming_and_api().await;
    // A stream that stays open while bad requests come and go.
    let mut watcher = RawClient::get(gateway.addr, "/sse/w", &[]).await;
    let oversized = format!(
        "GET /api/1 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let cases: [(&[u8], &str); 6] = [
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
        (b"GET /api/1 HTTP/1.1\r\nBad Header Line\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
        (oversized.as_bytes(), "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        (b"POST /api/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
        (b"POST /api/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "HTTP/1.1 400 Bad Request\r\n"),
        (b"GET /sse/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", "HTTP/1.1 400 Bad Request\r\n"),
    ];
    for (request, expected) in cases {
        let mut client = RawClient::connect(gateway.addr).await;
        client.send(request).await;
        let response = client.read_to_end().await;
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with(expected),
            "{:?}\n  gave {text:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
    }
    watcher.read_until(b"id: 2\n").await;
    let response = RawClient::get(gateway.addr, "/api/2", &["Connection: close"])
        .await
        .read_to_end()
        .await;
    assert_eq!(body_of(&response), br#"{"answer":42}"#);
}

#[tokio::test]
async fn the_head_limit_is_configurable() {
    let backend = json_backend(200, "{}").await;
    let gateway = gateway()
        .root("max_header_bytes", json!(256))
        .endpoint(json!({"endpoint": "/a", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/"}]}))
        .run();
    let big = RawClient::get(
        gateway.addr,
        "/a",
        &[&format!("X-Pad: {}", "p".repeat(300))],
    )
    .await
    .read_to_end()
    .await;
    assert!(
        big.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&big)
    );
    let small = RawClient::get(gateway.addr, "/a", &["Connection: close"])
        .await
        .read_to_end()
        .await;
    assert!(
        small.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&small)
    );
}

#[tokio::test]
async fn a_panicking_plugin_never_takes_the_host_down() {
    let backend = json_backend(200, r#"{"alive":true}"#).await;
    let mut gateway = gateway()
        .plugin_pattern("panicking_plugin.so")
        .plugin_block("panicking-plugin", json!({}))
        .run();
    gateway
        .process
        .wait_for_log("Injecting plugin panicking-plugin");
    // Panic in hijack: that one connection closes without an answer.
    let response = RawClient::get(gateway.addr, "/panic", &[])
        .await
        .read_to_end()
        .await;
    assert!(
        response.is_empty(),
        "{}",
        String::from_utf8_lossy(&response)
    );
    gateway
        .process
        .wait_for_log("hijack failed: plugin panicked: a bug in hijack");
    assert!(gateway.process.is_running());
    // Panic when asked for its routes: the plugin is left out and its path goes through
    // the pipeline.
    let mut gateway = testkit::gateway()
        .plugin_pattern("panicking_plugin.so")
        .plugin_block("panicking-plugin", json!({"panic_in_routes": true}))
        .endpoint(json!({"endpoint": "/panic", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/"}]}))
        .run();
    gateway
        .process
        .wait_for_log("refused to start: plugin panicked: a bug in routes");
    let response = RawClient::get(gateway.addr, "/panic", &["Connection: close"])
        .await
        .read_to_end()
        .await;
    assert_eq!(body_of(&response), br#"{"alive":true}"#);
    assert!(gateway.process.is_running());
}

#[tokio::test]
async fn normal_endpoints_json_no_op_and_404() {
    let origin = origin().count(2).interval_ms(10).run();
    let object = json_backend(200, r#"{"a":1}"#).await;
    let array = json_backend(200, r#"[1,2]"#).await;
    let failing = json_backend(500, r#"{"error":true}"#).await;
    let gateway = gateway()
        .endpoint(json!({"endpoint": "/object", "backend": [{"host": [format!("http://{object}")], "url_pattern": "/"}]}))
        .endpoint(json!({"endpoint": "/array", "backend": [{"host": [format!("http://{array}")], "url_pattern": "/"}]}))
        .endpoint(json!({"endpoint": "/failing", "backend": [{"host": [format!("http://{failing}")], "url_pattern": "/"}]}))
        .endpoint(json!({"endpoint": "/raw/{id}", "output_encoding": "no-op",
                         "backend": [{"host": [origin.url()], "url_pattern": "/events-stream/{id}"}]}))
        .run();
    let get = |path: &'static str| async move {
        String::from_utf8(
            RawClient::get(gateway.addr, path, &["Connection: close"])
                .await
                .read_to_end()
                .await,
        )
        .unwrap()
    };
    let object = get("/object").await;
    assert!(
        object.starts_with("HTTP/1.1 200 OK\r\n") && object.ends_with(r#"{"a":1}"#),
        "{object}"
    );
    assert!(object.contains("x-krakend-completed: true"), "{object}");
    assert!(get("/array").await.ends_with(r#"{"collection":[1,2]}"#));
    let failing = get("/failing").await;
    assert!(
        failing.starts_with("HTTP/1.1 500 ") && failing.contains("x-krakend-completed: false"),
        "{failing}"
    );
    let raw = get("/raw/n").await;
    assert!(
        raw.contains("content-type: text/event-stream") && raw.contains("id: 2\nevent: tick\n"),
        "{raw}"
    );
    assert!(get("/missing")
        .await
        .starts_with("HTTP/1.1 404 Not Found\r\n"));
}

#[tokio::test]
async fn a_slow_backend_gives_504_after_the_endpoint_timeout() {
    let mut silent = testkit::ScriptedOrigin::start().await;
    let gateway = gateway()
        .endpoint(json!({"endpoint": "/slow", "timeout": "200ms", "backend": [{"host": [silent.url()], "url_pattern": "/"}]}))
        .run();
    let client = RawClient::get(gateway.addr, "/slow", &["Connection: close"]);
    let (response, _held) =
        tokio::join!(async { client.await.read_to_end().await }, silent.accept());
    assert!(
        response.starts_with(b"HTTP/1.1 504 Gateway Timeout\r\n"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[tokio::test]
async fn a_head_that_never_finishes_gets_408_and_an_idle_connection_is_closed() {
    let backend = json_backend(200, "{}").await;
    let gateway = gateway()
        .root("read_header_timeout", json!("300ms"))
        .root("idle_timeout", json!("300ms"))
        .endpoint(json!({"endpoint": "/a", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/"}]}))
        .run();
    let mut slow = RawClient::connect(gateway.addr).await;
    slow.send(b"GET /a HTTP/1.1\r\nHost: x\r\n").await;
    let response = slow.read_to_end().await;
    assert!(
        response.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    let idle = RawClient::connect(gateway.addr).await;
    assert!(
        idle.read_to_end().await.is_empty(),
        "an idle connection is closed without an answer"
    );

    // After a served request, the idle timer applies again.
    let mut keep_alive = RawClient::connect(gateway.addr).await;
    keep_alive.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let response = keep_alive.read_to_end().await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(
        String::from_utf8_lossy(&response)
            .matches("HTTP/1.1")
            .count(),
        1
    );
}

/// A request head for `path` with `host_lines` (`Host: ...` lines, maybe none) and `extra`
/// more headers.
fn head_with(path: &str, host_lines: &str, extra: usize) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\n{host_lines}Accept: text/event-stream\r\n");
    for i in 0..extra {
        head.push_str(&format!("X-Extra-{i}: {i}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn host_and_the_header_count_are_checked_for_claimed_and_pipeline_requests_alike() {
    let (gateway, _origin) =
        streaming_and_api_with(|builder| builder.root("max_header_count", json!(10))).await;
    for path in ["/sse/k", "/api/1"] {
        // Host, Accept, Connection and 7 more: 10 headers.
        let cases: [(&str, usize, &str); 6] = [
            ("", 0, "HTTP/1.1 400 Bad Request\r\n"),
            ("Host: a\r\nHost: b\r\n", 0, "HTTP/1.1 400 Bad Request\r\n"),
            ("Host: a\r\nhost: a\r\n", 0, "HTTP/1.1 400 Bad Request\r\n"),
            ("Host: user@a\r\n", 0, "HTTP/1.1 400 Bad Request\r\n"),
            (
                "Host: a\r\n",
                8,
                "HTTP/1.1 431 Request Header Fields Too Large\r\n",
            ),
            ("Host: a\r\n", 7, "HTTP/1.1 200 OK\r\n"),
        ];
        for (hosts, extra, expected) in cases {
            let response = RawClient::exchange(gateway.addr, head_with(path, hosts, extra)).await;
            let text = String::from_utf8_lossy(&response);
            assert!(
                text.starts_with(expected),
                "{path} {hosts:?} {extra}: {text}"
            );
        }
    }
    let log = gateway.process.log();
    assert!(log.contains("400 more than one Host header"), "{log}");
    assert!(log.contains("400 missing Host header"), "{log}");
}

#[tokio::test]
async fn a_header_count_over_hypers_own_default_is_served() {
    let backend = json_backend(200, r#"{"answer":42}"#).await;
    let gateway = gateway()
        .endpoint(json!({"endpoint": "/api/{id}", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/v/{id}"}]}))
        .root("max_header_count", json!(150))
        .run();
    let response = RawClient::exchange(gateway.addr, head_with("/api/1", "Host: a\r\n", 140)).await;
    assert_eq!(
        body_of(&response),
        br#"{"answer":42}"#,
        "{}",
        String::from_utf8_lossy(&response)
    );
    let response = RawClient::exchange(gateway.addr, head_with("/api/1", "Host: a\r\n", 148)).await;
    assert!(
        response.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
}
