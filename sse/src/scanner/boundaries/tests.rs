//! The masks' reading of event boundaries against the line reading, over any chunking.

use super::*;
use proptest::prelude::*;

/// What a relay keeps after each chunk: the boundaries, the last event ID and `retry`.
type Seen = Vec<(Boundaries, String, Option<u64>)>;

fn read(
    input: &[u8],
    cuts: &[usize],
    mut scan: impl FnMut(&mut Scanner, &[u8]) -> Boundaries,
) -> Seen {
    let mut scanner = Scanner::resuming("0");
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut from = 0;
    let mut seen = Vec::new();
    for cut in cuts {
        let found = scan(&mut scanner, &input[from..cut]);
        seen.push((
            found,
            scanner.last_event_id().to_owned(),
            scanner.retry_ms(),
        ));
        from = cut;
    }
    seen
}

fn by_lines(input: &[u8], cuts: &[usize]) -> Seen {
    read(input, cuts, |scanner, chunk| {
        let mut found = Boundaries::default();
        scanner.feed(chunk, |piece| found.record(0, piece));
        found
    })
}

fn by_masks(input: &[u8], cuts: &[usize]) -> Seen {
    read(input, cuts, Scanner::boundaries)
}

#[test]
fn reads_lf_events_across_blocks_with_the_last_id() {
    let long = "x".repeat(150);
    let input = format!(
        "data: a\n\nid: 1\ndata: {long}\n\nidx: 2\n\ndata: b\n\nid\ndata: c\n\nid: 9\ndata: cut"
    );
    let seen = by_masks(input.as_bytes(), &[1]);
    // The first byte goes to the line reading (a stream's start), the rest to the masks.
    assert_eq!(seen[0].0, Boundaries::default());
    // Offsets are the chunk's, which starts at the input's second byte.
    let ends: Vec<usize> = input.match_indices("\n\n").map(|(at, _)| at + 1).collect();
    assert_eq!(
        seen[1].0,
        Boundaries {
            last: ends.last().copied(),
            events: 5
        }
    );
    // `id` alone empties the ID; `idx` is another field; the cut event's id waits.
    assert_eq!(seen[1].1, "");
    assert_eq!(seen, by_lines(input.as_bytes(), &[1]));
}

#[test]
fn a_line_that_starts_a_block_is_read() {
    // An LF ends the first block: the next block's first byte starts a line, here a
    // blank one, and then an `id` line.
    let first = format!("data: {}\n", "y".repeat(57));
    assert_eq!(first.len(), 64);
    let chunk = format!("{first}\nid: 5\n\n");
    let mut scanner = Scanner::resuming("0");
    scanner.feed(b"\n", |_| {});
    let found = scanner.boundaries(chunk.as_bytes());
    assert_eq!(
        found,
        Boundaries {
            last: Some(chunk.len()),
            events: 2
        }
    );
    assert_eq!(scanner.last_event_id(), "5");
    let block_start_id = format!("data: {}\nid: 6\n\n", "y".repeat(57));
    assert_eq!(scanner.boundaries(block_start_id.as_bytes()).events, 1);
    assert_eq!(scanner.last_event_id(), "6");
}

#[test]
fn hands_the_event_holding_a_cr_or_retry_or_an_unusual_id_to_the_line_reading() {
    for odd in [
        "data: x\r\n",
        "retry: 7\n",
        "id: \u{e9}\n",
        "id: a\0\n",
        "data: \r\r",
    ] {
        let input = format!("\ndata: a\nid: 3\n\n{odd}data: b\n\nid: 4\n\n: c\n");
        assert_eq!(
            by_masks(input.as_bytes(), &[1]),
            by_lines(input.as_bytes(), &[1]),
            "{odd:?}"
        );
    }
    let long_id = format!("\nid: {}\n\n", "y".repeat(MAX_ID_BYTES + 1));
    assert_eq!(
        by_masks(long_id.as_bytes(), &[1]),
        by_lines(long_id.as_bytes(), &[1])
    );
}

#[test]
fn the_simd_masks_are_the_bytewise_ones() {
    let mut block = [0u8; 64];
    for seed in 0..500u32 {
        for (at, byte) in block.iter_mut().enumerate() {
            // A few values, LF and CR among them, in every position.
            *byte = [b'\n', b'\r', b'a', 0, 0xff][(seed as usize * 7 + at * at) % 5];
            if (seed >> (at % 9)) & 1 == 1 {
                *byte = b'\n';
            }
        }
        assert_eq!(
            masks::<true>(&block),
            masks_bytewise::<true>(&block),
            "{block:?}"
        );
        assert_eq!(masks::<false>(&block), masks_bytewise::<false>(&block));
    }
}

/// Streams of mostly LF lines (the masks' shape), with every kind of line the two
/// readings tell apart, long ones across blocks, and some CR line ends.
fn lf_stream() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => Just(b"data: x".to_vec()),
        2 => Just(Vec::new()),
        2 => (1..200usize).prop_map(|n| [&b"data: "[..], &vec![b'z'; n]].concat()),
        3 => (0..20u32).prop_map(|n| format!("id: {n}").into_bytes()),
        1 => Just(b"id".to_vec()),
        1 => Just(b"id:7".to_vec()),
        1 => Just(b"id:".to_vec()),
        1 => Just(b"idx: 5".to_vec()),
        1 => Just(b"id: a\0".to_vec()),
        1 => Just("id: \u{e9}".as_bytes().to_vec()),
        1 => Just(b"i".to_vec()),
        1 => Just(b"retry: 25".to_vec()),
        1 => Just(b"rx: 1".to_vec()),
        1 => Just(b": comment".to_vec()),
        1 => Just(b"event: e".to_vec()),
    ];
    // A CR ends the masks' reading: rare, so that most streams are read across blocks.
    let ending = prop_oneof![
        40 => Just(&b"\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b"\r\n"[..])
    ];
    crate::scanner::tests::lines_ending(line, ending, 40)
}

proptest! {
    #[test]
    fn the_masks_report_what_the_lines_do(
        input in lf_stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        prop_assert_eq!(by_masks(&input, &cuts), by_lines(&input, &cuts));
    }

    #[test]
    fn so_they_do_on_the_line_readings_own_streams(
        input in crate::scanner::tests::stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        prop_assert_eq!(by_masks(&input, &cuts), by_lines(&input, &cuts));
    }
}
