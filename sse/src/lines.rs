//! Splitting a byte stream into lines, across chunk boundaries, and a line into its field
//! and value, for readers that go line by line (the load tool, the fuzz targets' reference).

/// Splits bytes fed in arbitrary chunks into lines ending in CR, LF or CRLF (the event
/// stream's line endings), also when a CRLF pair is split between two chunks.
#[derive(Debug, Default)]
pub struct Lines {
    /// The unfinished line carried over from the previous chunk.
    partial: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next one belongs to it.
    after_cr: bool,
}

impl Lines {
    /// Calls `on_line` with each line `chunk` completes, without its line ending.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let skip = match &chunk[end..] {
                [b'\r', b'\n', ..] => 2,
                [b'\r'] => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            if self.partial.is_empty() {
                on_line(&chunk[..end]);
            } else {
                self.partial.extend_from_slice(&chunk[..end]);
                on_line(&self.partial);
                self.partial.clear();
            }
            chunk = &chunk[end + skip..];
        }
        self.partial.extend_from_slice(chunk);
    }
}

/// A line's field name and value as the event stream splits them (WHATWG HTML, "Interpreting
/// an event stream"): at the first colon, one space after it dropped; a line without a colon
/// is a field with an empty value. `None` for a comment (a line that starts with a colon).
pub fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    match line.iter().position(|&b| b == b':') {
        Some(0) => None,
        Some(colon) => {
            let value = &line[colon + 1..];
            Some((&line[..colon], value.strip_prefix(b" ").unwrap_or(value)))
        }
        None => Some((line, &[])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_values() {
        let split = |line: &str| {
            field(line.as_bytes()).map(|(name, value)| {
                (
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
        };
        let pair = |name: &str, value: &str| Some((name.to_owned(), value.to_owned()));
        assert_eq!(split("data: a: b"), pair("data", "a: b"));
        assert_eq!(split("data:  two"), pair("data", " two"));
        assert_eq!(split("data:x"), pair("data", "x"));
        assert_eq!(split("data"), pair("data", ""));
        assert_eq!(split("id:"), pair("id", ""));
        assert_eq!(split(": comment"), None);
    }

    #[test]
    fn every_ending_at_every_split() {
        let input = b"a\rb\nc\r\nd\r\r\ne";
        for split in 0..=input.len() {
            let mut lines = Lines::default();
            let mut seen = Vec::new();
            for part in [&input[..split], &input[split..]] {
                lines.feed(part, |line| {
                    seen.push(String::from_utf8_lossy(line).into_owned())
                });
            }
            assert_eq!(seen, ["a", "b", "c", "d", ""], "split at {split}");
        }
    }
}
