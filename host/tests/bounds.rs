//! Every resource a client can hold is bounded: silent connections, the number of
//! connections, request bodies and their pace, and what static-filesystem serves.

use serde_json::json;
use testkit::{gateway, json_backend, RawClient};

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_read_header_timeout_and_later_heads_may_idle() {
    let backend = json_backend(200, r#"{"ok":true}"#).await;
    // idle_timeout stays at its 75 s: only read_header_timeout can close within a test step.
    let gateway = gateway()
        .root("read_header_timeout", json!("1s"))
        .endpoint(json!({"endpoint": "/a", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/"}]}))
        .run();
    let silent = RawClient::connect(gateway.addr).await;
    let mut keep_alive = RawClient::connect(gateway.addr).await;
    keep_alive.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    keep_alive.read_until(br#"{"ok":true}"#).await;

    // Accepted alongside the keep-alive connection, the silent one is its clock: once it
    // is closed, the keep-alive connection too is past read_header_timeout since its accept.
    let said = silent.read_to_end().await;
    assert!(
        said.is_empty(),
        "closed without an answer: {}",
        String::from_utf8_lossy(&said)
    );
    keep_alive
        .send(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let second = keep_alive.read_to_end().await;
    let text = String::from_utf8_lossy(&second);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
}

/// The accept backlog of the socket listening on `port`, as the kernel reports it.
fn listen_backlog(port: u16) -> u32 {
    let output = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("running ss (iproute2)");
    let text = String::from_utf8_lossy(&output.stdout);
    // LISTEN  Recv-Q  Send-Q (the backlog)  Local  Peer
    text.split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on port {port}: {text:?}"))
}

#[tokio::test]
async fn the_listener_takes_the_kernels_backlog_or_the_configured_one() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let default = gateway().run();
    assert_eq!(listen_backlog(default.addr.port()), somaxconn);
    let configured = gateway().root("backlog", json!(100)).run();
    assert_eq!(listen_backlog(configured.addr.port()), 100);
}
