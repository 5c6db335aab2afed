//! `krakend.json`: KrakenD v3 conventions, parsed into typed settings.
//!
//! Every error names where it is: a JSON path such as `endpoints[0].backend[0].host` for a
//! wrong type, a missing key or an invalid value, or line and column for broken JSON.
//! Unknown keys are ignored, as KrakenD does.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use path_template::Template;

use crate::protect::cors::{Cors, CorsConfig};
use crate::protect::jwt::{JwtConfig, Validator};
use crate::protect::ratelimit::{RateLimit, RateLimitConfig};
use crate::protect::EndpointProtections;
use serde::Deserialize;
use serde_json::Value;

/// A config that could not be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// The settings `host run` and `host check` work from.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub listen_ip: String,
    pub max_header_bytes: usize,
    /// Headers in one request head, for the pipeline and claimed requests alike.
    pub max_header_count: usize,
    pub read_header_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a drain (SIGTERM/SIGINT) may take before the host exits anyway.
    pub shutdown_timeout: Duration,
    pub max_backend_response_bytes: usize,
    /// The whole request, head and body, from its first byte (`None`: no limit).
    pub read_timeout: Option<Duration>,
    /// The root `max_body_bytes`: every endpoint's default, and the one a plugin's routes
    /// take unless they set their own.
    pub max_body_bytes: u64,
    /// Each client socket's kernel send buffer (`SO_SNDBUF`); `None` leaves the kernel's
    /// autotuning.
    pub client_send_buffer: Option<usize>,
    /// The listeners' accept backlog; `None`: `net.core.somaxconn`.
    pub backlog: Option<NonZeroU32>,
    /// Bind the main listener with `SO_REUSEPORT`, so several processes share its port.
    pub reuse_port: bool,
    /// Client connections open at once, handed-over ones included; `None`: from the
    /// descriptor limit (`Connections::default_limit`).
    pub max_connections: Option<NonZeroUsize>,
    pub plugin: Option<PluginFolder>,
    /// Server plugins to inject, in `plugin/http-server.name` order, with their config blocks.
    pub server_plugins: Vec<ServerPluginConfig>,
    /// The built-in `static-filesystem` server plugin's block, if it is named.
    pub static_files: Option<StaticFiles>,
    pub endpoints: Vec<Endpoint>,
    /// Root `extra_config."security/cors"`.
    pub cors: Option<Cors>,
    /// Where Prometheus metrics are served (`telemetry/metrics`), if anywhere.
    pub metrics_address: Option<String>,
    /// `telemetry/logging`.
    pub logging: Option<Logging>,
    /// Root `tls`: the port speaks TLS only (`None`: cleartext, or `disabled`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Root `client_tls`: how `https` backends are verified (the system's roots by default).
    pub client_tls: tls_config::ClientTls,
    /// Root `use_h2c`: cleartext HTTP/2 with prior knowledge on a plain port, beside
    /// HTTP/1.1.
    pub use_h2c: bool,
    /// HTTP/2 streams one client connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How often an HTTP/2 connection is PINGed (`None`: never).
    pub http2_ping_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Logging {
    /// A tracing level: `error`, `warn`, `info` or `debug`.
    pub level: &'static str,
    pub prefix: String,
    /// `false` sends logs to stderr.
    pub stdout: bool,
}

/// KrakenD's `static-filesystem` server plugin: files under `path` served at `prefix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFiles {
    pub prefix: String,
    pub path: std::path::PathBuf,
}

/// The server plugin the host provides itself rather than loads.
pub const STATIC_FILESYSTEM: &str = "static-filesystem";

#[derive(Debug, Clone, Deserialize)]
pub struct PluginFolder {
    pub pattern: String,
    pub folder: String,
}

