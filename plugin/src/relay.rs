//! One claimed request: connect upstream, then relay the response to the client socket.
//!
//! The client socket is watched for EOF while waiting and while pumping, so a client that
//! goes away closes the upstream connection at once (dropping the response body makes
//! hyper close it). Upstream failures become a one-line 502; non-2xx answers are relayed
//! with their status and body.

use std::fmt::Write as _;

use abi::{Logger, RequestHead};
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Route;
use crate::PLUGIN_NAME;

/// The HTTP client for upstream streams, shared by all streams of a plugin instance.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Upstream {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

/// Why a relay ended early; only logged.
enum Ended {
    ClientGone,
    Upstream(String),
}

pub async fn serve(
    mut client: TcpStream,
    head: RequestHead,
    route: &Route,
    upstream: &Upstream,
    logger: Logger,
) {
    let _ = client.set_nodelay(true);
    let url = upstream_url(route, &head);
    let request = match upstream_request(&url, &head, route) {
        Ok(request) => request,
        Err(e) => return respond_error(&mut client, StatusCode::BAD_REQUEST, &e).await,
    };
    let response = tokio::select! {
        response = upstream.client.request(request) => response,
        () = client_gone(&mut client) => return,
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            let reason = format!("upstream {url} unreachable: {}", error_chain(&e));
            logger.warn(&format!(
                "[PLUGIN: {PLUGIN_NAME}] {} {}: {reason}",
                head.method, head.path
            ));
            return respond_error(&mut client, StatusCode::BAD_GATEWAY, &reason).await;
        }
    };
    let status = response.status();
    let response_head = if status.is_success() {
        event_stream_head()
    } else {
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        passthrough_head(status, content_type)
    };
    match pump(&mut client, response_head, response.into_body()).await {
        Ok(()) | Err(Ended::ClientGone) => {}
        Err(Ended::Upstream(e)) => {
            logger.warn(&format!(
                "[PLUGIN: {PLUGIN_NAME}] {} {}: upstream stream broke: {e}",
                head.method, head.path
            ));
        }
    }
    let _ = client.shutdown().await;
}

fn upstream_url(route: &Route, head: &RequestHead) -> String {
    let params = route.template.matches(&head.path).unwrap_or_default();
    let mut url = route.backend_host.clone();
    url.push_str(&path_template::substitute(
        &route.backend_url_pattern,
        &params,
    ));
    if !head.query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&head.query);
    }
    url
}

fn upstream_request(
    url: &str,
    head: &RequestHead,
    route: &Route,
) -> Result<Request<Empty<Bytes>>, String> {
    let mut request = Request::get(url);
    for name in &route.forward_headers {
        for header in head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
        {
            request = request.header(name.as_str(), header.value.as_slice());
        }
    }
    request
        .body(Empty::new())
        .map_err(|e| format!("cannot build the upstream request: {e}"))
}

/// Writes the head, then each body chunk as it arrives, until either side ends.
async fn pump(client: &mut TcpStream, head: String, mut body: Incoming) -> Result<(), Ended> {
    let (mut reader, mut writer) = client.split();
    writer
        .write_all(head.as_bytes())
        .await
        .map_err(|_| Ended::ClientGone)?;
    // What the client sends after its request is ignored; reading it is how EOF is seen.
    let mut discard = [0u8; 256];
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        writer.write_all(&data).await.map_err(|_| Ended::ClientGone)?;
                    }
                }
                Some(Err(e)) => return Err(Ended::Upstream(error_chain(&e))),
                None => return Ok(()),
            },
            read = reader.read(&mut discard) => if matches!(read, Ok(0) | Err(_)) {
                return Err(Ended::ClientGone);
            },
        }
    }
}

/// Completes when the client closes its side or the socket fails.
async fn client_gone(client: &mut TcpStream) {
    let mut discard = [0u8; 256];
    while let Ok(n) = client.read(&mut discard).await {
        if n == 0 {
            return;
        }
    }
}

fn event_stream_head() -> String {
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
     X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
        .to_owned()
}

fn passthrough_head(status: StatusCode, content_type: Option<&str>) -> String {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(content_type) = content_type {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

async fn respond_error(client: &mut TcpStream, status: StatusCode, reason: &str) {
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// An error and its sources on one line ("client error (Connect): tcp connect error: ...").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
