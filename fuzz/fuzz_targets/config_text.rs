//! `host::config::parse` over arbitrary text (the checks are `reference::config::check`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| reference::config::check(text));
