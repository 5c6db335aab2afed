//! `sse-load URL -c N -d 15s`: the benchmark's load generator (see `client::load`).

use std::net::ToSocketAddrs;
use std::time::Duration;

use clap::Parser;
use client::load::{run, LoadOptions};

#[derive(Parser)]
#[command(
    name = "sse-load",
    about = "Open N SSE streams and measure per-event latency"
)]
struct Args {
    /// http://host:port/path?query of the stream.
    url: String,
    /// Concurrent streams.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// How long to run, in seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Report the peak resident memory of this process (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Add the latency histogram's values to the report, `[[ns, count], ...]`, for merging
    /// the reports of several load processes.
    #[arg(long)]
    histogram: bool,
    /// Connect from this address (127.0.0.2, ...: each source address has its own
    /// ephemeral ports).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Seconds at the start (while streams connect) whose events are not timed.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs"))?;
    let (authority, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{authority} does not resolve"))?;
    let options = LoadOptions {
        addr,
        target: if target.is_empty() {
            "/".into()
        } else {
            target.into()
        },
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        connect_concurrency: args.connect_concurrency,
        pids: args.pids,
        source: args.source,
        warmup: Duration::from_secs_f64(args.warmup),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(options));
    let mut json = report.to_json();
    if args.histogram {
        json["latency_histogram_ns"] = report.histogram_json();
    }
    if args.json {
        println!("{json}");
    } else {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}
