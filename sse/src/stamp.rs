//! Timestamped events for benchmarks, shared by the origin that writes them and the load
//! tool that reads them: `id: <n>` and `data: t=<CLOCK_MONOTONIC ns> xxx...`, padded so the
//! whole event is a given size. Both sides read the same clock, so receive time minus `t`
//! is the event's delivery latency through whatever stands between them.

/// Nanoseconds of CLOCK_MONOTONIC, comparable across processes on one machine.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// What a stamped data line starts with.
pub const STAMP_PREFIX: &[u8] = b"data: t=";

/// Appends one event of about `size` bytes (never less than its fields need).
pub fn write_stamped_event(out: &mut Vec<u8>, id: u64, stamp_ns: u64, size: usize) {
    let start = out.len();
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(STAMP_PREFIX);
    out.extend_from_slice(stamp_ns.to_string().as_bytes());
    out.push(b' ');
    let used = out.len() - start + 2; // the closing "\n\n"
    out.resize(out.len() + size.saturating_sub(used), b'x');
    out.extend_from_slice(b"\n\n");
}

/// The stamp of a data line written by [`write_stamped_event`].
pub fn parse_stamp(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(STAMP_PREFIX)?;
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_events_have_the_size_and_parse_back() {
        let mut out = Vec::new();
        write_stamped_event(&mut out, 7, 123_456_789, 100);
        assert_eq!(out.len(), 100);
        let mut parser = crate::Parser::new();
        let mut events = Vec::new();
        parser.feed(&out, |e| events.push(e));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, "7");
        let line = format!("data: {}", events[0].data);
        assert_eq!(parse_stamp(line.as_bytes()), Some(123_456_789));
        assert_eq!(parse_stamp(b"data: other"), None);
        let mut small = Vec::new();
        write_stamped_event(&mut small, 1, 1, 0);
        assert!(small.ends_with(b"t=1 \n\n"));
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
