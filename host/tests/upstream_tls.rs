//! https origins (the root `client_tls`): relayed, fanned out (its catch-up from the origin
//! too) and through the pipeline, verified against a test CA; a certificate of another CA
//! is a 502 with the cause in the log; client certificates for an origin that asks for
//! them; `allow_insecure_connections` warned about at start.

use serde_json::{json, Value};
use testkit::{
    body_of, gateway, ClientAuth, Gateway, GatewayBuilder, OriginConn, RawClient, ScriptedOrigin,
    TestPki, ALPN_HTTP1,
};

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// An https origin showing `cert`, asking for client certificates or not.
async fn https_origin(
    pki: &TestPki,
    cert: &testkit::CertKey,
    client_auth: ClientAuth,
) -> ScriptedOrigin {
    ScriptedOrigin::start_tls(pki.server_config(cert, ALPN_HTTP1, client_auth)).await
}

/// `client_tls` trusting the PKI's CA only, with `extra` keys.
fn trusting_the_test_ca(pki: &TestPki, extra: Value) -> Value {
    let mut block = json!({"ca_certs": [pki.ca], "disable_system_ca_pool": true});
    for (key, value) in extra.as_object().unwrap() {
        block[key] = value.clone();
    }
    block
}

/// A gateway with `client_tls`, relaying `/sse/{id}` and fanning out `/ticker/{room}` from
/// `origin`, and a `no-op` and a `json` endpoint on it.
fn gateway_to(origin: &str, client_tls: Value) -> GatewayBuilder {
    let routes = json!([
        {"endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}", "backend_host": origin},
        {"endpoint": "/ticker/{room}", "backend_url_pattern": "/rooms/{room}",
         "backend_host": origin, "fanout": true, "replay": 3},
    ]);
    gateway()
        .root("client_tls", client_tls)
        .plugin_block(PLUGIN, json!({"reconnect_delay": "20ms", "routes": routes}))
        .endpoint(json!({"endpoint": "/raw", "output_encoding": "no-op",
            "backend": [{"host": [origin], "url_pattern": "/raw"}]}))
        .endpoint(json!({"endpoint": "/merged",
            "backend": [{"host": [origin], "url_pattern": "/json"}]}))
}

fn events(ids: std::ops::RangeInclusive<u32>) -> String {
    ids.map(|i| format!("id: {i}\ndata: tick {i}\n\n"))
        .collect()
}

async fn event_stream(origin: &mut ScriptedOrigin) -> OriginConn {
    let mut conn = origin.accept().await;
    conn.send_event_stream_head().await;
    conn
}

async fn get(gateway: &Gateway, path: &str) -> Vec<u8> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    RawClient::exchange(gateway.addr, request).await
}

fn text(response: &[u8]) -> String {
    String::from_utf8_lossy(response).into_owned()
}

#[tokio::test]
async fn an_https_origin_is_relayed_byte_exact_and_resumed_with_last_event_id() {
    let pki = TestPki::new();
    let mut origin = https_origin(&pki, &pki.server, ClientAuth::None).await;
    // A name, not an address: SNI carries it, and the certificate must hold it.
    let gateway = gateway_to(
        &origin.url_with_host("localhost"),
        trusting_the_test_ca(&pki, json!({})),
    )
    .run();
    let mut client = RawClient::get(gateway.addr, "/sse/a", &["Last-Event-ID: 0"]).await;
    let mut upstream = event_stream(&mut origin).await;
    assert!(
        upstream.head.starts_with("GET /events/a HTTP/1.1\r\n"),
        "{}",
        upstream.head
    );
    assert_eq!(upstream.header("last-event-id"), Some("0"));
    // Several events in one record, and one split over two records.
    upstream.send(events(1..=2).as_bytes()).await;
    upstream.send(b"id: 3\ndata: ti").await;
    upstream.send(b"ck 3\n\n").await;
    client.read_until(b"id: 3\ndata: tick 3\n\n").await;
    // A clean close (close_notify): the stream resumes from the last id, over TLS again.
    upstream.close().await;
    let mut resumed = event_stream(&mut origin).await;
    assert_eq!(
        resumed.header("last-event-id"),
        Some("3"),
        "{}",
        resumed.head
    );
    resumed.send(events(4..=4).as_bytes()).await;
    client.read_until(b"id: 4\ndata: tick 4\n\n").await;
    let received = text(&client.received);
    assert!(received.starts_with("HTTP/1.1 200 "), "{received}");
    assert_eq!(body_of(&client.received), events(1..=4).as_bytes());
}

