//! WHATWG HTML §9.2.6 "Interpreting an event stream", step by step over a whole input,
//! as an oracle for `sse::Parser` and `sse::Scanner`, which read it in pieces.

/// Everything a stream tells an `EventSource`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stream {
    pub events: Vec<sse::Event>,
    /// The reconnection time last set by `retry`.
    pub retry_ms: Option<u64>,
    /// The last event ID string, as a reconnection would send it.
    pub last_event_id: String,
}

#[derive(Default)]
struct Buffers {
    data: Vec<u8>,
    event_type: Vec<u8>,
    /// Set by `id` lines; the last event ID string follows it at each dispatch.
    id: String,
}

/// Reads a whole stream: a leading BOM is dropped, lines end in CRLF, LF or CR, and a last
/// line without its ending (like an event without its blank line) is discarded.
pub fn parse(input: &[u8]) -> Stream {
    let input = input.strip_prefix("\u{feff}".as_bytes()).unwrap_or(input);
    let mut stream = Stream::default();
    let mut buffers = Buffers::default();
    let mut rest = input;
    while let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        let line = &rest[..end];
        let ending = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + ending..];
        interpret(line, &mut buffers, &mut stream);
    }
    stream
}

fn interpret(line: &[u8], buffers: &mut Buffers, stream: &mut Stream) {
    if line.is_empty() {
        return dispatch(buffers, stream);
    }
    // `sse::field` is the spec's split; `sse::Parser` does not use it, so this stays a
    // reading of its own.
    let Some((field, value)) = sse::field(line) else {
        return;
    };
    match field {
        b"event" => buffers.event_type = value.to_vec(),
        b"data" => {
            buffers.data.extend_from_slice(value);
            buffers.data.push(b'\n');
        }
        // The gateway's bound on what a stream makes it hold and send back upstream, raw
        // and decoded.
        b"id" if !value.contains(&0) && value.len() <= sse::MAX_ID_BYTES => {
            let id = String::from_utf8_lossy(value);
            if id.len() <= sse::MAX_ID_BYTES {
                buffers.id = id.into_owned();
            }
        }
        b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
            // Too large for the clock is as good as not a number: ignored.
            if let Ok(ms) = std::str::from_utf8(value).unwrap_or_default().parse() {
                stream.retry_ms = Some(ms);
            }
        }
        _ => {}
    }
}

fn dispatch(buffers: &mut Buffers, stream: &mut Stream) {
    stream.last_event_id.clone_from(&buffers.id);
    let event_type = std::mem::take(&mut buffers.event_type);
    if buffers.data.is_empty() {
        return;
    }
    buffers.data.pop();
    stream.events.push(sse::Event {
        id: stream.last_event_id.clone(),
        event: match event_type.is_empty() {
            true => "message".into(),
            false => String::from_utf8_lossy(&event_type).into_owned(),
        },
        data: String::from_utf8_lossy(&std::mem::take(&mut buffers.data)).into_owned(),
    });
}
