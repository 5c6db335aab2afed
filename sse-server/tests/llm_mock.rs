//! The LLM-style mock of the real `sse-server` binary, on the wire: a chat stream is one
//! HTTP chunk per event, held until released; request bodies by Content-Length or chunked
//! are recorded exactly; the refusals (413, 400, 415, 405); NDJSON lines; a stream cut after
//! K lines; a held stream closed when its client leaves; `--fail-status`.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

use testkit::{body_of, get_json, mock_release, mock_requests, origin, RawClient, STEP};

const CHAT: &str = "/v1/chat/completions";

/// A request with a Content-Length body, and `extra` header lines.
fn post(path: &str, body: &str, extra: &[&str]) -> String {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request + "\r\n" + body
}

/// The payload of each chunk of a chunked body, and whether the body's last chunk came.
fn chunks_of(body: &[u8]) -> (Vec<String>, bool) {
    let mut decoder = chunked::Decoder::default();
    let mut chunks = Vec::new();
    decoder
        .decode(body, |range| {
            chunks.push(String::from_utf8(body[range].to_vec()).unwrap())
        })
        .expect("a valid chunked body");
    (chunks, decoder.is_done())
}

fn chat_body(words: &str, stream: bool) -> String {
    json!({"model": "mock-1", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": words},
    ], "stream": stream})
    .to_string()
}