#[derive(Debug, Clone)]
pub struct ServerPluginConfig {
    pub name: String,
    /// The plugin's own block as JSON text (`{}` when the config has none).
    pub config_json: String,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub endpoint: String,
    pub template: Template,
    pub method: http::Method,
    pub timeout: Duration,
    /// A larger request body gets 413 (the root `max_body_bytes` unless the endpoint sets it).
    pub max_body_bytes: u64,
    pub output_encoding: OutputEncoding,
    /// Called concurrently and merged (`json`); exactly one for `no-op`.
    pub backends: Vec<Backend>,
    pub input_headers: Forward,
    pub input_query_strings: Forward,
    /// JWT and rate limits (`auth/validator`, `qos/ratelimit/router`).
    pub protections: Arc<EndpointProtections>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OutputEncoding {
    #[serde(rename = "json")]
    Json,
    #[serde(rename = "no-op")]
    NoOp,
}

#[derive(Debug, Clone)]
pub struct Backend {
    /// Base URLs such as `http://127.0.0.1:9081` or `https://api.internal`, used in round
    /// robin.
    pub hosts: Vec<http::Uri>,
    pub url_pattern: String,
    pub method: Option<http::Method>,
    /// How the backend's answer is shaped before it is merged (`json` encoding only).
    pub shape: Shape,
}

/// KrakenD's per-backend response manipulation, applied in this order: `is_collection`,
/// `target`, `allow`/`deny`, `mapping`, `group`.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub is_collection: bool,
    /// A dotted path to the part of the answer to keep.
    pub target: Option<String>,
    /// Dotted paths to keep, or to remove.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Renames of top-level keys.
    pub mapping: Vec<(String, String)>,
    /// The key the answer is nested under.
    pub group: Option<String>,
}

/// Which client headers or query parameters an endpoint forwards (KrakenD: none unless
/// listed; `["*"]` for all).
#[derive(Debug, Clone, Default)]
pub enum Forward {
    #[default]
    None,
    All,
    Only(Vec<String>),
}

impl Forward {
    fn new(list: Option<Vec<String>>) -> Self {
        match list {
            None => Forward::None,
            Some(list) if list.iter().any(|n| n == "*") => Forward::All,
            Some(list) => Forward::Only(list),
        }
    }

    /// Whether `name` is forwarded (header names compare case-insensitively).
    pub fn allows(&self, name: &str, ignore_case: bool) -> bool {
        match self {
            Forward::None => false,
            Forward::All => true,
            Forward::Only(list) => list.iter().any(|n| {
                if ignore_case {
                    n.eq_ignore_ascii_case(name)
                } else {
                    n == name
                }
            }),
        }
    }
}

const DEFAULT_PORT: u16 = 8080;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Heads larger than this get 431: generous for real clients, small enough that a slow
/// or hostile client cannot make the gateway hold much memory per connection.
const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Headers per request head: Apache's `LimitRequestFields` and hyper's default. Browsers
/// send 10 to 20; each header costs a slot to parse and a copy into a handed-over head.
pub const DEFAULT_MAX_HEADER_COUNT: usize = 100;
/// Long enough for any real client to send its head, short enough that slow-loris
/// connections are shed quickly.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a keep-alive connection may sit between requests (nginx's keepalive_timeout).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Long enough for streams to reach an event boundary and clients to read a final event,
/// short enough for an orchestrator's grace period (Kubernetes gives 30s).
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest backend body the `json` encoding reads into memory.
const DEFAULT_MAX_BACKEND_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// nginx's `client_max_body_size`: far above what JSON APIs are sent, and what a `json`
/// endpoint holds in memory per request while its backends answer. An endpoint that takes
/// uploads sets its own.
const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// A 1 MiB body (the default `max_body_bytes`) at 300 kbit/s, a poor mobile link, takes
/// 28 s; a client slower than that holds a connection for nothing.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A PING every 30 s: a client gone without a word (a dropped NAT mapping, a pulled cable)
/// frees its connection's streams within a minute even when nothing is written to them,
/// for 17 bytes each way per connection per interval.
const DEFAULT_HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// RFC 9113's recommended minimum, and what a browser puts all the EventSources of an
/// origin on: the 101st waits for one of them to end. A connection with all its streams
/// stalled then holds at most 100 x `max_send_buffer_size` (32 KiB): 3.2 MiB.
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// A client socket's send buffer. Left to autotuning, Linux lets one socket's buffer grow
/// to `tcp_wmem`'s maximum (4 MiB here, 2.1 MiB measured) before a write blocks, so a
/// client that stops reading costs megabytes and is noticed by `client_write_timeout`
/// only once they are full. 64 KiB (the kernel doubles it for its bookkeeping) holds
/// hundreds of events, more than any reading client has in flight.
const DEFAULT_CLIENT_SEND_BUFFER: usize = 64 * 1024;

