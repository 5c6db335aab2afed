//! LLM-style streams through the gateway: a `POST` with a body answered by a stream, the
//! real clients (the OpenAI Python SDK, `@microsoft/fetch-event-source` in Chromium)
//! pointed at the gateway in front of `sse-server`'s OpenAI mock, as `llm_clients.rs`
//! pins them against the mock directly. What the origin saw is read back from the mock
//! (`/mock/requests`): one request, with the client's method and exact body, never sent
//! twice; the limits on the body; failover before the answer started; NDJSON relayed as
//! it is; the upstream closed when the client leaves; credentials set by the gateway.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{
    body_of, chat_messages, chunk_content, fetch_event_source, gateway, mock_release,
    mock_requests, origin, sdk_spec, sdk_stream_live, the_one_chat_request, unused_port, RawClient,
    ScriptedOrigin,
};

const PLUGIN: &str = "krakend-server-plugin-streaming";
const CHAT: &str = "/v1/chat/completions";

/// The plugin's chat route to `hosts`, forwarding the mock's shaping headers, with `extra`
/// keys.
fn chat_route(hosts: &[String], extra: Value) -> Value {
    let mut route = json!({
        "endpoint": CHAT, "methods": ["POST"], "backend_url_pattern": CHAT,
        "backend_host": hosts,
        "forward_headers": ["Accept", "Authorization", "X-Mock-Chunks", "X-Mock-Interval-Ms",
                            "X-Mock-Hold-After", "X-Mock-Break-After"],
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        route[key] = value.clone();
    }
    route
}

/// A chat request's body, streamed, for `words`.
fn chat_body(words: &str) -> String {
    json!({"model": "mock-1", "messages": chat_messages(words), "stream": true}).to_string()
}

/// A `POST` of `body` (with `Content-Length`) and the `headers` lines.
fn post(path: &str, headers: &[&str], body: &str) -> String {
    let lines: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{lines}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The `data:` values of an event-stream body.
fn data_lines(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_openai_sdk_through_the_gateway_gets_every_chunk_live_from_one_post() {
    let origin = origin().run();
    let gateway = gateway()
        .plugin_block(PLUGIN, chat_route(&[origin.url()], json!({})))
        .run();
    let base_url = format!("http://{}/v1", gateway.addr);
    let headers = json!({"X-Mock-Hold-After": "1", "X-Mock-Interval-Ms": "0"});
    // The first chunk went through the gateway while the origin held the second.
    let chunks = sdk_stream_live(&sdk_spec(&base_url, true, headers), origin.addr).await;
    let words: String = chunks.iter().filter_map(chunk_content).collect();
    assert_eq!(words, "the quick brown fox", "{chunks:?}");
    assert_eq!(
        chunks.len(),
        1 + 4 + 1,
        "role, one chunk per word, finish: {chunks:?}"
    );

    let request = the_one_chat_request(origin.addr).await;
    let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"model": "mock-1", "messages": chat_messages("the quick brown fox"), "stream": true})
    );
    let headers = request["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["content-type", "application/json"])),
        "{headers:?}"
    );
    let stats = gateway.route_stats(CHAT).await;
    assert_eq!(stats["reconnects"], 0, "{stats}");

    // The stream's access-log line carries its time to the first event, and the route's
    // histograms count it once the stream has ended.
    let ended = "POST /v1/chat/completions 200 stream ended (the upstream ended; not resumed)";
    gateway.process.wait_for_log(ended);
    let log = gateway.process.log();
    let line = log.lines().find(|l| l.contains(ended)).unwrap();
    assert!(
        line.contains(", first event ") && !line.contains("first event none"),
        "{line}"
    );
    let metrics = gateway.metrics().await;
    for name in ["first_event_seconds", "stream_duration_seconds"] {
        let count = format!(r#"krakend_plugin_{name}_count{{plugin="{PLUGIN}",route="{CHAT}"}} 1"#);
        assert!(metrics.lines().any(|l| l == count), "{count} in\n{metrics}");
    }
}

#[tokio::test]
async fn fetch_event_source_in_chromium_posts_through_the_gateway_after_a_preflight() {
    let origin = origin().run();
    // The page is on an origin of its own: a JSON POST to the gateway is cross-origin, and
    // the browser asks with a preflight first.
    let page_origin = format!("http://127.0.0.1:{}", unused_port());
    let gateway = gateway()
        .plugin_block(PLUGIN, chat_route(&[origin.url()], json!({})))
        .root_extra(
            "security/cors",
            json!({"allow_origins": [page_origin], "allow_headers": ["Content-Type"]}),
        )
        .run();
    let body = chat_body("hello browser");
    let page = fetch_event_source(&json!({
        "page_url": format!("{page_origin}/page.html"),
        "url": format!("http://{}{CHAT}", gateway.addr),
        "headers": {"Content-Type": "application/json"},
        "body": body,
    }));
    let reports = page.rest().await;
    assert_eq!(
        reports[0],
        json!({"open": 200, "content_type": "text/event-stream"}),
        "{reports:?}"
    );
    let data: Vec<&str> = reports[1..]
        .iter()
        .map_while(|r| r["message"]["data"].as_str())
        .collect();
    assert_eq!(
        data.len(),
        5,
        "role, two words, finish, [DONE]: {reports:?}"
    );
    assert_eq!(data[4], "[DONE]");
    assert_eq!(
        reports.last().unwrap(),
        &json!({"closed": true}),
        "{reports:?}"
    );

    let request = the_one_chat_request(origin.addr).await;
    assert_eq!(
        request["body"],
        body.as_str(),
        "the body exactly as the page sent it"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("krakend_requests_total{") && l.contains(r#"method="OPTIONS""#)),
        "the host answered a preflight: {metrics}"
    );
}

#[tokio::test]
async fn a_chunked_request_body_reaches_the_origin_whole() {
    let origin = origin().run();
    let gateway = gateway()
        .plugin_block(PLUGIN, chat_route(&[origin.url()], json!({})))
        .run();
    let body = chat_body("in pieces");
    let (a, b) = body.split_at(body.len() / 3);
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Mock-Interval-Ms: 0\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut client = RawClient::connect(gateway.addr).await;
    client.send(request.as_bytes()).await;
    let response = client.read_to_end().await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        text(&response)
    );
    let data = data_lines(body_of(&response));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let request = the_one_chat_request(origin.addr).await;
    assert_eq!(request["body"], body.as_str(), "the chunks' payload, whole");
    let headers = request["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["content-length", body.len().to_string()])),
        "sent with its length: {headers:?}"
    );
}

#[tokio::test]
async fn a_body_over_max_body_bytes_gets_413_and_nothing_goes_upstream() {
    let origin = origin().run();
    let tiny = chat_route(
        &[origin.url()],
        json!({"endpoint": "/tiny/v1/chat/completions", "max_body_bytes": 10}),
    );
    let gateway = gateway()
        .root("max_body_bytes", json!(100))
        .plugin_block(
            PLUGIN,
            json!({"routes": [chat_route(&[origin.url()], json!({})), tiny]}),
        )
        .run();
    let over_root = "x".repeat(101);
    let chunked_over_root = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n40\r\n{}\r\n40\r\n{}\r\n0\r\n\r\n",
        "a".repeat(64),
        "b".repeat(64)
    );
    for (request, what) in [
        (
            post(CHAT, &[], &over_root),
            "a declared length over the root's",
        ),
        (
            chunked_over_root,
            "a chunked body that grows past the root's",
        ),
        (
            post("/tiny/v1/chat/completions", &[], "01234567890"),
            "over the route's own",
        ),
    ] {
        let response = RawClient::exchange(gateway.addr, request).await;
        assert!(
            response.starts_with(b"HTTP/1.1 413 "),
            "{what}: {}",
            text(&response)
        );
    }
    assert_eq!(mock_requests(origin.addr).await["total"], 0);
    // Within the route's own limit, the body goes upstream (and the mock refuses it).
    let response = RawClient::exchange(
        gateway.addr,
        post("/tiny/v1/chat/completions", &[], "0123456789"),
    )
    .await;
    assert!(
        response.starts_with(b"HTTP/1.1 400 "),
        "{}",
        text(&response)
    );
    let seen = mock_requests(origin.addr).await;
    assert_eq!(seen["total"], 1, "{seen}");
    assert_eq!(seen["requests"][0]["body"], "0123456789", "{seen}");
}

