//! Claimed streams at the edge: the streaming plugin serving clients that reach the
//! gateway over TLS (HTTP/1.1 and HTTP/2) and h2c, through the bridged transport. The same
//! session as over TCP: bytes unchanged, a client's reset closes its upstream and nothing
//! else, a stalled HTTP/2 stream is dropped at `client_write_timeout` while its siblings on
//! the same connection go on.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{
    curl, gateway, Gateway, H2Client, ScriptedOrigin, StreamEnd, TestPki, ALPN_H2, STEP,
};

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// The gateway's port with TLS from `pki` (or h2c without), and the plugin's `block`.
fn edge_gateway(pki: Option<&TestPki>, block: Value) -> Gateway {
    let builder = gateway().debug().plugin_block(PLUGIN, block);
    match pki {
        Some(pki) => builder.root(
            "tls",
            json!({"public_key": pki.server.cert, "private_key": pki.server.key}),
        ),
        None => builder.root("use_h2c", json!(true)),
    }
    .run()
}

/// `/sse/{id}` relayed from a scripted origin, without resumption.
async fn relayed(pki: Option<&TestPki>) -> (ScriptedOrigin, Gateway) {
    let origin = ScriptedOrigin::start().await;
    let gateway = edge_gateway(
        pki,
        json!({"endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}",
               "backend_host": origin.url(), "max_reconnects": 0}),
    );
    (origin, gateway)
}

#[tokio::test]
async fn sse_over_tls_http1_is_live_and_byte_exact() {
    let pki = TestPki::new();
    let (mut origin, gateway) = relayed(Some(&pki)).await;
    let url = format!("https://localhost:{}/sse/a", gateway.addr.port());
    let live = curl(&url)
        .cacert(&pki.ca)
        .resolve("localhost", gateway.addr);
    let mut live = live.http1_1().spawn();
    let mut upstream = origin.accept().await;
    assert!(
        upstream.head.starts_with("GET /events/a HTTP/1.1\r\n"),
        "{}",
        upstream.head
    );
    upstream.send_event_stream_head().await;
    let events: [&[u8]; 3] = [b"id: 1\ndata: one\n\n", b"id: 2\r\ndata: t", b"wo\r\n\r\n"];
    upstream.send(events[0]).await;
    live.read_until(b"data: one\n\n").await;
    upstream.send(events[1]).await;
    upstream.send(events[2]).await;
    live.read_until(b"data: two\r\n\r\n").await;
    upstream.close().await;
    let out = live.finish().await;
    assert_eq!(
        (out.status, out.http_version.as_str()),
        (200, "1.1"),
        "{out:?}"
    );
    assert_eq!(out.body, events.concat());
}

#[tokio::test]
async fn http2_streams_share_a_connection_and_a_reset_closes_only_its_upstream() {
    for pki in [Some(TestPki::new()), None] {
        let (mut origin, gateway) = relayed(pki.as_ref()).await;
        let mut client = match &pki {
            Some(pki) => H2Client::connect_tls(gateway.addr, pki.client_config(ALPN_H2)).await,
            None => H2Client::connect(gateway.addr).await,
        };
        // The 20: well under `max_concurrent_streams` (100), so none is refused.
        const STREAMS: usize = 20;
        const CANCELLED: usize = 7;
        let mut streams = Vec::new();
        let mut upstreams = Vec::new();
        for i in 0..STREAMS {
            // The response head waits for the upstream's: answer each before the next.
            let path = format!("/sse/{i}");
            let opening = client.get(&path, &[]);
            let answering = async {
                let mut upstream = origin.accept().await;
                assert!(upstream.head.starts_with(&format!("GET /events/{i} ")));
                upstream.send_event_stream_head().await;
                upstream
            };
            let (stream, upstream) = tokio::join!(opening, answering);
            assert_eq!(stream.status, 200);
            assert_eq!(stream.headers["content-type"], "text/event-stream");
            assert!(!stream.headers.contains_key("connection"));
            streams.push(stream);
            upstreams.push(upstream);
        }
        for (i, upstream) in upstreams.iter_mut().enumerate() {
            upstream.send(format!("data: {i}\n\n").as_bytes()).await;
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            assert_eq!(
                stream.read_until(b"\n\n").await,
                format!("data: {i}\n\n").as_bytes()
            );
        }
        // The client cancels one stream: its upstream closes; the other 19 go on.
        streams[CANCELLED].reset();
        assert!(
            upstreams[CANCELLED]
                .closed_within(Duration::from_secs(1))
                .await,
            "the reset stream's upstream stayed open"
        );
        for (i, upstream) in upstreams
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != CANCELLED)
        {
            upstream
                .send(format!("data: again {i}\n\n").as_bytes())
                .await;
        }
        for (i, stream) in streams
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != CANCELLED)
        {
            stream
                .read_until(format!("data: again {i}\n\n").as_bytes())
                .await;
        }
        // The origin ending a stream ends it cleanly, END_STREAM.
        drop(upstreams.remove(0));
        assert_eq!(streams[0].end().await, StreamEnd::Finished);
    }
}

