//! The load tool's event reader (`client::load::EventScanner`), which decides what the
//! soak and benchmark count as events and ids: fed in any pieces, it dispatches exactly
//! the events `sse::Parser` does (itself checked against the WHATWG reference by the `sse`
//! target), with the same last event ID and `retry`, and any id or stamp it reports is the
//! event's.

#![no_main]

use client::load::{EventScanner, Received};
use libfuzzer_sys::fuzz_target;
use reference::{cuts_and_payload, pieces};

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = cuts_and_payload(data);
    let mut scanner = EventScanner::default();
    let mut received: Vec<Received> = Vec::new();
    for piece in pieces(input, &cuts) {
        scanner.feed(piece, |e| received.push(e));
    }
    let mut parser = sse::Parser::new();
    let mut events = Vec::new();
    parser.feed(input, |e| events.push(e));
    assert_eq!(received.len(), events.len(), "{received:?}\n{events:?}");
    assert_eq!(scanner.last_event_id(), parser.last_event_id());
    assert_eq!(scanner.retry_ms(), parser.retry_ms());
    for (got, event) in received.iter().zip(&events) {
        if let Some(id) = got.id {
            assert_eq!(event.id.parse::<u64>(), Ok(id), "{event:?}");
        }
        if let Some(stamp) = got.stamp_ns {
            let first = event.data.split('\n').next().unwrap_or_default();
            let line = format!("data: {first}");
            assert_eq!(
                sse::stamp::parse_stamp(line.as_bytes()),
                Some(stamp),
                "{event:?}"
            );
        }
    }
});