#[tokio::test]
async fn an_origin_breaking_a_post_stream_ends_the_client_s_stream_and_nothing_is_sent_again() {
    let origin = origin().run();
    let gateway = gateway()
        .plugin_block(
            PLUGIN,
            chat_route(&[origin.url()], json!({"reconnect_delay": "10ms"})),
        )
        .run();
    let request = post(
        CHAT,
        &["X-Mock-Break-After: 2", "X-Mock-Interval-Ms: 0"],
        &chat_body("one two three"),
    );
    let response = RawClient::exchange(gateway.addr, request).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        text(&response)
    );
    let body = body_of(&response);
    assert_eq!(data_lines(body).len(), 2, "{}", text(body));
    assert!(
        body.ends_with(b"\n\n"),
        "ends at an event boundary: {}",
        text(body)
    );
    the_one_chat_request(origin.addr).await;
    let stats = gateway.route_stats(CHAT).await;
    assert_eq!(stats["reconnects"], 0, "{stats}");
    assert_eq!(stats["events"], 2, "{stats}");
}

#[tokio::test]
async fn a_first_host_answering_503_in_retry_on_fails_over_with_the_same_body() {
    let failing = origin().fail_status(503).run();
    let healthy = origin().run();
    let gateway = gateway()
        .plugin_block(
            PLUGIN,
            chat_route(
                &[failing.url(), healthy.url()],
                json!({"retry_on": [429, 503]}),
            ),
        )
        .run();
    // Round robin starts at the first host.
    let body = chat_body("again please");
    let request = post(CHAT, &["X-Mock-Interval-Ms: 0"], &body);
    let response = RawClient::exchange(gateway.addr, request).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        text(&response)
    );
    assert_eq!(
        data_lines(body_of(&response)).last().map(String::as_str),
        Some("[DONE]")
    );
    for origin in [&failing, &healthy] {
        let request = the_one_chat_request(origin.addr).await;
        assert_eq!(request["body"], body.as_str(), "{request}");
    }
    assert_eq!(gateway.route_stats(CHAT).await["failovers"], 1);
}

