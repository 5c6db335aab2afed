#![allow(clippy::single_range_in_vec_init)] // ranges of a buffer, not vectors of numbers

use super::*;

#[test]
fn split_at_cuts_a_straddling_range_in_two() {
    // (ranges, cut, what stays, the tail)
    let cases = [
        (
            vec![0..4, 6..10, 12..16],
            8,
            vec![0..4, 6..8],
            vec![8..10, 12..16],
        ),
        (vec![0..4, 6..10], 10, vec![0..4, 6..10], vec![]),
        (vec![0..4, 6..10], 5, vec![0..4], vec![6..10]),
        (vec![0..4, 6..10], 12, vec![0..4, 6..10], vec![]),
        (vec![0..4, 6..10], 0, vec![], vec![0..4, 6..10]),
    ];
    for (mut ranges, cut, kept, expected_tail) in cases {
        let mut tail = Vec::new();
        split_at(&mut ranges, cut, &mut tail);
        assert_eq!((ranges, tail), (kept, expected_tail), "cut at {cut}");
    }
}

#[test]
fn compact_moves_the_kept_ranges_to_the_front_in_order() {
    let mut buf = *b"xxabcxxdexxf";
    let kept = compact(&mut buf, &[2..5, 7..9, 11..12]);
    assert_eq!(&buf[..kept], b"abcdef");
}
