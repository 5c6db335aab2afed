//! What the origin received: each request's body read within bounds, and the last requests
//! kept for tests to inspect at `GET /mock/requests` ("the origin saw exactly one POST, with
//! exactly this body").
//!
//! hyper parses the body's framing (Content-Length or chunked); here it is bounded in size
//! (413 past `max_body_bytes`, checked on the declared length before anything is read) and
//! in time (408 past `body_timeout`).

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::llm::Refusal;

/// Reads a whole request body, or says why not.
pub async fn read_body<B>(
    head: &Parts,
    body: B,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(Refusal::BodyTooLarge { limit: max_bytes });
    }
    match tokio::time::timeout(timeout, Limited::new(body, max_bytes).collect()).await {
        Err(_) => Err(Refusal::BodyTimeout { timeout }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Refusal::BodyTooLarge { limit: max_bytes }),
        Ok(Err(e)) => Err(Refusal::BrokenBody(e.to_string())),
    }
}

/// One request as it arrived.
struct Received {
    method: String,
    /// Path and query, as in the request line.
    target: String,
    headers: Vec<(String, String)>,
    /// `None` when the body was refused (too large, too slow, broken framing).
    body: Option<Bytes>,
}

/// The last `capacity` requests and how many arrived in all.
pub struct ReceivedLog {
    capacity: usize,
    state: Mutex<(u64, VecDeque<Received>)>,
}

impl ReceivedLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new((0, VecDeque::with_capacity(capacity.min(1024)))),
        }
    }

    pub fn record(&self, head: &Parts, body: Option<&Bytes>) {
        let received = Received {
            method: head.method.to_string(),
            target: head
                .uri
                .path_and_query()
                .map_or_else(|| head.uri.to_string(), |p| p.to_string()),
            headers: head
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.to_string(), value)
                })
                .collect(),
            body: body.cloned(),
        };
        let mut state = self.state.lock().expect("the log lock is never poisoned");
        let (total, kept) = &mut *state;
        *total += 1;
        if self.capacity == 0 {
            return;
        }
        if kept.len() == self.capacity {
            kept.pop_front();
        }
        kept.push_back(received);
    }

    /// `{"total": N, "requests": [{"method", "target", "headers": [[name, value]...],
    /// "body"}...]}`, oldest first. `body` is the text of a UTF-8 body; any other body is
    /// `null` with `body_hex` beside it; a refused body is `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let state = self.state.lock().expect("the log lock is never poisoned");
        let (total, kept) = &*state;
        let requests: Vec<_> = kept
            .iter()
            .map(|r| {
                let mut entry = serde_json::json!({
                    "method": r.method,
                    "target": r.target,
                    "headers": r.headers,
                    "body": null,
                });
                if let Some(body) = &r.body {
                    match std::str::from_utf8(body) {
                        Ok(text) => entry["body"] = text.into(),
                        Err(_) => entry["body_hex"] = hex(body).into(),
                    }
                }
                entry
            })
            .collect();
        serde_json::json!({ "total": total, "requests": requests })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn head(content_length: Option<&str>) -> Parts {
        let mut request = http::Request::post("/v1/chat/completions?x=1").header("x-a", "1");
        if let Some(len) = content_length {
            request = request.header(CONTENT_LENGTH, len);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn bodies_are_bounded_by_their_declared_and_their_real_length() {
        let read = |len: Option<&'static str>, body: &'static [u8]| async move {
            read_body(&head(len), Full::new(Bytes::from_static(body)), 4, STEP).await
        };
        const STEP: Duration = Duration::from_secs(5);
        assert_eq!(read(Some("4"), b"abcd").await.unwrap(), "abcd");
        assert_eq!(read(None, b"abcd").await.unwrap(), "abcd");
        assert!(matches!(
            read(Some("5"), b"").await,
            Err(Refusal::BodyTooLarge { limit: 4 })
        ));
        assert!(matches!(
            read(None, b"abcde").await,
            Err(Refusal::BodyTooLarge { limit: 4 })
        ));
    }

    #[test]
    fn the_log_keeps_the_last_requests_and_counts_all() {
        let log = ReceivedLog::new(2);
        log.record(&head(None), Some(&Bytes::from_static(b"one")));
        log.record(&head(None), None);
        log.record(&head(None), Some(&Bytes::from_static(b"\xff\x00")));
        let json = log.to_json();
        assert_eq!(json["total"], 3);
        let requests = json["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0]["body"], serde_json::Value::Null);
        assert_eq!(requests[0].get("body_hex"), None);
        assert_eq!(requests[1]["body_hex"], "ff00");
        assert_eq!(requests[1]["method"], "POST");
        assert_eq!(requests[1]["target"], "/v1/chat/completions?x=1");
        assert_eq!(requests[1]["headers"], serde_json::json!([["x-a", "1"]]));
    }
}