#[tokio::test]
async fn an_https_origin_is_fanned_out_and_a_late_client_caught_up_from_it() {
    let pki = TestPki::new();
    let mut origin = https_origin(&pki, &pki.server, ClientAuth::None).await;
    let gateway = gateway_to(&origin.url(), trusting_the_test_ca(&pki, json!({}))).run();
    let mut first = RawClient::get(gateway.addr, "/ticker/a", &[]).await;
    let mut upstream = event_stream(&mut origin).await;
    assert!(
        upstream.head.starts_with("GET /rooms/a "),
        "{}",
        upstream.head
    );
    let mut second = RawClient::get(gateway.addr, "/ticker/a", &[]).await;
    second.read_until(b"text/event-stream").await;
    // In step: a client more than the ring (3 events) behind would be dropped as slow.
    for i in 1..=6 {
        upstream.send(events(i..=i).as_bytes()).await;
        for client in [&mut first, &mut second] {
            client
                .read_until(format!("id: {i}\ndata: tick {i}\n\n").as_bytes())
                .await;
        }
    }
    for client in [&first, &second] {
        assert_eq!(body_of(&client.received), events(1..=6).as_bytes());
    }
    // The ring holds 4 to 6: id 2 is read from the origin, on an https upstream of its own.
    let mut late = RawClient::get(gateway.addr, "/ticker/a", &["Last-Event-ID: 2"]).await;
    let mut catch_up = event_stream(&mut origin).await;
    assert_eq!(
        catch_up.header("last-event-id"),
        Some("2"),
        "{}",
        catch_up.head
    );
    catch_up.send(events(3..=4).as_bytes()).await;
    late.read_until(b"id: 6\ndata: tick 6\n\n").await;
    upstream.send(events(7..=7).as_bytes()).await;
    late.read_until(b"id: 7\ndata: tick 7\n\n").await;
    assert_eq!(body_of(&late.received), events(3..=7).as_bytes());
}

