//! `set_headers`: the headers the gateway sets on a route's upstream requests, so that a
//! browser never holds what they carry (`"Authorization": "Bearer ${env:LLM_API_KEY}"`).
//!
//! `${env:NAME}` is replaced by the variable's value once, when the block is read: a
//! missing variable refuses the block (naming the variable and the key), rather than
//! sending an empty credential at the first request. The values then pass `wire::clean`
//! like anything else written into an upstream head, and the names that frame the request
//! (which the plugin writes itself) are refused.

use std::collections::BTreeMap;

use super::error::{ConfigError, Problem};

/// What frames or routes the upstream request; the plugin writes these itself.
const RESERVED: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "last-event-id",
];

/// The route's `set_headers` (written at `at`), resolved and checked: `(name, value)`.
pub(super) fn resolve(
    keys: Option<BTreeMap<String, String>>,
    at: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
    let mut resolved = Vec::new();
    for (name, value) in keys.unwrap_or_default() {
        let invalid = |problem| ConfigError::at(at, &format!("set_headers.{name}"), problem);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(Problem::NotAHeaderName(name.clone())));
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
            return Err(invalid(Problem::ReservedHeader(name.clone())));
        }
        let value = substitute(&value, &env).map_err(invalid)?;
        if wire::clean::header_value("set_headers", value.as_bytes()).is_err() {
            return Err(invalid(Problem::ControlCharacter));
        }
        resolved.push((name, value.into_bytes()));
    }
    Ok(resolved)
}

/// `value` with every `${env:NAME}` replaced by the variable's value.
fn substitute(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, Problem> {
    const OPEN: &str = "${env:";
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| Problem::BadEnvReference(rest[start..].to_owned()))?;
        let name = &after[..end];
        let well_formed = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err(Problem::BadEnvReference(format!("{OPEN}{name}}}")));
        }
        out.push_str(&env(name).ok_or_else(|| Problem::MissingEnv(name.to_owned()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "BAD" => Some("a\r\nX-Injected: 1".into()),
            _ => None,
        }
    }

    fn resolved(pairs: &[(&str, &str)]) -> Result<Vec<(String, Vec<u8>)>, String> {
        let keys = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        resolve(Some(keys), "routes[1].", env).map_err(|e| e.to_string())
    }

    #[test]
    fn variables_are_resolved_once_and_each_refusal_names_its_key() {
        assert_eq!(
            resolved(&[("Authorization", "Bearer ${env:KEY}"), ("X-Org", "o")]).unwrap(),
            [
                ("Authorization".to_owned(), b"Bearer sk-123".to_vec()),
                ("X-Org".to_owned(), b"o".to_vec())
            ]
        );
        assert_eq!(
            resolved(&[("Authorization", "Bearer ${env:NOPE}")]).unwrap_err(),
            "routes[1].set_headers.Authorization: the environment variable NOPE is not set"
        );
        for (pairs, says) in [
            (
                &[("X", "${env:KEY")][..],
                "routes[1].set_headers.X: \"${env:KEY\" is not ${env:NAME}",
            ),
            (
                &[("X", "${env:1A}")],
                "routes[1].set_headers.X: \"${env:1A}\" is not ${env:NAME}",
            ),
            (
                &[("X", "${env:BAD}")],
                "routes[1].set_headers.X: holds a control character",
            ),
            (
                &[("X", "a\nb")],
                "routes[1].set_headers.X: holds a control character",
            ),
            (
                &[("Host", "h")],
                "routes[1].set_headers.Host: \"Host\" is written by the plugin itself",
            ),
            (
                &[("Bad Name", "v")],
                "routes[1].set_headers.Bad Name: \"Bad Name\" is not a header name",
            ),
        ] {
            assert_eq!(resolved(pairs).unwrap_err(), says, "{pairs:?}");
        }
    }
}