// The raw shapes serde fills; `load` validates them into the types above.
#[derive(Deserialize)]
struct RawConfig {
    version: u32,
    port: Option<u16>,
    listen_ip: Option<String>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    timeout: Option<Duration>,
    max_header_bytes: Option<usize>,
    max_header_count: Option<usize>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    read_header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    shutdown_timeout: Option<Duration>,
    max_backend_response_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    read_timeout: Option<Duration>,
    client_send_buffer: Option<usize>,
    backlog: Option<NonZeroU32>,
    #[serde(default)]
    reuse_port: bool,
    max_connections: Option<NonZeroUsize>,
    plugin: Option<PluginFolder>,
    tls: Option<tls_config::RawServerTls>,
    client_tls: Option<tls_config::RawClientTls>,
    #[serde(default)]
    use_h2c: bool,
    max_concurrent_streams: Option<std::num::NonZeroU32>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    http2_ping_interval: Option<Duration>,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    extra_config: RawRootExtraConfig,
}

#[derive(Deserialize, Default)]
struct RawRootExtraConfig {
    #[serde(rename = "plugin/http-server")]
    http_server: Option<RawHttpServerPlugins>,
    #[serde(rename = "security/cors")]
    cors: Option<CorsConfig>,
    #[serde(rename = "telemetry/metrics")]
    metrics: Option<RawMetrics>,
    #[serde(rename = "telemetry/logging")]
    logging: Option<RawLogging>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    level: Option<String>,
    prefix: Option<String>,
    stdout: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen_address: Option<String>,
}

/// The endpoint namespaces this host implements; others are ignored, as KrakenD does.
#[derive(Deserialize, Default)]
struct RawEndpointExtraConfig {
    #[serde(rename = "auth/validator")]
    jwt: Option<JwtConfig>,
    #[serde(rename = "qos/ratelimit/router")]
    rate_limit: Option<RateLimitConfig>,
}

#[derive(Deserialize)]
struct RawHttpServerPlugins {
    name: Vec<String>,
    #[serde(flatten)]
    blocks: HashMap<String, Value>,
}

#[derive(Deserialize)]
struct RawEndpoint {
    endpoint: String,
    method: Option<String>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    timeout: Option<Duration>,
    max_body_bytes: Option<u64>,
    output_encoding: Option<OutputEncoding>,
    input_headers: Option<Vec<String>>,
    input_query_strings: Option<Vec<String>>,
    backend: Vec<RawBackend>,
    #[serde(default)]
    extra_config: RawEndpointExtraConfig,
}

#[derive(Deserialize)]
struct RawBackend {
    host: Vec<String>,
    url_pattern: String,
    method: Option<String>,
    /// Only `json` (the default) and `no-op` are understood.
    encoding: Option<String>,
    #[serde(default)]
    is_collection: bool,
    target: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    mapping: std::collections::BTreeMap<String, String>,
    group: Option<String>,
}

/// Reads and validates a config file.
pub fn load(file: &str) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.into(),
        source,
    })?;
    parse(file, &text)
}

