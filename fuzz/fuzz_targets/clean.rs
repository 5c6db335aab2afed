//! `wire::clean`, what may go upstream: each check agrees with a plain reading of its rule
//! over the bytes and their percent-decoding (`reference::percent_decode`): no control
//! byte (C0 but HTAB, and DEL) raw or encoded, and a path parameter that stays one segment
//! (no `/` or `\` raw or encoded, not `.` or `..` once decoded).

#![no_main]

use libfuzzer_sys::fuzz_target;
use reference::percent_decode;
use wire::clean::{self, Unclean};

fn is_control(b: &u8) -> bool {
    (*b < 0x20 && *b != b'\t') || *b == 0x7f
}

fuzz_target!(|data: &[u8]| {
    let raw_control = data.iter().any(is_control);
    assert_eq!(clean::header_value("X", data).is_err(), raw_control);
    let text = String::from_utf8_lossy(data);
    let bytes = text.as_bytes();
    let decoded = percent_decode(bytes);
    assert_eq!(
        clean::last_event_id(&text).is_err(),
        bytes.iter().any(is_control)
    );
    assert_eq!(clean::query(&text).is_err(), decoded.iter().any(is_control));
    let expected = if decoded.iter().any(is_control) {
        Err(Unclean::PathParamControl)
    } else if bytes.contains(&b'\\') || decoded.iter().any(|b| matches!(b, b'/' | b'\\')) {
        Err(Unclean::PathParamSeparator)
    } else if decoded == b"." || decoded == b".." {
        Err(Unclean::PathParamDots)
    } else {
        Ok(())
    };
    assert_eq!(clean::path_param(&text), expected, "{text:?}");
});
