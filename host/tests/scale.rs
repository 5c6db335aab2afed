//! Past one process and one machine: several processes on one port (`reuse_port`), sockets
//! passed by a service manager (socket activation), a rolling handover under a connect
//! storm that refuses and resets nothing while resuming clients lose no event. (N gateways
//! on one Kafka cluster, behind haproxy, are in `kafka.rs`.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{
    activated_host, body_of, gateway, get_json, listen_queue, origin, unused_port, GatewayBuilder,
    Process, RawClient, ResumingClient, ScriptedOrigin, TempDir, STEP,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// A gateway relaying `/sse/{id}` from `origin`.
fn relay_gateway(origin: &Process) -> GatewayBuilder {
    gateway().plugin_block(
        PLUGIN,
        json!({"endpoint": "/sse/{id}", "backend_url_pattern": "/events-stream/{id}",
               "backend_host": origin.url()}),
    )
}

/// Opens a stream and reads its head: the connection is then in the plugin's hands.
async fn open_stream(addr: SocketAddr, path: &str) {
    let mut client = RawClient::get(addr, path, &[]).await;
    client.read_until(b"text/event-stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reuse_port_processes_on_one_port_both_serve() {
    let origin = origin().run();
    let first = relay_gateway(&origin).root("reuse_port", json!(true)).run();
    let second = first.another_on_the_same_port();
    // The kernel spreads new connections across the two sockets by a hash of the client's
    // address and port: each new connection goes to either.
    let handed_over = "connection handed over";
    let deadline = Instant::now() + STEP;
    let mut streams = 0;
    while !(first.process.log().contains(handed_over) && second.log().contains(handed_over)) {
        assert!(
            Instant::now() < deadline,
            "{streams} streams, not served by both:\n{}\n---\n{}",
            first.process.log(),
            second.log()
        );
        open_stream(first.addr, &format!("/sse/r{streams}")).await;
        streams += 1;
    }
}

#[tokio::test]
async fn the_gateway_serves_a_passed_socket_without_binding_its_port() {
    let origin = origin().run();
    // `port` is taken: binding it would fail the start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let passed = socket.local_addr().unwrap();
    let gateway = relay_gateway(&origin)
        .root("port", json!(taken.local_addr().unwrap().port()))
        .run_on_socket(socket);
    assert_eq!(gateway.addr, passed);
    gateway
        .process
        .wait_for_log("serving the listening socket passed in LISTEN_FDS");
    let mut client = RawClient::get(gateway.addr, "/sse/a", &[]).await;
    client.read_until(b"id: 2\n").await;
}

/// systemd's own `systemd-socket-activate` holds two sockets, named in LISTEN_FDNAMES, and
/// starts the gateway when the first connection arrives: that connection, made before the
/// gateway existed, is served, and the metrics socket serves metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_starts_the_gateway_on_its_first_connection() {
    let origin = origin().run();
    let (http, metrics) = (unused_port(), unused_port());
    let config = relay_gateway(&origin)
        .root_extra(
            "telemetry/metrics",
            json!({"listen_address": "127.0.0.1:1"}),
        )
        .config_file();
    let mut command = std::process::Command::new("systemd-socket-activate");
    // The metrics socket first (descriptor 3): the names, not the order, say which is which.
    command
        .args(["-l", &format!("127.0.0.1:{metrics}")])
        .args(["-l", &format!("127.0.0.1:{http}")])
        .arg("--fdname=metrics:http")
        .arg(testkit::bin("host"))
        .args(["run", "-c"])
        .arg(config.path());
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let first = tokio::spawn(async move {
        // Refused until systemd-socket-activate listens; from then on it queues.
        let deadline = Instant::now() + STEP;
        let mut stream = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => break stream,
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let request = format!("GET /sse/first HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while !received.windows(6).any(|w| w == b"id: 1\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buf[..n]);
        }
    });
    // Started by the first connection, so it says it listens only after that one arrived.
    let gateway = Process::spawn(command, "[SERVICE: HTTP Server] Listening on ");
    assert_eq!(gateway.addr, addr);
    tokio::time::timeout(STEP, first).await.unwrap().unwrap();
    gateway.wait_for_log(&format!(
        "[SERVICE: Metrics] Listening on 127.0.0.1:{metrics}"
    ));
    let scrape = RawClient::exchange(
        format!("127.0.0.1:{metrics}").parse().unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&scrape);
    assert!(text.contains("krakend_connections_open"), "{text}");
}

