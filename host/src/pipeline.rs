//! The normal request/response pipeline: endpoint -> backend, KrakenD style.
//!
//! `json` (the default) reads the backend's JSON (bounded by `max_backend_response_bytes`)
//! and returns it as an object, wrapping an array as `{"collection": [...]}`; a failed or
//! non-2xx backend gives 500 with `X-KrakenD-Completed: false`, as KrakenD does. `no-op`
//! passes the backend's status, headers and body through as it arrives, unbuffered, and the
//! endpoint `timeout` then bounds only the wait for the response head, so streams live on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{Config, Endpoint, OutputEncoding};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// How much of an unmatched request's body is read to keep its connection alive.
const UNMATCHED_BODY_DRAIN_BYTES: usize = 64 * 1024;

/// Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy must not pass on.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Pipeline {
    endpoints: Vec<(Endpoint, AtomicUsize)>,
    client: Client<HttpConnector, Incoming>,
    max_backend_response_bytes: usize,
}

impl Pipeline {
    pub fn new(config: &Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            endpoints: config
                .endpoints
                .iter()
                .map(|e| (e.clone(), AtomicUsize::new(0)))
                .collect(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            max_backend_response_bytes: config.max_backend_response_bytes,
        }
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let path = request.uri().path();
        let mut path_matched = false;
        for (endpoint, next_host) in &self.endpoints {
            let Some(params) = endpoint.template.matches(path) else {
                continue;
            };
            if endpoint.method != request.method() {
                path_matched = true;
                continue;
            }
            let host = &endpoint.backend.hosts
                [next_host.fetch_add(1, Ordering::Relaxed) % endpoint.backend.hosts.len()];
            let url = format!(
                "{}://{}{}",
                host.scheme_str().unwrap_or("http"),
                host.authority().map(|a| a.as_str()).unwrap_or_default(),
                path_template::substitute(&endpoint.backend.url_pattern, &params)
            );
            return Ok(self.proxy(endpoint, url, request, peer).await);
        }
        // Read what the client sent so the connection can serve its next request; a body
        // larger than this is not worth waiting for, and hyper then closes the connection.
        let _ = Limited::new(request.into_body(), UNMATCHED_BODY_DRAIN_BYTES)
            .collect()
            .await;
        Ok(if path_matched {
            text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n")
        } else {
            text(StatusCode::NOT_FOUND, "404 page not found\n")
        })
    }

    async fn proxy(
        &self,
        endpoint: &Endpoint,
        url: String,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let mut backend_request = Request::builder()
            .method(endpoint.backend.method.clone().unwrap_or(parts.method))
            .uri(&url)
            .header("X-Forwarded-For", peer.ip().to_string())
            .header(
                header::USER_AGENT,
                concat!("KrakenD-style host/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            backend_request = backend_request.header(header::CONTENT_TYPE, content_type);
        }
        let backend_request = match backend_request.body(body) {
            Ok(r) => r,
            Err(e) => {
                return failed(
                    endpoint,
                    &url,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &e.to_string(),
                )
            }
        };
        match endpoint.output_encoding {
            OutputEncoding::NoOp => {
                match tokio::time::timeout(endpoint.timeout, self.client.request(backend_request))
                    .await
                {
                    Ok(Ok(response)) => pass_through(response),
                    Ok(Err(e)) => failed(endpoint, &url, StatusCode::BAD_GATEWAY, &e.to_string()),
                    Err(_) => timed_out(endpoint, &url),
                }
            }
            OutputEncoding::Json => {
                match tokio::time::timeout(endpoint.timeout, self.fetch_json(backend_request)).await
                {
                    Ok(Ok(value)) => json(value),
                    Ok(Err(reason)) => {
                        failed(endpoint, &url, StatusCode::INTERNAL_SERVER_ERROR, &reason)
                    }
                    Err(_) => timed_out(endpoint, &url),
                }
            }
        }
    }

    async fn fetch_json(&self, request: Request<Incoming>) -> Result<Value, String> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("backend answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), self.max_backend_response_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the backend body: {e}"))?
            .to_bytes();
        match serde_json::from_slice(&body).map_err(|e| format!("backend body is not JSON: {e}"))? {
            Value::Array(items) => Ok(serde_json::json!({ "collection": items })),
            object @ Value::Object(_) => Ok(object),
            other => Err(format!(
                "backend JSON is neither an object nor an array: {other}"
            )),
        }
    }
}

fn pass_through(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, body.boxed())
}

pub fn json(value: Value) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert("X-KrakenD-Completed", HeaderValue::from_static("true"));
    response
}

fn failed(endpoint: &Endpoint, url: &str, status: StatusCode, reason: &str) -> Response<Body> {
    tracing::warn!(
        "[ENDPOINT: {}] backend {url} failed: {reason}",
        endpoint.endpoint
    );
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("X-KrakenD-Completed", HeaderValue::from_static("false"));
    response
}

fn timed_out(endpoint: &Endpoint, url: &str) -> Response<Body> {
    let reason = format!(
        "no answer within the endpoint timeout of {:?}",
        endpoint.timeout
    );
    failed(endpoint, url, StatusCode::GATEWAY_TIMEOUT, &reason)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response the host gives itself (a preflight, a 401, a 429...).
pub fn answer(answer: crate::protect::Answer) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(answer.body)));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    add_headers(headers, answer.headers);
    response
}

/// Appends the protections' response headers (values the host built, so always valid).
pub fn add_headers(headers: &mut http::HeaderMap, extra: Vec<crate::protect::ResponseHeader>) {
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
}

/// A body of text the host wrote.
pub fn full_text(text: String) -> Body {
    full(Bytes::from(text))
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
