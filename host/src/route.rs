//! The route decision: made once per request head, by one rule, and carried to everything
//! after it (the protections, the pipeline, the plugin handoff, the metrics label and the
//! access log), so that nothing matches a path a second time under other rules.
//!
//! The table is built once at start from `endpoints[]`, the routes the plugins declared,
//! the `static-filesystem` prefix and the host's own paths (`/__health`, and `/__debug/*`
//! with `-d`). A request goes to the most specific template that matches its path and
//! accepts its method (a literal segment beats a `{param}`, which beats a trailing `/*`:
//! [`Template::specificity`]). A path that templates match only under other methods gets
//! 405; one that no template matches, 404.
//!
//! Two entries that match the same requests (the same shape and a common method) would
//! leave the choice to config order, so the table refuses them, naming both. The one pair
//! allowed is a plugin route and its `endpoints[]` twin (the same shape): the plugin serves
//! the request with the twin's protections (JWT, rate limit), and the twins must then take
//! every method the plugin route accepts. A plugin route without any twin is served
//! unprotected, which start-up and `check` warn about.

use std::collections::VecDeque;
use std::sync::Mutex;

use path_template::Template;

use crate::config::{Config, STATIC_FILESYSTEM};
use crate::plugins::PluginRoute;

/// Answers 200 while the gateway serves, for load balancers and orchestrators.
pub const HEALTH_PATH: &str = "/__health";
/// With `-d`, anything under it is logged and answered `{"message": "pong"}`, as KrakenD's
/// debug endpoint does.
pub const DEBUG_TEMPLATE: &str = "/__debug/*";

/// Why the route table cannot be built; `run` exits with it and `check` reports it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("{first} and {second} match the same {method} requests; neither is more specific")]
    SameRequests {
        first: String,
        second: String,
        method: String,
    },
    #[error(
        "{route} accepts {method}, but its endpoints[] twins ({twins}) do not: {method} \
         would be served without their JWT and rate limits; add a {method} endpoint of the \
         same shape or drop {method} from the route"
    )]
    UncoveredMethod {
        route: String,
        method: String,
        twins: String,
    },
    #[error("extra_config.plugin/http-server.{STATIC_FILESYSTEM}.prefix: {0}")]
    StaticPrefix(String),
}

/// What serves a request, as decided from its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `endpoints[index]`, through the pipeline, with the values its template captured
    /// (in the template's order).
    Endpoint {
        index: usize,
        params: Vec<String>,
    },
    /// A plugin takes the connection over.
    Plugin(Claim),
    /// The static files, `path` below the prefix.
    StaticFiles {
        path: String,
    },
    Health,
    Debug,
    MethodNotAllowed,
    NotFound,
}

/// A request a plugin's declared route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The plugin, in `ServerPlugins` order.
    pub plugin: usize,
    /// The index of the route in the plugin's own list, which the handoff carries back.
    pub route: u32,
    /// The `endpoints[]` twin whose protections apply, if the route has one.
    pub twin: Option<usize>,
    entry: usize,
}

/// One request head's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    /// The table entry that decided; `None` for 404 and 405.
    entry: Option<usize>,
}

impl Decision {
    /// The `endpoints[]` entry whose protections (JWT, rate limit) the request passes.
    pub fn protected_by(&self) -> Option<usize> {
        match &self.route {
            Route::Endpoint { index, .. } => Some(*index),
            Route::Plugin(claim) => claim.twin,
            _ => None,
        }
    }
}

/// Which methods an entry takes.
#[derive(Debug, Clone)]
enum Methods {
    Any,
    Only(Vec<String>),
}

impl std::fmt::Display for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Methods::Any => f.write_str("*"),
            Methods::Only(list) => f.write_str(&list.join(",")),
        }
    }
}

