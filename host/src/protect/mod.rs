//! The protections a request head passes once its route is decided, whatever the protocol
//! and whoever serves it: CORS for every request (root `security/cors`), JWT validation
//! and rate limits of the decided endpoint (`auth/validator`, `qos/ratelimit/router`). The
//! host's own `/__health` and `/__debug/*` are answered without them.
//!
//! They run on the head, before a plugin's claim is honoured, so a hijacked stream is
//! protected exactly like a normal request, and the response headers they add (CORS)
//! travel with the handoff for the plugin to write. Which endpoint's JWT and rate limit
//! apply is the route decision's ([`crate::route`]): a plugin route takes those of its
//! `endpoints[]` twin (the same shape and method); declaring the stream there (a `no-op`
//! endpoint to the same origin) also serves it, unbuffered, if the plugin is not loaded.

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
    /// Route the request.
    Pass(Pass),
    Answer(Answer),
}

/// What the protections let through, and what they add.
#[derive(Debug, Default)]
pub struct Pass {
    /// Headers for the request's response (CORS).
    pub headers: Vec<ResponseHeader>,
    /// The JWT that authorised the request, if one did: a handed-over stream must end when
    /// it stops being valid.
    pub token: Option<jwt::Authorised>,
}

/// One endpoint's protections.
#[derive(Debug, Default)]
pub struct EndpointProtections {
    pub jwt: Option<jwt::Validator>,
    pub rate_limit: Option<ratelimit::RateLimit>,
}

pub struct Protections {
    cors: Option<cors::Cors>,
    /// By `endpoints[]` index.
    endpoints: Vec<std::sync::Arc<EndpointProtections>>,
}

impl Protections {
    pub fn new(config: &Config) -> Self {
        Self {
            cors: config.cors.clone(),
            endpoints: config
                .endpoints
                .iter()
                .map(|e| e.protections.clone())
                .collect(),
        }
    }

    /// The endpoints whose JWT keys come from a URL.
    pub fn url_keyed(&self) -> Vec<std::sync::Arc<EndpointProtections>> {
        self.endpoints
            .iter()
            .filter(|endpoint| {
                endpoint
                    .jwt
                    .as_ref()
                    .is_some_and(|j| j.key_source().is_some())
            })
            .cloned()
            .collect()
    }

    /// CORS for every request, then the JWT and rate limit of `endpoints[protected_by]`,
    /// the entry the route decision names.
    pub fn check(&self, request: &RequestInfo<'_>, protected_by: Option<usize>) -> Verdict {
        let headers = match &self.cors {
            Some(cors) => match cors.check(request) {
                cors::Outcome::Preflight(answer) => return Verdict::Answer(answer),
                cors::Outcome::Headers(headers) => headers,
            },
            None => Vec::new(),
        };
        let Some(endpoint) = protected_by.map(|index| &self.endpoints[index]) else {
            return Verdict::Pass(Pass {
                headers,
                token: None,
            });
        };
        // The cheap check first: a flood of bad tokens must not buy signature checks.
        let checked = endpoint
            .rate_limit
            .as_ref()
            .map_or(Ok(()), |limit| limit.check(request))
            .and_then(|()| {
                endpoint
                    .jwt
                    .as_ref()
                    .map(|jwt| jwt.check(request))
                    .transpose()
            });
        match checked {
            Ok(token) => Verdict::Pass(Pass { headers, token }),
            Err(mut answer) => {
                // CORS headers on errors too, so that a browser can read why.
                answer.headers.extend(headers);
                Verdict::Answer(answer)
            }
        }
    }
}
