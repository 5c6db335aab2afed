//! The plugin's config block: the PoC's keys, exactly.
//!
//! ```json
//! "krakend-server-plugin-streaming": {
//!   "endpoint": "/sse/{id}",
//!   "backend_url_pattern": "/events-stream/{id}",
//!   "backend_host": "http://localhost:9081",
//!   "forward_headers": ["Accept", "Last-Event-ID", "Authorization", "Cookie"],
//!   "read_buffer_bytes": 8192,
//!   "max_pooled_buffers": 128
//! }
//! ```

use path_template::Template;
use serde::Deserialize;

/// Each stream's read buffer: large enough for a burst of events per read and for the
/// upstream's response head, small enough to keep idle streams cheap.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 8 * 1024;
const MIN_READ_BUFFER_BYTES: usize = 1024;
/// Free read buffers kept for reuse (1 MiB at the default buffer size).
pub const DEFAULT_MAX_POOLED_BUFFERS: usize = 128;

/// Headers passed upstream when the config lists none.
pub const DEFAULT_FORWARD_HEADERS: [&str; 4] =
    ["Accept", "Last-Event-ID", "Authorization", "Cookie"];

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    pub endpoint: String,
    pub template: Template,
    pub backend_url_pattern: String,
    /// `http://host:port`, without a trailing slash.
    pub backend_host: String,
    /// `host:port` as configured, for the `Host` header.
    pub backend_authority: String,
    /// `host:port` to connect to (port 80 when the URL names none).
    pub backend_addr: String,
    pub forward_headers: Vec<String>,
    pub read_buffer_bytes: usize,
    pub max_pooled_buffers: usize,
}

#[derive(Deserialize)]
struct RawRoute {
    endpoint: Option<String>,
    backend_url_pattern: Option<String>,
    backend_host: Option<String>,
    forward_headers: Option<Vec<String>>,
    read_buffer_bytes: Option<usize>,
    max_pooled_buffers: Option<usize>,
}

/// Parses and validates the block; the error names the key and the reason.
pub fn parse(json: &str) -> Result<Route, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let raw: RawRoute = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    let endpoint = required("endpoint", raw.endpoint)?;
    let template = Template::parse(&endpoint).map_err(|e| format!("endpoint: {endpoint:?} {e}"))?;
    let backend_url_pattern = required("backend_url_pattern", raw.backend_url_pattern)?;
    if !backend_url_pattern.starts_with('/') {
        return Err(format!(
            "backend_url_pattern: {backend_url_pattern:?} must start with '/'"
        ));
    }
    let backend_host = required("backend_host", raw.backend_host)?;
    let authority = backend_host
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']))
        .ok_or_else(|| {
            format!("backend_host: {backend_host:?} is not an http:// URL (scheme and host only)")
        })?;
    let forward_headers = raw
        .forward_headers
        .unwrap_or_else(|| DEFAULT_FORWARD_HEADERS.map(String::from).to_vec());
    if let Some(bad) = forward_headers
        .iter()
        .find(|name| http::HeaderName::from_bytes(name.as_bytes()).is_err())
    {
        return Err(format!("forward_headers: {bad:?} is not a header name"));
    }
    let read_buffer_bytes = raw.read_buffer_bytes.unwrap_or(DEFAULT_READ_BUFFER_BYTES);
    if read_buffer_bytes < MIN_READ_BUFFER_BYTES {
        return Err(format!("read_buffer_bytes: {read_buffer_bytes} is below the minimum of {MIN_READ_BUFFER_BYTES}"));
    }
    let has_port = !authority.ends_with(']') && authority.contains(':');
    let backend_addr = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Route {
        endpoint,
        template,
        backend_url_pattern,
        backend_host: format!("http://{authority}"),
        backend_authority: authority.to_owned(),
        backend_addr,
        forward_headers,
        read_buffer_bytes,
        max_pooled_buffers: raw.max_pooled_buffers.unwrap_or(DEFAULT_MAX_POOLED_BUFFERS),
    })
}

fn required(key: &str, value: Option<String>) -> Result<String, String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(format!("{key}: must not be empty")),
        None => Err(format!("{key}: missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POC: &str = r#"{"endpoint": "/sse/{id}", "backend_url_pattern": "/events-stream/{id}", "backend_host": "http://localhost:9081"}"#;

    #[test]
    fn accepts_the_poc_block() {
        let route = parse(POC).unwrap();
        assert_eq!(route.backend_host, "http://localhost:9081");
        assert_eq!(route.backend_addr, "localhost:9081");
        assert_eq!(route.read_buffer_bytes, DEFAULT_READ_BUFFER_BYTES);
        let portless = parse(&POC.replace("localhost:9081", "origin.internal")).unwrap();
        assert_eq!(
            (
                portless.backend_authority.as_str(),
                portless.backend_addr.as_str()
            ),
            ("origin.internal", "origin.internal:80")
        );
        assert_eq!(route.forward_headers, DEFAULT_FORWARD_HEADERS);
        assert!(route.template.matches("/sse/abc").is_some());
    }

    #[test]
    fn refuses_with_the_reason() {
        let cases = [
            (
                r#"{"backend_url_pattern": "/e", "backend_host": "http://h"}"#,
                "endpoint: missing",
            ),
            (
                r#"{"endpoint": "", "backend_url_pattern": "/e", "backend_host": "http://h"}"#,
                "endpoint: must not be empty",
            ),
            (
                r#"{"endpoint": "/s", "backend_host": "http://h"}"#,
                "backend_url_pattern: missing",
            ),
            (
                r#"{"endpoint": "/s", "backend_url_pattern": "/e"}"#,
                "backend_host: missing",
            ),
            (
                r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "ftp://h"}"#,
                "is not an http:// URL",
            ),
            (
                r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h/path"}"#,
                "is not an http:// URL",
            ),
            (
                r#"{"endpoint": 5, "backend_url_pattern": "/e", "backend_host": "http://h"}"#,
                "endpoint: invalid type",
            ),
            (
                r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h", "forward_headers": "Accept"}"#,
                "forward_headers: invalid type",
            ),
        ];
        for (json, expected) in cases {
            let error = parse(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
