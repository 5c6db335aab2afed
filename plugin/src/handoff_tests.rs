//! The plugin driven in-process as the host drives it: a connection handed over through
//! [`ServerPlugin::hijack`] with what the host decided about it (here, when the JWT that
//! authorised it expires), against a scripted origin.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use abi::{Claimed, ServerPlugin};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::RStr;
use serde_json::{json, Value};
use testkit::{body_of, ScriptedOrigin, STEP};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::StreamingPlugin;

/// Every plugin line logged by the tests of this process (they share it: each test looks
/// for its own paths).
static LOG: Mutex<String> = Mutex::new(String::new());

extern "C" fn capture(_: abi::LogLevel, line: RStr<'_>) {
    let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    log.push_str(line.as_str());
    log.push('\n');
}

#[derive(Debug)]
struct Uncounted;
impl abi::FfiConnectionSlot for Uncounted {}

fn plugin(block: Value) -> StreamingPlugin {
    StreamingPlugin::new(&block.to_string(), abi::Logger { log: capture }).unwrap()
}

/// Connects a client and hands the server's end to `plugin` as the host would, with the
/// request `GET path` on `route`; returns the client's end.
async fn hand_over(
    plugin: &StreamingPlugin,
    route: usize,
    path: &str,
    token_expires_at: Option<Instant>,
) -> TcpStream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, peer) = listener.accept().unwrap();
    let head = abi::RequestHead {
        method: "GET".into(),
        path: path.into(),
        query: Default::default(),
        headers: Default::default(),
        peer: peer.to_string().as_str().into(),
    };
    plugin
        .hijack(Claimed {
            client: abi::Client::Tcp(server),
            http_version: abi::HttpVersion::Http11,
            route,
            head,
            read_ahead: Vec::new(),
            response_headers: Vec::new(),
            token_expires_at,
            slot: abi::ConnectionSlot::from_value(Uncounted, TD_Opaque),
            max_body_bytes: 0,
            body_deadline: None,
        })
        .unwrap();
    client
}

/// Everything the plugin writes until it closes the connection.
async fn read_to_close(mut client: TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(STEP, client.read_to_end(&mut received))
        .await
        .expect("the plugin did not close the stream")
        .unwrap();
    String::from_utf8(received).unwrap()
}

/// Reads until `needle` has arrived.
async fn read_until(client: &mut TcpStream, received: &mut Vec<u8>, needle: &[u8]) {
    let mut buf = [0u8; 4096];
    while !received.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(STEP, client.read(&mut buf))
            .await
            .expect("waiting for the stream")
            .unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(received));
        received.extend_from_slice(&buf[..n]);
    }
}

fn drops(plugin: &StreamingPlugin, route: usize) -> Value {
    let stats: Value = serde_json::from_str(&plugin.stats()).unwrap();
    stats["routes"][route]["drops"].clone()
}

fn wait_for_log(text: &str) {
    let deadline = Instant::now() + STEP;
    while !LOG.lock().unwrap().contains(text) {
        assert!(Instant::now() < deadline, "{text:?} never logged");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const BYE: &str = "event: bye\ndata: token\n\n";

#[tokio::test]
async fn a_relayed_stream_ends_when_its_token_expires_at_an_event_boundary() {
    let mut origin = ScriptedOrigin::start().await;
    let plugin = plugin(json!({
        "endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}",
        "backend_host": origin.url(), "shutdown_event": "event: bye\ndata: token",
    }));
    let opened = Instant::now();
    let expires = opened + Duration::from_secs(2);
    let client = hand_over(&plugin, 0, "/sse/expiring", Some(expires)).await;
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    // At the expiry the origin is in the middle of event 3.
    upstream
        .send(b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: unfinis")
        .await;
    let response = read_to_close(client).await;
    assert!(Instant::now() >= expires, "ended before the token expired");
    assert_eq!(
        body_of(response.as_bytes()),
        format!("id: 1\ndata: a\n\nid: 2\ndata: b\n\n{BYE}").as_bytes(),
        "{response}"
    );
    assert!(upstream.closed_within(STEP).await, "the upstream is closed");
    assert_eq!(drops(&plugin, 0)["token_expired"], 1);
    wait_for_log("GET /sse/expiring 200 stream ended (the token expired) after ");
}

#[tokio::test]
async fn a_token_that_expires_while_the_relay_waits_to_reconnect_ends_the_stream() {
    let mut origin = ScriptedOrigin::start().await;
    let plugin = plugin(json!({
        "endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}",
        "backend_host": origin.url(), "shutdown_event": "event: bye\ndata: token",
        "reconnect_delay": "1m", "max_reconnect_delay": "1m",
    }));
    let expires = Instant::now() + Duration::from_secs(2);
    let client = hand_over(&plugin, 0, "/sse/waiting", Some(expires)).await;
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    upstream.send(b"id: 1\ndata: a\n\n").await;
    drop(upstream);
    let response = read_to_close(client).await;
    assert_eq!(
        body_of(response.as_bytes()),
        format!("id: 1\ndata: a\n\n{BYE}").as_bytes()
    );
    assert_eq!(drops(&plugin, 0)["token_expired"], 1);
    assert!(
        origin.quiet_for(Duration::from_millis(100)).await,
        "no reconnection was made for an expired token"
    );
}

#[tokio::test]
async fn a_fan_out_client_ends_when_its_token_expires_and_the_others_go_on() {
    let mut origin = ScriptedOrigin::start().await;
    let plugin = plugin(json!({
        "endpoint": "/live/{id}", "backend_url_pattern": "/events/{id}",
        "backend_host": origin.url(), "fanout": true,
        "shutdown_event": "event: bye\ndata: token",
    }));
    let expires = Instant::now() + Duration::from_secs(2);
    let expiring = hand_over(&plugin, 0, "/live/room", Some(expires)).await;
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    let mut staying = hand_over(&plugin, 0, "/live/room", None).await;
    let mut received = Vec::new();
    read_until(&mut staying, &mut received, b"\r\n\r\n").await;
    upstream
        .send(b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: unfinis")
        .await;
    let response = read_to_close(expiring).await;
    assert!(Instant::now() >= expires, "ended before the token expired");
    assert_eq!(
        body_of(response.as_bytes()),
        format!("id: 1\ndata: a\n\nid: 2\ndata: b\n\n{BYE}").as_bytes(),
        "{response}"
    );
    upstream.send(b"hed\n\n").await;
    read_until(&mut staying, &mut received, b"data: unfinished\n\n").await;
    assert_eq!(
        body_of(&received),
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: unfinished\n\n"
    );
    assert_eq!(drops(&plugin, 0)["token_expired"], 1);
    wait_for_log("GET /live/room 200 stream ended (the token expired) after ");
}
