//! Where a plugin's panics stop: between [`ServerPlugin`] code and the FFI boundary.
//!
//! abi_stable aborts the process when a panic unwinds out of an `extern "C"` function, and a
//! gateway must never die because one plugin has a bug. [`CatchUnwind`] is the only type
//! that implements [`FfiServerPlugin`], so each call from the host is caught here exactly
//! once, and a plugin's own error types become the text the host logs.

use std::any::Any;
use std::convert::Infallible;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString, RVec};

use crate::{
    Claimed, FfiServerPlugin, FfiServerPluginBox, FfiServerPlugin_TO, HijackRequest, Logger,
    RouteDecl, ServerPlugin,
};

/// Wraps a plugin so that each call runs under `catch_unwind`: its panics become errors the
/// host can log.
pub struct CatchUnwind<P>(pub P);

impl<P: ServerPlugin> FfiServerPlugin for CatchUnwind<P> {
    fn routes(&self) -> RResult<RVec<RouteDecl>, RString> {
        caught(|| Ok::<_, Infallible>(self.0.routes().into()))
    }

    fn hijack(&self, request: HijackRequest) -> RResult<(), RString> {
        let claimed = Claimed::from(request);
        caught(|| self.0.hijack(claimed))
    }

    fn stats(&self) -> RResult<RString, RString> {
        caught(|| Ok::<_, Infallible>(self.0.stats().into()))
    }

    fn shutdown(&self, deadline_ms: u64) -> RResult<u64, RString> {
        let deadline = std::time::Duration::from_millis(deadline_ms);
        caught(|| Ok::<_, Infallible>(self.0.shutdown(deadline) as u64))
    }
}

/// Runs a plugin constructor under `catch_unwind` and boxes the plugin for the host.
pub fn new_server<P: ServerPlugin, E: Display>(
    config: RStr<'_>,
    logger: Logger,
    constructor: fn(&str, Logger) -> Result<P, E>,
) -> RResult<FfiServerPluginBox, RString> {
    caught(|| constructor(config.as_str(), logger))
        .map(|plugin| FfiServerPlugin_TO::from_value(CatchUnwind(plugin), TD_Opaque))
}

/// Runs `f`; its error or its panic becomes the text the host logs.
fn caught<T, E: Display>(f: impl FnOnce() -> Result<T, E>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(reason)) => RResult::RErr(reason.to_string().into()),
        Err(payload) => {
            RResult::RErr(format!("plugin panicked: {}", panic_message(&*payload)).into())
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestHead;

    struct Panicky;

    #[derive(Debug)]
    struct Uncounted;
    impl crate::FfiConnectionSlot for Uncounted {}

    impl ServerPlugin for Panicky {
        type HijackError = std::convert::Infallible;
        fn routes(&self) -> Vec<RouteDecl> {
            panic!("routes exploded")
        }
        fn hijack(&self, _: Claimed) -> Result<(), Self::HijackError> {
            panic!("hijack exploded")
        }
    }

    #[test]
    fn panics_become_errors() {
        let err = CatchUnwind(Panicky).routes().unwrap_err();
        assert!(err.contains("plugin panicked: routes exploded"), "{err}");
    }

    #[test]
    fn hijack_panic_closes_the_socket() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let request = HijackRequest {
            client: crate::ClientTransport::Socket(server_side.into()),
            http_version: crate::HttpVersion::Http11,
            route: 0,
            head: RequestHead {
                method: "GET".into(),
                path: "/".into(),
                query: RString::new(),
                headers: Default::default(),
                peer: "127.0.0.1:1".into(),
            },
            read_ahead: Default::default(),
            response_headers: Default::default(),
            token_expires_in_ms: abi_stable::std_types::ROption::RNone,
            slot: crate::ConnectionSlot::from_value(Uncounted, TD_Opaque),
            max_body_bytes: 0,
            body_deadline_in_ms: abi_stable::std_types::ROption::RNone,
        };
        let err = CatchUnwind(Panicky).hijack(request).unwrap_err();
        assert!(err.contains("hijack exploded"), "{err}");
        let mut buf = [0u8; 1];
        assert_eq!(
            client.read(&mut buf).unwrap(),
            0,
            "the socket is closed when the plugin panics"
        );
    }

    fn refuse(_: &str, _: Logger) -> Result<Panicky, String> {
        Err("bad config".into())
    }
    fn explode(_: &str, _: Logger) -> Result<Panicky, String> {
        panic!("constructor exploded")
    }
    extern "C" fn no_log(_: crate::LogLevel, _: RStr<'_>) {}

    #[test]
    fn constructor_errors_and_panics_are_reported() {
        let logger = Logger { log: no_log };
        let refused = new_server("{}".into(), logger, refuse).into_result().err();
        assert_eq!(refused.as_deref(), Some("bad config"));
        let exploded = new_server("{}".into(), logger, explode).into_result().err();
        assert!(exploded.unwrap().contains("constructor exploded"));
    }
}
