//! The event-stream codec shared by the client, the origin and the plugin.
//!
//! [`Parser`] is an incremental parser that follows the WHATWG HTML "event stream
//! interpretation" rules: a leading BOM is skipped, lines end in CR, LF or CRLF (also when
//! the pair is split across reads), `data` lines are joined with LF, an `id` containing NUL
//! is ignored, `retry` takes ASCII digits only, comments and unknown fields are ignored, and
//! an event cut off by the end of the stream is never dispatched. [`Scanner`] is that
//! grammar without the event building: it keeps a few bytes of state and reports where
//! events end, for relays that forward what they scan. It does no I/O, so the
//! same code serves every transport. [`write_event`] and [`write_retry`] serialize;
//! [`stamp`] is the timestamped format the benchmark uses.

#![forbid(unsafe_code)]

mod lines;
mod parser;
mod scanner;
pub mod stamp;
mod writer;

pub use lines::{field, Lines};
pub use parser::{Event, Parser};
pub use scanner::{Boundaries, Field, LastEventId, Piece, Scanner, MAX_ID_BYTES};
pub use writer::{write_event, write_retry};
