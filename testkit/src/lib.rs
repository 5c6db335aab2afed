//! End-to-end test helpers: the real binaries on 127.0.0.1:0, scripted origins, raw clients,
//! and the real LLM clients (the OpenAI SDK, fetch-event-source in Chromium).
//!
//! ```text
//! let origin = origin().count(3).run();                    // target/release/sse-server
//! let gateway = gateway().streaming("/sse/{id}", "/events-stream/{id}", origin.url()).run();
//! let body = RawClient::get(gateway.addr, "/sse/a", &[]).await.read_to_end().await;
//! ```
//! The binaries come from `target/release` (or `$CARGO_TARGET_DIR/release`): `make test`
//! builds them, including the plugin cdylib that cargo does not build for tests.

#![forbid(unsafe_code)]

mod kafka;
mod llm;
mod page;
mod pki;
mod process;
mod raw;
mod scripted;
mod temp;

pub use kafka::{broker, Broker};
pub use llm::{fetch_event_source, mock_release, mock_requests, openai_chat, ClientReports};
pub use page::PageWatcher;
pub use pki::{CertFiles, TestPki};
pub use process::{
    bin, gateway, origin, release_dir, Gateway, GatewayBuilder, OriginBuilder, Process,
};
pub use raw::{body_of, get_json, RawClient};
pub use scripted::{json_backend, page_server, unused_port, OriginConn, ScriptedOrigin};
pub use temp::{TempDir, TempPath};

/// How long any single step of a test may wait before it fails instead of hanging.
pub const STEP: std::time::Duration = std::time::Duration::from_secs(10);
