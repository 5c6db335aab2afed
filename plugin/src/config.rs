//! The plugin's config block: the PoC's keys, exactly.
//!
//! ```json
//! "krakend-server-plugin-streaming": {
//!   "endpoint": "/sse/{id}",
//!   "backend_url_pattern": "/events-stream/{id}",
//!   "backend_host": "http://localhost:9081",
//!   "forward_headers": ["Accept", "Last-Event-ID", "Authorization", "Cookie"]
//! }
//! ```

use path_template::Template;
use serde::Deserialize;

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
    pub forward_headers: Vec<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    endpoint: Option<String>,
    backend_url_pattern: Option<String>,
    backend_host: Option<String>,
    forward_headers: Option<Vec<String>>,
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
    Ok(Route {
        endpoint,
        template,
        backend_url_pattern,
        backend_host: format!("http://{authority}"),
        forward_headers,
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
