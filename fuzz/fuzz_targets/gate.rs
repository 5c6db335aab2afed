//! The host's gate (`host::gate::Gate`) as hyper sees it, over a real loopback socket: the
//! input is the client's bytes (sent whole, then the write side shut), read out of the gate
//! in small reads of the sizes the input gives. What comes out must be exactly the heads and
//! bodies a whole-input reading gives (`reference::gate`: `httparse`, `wire::framing`,
//! `Framing::take`), never a byte of the request after; it must stop where that reading
//! stops (EOF, a 431 or 400, a claimed head with its method, path, query and headers), and
//! at a claim the bytes left in its buffer followed by those still in the socket are
//! exactly the rest of the input.
//!
//! A `Gate` owns a tokio `TcpStream` and timers, so each input costs one loopback
//! connection on a current-thread runtime; both ends close with a reset (linger 0), so no
//! connection lingers in TIME_WAIT whatever the rate.

#![no_main]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use host::gate::{Gate, Limits, Stop};
use host::plugins::PluginRoute;
use host::route::{Pending, Router};
use libfuzzer_sys::fuzz_target;
use reference::cuts_and_payload;
use reference::gate::{claimed_template, expected, Expected, CLAIMED, MAX_HEADERS, MAX_HEAD_BYTES};
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Its index in its plugin's list, which the claim must carry.
const CLAIMED_ROUTE: u32 = 7;

/// The host's route table with the one plugin route (and no endpoints).
fn router() -> Arc<Router> {
    static ROUTER: OnceLock<Arc<Router>> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let config = host::config::parse("krakend.json", r#"{"version": 3}"#).unwrap();
            let route = PluginRoute {
                plugin: 0,
                route: CLAIMED_ROUTE,
                endpoint: CLAIMED.into(),
                template: claimed_template().clone(),
                methods: vec!["GET".into()],
            };
            Arc::new(Router::new(&config, &[route], &["fuzz"], false).unwrap())
        })
        .clone()
}

fn runtime() -> &'static (Runtime, TcpListener) {
    static RUNTIME: OnceLock<(Runtime, TcpListener)> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (runtime, TcpListener::bind("127.0.0.1:0").unwrap())
    })
}

fn reset_on_close(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = cuts_and_payload(data);
    // hyper's reads: the sizes the cuts give, in turn (at least one byte each).
    let sizes: Vec<usize> = match cuts.is_empty() {
        true => vec![8192],
        false => cuts.iter().map(|c| 1 + c % 97).collect(),
    };
    let (runtime, listener) = runtime();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer): (TcpStream, SocketAddr) = listener.accept().unwrap();
    reset_on_close(&client);
    reset_on_close(&server);
    client.write_all(input).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let limits = Limits {
        max_header_bytes: MAX_HEAD_BYTES,
        max_headers: MAX_HEADERS,
        read_header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        read_timeout: None,
        send_buffer: None,
    };
    let (given, read_error, stop, mut stream, buffered) = runtime.block_on(async {
        server.set_nonblocking(true).unwrap();
        let server = tokio::net::TcpStream::from_std(server).unwrap();
        let accepted = (tokio::time::Instant::now(), BytesMut::new());
        let pending = Arc::new(Pending::default());
        // Never cancelled: the drain's early end of an idle connection is not what is fuzzed.
        let draining = CancellationToken::new();
        let mut gate = Gate::new(server, peer, accepted, limits, router(), pending, draining);
        let mut given = Vec::new();
        let mut buf = [0u8; 8192];
        let mut read_error = false;
        for size in sizes.iter().cycle() {
            match gate.read(&mut buf[..*size]).await {
                Ok(0) => break,
                Ok(n) => given.extend_from_slice(&buf[..n]),
                Err(_) => {
                    read_error = true;
                    break;
                }
            }
        }
        let (stop, stream, buffered) = gate.into_parts();
        (
            given,
            read_error,
            stop,
            stream.into_std().unwrap(),
            buffered,
        )
    });
    let (expected_given, expected_stop) = expected(input);
    if let Expected::Malformed = expected_stop {
        // Bytes of the read that met the error are not given: a prefix, then the error.
        assert!(read_error, "a malformed chunked body read without an error");
        assert!(given.starts_with(&expected_given) && input.starts_with(&given));
        return;
    }
    assert!(
        !read_error,
        "a read error; the reference stops at {expected_stop:?}"
    );
    assert_eq!(given, expected_given, "the bytes given to hyper");
    match (stop, expected_stop) {
        (Stop::Eof, Expected::Eof) => {}
        (Stop::Rejected(rejection), Expected::Status(statuses)) => {
            let status = rejection.status.as_u16();
            assert!(
                statuses.contains(&status),
                "{status} {}, not {statuses:?}",
                rejection.message
            )
        }
        (
            Stop::Claimed { claim, head, .. },
            Expected::Claimed {
                method,
                path,
                query,
                headers,
                rest,
            },
        ) => {
            assert_eq!((claim.plugin, claim.route), (0, CLAIMED_ROUTE));
            assert_eq!(
                (
                    head.method.as_str(),
                    head.path.as_str(),
                    head.query.as_str()
                ),
                (method.as_str(), path.as_str(), query.as_str())
            );
            let got: Vec<(String, Vec<u8>)> = head
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect();
            assert_eq!(got, headers);
            assert_eq!(head.peer.as_str(), peer.to_string());
            stream.set_nonblocking(false).unwrap();
            let mut handed_over = buffered.to_vec();
            std::io::Read::read_to_end(&mut stream, &mut handed_over).unwrap();
            assert_eq!(handed_over, rest, "the bytes after the claimed head");
        }
        (stop, expected) => {
            panic!("the gate stopped with {stop:?}; the reference with {expected:?}")
        }
    }
});
