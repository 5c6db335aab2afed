//! Every resource a client can hold is bounded: silent connections, the number of
//! connections, request bodies and their pace, and what static-filesystem serves.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{
    body_of, gateway, json_backend, listen_queue, origin, Gateway, RawClient, ScriptedOrigin,
};

/// The value of the unlabelled metric `name`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Scrapes until `name` reads `value` (the count follows connections a moment later).
async fn wait_for_metric(gateway: &Gateway, name: &str, value: u64) {
    let deadline = Instant::now() + testkit::STEP;
    loop {
        let text = gateway.metrics().await;
        if metric(&text, name) == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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

#[tokio::test]
async fn the_listener_takes_the_kernels_backlog_or_the_configured_one() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let default = gateway().run();
    assert_eq!(listen_queue(default.addr.port()).backlog, somaxconn);
    let configured = gateway().root("backlog", json!(100)).run();
    assert_eq!(listen_queue(configured.addr.port()).backlog, 100);
}

#[tokio::test]
async fn over_max_connections_new_connections_are_closed_at_once_while_streams_flow() {
    let origin = origin().interval_ms(20).run();
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .root("max_connections", json!(20))
        // Idle connections stay until the test closes them.
        .root("read_header_timeout", json!("1m"))
        .root_extra(
            "telemetry/metrics",
            json!({"listen_address": "127.0.0.1:0"}),
        )
        .run();
    let mut stream = RawClient::get(gateway.addr, "/sse/s", &[]).await;
    stream.read_until(b"id: 1\n").await;
    let mut idle = Vec::new();
    for _ in 0..19 {
        idle.push(RawClient::connect(gateway.addr).await);
    }
    wait_for_metric(&gateway, "krakend_connections_open", 20).await;

    // At the limit: each new connection is closed before anything is read from it.
    let refusals = 30;
    let started = Instant::now();
    for _ in 0..refusals {
        let response = RawClient::exchange(
            gateway.addr,
            b"GET /__health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            response.is_empty(),
            "{}",
            String::from_utf8_lossy(&response)
        );
    }
    let took = started.elapsed();
    let text = gateway.metrics().await;
    assert_eq!(metric(&text, "krakend_connections_refused_total"), refusals);
    assert_eq!(metric(&text, "krakend_connections_max"), 20);
    // The stream flows on meanwhile (the origin sends an event every 20 ms).
    stream.read_until(b"id: 5\n").await;
    // Logged, but at most once a second.
    let line = "refused a connection from";
    let logged = gateway.process.wait_for_log_count(line, 1);
    assert!(
        logged as u64 <= took.as_secs() + 1,
        "{logged} lines in {took:?}:\n{}",
        gateway.process.log()
    );

    // When connections go, new ones are served again.
    drop(idle);
    wait_for_metric(&gateway, "krakend_connections_open", 1).await;
    let response = RawClient::exchange(
        gateway.addr,
        b"GET /__health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(body_of(&response), br#"{"status":"ok"}"#);
    stream.read_until(b"id: 8\n").await;
}

#[tokio::test]
async fn out_of_descriptors_accept_backs_off_logs_once_a_second_and_recovers() {
    let gateway = gateway().root("max_connections", json!(10_000)).run();
    let pid = gateway.process.pid();
    // Room for ten more descriptors than the gateway holds now.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    // The gateway inherited this process's hard limit, which stays.
    let inherited = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let limit = rustix::process::Rlimit {
        current: Some(open + 10),
        maximum: inherited.maximum,
    };
    let target = rustix::process::Pid::from_raw(pid as i32);
    rustix::process::prlimit(target, rustix::process::Resource::Nofile, limit)
        .expect("lowering the gateway's descriptor limit");
    // Ten are accepted; the others wait in the backlog while accept fails with EMFILE.
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(RawClient::connect(gateway.addr).await);
    }
    let line = "[SERVICE: HTTP Server] accept failed";
    gateway.process.wait_for_log_count(line, 2);
    let logged = gateway.process.log().matches(line).count() as u64;
    assert!(
        logged <= started.elapsed().as_secs() + 1,
        "{logged} lines:\n{}",
        gateway.process.log()
    );
    let log = gateway.process.log();
    assert!(
        log.contains("more failed since the last such line"),
        "{log}"
    );

    // When the others leave, the last one, still in the backlog, is served.
    let mut last = held.pop().unwrap();
    drop(held);
    last.send(b"GET /__health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let response = last.read_to_end().await;
    assert_eq!(body_of(&response), br#"{"status":"ok"}"#);
}

/// A gateway with a `json` endpoint at /json and a `no-op` one at /raw on `backend`, bodies
/// limited to 1 KiB and requests to 1 s.
fn body_limited(backend: &ScriptedOrigin) -> Gateway {
    gateway()
        .root("max_body_bytes", json!(1024))
        .root("read_timeout", json!("1s"))
        .endpoint(json!({"endpoint": "/json", "method": "POST", "timeout": "5s",
                         "backend": [{"host": [backend.url()], "url_pattern": "/j"}]}))
        .endpoint(json!({"endpoint": "/raw", "method": "POST", "timeout": "5s", "output_encoding": "no-op",
                         "backend": [{"host": [backend.url()], "url_pattern": "/r"}]}))
        .run()
}

fn status_line(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_declared_body_over_max_body_bytes_gets_413_and_never_reaches_the_backend() {
    let mut backend = ScriptedOrigin::start().await;
    let gateway = body_limited(&backend);
    let body = "x".repeat(2048);
    for path in ["/json", "/raw"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = RawClient::exchange(gateway.addr, request).await;
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 413 Payload Too Large",
            "{path}"
        );
    }
    // The first request that reaches the backend is this one, within the limit.
    let within = format!("POST /raw?n=within HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{}", &body[..1024]);
    let client = tokio::spawn(RawClient::exchange(gateway.addr, within));
    let mut reached = backend.accept().await;
    assert!(
        reached.head.starts_with("POST /r HTTP/1.1\r\n"),
        "{}",
        reached.head
    );
    reached
        .send(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        .await;
    drop(reached);
    assert_eq!(
        status_line(&client.await.unwrap()),
        "HTTP/1.1 204 No Content"
    );
}

/// A chunked request to `path`: its head, and 600-byte chunks reaching 1800 bytes, past
/// 1 KiB, then the last chunk.
fn growing_chunked_body(path: &str) -> (Vec<u8>, Vec<u8>) {
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    (
        head.into_bytes(),
        [chunk.repeat(3), "0\r\n\r\n".into()].concat().into_bytes(),
    )
}

#[tokio::test]
async fn a_chunked_body_growing_past_max_body_bytes_is_cut_with_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut backend = ScriptedOrigin::start().await;
    let gateway = body_limited(&backend);
    // json reads the body before calling any backend.
    let (head, body) = growing_chunked_body("/json");
    let response = RawClient::exchange(gateway.addr, [head, body].concat()).await;
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    // no-op streams it to the backend: the body is sent once the backend has the request's
    // head (so the cut is of a request under way, not of one still being dialled), and it
    // has not answered when the body is cut.
    let (head, body) = growing_chunked_body("/raw");
    let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    client.write_all(&head).await.unwrap();
    let mut cut = backend.accept().await;
    assert!(cut.head.starts_with("POST /r HTTP/1.1\r\n"), "{}", cut.head);
    // The gateway may close before it took all of the body: a failed write is fine.
    let _ = client.write_all(&body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(testkit::STEP, client.read_to_end(&mut response)).await;
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    assert!(
        cut.closed_within(testkit::STEP).await,
        "the backend's request is cut"
    );
}

#[tokio::test]
async fn a_body_dribbled_slower_than_read_timeout_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut backend = ScriptedOrigin::start().await;
    let gateway = body_limited(&backend);
    for path in ["/json", "/raw"] {
        let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let (mut from_gateway, mut to_gateway) = stream.into_split();
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
        to_gateway.write_all(head.as_bytes()).await.unwrap();
        // A byte every 100 ms, until the gateway stops taking them: a timer that each
        // byte reset would never fire.
        let dribble = tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..1000 {
                pace.tick().await;
                if to_gateway.write_all(b"z").await.is_err() {
                    return;
                }
            }
        });
        let _waiting = match path {
            // no-op streams the body to the backend, which waits for the rest.
            "/raw" => Some(backend.accept().await),
            _ => None,
        };
        let mut response = Vec::new();
        let read = tokio::time::timeout(testkit::STEP, from_gateway.read_to_end(&mut response));
        assert!(read.await.is_ok(), "no answer in time");
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 408 Request Timeout",
            "{path}"
        );
        dribble.abort();
    }
}

