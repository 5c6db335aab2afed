//! The normal request/response pipeline: endpoint -> backends, KrakenD style.
//!
//! `json` (the default) calls every backend of the endpoint at once, reads each answer
//! (bounded by `max_backend_response_bytes`), shapes it ([`shape`]: `target`, `allow`,
//! `deny`, `mapping`, `group`, arrays as `{"collection": [...]}`) and merges them into one
//! object. When some backends fail or miss the endpoint `timeout`, the others' merge is
//! returned with `X-KrakenD-Completed: false`; when all fail, 500 (504 if one timed out).
//! `no-op` (one backend) passes the backend's status, headers and body through as they
//! arrive, unbuffered, and the `timeout` bounds only the wait for the response head, so
//! streams live on. Client headers and query parameters reach backends only when listed in
//! `input_headers` / `input_query_strings` (`["*"]` for all), as in KrakenD, and only
//! clean ([`upstream`]). Request bodies are bounded the same way for both ([`body`]: 413
//! over `max_body_bytes`, 408 past `read_timeout`). Every answer the pipeline gives itself
//! is a [`Refusal`], in general terms; the log says why.

mod body;
mod refusal;
mod shape;
mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{Config, Endpoint, OutputEncoding};
use body::{BodyError, RequestBody};
use refusal::Refusal;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// A client's request body, whichever protocol brought it (hyper's HTTP/1.1 `Incoming`,
/// an HTTP/2 stream's data).
pub type ClientBody = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// hyper's request body as a [`ClientBody`].
pub fn client_body(request: Request<Incoming>) -> Request<ClientBody> {
    request.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed())
}

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
    /// Each endpoint with a round-robin counter per backend.
    endpoints: Vec<(Endpoint, Vec<AtomicUsize>)>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    stream_client: Client<HttpsConnector<HttpConnector>, RequestBody>,
    max_backend_response_bytes: usize,
}

/// Why a backend gave nothing to merge.
struct Failure {
    url: String,
    reason: String,
    timed_out: bool,
}

