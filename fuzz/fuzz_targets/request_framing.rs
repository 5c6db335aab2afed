//! The gate's reading of a request: `httparse` for the head (128 headers, as the gate),
//! `wire::framing::request` for where its body ends (checked against the RFC 9112
//! reference in `reference::framing`), then the body fed through `Framing::take` whole and
//! in the input's pieces, which must agree; a `Content-Length` body is exactly its bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reference::framing::{check, declared};
use reference::{cuts_and_payload, pieces, take_pieces};
use wire::framing::Framing;

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = cuts_and_payload(data);
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = request.parse(input) else {
        return;
    };
    let list: Vec<(&str, &[u8])> = request.headers.iter().map(|h| (h.name, h.value)).collect();
    let framing = wire::framing::request(request.headers);
    check(&framing, &declared(&list), &Framing::Length(0));
    let Ok(framing) = framing else {
        return;
    };
    let body = &input[head_len..];
    let cuts: Vec<usize> = cuts
        .into_iter()
        .map(|c| c.saturating_sub(head_len))
        .collect();
    let whole = take_pieces(framing.clone(), &[body]);
    assert_eq!(take_pieces(framing.clone(), &pieces(body, &cuts)), whole);
    if let Framing::Length(n) = framing {
        let taken = n.min(body.len() as u64) as usize;
        assert_eq!(whole.payload, &body[..taken]);
        assert_eq!((whole.taken, whole.done), (taken, n <= body.len() as u64));
    }
});
