//! Values a client sends never reach an origin unclean: a CR, LF, NUL or other control byte
//! (raw or percent-encoded) in the query, the `Last-Event-ID` (header or `?lastEventId=`),
//! a forwarded header or a path parameter, and path parameters that are `..` or hold an
//! encoded `/` or `\`, are refused with 400 by the streaming plugin before it dials or
//! joins anything. Each attack is tried as a client would, against a scripted origin that
//! records what reaches it.

use std::time::Duration;

use serde_json::json;
use testkit::{body_of, gateway, Gateway, RawClient, ScriptedOrigin};

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// Long enough for a request the gateway wrongly forwarded to reach the origin.
const QUIET: Duration = Duration::from_millis(300);

/// A relay route `/sse/{id}`, a wildcard relay route `/n/*` and a fan-out route
/// `/live/{id}`, all to `origin`, with CORS for `https://app.example`.
fn gateway_to(origin: &ScriptedOrigin) -> Gateway {
    gateway()
        .plugin_block(
            PLUGIN,
            json!({"backend_host": origin.url(), "routes": [
                {"endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}",
                 "forward_headers": ["Last-Event-ID", "X-Trace"]},
                {"endpoint": "/n/*", "backend_url_pattern": "/feed/{*}"},
                {"endpoint": "/live/{id}", "backend_url_pattern": "/events/{id}", "fanout": true},
            ]}),
        )
        .root_extra(
            "security/cors",
            json!({"allow_origins": ["https://app.example"]}),
        )
        .run()
}

/// Sends `GET target` with `extra` header lines and returns the whole answer.
async fn get(gateway: &Gateway, target: &str, extra: &[u8]) -> String {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nConnection: close\r\n"
    )
    .into_bytes();
    request.extend_from_slice(extra);
    request.extend_from_slice(b"\r\n");
    let answer = RawClient::exchange(gateway.addr, request).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_refused(answer: &str, what: &str) {
    assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer}");
    assert!(
        answer.contains("Access-Control-Allow-Origin: https://app.example\r\n"),
        "{what}: the host's CORS headers are on the refusal: {answer}"
    );
}

#[tokio::test]
async fn the_last_event_id_smuggling_exploit_on_a_fan_out_route_is_refused() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = gateway_to(&origin);
    let exploit = "/live/x?lastEventId=7%0d%0aAuthorization:%20Bearer%20forged%0d%0a%0d%0a\
                   GET%20/smuggled%20HTTP/1.1%0d%0aHost:%20origin%0d%0a%0d%0a";
    let answer = get(&gateway, exploit, b"").await;
    assert_refused(&answer, "the exploit");
    assert!(
        body_of(answer.as_bytes()).starts_with(b"bad request"),
        "a general message: {answer}"
    );
    for lone in [
        "/live/x?lastEventId=7%0a",
        "/live/x?lastEventId=7%00",
        "/live/x?lastEventId=7%0D",
        "/live/x?room=a%0aX-Injected:%201",
        "/live/x?room=%7f",
    ] {
        assert_refused(&get(&gateway, lone, b"").await, lone);
    }
    // httparse refuses a control byte in any header value at the gate (the host's 400);
    // the plugin would refuse one that got past it (see the unit tests in `upstream`).
    let header = get(&gateway, "/live/x", b"Last-Event-ID: 7\x01\r\n").await;
    assert!(header.starts_with("HTTP/1.1 400 "), "{header}");
    assert!(
        origin.quiet_for(QUIET).await,
        "no refused request opened a shared upstream"
    );

    // The first clean client opens the shared upstream: one request, nothing injected,
    // and no second request behind it on the connection.
    let mut client = RawClient::get(gateway.addr, "/live/x?lastEventId=5", &[]).await;
    let mut upstream = origin.accept().await;
    assert!(
        upstream.head.starts_with("GET /events/x HTTP/1.1\r\n"),
        "{}",
        upstream.head
    );
    assert_eq!(upstream.header("last-event-id"), Some("5"));
    assert_eq!(upstream.header("authorization"), None, "{}", upstream.head);
    assert_eq!(upstream.head.matches("HTTP/1.1").count(), 1);
    assert!(
        upstream.nothing_more_within(QUIET).await,
        "no smuggled bytes follow the request head"
    );
    upstream.send_event_stream_head().await;
    upstream.send(b"id: 6\ndata: clean\n\n").await;
    client.read_until(b"data: clean\n\n").await;

    let stats = gateway.route_stats("/live/{id}").await;
    assert_eq!(
        stats["drops"]["bad_request"], 6,
        "every refusal of the plugin's is counted: {stats}"
    );
    assert_eq!(stats["sources"], 1, "{stats}");
}

