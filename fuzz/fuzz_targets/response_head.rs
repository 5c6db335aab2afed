//! `wire::response_head::parse`, the origin's head read from the bytes so far: every
//! prefix of an input is `Partial` until the first that is an answer, and every longer
//! prefix gives that same answer (so the body bytes after a head change nothing). A
//! complete head's status, content type and framing are checked against `httparse` and the
//! RFC 9112 reference, and its body is taken whole and in pieces alike.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use reference::framing::{check, declared, response_has_no_body};
use reference::{cuts_and_payload, pieces, take_pieces};
use wire::framing::Framing;
use wire::response_head::{parse, HeadError, Parsed, MAX_HEADERS};

/// Every prefix is parsed: longer inputs only cost time.
const MAX_INPUT: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let method = match data.first().map(|b| b >> 6) {
        Some(1) => Method::HEAD,
        Some(2) => Method::POST,
        _ => Method::GET,
    };
    let (cuts, input) = cuts_and_payload(data);
    let input = &input[..input.len().min(MAX_INPUT)];
    let mut first_answer = None;
    for end in 0..=input.len() {
        let parsed = parse(&input[..end], &method);
        match &first_answer {
            None if parsed == Ok(Parsed::Partial) => {}
            None => first_answer = Some((end, parsed)),
            Some((at, answer)) => assert_eq!(&parsed, answer, "at {end}, answered at {at}"),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head = match first_answer {
        Some((at, Ok(Parsed::Complete(head)))) => {
            assert_eq!(
                head.len, at,
                "a head is complete at its blank line, not before or after"
            );
            assert_eq!(
                response.parse(input),
                Ok(httparse::Status::Complete(head.len))
            );
            head
        }
        // A head refused for its framing is one whose headers the reference refuses too.
        Some((_, Err(HeadError::Framing(e)))) => {
            let Ok(httparse::Status::Complete(_)) = response.parse(input) else {
                panic!("refused for its framing, {e}, but not a whole head");
            };
            let status = http::StatusCode::from_u16(response.code.unwrap_or(0)).unwrap();
            assert!(
                !response_has_no_body(&method, status),
                "{e} on a bodiless answer"
            );
            let list: Vec<(&str, &[u8])> =
                response.headers.iter().map(|h| (h.name, h.value)).collect();
            return check(&Err(e), &declared(&list), &Framing::UntilClose);
        }
        _ => return,
    };
    assert_eq!(Some(head.status.as_u16()), response.code);
    let content_type = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    assert_eq!(head.content_type, content_type);
    if response_has_no_body(&method, head.status) {
        assert_eq!(head.framing, Framing::Length(0));
    } else {
        let list: Vec<(&str, &[u8])> = response.headers.iter().map(|h| (h.name, h.value)).collect();
        check(
            &Ok(head.framing.clone()),
            &declared(&list),
            &Framing::UntilClose,
        );
    }
    let body = &input[head.len..];
    let cuts: Vec<usize> = cuts
        .into_iter()
        .map(|c| c.saturating_sub(head.len).min(body.len()))
        .collect();
    assert_eq!(
        take_pieces(head.framing.clone(), &pieces(body, &cuts)),
        take_pieces(head.framing, &[body])
    );
});
