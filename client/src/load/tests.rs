//! The load tool over each transport against the testkit's scripted origins (an https
//! HTTP/1.1 origin, an HTTP/2 origin over TLS and over h2c): every event counted and timed
//! as over plain HTTP/1.1, streams multiplexed as asked, and the refusals that make a
//! stream fail told in the report. Each origin ends its streams, so a run ends when they do.

use std::time::Duration;

use sse::stamp::{monotonic_ns, write_stamped_event};
use testkit::{ClientAuth, H2Origin, ScriptedOrigin, TestPki, ALPN_H2, ALPN_HTTP1};

use super::*;

/// Long enough never to be what ends a run: each test's origin ends its streams.
const NEVER: Duration = Duration::from_secs(60);

fn options(url: &str, transport: Transport, streams: usize) -> LoadOptions {
    let url: StreamUrl = url.parse().unwrap();
    LoadOptions {
        addr: url.resolve().unwrap(),
        url,
        transport,
        streams,
        duration: NEVER,
        after_connect: false,
        start_on_stdin: false,
        connect_concurrency: 200,
        pids: Vec::new(),
        reconnect: false,
        expect_every: None,
    }
}

fn transport(url: &str, trust: Option<Trust>, http2: Option<(Http2, usize)>) -> Transport {
    let http2 = http2.map(|(h, n)| (h, std::num::NonZeroUsize::new(n).unwrap()));
    Transport::choose(&url.parse().unwrap(), trust, http2).unwrap()
}

/// Events `ids`, stamped now.
fn events(ids: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        write_stamped_event(&mut out, id, monotonic_ns(), 100);
    }
    out
}

#[tokio::test]
async fn https_streams_are_read_and_timed_as_plain_ones() {
    let pki = TestPki::new();
    let config = pki.server_config(&pki.server, ALPN_HTTP1, ClientAuth::None);
    let mut origin = ScriptedOrigin::start_tls(config).await;
    let url = format!("{}/sse/a?x=1", origin.url());
    let tls = transport(&url, Some(Trust::Ca(pki.ca.clone())), None);
    let load = tokio::spawn(run(options(&url, tls, 3)));
    for _ in 0..3 {
        let mut conn = origin.accept().await;
        assert!(
            conn.head.starts_with("GET /sse/a?x=1 HTTP/1.1\r\n"),
            "{}",
            conn.head
        );
        assert_eq!(conn.header("host"), Some(&origin.url()["https://".len()..]));
        assert_eq!(conn.header("accept"), Some("text/event-stream"));
        conn.send_event_stream_head().await;
        conn.send(&events(1..=5)).await;
        conn.close().await;
    }
    let report = load.await.unwrap();
    assert_eq!((report.connections_ok, report.connections_failed), (3, 0));
    assert_eq!(report.transport_connections, 3);
    assert_eq!(report.events, 15);
    assert_eq!(report.latency_ns.len(), 15, "every event timed");
    assert_eq!(
        (report.id_gaps, report.id_duplicates, report.id_backwards),
        (0, 0, 0)
    );
    // The origin ended them: each is a stream cut before the end.
    assert_eq!(report.premature_disconnects, 3);
}

#[tokio::test]
async fn a_certificate_the_ca_did_not_sign_fails_each_stream_saying_why() {
    let pki = TestPki::new();
    let config = pki.server_config(&pki.server, ALPN_HTTP1, ClientAuth::None);
    let mut origin = ScriptedOrigin::start_tls(config).await;
    let url = format!("{}/sse/a", origin.url());
    let wrong = transport(&url, Some(Trust::Ca(pki.wrong_ca.clone())), None);
    let report = run(options(&url, wrong, 2)).await;
    assert_eq!((report.connections_ok, report.connections_failed), (0, 2));
    let why = report.first_error.unwrap();
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert!(origin.handshake_failure().await.contains("UnknownCA"));
}

#[tokio::test]
async fn insecure_takes_a_certificate_nobody_signed_for_it() {
    let pki = TestPki::new();
    let config = pki.server_config(&pki.wrong_server, ALPN_HTTP1, ClientAuth::None);
    let mut origin = ScriptedOrigin::start_tls(config).await;
    let url = format!("{}/sse/a", origin.url());
    let load = tokio::spawn(run(options(
        &url,
        transport(&url, Some(Trust::Insecure), None),
        1,
    )));
    let mut conn = origin.accept().await;
    conn.send_event_stream_head().await;
    conn.send(&events(1..=2)).await;
    conn.close().await;
    let report = load.await.unwrap();
    assert_eq!((report.connections_ok, report.events), (1, 2));
}

