//! Serializes events in the form `Parser` reads back.

use crate::Event;

/// Appends `event` to `out`. An empty `id` writes no `id:` line and the type "message" no
/// `event:` line; data containing CR, LF or CRLF becomes several `data:` lines.
pub fn write_event(out: &mut Vec<u8>, event: &Event) {
    if !event.id.is_empty() {
        field(out, "id", &event.id);
    }
    if event.event != "message" {
        field(out, "event", &event.event);
    }
    let mut rest = event.data.as_str();
    loop {
        match rest.find(['\r', '\n']) {
            Some(i) => {
                field(out, "data", &rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                field(out, "data", rest);
                break;
            }
        }
    }
    out.push(b'\n');
}

/// Appends a `retry:` line asking clients to wait `ms` before reconnecting.
pub fn write_retry(out: &mut Vec<u8>, ms: u64) {
    field(out, "retry", &ms.to_string());
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Parser;

    #[test]
    fn round_trips_through_the_parser() {
        let events = [
            Event {
                id: "1".into(),
                event: "tick".into(),
                data: "one".into(),
            },
            Event {
                id: "2".into(),
                event: "message".into(),
                data: "two\nlines".into(),
            },
            Event {
                id: "3".into(),
                event: "message".into(),
                data: "".into(),
            },
        ];
        let mut out = Vec::new();
        write_retry(&mut out, 2500);
        for e in &events {
            write_event(&mut out, e);
        }
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "retry: 2500\nid: 1\nevent: tick\ndata: one\n\nid: 2\ndata: two\ndata: lines\n\nid: 3\ndata: \n\n"
        );
        let mut parser = Parser::new();
        let mut parsed = Vec::new();
        parser.feed(&out, |e| parsed.push(e));
        assert_eq!(parsed, events);
        assert_eq!(parser.retry_ms(), Some(2500));
    }
}
