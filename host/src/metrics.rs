//! Prometheus metrics, served when the root `extra_config."telemetry/metrics"` is present
//! (`listen_address`, default `:8090`) at `GET /metrics` on their own listener: request
//! counts and latency histograms per endpoint, method and status, the client connections
//! open and refused, and every plugin's numeric stream counters from its `stats()`; and
//! the plugins' `stats()` themselves as JSON at [`STATS_PATH`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::accept::Acceptor;
use crate::connections::Connections;
use crate::protect::Answer;
use crate::shared::Shared;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
}

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    /// Observations at or below each bound of [`BUCKETS`].
    buckets: [u64; BUCKETS.len()],
}

impl Metrics {
    /// Counts one answered request; `endpoint` is the matched template (`unmatched` if none).
    pub fn record(&self, endpoint: &str, method: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = series
            .entry((endpoint.to_owned(), method.to_owned(), status))
            .or_default();
        s.count += 1;
        s.sum += secs;
        for (bucket, bound) in s.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
    }

    /// The Prometheus text exposition, with the client `connections` and `plugins` (from
    /// `ServerPlugins::stats`).
    pub fn render(&self, plugins: &Value, connections: &Connections) -> String {
        let mut out = String::new();
        render_connections(&mut out, connections);
        out.push_str("# TYPE krakend_requests_total counter\n");
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for ((endpoint, method, status), s) in series.iter() {
            let labels = format!(
                "endpoint=\"{}\",method=\"{}\",status=\"{status}\"",
                escape(endpoint),
                escape(method)
            );
            let _ = writeln!(out, "krakend_requests_total{{{labels}}} {}", s.count);
        }
        out.push_str("# TYPE krakend_request_duration_seconds histogram\n");
        for ((endpoint, method, status), s) in series.iter() {
            let labels = format!(
                "endpoint=\"{}\",method=\"{}\",status=\"{status}\"",
                escape(endpoint),
                escape(method)
            );
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "krakend_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "krakend_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "krakend_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "krakend_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        drop(series);
        render_plugins(&mut out, plugins);
        out
    }
}

fn render_connections(out: &mut String, connections: &Connections) {
    let _ = writeln!(
        out,
        "# TYPE krakend_connections_open gauge\nkrakend_connections_open {}",
        connections.count()
    );
    let _ = writeln!(
        out,
        "# TYPE krakend_connections_max gauge\nkrakend_connections_max {}",
        connections.limit()
    );
    let _ = writeln!(
        out,
        "# TYPE krakend_connections_refused_total counter\nkrakend_connections_refused_total {}",
        connections.refused()
    );
    let _ = writeln!(
        out,
        "# TYPE krakend_connections_silent_closed_total counter\nkrakend_connections_silent_closed_total {}",
        connections.silent()
    );
}

/// Each plugin's numbers as `krakend_plugin_<name>{plugin=...}`; the numbers of its
/// `routes[]` entries get a `route` label, a nested object (such as `drops`) becomes
/// one series per key, labelled `reason`, and one that holds a histogram
/// (`{"le": [bounds], "buckets": [counts], "count", "sum"}`) a Prometheus histogram.
fn render_plugins(out: &mut String, stats: &Value) {
    let Some(plugins) = stats["plugins"].as_object() else {
        return;
    };
    for (plugin, stats) in plugins {
        let base = format!("plugin=\"{}\"", escape(plugin));
        numbers(out, stats, &base);
        for route in stats["routes"].as_array().into_iter().flatten() {
            let endpoint = route["endpoint"].as_str().unwrap_or("");
            numbers(
                out,
                route,
                &format!("{base},route=\"{}\"", escape(endpoint)),
            );
        }
    }
}

fn numbers(out: &mut String, object: &Value, labels: &str) {
    for (key, value) in object.as_object().into_iter().flatten() {
        let name = format!("krakend_plugin_{}", sanitize(key));
        match value {
            Value::Number(n) => {
                let _ = writeln!(out, "{name}{{{labels}}} {n}");
            }
            Value::Object(inner) if inner.contains_key("le") => {
                histogram(out, &name, inner, labels)
            }
            Value::Object(inner) => {
                for (reason, n) in inner.iter().filter(|(_, n)| n.is_number()) {
                    let _ = writeln!(out, "{name}{{{labels},reason=\"{}\"}} {n}", escape(reason));
                }
            }
            _ => {}
        }
    }
}

/// A plugin's histogram: `_bucket` per bound (the counts at or below it) and `+Inf`,
/// `_sum` and `_count`. One whose bounds and counts do not pair up is left out.
fn histogram(
    out: &mut String,
    name: &str,
    histogram: &serde_json::Map<String, Value>,
    labels: &str,
) {
    let bounds = histogram["le"].as_array();
    let buckets = histogram.get("buckets").and_then(Value::as_array);
    let (Some(bounds), Some(buckets)) = (bounds, buckets) else {
        return;
    };
    if bounds.len() != buckets.len() || !bounds.iter().chain(buckets).all(Value::is_number) {
        return;
    }
    let count = histogram.get("count").cloned().unwrap_or(Value::Null);
    let sum = histogram.get("sum").cloned().unwrap_or(Value::Null);
    if !count.is_number() || !sum.is_number() {
        return;
    }
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, n) in bounds.iter().zip(buckets) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Where the plugins' counters are served, as JSON, on the metrics listener only: they
/// name routes and hosts, which is nothing for the public port to tell.
pub const STATS_PATH: &str = "/__stats";

/// Connections the metrics listener serves at once: a few scrapers, and never the
/// descriptors client connections need.
pub const MAX_METRICS_CONNECTIONS: usize = 16;
/// How long a metrics connection may stay open: a scrape takes milliseconds, and a
/// silent connection must not hold one of the few places.
const METRICS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` (Prometheus text) from `listener` until the process ends, to at
/// most [`MAX_METRICS_CONNECTIONS`] at once, so that it answers when clients have taken
/// every connection they may.
pub async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>) {
    let places = Arc::new(Connections::new(MAX_METRICS_CONNECTIONS));
    let mut acceptor = Acceptor::new(listener, places, "Metrics");
    loop {
        let (stream, _, slot) = acceptor.accept().await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let response = match request.uri().path() {
                        "/metrics" => {
                            let text = shared
                                .metrics
                                .render(&shared.plugins.stats(), &shared.connections);
                            let mut response =
                                http::Response::new(crate::pipeline::full_text(text));
                            response.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("text/plain; version=0.0.4"),
                            );
                            response
                        }
                        STATS_PATH => crate::pipeline::json(shared.plugins.stats()),
                        _ => crate::pipeline::answer(Answer::new(
                            StatusCode::NOT_FOUND,
                            "not found\n",
                        )),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(METRICS_CONNECTION_TIMEOUT, connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_requests_and_plugin_counters() {
        let metrics = Metrics::default();
        let connections = std::sync::Arc::new(Connections::new(1));
        let _open = connections.try_open();
        let refused = connections.try_open();
        assert!(refused.is_none());
        metrics.record("/api/{id}", "GET", 200, Duration::from_millis(20));
        metrics.record("/api/{id}", "GET", 200, Duration::from_millis(700));
        let text = metrics.render(
            &json!({"plugins": {"streaming": {"active": 3, "routes": [
                {"endpoint": "/sse/{id}", "events": 42, "drops": {"client_stalled": 1}, "hosts": [],
                 "first_event_seconds": {"le": [0.1, 1.0], "buckets": [1, 3], "count": 4, "sum": 7.5}}
            ]}}}),
            &connections,
        );
        let labels = r#"endpoint="/api/{id}",method="GET",status="200""#;
        for line in [
            format!("krakend_requests_total{{{labels}}} 2"),
            format!("krakend_request_duration_seconds_bucket{{{labels},le=\"0.025\"}} 1"),
            format!("krakend_request_duration_seconds_bucket{{{labels},le=\"1\"}} 2"),
            format!("krakend_request_duration_seconds_count{{{labels}}} 2"),
            r#"krakend_plugin_active{plugin="streaming"} 3"#.to_owned(),
            r#"krakend_plugin_events{plugin="streaming",route="/sse/{id}"} 42"#.to_owned(),
            r#"krakend_plugin_drops{plugin="streaming",route="/sse/{id}",reason="client_stalled"} 1"#.to_owned(),
            "# TYPE krakend_plugin_first_event_seconds histogram".to_owned(),
            r#"krakend_plugin_first_event_seconds_bucket{plugin="streaming",route="/sse/{id}",le="0.1"} 1"#.to_owned(),
            r#"krakend_plugin_first_event_seconds_bucket{plugin="streaming",route="/sse/{id}",le="1.0"} 3"#.to_owned(),
            r#"krakend_plugin_first_event_seconds_bucket{plugin="streaming",route="/sse/{id}",le="+Inf"} 4"#.to_owned(),
            r#"krakend_plugin_first_event_seconds_sum{plugin="streaming",route="/sse/{id}"} 7.5"#.to_owned(),
            r#"krakend_plugin_first_event_seconds_count{plugin="streaming",route="/sse/{id}"} 4"#.to_owned(),
            "krakend_connections_open 1".to_owned(),
            "krakend_connections_max 1".to_owned(),
            "krakend_connections_refused_total 1".to_owned(),
            "krakend_connections_silent_closed_total 0".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\nnot in\n{text}");
        }
    }
}