/// The stalled-client tests' origin (its bench routes write flat out when asked) and a TLS
/// gateway whose route `/b/{id}` drops a client that takes nothing for 2 s.
fn stalling(pki: &TestPki) -> (testkit::Process, Gateway) {
    let origin = testkit::origin().run();
    let gateway = edge_gateway(
        Some(pki),
        json!({"endpoint": "/b/{id}", "backend_url_pattern": "/bench/{id}",
               "backend_host": origin.url(), "client_write_timeout": "2s"}),
    );
    (origin, gateway)
}

/// Whether `/b/{id}` has dropped its stalled client yet, the other one still active;
/// fails the test once [`STEP`] has passed since `started` without the drop.
async fn stalled_one_dropped(gateway: &Gateway, started: std::time::Instant) -> bool {
    let stats = gateway.route_stats("/b/{id}").await;
    if stats["drops"]["client_stalled"] == 1 {
        assert_eq!(stats["active"], 1, "{stats}");
        return true;
    }
    assert!(started.elapsed() < STEP, "never dropped: {stats}");
    false
}

#[tokio::test]
async fn a_stalled_http2_stream_is_reset_at_client_write_timeout_and_its_sibling_goes_on() {
    let pki = TestPki::new();
    let (_origin, gateway) = stalling(&pki);
    let mut client = H2Client::connect_tls(gateway.addr, pki.client_config(ALPN_H2)).await;
    let mut sibling = client.get("/b/sibling?rate=50&size=100", &[]).await;
    // Written flat out and never read: its window (6 MiB, a browser's) fills, then the
    // plugin's write pends.
    let mut stalled = client.get("/b/stalled?rate=0&size=1000", &[]).await;
    assert_eq!(
        (sibling.status.as_u16(), stalled.status.as_u16()),
        (200, 200)
    );
    let started = std::time::Instant::now();
    loop {
        // The sibling is read all along, and keeps receiving while the other stalls.
        sibling.read_until_count(b"\n\n", 1).await;
        sibling.received.clear();
        if stalled_one_dropped(&gateway, started).await {
            break;
        }
    }
    assert!(
        stalled.unread() > 0,
        "the stalled stream took bytes before its window filled"
    );
    assert_eq!(stalled.end().await, StreamEnd::Reset(h2::Reason::CANCEL));
    // After the drop the sibling still gets events.
    sibling.read_until_count(b"\n\n", 10).await;
}

#[tokio::test]
async fn a_drain_sends_goaway_and_ends_each_http2_stream_after_a_whole_event() {
    let (mut origin, mut gateway) = relayed(None).await;
    let mut client = H2Client::connect(gateway.addr).await;
    let (mut stream, mut upstream) = tokio::join!(client.get("/sse/d", &[]), async {
        let mut upstream = origin.accept().await;
        upstream.send_event_stream_head().await;
        upstream
    });
    upstream.send(b"data: whole\n\ndata: half").await;
    stream.read_until(b"data: whole\n\n").await;
    gateway.process.signal("TERM");
    // The stream ends cleanly, at the event boundary: the half event is not sent.
    assert_eq!(stream.end().await, StreamEnd::Finished);
    assert_eq!(stream.received, b"data: whole\n\n");
    // The connection ends without an error (GOAWAY(NO_ERROR), or the close at the exit).
    client.closed().await.unwrap();
    assert!(
        gateway.process.wait_exit(STEP).is_some(),
        "the gateway did not exit"
    );
}

/// An HTTP/2 request body is delimited by its stream's end: one sent without
/// `Content-Length` (as a browser's streaming `fetch` sends it) reaches the origin whole,
/// with the length the plugin read.
#[tokio::test]
async fn a_claimed_http2_body_without_content_length_reaches_the_origin_whole() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = edge_gateway(
        None,
        json!({"endpoint": "/up/{id}", "backend_url_pattern": "/events/{id}", "methods": ["POST"],
               "backend_host": origin.url(), "max_reconnects": 0}),
    );
    let mut client = H2Client::connect(gateway.addr).await;
    let mut upload = client.upload("POST", "/up/a", &[]).await;
    upload.send(b"hel", false);
    upload.send(b"lo", true);
    let mut upstream = origin.accept().await;
    assert!(
        upstream.head.starts_with("POST /events/a HTTP/1.1\r\n"),
        "{}",
        upstream.head
    );
    assert_eq!(
        upstream.header("content-length"),
        Some("5"),
        "{}",
        upstream.head
    );
    assert_eq!(upstream.read_body(5).await, b"hello");
    upstream.send_event_stream_head().await;
    upstream.send(b"data: got it\n\n").await;
    let mut stream = upload.response().await;
    assert_eq!(stream.status, 200);
    stream.read_until(b"data: got it\n\n").await;
}