/// Validates config text; `file` only labels the errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let invalid = |path: String, message: String| ConfigError::Invalid {
        file: file.into(),
        path,
        message,
    };
    // Syntax first, so broken JSON reports line and column rather than a path.
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.into(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    // Handed to every server plugin as JSON (each plugin links its own rustls).
    let root_client_tls = value.get("client_tls").cloned();
    let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        invalid(
            if path == "." { "(root)".into() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    if raw.version != 3 {
        return Err(invalid(
            "version".into(),
            format!(
                "unsupported version {} (this host reads version 3)",
                raw.version
            ),
        ));
    }
    let max_header_count = raw.max_header_count.unwrap_or(DEFAULT_MAX_HEADER_COUNT);
    if !(1..=crate::gate::MAX_HEADER_COUNT).contains(&max_header_count) {
        return Err(invalid(
            "max_header_count".into(),
            format!(
                "{max_header_count} is not between 1 and {}",
                crate::gate::MAX_HEADER_COUNT
            ),
        ));
    }
    let default_timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let endpoints = raw
        .endpoints
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            endpoint(e, default_timeout, max_body_bytes)
                .map_err(|(path, m)| invalid(format!("endpoints[{i}]{path}"), m))
        })
        .collect::<Result<_, _>>()?;
    let mut static_files = None;
    let server_plugins = match raw.extra_config.http_server {
        None => Vec::new(),
        Some(mut block) => {
            if block.name.iter().any(|n| n == STATIC_FILESYSTEM) {
                let at = format!("extra_config.plugin/http-server.{STATIC_FILESYSTEM}");
                let value = block.blocks.remove(STATIC_FILESYSTEM).unwrap_or_default();
                let files: StaticFiles = serde_path_to_error::deserialize(value).map_err(|e| {
                    let path = e.path().to_string();
                    let at = if path == "." {
                        at.clone()
                    } else {
                        format!("{at}.{path}")
                    };
                    invalid(at, e.into_inner().to_string())
                })?;
                if !files.prefix.starts_with('/') {
                    return Err(invalid(
                        format!("{at}.prefix"),
                        "must start with '/'".into(),
                    ));
                }
                static_files = Some(files);
            }
            block
                .name
                .into_iter()
                .filter(|name| name != STATIC_FILESYSTEM)
                .map(|name| {
                    let mut config = block
                        .blocks
                        .remove(&name)
                        .unwrap_or(Value::Object(Default::default()));
                    if let (Some(tls), Value::Object(keys)) = (&root_client_tls, &mut config) {
                        // One policy for every upstream: the root's, which the host puts
                        // into each plugin's block.
                        if keys.contains_key("client_tls") {
                            return Err(invalid(
                                format!("extra_config.plugin/http-server.{name}.client_tls"),
                                "client_tls is set at the root only (the host hands it to \
                                 its plugins)"
                                    .into(),
                            ));
                        }
                        keys.insert("client_tls".into(), tls.clone());
                    }
                    let config_json = config.to_string();
                    Ok(ServerPluginConfig { name, config_json })
                })
                .collect::<Result<_, _>>()?
        }
    };
    let logging = raw
        .extra_config
        .logging
        .map(|l| {
            // KrakenD's level names, mapped onto tracing's.
            let level = match l.level.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("INFO") => "info",
                Some("DEBUG") => "debug",
                Some("WARNING") => "warn",
                Some("ERROR" | "CRITICAL") => "error",
                Some(other) => {
                    return Err(invalid(
                        "extra_config.telemetry/logging.level".into(),
                        format!("{other:?} is not DEBUG, INFO, WARNING, ERROR or CRITICAL"),
                    ))
                }
            };
            Ok(Logging {
                level,
                prefix: l.prefix.unwrap_or_default(),
                stdout: l.stdout.unwrap_or(true),
            })
        })
        .transpose()?;
    let tls_error = |block: &'static str| {
        move |e: tls_config::TlsError| invalid(format!("{block}.{}", e.key), e.cause)
    };
    let tls = match &raw.tls {
        Some(block) => tls_config::server(block).map_err(tls_error("tls"))?,
        None => None,
    };
    let client_tls = match &raw.client_tls {
        Some(block) => tls_config::ClientTls::load(block).map_err(tls_error("client_tls"))?,
        None => tls_config::ClientTls::default(),
    };
    Ok(Config {
        tls,
        client_tls,
        use_h2c: raw.use_h2c,
        max_concurrent_streams: raw
            .max_concurrent_streams
            .map_or(DEFAULT_MAX_CONCURRENT_STREAMS, std::num::NonZeroU32::get),
        http2_ping_interval: Some(
            raw.http2_ping_interval
                .unwrap_or(DEFAULT_HTTP2_PING_INTERVAL),
        )
        .filter(|interval| !interval.is_zero()),
        logging,
        port: raw.port.unwrap_or(DEFAULT_PORT),
        listen_ip: raw.listen_ip.unwrap_or_else(|| "0.0.0.0".into()),
        max_header_bytes: raw.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_header_count,
        read_header_timeout: raw
            .read_header_timeout
            .unwrap_or(DEFAULT_READ_HEADER_TIMEOUT),
        idle_timeout: raw.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        shutdown_timeout: raw.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        max_backend_response_bytes: raw
            .max_backend_response_bytes
            .unwrap_or(DEFAULT_MAX_BACKEND_RESPONSE_BYTES),
        // KrakenD's (and Go's) `0`: no limit.
        read_timeout: Some(raw.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT))
            .filter(|timeout| !timeout.is_zero()),
        max_body_bytes,
        client_send_buffer: match raw.client_send_buffer {
            None => Some(DEFAULT_CLIENT_SEND_BUFFER),
            Some(0) => None,
            Some(bytes) => Some(bytes),
        },
        backlog: raw.backlog,
        reuse_port: raw.reuse_port,
        max_connections: raw.max_connections,
        plugin: raw.plugin,
        server_plugins,
        static_files,
        endpoints,
        cors: raw.extra_config.cors.map(Cors::new),
        metrics_address: raw.extra_config.metrics.map(|m| {
            // KrakenD's `:8090` means every interface.
            let address = m.listen_address.unwrap_or_else(|| ":8090".into());
            match address.strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => address,
            }
        }),
    })
}