#[tokio::test]
async fn a_passed_descriptor_that_is_not_a_listening_socket_stops_the_start() {
    let config = gateway().config_file();
    let file = std::fs::File::open(config.path()).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let not_listening = std::net::TcpStream::connect(
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    )
    .unwrap();
    let cases: [(std::process::Stdio, String); 3] = [
        (file.into(), format!("it is {}", config.path().display())),
        (
            std::os::fd::OwnedFd::from(udp).into(),
            "it is a UDP socket".into(),
        ),
        (
            std::os::fd::OwnedFd::from(not_listening).into(),
            "it is a TCP socket that is not listening".into(),
        ),
    ];
    for (descriptor, what) in cases {
        let output = activated_host(&config, descriptor).output().unwrap();
        let log = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{log}");
        let expected = format!("LISTEN_FDS descriptor 3 is not a listening TCP socket: {what}");
        assert!(log.contains(&expected), "{log}\n  want: {expected}");
    }
}

/// With the socket held elsewhere (here by the test, as a service manager would), a
/// gateway told to stop while connections wait in the queue answers those it accepted
/// before it stopped accepting, exits 0 without resetting the rest, and the next gateway
/// serves them from the same queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_queued_at_a_handover_are_answered_by_one_gateway_or_the_next() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut old = gateway().run_on_socket(socket.try_clone().unwrap());
    assert_eq!(get_json(addr, "/__health").await["status"], "ok");
    // Stopped, it accepts nothing: connections wait in the queue.
    old.process.signal("STOP");
    const WAITING: u32 = 50;
    let mut clients = Vec::new();
    for _ in 0..WAITING {
        let mut client = RawClient::connect(addr).await;
        client
            .send(b"GET /__health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        clients.push(client);
    }
    assert_eq!(listen_queue(addr.port()).queued, WAITING);
    // SIGTERM waits until it runs again; then it takes the signal and whatever connections
    // it accepts first, in either order.
    old.process.signal("TERM");
    old.process.signal("CONT");
    let status = old.process.wait_exit(STEP);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let left = listen_queue(addr.port()).queued;
    eprintln!(
        "the old gateway answered {} queued connections, the new one {left}",
        WAITING - left
    );
    let _new = gateway().run_on_socket(socket.try_clone().unwrap());
    for client in clients {
        let response = client.read_to_end().await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert_eq!(body_of(&response), br#"{"status":"ok"}"#);
    }
}

/// A request the old gateway accepted before its signal is answered before it exits, not
/// cut: here its backend answers only once the gateway is draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_answers_the_requests_it_accepted_before_it_exits() {
    let mut backend = ScriptedOrigin::start().await;
    let mut gateway = gateway()
        .endpoint(json!({"endpoint": "/slow", "output_encoding": "no-op",
                         "backend": [{"host": [backend.url()], "url_pattern": "/slow"}]}))
        .root("shutdown_timeout", json!("5s"))
        .run();
    let mut client = RawClient::connect(gateway.addr).await;
    client
        .send(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut upstream = backend.accept().await;
    gateway.process.signal("TERM");
    gateway.process.wait_for_log("All streams ended");
    upstream
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlater")
        .await;
    let response = client.read_to_end().await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(body_of(&response), b"later");
    let status = gateway.process.wait_exit(STEP);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Keep-alive connections do not hold a drain up: at the signal an idle one is closed at
/// once, one with a request in flight gets its whole response (saying `Connection: close`)
/// and is closed after it, and a connection accepted just before the signal whose head is
/// still on its way is answered; then the process exits, long before its `shutdown_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_idle_keep_alive_connections_and_answers_those_under_way() {
    let mut backend = ScriptedOrigin::start().await;
    let mut gateway = gateway()
        .endpoint(json!({"endpoint": "/slow", "output_encoding": "no-op",
                         "backend": [{"host": [backend.url()], "url_pattern": "/slow"}]}))
        .root("shutdown_timeout", json!("60s"))
        .run();
    let addr = gateway.addr;
    // Idle: one request answered, the connection kept open.
    let mut idle = RawClient::connect(addr).await;
    idle.send(b"GET /__health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    idle.read_until(br#"{"status":"ok"}"#).await;
    let answered = idle.received.len();
    // In flight: its backend answers only once the gateway drains.
    let mut busy = RawClient::connect(addr).await;
    busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut upstream = backend.accept().await;
    // Under way: accepted (the listen queue is empty again), half a head sent.
    let mut late = RawClient::connect(addr).await;
    late.send(b"GET /__health HTTP/1.1\r\n").await;
    while listen_queue(addr.port()).queued > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    gateway.process.signal("TERM");
    let idle = idle.read_to_end().await;
    assert_eq!(idle.len(), answered, "{}", String::from_utf8_lossy(&idle));
    late.send(b"Host: x\r\n\r\n").await;
    let late = String::from_utf8(late.read_to_end().await).unwrap();
    assert!(late.starts_with("HTTP/1.1 200 OK"), "{late}");
    assert!(late.contains("\r\nconnection: close\r\n"), "{late}");
    assert!(late.ends_with(r#"{"status":"ok"}"#), "{late}");
    upstream
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlater")
        .await;
    let busy = busy.read_to_end().await;
    let text = String::from_utf8_lossy(&busy);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert_eq!(body_of(&busy), b"later");
    // Within STEP, far below the 60 s: it waited for no connection until its deadline.
    let status = gateway.process.wait_exit(STEP);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        !gateway.process.log().contains("still open at the deadline"),
        "{}",
        gateway.process.log()
    );
}

/// Clients that connect without pause, each a whole request (the health check, or the
/// head of a stream) on a new connection, counting what each attempt got.
struct Storm {
    answered: AtomicU64,
    /// What went wrong with an attempt, as it was seen: refused, reset, cut, unanswered.
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Storm {
    fn start(addr: SocketAddr, clients: usize) -> Arc<Self> {
        let storm = Arc::new(Storm {
            answered: AtomicU64::new(0),
            failures: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        for client in 0..clients {
            let storm = storm.clone();
            tokio::spawn(async move {
                let mut attempt = 0u64;
                while !storm.stop.load(Relaxed) {
                    // One attempt in four opens a stream, which the gateway hands to the
                    // plugin: a draining gateway must answer those too.
                    let path = match attempt % 4 {
                        0 => format!("/sse/storm-{client}"),
                        _ => "/__health".to_owned(),
                    };
                    match Self::attempt(addr, &path).await {
                        Ok(()) => storm.answered.fetch_add(1, Relaxed),
                        Err(failure) => {
                            storm.failures.lock().unwrap().push(failure);
                            0
                        }
                    };
                    attempt += 1;
                }
            });
        }
        storm
    }

    /// Connects, sends `GET path` and reads until a 200's head is complete.
    async fn attempt(addr: SocketAddr, path: &str) -> Result<(), String> {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{path}: sending: {e}"))?;
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(STEP, stream.read(&mut buf)).await {
                Err(_) => return Err(format!("{path}: no answer within {STEP:?}")),
                Ok(Err(e)) => return Err(format!("{path}: reading: {e}")),
                Ok(Ok(0)) => {
                    let text = String::from_utf8_lossy(&received);
                    return Err(format!("{path}: closed after {text:?}"));
                }
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            }
        }
        match received.starts_with(b"HTTP/1.1 200 OK\r\n") {
            true => Ok(()),
            false => Err(format!("{path}: {}", String::from_utf8_lossy(&received))),
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Relaxed)
    }

    /// Waits until `count` attempts in all were answered.
    fn wait_for_answers(&self, count: u64) {
        let deadline = Instant::now() + STEP;
        while self.answered() < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} answered; failures: {:?}",
                self.answered(),
                self.failures.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The ids a resuming client received, as numbers: each must follow the one before.
fn gaps_and_repeats(events: &[Value]) -> Vec<String> {
    let ids: Vec<u64> = events
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("a numeric id")
        })
        .collect();
    ids.windows(2)
        .filter(|pair| pair[1] != pair[0] + 1)
        .map(|pair| format!("{} then {}", pair[0], pair[1]))
        .collect()
}

/// A rolling restart through `scripts/socket-launcher.py`: a second gateway starts on the
/// held socket, then the first gets SIGTERM and drains (the streams' ends spread over
/// `drain_spread`), while a storm of clients connects without pause and relay and fan-out
/// clients follow their streams. No attempt is refused, reset or left unanswered, the old
/// gateway exits 0, and every client, resuming on the new gateway by `Last-Event-ID` as
/// EventSource does, sees its ids with no gap and no repeat: the fan-out clients of one
/// stream, each at its own id, meet a fresh hub whose ring starts at the first one's id,
/// and the others are caught up from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_handover_under_a_connect_storm_refuses_nothing_and_loses_no_event() {
    let origin = origin().interval_ms(20).retry_ms(100).run();
    // The streams' ends spread over 2 s of the drain, within its 5 s.
    let launcher = gateway()
        .plugin_block(
            PLUGIN,
            json!({"backend_host": origin.url(), "drain_spread": "2s", "routes": [
                {"endpoint": "/sse/{id}", "backend_url_pattern": "/events-stream/{id}"},
                {"endpoint": "/fan/{id}", "backend_url_pattern": "/events-stream/{id}",
                 "fanout": true}]}),
        )
        .root("shutdown_timeout", json!("5s"))
        .launch();
    let old = launcher.gateway_pids()[0];
    let relay: Vec<ResumingClient> = (0..4)
        .map(|i| ResumingClient::follow(&format!("http://{}/sse/h{i}", launcher.addr)))
        .collect();
    let fan_out: Vec<ResumingClient> = (0..3)
        .map(|_| ResumingClient::follow(&format!("http://{}/fan/shared", launcher.addr)))
        .collect();
    for client in relay.iter().chain(&fan_out) {
        client.wait_for_events(5);
    }
    let clients: Vec<&ResumingClient> = relay.iter().chain(&fan_out).collect();
    let storm = Storm::start(launcher.addr, 16);
    storm.wait_for_answers(200);

    launcher.hand_over();
    assert_eq!(
        launcher.wait_for_exit_of(old),
        0,
        "{}",
        launcher.process.log()
    );
    let pids = launcher.gateway_pids();
    assert_eq!(pids.len(), 2, "{}", launcher.process.log());
    launcher
        .process
        .wait_for_log(&format!("gateway pid {} is ready", pids[1]));
    // From here only the new gateway runs: what is answered and received now, it served.
    let answered_by_the_old_one = storm.answered();
    let received_from_the_old_one: Vec<usize> = clients.iter().map(|c| c.events().len()).collect();
    storm.wait_for_answers(answered_by_the_old_one + 200);
    for (client, before) in clients.iter().zip(received_from_the_old_one) {
        client.wait_for_events(before + 10);
    }
    storm.stop.store(true, Relaxed);

    let failures = storm.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed attempts: {failures:?}",
        failures.len()
    );
    for client in &clients {
        assert!(client.connects() >= 2, "the client never resumed");
        let wrong = gaps_and_repeats(&client.events());
        assert!(wrong.is_empty(), "ids out of sequence: {wrong:?}");
    }
    for client in &relay {
        assert_eq!(client.events()[0]["id"], "1");
    }
}

/// The unit files README gives (examples/systemd) are ones systemd accepts: `systemd-analyze
/// verify` parses them, checks the socket/service pairing and that each `ExecStart` is an
/// executable, here pointed at this build's `host` and the repository's launcher. (There is no
/// systemd to run them under in the test environment; the protocol they use is what
/// `systemd_socket_activate_starts_the_gateway_on_its_first_connection` runs.)
#[test]
fn the_example_systemd_units_verify() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd");
    let launcher = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/socket-launcher.py");
    let host = testkit::bin("host");
    let units = TempDir::new("systemd-units");
    let mut paths = Vec::new();
    for unit in [
        "gateway.socket",
        "gateway.service",
        "gateway-launcher.service",
    ] {
        let text = std::fs::read_to_string(examples.join(unit)).unwrap();
        let text = text
            .replace("/usr/local/bin/host", host.to_str().unwrap())
            .replace(
                "/usr/local/bin/socket-launcher.py",
                launcher.canonicalize().unwrap().to_str().unwrap(),
            );
        let path = units.path().join(unit);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze (Debian's systemd, installed by scripts/test-deps.sh)");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{stderr}");
    // verify reports a unit's problems on stderr, each line naming the unit.
    assert!(!stderr.contains("gateway"), "{stderr}");
}
