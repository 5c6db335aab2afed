//! One HTTP/1.1 connection: the [`gate`](crate::gate) in front of hyper, each head's
//! route decided once by the gate; hyper serves the requests the host answers itself
//! ([`respond`](crate::respond)), and the connection ends at the head the gate stopped at:
//! a rejection the host answers before closing, or a plugin's claim, which goes to the
//! [`handoff`](crate::handoff) with the client's transport (the socket itself, or the TLS
//! session lent through the bridged transport). When the gateway drains, a response carries
//! `Connection: close` and the gate ends the connection once it idles.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::config::DEFAULT_MAX_HEADER_COUNT;
use crate::connections::Slot;
use crate::gate::{Gate, Rejection, Stop};
use crate::handoff::{self, Client};
use crate::pipeline;
use crate::protect::Answer;
use crate::respond::respond;
use crate::route::Pending;
use crate::shared::Shared;
use crate::transport::ClientStream;

/// Serves an HTTP/1.1 connection (TCP, or TLS over it) accepted at `accepted`, of which
/// `read` was read already.
pub async fn serve<IO: ClientStream>(
    stream: IO,
    peer: SocketAddr,
    (accepted, read): (Instant, BytesMut),
    slot: Slot,
    shared: Arc<Shared>,
) {
    let pending = Arc::new(Pending::default());
    let gate = Gate::new(
        stream,
        peer,
        (accepted, read),
        shared.limits,
        shared.router.clone(),
        pending.clone(),
        shared.draining.clone(),
    );
    let service_shared = shared.clone();
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        // hyper calls the service for a connection's requests in the order of their heads,
        // the order in which the gate decided them.
        let decision = pending.pop();
        async move {
            let mut response = match decision {
                Some(decision) => {
                    let request = pipeline::client_body(request);
                    respond(&shared, decision, request, peer).await
                }
                None => {
                    tracing::error!("connection from {peer}: a request without a route decision");
                    pipeline::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
                }
            };
            // Answered while the gateway drains: the client must not send another request
            // on this connection (hyper closes it after this response, and the gate ends it
            // when it idles).
            if shared.draining.is_cancelled() {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut http1 = http1::Builder::new();
    // The gate has counted the headers already; hyper must take as many. (Its own limit,
    // the default's, needs no per-request allocation, so it is raised only when needed.)
    if shared.limits.max_headers > DEFAULT_MAX_HEADER_COUNT {
        http1.max_headers(shared.limits.max_headers);
    }
    let parts = match http1
        .half_close(true)
        .serve_connection(TokioIo::new(gate), service)
        .without_shutdown()
        .await
    {
        Ok(parts) => parts,
        Err(e) => {
            tracing::debug!("connection from {peer}: {e}");
            return;
        }
    };
    debug_assert!(
        parts.read_buf.is_empty(),
        "the gate gives hyper whole requests only"
    );
    match parts.io.into_inner().into_parts() {
        // hyper ended the connection (the client closed, or a response said
        // `Connection: close`, such as a 413 while the body was still coming).
        (Stop::Eof, stream, _) => close_lingering(stream).await,
        (Stop::Silent, _, _) => {
            slot.closed_silent();
            tracing::debug!("connection from {peer}: no byte within read_header_timeout, closed");
        }
        (Stop::Rejected(rejection), stream, _) => reject(stream, peer, rejection).await,
        (
            Stop::Claimed {
                claim,
                head,
                started,
            },
            stream,
            read_ahead,
        ) => {
            let pass = match handoff::protect(&shared, &claim, &head, peer) {
                Ok(pass) => pass,
                Err(answer) => return answer_and_close(stream, answer).await,
            };
            let (transport, read_ahead) = match stream
                .into_transport(read_ahead, head.expects_continue())
            {
                Ok(taken) => taken,
                Err(e) => {
                    return tracing::warn!("connection from {peer}: cannot detach the socket: {e}")
                }
            };
            let client = Client {
                transport,
                version: abi::HttpVersion::Http11,
                read_ahead,
                peer,
                slot: slot.into_ffi(),
                started,
            };
            handoff::hand_over(&shared, claim, head, pass, client);
        }
    }
}

async fn reject(stream: impl ClientStream, peer: SocketAddr, rejection: Rejection) {
    tracing::info!(
        "rejected a request from {peer}: {} {}",
        rejection.status.as_u16(),
        rejection.message
    );
    let answer = Answer::new(rejection.status, format!("{}\n", rejection.message));
    answer_and_close(stream, answer).await;
}

/// Writes a response the host gives itself on a connection hyper no longer drives, and
/// closes it lingering.
async fn answer_and_close(mut stream: impl ClientStream, answer: Answer) {
    let mut headers = Vec::new();
    for (name, value) in &answer.headers {
        wire::header_line(&mut headers, name, value.as_bytes());
    }
    let response = wire::plain_text_response(answer.status, &headers, &answer.body);
    if stream.write_all(&response).await.is_ok() {
        close_lingering(stream).await;
    }
}

/// Ends the host's side of a connection whose last answer (a rejection, or a response
/// that closes it: 413, 408, `Connection: close`) is written, then reads and drops what
/// the client still sends, within `wire::linger`'s bounds. A client that closes in turn
/// ends this at once.
async fn close_lingering(mut stream: impl ClientStream) {
    if stream.shutdown().await.is_ok() {
        wire::linger::discard(&mut stream).await;
    }
}