/// TLS HTTP/1.1: a client that stops reading fills rustls' buffer for its stream (16 KiB)
/// and its socket's, the plugin's write through the bridged transport pends, and the
/// client is dropped at `client_write_timeout` with a reset, while another TLS client on
/// the same route keeps receiving all along.
#[tokio::test]
async fn a_stalled_tls_http1_client_is_reset_at_client_write_timeout_and_another_goes_on() {
    use tokio::io::AsyncWriteExt;
    let pki = TestPki::new();
    let (_origin, gateway) = stalling(&pki);
    let url = format!(
        "https://localhost:{}/b/live?rate=50&size=100",
        gateway.addr.port()
    );
    let mut live = curl(&url)
        .cacert(&pki.ca)
        .resolve("localhost", gateway.addr)
        .http1_1()
        .spawn();
    live.read_until(b"\n\n").await;
    // Written flat out and never read.
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client_config(testkit::ALPN_HTTP1));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stalled = connector.connect(name, tcp).await.unwrap();
    stalled
        .write_all(b"GET /b/stalled?rate=0&size=1000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    let started = std::time::Instant::now();
    loop {
        // The live client is read all along, and keeps receiving while the other stalls.
        live.received.clear();
        live.read_until(b"\n\n").await;
        if stalled_one_dropped(&gateway, started).await {
            break;
        }
    }
    // The end is a reset, not close_notify: the client cannot take the cut as complete.
    assert_eq!(
        testkit::how_it_ends(&mut stalled).await,
        Err(std::io::ErrorKind::ConnectionReset)
    );
    // After the drop the live client still gets events.
    live.received.clear();
    live.read_until(b"\n\n").await;
}

/// `Expect: 100-continue` through the bridged transports (TLS HTTP/1.1, TLS HTTP/2, h2c):
/// a body that fits gets the interim 100 (the host sends it at the plugin's first read
/// of the body; curl waits for it, up to 30 s here, longer than its `--max-time`), then
/// reaches the origin; one over the route's `max_body_bytes` gets its 413 with no 100
/// before it. The HTTP/2 refusal is checked with the test's own client: curl 7.88 may
/// report a 413 followed by RST_STREAM(NO_ERROR) as an empty reply.
#[tokio::test]
async fn a_bridged_client_that_expects_100_continue_gets_it_unless_its_body_is_refused() {
    let pki = TestPki::new();
    let cases: [(Option<&TestPki>, &str, &str); 3] = [
        (Some(&pki), "--http1.1", "< HTTP/1.1 100 Continue"),
        (Some(&pki), "--http2", "< HTTP/2 100"),
        (None, "--http2-prior-knowledge", "< HTTP/2 100"),
    ];
    for (pki, protocol, interim) in cases {
        let mut origin = ScriptedOrigin::start().await;
        // The route's own limit: the plugin refuses the body, not the host.
        let gateway = edge_gateway(
            pki,
            json!({"endpoint": "/up/{id}", "backend_url_pattern": "/events/{id}",
                   "methods": ["POST"], "backend_host": origin.url(), "max_reconnects": 0,
                   "max_body_bytes": 1024}),
        );
        let scheme = if pki.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://localhost:{}/up/a", gateway.addr.port());
        let post = |body: String| {
            let client = curl(&url).resolve("localhost", gateway.addr);
            match pki {
                Some(pki) => client.cacert(&pki.ca),
                None => client,
            }
            .arg(protocol)
            .arg("-v")
            .arg("--expect100-timeout")
            .arg("30")
            .header("Expect: 100-continue")
            .arg("--data-binary")
            .arg(body)
        };

        let fits = "x".repeat(1000);
        let answering = async {
            let mut upstream = origin.accept().await;
            assert_eq!(upstream.read_body(fits.len()).await, fits.as_bytes());
            upstream.send_event_stream_head().await;
            upstream.send(b"data: got it\n\n").await;
            upstream.close().await;
        };
        let (out, ()) = tokio::join!(post(fits.clone()).run(), answering);
        assert_eq!(out.status, 200, "{protocol}: {out:?}");
        assert!(out.stderr.contains(interim), "{protocol}: {}", out.stderr);
        assert_eq!(out.body, b"data: got it\n\n");

        if protocol == "--http1.1" {
            let out = post("x".repeat(2000)).run().await;
            assert_eq!(out.status, 413, "{protocol}: {out:?}");
            assert!(!out.stderr.contains(interim), "{protocol}: {}", out.stderr);
            continue;
        }
        let mut client = match pki {
            Some(pki) => H2Client::connect_tls(gateway.addr, pki.client_config(ALPN_H2)).await,
            None => H2Client::connect(gateway.addr).await,
        };
        let headers = [("expect", "100-continue"), ("content-length", "2000")];
        let mut upload = client.upload("POST", "/up/a", &headers).await;
        assert_eq!(
            upload.interim().await,
            None,
            "{protocol}: a 100 before the 413"
        );
        assert_eq!(upload.response().await.status, 413, "{protocol}");
    }
}
