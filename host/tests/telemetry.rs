//! Metrics scraped after real traffic, and the access log.

use serde_json::json;
use testkit::{body_of, gateway, json_backend, origin, RawClient};

#[tokio::test]
async fn metrics_count_requests_and_streams_after_traffic() {
    let origin = origin().interval_ms(20).run();
    let backend = json_backend(200, r#"{"answer":42}"#).await;
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .endpoint(json!({"endpoint": "/api/{id}", "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/v/{id}"}]}))
        .root_extra("telemetry/metrics", json!({"listen_address": "127.0.0.1:0"}))
        .run();
    for path in ["/api/1", "/api/2", "/nowhere"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        RawClient::exchange(gateway.addr, request).await;
    }
    let mut stream = RawClient::get(gateway.addr, "/sse/m", &[]).await;
    // Event 3 is counted before event 4 is written (one task does both, in order).
    stream.read_until(b"id: 4\n").await;

    let text = gateway.metrics().await;
    for line in [
        r#"krakend_requests_total{endpoint="/api/{id}",method="GET",status="200"} 2"#,
        r#"krakend_requests_total{endpoint="unmatched",method="GET",status="404"} 1"#,
        r#"krakend_request_duration_seconds_count{endpoint="/api/{id}",method="GET",status="200"} 2"#,
        r#"krakend_plugin_active{plugin="krakend-server-plugin-streaming"} 1"#,
        r#"krakend_plugin_streams{plugin="krakend-server-plugin-streaming",route="/sse/{id}"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\nnot in\n{text}");
    }
    let events = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"krakend_plugin_events{plugin="krakend-server-plugin-streaming",route="/sse/{id}"} "#))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("an events counter");
    assert!(events >= 3, "{events}");
    // The access log has a line per request.
    gateway.process.wait_for_log("GET /api/1 200 ");
    gateway.process.wait_for_log("GET /nowhere 404 ");
    // Each names the route the decision chose.
    let log = gateway.process.log();
    for (request, route) in [
        ("GET /api/1 200 ", "s /api/{id}"),
        ("GET /nowhere 404 ", "s unmatched"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(request) && l.ends_with(route)),
            "{request}...{route} in {log}"
        );
    }
}

#[tokio::test]
async fn logging_takes_its_prefix_and_debug_mode_serves_the_debug_endpoint() {
    let gateway = gateway()
        .root_extra(
            "telemetry/logging",
            json!({"level": "DEBUG", "prefix": "[KRAKEND]", "stdout": true}),
        )
        .debug()
        .run();
    let response = RawClient::exchange(
        gateway.addr,
        b"GET /__debug/anything?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n\
          Cookie: session=s3cret-cookie\r\nX-Visible: shown\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(body_of(&response), br#"{"message":"pong"}"#);
    gateway
        .process
        .wait_for_log("/__debug/: GET /__debug/anything?x=1");
    let log = gateway.process.log();
    assert!(log.lines().all(|l| l.starts_with("[KRAKEND] ")), "{log}");
    // Credentials are logged by name only.
    assert!(!log.contains("s3cret"), "{log}");
    for logged in [
        r#""authorization": "[redacted]""#,
        r#""cookie": "[redacted]""#,
        r#""x-visible": "shown""#,
    ] {
        assert!(log.contains(logged), "{logged} in {log}");
    }

    let plain = testkit::gateway().run();
    assert!(
        RawClient::exchange(
            plain.addr,
            b"GET /__debug/anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .starts_with(b"HTTP/1.1 404 "),
        "only with -d"
    );
}

#[tokio::test]
async fn stats_are_served_on_the_metrics_listener_only() {
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", "http://127.0.0.1:9")
        .run();
    let request = b"GET /__stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let public = RawClient::exchange(gateway.addr, request).await;
    assert!(
        public.starts_with(b"HTTP/1.1 404 "),
        "{}",
        String::from_utf8_lossy(&public)
    );
    let metrics = RawClient::exchange(gateway.metrics_addr(), request).await;
    assert!(metrics.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let stats: serde_json::Value = serde_json::from_slice(body_of(&metrics)).unwrap();
    assert_eq!(
        stats["plugins"]["krakend-server-plugin-streaming"]["routes"][0]["endpoint"], "/sse/{id}",
        "{stats}"
    );
}
