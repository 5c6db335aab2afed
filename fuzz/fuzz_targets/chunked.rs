//! The chunked decoder (`chunked::Decoder`), fed in arbitrary pieces. Raw inputs (first
//! byte even): any split gives what the whole gives (payload, bytes taken, done, refused),
//! through the same checks per call as the gate's reads. Built inputs (first byte odd): a
//! chunked body encoded from the input's chunks, extensions and trailers, with bytes of a
//! next message after it, decodes to exactly its payload and ends exactly at its end.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use reference::{cuts_and_payload, pieces, take_pieces};
use wire::framing::Framing;

#[derive(Arbitrary, Debug)]
struct Body {
    chunks: Vec<Chunk>,
    /// Trailer field lines (CR and LF taken out; an empty one would end the trailers; those
    /// past the section's MAX_LINE left out).
    trailers: Vec<Vec<u8>>,
    next: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Chunk {
    data: Vec<u8>,
    leading_zeros: u8,
    uppercase: bool,
    extension: Option<Vec<u8>>,
}

fn encode(body: &Body) -> (Vec<u8>, Vec<u8>) {
    let line = |bytes: &[u8]| -> Vec<u8> {
        let mut line: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect();
        line.truncate(chunked::MAX_LINE - 2);
        line
    };
    let (mut wire, mut payload) = (Vec::new(), Vec::new());
    for chunk in body.chunks.iter().filter(|c| !c.data.is_empty()) {
        let size = match chunk.uppercase {
            true => format!("{:X}", chunk.data.len()),
            false => format!("{:x}", chunk.data.len()),
        };
        let mut size_line = "0"
            .repeat(usize::from(chunk.leading_zeros % 32))
            .into_bytes();
        size_line.extend_from_slice(size.as_bytes());
        if let Some(extension) = &chunk.extension {
            size_line.push(b';');
            size_line.extend_from_slice(extension);
        }
        wire.extend_from_slice(&line(&size_line));
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&chunk.data);
        wire.extend_from_slice(b"\r\n");
        payload.extend_from_slice(&chunk.data);
    }
    wire.extend_from_slice(b"0\r\n");
    // The whole trailer section, its blank line included, within MAX_LINE.
    let mut section = 2;
    for trailer in &body.trailers {
        let trailer = line(trailer);
        if !trailer.is_empty() && section + trailer.len() + 2 <= chunked::MAX_LINE {
            section += trailer.len() + 2;
            wire.extend_from_slice(&trailer);
            wire.extend_from_slice(b"\r\n");
        }
    }
    wire.extend_from_slice(b"\r\n");
    (wire, payload)
}

fn chunked() -> Framing {
    Framing::Chunked(chunked::Decoder::default())
}

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = cuts_and_payload(data);
    if data.first().is_some_and(|b| b & 1 == 0) {
        let whole = take_pieces(chunked(), &[input]);
        assert_eq!(take_pieces(chunked(), &pieces(input, &cuts)), whole);
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(take_pieces(chunked(), &bytewise), whole);
        return;
    }
    let Ok(body) = Body::arbitrary(&mut Unstructured::new(input)) else {
        return;
    };
    let (mut wire, payload) = encode(&body);
    let body_len = wire.len();
    wire.extend_from_slice(&body.next);
    let cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
    let mut cuts = cuts;
    cuts.sort_unstable();
    let taken = take_pieces(chunked(), &pieces(&wire, &cuts));
    assert!(
        !taken.malformed,
        "refused a valid body: {:?}",
        String::from_utf8_lossy(&wire)
    );
    assert!(taken.done);
    assert_eq!(taken.taken, body_len);
    assert_eq!(taken.payload, payload);
});
