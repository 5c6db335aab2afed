//! Loading server plugins through abi_stable, and the set of plugins a gateway injects.
//!
//! Each failure is one short cause naming the file (the full abi_stable report goes to the
//! debug log), and the host keeps running: a bad plugin file is never fatal.

use std::path::{Path, PathBuf};

use abi::{FfiServerPluginBox, HijackRequest, LogLevel, Logger, PluginModuleRef};
use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use abi_stable::std_types::{RResult, RStr, RString};

/// Why a plugin file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a loadable library ({0})")]
    NotALibrary(String),
    #[error("missing root module (not a server plugin built against this host's ABI)")]
    MissingRootModule,
    #[error("incompatible ABI version: plugin built for {actual}, host expects {expected}")]
    IncompatibleVersion { expected: String, actual: String },
    #[error("incompatible ABI layout (the plugin's types differ from the host's)")]
    IncompatibleLayout,
    #[error("incompatible abi_stable runtime (the plugin was built with another abi_stable)")]
    IncompatibleRuntime,
    #[error("the root module failed to initialise: {0}")]
    RootModuleFailed(String),
}

/// A loaded plugin library, before it is configured.
pub struct PluginLibrary {
    pub path: PathBuf,
    pub name: String,
    module: PluginModuleRef,
}

impl PluginLibrary {
    /// Loads a library and reads the name its plugin registers under.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        // dlopen searches the library path for a name without a slash: make it a path.
        let absolute =
            std::path::absolute(path).map_err(|e| LoadError::NotALibrary(e.to_string()))?;
        let module = lib_header_from_path(&absolute)
            .and_then(|header| header.init_root_module::<PluginModuleRef>())
            .map_err(|error| {
                tracing::debug!("loading {}: {error}", path.display());
                classify(error)
            })?;
        let name = (module.name())().into_string();
        Ok(Self {
            path: path.to_owned(),
            name,
            module,
        })
    }

    /// Builds the plugin from its config block, or returns the reason it refused.
    pub fn start(&self, config_json: &str) -> Result<FfiServerPluginBox, String> {
        match (self.module.new_server())(RStr::from(config_json), Logger { log: plugin_log }) {
            RResult::ROk(plugin) => Ok(plugin),
            RResult::RErr(reason) => Err(reason.into_string()),
        }
    }
}

fn classify(error: LibraryError) -> LoadError {
    match error {
        LibraryError::OpenError { err, .. } => {
            // dlopen's message starts with the path; the cause follows the last ": ".
            let message = err.to_string();
            let cause = message
                .rsplit(": ")
                .next()
                .unwrap_or(&message)
                .trim()
                .to_owned();
            LoadError::NotALibrary(cause)
        }
        LibraryError::GetSymbolError { .. } => LoadError::MissingRootModule,
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadError::IncompatibleVersion {
            expected: expected_version.to_string(),
            actual: actual_version.to_string(),
        },
        LibraryError::ParseVersionError(e) => LoadError::IncompatibleVersion {
            expected: env!("CARGO_PKG_VERSION").into(),
            actual: e.to_string(),
        },
        LibraryError::AbiInstability(_) => LoadError::IncompatibleLayout,
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            LoadError::IncompatibleRuntime
        }
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => LoadError::RootModuleFailed("it panicked".into()),
        LibraryError::RootModule {
            err: RootModuleError::Returned(e),
            ..
        } => LoadError::RootModuleFailed(e.to_string()),
        LibraryError::Many(errors) => errors
            .into_iter()
            .next()
            .map(classify)
            .unwrap_or(LoadError::IncompatibleLayout),
    }
}

/// Where plugin log lines go: the host's own tracing output.
extern "C" fn plugin_log(level: LogLevel, message: RStr<'_>) {
    let message = message.as_str();
    match level {
        LogLevel::Error => tracing::error!(target: "plugin", "{message}"),
        LogLevel::Warn => tracing::warn!(target: "plugin", "{message}"),
        LogLevel::Info => tracing::info!(target: "plugin", "{message}"),
        LogLevel::Debug => tracing::debug!(target: "plugin", "{message}"),
    }
}