#[tokio::test]
async fn static_filesystem_serves_only_regular_files_inside_its_folder() {
    use std::os::unix::fs::symlink;
    let temp = testkit::TempDir::new("static");
    let (www, outside) = (temp.path().join("www"), temp.path().join("outside"));
    for folder in [&www, &outside, &www.join(".git"), &www.join("sub")] {
        std::fs::create_dir(folder).unwrap();
    }
    let write = |path: &std::path::Path, text: &str| std::fs::write(path, text).unwrap();
    write(&www.join("ok.txt"), "served");
    write(&www.join(".env"), "SECRET=1");
    write(&www.join(".git/config"), "[core]");
    write(&outside.join("secret.txt"), "outside");
    symlink(outside.join("secret.txt"), www.join("escape.txt")).unwrap();
    symlink(&outside, www.join("escape-dir")).unwrap();
    symlink("ok.txt", www.join("inside.txt")).unwrap();
    symlink(".env", www.join("env.txt")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(www.join("pipe.txt"))
        .status();
    assert!(fifo.unwrap().success());
    let gateway = gateway()
        .plugin_block("static-filesystem", json!({"prefix": "/www/", "path": www}))
        .run();
    let get = |path: &'static str| async move {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        RawClient::exchange(gateway.addr, request).await
    };
    for served in ["/www/ok.txt", "/www/inside.txt"] {
        let response = get(served).await;
        assert_eq!(body_of(&response), b"served", "{served}");
    }
    for refused in [
        "/www/.env",
        "/www/.git/config",
        "/www/escape.txt",
        "/www/escape-dir/secret.txt",
        "/www/env.txt",
        "/www/pipe.txt",
        "/www/sub",
    ] {
        let response = get(refused).await;
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 404 Not Found",
            "{refused}"
        );
    }
}

