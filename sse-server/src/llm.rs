//! An OpenAI-compatible mock, and NDJSON streams: the origins of LLM-style streaming, where
//! a `POST` with a JSON body is answered by a stream.
//!
//! `POST /v1/chat/completions` takes `model`, `messages`, `stream`, `stream_options.
//! include_usage` (and `n`, which must be 1). The reply echoes the words of the last `user`
//! message (`ok` when it has none), one word per content chunk, so that a test knows the
//! exact content. With `"stream": true` it is `text/event-stream` in the provider's format:
//! a chunk with `delta.role`, one per word, one with `finish_reason: "stop"`, a usage chunk
//! when asked, then `data: [DONE]`. With `"stream": false` it is one `chat.completion`.
//! `id` is `chatcmpl-mock-N` (N counts this origin's completions) and `created` is fixed, so
//! a reply is a function of the request and its number.
//!
//! `GET` or `POST /ndjson/{id}` streams `application/x-ndjson` lines `{"n":N,"stream":ID}`.
//!
//! A request shapes its stream with headers (a gateway forwards them like any other):
//! `X-Mock-Chunks` (words or lines, 1 to 10,000), `X-Mock-Interval-Ms` (0 to 60,000; 50 by
//! default), `X-Mock-Hold-After: K` (after K events or lines, wait for `POST /mock/release`)
//! and `X-Mock-Break-After: K` (cut the connection after K). The origin's health is a flag
//! instead (`--fail-status`), so that of two hosts behind one route only one fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::bench::OpenStream;
use crate::paced::{PacedStream, Pacing, Releases};
use crate::{event_stream, json_response, streaming, ResponseBody};

/// `created` of every reply: fixed, so that replies can be compared byte for byte.
const CREATED: u64 = 1_700_000_000;
const MAX_CHUNKS: u64 = 10_000;
const MAX_INTERVAL_MS: u64 = 60_000;
const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);
const DEFAULT_NDJSON_LINES: usize = 5;

/// Why the origin refuses a request; each maps to one status, answered as the provider's
/// error object (`{"error": {"message", "type", "param", "code"}}`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the request body is over {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body took longer than {timeout:?}")]
    BodyTimeout { timeout: Duration },
    #[error("the request body could not be read: {0}")]
    BrokenBody(String),
    #[error("{0} only")]
    Method(&'static str),
    #[error("Content-Type must be application/json")]
    NotJson,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the origin answers {0} (--fail-status)")]
    Failing(StatusCode),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::BrokenBody(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Failing(status) => *status,
        }
    }

    pub fn response(&self) -> Response<ResponseBody> {
        let status = self.status();
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = serde_json::json!({"error": {
            "message": self.to_string(), "type": kind, "param": null, "code": null,
        }});
        let mut response = json_response(status, body.to_string());
        if let Self::Method(allowed) = self {
            let allow = header::HeaderValue::from_static(allowed);
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}

/// What the mock's requests share: releases of held streams, the completion counter and
/// the failures still to answer.
pub struct Mock {
    pub releases: Releases,
    completions: AtomicU64,
    fail_status: Option<StatusCode>,
    failures_left: AtomicU64,
}

impl Mock {
    /// `fail_count` `None`: every request fails while `fail_status` is set.
    pub fn new(fail_status: Option<StatusCode>, fail_count: Option<u64>) -> Self {
        Self {
            releases: Releases::default(),
            completions: AtomicU64::new(0),
            fail_status,
            failures_left: AtomicU64::new(fail_count.unwrap_or(u64::MAX)),
        }
    }

    fn failure(&self) -> Result<(), Refusal> {
        let Some(status) = self.fail_status else {
            return Ok(());
        };
        let failing = self
            .failures_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            Err(Refusal::Failing(status))
        } else {
            Ok(())
        }
    }
}

/// The headers that shape a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Knobs {
    chunks: Option<usize>,
    pacing: Pacing,
}

