//! Incremental event-stream parser (WHATWG HTML, "Interpreting an event stream"), built on
//! the [`Scanner`]: this layer only collects `data` and `event` values into events.

use crate::scanner::{Field, Piece, Scanner};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The stream's last event ID when this event was dispatched ("" when none was set).
    pub id: String,
    /// The event type; "message" when the stream named none.
    pub event: String,
    /// The data lines joined with LF.
    pub data: String,
}

/// Parses an event stream fed in arbitrary chunks.
#[derive(Debug, Default)]
pub struct Parser {
    scanner: Scanner,
    /// The data buffer: each data line followed by LF, decoded at dispatch.
    data: Vec<u8>,
    /// The `event` line being read, and the type it last set.
    event_value: Vec<u8>,
    event_type: Vec<u8>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser for a reconnection: like EventSource, the last event ID carries over, so
    /// events on the new connection without an `id:` still report it.
    pub fn resuming(last_event_id: &str) -> Self {
        Self {
            scanner: Scanner::resuming(last_event_id),
            ..Self::default()
        }
    }

    /// The ID a reconnecting client sends as `Last-Event-ID`: set when an event is
    /// dispatched, so an event cut off mid-way does not move it.
    pub fn last_event_id(&self) -> &str {
        self.scanner.last_event_id()
    }

    /// The reconnection time the stream asked for with `retry:`, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.scanner.retry_ms()
    }

    /// Parses `chunk`, calling `on_event` for each event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event)) {
        let Self {
            scanner,
            data,
            event_value,
            event_type,
        } = self;
        scanner.feed(chunk, |piece| match piece {
            Piece::Value(Field::Data, part) => data.extend_from_slice(part),
            Piece::LineEnd(Field::Data) => data.push(b'\n'),
            Piece::Value(Field::Event, part) => event_value.extend_from_slice(part),
            Piece::LineEnd(Field::Event) => {
                std::mem::swap(event_type, event_value);
                event_value.clear();
            }
            Piece::EventEnd { last_event_id, .. } => {
                let event = std::mem::take(event_type);
                event_value.clear();
                if data.is_empty() {
                    return;
                }
                data.pop(); // the LF after the last data line
                on_event(Event {
                    id: last_event_id.as_str().to_owned(),
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        String::from_utf8_lossy(&event).into_owned()
                    },
                    data: String::from_utf8_lossy(data).into_owned(),
                });
                data.clear();
            }
            Piece::Comment { .. } => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<Event>, Parser) {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| events.push(e));
        }
        (events, parser)
    }

    fn parse(input: &str) -> Vec<Event> {
        parse_chunks(&[input.as_bytes()]).0
    }

    fn ev(id: &str, event: &str, data: &str) -> Event {
        Event {
            id: id.into(),
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn spec_edge_cases() {
        let table: &[(&str, Vec<Event>)] = &[
            ("data: a\n\n", vec![ev("", "message", "a")]),
            ("data:a\n\n", vec![ev("", "message", "a")]),
            ("data:  a\n\n", vec![ev("", "message", " a")]),
            ("data: a\ndata: b\n\n", vec![ev("", "message", "a\nb")]),
            ("data\n\n", vec![ev("", "message", "")]),
            ("data\ndata\n\n", vec![ev("", "message", "\n")]),
            (
                "data: a\r\rdata: b\r\n\r\n",
                vec![ev("", "message", "a"), ev("", "message", "b")],
            ),
            ("\u{feff}data: bom\n\n", vec![ev("", "message", "bom")]),
            (
                "id: 7\nevent: tick\ndata: x\n\n",
                vec![ev("7", "tick", "x")],
            ),
            (": a comment\ndata: x\n\n", vec![ev("", "message", "x")]),
            ("foo: bar\ndata: x\n\n", vec![ev("", "message", "x")]),
            (
                "id: 1\ndata: a\n\nid: a\0b\ndata: b\n\n",
                vec![ev("1", "message", "a"), ev("1", "message", "b")],
            ),
            (
                "id: 3\n\ndata: later\n\n",
                vec![ev("3", "message", "later")],
            ),
            ("id\ndata: x\n\n", vec![ev("", "message", "x")]),
            ("event: only\n\ndata: x\n\n", vec![ev("", "message", "x")]),
            ("data: cut off", vec![]),
            ("data: cut off\n", vec![]),
        ];
        for (input, expected) in table {
            assert_eq!(&parse(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn only_a_second_bom_is_data() {
        let events = parse("\u{feff}\u{feff}data: x\n\n");
        assert!(
            events.is_empty(),
            "a second BOM makes the field name unknown"
        );
    }

    #[test]
    fn retry_takes_digits_only() {
        for (input, expected) in [
            ("retry: 1500\n", Some(1500)),
            ("retry: 15x\n", None),
            ("retry: -1\n", None),
            ("retry:\n", None),
            ("retry: 1500\nretry: 2.5\n", Some(1500)),
        ] {
            assert_eq!(
                parse_chunks(&[input.as_bytes()]).1.retry_ms(),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_resumed_stream_keeps_the_last_id() {
        let mut parser = Parser::resuming("41");
        let mut events = Vec::new();
        parser.feed(b"data: no id\n\nid: 42\ndata: x\n\n", |e| events.push(e));
        assert_eq!(
            events,
            [ev("41", "message", "no id"), ev("42", "message", "x")]
        );
    }

    #[test]
    fn last_event_id_moves_only_on_dispatch() {
        let (_, parser) = parse_chunks(&[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]);
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn every_split_yields_the_same_events() {
        let input: &[u8] = "\u{feff}retry: 10\r\nid: 1\r\nevent: e\r\ndata: a\r\ndata: é\r\n\r\n: c\rdata: b\r\rid: 2\ndata:c\n\ndata: tail"
            .as_bytes();
        let (whole, _) = parse_chunks(&[input]);
        assert_eq!(whole.len(), 3);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let (split, parser) = parse_chunks(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(split, whole, "split at {i},{j}");
                assert_eq!(parser.retry_ms(), Some(10));
            }
        }
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(&bytewise).0, whole);
    }
}
