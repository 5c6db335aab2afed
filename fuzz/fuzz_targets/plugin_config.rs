//! The streaming plugin's block parser (`krakend_server_plugin_streaming::config::parse`):
//! raw text when the first byte is even, else a block built from the input in the block's
//! shape (`reference::json`). Whatever it accepts holds what the plugin relies on: routes
//! most specific first, no two that match the same requests, each endpoint's template,
//! hosts to dial (none for Kafka), buffers of at least 1 KiB, a fan-out ring that holds at
//! least a client's queue, and a shutdown event that ends where an event ends.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

use plugin::config::{block_keys, parse, route_keys_names, Block};
use reference::json::Vocabulary;
use sse::{Piece, Scanner};

/// The block's vocabulary: its keys are the plugin's own lists (`block_keys`,
/// `route_keys_names`), so a key the plugin gains is fuzzed without an edit here.
static BLOCK: LazyLock<Vocabulary> = LazyLock::new(|| Vocabulary {
    keys: Vec::leak([block_keys(), route_keys_names()].concat()),
    strings: &[
        "/sse/{id}",
        "/sse/{other}",
        "/a/*",
        "/a/b",
        "/{x}/b",
        "/feed/{*}",
        "/e/{id}",
        "sse",
        "http://127.0.0.1:9081",
        "http://h:1/",
        "http://h/x",
        "kafka://127.0.0.1:9092",
        "kafka://b:1",
        "ftp://x",
        "round_robin",
        "sticky",
        "header:X-User",
        "cookie:s",
        "ip",
        "query:x",
        "GET",
        "POST",
        "get",
        "15s",
        "0",
        "1m",
        "500ms",
        "x",
        "earliest",
        "latest",
        "{id}",
        "{nope}",
        "orders",
        "type",
        "event: shutdown\ndata: {}",
        "data: a\r\n\r\n",
        "",
    ],
    object_lists: &["routes"],
    string_lists: &["methods", "backend_host", "forward_headers"],
    objects: &["set_headers", "client_tls"],
});

fn check(block: &Block) {
    assert!(!block.routes.is_empty());
    assert!(block.read_buffer_bytes >= 1024);
    assert!(block.eject_after >= 1);
    for pair in block.routes.windows(2) {
        assert!(pair[0].template.specificity() <= pair[1].template.specificity());
    }
    for (i, a) in block.routes.iter().enumerate() {
        assert_eq!(
            path_template::Template::parse(&a.endpoint).as_ref(),
            Ok(&a.template)
        );
        assert_eq!(a.backends.is_empty(), a.kafka.is_some(), "{a:?}");
        if let Some(fanout) = &a.fanout {
            assert!(fanout.replay >= fanout.client_queue, "{fanout:?}");
        }
        for b in &block.routes[i + 1..] {
            let common_method = a.methods.iter().any(|m| b.methods.contains(m));
            assert!(
                !(common_method && a.template.same_shape(&b.template)),
                "{a:?}\n{b:?}"
            );
        }
    }
    if let Some(event) = &block.shutdown_event {
        let mut last_end = None;
        Scanner::default().feed(event.as_bytes(), |piece| {
            if let Piece::EventEnd { end, .. } = piece {
                last_end = Some(end);
            }
        });
        assert_eq!(
            last_end,
            Some(event.len()),
            "{event:?} does not end an event"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 0 => String::from_utf8_lossy(rest).into_owned(),
        Some((_, rest)) => match BLOCK.object(&mut Unstructured::new(rest), 0) {
            Ok(block) => block.to_string(),
            Err(_) => return,
        },
        None => return,
    };
    match parse(&text) {
        Ok(block) => check(&block),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