impl Knobs {
    fn from_headers(headers: &HeaderMap) -> Result<Self, Refusal> {
        let number = |name: &str, range: std::ops::RangeInclusive<u64>| {
            let Some(value) = headers.get(name) else {
                return Ok(None);
            };
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| range.contains(n))
                .map(Some)
                .ok_or_else(|| {
                    Refusal::Invalid(format!(
                        "{name} takes an integer from {} to {}",
                        range.start(),
                        range.end()
                    ))
                })
        };
        let count = |name| number(name, 0..=u64::MAX).map(|n| n.map(|n| n as usize));
        Ok(Self {
            chunks: number("x-mock-chunks", 1..=MAX_CHUNKS)?.map(|n| n as usize),
            pacing: Pacing {
                interval: number("x-mock-interval-ms", 0..=MAX_INTERVAL_MS)?
                    .map_or(DEFAULT_INTERVAL, Duration::from_millis),
                hold_after: count("x-mock-hold-after")?,
                cut_after: count("x-mock-break-after")?,
            },
        })
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    n: Option<u64>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: serde_json::Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The words of a message's content: a string, or the `text` of its parts.
fn words_of(content: &serde_json::Value) -> Vec<String> {
    let texts: Vec<&str> = match content {
        serde_json::Value::String(text) => vec![text],
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text")?.as_str())
            .collect(),
        _ => Vec::new(),
    };
    texts
        .iter()
        .flat_map(|text| text.split_whitespace())
        .map(str::to_owned)
        .collect()
}

/// `POST /v1/chat/completions`.
pub fn chat(
    request: &Request<Bytes>,
    mock: &Mock,
    open: OpenStream,
) -> Result<Response<ResponseBody>, Refusal> {
    if request.method() != Method::POST {
        return Err(Refusal::Method("POST"));
    }
    mock.failure()?;
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Refusal::NotJson);
    }
    let knobs = Knobs::from_headers(request.headers())?;
    let chat: ChatRequest = serde_json::from_slice(request.body())
        .map_err(|e| Refusal::Invalid(format!("the body is not a chat request: {e}")))?;
    if chat.messages.is_empty() {
        return Err(Refusal::Invalid("messages must not be empty".into()));
    }
    if chat.n.is_some_and(|n| n != 1) {
        return Err(Refusal::Invalid("the mock answers n = 1 only".into()));
    }
    let mut words = chat
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| words_of(&m.content))
        .unwrap_or_default();
    if words.is_empty() {
        words.push("ok".into());
    }
    let reply = Reply {
        id: format!(
            "chatcmpl-mock-{}",
            mock.completions.fetch_add(1, Ordering::Relaxed) + 1
        ),
        model: chat.model,
        chunks: knobs.chunks.unwrap_or(words.len()),
        words,
        prompt_tokens: chat
            .messages
            .iter()
            .map(|m| words_of(&m.content).len())
            .sum(),
    };
    if !chat.stream {
        return Ok(json_response(StatusCode::OK, reply.completion()));
    }
    let include_usage = chat.stream_options.is_some_and(|o| o.include_usage);
    let events = ChatEvents {
        reply,
        include_usage,
        next: 0,
    };
    let body = PacedStream::new(events, knobs.pacing, &mock.releases, open);
    Ok(event_stream(body.boxed_unsync()))
}

/// `GET` or `POST /ndjson/{id}`.
pub fn ndjson(
    request: &Request<Bytes>,
    stream_id: &str,
    mock: &Mock,
    open: OpenStream,
) -> Result<Response<ResponseBody>, Refusal> {
    if request.method() != Method::GET && request.method() != Method::POST {
        return Err(Refusal::Method("GET, POST"));
    }
    mock.failure()?;
    let knobs = Knobs::from_headers(request.headers())?;
    let stream_id = stream_id.to_owned();
    let lines = (1..=knobs.chunks.unwrap_or(DEFAULT_NDJSON_LINES)).map(move |n| {
        let mut line = serde_json::json!({"stream": stream_id, "n": n}).to_string();
        line.push('\n');
        Bytes::from(line)
    });
    let body = PacedStream::new(lines, knobs.pacing, &mock.releases, open);
    Ok(streaming("application/x-ndjson", body.boxed_unsync()))
}

/// One reply's content, shared by the streamed and the whole form.
struct Reply {
    id: String,
    model: String,
    words: Vec<String>,
    /// Content chunks: the words, cycled to this many.
    chunks: usize,
    prompt_tokens: usize,
}

impl Reply {
    /// Content chunk `i`: a word, after a space but for the first.
    fn piece(&self, i: usize) -> String {
        let word = &self.words[i % self.words.len()];
        if i == 0 {
            word.clone()
        } else {
            format!(" {word}")
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.chunks,
            total_tokens: self.prompt_tokens + self.chunks,
        }
    }

    fn completion(&self) -> String {
        let content: String = (0..self.chunks).map(|i| self.piece(i)).collect();
        let completion = serde_json::json!({
            "id": self.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": self.usage(),
            "system_fingerprint": "fp_mock",
        });
        completion.to_string()
    }
}

/// A `chat.completion.chunk`, its fields in the provider's order.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice>,
    /// Absent unless usage was asked for; then `null` on every chunk but the usage one.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice {
    index: u32,
    delta: Delta,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

/// The events of a streamed reply, made one at a time as the stream is paced.
struct ChatEvents {
    reply: Reply,
    include_usage: bool,
    /// 0: the role chunk; 1..=chunks: content; then the finish, usage and `[DONE]`.
    next: usize,
}

impl ChatEvents {
    fn chunk(&self, choice: Option<ChunkChoice>, usage: Option<Usage>) -> Bytes {
        let chunk = Chunk {
            id: &self.reply.id,
            object: "chat.completion.chunk",
            created: CREATED,
            model: &self.reply.model,
            system_fingerprint: "fp_mock",
            choices: choice.into_iter().collect(),
            usage: self.include_usage.then_some(usage),
        };
        let json = serde_json::to_string(&chunk).expect("a chunk serializes");
        Bytes::from(format!("data: {json}\n\n"))
    }
}

