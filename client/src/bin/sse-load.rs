//! `sse-load URL -c N -d 15s [--cacert FILE | --insecure] [--http2 | --h2c]`: the
//! benchmark's load generator (see `client::load`).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use client::load::{run, Http2, LoadOptions, StreamUrl, Transport, Trust};

#[derive(Parser)]
#[command(
    name = "sse-load",
    about = "Open N SSE streams and measure per-event latency",
    group(ArgGroup::new("multiplexed").args(["http2", "h2c"]))
)]
struct Args {
    /// http(s)://host:port/path?query of the stream.
    url: String,
    /// Concurrent streams (over HTTP/1.1 each on its own connection).
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// How long to run, in seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Count the duration from the moment every stream's first connection has been tried
    /// (connected or failed), so that all of them are held for the whole duration however
    /// long connecting takes; only the events received from then on are timed. That moment
    /// goes to stderr as "sse-load: every stream tried after S s: N open, M failed".
    #[arg(long)]
    after_connect: bool,
    /// With --after-connect: after that line, wait for a line on stdin (or its end) before
    /// the duration starts, so that several load processes start timing together.
    #[arg(long, requires = "after_connect")]
    start_on_stdin: bool,
    /// Connection attempts (with their TLS and HTTP/2 handshakes) in flight at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// https://: trust only the CA certificates in this PEM file, as curl's --cacert.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    cacert: Option<PathBuf>,
    /// https://: accept any server certificate (the handshake's signatures are still
    /// checked, so it costs what a verified one does).
    #[arg(short = 'k', long)]
    insecure: bool,
    /// HTTP/2 over TLS, negotiated by ALPN h2 (an https:// URL), as browsers speak it.
    #[arg(long)]
    http2: bool,
    /// Cleartext HTTP/2 with prior knowledge (an http:// URL).
    #[arg(long)]
    h2c: bool,
    /// With --http2 or --h2c: streams multiplexed on each connection. 100 is RFC 9113's
    /// smallest recommended max_concurrent_streams (and the gateway's default): a browser
    /// puts every EventSource of an origin on one connection.
    #[arg(
        long,
        value_name = "N",
        default_value = "100",
        requires = "multiplexed"
    )]
    streams_per_conn: NonZeroUsize,
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
    /// Add the latency histogram's values to the JSON report, `[[ns, count], ...]`, to
    /// merge the reports of several load processes exactly.
    #[arg(long)]
    histogram: bool,
    /// Connect from this address: each source address has its own ephemeral ports, so
    /// load processes from 127.0.0.2, 127.0.0.3, ... open past one address's ~28,000.
    #[arg(long)]
    source: Option<std::net::IpAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url: StreamUrl = args.url.parse()?;
    let trust = match (args.cacert, args.insecure) {
        (Some(ca), _) => Some(Trust::Ca(ca)),
        (None, true) => Some(Trust::Insecure),
        (None, false) => None,
    };
    let http2 = match (args.http2, args.h2c) {
        (true, _) => Some(Http2::OverTls),
        (_, true) => Some(Http2::Cleartext),
        _ => None,
    };
    let mut transport = Transport::choose(&url, trust, http2.map(|h| (h, args.streams_per_conn)))?;
    transport.source = args.source;
    let options = LoadOptions {
        addr: url.resolve()?,
        url,
        transport,
        streams: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        after_connect: args.after_connect,
        start_on_stdin: args.start_on_stdin,
        connect_concurrency: args.connect_concurrency,
        pids: args.pids,
        reconnect: args.reconnect,
        expect_every: args.expect_every.map(Duration::from_secs_f64),
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
