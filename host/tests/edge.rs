//! At the edge: TLS on the gateway's port (HTTP/1.1 and HTTP/2 by ALPN), client
//! certificates, HTTP/2 in cleartext (`use_h2c`), and what a hostile or broken client on
//! the TLS port can do (nothing to the others). curl and an h2 client, as users run them.

use serde_json::json;
use testkit::{curl, gateway, json_backend, GatewayBuilder, H2Client, RawClient, TestPki, ALPN_H2};

/// A gateway whose port speaks TLS with the PKI's server certificate, and one endpoint
/// `/api` answered by a JSON backend.
async fn tls_gateway(pki: &TestPki, tls: serde_json::Value) -> GatewayBuilder {
    let backend = json_backend(200, r#"{"ok":true}"#).await;
    let mut block = json!({"public_key": pki.server.cert, "private_key": pki.server.key});
    for (key, value) in tls.as_object().unwrap() {
        block[key] = value.clone();
    }
    gateway().root("tls", block).endpoint(json!({
        "endpoint": "/api",
        "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/"}]
    }))
}

/// curl to `https://localhost:PORT{path}`, trusting the PKI's CA, `localhost` pinned to
/// the gateway's address (not whatever else listens on `::1`).
fn https(gateway: &testkit::Gateway, pki: &TestPki, path: &str) -> testkit::Curl {
    let url = format!("https://localhost:{}{path}", gateway.addr.port());
    curl(&url)
        .cacert(&pki.ca)
        .resolve("localhost", gateway.addr)
}

