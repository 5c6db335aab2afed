//! `client URL`: prints each event of an SSE stream as it arrives, reconnecting with
//! `Last-Event-ID` after a drop.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use client::{subscribe, Notice, Options};

#[derive(Parser)]
#[command(name = "client", about = "SSE client that resumes with Last-Event-ID")]
struct Args {
    url: String,
    /// One JSON object per event: {"id", "event", "data"}.
    #[arg(long)]
    json: bool,
    /// Stop after this many events.
    #[arg(long)]
    max_events: Option<u64>,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Reconnection delay until the server sends retry:, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    retry_ms: u64,
    /// Give up after this many reconnections in a row without an event (default: never).
    #[arg(long)]
    max_reconnects: Option<u32>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        headers: args.headers,
        max_events: args.max_events,
        default_retry: Duration::from_millis(args.retry_ms),
        max_reconnects: args.max_reconnects,
    };
    let mut stdout = std::io::stdout().lock();
    let result = subscribe(&args.url, &options, |notice| match notice {
        Notice::Connected => eprintln!("connected to {}", args.url),
        Notice::Reconnecting {
            after,
            last_event_id,
            reason,
        } => {
            eprintln!("{reason}; reconnecting in {after:?} with Last-Event-ID {last_event_id:?}");
        }
        Notice::Event(event) => {
            let _ = if args.json {
                let line =
                    serde_json::json!({"id": event.id, "event": event.event, "data": event.data});
                writeln!(stdout, "{line}")
            } else {
                writeln!(
                    stdout,
                    "event={} id={} data={}",
                    event.event, event.id, event.data
                )
            };
            let _ = stdout.flush();
        }
    })
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::FAILURE
        }
    }
}
