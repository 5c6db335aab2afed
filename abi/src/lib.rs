//! The contract between the `host` gateway and its server plugins, and nothing else.
//!
//! A plugin is a `cdylib` that exports one [`PluginModule`] root module through abi_stable.
//! The host loads it with `lib_header_from_path(p)?.init_root_module::<PluginModuleRef>()`,
//! which checks the layout of every type below and the crate version before a single call
//! is made, so a plugin built against another contract is refused instead of misbehaving.
//!
//! Plugin authors implement the plain [`ServerPlugin`] trait and call
//! [`export_server_plugin!`]. The macro wraps the plugin in [`unwind::CatchUnwind`], which
//! is the only implementor of the FFI object [`FfiServerPlugin`]: every call that crosses
//! the boundary runs inside `catch_unwind`, because abi_stable aborts the whole process when
//! a panic reaches an `extern "C"` function. One wrapper here means no plugin can forget it.
//!
//! Changing any type in this crate is a versioned event: bump the crate's minor version.

// `#[sabi_trait]` expands to impls of foreign traits inside a const block, which rustc flags.
#![allow(non_local_definitions)]
// Only the descriptor's ownership (`ClientSocket`) and the FFI objects' traits (generated
// by `#[sabi_trait]`) need `unsafe`; each place allows it locally with a SAFETY comment.
#![deny(unsafe_code)]

mod logger;
mod request;
pub mod transport;
pub mod unwind;
pub mod waker;

pub use logger::{LogLevel, Logger};
pub use request::{ClientSocket, Header, HijackRequest, RequestHead, RouteDecl};
pub use transport::{
    ClientTransport, FfiPoll, FfiTransport, FfiTransportBox, FfiTransport_TO, FfiWake, FfiWaker,
    HttpVersion, ResponseHead,
};

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString},
    StableAbi,
};

/// What a plugin implements. Calls may panic: [`unwind::CatchUnwind`] turns panics into
/// errors.
pub trait ServerPlugin: Send + Sync + 'static {
    /// Why [`ServerPlugin::hijack`] refused a connection; the host logs its text.
    type HijackError: std::fmt::Display;

    /// The routes this plugin serves, asked once when the host starts it. The host decides
    /// every request by its one rule (the most specific template wins) over these and its
    /// own endpoints, and hands a request over with the index of the route it picked.
    fn routes(&self) -> Vec<RouteDecl>;

    /// Takes over a claimed connection. The plugin owns the socket from here on, whatever it
    /// returns; it must not block: spawn the work on its own runtime and return.
    fn hijack(&self, claimed: Claimed) -> Result<(), Self::HijackError>;

    /// The plugin's counters as a JSON object, served by the host at `/__stats`.
    fn stats(&self) -> String {
        "{}".to_owned()
    }

    /// The gateway is shutting down: end every stream the plugin holds (at an event
    /// boundary where it can) and return once they are closed or `deadline` has passed,
    /// with how many are still open. Called on a thread of its own; it may block.
    fn shutdown(&self, deadline: std::time::Duration) -> usize {
        let _ = deadline;
        0
    }
}

/// A request handed to [`ServerPlugin::hijack`], with its client.
pub struct Claimed {
    pub client: Client,
    /// The protocol the client spoke.
    pub http_version: HttpVersion,
    /// The index, in [`ServerPlugin::routes`], of the route the host picked.
    pub route: usize,
    pub head: RequestHead,
    /// Bytes the host had already read after the head (for a bridged client, its
    /// transport's first reads give them instead: this is empty).
    pub read_ahead: Vec<u8>,
    /// Headers to add to every response the plugin writes on this connection.
    pub response_headers: Vec<Header>,
    /// When the JWT that authorised the request stops being valid (its `exp` plus the
    /// leeway): the stream must end by then, at an event boundary.
    pub token_expires_at: Option<std::time::Instant>,
    /// The connection's (or the HTTP/2 stream's) place under the host's
    /// `max_connections`: keep it as long as the client, drop it with the client.
    pub slot: ConnectionSlot,
    /// The host's root `max_body_bytes`, for routes that set none of their own.
    pub max_body_bytes: u64,
    /// When the request body must be in (the host's `read_timeout`, from the request's
    /// first byte); `None`: no limit. Past it the plugin answers 408.
    pub body_deadline: Option<std::time::Instant>,
}

/// A claimed request's client, as the plugin serves it.
#[derive(Debug)]
pub enum Client {
    /// Plain-TCP HTTP/1.1: the connection itself (blocking mode, as the host left it).
    Tcp(std::net::TcpStream),
    /// TLS or HTTP/2: one stream the host lends; see [`transport`].
    Bridged(FfiTransportBox),
}

