//! What `host::config::parse` must give for any text: broken JSON is a syntax error at
//! serde_json's own line and column; valid JSON is either a config whose parts hold what
//! the gateway relies on, or an error whose path leads into the document (its parent
//! exists: a missing key is named by where it is missing).

use host::config::{ConfigError, OutputEncoding};
use serde_json::Value;

pub fn check(text: &str) {
    let result = host::config::parse("fuzz.json", text);
    let document = serde_json::from_str::<Value>(text);
    match (result, document) {
        (Err(ConfigError::Syntax { line, column, .. }), Err(e)) => {
            assert_eq!((line, column), (e.line(), e.column()));
        }
        (Err(ConfigError::Syntax { message, .. }), Ok(_)) => {
            panic!("valid JSON refused as broken: {message}")
        }
        (Ok(_) | Err(ConfigError::Invalid { .. } | ConfigError::Read { .. }), Err(e)) => {
            panic!("broken JSON not refused as such: {e}")
        }
        (Err(ConfigError::Read { source, .. }), Ok(_)) => panic!("parse read a file: {source}"),
        (Err(ConfigError::Invalid { path, message, .. }), Ok(document)) => {
            assert!(!message.is_empty(), "{path}: no reason");
            if let Some(steps) = steps(&path) {
                let parent = &steps[..steps.len().saturating_sub(1)];
                assert!(
                    walk(&document, parent).is_some() || has_ambiguous_keys(&document),
                    "{path}: {message}: the path is not in the document"
                );
            }
        }
        (Ok(config), Ok(document)) => {
            assert_eq!(document["version"], 3);
            for endpoint in &config.endpoints {
                assert_eq!(
                    path_template::Template::parse(&endpoint.endpoint).as_ref(),
                    Ok(&endpoint.template)
                );
                assert!(!endpoint.backends.is_empty());
                if endpoint.output_encoding == OutputEncoding::NoOp {
                    assert_eq!(endpoint.backends.len(), 1);
                }
                for backend in &endpoint.backends {
                    assert!(backend.url_pattern.starts_with('/'));
                    assert!(!backend.hosts.is_empty());
                    for host in &backend.hosts {
                        assert_eq!(host.scheme_str(), Some("http"));
                        assert!(host.authority().is_some() && host.query().is_none());
                    }
                }
            }
            for plugin in &config.server_plugins {
                assert!(serde_json::from_str::<Value>(&plugin.config_json).is_ok());
            }
        }
    }
}

#[derive(Debug)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[0].c` as steps; `None` for the root or a path with a segment serde could not name.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    if path == "(root)" {
        return None;
    }
    let mut steps = Vec::new();
    for segment in path.split('.') {
        let (key, indices) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        if key == "?" {
            return None;
        }
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            steps.push(Step::Index(index.parse().ok()?));
        }
    }
    Some(steps)
}

fn walk<'v>(value: &'v Value, steps: &[Step<'_>]) -> Option<&'v Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(key) => v.get(key),
        Step::Index(i) => v.get(i),
    })
}

/// Keys with `.` or `[` cannot be told apart in a dotted path.
fn has_ambiguous_keys(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains(['.', '[', ']']) || has_ambiguous_keys(v)),
        Value::Array(items) => items.iter().any(has_ambiguous_keys),
        _ => false,
    }
}