#[tokio::test]
async fn ndjson_is_relayed_byte_for_byte_as_it_comes_with_no_comment_in_it() {
    let origin = origin().run();
    let gateway = gateway()
        .plugin_block(
            PLUGIN,
            json!({"endpoint": "/ndjson/{id}", "methods": ["GET", "POST"],
                   "backend_url_pattern": "/ndjson/{id}", "backend_host": origin.url(),
                   "keepalive": "20ms",
                   "forward_headers": ["X-Mock-Chunks", "X-Mock-Interval-Ms", "X-Mock-Hold-After"]}),
        )
        .run();
    let mut client = RawClient::get(
        gateway.addr,
        "/ndjson/x",
        &[
            "X-Mock-Chunks: 3",
            "X-Mock-Hold-After: 1",
            "X-Mock-Interval-Ms: 100",
        ],
    )
    .await;
    let first = text(client.read_until(b"}\n").await);
    assert!(
        first.contains("\r\nContent-Type: application/x-ndjson\r\n"),
        "{first}"
    );
    // Held after the first line: it came through alone, before the origin sent another.
    mock_release(origin.addr).await;
    let response = client.read_to_end().await;
    // Three keepalive periods pass between two lines: none was written into the stream.
    assert_eq!(
        text(body_of(&response)),
        "{\"n\":1,\"stream\":\"x\"}\n{\"n\":2,\"stream\":\"x\"}\n{\"n\":3,\"stream\":\"x\"}\n"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_generation_closes_the_upstream_within_a_second() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = gateway()
        .plugin_block(PLUGIN, chat_route(&[origin.url()], json!({})))
        .run();
    let mut client = RawClient::connect(gateway.addr).await;
    client
        .send(post(CHAT, &[], &chat_body("long answer")).as_bytes())
        .await;
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    upstream.send(b"data: {\"token\": 1}\n\n").await;
    client.read_until(b"data: {\"token\": 1}\n\n").await;
    drop(client);
    assert!(
        upstream.closed_within(Duration::from_secs(1)).await,
        "the origin's connection is closed once the client left"
    );
}

#[tokio::test]
async fn set_headers_from_the_environment_reach_the_origin_instead_of_the_client_s() {
    let origin = origin().run();
    let route = chat_route(
        &[origin.url()],
        json!({"set_headers": {"Authorization": "Bearer ${env:LLM_GATEWAY_TEST_KEY}"}}),
    );
    let gateway = gateway()
        .env("LLM_GATEWAY_TEST_KEY", "sk-from-the-gateway")
        .plugin_block(PLUGIN, route.clone())
        .run();
    let request = post(
        CHAT,
        &[
            "Authorization: Bearer sk-from-the-browser",
            "X-Mock-Interval-Ms: 0",
        ],
        &chat_body("secret"),
    );
    let response = RawClient::exchange(gateway.addr, request).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        text(&response)
    );
    let request = the_one_chat_request(origin.addr).await;
    let authorizations: Vec<&Value> = request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "authorization")
        .collect();
    assert_eq!(
        authorizations,
        [&json!(["authorization", "Bearer sk-from-the-gateway"])],
        "{request}"
    );

    // Without the variable, the config is refused, naming it and the key.
    let (ok, printed) = testkit::gateway().plugin_block(PLUGIN, route).check();
    assert!(!ok, "{printed}");
    assert!(
        printed.contains(
            "set_headers.Authorization: the environment variable LLM_GATEWAY_TEST_KEY is not set"
        ),
        "{printed}"
    );
}

/// curl sends `Expect: 100-continue` with any body over 1 KiB and waits for the interim
/// answer before it sends the body.
#[tokio::test]
async fn a_client_that_expects_100_continue_gets_it_then_its_body_goes_upstream() {
    let origin = origin().run();
    let gateway = gateway()
        .plugin_block(PLUGIN, chat_route(&[origin.url()], json!({})))
        .run();
    let body = chat_body(&"word ".repeat(300));
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nX-Mock-Interval-Ms: 0\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut client = RawClient::connect(gateway.addr).await;
    client.send(head.as_bytes()).await;
    client.read_until(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    client.send(body.as_bytes()).await;
    let response = client.read_to_end().await;
    let text = text(&response);
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(
        the_one_chat_request(origin.addr).await["body"],
        body.as_str()
    );
}
