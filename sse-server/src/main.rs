//! `sse-server [--addr 127.0.0.1:9081]`: the demo SSE origin and the LLM-style mock.

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sse-server",
    about = "SSE origin: GET /events-stream/{id}; mock: POST /v1/chat/completions, /ndjson/{id}"
)]
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
    /// The largest request body read; larger gets 413.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Milliseconds a request body may take to arrive; slower gets 408.
    #[arg(long, default_value_t = 10_000)]
    body_timeout_ms: u64,
    /// How many of the last requests GET /mock/requests shows.
    #[arg(long, default_value_t = 64)]
    recorded_requests: usize,
    /// Answer the mock endpoints with this status instead of serving them.
    #[arg(long, value_parser = parse_status)]
    fail_status: Option<http::StatusCode>,
    /// Only the first N mock requests get --fail-status (default: every one).
    #[arg(long, requires = "fail_status")]
    fail_count: Option<u64>,
}

fn parse_status(text: &str) -> Result<http::StatusCode, String> {
    text.parse::<u16>()
        .ok()
        .and_then(|code| http::StatusCode::from_u16(code).ok())
        .filter(|status| status.as_u16() >= 200)
        .ok_or_else(|| format!("{text} is not an HTTP status from 200 to 999"))
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
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        recorded_requests: args.recorded_requests,
        fail_status: args.fail_status,
        fail_count: args.fail_count,
    };
    sse_server::run(listener, settings, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