impl From<HijackRequest> for Claimed {
    /// What the panic wrapper hands the plugin: the socket becomes a stream before any
    /// plugin code runs, so it is closed (and a bridged transport ended) even if the
    /// plugin panics, as both drop while unwinding.
    fn from(request: HijackRequest) -> Self {
        Claimed {
            client: match request.client {
                ClientTransport::Socket(socket) => Client::Tcp(socket.into_std()),
                ClientTransport::Bridged(transport) => Client::Bridged(transport),
            },
            http_version: request.http_version,
            route: request.route as usize,
            head: request.head,
            read_ahead: request.read_ahead.into_vec(),
            response_headers: request.response_headers.into_vec(),
            token_expires_at: request
                .token_expires_in_ms
                .into_option()
                .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms)),
            slot: request.slot,
            max_body_bytes: request.max_body_bytes,
            body_deadline: request
                .body_deadline_in_ms
                .into_option()
                .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms)),
        }
    }
}

pub use ffi::{FfiConnectionSlot, FfiConnectionSlot_TO, FfiServerPlugin, FfiServerPlugin_TO};

/// The FFI object's trait, on its own because `#[sabi_trait]` generates `unsafe` code.
mod ffi {
    #![allow(unsafe_code)]

    use abi_stable::sabi_trait;
    use abi_stable::std_types::{RResult, RString, RVec};

    use crate::{HijackRequest, RouteDecl};

    /// The object the host holds for each injected plugin.
    #[sabi_trait]
    pub trait FfiServerPlugin: Send + Sync {
        /// See [`ServerPlugin::routes`]; an error means the plugin panicked.
        fn routes(&self) -> RResult<RVec<RouteDecl>, RString>;

        /// See [`ServerPlugin::hijack`]. Takes ownership of `request.client` even when it
        /// fails.
        fn hijack(&self, request: HijackRequest) -> RResult<(), RString>;

        /// See [`ServerPlugin::stats`].
        fn stats(&self) -> RResult<RString, RString>;

        /// See [`ServerPlugin::shutdown`]; the deadline is in milliseconds.
        #[sabi(last_prefix_field)]
        fn shutdown(&self, deadline_ms: u64) -> RResult<u64, RString>;
    }

    /// The host's count of one open client connection, held by whoever holds the
    /// connection: dropping it (the plugin closed the connection) releases the count.
    #[sabi_trait]
    pub trait FfiConnectionSlot: Send + Sync + Debug {}
}

/// A boxed plugin object as it crosses the boundary.
pub type FfiServerPluginBox = FfiServerPlugin_TO<'static, RBox<()>>;

/// A handed-over connection's place under the host's `max_connections`: the plugin keeps
/// it for as long as it keeps the connection, and dropping it gives the place back.
pub type ConnectionSlot = FfiConnectionSlot_TO<'static, RBox<()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The name the plugin registers under; `plugin/http-server.name` refers to it.
    pub name: extern "C" fn() -> RString,

    /// Builds the plugin from its JSON config block, or says why it refuses to start.
    #[sabi(last_prefix_field)]
    pub new_server:
        extern "C" fn(config: RStr<'_>, logger: Logger) -> RResult<FfiServerPluginBox, RString>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "krakend_server_plugin";
    const NAME: &'static str = "krakend_server_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Exports a [`ServerPlugin`] as this library's root module.
///
/// `$name` is the registered plugin name; `$constructor` is
/// `fn(config_json: &str, logger: Logger) -> Result<impl ServerPlugin, impl Display>`: its
/// error's text is what the host logs when the plugin refuses to start.
/// The crate using it must depend on `abi_stable` (the export attribute names it).
#[macro_export]
macro_rules! export_server_plugin {
    ($name:expr, $constructor:path) => {
        #[::abi_stable::export_root_module]
        pub fn krakend_server_plugin_root_module() -> $crate::PluginModuleRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;
            extern "C" fn name() -> ::abi_stable::std_types::RString {
                ::abi_stable::std_types::RString::from($name)
            }
            extern "C" fn new_server(
                config: ::abi_stable::std_types::RStr<'_>,
                logger: $crate::Logger,
            ) -> ::abi_stable::std_types::RResult<
                $crate::FfiServerPluginBox,
                ::abi_stable::std_types::RString,
            > {
                $crate::unwind::new_server(config, logger, $constructor)
            }
            $crate::PluginModule { name, new_server }.leak_into_prefix()
        }
    };
}
