//! `sse-server [--addr 127.0.0.1:9081]`: the demo SSE origin.

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(name = "sse-server", about = "SSE origin: GET /events-stream/{id}")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9081")]
    addr: String,
    /// Events per stream (default: endless).
    #[arg(long)]
    count: Option<u64>,
    /// Milliseconds between events.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// The retry: value sent at the start of each stream, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    retry_ms: u64,
    /// Events per second of the /broadcast/{id} ticker (0: off).
    #[arg(long, default_value_t = 0)]
    broadcast_rate: u64,
    /// Bytes per broadcast event.
    #[arg(long, default_value_t = 100)]
    broadcast_size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    println!("sse-server listening on {}", listener.local_addr()?);
    let settings = sse_server::Settings {
        count: args.count,
        interval: Duration::from_millis(args.interval_ms),
        retry_ms: args.retry_ms,
        broadcast_rate: args.broadcast_rate,
        broadcast_size: args.broadcast_size,
    };
    sse_server::run(listener, settings, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