#[tokio::test]
async fn http2_over_tls_puts_every_stream_on_one_connection() {
    let pki = TestPki::new();
    let config = pki.server_config(&pki.server, ALPN_H2, ClientAuth::None);
    let mut origin = H2Origin::start(Some(config)).await;
    let url = format!("{}/sse/b", origin.url());
    let h2 = transport(
        &url,
        Some(Trust::Ca(pki.ca.clone())),
        Some((Http2::OverTls, 100)),
    );
    let load = tokio::spawn(run(options(&url, h2, 20)));
    for _ in 0..20 {
        let mut request = origin.accept().await;
        assert_eq!(request.head.uri().path(), "/sse/b");
        assert_eq!(request.head.headers()["accept"], "text/event-stream");
        request.send_event_stream_head(200);
        request.send(&events(1..=5));
        request.finish();
    }
    let report = load.await.unwrap();
    assert_eq!(origin.connections(), 1);
    assert_eq!(report.transport_connections, 1);
    assert_eq!((report.connections_ok, report.connections_failed), (20, 0));
    assert_eq!((report.events, report.latency_ns.len()), (100, 100));
    assert_eq!(
        (report.id_gaps, report.id_duplicates, report.id_backwards),
        (0, 0, 0)
    );
    assert_eq!(report.premature_disconnects, 20);
}

#[tokio::test]
async fn h2c_groups_the_streams_by_streams_per_connection() {
    let mut origin = H2Origin::start(None).await;
    let url = format!("{}/sse/c", origin.url());
    let h2c = transport(&url, None, Some((Http2::Cleartext, 3)));
    let load = tokio::spawn(run(options(&url, h2c, 7)));
    for _ in 0..7 {
        let mut request = origin.accept().await;
        request.send_event_stream_head(200);
        request.send(&events(1..=2));
        request.finish();
    }
    let report = load.await.unwrap();
    // 3 + 3 + 1.
    assert_eq!((origin.connections(), report.transport_connections), (3, 3));
    assert_eq!((report.connections_ok, report.events), (7, 14));
}

#[tokio::test]
async fn an_http2_stream_refused_or_reset_before_its_head_fails_saying_why() {
    let mut origin = H2Origin::start(None).await;
    let url = format!("{}/sse/d", origin.url());
    let h2c = || {
        options(
            &url,
            transport(&url, None, Some((Http2::Cleartext, 100))),
            1,
        )
    };
    let load = tokio::spawn(run(h2c()));
    origin.accept().await.send_event_stream_head(503);
    let report = load.await.unwrap();
    assert_eq!((report.connections_ok, report.connections_failed), (0, 1));
    assert_eq!(
        report.first_error.as_deref(),
        Some("answered 503 Service Unavailable")
    );
    let load = tokio::spawn(run(h2c()));
    origin.accept().await.reset(::h2::Reason::REFUSED_STREAM);
    let report = load.await.unwrap();
    assert_eq!((report.connections_ok, report.connections_failed), (0, 1));
    let why = report.first_error.unwrap();
    assert!(why.contains("refused"), "{why}");
}

#[tokio::test]
async fn an_http2_reconnect_sends_last_event_id_on_the_same_connection() {
    let mut origin = H2Origin::start(None).await;
    let url = format!("{}/sse/e", origin.url());
    let mut h2c = options(
        &url,
        transport(&url, None, Some((Http2::Cleartext, 100))),
        1,
    );
    h2c.reconnect = true;
    // Cut by the deadline while its second connection's stream is open: the run ends then.
    h2c.duration = Duration::from_secs(5);
    let load = tokio::spawn(run(h2c));
    let mut first = origin.accept().await;
    first.send_event_stream_head(200);
    first.send(b"retry: 10\n\n");
    first.send(&events(1..=3));
    first.finish();
    let mut second = origin.accept().await;
    assert_eq!(second.head.headers()["last-event-id"], "3");
    second.send_event_stream_head(200);
    second.send(&events(4..=4));
    let report = load.await.unwrap();
    assert_eq!(origin.connections(), 1);
    assert_eq!((report.connections_ok, report.reconnects), (1, 1));
    assert_eq!(
        (report.events, report.id_gaps, report.id_duplicates),
        (4, 0, 0)
    );
}

#[tokio::test]
async fn http2_needs_a_server_that_agrees_to_it_by_alpn() {
    let pki = TestPki::new();
    let config = pki.server_config(&pki.server, ALPN_HTTP1, ClientAuth::None);
    let origin = ScriptedOrigin::start_tls(config).await;
    let url = format!("{}/sse/f", origin.url());
    let h2 = transport(&url, Some(Trust::Insecure), Some((Http2::OverTls, 100)));
    let report = run(options(&url, h2, 3)).await;
    // Each stream of the group tries the connection in turn; none is made.
    assert_eq!((report.connections_ok, report.connections_failed), (0, 3));
    assert_eq!(report.transport_connections, 0);
    let why = report.first_error.unwrap();
    assert!(why.contains("NoApplicationProtocol"), "{why}");
}

#[test]
fn heads_written_late_are_those_past_the_bound() {
    let mut written = nanoseconds();
    for ms in [1, 4_000, 6_000, 11_000] {
        written.record(ms * 1_000_000).unwrap();
    }
    assert_eq!(late_count(&written, LATE_HEAD), 2);
    assert_eq!(late_count(&nanoseconds(), LATE_HEAD), 0);
}