/// Validates one endpoint; errors carry the path below `endpoints[i]`.
fn endpoint(
    raw: RawEndpoint,
    default_timeout: Duration,
    default_max_body_bytes: u64,
) -> Result<Endpoint, (String, String)> {
    let template =
        Template::parse(&raw.endpoint).map_err(|e| (".endpoint".into(), e.to_string()))?;
    let endpoint_method =
        method(raw.method.as_deref().unwrap_or("GET")).map_err(|m| (".method".into(), m))?;
    let output_encoding = raw.output_encoding.unwrap_or(OutputEncoding::Json);
    if raw.backend.is_empty() {
        return Err((".backend".into(), "needs at least one backend".into()));
    }
    if output_encoding == OutputEncoding::NoOp && raw.backend.len() > 1 {
        return Err((
            ".backend".into(),
            format!(
                "a no-op endpoint takes exactly one backend, found {}",
                raw.backend.len()
            ),
        ));
    }
    let backends = raw
        .backend
        .into_iter()
        .enumerate()
        .map(|(i, b)| backend(b).map_err(|(path, m)| (format!(".backend[{i}]{path}"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let jwt = raw
        .extra_config
        .jwt
        .map(Validator::new)
        .transpose()
        .map_err(|(key, m)| (format!(".extra_config.auth/validator.{key}"), m))?;
    let rate_limit = raw
        .extra_config
        .rate_limit
        .map(RateLimit::new)
        .transpose()
        .map_err(|m| (".extra_config.qos/ratelimit/router".to_owned(), m))?;
    Ok(Endpoint {
        protections: Arc::new(EndpointProtections { jwt, rate_limit }),
        endpoint: raw.endpoint,
        template,
        method: endpoint_method,
        timeout: raw.timeout.unwrap_or(default_timeout),
        max_body_bytes: raw.max_body_bytes.unwrap_or(default_max_body_bytes),
        output_encoding,
        backends,
        input_headers: Forward::new(raw.input_headers),
        input_query_strings: Forward::new(raw.input_query_strings),
    })
}

/// Validates one backend; errors carry the path below `backend[i]`.
fn backend(raw: RawBackend) -> Result<Backend, (String, String)> {
    if raw.host.is_empty() {
        return Err((".host".into(), "needs at least one host".into()));
    }
    let hosts = raw
        .host
        .iter()
        .enumerate()
        .map(|(i, h)| config_values::base_url(h).map_err(|m| (format!(".host[{i}]"), m)))
        .collect::<Result<_, _>>()?;
    if !raw.url_pattern.starts_with('/') {
        return Err((".url_pattern".into(), "must start with '/'".into()));
    }
    let method = raw
        .method
        .as_deref()
        .map(method)
        .transpose()
        .map_err(|m| (".method".into(), m))?;
    if let Some(encoding) = raw
        .encoding
        .as_deref()
        .filter(|e| !matches!(*e, "json" | "no-op"))
    {
        return Err((
            ".encoding".into(),
            format!("{encoding:?} is not supported (json, no-op)"),
        ));
    }
    Ok(Backend {
        hosts,
        url_pattern: raw.url_pattern,
        method,
        shape: Shape {
            is_collection: raw.is_collection,
            target: raw.target,
            allow: raw.allow,
            deny: raw.deny,
            mapping: raw.mapping.into_iter().collect(),
            group: raw.group,
        },
    })
}

fn method(name: &str) -> Result<http::Method, String> {
    http::Method::from_bytes(name.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid HTTP method {name:?}"))
}

fn strip_position(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse("krakend.json", text).unwrap_err().to_string()
    }

    #[test]
    fn the_root_client_tls_is_handed_to_every_plugin_and_set_there_only() {
        let config = parse(
            "krakend.json",
            r#"{"version": 3, "client_tls": {"allow_insecure_connections": true},
                "extra_config": {"plugin/http-server": {"name": ["p1", "p2"], "p1": {"endpoint": "/s"}}}}"#,
        )
        .unwrap();
        assert!(config.client_tls.insecure);
        assert_eq!(
            config.server_plugins[0].config_json,
            r#"{"client_tls":{"allow_insecure_connections":true},"endpoint":"/s"}"#
        );
        assert_eq!(
            config.server_plugins[1].config_json,
            r#"{"client_tls":{"allow_insecure_connections":true}}"#
        );
        let error = error_of(
            r#"{"version": 3, "client_tls": {},
                "extra_config": {"plugin/http-server": {"name": ["p1"], "p1": {"client_tls": {}}}}}"#,
        );
        assert!(
            error.contains(
                "extra_config.plugin/http-server.p1.client_tls: client_tls is set at the root only"
            ),
            "{error}"
        );
    }

    #[test]
    fn reads_a_full_config() {
        let config = parse(
            "krakend.json",
            r#"{"version": 3, "port": 9000, "timeout": "3s", "unknown_key": true,
                "plugin": {"pattern": ".so", "folder": "./plugins/"},
                "extra_config": {"plugin/http-server": {"name": ["p1", "p2"], "p1": {"endpoint": "/sse/{id}"}}},
                "endpoints": [
                  {"endpoint": "/api/{id}", "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/x/{id}"}]},
                  {"endpoint": "/raw", "method": "post", "timeout": "500ms", "output_encoding": "no-op",
                   "backend": [{"host": ["http://a:1", "http://b:2/"], "url_pattern": "/r", "method": "PUT"}]}
                ]}"#,
        )
        .unwrap();
        assert_eq!(config.port, 9000);
        assert_eq!(config.max_header_bytes, 16 * 1024);
        assert_eq!(config.max_header_count, 100);
        assert_eq!(config.read_header_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(75));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.read_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.http2_ping_interval, Some(Duration::from_secs(30)));
        assert!(!config.reuse_port, "one process per port unless asked");
        assert_eq!(config.server_plugins[0].name, "p1");
        assert_eq!(
            config.server_plugins[0].config_json,
            r#"{"endpoint":"/sse/{id}"}"#
        );
        assert_eq!(config.server_plugins[1].config_json, "{}");
        assert_eq!(config.endpoints[0].timeout, Duration::from_secs(3));
        assert_eq!(config.endpoints[0].output_encoding, OutputEncoding::Json);
        assert_eq!(config.endpoints[0].max_body_bytes, 1024 * 1024);
        assert_eq!(config.endpoints[1].method, http::Method::POST);
        assert_eq!(config.endpoints[1].timeout, Duration::from_millis(500));
        assert_eq!(config.endpoints[1].backends[0].hosts.len(), 2);
        assert_eq!(
            config.endpoints[1].backends[0].method,
            Some(http::Method::PUT)
        );
    }

    #[test]
    fn body_limits_come_from_the_root_or_the_endpoint() {
        let backend = r#""backend": [{"host": ["http://h:1"], "url_pattern": "/x"}]"#;
        let config = parse(
            "krakend.json",
            &format!(
                r#"{{"version": 3, "max_body_bytes": 100, "read_timeout": "0",
                    "endpoints": [{{"endpoint": "/a", {backend}}},
                                  {{"endpoint": "/b", "max_body_bytes": 0, {backend}}}]}}"#
            ),
        )
        .unwrap();
        assert_eq!(config.endpoints[0].max_body_bytes, 100);
        assert_eq!(config.endpoints[1].max_body_bytes, 0);
        assert_eq!(config.read_timeout, None, "0 turns it off, as in KrakenD");
    }

    #[test]
    fn http2_pings_take_a_duration_and_0_turns_them_off() {
        let with = |value: &str| {
            let json = format!(r#"{{"version": 3, "http2_ping_interval": "{value}"}}"#);
            parse("krakend.json", &json).unwrap().http2_ping_interval
        };
        assert_eq!(with("5s"), Some(Duration::from_secs(5)));
        assert_eq!(with("0"), None);
    }

    #[test]
    fn errors_name_the_json_path() {
        let backend = r#""backend": [{"host": ["http://h:1"], "url_pattern": "/x"}]"#;
        let cases = [
            (r#"{"version": 2}"#.to_string(), "krakend.json: version: unsupported version 2"),
            (r#"{"port": 1}"#.into(), "krakend.json: (root): missing field `version`"),
            (r#"{"version": 3, "port": "x"}"#.into(), "krakend.json: port: invalid type"),
            (format!(r#"{{"version": 3, "endpoints": [{{"endpoint": "/a", {backend}}}, {{"endpoint": "b", {backend}}}]}}"#), "endpoints[1].endpoint: must start with '/'"),
            (r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": [1], "url_pattern": "/x"}]}]}"#.into(), "endpoints[0].backend[0].host[0]: invalid type"),
            (r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["ftp://x"], "url_pattern": "/x"}]}]}"#.into(), "endpoints[0].backend[0].host[0]: \"ftp://x\" is not an http:// or https:// URL"),
            (r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": []}]}"#.into(), "endpoints[0].backend: needs at least one backend"),
            (r#"{"version": 3, "endpoints": [{"endpoint": "/a", "output_encoding": "no-op", "backend": [{"host": ["http://h"], "url_pattern": "/x"}, {"host": ["http://h"], "url_pattern": "/y"}]}]}"#.into(), "endpoints[0].backend: a no-op endpoint takes exactly one backend, found 2"),
            (r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/x"}, {"host": ["http://h"], "url_pattern": "/y", "encoding": "xml"}]}]}"#.into(), "endpoints[0].backend[1].encoding: \"xml\" is not supported"),
            (r#"{"version": 3, "timeout": "2 seconds", "endpoints": []}"#.into(), "timeout: invalid duration"),
            (r#"{"version": 3, "max_header_count": 0}"#.into(), "max_header_count: 0 is not between 1 and 512"),
            (r#"{"version": 3, "max_header_count": 513}"#.into(), "max_header_count: 513 is not between 1 and 512"),
            (r#"{"version": 3, "max_connections": 0}"#.into(), "max_connections: invalid value: integer `0`, expected a nonzero"),
            (r#"{"version": 3, "backlog": -1}"#.into(), "backlog: invalid value: integer `-1`"),
            (r#"{"version": 3, "reuse_port": "yes"}"#.into(), "reuse_port: invalid type: string \"yes\", expected a boolean"),
            (format!(r#"{{"version": 3, "endpoints": [{{"endpoint": "/a", "max_body_bytes": "1MB", {backend}}}]}}"#), "endpoints[0].max_body_bytes: invalid type"),
            (format!(r#"{{"version": 3, "endpoints": [{{"endpoint": "/a", "output_encoding": "xml", {backend}}}]}}"#), "endpoints[0].output_encoding: unknown variant `xml`"),
            (r#"{"version": 3, "extra_config": {"plugin/http-server": {"name": "p"}}}"#.into(), "extra_config.plugin/http-server"),
        ];
        for (text, expected) in cases {
            let error = error_of(&text);
            assert!(
                error.contains(expected),
                "{text}\n  gave: {error}\n  want: {expected}"
            );
        }
    }

    #[test]
    fn broken_json_gives_line_and_column() {
        let error = error_of("{\n  \"version\": 3,\n  \"port\": ,\n}");
        assert_eq!(
            error,
            "krakend.json: invalid JSON at line 3, column 11: expected value"
        );
    }
}
