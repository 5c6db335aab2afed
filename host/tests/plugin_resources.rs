//! What the streaming plugin costs when things run short or go wrong: the gateway out of
//! descriptors does not blame a healthy origin, a client that stops reading is reset
//! within `client_write_timeout` (its kernel buffer freed at once), and an origin that
//! never ends an event cannot grow the gateway past a few `max_event_bytes`, nor have it
//! read an endless response head, chunk-size line, chunk extension or trailer section.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{body_of, gateway, Gateway, RawClient, ScriptedOrigin, STEP};

const PLUGIN: &str = "krakend-server-plugin-streaming";

fn streaming(block: Value) -> Gateway {
    gateway().plugin_block(PLUGIN, block).run()
}

/// Descriptor numbers open in process `pid`.
fn open_descriptors(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// TCP connections (not listeners) that process `pid` holds open.
fn tcp_connections(pid: u32) -> usize {
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    (fields[3].to_owned(), fields[9].to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|(state, inode)| state != "0A" && sockets.contains(inode))
        .count()
}

/// Waits until process `pid` holds no TCP connection: every stream and request is closed.
fn wait_for_no_connections(pid: u32) {
    let deadline = std::time::Instant::now() + STEP;
    while tcp_connections(pid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections stay open"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid`.
fn set_descriptor_limit(pid: u32, soft: u64) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .expect("running prlimit");
    assert!(status.success(), "prlimit failed");
}

fn soft_descriptor_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Lowers `pid`'s descriptor limit so that exactly one more descriptor can be opened: the
/// one a new client connection takes, leaving none to dial upstream with.
fn leave_one_descriptor(pid: u32) {
    wait_for_no_connections(pid);
    let open = open_descriptors(pid);
    let second_free = (0..).filter(|n| !open.contains(n)).nth(1).unwrap();
    set_descriptor_limit(pid, u64::from(second_free));
}

fn assert_retry_later(answer: &[u8]) {
    let answer = String::from_utf8_lossy(answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\r\nRetry-After: 5\r\n"), "{answer}");
    assert!(
        !answer.contains("127.0.0.1"),
        "no internal address in the answer: {answer}"
    );
}

#[tokio::test]
async fn out_of_descriptors_the_gateway_answers_503_and_blames_no_origin() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(json!({
        "backend_host": origin.url(), "eject_after": 1, "eject_for": "1m",
        "reconnect_delay": "10s", "max_reconnect_delay": "10s",
        "routes": [
            {"endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}"},
            {"endpoint": "/live/{id}", "backend_url_pattern": "/events/{id}", "fanout": true},
        ],
    }));
    let pid = gateway.process.pid();
    // One stream first, so that everything the plugin opens once is open.
    let mut warm = RawClient::get(gateway.addr, "/sse/warm", &[]).await;
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    upstream.send(b"data: warm\n\n").await;
    warm.read_until(b"data: warm\n\n").await;
    drop((warm, upstream));
    let limit = soft_descriptor_limit(pid);

    // A relayed stream, then a fan-out one whose source cannot dial.
    for path in ["/sse/a", "/live/a"] {
        leave_one_descriptor(pid);
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_retry_later(&RawClient::exchange(gateway.addr, request).await);
    }
    set_descriptor_limit(pid, limit);
    assert!(
        origin.quiet_for(Duration::from_millis(200)).await,
        "no dial reached the origin"
    );

    for endpoint in ["/sse/{id}", "/live/{id}"] {
        let stats = gateway.route_stats(endpoint).await;
        assert_eq!(stats["drops"]["local_resources"], 1, "{stats}");
        assert_eq!(stats["drops"]["upstream_unavailable"], 0, "{stats}");
        assert_eq!(stats["failovers"], 0, "{stats}");
        let host = &stats["hosts"][0];
        assert_eq!(
            (&host["failures"], &host["ejections"], &host["ejected"]),
            (&json!(0), &json!(0), &json!(false)),
            "the origin is not blamed: {stats}"
        );
    }
    // With descriptors back, the same origin serves at once.
    let mut client = RawClient::get(gateway.addr, "/sse/b", &[]).await;
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    upstream.send(b"data: back\n\n").await;
    client.read_until(b"data: back\n\n").await;
    assert!(body_of(&client.received).ends_with(b"data: back\n\n"));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_reset_within_client_write_timeout() {
    stalled_client_is_reset(json!({}), "client_stalled").await;
}

#[tokio::test]
async fn a_fan_out_client_that_falls_behind_is_reset() {
    stalled_client_is_reset(json!({"fanout": true}), "client_lagged").await;
}

/// A client that sends its request and never reads, on a route with `extra` keys: 5 MB/s
/// from the origin fill the socket buffers within a fraction of a second, then the
/// plugin's write waits (or, fanned out, the client's queue fills). It is dropped, counted
/// under `reason`, within `client_write_timeout` (2 s) plus a second, with a reset.
async fn stalled_client_is_reset(extra: Value, reason: &str) {
    use tokio::io::AsyncWriteExt;
    let origin = testkit::origin().run();
    let mut block = json!({
        "endpoint": "/b/{id}", "backend_url_pattern": "/bench/{id}",
        "backend_host": origin.url(), "client_write_timeout": "2s",
    });
    for (key, value) in extra.as_object().unwrap() {
        block[key] = value.clone();
    }
    let gateway = streaming(block);
    let started = std::time::Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stalled
        .write_all(b"GET /b/stalled?rate=5000&size=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    loop {
        let stats = gateway.route_stats("/b/{id}").await;
        if stats["drops"][reason] == 1 {
            assert_eq!(stats["active"], 0, "{stats}");
            break;
        }
        assert!(started.elapsed() < STEP, "never dropped: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped_after = started.elapsed();
    assert!(
        dropped_after < Duration::from_secs(3),
        "dropped {dropped_after:?} after the client connected (client_write_timeout 2s)"
    );
    // The close was a reset: the client finds what its own buffer held, then the reset,
    // rather than the gateway's unsent bytes followed by an orderly end.
    assert_eq!(
        testkit::how_it_ends(&mut stalled).await,
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets the peak resident memory (`VmHWM`) of `pid` to what it holds now, and returns it.
fn reset_peak_rss(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    status_kib(pid, "VmHWM:")
}

const MIB: usize = 1024 * 1024;

/// Sends `start`, then 100 MiB of `filler` without a line end, then `end`.
async fn send_endless_line(upstream: &mut testkit::OriginConn, start: &[u8], end: &[u8]) {
    upstream.send(start).await;
    let filler = vec![b'x'; MIB];
    for _ in 0..100 {
        upstream.send(&filler).await;
    }
    upstream.send(end).await;
}

#[tokio::test]
async fn an_unterminated_fan_out_event_of_100_mib_costs_a_few_max_event_bytes() {
    const MAX_EVENT_BYTES: usize = MIB;
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(json!({
        "endpoint": "/live/{id}", "backend_url_pattern": "/events/{id}",
        "backend_host": origin.url(), "fanout": true, "max_event_bytes": MAX_EVENT_BYTES,
    }));
    let pid = gateway.process.pid();
    let mut first = RawClient::get(gateway.addr, "/live/a", &[]).await;
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    first.read_until(b"text/event-stream").await;
    let mut second = RawClient::get(gateway.addr, "/live/a", &[]).await;
    second.read_until(b"text/event-stream").await;
    upstream.send(b"id: 1\ndata: before\n\n").await;
    for client in [&mut first, &mut second] {
        client.read_until(b"data: before\n\n").await;
    }
    let before = reset_peak_rss(pid);

    send_endless_line(
        &mut upstream,
        b"id: 2\ndata: ",
        b"\n\nid: 3\ndata: after\n\n",
    )
    .await;
    let note = format!(
        ": an event larger than max_event_bytes ({MAX_EVENT_BYTES}) was dropped here\nid: 2\n\n"
    );
    for client in [&mut first, &mut second] {
        client.read_until(b"data: after\n\n").await;
        assert_eq!(
            String::from_utf8_lossy(body_of(&client.received)),
            format!("id: 1\ndata: before\n\n{note}id: 3\ndata: after\n\n"),
            "no part of the event, a comment in its place, and the stream goes on"
        );
    }
    let growth = status_kib(pid, "VmHWM:").saturating_sub(before);
    assert!(
        growth * 1024 < 4 * MAX_EVENT_BYTES as u64,
        "the gateway's peak RSS grew by {growth} KiB"
    );
    let stats = gateway.route_stats("/live/{id}").await;
    assert_eq!(stats["oversized_events"], 1, "{stats}");
}

#[tokio::test]
async fn an_endless_id_line_on_a_relayed_stream_is_not_held_nor_sent_upstream() {
    use tokio::io::AsyncReadExt;
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(json!({
        "endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}",
        "backend_host": origin.url(), "reconnect_delay": "20ms",
    }));
    let pid = gateway.process.pid();
    let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /sse/a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut upstream = origin.accept().await;
    upstream.send_event_stream_head().await;
    upstream.send(b"id: 1\ndata: a\n\n").await;
    // The client reads everything, keeping only the tail it looks for.
    let reader = tokio::spawn(async move {
        let (mut tail, mut buf, mut total) = (Vec::new(), vec![0u8; MIB], 0);
        while !tail.ends_with(b"data: c\n\n") {
            let n = tokio::time::timeout(STEP, client.read(&mut buf))
                .await
                .expect("the stream stalled")
                .unwrap();
            assert!(n > 0, "the stream ended");
            total += n;
            tail.extend_from_slice(&buf[..n]);
            tail.drain(..tail.len().saturating_sub(64));
        }
        (client, total)
    });
    let before = reset_peak_rss(pid);
    send_endless_line(&mut upstream, b"id: ", b"\ndata: b\n\ndata: c\n\n").await;
    // The client stays: a client that leaves ends its stream.
    let (_client, received) = reader.await.unwrap();
    assert!(received > 100 * MIB, "the event was relayed, in pieces");
    let growth = status_kib(pid, "VmHWM:").saturating_sub(before);
    assert!(
        growth * 1024 < 4 * MIB as u64,
        "the gateway's peak RSS grew by {growth} KiB"
    );
    // The 100 MiB id was ignored: the stream resumes from the last id it kept.
    drop(upstream);
    let resumed = origin.accept().await;
    assert_eq!(resumed.header("last-event-id"), Some("1"));
}

/// A hostile origin cannot have the plugin read one thing without end: a response head
/// that never ends is cut at `read_buffer_bytes` (502), and a chunk-size line, a chunk
/// extension or a trailer section that never ends at 4 KiB; the upstream is closed each
/// time (the origin's writes fail) and the stream resumes, with nothing of it sent on.
#[tokio::test]
async fn an_origin_s_endless_head_chunk_line_extension_or_trailers_are_cut() {
    const MAX: usize = 100 * MIB;
    let mut origin = ScriptedOrigin::start().await;
    let gateway = streaming(json!({
        "endpoint": "/sse/{id}", "backend_url_pattern": "/events/{id}",
        "backend_host": origin.url(), "reconnect_delay": "20ms",
    }));
    let mut refused = RawClient::get(gateway.addr, "/sse/head", &[]).await;
    let mut upstream = origin.accept().await;
    let filler = vec![b'x'; 64 * 1024];
    upstream
        .send_until_refused(b"HTTP/1.1 200 OK\r\nX-Filler: ", &filler, MAX)
        .await;
    refused.read_until(b"upstream unavailable\n").await;
    assert!(
        refused.received.starts_with(b"HTTP/1.1 502 "),
        "{}",
        String::from_utf8_lossy(&refused.received)
    );

    let mut client = RawClient::get(gateway.addr, "/sse/a", &[]).await;
    let head =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let trailers = b"X-T: y\r\n".repeat(8 * 1024);
    let endless: [(&[u8], &[u8]); 3] = [
        (b"", &[b'0'; 64 * 1024]),
        (b"1;", &filler),
        (b"0\r\n", &trailers),
    ];
    for (i, (start, filler)) in endless.into_iter().enumerate() {
        let mut upstream = origin.accept().await;
        let expected_id = (i > 0).then(|| i.to_string());
        assert_eq!(upstream.header("last-event-id"), expected_id.as_deref());
        let event = format!("id: {}\ndata: {i}\n\n", i + 1);
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        upstream.send(&[&head[..], chunk.as_bytes()].concat()).await;
        // The event first: a read that holds a malformed chunk is refused whole, so the
        // origin would be asked for the event again.
        client.read_until(event.as_bytes()).await;
        upstream.send_until_refused(start, filler, MAX).await;
    }
    let mut last = origin.accept().await;
    assert_eq!(last.header("last-event-id"), Some("3"));
    last.send_event_stream_head().await;
    last.send(b"id: 4\ndata: 3\n\n").await;
    client.read_until(b"data: 3\n\n").await;
    assert_eq!(
        String::from_utf8_lossy(body_of(&client.received)),
        "id: 1\ndata: 0\n\nid: 2\ndata: 1\n\nid: 3\ndata: 2\n\nid: 4\ndata: 3\n\n"
    );
}
