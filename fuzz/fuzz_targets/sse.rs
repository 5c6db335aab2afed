//! The event-stream codec: `sse::Parser` fed whole, in the input's pieces and byte by
//! byte gives the events, `retry` and last event ID that the WHATWG reference reading of
//! the whole input gives (`reference::sse_events`), and `sse::Scanner` reports the same
//! event and comment boundaries for any split, each just past a line ending; a relay's
//! `Scanner::boundaries` reports, for each piece, what `Scanner::feed` does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reference::sse_events::{parse, Stream};
use reference::{cuts_and_payload, pieces};
use sse::{Boundaries, Parser, Piece, Scanner, MAX_ID_BYTES};

fn parsed(pieces: &[&[u8]]) -> Stream {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    for piece in pieces {
        parser.feed(piece, |e| events.push(e));
    }
    Stream {
        events,
        retry_ms: parser.retry_ms(),
        last_event_id: parser.last_event_id().to_owned(),
    }
}

/// Every boundary the scanner reports, as stream offsets, with the ID at each event end.
fn boundaries(input: &[u8], pieces: &[&[u8]]) -> Vec<(usize, Option<String>)> {
    let mut scanner = Scanner::default();
    let mut seen = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        let mut last_end = 0;
        scanner.feed(piece, |p| {
            let (end, id) = match p {
                Piece::EventEnd { end, last_event_id } => {
                    (end, Some(last_event_id.as_str().to_owned()))
                }
                Piece::Comment { end } => (end, None),
                Piece::Value(_, value) => {
                    assert!(
                        !value.is_empty() && !value.contains(&b'\n') && !value.contains(&b'\r')
                    );
                    return;
                }
                Piece::LineEnd(_) => return,
            };
            assert!(
                last_end <= end && end <= piece.len(),
                "{end} in {}",
                piece.len()
            );
            last_end = end;
            assert!(
                matches!(input[offset + end - 1], b'\n' | b'\r'),
                "a boundary after a line ending"
            );
            seen.push((offset + end, id));
        });
        offset += piece.len();
    }
    // A piece that ends in CR ends its line there; the LF the next piece starts with is that
    // line's, so the boundary may sit one byte earlier than in the whole.
    seen.into_iter()
        .map(|(end, id)| match input.get(end) {
            Some(b'\n') if input[end - 1] == b'\r' => (end + 1, id),
            _ => (end, id),
        })
        .collect()
}

/// What a relay keeps after each piece: where events end, how many, the last event ID and
/// `retry`, read by `Scanner::boundaries` or (`by_lines`) from `Scanner::feed`'s pieces.
fn relayed(pieces: &[&[u8]], by_lines: bool) -> Vec<(Boundaries, String, Option<u64>)> {
    let mut scanner = Scanner::default();
    let mut seen = Vec::new();
    for piece in pieces {
        let found = if by_lines {
            let mut found = Boundaries::default();
            scanner.feed(piece, |p| match p {
                Piece::EventEnd { end, .. } => {
                    found.last = Some(end);
                    found.events += 1;
                }
                Piece::Comment { end } => found.last = Some(end),
                Piece::Value(..) | Piece::LineEnd(_) => {}
            });
            found
        } else {
            scanner.boundaries(piece)
        };
        seen.push((
            found,
            scanner.last_event_id().to_owned(),
            scanner.retry_ms(),
        ));
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = cuts_and_payload(data);
    let split = pieces(input, &cuts);
    let expected = parse(input);
    let whole = parsed(&[input]);
    assert_eq!(whole, expected, "whole");
    // What a stream makes the gateway hold and send back upstream as `Last-Event-ID`.
    for id in whole
        .events
        .iter()
        .map(|e| &e.id)
        .chain([&whole.last_event_id])
    {
        assert!(id.len() <= MAX_ID_BYTES, "an id of {} bytes", id.len());
    }
    assert_eq!(parsed(&split), expected, "in pieces at {cuts:?}");
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(parsed(&bytewise), expected, "byte by byte");
    let whole = boundaries(input, &[input]);
    assert_eq!(
        boundaries(input, &split),
        whole,
        "boundaries in pieces at {cuts:?}"
    );
    assert_eq!(
        boundaries(input, &bytewise),
        whole,
        "boundaries byte by byte"
    );
    for pieces in [&[input][..], &split, &bytewise] {
        assert_eq!(
            relayed(pieces, false),
            relayed(pieces, true),
            "relayed at {cuts:?}"
        );
    }
});