impl Methods {
    fn accepts(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::Only(list) => list.iter().any(|m| m == method),
        }
    }

    /// A method both take, if any (for the error that names it).
    fn common<'a>(&'a self, other: &'a Methods) -> Option<&'a str> {
        match (self, other) {
            (Methods::Any, Methods::Any) => Some("*"),
            (Methods::Only(list), Methods::Any) | (Methods::Any, Methods::Only(list)) => {
                list.first().map(String::as_str)
            }
            (Methods::Only(a), Methods::Only(b)) => {
                a.iter().find(|m| b.contains(m)).map(String::as_str)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Endpoint(usize),
    Plugin {
        plugin: usize,
        route: u32,
        twin: Option<usize>,
    },
    StaticFiles,
    Health,
    Debug,
}

#[derive(Debug)]
struct Entry {
    template: Template,
    /// The template as written: the metrics label.
    written: String,
    methods: Methods,
    target: Target,
    /// Who declared it, for errors and warnings (`endpoints[3] "/sse/{id}"`).
    origin: String,
}

/// The route table.
#[derive(Debug)]
pub struct Router {
    /// Most specific first; of two entries of the same shape, a plugin route first (it
    /// serves, its twin only lends the protections).
    entries: Vec<Entry>,
    warnings: Vec<String>,
}

impl Router {
    /// Builds the table, or refuses an ambiguous or unprotectable one. `plugin_routes` are
    /// the routes the plugins declared (`ServerPlugins::routes`), `plugin_names` their
    /// plugins' names by index.
    pub fn new(
        config: &Config,
        plugin_routes: &[PluginRoute],
        plugin_names: &[&str],
        debug: bool,
    ) -> Result<Self, RouteError> {
        let mut entries = host_entries(config, debug)?;
        refuse_same_requests(&entries)?;
        let mut warnings = Vec::new();
        let mut plugin_entries = Vec::new();
        for declared in plugin_routes {
            let name = plugin_names[declared.plugin];
            let route = format!("{name} route {:?}", declared.endpoint);
            plugin_entries.extend(twinned(declared, route, &entries, &mut warnings)?);
        }
        // Plugins refuse their own overlapping routes; two plugins' routes, or a plugin's
        // route over the host's own paths, are refused here.
        for (i, plugin_entry) in plugin_entries.iter().enumerate() {
            let others = entries
                .iter()
                .filter(|e| !matches!(e.target, Target::Endpoint(_)))
                .chain(&plugin_entries[..i]);
            for other in others {
                refuse_pair(other, plugin_entry)?;
            }
        }
        entries.extend(plugin_entries);
        entries.sort_by_cached_key(|e| {
            let lends_protections_only = !matches!(e.target, Target::Plugin { .. });
            (e.template.specificity(), lends_protections_only)
        });
        Ok(Self { entries, warnings })
    }

    /// What start-up logs and `check` prints: each plugin route served without protections.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Decides a request head: `path` without its query string.
    pub fn decide(&self, method: &str, path: &str) -> Decision {
        let mut other_method = false;
        for (index, entry) in self.entries.iter().enumerate() {
            if !entry.methods.accepts(method) {
                other_method = other_method || entry.template.is_match(path);
                continue;
            }
            if !entry.template.is_match(path) {
                continue;
            }
            let captures = || entry.template.matches(path).unwrap_or_default().into_iter();
            let route = match entry.target {
                Target::Endpoint(endpoint) => Route::Endpoint {
                    index: endpoint,
                    params: captures().map(|(_, value)| value.to_owned()).collect(),
                },
                Target::Plugin {
                    plugin,
                    route,
                    twin,
                } => Route::Plugin(Claim {
                    plugin,
                    route,
                    twin,
                    entry: index,
                }),
                Target::StaticFiles => Route::StaticFiles {
                    path: captures()
                        .next()
                        .map(|(_, rest)| rest)
                        .unwrap_or("")
                        .to_owned(),
                },
                Target::Health => Route::Health,
                Target::Debug => Route::Debug,
            };
            return Decision {
                route,
                entry: Some(index),
            };
        }
        Decision {
            route: if other_method {
                Route::MethodNotAllowed
            } else {
                Route::NotFound
            },
            entry: None,
        }
    }

    /// The template that decided, for metrics: `unmatched` for 404 and 405.
    pub fn template_of(&self, decision: &Decision) -> &str {
        self.label(decision.entry)
    }

    /// The template of a claimed request's route.
    pub fn template_of_claim(&self, claim: &Claim) -> &str {
        self.label(Some(claim.entry))
    }

    fn label(&self, entry: Option<usize>) -> &str {
        entry.map_or("unmatched", |e| self.entries[e].written.as_str())
    }
}

/// The entries the host's config makes: `endpoints[]`, the static files' prefix (the
/// folder, `/www`, and what is under it, `/www/*`) and the host's own paths.
fn host_entries(config: &Config, debug: bool) -> Result<Vec<Entry>, RouteError> {
    let mut entries: Vec<Entry> = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(index, e)| Entry {
            template: e.template.clone(),
            written: e.endpoint.clone(),
            methods: Methods::Only(vec![e.method.as_str().to_owned()]),
            target: Target::Endpoint(index),
            origin: format!("endpoints[{index}] {:?}", e.endpoint),
        })
        .collect();
    let get = || Methods::Only(vec!["GET".into()]);
    let mut own = vec![(HEALTH_PATH.to_owned(), Target::Health, get())];
    if debug {
        own.push((DEBUG_TEMPLATE.to_owned(), Target::Debug, Methods::Any));
    }
    for (written, target, methods) in own {
        entries.push(Entry {
            template: Template::parse(&written).expect("the host's own templates parse"),
            origin: format!("the host's own {written:?}"),
            written,
            methods,
            target,
        });
    }
    if let Some(files) = &config.static_files {
        let base = files.prefix.trim_end_matches('/');
        let folder = (!base.is_empty()).then(|| base.to_owned());
        for written in std::iter::once(format!("{base}/*")).chain(folder) {
            let template = Template::parse(&written)
                .map_err(|e| RouteError::StaticPrefix(format!("{:?}: {e}", files.prefix)))?;
            entries.push(Entry {
                template,
                written,
                methods: Methods::Only(vec!["GET".into(), "HEAD".into()]),
                target: Target::StaticFiles,
                origin: format!("{STATIC_FILESYSTEM} prefix {:?}", files.prefix),
            });
        }
    }
    Ok(entries)
}

/// A plugin route's entries, one per method, each with the `endpoints[]` twin whose
/// protections it takes; a route whose twins miss one of its methods is refused, and one
/// without any twin is warned about.
fn twinned(
    declared: &PluginRoute,
    route: String,
    entries: &[Entry],
    warnings: &mut Vec<String>,
) -> Result<Vec<Entry>, RouteError> {
    let twins: Vec<(usize, &Entry)> = entries
        .iter()
        .filter_map(|e| match e.target {
            Target::Endpoint(index) if e.template.same_shape(&declared.template) => {
                Some((index, e))
            }
            _ => None,
        })
        .collect();
    if twins.is_empty() {
        warnings.push(format!(
            "{route} has no endpoints[] entry of the same shape: it is served without JWT \
             and rate limits"
        ));
    }
    let mut plugin_entries = Vec::new();
    for method in &declared.methods {
        let twin = twins.iter().find(|(_, e)| e.methods.accepts(method));
        if twin.is_none() && !twins.is_empty() {
            let listed: Vec<String> = twins
                .iter()
                .map(|(_, e)| format!("{} {}", e.origin, e.methods))
                .collect();
            return Err(RouteError::UncoveredMethod {
                route,
                method: method.clone(),
                twins: listed.join("; "),
            });
        }
        plugin_entries.push(Entry {
            template: declared.template.clone(),
            written: declared.endpoint.clone(),
            methods: Methods::Only(vec![method.clone()]),
            target: Target::Plugin {
                plugin: declared.plugin,
                route: declared.route,
                twin: twin.map(|(index, _)| *index),
            },
            origin: route.clone(),
        });
    }
    Ok(plugin_entries)
}

/// The first pair of entries (in config order) that match the same requests.
fn refuse_same_requests(entries: &[Entry]) -> Result<(), RouteError> {
    for (i, second) in entries.iter().enumerate() {
        for first in &entries[..i] {
            refuse_pair(first, second)?;
        }
    }
    Ok(())
}

fn refuse_pair(first: &Entry, second: &Entry) -> Result<(), RouteError> {
    if !first.template.same_shape(&second.template) {
        return Ok(());
    }
    match first.methods.common(&second.methods) {
        Some(method) => Err(RouteError::SameRequests {
            first: first.origin.clone(),
            second: second.origin.clone(),
            method: method.to_owned(),
        }),
        None => Ok(()),
    }
}

/// One connection's decisions that hyper has not served yet, oldest first. The gate pushes
/// one at each head it gives hyper and the service pops it when hyper hands it that
/// request: hyper serves a connection's requests in order, and the gate gives it one
/// request at a time, so the two always meet on the same request. A head hyper refuses
/// itself (a target its URI parser rejects) leaves its decision behind, but hyper then
/// stops reading the connection, so no later request can take it.
#[derive(Debug, Default)]
pub struct Pending(Mutex<VecDeque<Decision>>);

impl Pending {
    pub fn push(&self, decision: Decision) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(decision);
    }

    pub fn pop(&self) -> Option<Decision> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

#[cfg(test)]
mod tests;
