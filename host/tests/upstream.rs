//! What the pipeline writes upstream, tried as an attacker would, and what a client learns
//! when an upstream fails: general terms, never the backend's address.

use serde_json::json;
use testkit::{body_of, gateway, unused_port, RawClient, ScriptedOrigin};

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

fn text(response: &[u8]) -> String {
    String::from_utf8_lossy(response).into_owned()
}

#[tokio::test]
async fn dot_segments_encoded_separators_and_control_bytes_never_reach_the_origin() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = gateway()
        .endpoint(
            json!({"endpoint": "/files/{name}", "output_encoding": "no-op",
            "input_query_strings": ["*"], "input_headers": ["*"],
            "backend": [{"host": [origin.url()], "url_pattern": "/private/public/{name}"}]}),
        )
        .endpoint(json!({"endpoint": "/tree/*", "output_encoding": "no-op",
            "backend": [{"host": [origin.url()], "url_pattern": "/public/{*}"}]}))
        .run();
    let attacks = [
        "/files/..",
        "/files/.",
        "/files/%2e%2E",
        "/files/.%2e",
        "/files/a%2Fb",
        "/files/..%2fsecret",
        "/files/a%5Cb",
        "/files/a%5cb",
        "/files/a%00b",
        "/files/a%0d%0aX-Injected:%201",
        "/files/a?x=%0d%0aAuthorization:%20Bearer%20forged",
        "/files/a?x=1%00",
        "/tree/a/../../private",
        "/tree/a/%2e%2e/private",
        "/tree/a%2f..%2fprivate",
        "/tree//private",
        "/tree/a//b",
    ];
    for attack in attacks {
        let response = RawClient::exchange(gateway.addr, get(attack)).await;
        assert!(
            response.starts_with(b"HTTP/1.1 400 "),
            "{attack}: {}",
            text(&response)
        );
        assert!(
            text(body_of(&response)).starts_with("bad request: "),
            "{attack}: {}",
            text(&response)
        );
    }
    // A clean request is the first thing the origin ever sees.
    let request = tokio::spawn(RawClient::exchange(gateway.addr, get("/tree/a/b.txt?x=1")));
    let mut conn = origin.accept().await;
    assert!(
        conn.head.starts_with("GET /public/a/b.txt HTTP/1.1\r\n"),
        "{}",
        conn.head
    );
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        .await;
    assert_eq!(body_of(&request.await.unwrap()), b"ok");
    gateway
        .process
        .wait_for_log("[ENDPOINT: /files/{name}] GET /files/.. from ");
}

#[tokio::test]
async fn an_upstream_failure_is_told_in_general_terms_and_logged_in_full() {
    let port = unused_port();
    let unreachable = format!("http://127.0.0.1:{port}");
    let mut silent = ScriptedOrigin::start().await;
    let gateway = gateway()
        .endpoint(json!({"endpoint": "/stream", "output_encoding": "no-op",
            "backend": [{"host": [unreachable], "url_pattern": "/s"}]}))
        .endpoint(json!({"endpoint": "/merged", "backend": [{"host": [unreachable], "url_pattern": "/m"}]}))
        .endpoint(json!({"endpoint": "/slow", "output_encoding": "no-op", "timeout": "200ms",
            "backend": [{"host": [silent.url()], "url_pattern": "/s"}]}))
        .run();
    let cases = [
        ("/stream", "HTTP/1.1 502 ", "upstream unavailable\n"),
        ("/merged", "HTTP/1.1 500 ", "upstream failed\n"),
    ];
    for (path, status, body) in cases {
        let response = RawClient::exchange(gateway.addr, get(path)).await;
        assert!(
            response.starts_with(status.as_bytes()),
            "{}",
            text(&response)
        );
        assert_eq!(text(body_of(&response)), body);
        assert!(
            !text(&response).contains(&port.to_string()),
            "{}",
            text(&response)
        );
    }
    let (response, _held) = tokio::join!(
        RawClient::exchange(gateway.addr, get("/slow")),
        silent.accept()
    );
    assert!(
        response.starts_with(b"HTTP/1.1 504 "),
        "{}",
        text(&response)
    );
    assert_eq!(text(body_of(&response)), "upstream timed out\n");
    assert!(!text(&response).contains(&silent.addr.port().to_string()));
    // The operator gets the backend and the cause.
    gateway.process.wait_for_log(&format!(
        "[ENDPOINT: /stream] backend http://127.0.0.1:{port}/s failed: "
    ));
}
