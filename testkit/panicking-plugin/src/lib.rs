//! Test fixture: a server plugin with bugs on purpose, to prove the host survives them.
//!
//! It claims `GET /panic...` and panics in `hijack`; for the path `/panic-in-claims` it
//! panics already in `claims`. The host must log, close that one connection and go on.

use abi::{Claimed, Logger, ServerPlugin};

abi::export_server_plugin!("panicking-plugin", Panicking::new);

pub struct Panicking;

impl Panicking {
    fn new(_config: &str, _logger: Logger) -> Result<Self, String> {
        Ok(Self)
    }
}

impl ServerPlugin for Panicking {
    fn claims(&self, _method: &str, path: &str) -> bool {
        if path == "/panic-in-claims" {
            panic!("a bug in claims");
        }
        path.starts_with("/panic")
    }

    fn hijack(&self, _: Claimed) -> Result<(), String> {
        panic!("a bug in hijack")
    }
}
