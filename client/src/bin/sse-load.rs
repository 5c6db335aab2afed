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
    /// Count the duration from the moment every connection has been tried (connected or
    /// failed), so that all of them are held for the whole duration however long
    /// connecting takes.
    #[arg(long)]
    after_connect: bool,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Report the peak resident memory of this process (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Reconnect a stream that ends early, with Last-Event-ID, after its retry: (1 s
    /// without one), as EventSource does; ids are checked across the reconnections.
    #[arg(long)]
    reconnect: bool,
    /// Report how many streams received no event in the last SECONDS of the run.
    #[arg(long, value_name = "SECONDS")]
    expect_every: Option<f64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
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
        after_connect: args.after_connect,
        connect_concurrency: args.connect_concurrency,
        pids: args.pids,
        reconnect: args.reconnect,
        expect_every: args.expect_every.map(Duration::from_secs_f64),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(options));
    let json = report.to_json();
    if args.json {
        println!("{json}");
    } else {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}