#[tokio::test]
async fn tls_serves_the_pipeline_over_http1_and_http2() {
    let pki = TestPki::new();
    let gateway = tls_gateway(&pki, json!({})).await.run();
    let h1 = https(&gateway, &pki, "/api").http1_1().run().await;
    assert_eq!(
        (h1.status, h1.http_version.as_str()),
        (200, "1.1"),
        "{h1:?}"
    );
    assert_eq!(h1.body, br#"{"ok":true}"#);
    let h2 = https(&gateway, &pki, "/api").http2().run().await;
    assert_eq!((h2.status, h2.http_version.as_str()), (200, "2"), "{h2:?}");
    assert_eq!(h2.body, br#"{"ok":true}"#);
    // The same route decision on both: an unknown path is the pipeline's 404.
    let missing = https(&gateway, &pki, "/nope").http2().run().await;
    assert_eq!(missing.status, 404, "{missing:?}");
    // Several streams on one HTTP/2 connection.
    let mut client = H2Client::connect_tls(gateway.addr, pki.client_config(ALPN_H2)).await;
    for _ in 0..3 {
        let mut stream = client.get("/__health", &[]).await;
        assert_eq!(stream.status, 200);
        stream.read_until(br#"{"status":"ok"}"#).await;
    }
}

#[tokio::test]
async fn garbage_plain_http_and_silence_on_the_tls_port_close_only_that_connection() {
    let pki = TestPki::new();
    let gateway = tls_gateway(&pki, json!({}))
        .await
        .root("read_header_timeout", json!("1s"))
        .run();
    // A stream open over TLS all along.
    let mut live = H2Client::connect_tls(gateway.addr, pki.client_config(ALPN_H2)).await;

    let mut plain = RawClient::connect(gateway.addr).await;
    plain.send(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let said = plain.read_to_end().await;
    assert!(
        !said.starts_with(b"HTTP/1.1 200"),
        "plain HTTP is not served on the TLS port: {}",
        String::from_utf8_lossy(&said)
    );
    let mut garbage = RawClient::connect(gateway.addr).await;
    garbage.send(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]).await;
    garbage.read_to_end().await;
    // A client that connects and never says hello is closed at read_header_timeout.
    let silent = RawClient::connect(gateway.addr).await;
    assert!(silent.read_to_end().await.is_empty());

    let mut stream = live.get("/__health", &[]).await;
    stream.read_until(br#"{"status":"ok"}"#).await;
    let after = https(&gateway, &pki, "/api").run().await;
    assert_eq!(after.status, 200, "{after:?}");
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_trusted_certificate() {
    let pki = TestPki::new();
    let gateway = tls_gateway(
        &pki,
        json!({"enable_mtls": true, "ca_certs": [pki.client_ca]}),
    )
    .await
    .run();
    let anonymous = https(&gateway, &pki, "/api").run().await;
    assert_eq!(anonymous.status, 0, "{anonymous:?}");
    assert_ne!(anonymous.exit_code, 0, "{anonymous:?}");
    let wrong = https(&gateway, &pki, "/api")
        .cert(&pki.wrong_client)
        .run()
        .await;
    assert_eq!(wrong.status, 0, "{wrong:?}");
    for version in ["1.1", "2"] {
        let request = https(&gateway, &pki, "/api").cert(&pki.client);
        let request = if version == "2" {
            request.http2()
        } else {
            request.http1_1()
        };
        let served = request.run().await;
        assert_eq!(
            (served.status, served.http_version.as_str()),
            (200, version)
        );
    }
}

#[tokio::test]
async fn h2c_with_prior_knowledge_beside_http1_on_the_plain_port() {
    let backend = json_backend(200, r#"{"ok":true}"#).await;
    let gateway = gateway()
        .root("use_h2c", json!(true))
        .endpoint(json!({
            "endpoint": "/api",
            "backend": [{"host": [format!("http://{backend}")], "url_pattern": "/"}]
        }))
        .run();
    let url = format!("http://127.0.0.1:{}/api", gateway.addr.port());
    let h2c = curl(&url).http2_prior_knowledge().run().await;
    assert_eq!(
        (h2c.status, h2c.http_version.as_str()),
        (200, "2"),
        "{h2c:?}"
    );
    assert_eq!(h2c.body, br#"{"ok":true}"#);
    let h1 = curl(&url).run().await;
    assert_eq!(
        (h1.status, h1.http_version.as_str()),
        (200, "1.1"),
        "{h1:?}"
    );
    // A head that starts like the preface but is not one is still HTTP/1.1's to judge.
    let mut almost = RawClient::connect(gateway.addr).await;
    almost
        .send(b"PRI /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let answer = almost.read_to_end().await;
    assert!(
        answer.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn an_http2_connection_without_streams_is_closed_at_idle_timeout() {
    let gateway = gateway()
        .root("use_h2c", json!(true))
        .root("idle_timeout", json!("1s"))
        .run();
    let mut client = H2Client::connect(gateway.addr).await;
    let mut stream = client.get("/__health", &[]).await;
    stream.read_until(br#"{"status":"ok"}"#).await;
    // GOAWAY, then the close: what an idle HTTP/1.1 connection gets, in HTTP/2's words.
    client.closed().await.unwrap();
}

/// `read_timeout` bounds an HTTP/2 request's body as an HTTP/1.1 one's: a body that
/// stalls gets 408, on a `json` endpoint and on a `no-op` one (which has started the
/// backend call and streams the body to it).
#[tokio::test]
async fn an_http2_request_body_that_stalls_gets_408_at_read_timeout() {
    let mut backend = testkit::ScriptedOrigin::start().await;
    let gateway = gateway()
        .root("use_h2c", json!(true))
        .root("read_timeout", json!("1s"))
        .endpoint(
            json!({"endpoint": "/json", "method": "POST", "timeout": "5s",
                         "backend": [{"host": [backend.url()], "url_pattern": "/j"}]}),
        )
        .endpoint(
            json!({"endpoint": "/raw", "method": "POST", "timeout": "5s",
                         "output_encoding": "no-op",
                         "backend": [{"host": [backend.url()], "url_pattern": "/r"}]}),
        )
        .run();
    let mut client = H2Client::connect(gateway.addr).await;
    for path in ["/json", "/raw"] {
        let mut upload = client
            .upload("POST", path, &[("content-length", "1000")])
            .await;
        upload.send(b"part of the body", false);
        let _waiting = match path {
            // no-op streams the body to the backend, which waits for the rest.
            "/raw" => Some(backend.accept().await),
            _ => None,
        };
        let response = upload.response().await;
        assert_eq!(response.status, 408, "{path}");
    }
}

/// `http2_ping_interval`: a client that answers the host's PINGs (every h2 client does, as
/// browsers do) keeps its connection and its stream across many of them; one that never
/// answers is closed once a PING stays unanswered for an interval.
#[tokio::test]
async fn an_http2_connection_that_does_not_answer_pings_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = testkit::origin().interval_ms(100).run();
    let gateway = gateway()
        .root("use_h2c", json!(true))
        .root("http2_ping_interval", json!("100ms"))
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .run();
    let mut client = H2Client::connect(gateway.addr).await;
    let mut stream = client.get("/sse/pinged", &[]).await;
    // 10 events at 100 ms: about ten PINGs, each answered.
    stream.read_until_count(b"\n\n", 10).await;

    let mut silent = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    // The preface and an empty SETTINGS frame, then never a byte more.
    silent.write_all(host::http2::PREFACE).await.unwrap();
    silent
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(testkit::STEP, async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    assert!(closed.await.is_ok(), "the silent connection stayed open");
    // Among the frames the host sent: a PING (type 6) that is not an ACK.
    let mut frames = &received[..];
    let mut pinged = false;
    while frames.len() >= 9 {
        let length =
            usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
        pinged |= frames[3] == 6 && frames[4] & 1 == 0;
        frames = &frames[(9 + length).min(frames.len())..];
    }
    assert!(pinged, "no PING in {received:?}");
}