#[tokio::test]
async fn a_chat_stream_is_one_chunk_per_event_and_waits_for_its_release() {
    let origin = origin().run();
    let body = chat_body("alpha beta", true);
    let mut client = RawClient::connect(origin.addr).await;
    client
        .send(
            post(
                CHAT,
                &body,
                &["X-Mock-Hold-After: 1", "X-Mock-Interval-Ms: 0"],
            )
            .as_bytes(),
        )
        .await;
    let first = client.read_until(b"\n\n").await.to_vec();
    let head = String::from_utf8_lossy(&first[..first.len() - body_of(&first).len()]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    // The stream is held after its first event: nothing else can have been sent.
    assert_eq!(chunks_of(body_of(&first)).0.len(), 1);
    mock_release(origin.addr).await;
    let response = client.read_to_end().await;
    let (chunks, ended) = chunks_of(body_of(&response));
    assert!(ended, "the body ends with its last chunk");
    let prefix = r#"data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"mock-1","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":"#;
    let event = |delta: &str, finish: &str| {
        format!(r#"{prefix}{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#) + "\n\n"
    };
    assert_eq!(
        chunks,
        [
            event(r#"{"role":"assistant","content":""}"#, "null"),
            event(r#"{"content":"alpha"}"#, "null"),
            event(r#"{"content":" beta"}"#, "null"),
            event("{}", r#""stop""#),
            "data: [DONE]\n\n".to_owned(),
        ]
    );
    let seen = mock_requests(origin.addr).await;
    assert_eq!(seen["total"], 1);
    assert_eq!(seen["requests"][0]["method"], "POST");
    assert_eq!(seen["requests"][0]["target"], CHAT);
    assert_eq!(seen["requests"][0]["body"], body.as_str());
}

#[tokio::test]
async fn a_chunked_request_body_is_read_whole_and_recorded_exactly() {
    let origin = origin().run();
    let body = chat_body("one two three", false);
    let (a, b) = body.split_at(10);
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let response = RawClient::exchange(origin.addr, request).await;
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let completion: Value = serde_json::from_slice(body_of(&response)).unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["id"], "chatcmpl-mock-1");
    assert_eq!(completion["model"], "mock-1");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "one two three"
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    let seen = mock_requests(origin.addr).await;
    assert_eq!(seen["total"], 1);
    assert_eq!(seen["requests"][0]["body"], body.as_str());
    let headers = seen["requests"][0]["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["transfer-encoding", "chunked"])),
        "{headers:?}"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_providers_error_object() {
    let origin = origin().run();
    let status_of = |response: &[u8]| {
        let text = String::from_utf8_lossy(response);
        let error: Value =
            serde_json::from_slice(body_of(response)).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(error["error"]["message"].is_string(), "{text}");
        text[9..12].to_owned()
    };
    let over = "x".repeat(1024 * 1024 + 1);
    // The declared length alone is refused: the body is never sent.
    let head_only = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        over.len()
    );
    assert_eq!(
        status_of(&RawClient::exchange(origin.addr, head_only).await),
        "413"
    );
    let chunked = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{over}\r\n0\r\n\r\n",
        over.len()
    );
    assert_eq!(
        status_of(&RawClient::exchange(origin.addr, chunked).await),
        "413"
    );
    for (request, status) in [
        (post(CHAT, "{\"model\": ", &[]), "400"),
        (post(CHAT, r#"{"model":"m","messages":[]}"#, &[]), "400"),
        (
            post(CHAT, &chat_body("a", true), &["X-Mock-Chunks: 0"]),
            "400",
        ),
        (
            post(CHAT, &chat_body("a", true), &[]).replace("application/json", "text/plain"),
            "415",
        ),
        (
            format!("GET {CHAT} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n"),
            "405",
        ),
    ] {
        let response = RawClient::exchange(origin.addr, &request).await;
        assert_eq!(status_of(&response), status, "{request}");
    }
    let seen = mock_requests(origin.addr).await;
    assert_eq!(
        seen["total"], 7,
        "every request is recorded, refused ones too"
    );
    assert_eq!(
        seen["requests"][0]["body"],
        Value::Null,
        "a refused body is not kept"
    );
}

#[tokio::test]
async fn ndjson_streams_are_chunked_lines_and_can_be_cut() {
    let origin = origin().run();
    let get = |extra: &str| {
        format!("GET /ndjson/n1 HTTP/1.1\r\nHost: mock\r\nX-Mock-Chunks: 3\r\nX-Mock-Interval-Ms: 0\r\n{extra}Connection: close\r\n\r\n")
    };
    let whole = RawClient::exchange(origin.addr, get("")).await;
    assert!(whole.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(String::from_utf8_lossy(&whole).contains("content-type: application/x-ndjson\r\n"));
    let line = |n: u32| format!("{{\"n\":{n},\"stream\":\"n1\"}}\n");
    assert_eq!(
        chunks_of(body_of(&whole)),
        (vec![line(1), line(2), line(3)], true)
    );

    let cut = RawClient::exchange(origin.addr, get("X-Mock-Break-After: 2\r\n")).await;
    assert_eq!(
        chunks_of(body_of(&cut)),
        (vec![line(1), line(2)], false),
        "two lines, then the connection closed without the last chunk"
    );

    let posted = RawClient::exchange(
        origin.addr,
        post("/ndjson/n1", "{\"q\":1}", &["X-Mock-Chunks: 1"]),
    )
    .await;
    assert_eq!(chunks_of(body_of(&posted)), (vec![line(1)], true));
    assert_eq!(
        mock_requests(origin.addr).await["requests"][2]["body"],
        "{\"q\":1}"
    );
}

#[tokio::test]
async fn fail_status_answers_the_first_requests_then_the_origin_serves() {
    let origin = origin().fail_status(503).fail_count(1).run();
    let request = post(CHAT, &chat_body("hi", false), &[]);
    let failed = RawClient::exchange(origin.addr, &request).await;
    assert!(
        failed.starts_with(b"HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&failed)
    );
    let error: Value = serde_json::from_slice(body_of(&failed)).unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    let served = RawClient::exchange(origin.addr, &request).await;
    assert!(served.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let seen = mock_requests(origin.addr).await;
    assert_eq!(seen["total"], 2);
    assert_eq!(seen["requests"][0]["body"], seen["requests"][1]["body"]);
}

/// What the gateway's "a client that leaves stops the generation" tests observe.
#[tokio::test]
async fn a_held_stream_closes_at_the_origin_when_its_client_leaves() {
    let origin = origin().run();
    let mut client = RawClient::connect(origin.addr).await;
    let request = post(CHAT, &chat_body("a b", true), &["X-Mock-Hold-After: 1"]);
    client.send(request.as_bytes()).await;
    client.read_until(b"\n\n").await;
    assert_eq!(get_json(origin.addr, "/stats").await["open_streams"], 1);
    drop(client);
    let deadline = Instant::now() + STEP;
    while get_json(origin.addr, "/stats").await["open_streams"] != 0 {
        assert!(Instant::now() < deadline, "the held stream stayed open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