impl Iterator for ChatEvents {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let chunks = self.reply.chunks;
        let choice = |delta, finish_reason| ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        };
        let i = self.next;
        self.next += 1;
        let event = match i {
            0 => self.chunk(
                Some(choice(
                    Delta {
                        role: Some("assistant"),
                        content: Some(String::new()),
                    },
                    None,
                )),
                None,
            ),
            i if i <= chunks => {
                let content = Some(self.reply.piece(i - 1));
                self.chunk(
                    Some(choice(
                        Delta {
                            role: None,
                            content,
                        },
                        None,
                    )),
                    None,
                )
            }
            i if i == chunks + 1 => self.chunk(Some(choice(Delta::default(), Some("stop"))), None),
            i if i == chunks + 2 && self.include_usage => {
                self.chunk(None, Some(self.reply.usage()))
            }
            i if i == chunks + 2 + usize::from(self.include_usage) => {
                Bytes::from_static(b"data: [DONE]\n\n")
            }
            _ => return None,
        };
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(words: &[&str], chunks: usize) -> Reply {
        Reply {
            id: "chatcmpl-mock-1".into(),
            model: "m".into(),
            words: words.iter().map(|w| w.to_string()).collect(),
            chunks,
            prompt_tokens: 2,
        }
    }

    fn events(reply: Reply, include_usage: bool) -> Vec<String> {
        ChatEvents {
            reply,
            include_usage,
            next: 0,
        }
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect()
    }

    #[test]
    fn a_streamed_reply_is_in_the_providers_format() {
        let head = r#"data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":"#;
        assert_eq!(
            events(reply(&["hello", "world"], 3), false),
            [
                format!(
                    r#"{head}{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#
                ) + "\n\n",
                format!(r#"{head}{{"content":"hello"}},"logprobs":null,"finish_reason":null}}]}}"#)
                    + "\n\n",
                format!(
                    r#"{head}{{"content":" world"}},"logprobs":null,"finish_reason":null}}]}}"#
                ) + "\n\n",
                format!(
                    r#"{head}{{"content":" hello"}},"logprobs":null,"finish_reason":null}}]}}"#
                ) + "\n\n",
                format!(r#"{head}{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#) + "\n\n",
                "data: [DONE]\n\n".to_owned(),
            ]
        );
    }

    #[test]
    fn usage_is_null_on_each_chunk_then_a_chunk_of_its_own() {
        let all = events(reply(&["hi"], 1), true);
        assert_eq!(all.len(), 5);
        assert!(
            all[..3].iter().all(|e| e.ends_with(",\"usage\":null}\n\n")),
            "{all:?}"
        );
        assert!(
            all[3].contains(r#""choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#),
            "{}",
            all[3]
        );
        assert_eq!(all[4], "data: [DONE]\n\n");
    }

    #[test]
    fn a_whole_reply_holds_the_same_content() {
        let completion: serde_json::Value =
            serde_json::from_str(&reply(&["a", "b"], 3).completion()).unwrap();
        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["choices"][0]["message"]["content"], "a b a");
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
        assert_eq!(completion["usage"]["total_tokens"], 5);
    }

    #[test]
    fn words_come_from_a_string_or_text_parts() {
        assert_eq!(words_of(&"  two\twords ".into()), ["two", "words"]);
        let parts = serde_json::json!([{"type": "text", "text": "a b"}, {"type": "image_url"}, {"type": "text", "text": "c"}]);
        assert_eq!(words_of(&parts), ["a", "b", "c"]);
        assert!(words_of(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn knobs_are_read_and_bounded() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            Knobs::from_headers(&map)
        };
        assert_eq!(
            headers(&[]).unwrap(),
            Knobs {
                chunks: None,
                pacing: Pacing {
                    interval: DEFAULT_INTERVAL,
                    hold_after: None,
                    cut_after: None
                }
            }
        );
        let knobs = headers(&[
            ("x-mock-chunks", "7"),
            ("x-mock-interval-ms", "0"),
            ("x-mock-hold-after", "1"),
            ("x-mock-break-after", "2"),
        ])
        .unwrap();
        assert_eq!(knobs.chunks, Some(7));
        assert_eq!(knobs.pacing.interval, Duration::ZERO);
        assert_eq!(knobs.pacing.hold_after, Some(1));
        assert_eq!(knobs.pacing.cut_after, Some(2));
        for bad in [
            ("x-mock-chunks", "0"),
            ("x-mock-chunks", "10001"),
            ("x-mock-interval-ms", "60001"),
            ("x-mock-break-after", "-1"),
            ("x-mock-hold-after", "soon"),
        ] {
            assert!(
                matches!(headers(&[bad]), Err(Refusal::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn failures_are_answered_the_given_number_of_times() {
        let mock = Mock::new(Some(StatusCode::SERVICE_UNAVAILABLE), Some(2));
        assert!(matches!(mock.failure(), Err(Refusal::Failing(s)) if s == 503));
        assert!(mock.failure().is_err());
        assert!(mock.failure().is_ok());
        assert!(Mock::new(None, None).failure().is_ok());
    }
}