#[tokio::test]
async fn control_bytes_for_a_relayed_upstream_are_refused() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = gateway_to(&origin);
    let mut refused_by_plugin = 0;
    for (target, extra) in [
        ("/sse/a?x=%0d%0aX-Injected:%201", &b""[..]),
        ("/sse/a?x=%00", b""),
        ("/sse/a?x=%1B", b""),
        ("/sse/a?lastEventId=1%0a", b""),
    ] {
        assert_refused(&get(&gateway, target, extra).await, target);
        refused_by_plugin += 1;
    }
    // Header values with a control byte: httparse refuses them at the gate (400 from the
    // host); one that got past it would be refused by the plugin. Nothing goes on.
    for header in [
        &b"Last-Event-ID: 7\x01\r\n"[..],
        b"Last-Event-ID: 7\x7f\r\n",
        b"Last-Event-ID: 7\x00x\r\n",
        b"X-Trace: a\x1bb\r\n",
    ] {
        let answer = get(&gateway, "/sse/a", header).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{:?}: {answer}",
            String::from_utf8_lossy(header)
        );
    }
    assert!(origin.quiet_for(QUIET).await, "nothing reached the origin");
    let stats = gateway.route_stats("/sse/{id}").await;
    assert!(
        stats["drops"]["bad_request"].as_u64().unwrap() >= refused_by_plugin,
        "{stats}"
    );

    // Clean values still go through, tab and non-ASCII bytes included.
    let _client = get_stream(&gateway, "/sse/a?x=%20y", b"X-Trace: a\tb \xc3\xa9\r\n").await;
    let upstream = origin.accept().await;
    assert!(
        upstream
            .head
            .starts_with("GET /events/a?x=%20y HTTP/1.1\r\n"),
        "{}",
        upstream.head
    );
    assert_eq!(upstream.header("x-trace"), Some("a\tb é"));
}

#[tokio::test]
async fn path_parameters_stay_inside_the_backend_pattern() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = gateway_to(&origin);
    for target in [
        "/sse/..",
        "/sse/.",
        "/sse/%2e%2E",
        "/sse/a%2Fb",
        "/sse/a%2fb",
        "/sse/a%5Cb",
        "/sse/a%0d%0a",
        "/sse/a%00",
        "/n/a/../admin",
        "/n/a/b%2F..%2Fc",
        "/live/..",
        "/live/a%2F..",
    ] {
        assert_refused(&get(&gateway, target, b"").await, target);
    }
    assert!(origin.quiet_for(QUIET).await, "nothing reached the origin");

    let _client = get_stream(&gateway, "/n/a/b.c/...", b"").await;
    let upstream = origin.accept().await;
    assert!(
        upstream
            .head
            .starts_with("GET /feed/a/b.c/... HTTP/1.1\r\n"),
        "{}",
        upstream.head
    );
}

/// Opens a stream and leaves it open (the origin sees the request while it lasts).
async fn get_stream(gateway: &Gateway, target: &str, extra: &[u8]) -> RawClient {
    let mut client = RawClient::connect(gateway.addr).await;
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n").into_bytes();
    request.extend_from_slice(extra);
    request.extend_from_slice(b"\r\n");
    client.send(&request).await;
    client
}