impl Pipeline {
    pub fn new(config: &Config) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        // `https` URLs are the TLS connector's.
        http.enforce_http(false);
        let connector = HttpsConnector::from((http, Arc::new(tls_client_config(config))));
        Self {
            endpoints: config
                .endpoints
                .iter()
                .map(|e| {
                    (
                        e.clone(),
                        e.backends.iter().map(|_| AtomicUsize::new(0)).collect(),
                    )
                })
                .collect(),
            client: Client::builder(TokioExecutor::new()).build(connector.clone()),
            stream_client: Client::builder(TokioExecutor::new()).build(connector),
            max_backend_response_bytes: config.max_backend_response_bytes,
        }
    }

    /// Serves `request` through `endpoints[index]`, the route decision's, with the values
    /// its template captured (in the template's order).
    pub async fn handle(
        &self,
        index: usize,
        params: &[String],
        request: Request<ClientBody>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let (endpoint, counters) = &self.endpoints[index];
        let params: path_template::Params<'_> = endpoint
            .template
            .params()
            .zip(params.iter().map(String::as_str))
            .collect();
        let (parts, body) = request.into_parts();
        if let Err(refusal) = upstream::check(endpoint, &params, &parts) {
            tracing::info!(
                "[ENDPOINT: {}] {} {} from {peer}: {refusal}",
                endpoint.endpoint,
                parts.method,
                parts.uri.path()
            );
            return refusal.response();
        }
        let targets: Vec<String> = endpoint
            .backends
            .iter()
            .zip(counters)
            .map(|(backend, counter)| {
                let host =
                    &backend.hosts[counter.fetch_add(1, Ordering::Relaxed) % backend.hosts.len()];
                backend_url(host, &backend.url_pattern, &params, &parts, endpoint)
            })
            .collect();
        match endpoint.output_encoding {
            OutputEncoding::NoOp => self.pass(endpoint, &targets[0], parts, body, peer).await,
            OutputEncoding::Json => self.merge(endpoint, targets, parts, body, peer).await,
        }
    }

    /// `no-op`: one backend, its answer streamed through as it arrives.
    async fn pass(
        &self,
        endpoint: &Endpoint,
        url: &str,
        parts: http::request::Parts,
        body: ClientBody,
        peer: SocketAddr,
    ) -> Response<Body> {
        let backend = &endpoint.backends[0];
        let (body, refused) = match RequestBody::new(body, endpoint.max_body_bytes) {
            Ok(bounded) => bounded,
            Err(refusal) => return refusal.response(),
        };
        let request = match backend_request(endpoint, backend, url, &parts, peer).body(body) {
            Ok(r) => r,
            Err(e) => return failed(endpoint, url, Refusal::Internal, &e.to_string()),
        };
        let answer = tokio::time::timeout(endpoint.timeout, self.stream_client.request(request));
        match (answer.await, refused.get()) {
            (Ok(Ok(response)), _) => pass_through(response),
            // The client's body failed the call: the client is answered why.
            (_, Some(refusal)) => refusal.response(),
            (Ok(Err(e)), None) => failed(endpoint, url, Refusal::Unavailable, &causes(&e)),
            (Err(_), None) => {
                let reason = timeout_reason(endpoint);
                failed(endpoint, url, Refusal::UpstreamTimedOut, &reason)
            }
        }
    }

    /// `json`: every backend at once, shaped and merged.
    async fn merge(
        &self,
        endpoint: &Endpoint,
        urls: Vec<String>,
        parts: http::request::Parts,
        body: ClientBody,
        peer: SocketAddr,
    ) -> Response<Body> {
        // Each backend gets the same body, so it is read once.
        let body = match RequestBody::new(body, endpoint.max_body_bytes) {
            Ok((body, _)) => body.collect().await,
            Err(refusal) => return refusal.response(),
        };
        let body = match body {
            Ok(collected) => collected.to_bytes(),
            Err(BodyError::Refused(refusal)) => return refusal.response(),
            Err(e @ BodyError::Client(_)) => {
                return failed(endpoint, &urls[0], Refusal::Body, &e.to_string())
            }
        };
        let calls = endpoint.backends.iter().zip(urls).map(|(backend, url)| {
            let request = backend_request(endpoint, backend, &url, &parts, peer)
                .body(Full::new(body.clone()));
            async move {
                let request = request.map_err(|e| Failure {
                    url: url.clone(),
                    reason: e.to_string(),
                    timed_out: false,
                })?;
                match tokio::time::timeout(endpoint.timeout, self.fetch_json(request)).await {
                    Ok(Ok(value)) => {
                        shape::apply(value, &backend.shape).map_err(|reason| Failure {
                            url,
                            reason,
                            timed_out: false,
                        })
                    }
                    Ok(Err(reason)) => Err(Failure {
                        url,
                        reason,
                        timed_out: false,
                    }),
                    Err(_) => Err(Failure {
                        url,
                        reason: timeout_reason(endpoint),
                        timed_out: true,
                    }),
                }
            }
        });
        let answers = join_all(calls).await;
        let mut merged = serde_json::Map::new();
        let (mut answered, mut timed_out) = (0, false);
        for answer in answers {
            match answer {
                Ok(object) => {
                    answered += 1;
                    merged.extend(object);
                }
                Err(failure) => {
                    tracing::warn!(
                        "[ENDPOINT: {}] backend {} failed: {}",
                        endpoint.endpoint,
                        failure.url,
                        failure.reason
                    );
                    timed_out |= failure.timed_out;
                }
            }
        }
        if answered == 0 {
            let refusal = match timed_out {
                true => Refusal::UpstreamTimedOut,
                false => Refusal::Failed,
            };
            return refusal.response();
        }
        let mut response = json(Value::Object(merged));
        if answered < endpoint.backends.len() {
            response
                .headers_mut()
                .insert("X-KrakenD-Completed", HeaderValue::from_static("false"));
        }
        response
    }

    async fn fetch_json(&self, request: Request<Full<Bytes>>) -> Result<Value, String> {
        let response = self.client.request(request).await.map_err(|e| causes(&e))?;
        if !response.status().is_success() {
            return Err(format!("backend answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), self.max_backend_response_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the backend body: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("backend body is not JSON: {e}"))
    }
}

/// The TLS client config of `https` backends: the root `client_tls`'s when an endpoint has
/// one; otherwise one that trusts nothing, so a gateway without them never reads the
/// system's roots.
fn tls_client_config(config: &Config) -> rustls::ClientConfig {
    let dials_tls = config.endpoints.iter().any(|endpoint| {
        let mut hosts = endpoint.backends.iter().flat_map(|b| &b.hosts);
        hosts.any(|host| host.scheme_str() == Some("https"))
    });
    if dials_tls {
        return config.client_tls.client_config();
    }
    let nothing = tls_config::RawClientTls {
        disable_system_ca_pool: true,
        ..Default::default()
    };
    let trusting_nothing = tls_config::ClientTls::load(&nothing).expect("reads no file");
    trusting_nothing.client_config()
}

/// An error and its causes (`client error (Connect): invalid peer certificate:
/// UnknownIssuer`): hyper's own text names only the stage that failed.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Answers a request no route takes (404, or 405 when one takes its path under
/// another method) with `status` and `body`.
pub async fn refuse(
    status: StatusCode,
    body: &'static str,
    request: Request<ClientBody>,
) -> Response<Body> {
    // Read what the client sent so the connection can serve its next request; a body
    // larger than this is not worth waiting for, and hyper then closes the connection.
    let mut unread = request.into_body();
    let mut drained = 0;
    while drained < UNMATCHED_BODY_DRAIN_BYTES {
        match unread.frame().await {
            Some(Ok(frame)) => drained += frame.data_ref().map_or(0, Bytes::len),
            None | Some(Err(_)) => break,
        }
    }
    text(status, body)
}

/// Runs the futures concurrently and returns their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// The backend URL: host, the pattern with the captured params, and the client's query
/// parameters that `input_query_strings` lets through.
fn backend_url(
    host: &http::Uri,
    pattern: &str,
    params: &path_template::Params<'_>,
    parts: &http::request::Parts,
    endpoint: &Endpoint,
) -> String {
    let mut url = format!(
        "{}://{}{}",
        host.scheme_str().unwrap_or("http"),
        host.authority().map(|a| a.as_str()).unwrap_or_default(),
        path_template::substitute(pattern, params)
    );
    let forwarded: Vec<&str> = upstream::query(endpoint, parts.uri.query().unwrap_or("")).collect();
    if !forwarded.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&forwarded.join("&"));
    }
    url
}

