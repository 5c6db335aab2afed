#![allow(clippy::single_range_in_vec_init)] // ranges of a buffer, not vectors of numbers

use super::*;
use std::task::{Context, Poll};

/// Takes at most 3 bytes per write, to exercise partial vectored writes.
struct Trickle(Vec<u8>);

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = data.len().min(3);
        self.0.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn partial_writes_resume_inside_and_across_ranges() {
    let buf: Vec<u8> = (0..=255u8).collect();
    // More ranges than one writev takes, of uneven lengths, with gaps between them.
    let ranges: Vec<Range<usize>> = (0..100).map(|i| i * 2..i * 2 + 1 + i % 2).collect();
    let expected: Vec<u8> = ranges
        .iter()
        .flat_map(|r| buf[r.clone()].to_vec())
        .collect();
    let mut writer = Trickle(Vec::new());
    write_ranges(&mut writer, &buf, &ranges).await.unwrap();
    assert_eq!(writer.0, expected);
}

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
}

#[test]
fn compact_moves_the_kept_ranges_to_the_front_in_order() {
    let mut buf = *b"xxabcxxdexxf";
    let kept = compact(&mut buf, &[2..5, 7..9, 11..12]);
    assert_eq!(&buf[..kept], b"abcdef");
}
