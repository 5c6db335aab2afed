//! Protections applied to every request head before it is routed: CORS for all requests
//! (root `security/cors`), JWT validation and rate limits per endpoint (`auth/validator`,
//! `qos/ratelimit/router`).
//!
//! They run on the head, before a plugin's claim is honoured, so a hijacked stream is
//! protected exactly like a normal request, and the response headers they add (CORS)
//! travel with the handoff for the plugin to write. A streaming route takes the protections
//! of the `endpoints[]` entry with the same path template and method: declaring the stream
//! there (a `no-op` endpoint to the same origin) also serves it, unbuffered, if the plugin
//! is not loaded.

pub mod cors;
pub mod jwks;
pub mod jwt;
pub mod ratelimit;

use std::net::IpAddr;

use http::StatusCode;

use crate::config::Config;

/// Request headers, whichever type holds them.
pub trait Headers: Sync {
    fn get(&self, name: &str) -> Option<&[u8]>;
}

impl Headers for abi::RequestHead {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.header(name)
    }
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&[u8]> {
        http::HeaderMap::get(self, name).map(http::HeaderValue::as_bytes)
    }
}

/// What the protections look at.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub peer: IpAddr,
    pub headers: &'a dyn Headers,
}

/// A response header the host adds.
pub type ResponseHeader = (&'static str, String);

/// A response the host gives itself instead of routing the request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<ResponseHeader>,
    pub body: String,
}

impl Answer {
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

pub enum Verdict {
    /// Route the request; add these headers to its response.
    Pass(Vec<ResponseHeader>),
    Answer(Answer),
}

/// One endpoint's protections.
#[derive(Debug, Default)]
pub struct EndpointGuard {
    pub jwt: Option<jwt::Validator>,
    pub rate_limit: Option<ratelimit::RateLimit>,
}

pub struct Guard {
    cors: Option<cors::Cors>,
    endpoints: Vec<GuardedEndpoint>,
}

struct GuardedEndpoint {
    endpoint: String,
    template: path_template::Template,
    method: http::Method,
    guard: std::sync::Arc<EndpointGuard>,
}

impl Guard {
    pub fn new(config: &Config) -> Self {
        Self {
            cors: config.cors.clone(),
            endpoints: config
                .endpoints
                .iter()
                .map(|e| GuardedEndpoint {
                    endpoint: e.endpoint.clone(),
                    template: e.template.clone(),
                    method: e.method.clone(),
                    guard: e.guard.clone(),
                })
                .collect(),
        }
    }

    fn find(&self, method: &str, path: &str) -> Option<&GuardedEndpoint> {
        self.endpoints
            .iter()
            .find(|e| e.method.as_str() == method && e.template.matches(path).is_some())
    }

    /// The endpoints whose JWT keys come from a URL.
    pub fn url_keyed(&self) -> Vec<std::sync::Arc<EndpointGuard>> {
        self.endpoints
            .iter()
            .filter(|e| {
                e.guard
                    .jwt
                    .as_ref()
                    .is_some_and(|j| j.key_source().is_some())
            })
            .map(|e| e.guard.clone())
            .collect()
    }

    /// The `endpoints[]` template a request matches, for metrics.
    pub fn endpoint_of(&self, method: &str, path: &str) -> Option<&str> {
        self.find(method, path).map(|e| e.endpoint.as_str())
    }

    pub fn check(&self, request: &RequestInfo<'_>) -> Verdict {
        let headers = match &self.cors {
            Some(cors) => match cors.check(request) {
                cors::Outcome::Preflight(answer) => return Verdict::Answer(answer),
                cors::Outcome::Headers(headers) => headers,
            },
            None => Vec::new(),
        };
        if let Some(GuardedEndpoint { guard, .. }) = self.find(request.method, request.path) {
            // The cheap check first: a flood of bad tokens must not buy signature checks.
            let refused = guard
                .rate_limit
                .as_ref()
                .and_then(|limit| limit.check(request).err())
                .or_else(|| guard.jwt.as_ref().and_then(|jwt| jwt.check(request).err()));
            if let Some(mut answer) = refused {
                // CORS headers on errors too, so that a browser can read why.
                answer.headers.extend(headers);
                return Verdict::Answer(answer);
            }
        }
        Verdict::Pass(headers)
    }
}
