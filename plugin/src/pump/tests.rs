#![allow(clippy::single_range_in_vec_init)] // ranges of a buffer, not vectors of numbers

use super::*;

#[test]
fn split_at_cuts_a_straddling_range_in_two() {
    let mut ranges = vec![0..4, 6..10, 12..16];
    let mut tail = Vec::new();
    split_at(&mut ranges, 8, &mut tail);
    assert_eq!((ranges, tail), (vec![0..4, 6..8], vec![8..10, 12..16]));

    let mut ranges = vec![0..4, 6..10];
    let mut tail = Vec::new();
    split_at(&mut ranges, 10, &mut tail);
    assert_eq!((ranges, tail), (vec![0..4, 6..10], vec![]));

    let mut ranges = vec![0..4, 6..10];
    let mut tail = Vec::new();
    split_at(&mut ranges, 5, &mut tail);
    assert_eq!((ranges, tail), (vec![0..4], vec![6..10]));

    let mut ranges = vec![0..4, 6..10];
    let mut tail = Vec::new();
    split_at(&mut ranges, 12, &mut tail);
    assert_eq!((ranges, tail), (vec![0..4, 6..10], vec![]));

    let mut ranges = vec![0..4, 6..10];
    let mut tail = Vec::new();
    split_at(&mut ranges, 0, &mut tail);
    assert_eq!((ranges, tail), (vec![], vec![0..4, 6..10]));
}

#[test]
fn compact_moves_the_kept_ranges_to_the_front_in_order() {
    let mut buf = *b"xxabcxxdexxf";
    let kept = compact(&mut buf, &[2..5, 7..9, 11..12]);
    assert_eq!(&buf[..kept], b"abcdef");
}
