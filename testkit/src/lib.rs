//! End-to-end test helpers: the real binaries on 127.0.0.1:0, scripted origins (plain, https,
//! HTTP/2), raw clients, curl, an HTTP/2 client, a test PKI, the real LLM clients (the OpenAI
//! SDK, fetch-event-source in Chromium), and what scaling out needs: the socket launcher,
//! haproxy, and the resuming `client`.
//!
//! ```text
//! let origin = origin().count(3).run();                    // target/release/sse-server
//! let gateway = gateway().streaming("/sse/{id}", "/events-stream/{id}", &origin.url()).run();
//! let body = RawClient::get(gateway.addr, "/sse/a", &[]).await.read_to_end().await;
//! ```
//! The binaries come from `target/release` (or `$CARGO_TARGET_DIR/release`): `make test`
//! builds them, including the plugin cdylib that cargo does not build for tests.

#![forbid(unsafe_code)]

mod curl;
mod h2;
mod haproxy;
mod kafka;
mod launcher;
mod llm;
mod page;
mod process;
mod raw;
mod resuming;
mod scripted;
mod temp;
mod tls;

pub use curl::{curl, Curl, CurlOutput, CurlStream};
pub use h2::{H2Client, H2Origin, H2Request, H2Stream, H2Upload, StreamEnd, Windows};
pub use haproxy::{haproxy, Haproxy};
pub use kafka::{broker, Broker};
pub use launcher::{listen_queue, Launcher, ListenQueue};
pub use llm::{
    chat_messages, chunk_content, fetch_event_source, mock_release, mock_requests, openai_chat,
    sdk_spec, sdk_stream_live, the_one_chat_request, ClientReports,
};
pub use page::{open_event_sources, PageWatcher};
pub use process::{
    activated_host, bin, gateway, origin, release_dir, Gateway, GatewayBuilder, OriginBuilder,
    Process,
};
pub use raw::{body_of, get_json, how_it_ends, RawClient};
pub use resuming::ResumingClient;
pub use scripted::{json_backend, page_server, unused_port, OriginConn, ScriptedOrigin};
pub use temp::{TempDir, TempPath};
pub use tls::{CertKey, ClientAuth, TestPki, ALPN_H2, ALPN_HTTP1, SERVER_NAMES};

/// How long any single step of a test may wait before it fails instead of hanging.
pub const STEP: std::time::Duration = std::time::Duration::from_secs(10);