/// Every file in `folder` whose name contains `pattern`, sorted so loading order is stable.
pub fn plugin_files(folder: &Path, pattern: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name().to_string_lossy().contains(pattern) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A started plugin the gateway hands claimed connections to.
pub struct InjectedPlugin {
    pub name: String,
    plugin: FfiServerPluginBox,
}

/// One route a plugin declared, parsed.
pub struct PluginRoute {
    pub plugin: usize,
    /// Its index in the plugin's own list, which the handoff carries back.
    pub route: u32,
    pub endpoint: String,
    pub template: path_template::Template,
    pub methods: Vec<String>,
}

/// The injected server plugins and the routes they declared.
#[derive(Default)]
pub struct ServerPlugins {
    plugins: Vec<InjectedPlugin>,
    /// In the order the plugins declared them; `route::Router` orders them.
    routes: Vec<PluginRoute>,
}

impl ServerPlugins {
    /// Injects a started plugin with the routes it declares; a plugin whose routes cannot
    /// be read (it panicked, or a template does not parse) is refused with the reason.
    pub fn push(&mut self, name: String, plugin: FfiServerPluginBox) -> Result<(), String> {
        let declared = plugin.routes().into_result().map_err(|e| e.into_string())?;
        let index = self.plugins.len();
        // All or nothing: a refused plugin leaves no routes behind.
        let routes = declared
            .into_iter()
            .enumerate()
            .map(|(route, decl)| {
                let template = path_template::Template::parse(&decl.endpoint)
                    .map_err(|e| format!("route {:?}: {e}", decl.endpoint.as_str()))?;
                Ok(PluginRoute {
                    plugin: index,
                    route: route as u32,
                    endpoint: decl.endpoint.into_string(),
                    template,
                    methods: decl.methods.into_iter().map(RString::into_string).collect(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.routes.extend(routes);
        self.plugins.push(InjectedPlugin { name, plugin });
        Ok(())
    }

    /// Every route the plugins declared.
    pub fn routes(&self) -> &[PluginRoute] {
        &self.routes
    }

    pub fn name(&self, index: usize) -> &str {
        &self.plugins[index].name
    }

    /// The plugins' names, by index.
    pub fn names(&self) -> Vec<&str> {
        self.plugins.iter().map(|p| p.name.as_str()).collect()
    }

    /// Gives a claimed connection to plugin `index`; the fd is the plugin's in every case.
    pub fn hijack(&self, index: usize, request: HijackRequest) -> Result<(), String> {
        self.plugins[index]
            .plugin
            .hijack(request)
            .into_result()
            .map_err(|e| e.into_string())
    }
}

impl ServerPlugins {
    /// Every plugin's counters, by name, for `/__stats`. A plugin that fails to answer
    /// shows its error instead.
    pub fn stats(&self) -> serde_json::Value {
        let plugins: serde_json::Map<String, serde_json::Value> = self
            .plugins
            .iter()
            .map(|p| {
                let stats = match p.plugin.stats().into_result() {
                    Ok(json) => serde_json::from_str(&json).unwrap_or_else(
                        |e| serde_json::json!({"error": format!("invalid stats JSON: {e}")}),
                    ),
                    Err(e) => serde_json::json!({"error": e.into_string()}),
                };
                (p.name.clone(), stats)
            })
            .collect();
        serde_json::json!({ "plugins": plugins })
    }

    /// Asks every plugin, in parallel, to end its streams within `deadline`; blocks until
    /// they return and gives how many streams were still open.
    pub fn shutdown(&self, deadline: std::time::Duration) -> u64 {
        let deadline_ms = deadline.as_millis() as u64;
        std::thread::scope(|scope| {
            let calls: Vec<_> = self
                .plugins
                .iter()
                .map(|p| scope.spawn(move || (p, p.plugin.shutdown(deadline_ms).into_result())))
                .collect();
            calls
                .into_iter()
                .filter_map(|call| call.join().ok())
                .map(|(p, result)| match result {
                    Ok(open) => open,
                    Err(e) => {
                        tracing::error!("[PLUGIN: {}] shutdown failed: {e}", p.name);
                        0
                    }
                })
                .sum()
        })
    }
}