/// The request to one backend: its method (or the client's), the client headers that
/// `input_headers` lets through, and the proxy's own headers.
fn backend_request(
    endpoint: &Endpoint,
    backend: &crate::config::Backend,
    url: &str,
    parts: &http::request::Parts,
    peer: SocketAddr,
) -> http::request::Builder {
    let mut request = Request::builder()
        .method(backend.method.clone().unwrap_or(parts.method.clone()))
        .uri(url)
        .header("X-Forwarded-For", peer.ip().to_string());
    for (name, value) in upstream::headers(endpoint, &parts.headers) {
        request = request.header(name, value);
    }
    if !endpoint.input_headers.allows("user-agent", true) {
        request = request.header(
            header::USER_AGENT,
            concat!("KrakenD-style host/", env!("CARGO_PKG_VERSION")),
        );
    }
    request
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

/// Logs why a backend failed, with its URL, and answers the client in general terms.
fn failed(endpoint: &Endpoint, url: &str, refusal: Refusal, reason: &str) -> Response<Body> {
    tracing::warn!(
        "[ENDPOINT: {}] backend {url} failed: {reason}",
        endpoint.endpoint
    );
    refusal.response()
}

fn timeout_reason(endpoint: &Endpoint) -> String {
    format!(
        "no answer within the endpoint timeout of {:?}",
        endpoint.timeout
    )
}

/// A plain-text response the host writes itself.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response the host gives itself (a preflight, a 401, a 429...).
pub fn answer(answer: crate::protect::Answer) -> Response<Body> {
    let mut response = text(answer.status, answer.body);
    add_headers(response.headers_mut(), answer.headers);
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

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
