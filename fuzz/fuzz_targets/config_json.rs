//! `host::config::parse` over JSON documents built from the input in the shape of a
//! `krakend.json` (its keys, and values of every type, mostly plausible ones), so that the
//! fuzzer spends its time in validation rather than in JSON syntax. The text is valid
//! JSON, so it must never be a syntax error; the rest is `reference::config::check`.

#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "version",
    "port",
    "listen_ip",
    "timeout",
    "max_header_bytes",
    "read_header_timeout",
    "idle_timeout",
    "shutdown_timeout",
    "max_backend_response_bytes",
    "client_send_buffer",
    "plugin",
    "pattern",
    "folder",
    "extra_config",
    "plugin/http-server",
    "name",
    "static-filesystem",
    "prefix",
    "path",
    "krakend-server-plugin-streaming",
    "security/cors",
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
    "telemetry/metrics",
    "listen_address",
    "telemetry/logging",
    "level",
    "stdout",
    "endpoints",
    "endpoint",
    "method",
    "output_encoding",
    "input_headers",
    "input_query_strings",
    "backend",
    "host",
    "url_pattern",
    "encoding",
    "is_collection",
    "target",
    "allow",
    "deny",
    "mapping",
    "group",
    "auth/validator",
    "alg",
    "jwk_url",
    "jwk_local_path",
    "cache_duration",
    "audience",
    "issuer",
    "roles_key",
    "roles",
    "cookie_key",
    "qos/ratelimit/router",
    "max_rate",
    "capacity",
    "client_max_rate",
    "client_capacity",
    "every",
    "strategy",
    "key",
];

const STRINGS: &[&str] = &[
    "/sse/{id}",
    "/a/*",
    "/{a}/{a}",
    "/x/{id}",
    "sse",
    "/",
    "http://127.0.0.1:1",
    "http://h:1/",
    "http://h/x",
    "ftp://x",
    "https://h",
    "http://",
    "1s",
    "500ms",
    "1m30s",
    "0",
    "-1s",
    "2 seconds",
    "json",
    "no-op",
    "xml",
    "GET",
    "post",
    "P O",
    "*",
    "static-filesystem",
    "krakend-server-plugin-streaming",
    "RS256",
    "HS999",
    "ip",
    "header",
    "DEBUG",
    "loud",
    ":8090",
    "127.0.0.1:0",
    "/nonexistent/jwks.json",
    "",
];

fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let leaf = depth >= 4;
    Ok(match u.int_in_range(0..=if leaf { 5 } else { 7 })? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(
            u.choose(&[0i64, 1, 2, 3, 4, 65535, 65536, -1, i64::MAX])?
                .to_owned(),
        ),
        3 => Value::from(
            u.arbitrary::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .unwrap_or(1.5),
        ),
        4 => Value::from(*u.choose(STRINGS)?),
        5 => Value::from(u.arbitrary::<&str>()?),
        6 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| value(u, depth + 1))
                .collect::<Result<_>>()?,
        ),
        _ => object(u, depth + 1)?,
    })
}

/// Mostly the type the key takes, so that documents get past deserialization.
fn value_for(u: &mut Unstructured, key: &str, depth: u32) -> Result<Value> {
    if depth >= 6 || u.ratio(1, 4)? {
        return value(u, depth + 1);
    }
    let strings = |u: &mut Unstructured| -> Result<Value> {
        let n = u.int_in_range(0..=3)?;
        Ok(Value::Array(
            (0..n)
                .map(|_| u.choose(STRINGS).map(|s| Value::from(*s)))
                .collect::<Result<_>>()?,
        ))
    };
    Ok(match key {
        "endpoints" | "backend" => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| object(u, depth + 1))
                .collect::<Result<_>>()?,
        ),
        "host"
        | "name"
        | "allow_origins"
        | "allow_methods"
        | "allow_headers"
        | "roles"
        | "input_headers"
        | "input_query_strings"
        | "allow"
        | "deny"
        | "audience" => strings(u)?,
        "extra_config"
        | "plugin"
        | "plugin/http-server"
        | "static-filesystem"
        | "krakend-server-plugin-streaming"
        | "security/cors"
        | "telemetry/metrics"
        | "telemetry/logging"
        | "auth/validator"
        | "qos/ratelimit/router"
        | "mapping" => object(u, depth + 1)?,
        _ => value(u, depth + 1)?,
    })
}

fn object(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let key = match u.ratio(9, 10)? {
            true => (*u.choose(KEYS)?).to_owned(),
            false => u.arbitrary::<String>()?,
        };
        let v = value_for(u, &key, depth)?;
        map.insert(key, v);
    }
    Ok(Value::Object(map))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(Value::Object(mut document)) = object(&mut u, 0) else {
        return;
    };
    if u.ratio(7, 8).unwrap_or(true) {
        document.insert("version".into(), Value::from(3));
    }
    reference::config::check(&Value::Object(document).to_string());
});
