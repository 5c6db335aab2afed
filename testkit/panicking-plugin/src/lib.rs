//! Test fixture: a server plugin with bugs on purpose, to prove the host survives them.
//!
//! It serves `GET /panic` and panics in `hijack`; with `{"panic_in_routes": true}` as its
//! block it panics already when the host asks for its routes. The host must log, close
//! that one connection (or leave the plugin out) and go on.

use abi::{Claimed, Logger, RouteDecl, ServerPlugin};

abi::export_server_plugin!("panicking-plugin", Panicking::new);

pub struct Panicking {
    panic_in_routes: bool,
}

impl Panicking {
    fn new(config: &str, _logger: Logger) -> Result<Self, std::convert::Infallible> {
        Ok(Self {
            panic_in_routes: config.contains("\"panic_in_routes\":true"),
        })
    }
}

impl ServerPlugin for Panicking {
    type HijackError = std::convert::Infallible;

    fn routes(&self) -> Vec<RouteDecl> {
        assert!(!self.panic_in_routes, "a bug in routes");
        vec![RouteDecl {
            endpoint: "/panic".into(),
            methods: vec!["GET".into()].into(),
        }]
    }

    fn hijack(&self, _: Claimed) -> Result<(), Self::HijackError> {
        panic!("a bug in hijack")
    }
}