/// A client still sending a refused body (the whole of it before it reads, as a simple
/// client does) can send it and then read the 413 to an orderly end: the host reads and
/// drops what follows its answer for a while (RFC 9112 9.6) instead of closing on unread
/// bytes, which resets the connection. Declared too large, and grown too large, chunked.
#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_the_413_to_an_orderly_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = ScriptedOrigin::start().await;
    let gateway = body_limited(&backend);
    // More than the socket buffers hold at once, less than the host drains.
    const BODY: usize = 256 * 1024;
    let chunk = format!("4000\r\n{}\r\n", "c".repeat(0x4000));
    let bodies = [
        (format!("Content-Length: {BODY}"), vec![b'x'; BODY]),
        (
            "Transfer-Encoding: chunked".to_owned(),
            chunk.repeat(BODY / 0x4000).into_bytes(),
        ),
    ];
    for (framing, body) in bodies {
        let head = format!("POST /json HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n");
        let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let sent = client.write_all(&[head.as_bytes(), &body].concat()).await;
        assert!(sent.is_ok(), "{framing}: sending the body: {sent:?}");
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            match tokio::time::timeout(testkit::STEP, client.read(&mut buf)).await {
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => break Err(e.kind()),
                Err(_) => panic!("{framing}: the connection stayed open"),
            }
        };
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 413 Payload Too Large",
            "{framing}"
        );
        assert_eq!(end, Ok(()), "{framing}: not reset");
    }
}

/// A client that keeps sending a refused body (a declared 1 GiB) is cut once the one
/// lingering close (`wire::linger`: 1 MiB, 1 s) has dropped 1 MiB of it, and still reads
/// its 413: from the host on its own endpoint, from the plugin on a claimed route. Its
/// writes fail after 1 MiB and what the kernels' buffers hold (a few MiB on loopback),
/// well before the 64 MiB at which this calls it not cut (in 1 s, a time bound alone
/// would take hundreds of MiB).
#[tokio::test]
async fn a_client_that_keeps_sending_a_refused_body_is_cut_after_1_mib_and_reads_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const NOT_CUT: usize = 64 * 1024 * 1024;
    let backend = ScriptedOrigin::start().await;
    let gateway = gateway()
        .root("max_body_bytes", json!(1024))
        .endpoint(json!({"endpoint": "/json", "method": "POST",
                         "backend": [{"host": [backend.url()], "url_pattern": "/j"}]}))
        .plugin_block(
            "krakend-server-plugin-streaming",
            json!({"endpoint": "/up/{id}", "backend_url_pattern": "/events/{id}",
                   "methods": ["POST"], "backend_host": backend.url(), "max_reconnects": 0}),
        )
        .run();
    for path in ["/json", "/up/a"] {
        let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let (mut from_gateway, mut to_gateway) = stream.into_split();
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n");
        to_gateway.write_all(head.as_bytes()).await.unwrap();
        let sending = tokio::spawn(async move {
            let piece = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < NOT_CUT && to_gateway.write_all(&piece).await.is_ok() {
                sent += piece.len();
            }
            sent
        });
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(testkit::STEP, from_gateway.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => response.extend_from_slice(&buf[..n]),
                Ok(_) => break,
                Err(_) => panic!("{path}: the connection stayed open"),
            }
        }
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 413 Payload Too Large",
            "{path}"
        );
        let sent = sending.await.unwrap();
        assert!(sent < NOT_CUT, "{path}: {sent} bytes taken, not cut");
        assert!(sent >= 1024 * 1024, "{path}: cut after only {sent} bytes");
    }
    // The plugin refused /up/a, not the host.
    gateway.process.wait_for_log("POST /up/a: refused with 413");
}
