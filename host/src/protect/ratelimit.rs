//! Rate limits per endpoint, `extra_config."qos/ratelimit/router"` (KrakenD's keys): token
//! buckets for the whole endpoint (`max_rate` per `every`, burst `capacity`: 503 beyond)
//! and per client (`client_max_rate`, `client_capacity`, client by `strategy` `ip` or
//! `header` `key`: 429 beyond). On a streaming route they count connection attempts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde::Deserialize;

use super::{Answer, RequestInfo};

/// Client buckets kept before full (idle) ones are forgotten: a full bucket is the same as
/// a new one, so forgetting it changes nothing but memory.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    max_rate: Option<f64>,
    capacity: Option<f64>,
    client_max_rate: Option<f64>,
    client_capacity: Option<f64>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    every: Option<Duration>,
    strategy: Option<String>,
    key: Option<String>,
}

#[derive(Debug)]
pub struct RateLimit {
    endpoint: Option<(Limit, Mutex<Bucket>)>,
    client: Option<(Limit, ClientKey, Mutex<ClientBuckets>)>,
}

/// One bucket per client key.
type ClientBuckets = HashMap<Vec<u8>, Bucket>;

#[derive(Debug, Clone, Copy)]
struct Limit {
    per_sec: f64,
    capacity: f64,
}

#[derive(Debug)]
enum ClientKey {
    Ip,
    Header(String),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: Limit, now: Instant) -> Self {
        Self {
            tokens: limit.capacity,
            at: now,
        }
    }

    fn refill(&mut self, limit: Limit, now: Instant) {
        let earned = now.duration_since(self.at).as_secs_f64() * limit.per_sec;
        self.tokens = (self.tokens + earned).min(limit.capacity);
        self.at = now;
    }

    fn take(&mut self, limit: Limit, now: Instant) -> bool {
        self.refill(limit, now);
        let ok = self.tokens >= 1.0;
        if ok {
            self.tokens -= 1.0;
        }
        ok
    }
}

impl RateLimit {
    pub fn new(config: RateLimitConfig) -> Result<Self, String> {
        let every = config.every.unwrap_or(Duration::from_secs(1));
        if every.is_zero() {
            return Err("every: must be more than zero".into());
        }
        let limit = |rate: Option<f64>,
                     capacity: Option<f64>,
                     key: &str|
         -> Result<Option<Limit>, String> {
            match rate {
                None => Ok(None),
                Some(rate) if rate <= 0.0 => Err(format!("{key}: must be more than zero")),
                Some(rate) => Ok(Some(Limit {
                    per_sec: rate / every.as_secs_f64(),
                    capacity: capacity.unwrap_or(rate).max(1.0),
                })),
            }
        };
        let now = Instant::now();
        let endpoint = limit(config.max_rate, config.capacity, "max_rate")?
            .map(|l| (l, Mutex::new(Bucket::full(l, now))));
        let key = match (config.strategy.as_deref(), config.key) {
            (None | Some("ip"), _) => ClientKey::Ip,
            (Some("header"), Some(name)) if !name.is_empty() => ClientKey::Header(name),
            (Some("header"), _) => {
                return Err(
                    "key: the header to count clients by is required with strategy \"header\""
                        .into(),
                )
            }
            (Some(other), _) => {
                return Err(format!("strategy: {other:?} is not \"ip\" or \"header\""))
            }
        };
        let client = limit(
            config.client_max_rate,
            config.client_capacity,
            "client_max_rate",
        )?
        .map(|l| (l, key, Mutex::new(HashMap::new())));
        if endpoint.is_none() && client.is_none() {
            return Err("set max_rate, client_max_rate or both".into());
        }
        Ok(Self { endpoint, client })
    }

    pub fn check(&self, request: &RequestInfo<'_>) -> Result<(), Answer> {
        let now = Instant::now();
        if let Some((limit, key, clients)) = &self.client {
            let id = match key {
                ClientKey::Ip => request.peer.to_string().into_bytes(),
                // Requests without the header share one bucket.
                ClientKey::Header(name) => request.headers.get(name).unwrap_or_default().to_vec(),
            };
            let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
            if clients.len() >= MAX_CLIENTS {
                clients.retain(|_, bucket| {
                    bucket.refill(*limit, now);
                    bucket.tokens < limit.capacity
                });
            }
            let bucket = clients
                .entry(id)
                .or_insert_with(|| Bucket::full(*limit, now));
            if !bucket.take(*limit, now) {
                return Err(Answer::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "client rate limit exceeded\n",
                ));
            }
        }
        if let Some((limit, bucket)) = &self.endpoint {
            let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
            if !bucket.take(*limit, now) {
                return Err(Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "endpoint rate limit exceeded\n",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn limit(json: &str) -> RateLimit {
        RateLimit::new(serde_json::from_str(json).unwrap()).unwrap()
    }

    fn request(ip: u8) -> (IpAddr, http::HeaderMap) {
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip)),
            http::HeaderMap::new(),
        )
    }

    fn status(limit: &RateLimit, ip: u8) -> u16 {
        let (peer, headers) = request(ip);
        let info = RequestInfo {
            method: "GET",
            peer,
            headers: &headers,
        };
        limit
            .check(&info)
            .map_or_else(|a| a.status.as_u16(), |()| 200)
    }

    #[test]
    fn clients_get_429_before_the_endpoint_gets_503() {
        let l = limit(r#"{"max_rate": 3, "client_max_rate": 2, "every": "1h"}"#);
        assert_eq!(
            [status(&l, 1), status(&l, 1), status(&l, 1)],
            [200, 200, 429]
        );
        assert_eq!([status(&l, 2), status(&l, 3)], [200, 503]);
    }

    #[test]
    fn refuses_bad_blocks() {
        for (json, error) in [
            (r#"{}"#, "set max_rate"),
            (r#"{"max_rate": 0}"#, "max_rate: must be more than zero"),
            (
                r#"{"client_max_rate": 1, "strategy": "header"}"#,
                "key: the header",
            ),
            (
                r#"{"client_max_rate": 1, "strategy": "cookie"}"#,
                "strategy: \"cookie\"",
            ),
        ] {
            let err = RateLimit::new(serde_json::from_str(json).unwrap()).unwrap_err();
            assert!(err.contains(error), "{json}: {err}");
        }
    }
}
