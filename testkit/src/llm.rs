//! LLM-style clients and the mock origin's inspection endpoints.
//!
//! The clients are the real ones, each in a child process that prints what it received as
//! JSON lines, flushed as they come, so that a test can act between two chunks:
//! - the official OpenAI Python SDK, `host/tests/llm/openai_chat.py`, run by the python of
//!   the venv `scripts/test-deps.sh` makes (`$OPENAI_PYTHON`, else
//!   `~/.cache/openai-python/bin/python`);
//! - `@microsoft/fetch-event-source` in headless Chromium,
//!   `host/tests/browser/fetch-event-source.cjs` (Node, with [`crate::page`]'s NODE_PATH).
//!
//! The spec each script takes is described at its top.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a client may take to print its next line: Chromium can take seconds to start
/// on a loaded machine.
const CLIENT_STEP: Duration = Duration::from_secs(60);

/// A running client and the lines it printed, read one at a time.
pub struct ClientReports {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    name: &'static str,
}

impl ClientReports {
    fn spawn(name: &'static str, mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({e}): run scripts/test-deps.sh"));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            lines,
            name,
        }
    }

    /// The next report, or `None` once the client exited.
    pub async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(CLIENT_STEP, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{} said nothing for {CLIENT_STEP:?}", self.name))
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.name))?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "{} printed a line that is not JSON ({e}): {line}",
                self.name
            )
        }))
    }

    /// Every report up to the last, `{"done": true}` (not included) or the client's exit.
    pub async fn rest(mut self) -> Vec<Value> {
        let mut reports = Vec::new();
        while let Some(report) = self.next().await {
            if report["done"] == true {
                break;
            }
            reports.push(report);
        }
        reports
    }
}

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host/tests")
}

/// One chat completion by the OpenAI Python SDK: `{"chunk": ...}` per chunk or
/// `{"completion": ...}`, or `{"error", "status", "message"}`.
pub fn openai_chat(spec: &Value) -> ClientReports {
    let python = std::env::var_os("OPENAI_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/openai-python/bin/python")
        },
        PathBuf::from,
    );
    let mut command = Command::new(python);
    command
        .arg(tests_dir().join("llm/openai_chat.py"))
        .arg(spec.to_string());
    ClientReports::spawn("the OpenAI SDK", command)
}

/// One request by `fetchEventSource` in a page at `spec.page_url`: `{"open", "content_type"}`,
/// then `{"message": {"id", "event", "data"}}` per event, then `{"closed": true}`, or
/// `{"error"}`.
pub fn fetch_event_source(spec: &Value) -> ClientReports {
    let mut command = Command::new("node");
    command
        .arg(tests_dir().join("browser/fetch-event-source.cjs"))
        .arg(spec.to_string())
        .env("NODE_PATH", crate::page::node_path());
    ClientReports::spawn("fetch-event-source in Chromium", command)
}

/// What a mock origin (`sse-server`) received: `{"total", "requests": [{"method",
/// "target", "headers", "body"}...]}`.
pub async fn mock_requests(origin: SocketAddr) -> Value {
    crate::get_json(origin, "/mock/requests").await
}

/// A chat's `messages`: a system prompt, then `words` from the user (the mock echoes them).
pub fn chat_messages(words: &str) -> Value {
    serde_json::json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": words}])
}

/// The spec of one [`openai_chat`] at `base_url` (`.../v1`), for the words "the quick
/// brown fox", with `headers` on the request.
pub fn sdk_spec(base_url: &str, stream: bool, headers: Value) -> Value {
    serde_json::json!({
        "base_url": base_url,
        "model": "mock-1",
        "messages": chat_messages("the quick brown fox"),
        "stream": stream,
        "headers": headers,
    })
}

/// The content of a streamed chunk's first choice, if it has one.
pub fn chunk_content(report: &Value) -> Option<&str> {
    report["chunk"]["choices"][0]["delta"]["content"].as_str()
}

/// The one request a mock origin saw, a `POST /v1/chat/completions` (it fails the test
/// otherwise).
pub async fn the_one_chat_request(origin: SocketAddr) -> Value {
    let seen = mock_requests(origin).await;
    assert_eq!(seen["total"], 1, "{seen}");
    let request = &seen["requests"][0];
    assert_eq!(request["method"], "POST", "{request}");
    assert_eq!(request["target"], "/v1/chat/completions", "{request}");
    request.clone()
}

/// A streamed completion by the SDK from a request that `spec` sends with
/// `X-Mock-Hold-After: 1`: the first chunk (the role's) is read while the origin holds the
/// rest, which proves it arrived live, then the origin is released. Every chunk, in order.
pub async fn sdk_stream_live(spec: &Value, origin: SocketAddr) -> Vec<Value> {
    assert_eq!(spec["headers"]["X-Mock-Hold-After"], "1", "{spec}");
    let mut sdk = openai_chat(spec);
    let first = sdk.next().await.expect("a first chunk");
    assert_eq!(
        first["chunk"]["choices"][0]["delta"]["role"], "assistant",
        "{first}"
    );
    // The origin holds every chunk after the first until this release: the SDK handed the
    // first one over before the origin sent the second.
    mock_release(origin).await;
    std::iter::once(first).chain(sdk.rest().await).collect()
}

/// Lets one stream held by `X-Mock-Hold-After` go on.
pub async fn mock_release(origin: SocketAddr) {
    let request = "POST /mock/release HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let response = crate::RawClient::exchange(origin, request).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
}
