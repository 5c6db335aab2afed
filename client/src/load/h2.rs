//! HTTP/2 load: a group of streams shares one connection (h2c with prior knowledge, or TLS
//! with ALPN `h2`), as a browser puts every EventSource of an origin on one. The first
//! stream to open dials it; a stream that opens after the connection closed (a reconnect)
//! dials it again for the group.
//!
//! The client's receive windows are a browser's (Chrome: 6 MiB per stream, 15 MiB per
//! connection) and each DATA frame is released as soon as it is read, so flow control never
//! holds a stream back and a slow stream cannot starve the others of connection window:
//! what is measured is the server's latency, not the client's windows.

use bytes::Bytes;
use http::{header, Request, StatusCode};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::transport::{dial, Body};
use super::Shared;

/// Chrome's receive windows.
const STREAM_WINDOW: u32 = 6 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 15 * 1024 * 1024;

/// The connection of one group of streams, while it lives.
#[derive(Default)]
pub(super) struct Connection {
    current: Mutex<Option<Live>>,
}

/// A handshaken connection: the handle streams are opened with, and the task that reads
/// and writes its frames (it ends when the connection does).
struct Live {
    send: h2::client::SendRequest<Bytes>,
    driver: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Opens a stream (with `Last-Event-ID` when `last_event_id` is not empty): its body
    /// once the head said 200; anything else is a failed stream.
    pub(super) async fn open(&self, shared: &Shared, last_event_id: &str) -> Result<Body, String> {
        let send = self.ready(shared).await?;
        let options = &shared.options;
        let mut request = Request::get(options.url.uri())
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache");
        if !last_event_id.is_empty() {
            request = request.header("last-event-id", last_event_id);
        }
        let request = request.body(()).map_err(|e| format!("the request: {e}"))?;
        let response = async {
            let (response, _) = send.ready().await?.send_request(request, true)?;
            response.await
        };
        match response.await {
            Ok(response) if response.status() == StatusCode::OK => {
                Ok(Body::http2(response.into_body()))
            }
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The live connection's handle, dialed first when there is none (the other streams
    /// of the group wait for that handshake rather than dial their own).
    async fn ready(&self, shared: &Shared) -> Result<h2::client::SendRequest<Bytes>, String> {
        let mut current = self.current.lock().await;
        if let Some(live) = current.as_ref().filter(|live| !live.driver.is_finished()) {
            return Ok(live.send.clone());
        }
        let _permit = shared
            .connecting
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let options = &shared.options;
        let socket = dial(options.addr, &options.url, &options.transport, &[])
            .await
            .map_err(|e| e.to_string())?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(socket)
            .await
            .map_err(|e| format!("the HTTP/2 handshake: {e}"))?;
        Shared::count(&shared.counters.transports);
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        *current = Some(Live {
            send: send.clone(),
            driver,
        });
        Ok(send)
    }
}
