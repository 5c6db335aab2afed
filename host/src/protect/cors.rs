//! CORS, root `extra_config."security/cors"`: preflights answered by the host, and the
//! `Access-Control-*` headers added to every response of an allowed origin, hijacked
//! streams included.
//!
//! `Origin: null` is what sandboxed iframes, `data:` and `file:` pages send: any page can
//! make itself one, so `*` never allows it; only a listed `"null"` does.

use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;

use super::{Answer, RequestInfo, ResponseHeader};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    allow_origins: Option<Vec<String>>,
    allow_methods: Option<Vec<String>>,
    allow_headers: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    max_age: Option<Duration>,
    #[serde(default)]
    allow_credentials: bool,
}

#[derive(Debug, Clone)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<String>,
    /// Lower case; `*` allows any.
    headers: Vec<String>,
    expose: String,
    max_age_secs: u64,
    credentials: bool,
}

pub enum Outcome {
    Preflight(Answer),
    Headers(Vec<ResponseHeader>),
}

impl Cors {
    pub fn new(config: CorsConfig) -> Self {
        let origins = config.allow_origins.unwrap_or_else(|| vec!["*".into()]);
        Self {
            any_origin: origins.iter().any(|o| o == "*"),
            origins,
            methods: config
                .allow_methods
                .unwrap_or_else(|| ["GET", "HEAD", "POST"].map(String::from).to_vec())
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            headers: config
                .allow_headers
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose: config.expose_headers.unwrap_or_default().join(", "),
            max_age_secs: config
                .max_age
                .unwrap_or(Duration::from_secs(12 * 3600))
                .as_secs(),
            credentials: config.allow_credentials,
        }
    }

    /// What this setting allows that it probably should not, for `run` and `check`.
    pub fn warning(&self) -> Option<&'static str> {
        (self.any_origin && self.credentials).then_some(
            "security/cors: allow_origins [\"*\"] with allow_credentials reflects every \
             origin with credentials: any web site can read what its visitors' cookies \
             give access to; list the origins instead",
        )
    }

    pub fn check(&self, request: &RequestInfo<'_>) -> Outcome {
        let Some(origin) = request
            .headers
            .get("origin")
            .and_then(|o| std::str::from_utf8(o).ok())
        else {
            return Outcome::Headers(Vec::new());
        };
        let allowed =
            (self.any_origin && origin != "null") || self.origins.iter().any(|o| o == origin);
        let preflight_method = request.headers.get("access-control-request-method");
        if request.method == "OPTIONS" {
            if let Some(method) = preflight_method {
                return Outcome::Preflight(self.preflight(origin, allowed, method, request));
            }
        }
        Outcome::Headers(if allowed {
            self.allow(origin)
        } else {
            Vec::new()
        })
    }

    /// The headers every response to an allowed origin carries.
    fn allow(&self, origin: &str) -> Vec<ResponseHeader> {
        let mut headers = Vec::new();
        if self.any_origin && !self.credentials {
            headers.push(("Access-Control-Allow-Origin", "*".into()));
        } else {
            // A credentialed response must name the origin; caches must then key on it.
            headers.push(("Access-Control-Allow-Origin", origin.into()));
            headers.push(("Vary", "Origin".into()));
        }
        if self.credentials {
            headers.push(("Access-Control-Allow-Credentials", "true".into()));
        }
        if !self.expose.is_empty() {
            headers.push(("Access-Control-Expose-Headers", self.expose.clone()));
        }
        headers
    }

    fn preflight(
        &self,
        origin: &str,
        allowed: bool,
        method: &[u8],
        request: &RequestInfo<'_>,
    ) -> Answer {
        let mut answer = Answer::new(StatusCode::NO_CONTENT, "");
        let method_ok = self
            .methods
            .iter()
            .any(|m| m.as_bytes().eq_ignore_ascii_case(method));
        let requested: Vec<String> = request
            .headers
            .get("access-control-request-headers")
            .map(|h| {
                String::from_utf8_lossy(h)
                    .split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let headers_ok = self.headers.iter().any(|h| h == "*")
            || requested.iter().all(|h| self.headers.contains(h));
        // A refused preflight gets no CORS headers: the browser then blocks the request.
        if allowed && method_ok && headers_ok {
            answer.headers = self.allow(origin);
            answer
                .headers
                .push(("Access-Control-Allow-Methods", self.methods.join(", ")));
            if !requested.is_empty() {
                answer
                    .headers
                    .push(("Access-Control-Allow-Headers", requested.join(", ")));
            }
            answer
                .headers
                .push(("Access-Control-Max-Age", self.max_age_secs.to_string()));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_origin(cors: &Cors, origin: &str) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        headers.insert("origin", origin.parse().unwrap());
        let request = RequestInfo {
            method: "GET",
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            headers: &headers,
        };
        match cors.check(&request) {
            Outcome::Headers(headers) => headers
                .into_iter()
                .find(|(name, _)| *name == "Access-Control-Allow-Origin")
                .map(|(_, value)| value),
            Outcome::Preflight(_) => panic!("not a preflight"),
        }
    }

    fn cors(config: serde_json::Value) -> Cors {
        Cors::new(serde_json::from_value(config).unwrap())
    }

    #[test]
    fn a_null_origin_is_allowed_only_when_listed() {
        let any = cors(serde_json::json!({"allow_credentials": true}));
        assert_eq!(allowed_origin(&any, "null"), None);
        assert_eq!(
            allowed_origin(&any, "https://a.example").as_deref(),
            Some("https://a.example")
        );
        assert!(any.warning().is_some());
        let any_without_credentials = cors(serde_json::json!({}));
        assert_eq!(allowed_origin(&any_without_credentials, "null"), None);
        assert_eq!(
            allowed_origin(&any_without_credentials, "https://a").as_deref(),
            Some("*")
        );
        assert_eq!(any_without_credentials.warning(), None);
        let listed =
            cors(serde_json::json!({"allow_origins": ["null"], "allow_credentials": true}));
        assert_eq!(allowed_origin(&listed, "null").as_deref(), Some("null"));
        assert_eq!(listed.warning(), None);
    }
}
