//! The `host` command line: `run`, `check`, `test-plugin`, `version`, KrakenD style.

#![forbid(unsafe_code)]

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use host::accept;
use host::activation::{self, Activation, Notifier, Sockets};
use host::config::{self, Config};
use host::connections::Connections;
use host::gate::Limits;
use host::pipeline::Pipeline;
use host::plugins::{plugin_files, PluginLibrary, ServerPlugins};
use host::protect::Protections;
use host::route::Router;
use host::shared::Shared;
use host::static_files::StaticFiles;

#[derive(Parser)]
#[command(
    name = "host",
    about = "A KrakenD-style API gateway with streaming server plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Path to the configuration file.
        #[arg(short = 'c', long = "config")]
        config: String,
        /// Debug mode: log at debug level.
        #[arg(short = 'd', long = "debug")]
        debug: bool,
        /// Listening port, overriding the config's `port`.
        #[arg(short = 'p', long = "port")]
        port: Option<u16>,
    },
    /// Validate a configuration file.
    Check {
        #[arg(short = 'c', long = "config")]
        config: String,
    },
    /// Load plugins and ask them to register.
    TestPlugin {
        /// The files are server plugins.
        #[arg(short = 's', long = "server")]
        server: bool,
        files: Vec<PathBuf>,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            config,
            debug,
            port,
        } => {
            // First, while the process has one thread and has opened nothing: the sockets
            // a service manager passed, if any.
            let (activation, notifier) = activation::take();
            // The config says how to log, so it is read next; its errors are logged with
            // the defaults.
            let loaded = config::load(&config);
            let logging = loaded.as_ref().ok().and_then(|c| c.logging.clone());
            let _logs = init_logging(debug, logging.as_ref());
            match loaded.map_err(anyhow::Error::from).and_then(|config| {
                let activation = activation?;
                run(config, port, debug, activation, &notifier)
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::TestPlugin { server, files } => {
            let _logs = init_logging(false, None);
            test_plugin(server, &files)
        }
        Command::Version => {
            println!("host version {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// Logs go to stdout (or stderr, with `telemetry/logging.stdout: false`) through a writer
/// thread: a slow or stuck reader then costs dropped log lines (tracing-appender's lossy
/// mode), never a stalled gateway. The guard flushes what is queued when it drops at exit.
/// `-d` or `RUST_LOG` override the configured level.
fn init_logging(
    debug: bool,
    logging: Option<&config::Logging>,
) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let level = match (debug, logging) {
        (true, _) => "debug",
        (false, Some(logging)) => logging.level,
        (false, None) => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=info,hyper_util=info"))
    });
    let prefix = logging.map(|l| l.prefix.clone()).unwrap_or_default();
    let to_stdout = logging.is_none_or(|l| l.stdout);
    let (writer, guard) = if to_stdout {
        tracing_appender::non_blocking(Prefixed(prefix, std::io::stdout()))
    } else {
        tracing_appender::non_blocking(Prefixed(prefix, std::io::stderr()))
    };
    let terminal = if to_stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(terminal)
        .with_writer(writer)
        .init();
    guard
}

/// Puts `telemetry/logging.prefix` before each log line (the formatter writes one line per
/// call).
struct Prefixed<W>(String, W);

impl<W: std::io::Write> std::io::Write for Prefixed<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if !self.0.is_empty() {
            self.1.write_all(self.0.as_bytes())?;
            self.1.write_all(b" ")?;
        }
        self.1.write_all(line)?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.1.flush()
    }
}

fn check(file: &str) -> ExitCode {
    println!("Parsing configuration file: {file}");
    let config = match config::load(file) {
        Ok(config) => config,
        Err(e) => {
            println!("ERROR parsing the configuration file: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Plugins that can be found are started with their blocks and dropped: a block they
    // refuse (an ambiguous route, a bad duration) fails the check as `run` would, and the
    // routes they declare join the route table.
    let (plugins, refusals) = inject_plugins(&config);
    for refusal in &refusals {
        println!("ERROR in the plugin config: {refusal}");
    }
    match Router::new(&config, plugins.routes(), &plugins.names(), false) {
        Ok(router) => {
            for warning in warnings(&config, &router) {
                println!("WARNING: {warning}");
            }
            if refusals.is_empty() {
                println!("Syntax OK!");
                return ExitCode::SUCCESS;
            }
        }
        Err(e) => println!("ERROR in the routes: {e}"),
    }
    ExitCode::FAILURE
}

/// What a config allows that it probably should not: `run` logs these, `check` prints them.
fn warnings(config: &Config, router: &Router) -> Vec<String> {
    let cors = config.cors.as_ref().and_then(|cors| cors.warning());
    let insecure = config.client_tls.insecure.then_some(
        "client_tls.allow_insecure_connections: the certificates of https backends \
         (the plugins' too) are not verified; anyone on the way can read and change them",
    );
    cors.into_iter()
        .chain(insecure)
        .map(str::to_owned)
        .chain(router.warnings().iter().cloned())
        .collect()
}

fn test_plugin(server: bool, files: &[PathBuf]) -> ExitCode {
    if !server {
        println!("You must declare the expected type of the plugin.");
        return ExitCode::FAILURE;
    }
    if files.is_empty() {
        println!("At least one plugin is required.");
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let mut failed = 0;
    for file in files {
        match PluginLibrary::load(file) {
            Ok(library) => println!("[OK] SERVER\t{} ({})", file.display(), library.name),
            Err(e) => {
                failed += 1;
                println!("[KO] SERVER\t{}: {e}", file.display());
            }
        }
    }
    let elapsed = start.elapsed();
    if failed == 0 {
        println!("[OK] {} tested plugin(s) in {elapsed:?}", files.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "[KO] {failed} tested plugin(s) failed out of {} in {elapsed:?}",
            files.len()
        );
        ExitCode::FAILURE
    }
}

fn run(
    mut config: Config,
    port: Option<u16>,
    debug: bool,
    activation: Activation,
    notifier: &Notifier,
) -> anyhow::Result<()> {
    if let Some(port) = port {
        config.port = port;
    }
    let passed = match activation {
        Activation::Sockets(sockets) => Some(sockets),
        Activation::NotOurs(pid) => {
            tracing::warn!(
                "[SERVICE: HTTP Server] LISTEN_FDS is meant for process {pid:?}, not this one ({}): ignored",
                std::process::id()
            );
            None
        }
        Activation::None => None,
    };
    if passed.as_ref().is_some_and(|p| p.metrics.is_some()) && config.metrics_address.is_none() {
        anyhow::bail!(
            "LISTEN_FDS passes a socket named metrics, but the config has no extra_config.telemetry/metrics to serve on it"
        );
    }
    tracing::info!("Starting host version {}", env!("CARGO_PKG_VERSION"));
    let plugins = inject_plugins(&config).0;
    let router =
        Router::new(&config, plugins.routes(), &plugins.names(), debug).context("in the routes")?;
    for warning in warnings(&config, &router) {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let static_files = config
        .static_files
        .as_ref()
        .map(|files| {
            StaticFiles::new(files).with_context(|| {
                format!(
                    "extra_config.plugin/http-server.{}.path: {}",
                    config::STATIC_FILESYSTEM,
                    files.path.display()
                )
            })
        })
        .transpose()?;
    runtime.block_on(async move {
        let backlog = config
            .backlog
            .map_or_else(accept::system_backlog, NonZeroU32::get);
        let (http_passed, metrics_passed) = match passed {
            Some(Sockets { http, metrics }) => (Some(http), metrics),
            None => (None, None),
        };
        // The metrics listener is bound (and logged) before the HTTP server, whose line
        // says that the gateway is up. Never SO_REUSEPORT: a port shared by several
        // processes would answer each scrape with the counters of whichever process the
        // kernel picked.
        let metrics = match (&config.metrics_address, metrics_passed) {
            (Some(address), passed) => {
                let metrics = match passed {
                    Some(socket) => tokio::net::TcpListener::from_std(socket)?,
                    None => accept::listen(address.as_str(), backlog, false)
                        .await
                        .with_context(|| format!("listening for metrics on {address}"))?,
                };
                tracing::info!("[SERVICE: Metrics] Listening on {}", metrics.local_addr()?);
                Some(metrics)
            }
            // Refused in `run` before the runtime started.
            (None, _) => None,
        };
        let max_connections = config
            .max_connections
            .map_or_else(Connections::default_limit, NonZeroUsize::get);
        let listener = match http_passed {
            Some(socket) => {
                tracing::info!(
                    "[SERVICE: HTTP Server] max_connections {max_connections}, serving the listening socket passed in LISTEN_FDS (port, listen_ip, reuse_port and backlog are the socket's own)"
                );
                tokio::net::TcpListener::from_std(socket)?
            }
            None => {
                let shared = if config.reuse_port {
                    ", reuse_port (the port is shared with the other processes bound to it)"
                } else {
                    ""
                };
                tracing::info!(
                    "[SERVICE: HTTP Server] max_connections {max_connections}, accept backlog {backlog}{shared}"
                );
                let address = (config.listen_ip.as_str(), config.port);
                accept::listen(address, backlog, config.reuse_port)
                    .await
                    .with_context(|| {
                        format!("listening on {}:{}", config.listen_ip, config.port)
                    })?
            }
        };
        let connections = Arc::new(Connections::new(max_connections));
        tracing::info!(
            "[SERVICE: HTTP Server] Listening on {}",
            listener.local_addr()?
        );
        let shared = Arc::new(Shared {
            plugins: Arc::new(plugins),
            router: Arc::new(router),
            connections: connections.clone(),
            protections: Protections::new(&config),
            metrics: Arc::default(),
            debug,
            pipeline: Pipeline::new(&config),
            static_files,
            max_body_bytes: config.max_body_bytes,
            tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            http2: host::http2::Settings {
                use_h2c: config.use_h2c,
                max_concurrent_streams: config.max_concurrent_streams,
                ping_interval: config.http2_ping_interval,
            },
            draining: tokio_util::sync::CancellationToken::new(),
            limits: Limits {
                max_header_bytes: config.max_header_bytes,
                max_headers: config.max_header_count,
                read_header_timeout: config.read_header_timeout,
                idle_timeout: config.idle_timeout,
                read_timeout: config.read_timeout,
                send_buffer: config.client_send_buffer,
            },
        });
        host::protect::jwks::load(&shared.protections).await;
        if let Some(metrics) = metrics {
            tokio::spawn(host::metrics::serve_metrics(metrics, shared.clone()));
        }
        let acceptor = accept::Acceptor::new(listener, connections.clone(), "HTTP Server");
        notifier.notify("READY=1");
        // `run` drops the acceptor when the signal comes, so the listener is closed before
        // the drain starts. Bound with `reuse_port`, that stops the kernel queueing new
        // connections for this process (those already in its queue are reset, unless
        // `net.ipv4.tcp_migrate_req` moves them to another process of the port). Passed by
        // a service manager, the socket stays open in the manager and in the process that
        // replaces this one, with its queue.
        accept::run(acceptor, shared.clone(), shutdown_signal()).await;
        notifier.notify("STOPPING=1");
        shared.draining.cancel();
        drain(&shared.plugins, &connections, config.shutdown_timeout).await;
        Ok(())
    })
}

/// Loads the plugin folder and starts the plugins the config names. Failures are logged
/// with the file or plugin and the cause; the gateway still serves everything else.
///
/// Also returns each refusal (`name: reason`) of a plugin that was found but would not
/// start with its block: `check` reports those.
fn inject_plugins(config: &Config) -> (ServerPlugins, Vec<String>) {
    let mut injected = ServerPlugins::default();
    let mut refusals = Vec::new();
    let Some(folder) = &config.plugin else {
        for wanted in &config.server_plugins {
            tracing::error!(
                "[PLUGIN: Server] {}: no plugin folder configured (root key \"plugin\")",
                wanted.name
            );
        }
        return (injected, refusals);
    };
    tracing::info!("[SERVICE: Plugin Loader] Starting loading process");
    let files = plugin_files(Path::new(&folder.folder), &folder.pattern).unwrap_or_else(|e| {
        tracing::error!(
            "[SERVICE: Plugin Loader] reading plugin folder {}: {e}",
            folder.folder
        );
        Vec::new()
    });
    let libraries: Vec<PluginLibrary> = files
        .iter()
        .filter_map(|file| {
            PluginLibrary::load(file)
                .inspect_err(|e| {
                    tracing::error!("[SERVICE: Plugin Loader] {}: {e}", file.display())
                })
                .ok()
        })
        .collect();
    tracing::info!(
        "[SERVICE: Plugin Loader] Total plugins loaded: {}",
        libraries.len()
    );
    for wanted in &config.server_plugins {
        let Some(library) = libraries.iter().find(|l| l.name == wanted.name) else {
            tracing::error!(
                "[PLUGIN: Server] {}: no loaded plugin has this name",
                wanted.name
            );
            continue;
        };
        match library
            .start(&wanted.config_json)
            .and_then(|plugin| injected.push(wanted.name.clone(), plugin))
        {
            Ok(()) => tracing::info!("[PLUGIN: Server] Injecting plugin {}", wanted.name),
            Err(reason) => {
                tracing::error!(
                    "[PLUGIN: Server] {} refused to start: {reason}",
                    wanted.name
                );
                refusals.push(format!("{}: {reason}", wanted.name));
            }
        }
    }
    (injected, refusals)
}

/// The listener is closed: asks the plugins to end their streams within `deadline`, then
/// waits, within the same deadline, for the connections the host still serves (requests
/// accepted just before the signal), so that none is cut before its answer. Keep-alive
/// connections do not hold it up: `draining` ends each as soon as it idles (HTTP/1.1) or
/// has no stream open (HTTP/2's GOAWAY). A second signal exits at once.
async fn drain(plugins: &Arc<ServerPlugins>, connections: &Connections, deadline: Duration) {
    tracing::info!("[SERVICE: HTTP Server] Shutting down: draining streams for up to {deadline:?}");
    let until = tokio::time::Instant::now() + deadline;
    let plugins = plugins.clone();
    let drained = tokio::task::spawn_blocking(move || plugins.shutdown(deadline));
    let closed = async {
        match drained.await {
            Ok(0) => tracing::info!("[SERVICE: HTTP Server] All streams ended"),
            Ok(open) => {
                tracing::warn!("[SERVICE: HTTP Server] {open} streams still open at the deadline")
            }
            Err(e) => tracing::error!("[SERVICE: HTTP Server] drain failed: {e}"),
        }
        while connections.count() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match connections.count() {
            0 => {}
            open => tracing::warn!(
                "[SERVICE: HTTP Server] {open} connections still open at the deadline"
            ),
        }
    };
    tokio::select! {
        () = closed => {}
        () = shutdown_signal() => {
            tracing::warn!("[SERVICE: HTTP Server] Second signal: exiting now");
            std::process::exit(1);
        }
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
