//! The real LLM clients against `sse-server`'s OpenAI-compatible mock, with no gateway in
//! between: the official OpenAI Python SDK streaming (live: the first chunk arrives while
//! the origin holds the second), not streaming, and seeing a cut stream; and
//! `@microsoft/fetch-event-source` in headless Chromium POSTing for a stream. These pin
//! what each client does with the mock, so that the gateway's tests can expect the same
//! through it. `scripts/test-deps.sh` installs both clients.

use serde_json::{json, Value};
use testkit::{
    chat_messages as messages, chunk_content as content, fetch_event_source, mock_release,
    openai_chat, origin, sdk_stream_live, the_one_chat_request, Process,
};

fn sdk_spec(origin: &Process, stream: bool, headers: Value) -> Value {
    testkit::sdk_spec(&format!("{}/v1", origin.url()), stream, headers)
}

/// The one request the origin saw: a chat completion.
async fn the_one_request(origin: &Process) -> Value {
    the_one_chat_request(origin.addr).await
}

#[tokio::test]
async fn the_openai_sdk_streams_every_chunk_live() {
    let origin = origin().run();
    let spec = sdk_spec(
        &origin,
        true,
        json!({"X-Mock-Hold-After": "1", "X-Mock-Interval-Ms": "0"}),
    );
    let chunks = sdk_stream_live(&spec, origin.addr).await;
    let rest = &chunks[1..];
    assert!(
        chunks
            .iter()
            .all(|c| c["chunk"]["object"] == "chat.completion.chunk"),
        "{rest:?}"
    );
    assert!(
        chunks.iter().all(|c| c["chunk"]["id"] == "chatcmpl-mock-1"),
        "{rest:?}"
    );
    assert!(
        chunks.iter().all(|c| c["chunk"]["model"] == "mock-1"),
        "{rest:?}"
    );
    let text: String = chunks.iter().filter_map(|c| content(c)).collect();
    assert_eq!(text, "the quick brown fox");
    assert_eq!(
        chunks.len(),
        1 + 4 + 1,
        "role, one chunk per word, finish: {rest:?}"
    );
    let last = chunks.last().unwrap();
    assert_eq!(
        last["chunk"]["choices"][0]["finish_reason"], "stop",
        "{last}"
    );

    let request = the_one_request(&origin).await;
    let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"model": "mock-1", "messages": messages("the quick brown fox"), "stream": true})
    );
    let headers = request["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["authorization", "Bearer test-key"])),
        "{headers:?}"
    );
    assert!(
        headers.contains(&json!(["content-type", "application/json"])),
        "{headers:?}"
    );
}

#[tokio::test]
async fn the_openai_sdk_gets_one_completion_without_streaming() {
    let origin = origin().run();
    let reports = openai_chat(&sdk_spec(&origin, false, json!({"X-Mock-Chunks": "6"})))
        .rest()
        .await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let completion = &reports[0]["completion"];
    assert_eq!(completion["object"], "chat.completion", "{completion}");
    assert_eq!(
        completion["choices"][0]["message"]["content"], "the quick brown fox the quick",
        "six chunks: the words again from the start"
    );
    assert_eq!(completion["usage"]["completion_tokens"], 6);
    let body = the_one_request(&origin).await["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["stream"],
        false
    );
}

/// What the gateway's no-resume rule relies on: a stream cut after two events reaches the
/// SDK as those two chunks and an error, and the SDK does not send the request again.
#[tokio::test]
async fn the_openai_sdk_reports_a_cut_stream_after_the_chunks_it_got() {
    let origin = origin().run();
    let mut spec = sdk_spec(&origin, true, json!({"X-Mock-Break-After": "2"}));
    spec["max_retries"] = json!(2);
    let reports = openai_chat(&spec).rest().await;
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert_eq!(content(&reports[1]), Some("the"), "{reports:?}");
    assert_eq!(reports[2]["error"], "APIConnectionError", "{reports:?}");
    the_one_request(&origin).await;
}

#[tokio::test]
async fn fetch_event_source_in_chromium_posts_and_streams_live() {
    let origin = origin().run();
    let body = json!({"model": "mock-1", "messages": messages("hello browser"), "stream": true})
        .to_string();
    // The page is at the origin's own address (the driver serves it there), so this POST is
    // same-origin: the gateway's tests put the page elsewhere to go through CORS.
    let mut page = fetch_event_source(&json!({
        "page_url": format!("{}/page.html", origin.url()),
        "url": format!("{}/v1/chat/completions", origin.url()),
        "headers": {"Content-Type": "application/json", "X-Mock-Hold-After": "1"},
        "body": body,
    }));
    let open = page.next().await.expect("the response head");
    assert_eq!(
        open,
        json!({"open": 200, "content_type": "text/event-stream"})
    );
    let first = page.next().await.expect("a first event");
    let first: Value = serde_json::from_str(first["message"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    mock_release(origin.addr).await;
    let rest = page.rest().await;
    let data: Vec<&str> = rest
        .iter()
        .map_while(|r| r["message"]["data"].as_str())
        .collect();
    assert_eq!(data.len(), 4, "two words, finish, [DONE]: {rest:?}");
    let text: String = data[..2]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "hello browser");
    assert_eq!(data[3], "[DONE]");
    assert_eq!(rest[4..], [json!({"closed": true})], "{rest:?}");

    let request = the_one_request(&origin).await;
    assert_eq!(
        request["body"],
        body.as_str(),
        "the body exactly as the page sent it"
    );
    let headers = request["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["accept", "text/event-stream"])),
        "{headers:?}"
    );
}
