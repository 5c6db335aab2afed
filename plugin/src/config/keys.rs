//! The block's keys as serde reads them: typed values (durations through the shared
//! `config_values::duration`, choices through `TryFrom<String>`), each key written once.
//!
//! A route's keys at the top of the block are every route's defaults. They are merged in
//! one place, [`route_keys`], as JSON objects (the route's own keys win) before the route
//! is read, so adding a key means adding one field here and reading it in `super::route`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{from_serde, ConfigError};
use super::{LoadBalance, StartFrom, StickyKey};

/// Keys of a route; at the top of the block they are defaults for every route.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteKeys {
    pub endpoint: Option<String>,
    pub methods: Option<Vec<String>>,
    pub backend_url_pattern: Option<String>,
    pub backend_host: Option<OneOrMany>,
    pub load_balance: Option<Balancing>,
    pub sticky_key: Option<StickyKey>,
    pub forward_headers: Option<Vec<String>>,
    pub set_headers: Option<std::collections::BTreeMap<String, String>>,
    pub max_body_bytes: Option<u64>,
    pub resume: Option<bool>,
    pub retry_on: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "duration")]
    pub keepalive: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub dial_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub response_header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub upstream_idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub client_write_timeout: Option<Duration>,
    pub max_streams: Option<usize>,
    pub max_reconnects: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub reconnect_window: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub reconnect_delay: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub max_reconnect_delay: Option<Duration>,
    pub fanout: Option<bool>,
    pub replay: Option<usize>,
    pub replay_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub replay_age: Option<Duration>,
    pub client_queue: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub linger: Option<Duration>,
    pub topic: Option<String>,
    pub key: Option<String>,
    pub start_from: Option<StartFrom>,
    pub event_header: Option<String>,
    pub max_catch_ups: Option<usize>,
}

/// Keys that belong to the block only; any other key at the top is a route key.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockKeys {
    pub routes: Option<Vec<Value>>,
    /// At the top of the block it is the block's limit, never a route default.
    pub max_streams: Option<usize>,
    pub read_buffer_bytes: Option<usize>,
    pub max_event_bytes: Option<usize>,
    pub max_pooled_buffers: Option<usize>,
    pub eject_after: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub eject_for: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub retry_after: Option<Duration>,
    pub shutdown_event: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub drain_spread: Option<Duration>,
    /// The host's root `client_tls`, which it puts here (an operator writes it at the root).
    pub client_tls: Option<tls_config::RawClientTls>,
}

/// The block's own keys (the names of [`BlockKeys`]' fields), to split the top of the block.
pub fn block_keys() -> &'static [&'static str] {
    field_names::<BlockKeys>()
}

/// A route's keys (the names of [`RouteKeys`]' fields), also the block's route defaults.
pub fn route_keys_names() -> &'static [&'static str] {
    field_names::<RouteKeys>()
}

/// The names of a struct's fields as its derived `Deserialize` hands them to serde
/// (`deserialize_struct`'s `fields`), so no list of them is written twice.
fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{value::Error, Error as _, Visitor};
    struct Names(&'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for &mut Names {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            self.0 = fields;
            Err(Error::custom("names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut names = Names(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// Whether a host is a Kafka broker (the route is then a topic).
    pub fn is_kafka(&self) -> bool {
        match self {
            OneOrMany::One(host) => host.starts_with("kafka://"),
            OneOrMany::Many(hosts) => hosts.iter().any(|h| h.starts_with("kafka://")),
        }
    }

    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// `load_balance`: how a route orders its hosts (the sticky key is a key of its own).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(try_from = "String")]
pub(super) enum Balancing {
    RoundRobin,
    Sticky,
}

/// A value that is none of the choices a key takes.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not {choices}")]
pub struct NotOneOf {
    value: String,
    choices: &'static str,
}

impl TryFrom<String> for Balancing {
    type Error = NotOneOf;
    fn try_from(value: String) -> Result<Self, NotOneOf> {
        match value.as_str() {
            "round_robin" => Ok(Balancing::RoundRobin),
            "sticky" => Ok(Balancing::Sticky),
            _ => Err(NotOneOf {
                value,
                choices: "\"round_robin\" or \"sticky\"",
            }),
        }
    }
}

impl TryFrom<String> for StickyKey {
    type Error = NotOneOf;
    fn try_from(text: String) -> Result<Self, NotOneOf> {
        match text.split_once(':') {
            Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                Ok(StickyKey::Header(name.to_owned()))
            }
            Some(("cookie", name)) if !name.is_empty() => Ok(StickyKey::Cookie(name.to_owned())),
            None if text == "ip" => Ok(StickyKey::Ip),
            _ => Err(NotOneOf {
                value: text,
                choices: "\"header:NAME\", \"cookie:NAME\" or \"ip\"",
            }),
        }
    }
}

impl TryFrom<String> for StartFrom {
    type Error = NotOneOf;
    fn try_from(value: String) -> Result<Self, NotOneOf> {
        match value.as_str() {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            _ => Err(NotOneOf {
                value,
                choices: "\"earliest\" or \"latest\"",
            }),
        }
    }
}

impl Balancing {
    /// With the route's `sticky_key`; `None` when sticky balancing has no key.
    pub fn with(self, sticky_key: Option<StickyKey>) -> Option<LoadBalance> {
        match (self, sticky_key) {
            (Balancing::RoundRobin, _) => Some(LoadBalance::RoundRobin),
            (Balancing::Sticky, Some(key)) => Some(LoadBalance::Sticky(key)),
            (Balancing::Sticky, None) => None,
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    config_values::duration::deserialize_opt(d)
}

/// The top of the block, split: the block's own keys, and the route keys written there.
pub(super) fn split(json: &str) -> Result<(BlockKeys, Map<String, Value>), ConfigError> {
    let all: Map<String, Value> = serde_json::from_str(json).map_err(ConfigError::Json)?;
    let (block, routes): (Map<_, _>, Map<_, _>) = all
        .into_iter()
        .partition(|(key, _)| block_keys().contains(&key.as_str()));
    let block = read(Value::Object(block), "")?;
    Ok((block, routes))
}

/// The keys of the route written at `at` (`routes[0].`, or `""` for the PoC's form), with
/// the block's `defaults` where it has none of its own. The defaults were read on their
/// own first (at the top of the block), so an error here is the route's own key.
pub(super) fn route_keys(
    defaults: &Map<String, Value>,
    route: Value,
    at: &str,
) -> Result<RouteKeys, ConfigError> {
    let Value::Object(own) = route else {
        // Not an object: serde says so, at the route's path.
        return read(route, at);
    };
    let mut merged = defaults.clone();
    merged.extend(own);
    read(Value::Object(merged), at)
}

/// `value` as a `T`; a refusal names the key under `at`.
pub(super) fn read<T: for<'de> Deserialize<'de>>(value: Value, at: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| from_serde(at, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_lists_are_the_fields_serde_reads() {
        assert_eq!(block_keys().len(), 11);
        assert!(block_keys().contains(&"max_event_bytes"));
        assert!(route_keys_names().contains(&"endpoint"));
        assert!(route_keys_names().contains(&"max_catch_ups"));
        let every: Map<String, Value> = block_keys()
            .iter()
            .map(|key| (key.to_string(), Value::Null))
            .collect();
        let read: Result<BlockKeys, _> = read(Value::Object(every), "");
        assert!(read.is_ok(), "{:?}", read.err());
    }
}