#[tokio::test]
async fn the_pipeline_calls_https_backends_no_op_and_json() {
    let pki = TestPki::new();
    let mut origin = https_origin(&pki, &pki.server, ClientAuth::None).await;
    let gateway = gateway_to(&origin.url(), trusting_the_test_ca(&pki, json!({}))).run();
    let (response, ()) = tokio::join!(get(&gateway, "/raw"), async {
        let mut conn = origin.accept().await;
        assert!(
            conn.head.starts_with("GET /raw HTTP/1.1\r\n"),
            "{}",
            conn.head
        );
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .await;
    });
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        text(&response)
    );
    assert_eq!(body_of(&response), b"hello");
    let (response, ()) = tokio::join!(get(&gateway, "/merged"), async {
        let mut conn = origin.accept().await;
        let body = r#"{"over":"tls"}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.send(answer.as_bytes()).await;
    });
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        text(&response)
    );
    assert_eq!(body_of(&response), br#"{"over":"tls"}"#);
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_a_502_with_the_cause_in_the_log() {
    let pki = TestPki::new();
    let mut origin = https_origin(&pki, &pki.wrong_server, ClientAuth::None).await;
    let gateway = gateway_to(&origin.url(), trusting_the_test_ca(&pki, json!({}))).run();
    let relayed = get(&gateway, "/sse/a").await;
    assert!(relayed.starts_with(b"HTTP/1.1 502 "), "{}", text(&relayed));
    assert!(origin.handshake_failure().await.contains("UnknownCA"));
    gateway.process.wait_for_log(&format!(
        "upstream {}/events/a: TLS handshake: invalid peer certificate: UnknownIssuer",
        origin.url()
    ));
    let passed = get(&gateway, "/raw").await;
    assert!(passed.starts_with(b"HTTP/1.1 502 "), "{}", text(&passed));
    gateway.process.wait_for_log(&format!(
        "[ENDPOINT: /raw] backend {}/raw failed: ",
        origin.url()
    ));
    gateway
        .process
        .wait_for_log_count("invalid peer certificate: UnknownIssuer", 2);
    assert!(
        !text(&passed).contains("UnknownIssuer"),
        "the client is told in general terms: {}",
        text(&passed)
    );
}

#[tokio::test]
async fn client_certificates_are_shown_to_an_origin_that_requires_them() {
    let pki = TestPki::new();
    let mut origin = https_origin(&pki, &pki.server, ClientAuth::Required).await;
    let cert = json!({"certificate": pki.client.cert, "private_key": pki.client.key});
    let with = gateway_to(
        &origin.url(),
        trusting_the_test_ca(&pki, json!({"client_certs": [cert]})),
    )
    .run();
    let mut client = RawClient::get(with.addr, "/sse/a", &[]).await;
    let mut upstream = event_stream(&mut origin).await;
    assert_eq!(upstream.client_certificates, 1);
    upstream.send(events(1..=1).as_bytes()).await;
    client.read_until(b"id: 1\ndata: tick 1\n\n").await;
    let (passed, ()) = tokio::join!(get(&with, "/raw"), async {
        let mut conn = origin.accept().await;
        assert_eq!(conn.client_certificates, 1);
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
    });
    assert_eq!(body_of(&passed), b"ok", "{}", text(&passed));

    let without = gateway_to(&origin.url(), trusting_the_test_ca(&pki, json!({}))).run();
    let refused = get(&without, "/sse/a").await;
    assert!(refused.starts_with(b"HTTP/1.1 502 "), "{}", text(&refused));
    let why = origin.handshake_failure().await;
    assert!(why.contains("peer sent no certificates"), "{why}");
    // Under TLS 1.3 the client's side of the handshake is over before the origin judges
    // it: the refusal is an alert in place of the response.
    without.process.wait_for_log(&format!(
        "upstream {}/events/a: reading the response: received fatal alert: CertificateRequired",
        origin.url()
    ));
    let refused = get(&without, "/raw").await;
    assert!(refused.starts_with(b"HTTP/1.1 502 "), "{}", text(&refused));
    origin.handshake_failure().await;
    without
        .process
        .wait_for_log_count("received fatal alert: CertificateRequired", 2);
}

#[tokio::test]
async fn allow_insecure_connections_is_warned_about_and_takes_any_certificate() {
    let pki = TestPki::new();
    let mut origin = https_origin(&pki, &pki.wrong_server, ClientAuth::None).await;
    let gateway = gateway_to(
        &origin.url(),
        json!({"allow_insecure_connections": true, "disable_system_ca_pool": true}),
    )
    .run();
    gateway
        .process
        .wait_for_log("client_tls.allow_insecure_connections: the certificates of https backends");
    let mut client = RawClient::get(gateway.addr, "/sse/a", &[]).await;
    let mut upstream = event_stream(&mut origin).await;
    upstream.send(events(1..=1).as_bytes()).await;
    client.read_until(b"id: 1\ndata: tick 1\n\n").await;
    let (passed, ()) = tokio::join!(get(&gateway, "/raw"), async {
        let mut conn = origin.accept().await;
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
    });
    assert_eq!(body_of(&passed), b"ok", "{}", text(&passed));
}
