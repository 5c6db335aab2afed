//! Why the plugin's block was refused, and where: every refusal names a JSON path
//! (`routes[0].keepalive`), so whoever edits `krakend.json` knows which key to fix. The
//! host logs the text and serves on without the plugin.

use std::fmt;

use path_template::TemplateError;

/// A block the plugin cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or not a JSON object (serde_json's message gives line and column).
    #[error("{0}")]
    Json(serde_json::Error),
    /// A key (or the value at `path`) that is wrong.
    #[error("{}{problem}", Place(path))]
    Key { path: String, problem: Problem },
}

impl ConfigError {
    /// `problem` at the key `name` of the object at `at` (`""` or `"routes[0]."`).
    pub(super) fn at(at: &str, name: &str, problem: Problem) -> Self {
        ConfigError::Key {
            path: format!("{at}{name}"),
            problem,
        }
    }
}

/// What is wrong with one value.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Serde's own: a wrong type, an unknown key, an invalid duration or choice.
    #[error("{0}")]
    Value(serde_json::Error),
    #[error("missing")]
    Missing,
    #[error("must not be empty")]
    Empty,
    #[error("must list at least one {0}")]
    EmptyList(&'static str),
    #[error("must be at least 1")]
    Zero,
    #[error("{value} is below the minimum of {min}")]
    BelowMinimum { value: usize, min: usize },
    #[error("{endpoint:?} {error}")]
    Template {
        endpoint: String,
        error: TemplateError,
    },
    #[error("{0:?} must start with '/'")]
    NotAbsolute(String),
    /// `config_values`' message about a base URL (shared with the host, which takes text).
    #[error("{0}")]
    BaseUrl(String),
    /// `client_tls`' message, which names the file when one is at fault.
    #[error("{0}")]
    Tls(String),
    #[error("{0:?} is not a host name or address for TLS")]
    NotATlsName(String),
    #[error("{0:?} is not an HTTP method")]
    NotAMethod(String),
    #[error("{0:?} is not a header name")]
    NotAHeaderName(String),
    #[error("{0:?} is written by the plugin itself")]
    ReservedHeader(String),
    #[error("the environment variable {0} is not set")]
    MissingEnv(String),
    #[error("{0:?} is not ${{env:NAME}}")]
    BadEnvReference(String),
    #[error("holds a control character")]
    ControlCharacter,
    #[error("{0} is not an HTTP status from 100 to 599")]
    NotAStatus(u16),
    #[error("required when load_balance is \"sticky\"")]
    StickyKeyRequired,
    #[error("{0:?} and {1:?} match the same requests; neither is more specific")]
    Ambiguous(String, String),
    #[error("only for fan-out routes (\"fanout\": true)")]
    FanoutOnly,
    #[error("not for a fan-out route, whose one upstream is a GET shared by its clients")]
    NotForFanout,
    #[error("only for kafka:// hosts")]
    KafkaOnly,
    #[error("required for kafka:// hosts")]
    KafkaRequired,
    #[error("kafka:// and other hosts cannot be mixed")]
    MixedHosts,
    #[error("\"kafka://{0}\" is not kafka://host:port")]
    NotABroker(String),
    #[error("a Kafka topic is always fanned out")]
    KafkaAlwaysFansOut,
}

/// `path: ` before the problem, or nothing for the block itself.
struct Place<'a>(&'a str);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            "" => Ok(()),
            path => write!(f, "{path}: "),
        }
    }
}

/// A value serde refused, as `serde_path_to_error` found it in the object at `at`.
pub(super) fn from_serde(
    at: &str,
    e: serde_path_to_error::Error<serde_json::Error>,
) -> ConfigError {
    let path = e.path().to_string();
    let path = match (at.trim_end_matches('.'), path.as_str()) {
        // The object itself (a route that is not an object, say).
        (object, ".") => object.to_owned(),
        (_, key) => format!("{at}{key}"),
    };
    ConfigError::Key {
        path,
        problem: Problem::Value(e.into_inner()),
    }
}
