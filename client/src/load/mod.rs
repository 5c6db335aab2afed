//! Load mode: N SSE connections at once, every event's delivery latency in an HDR
//! histogram, and what went wrong (failed connects, streams cut early, id gaps).
//!
//! It runs on one thread so that on a small machine it takes one core and leaves the rest
//! to the origin and the proxy under test.

mod scan;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use sse::stamp::monotonic_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use scan::{EventScanner, Stamped};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub addr: SocketAddr,
    /// Path and query of the stream, e.g. `/bench/x?rate=20&size=100`.
    pub target: String,
    pub connections: usize,
    pub duration: Duration,
    /// Connection attempts in flight at once, so the listen backlog is not the test.
    pub connect_concurrency: usize,
    /// Processes whose peak resident memory to report.
    pub pids: Vec<u32>,
}

/// What a load run measured.
#[derive(Debug)]
pub struct Report {
    pub connections_ok: u64,
    pub connections_failed: u64,
    pub events: u64,
    pub seconds: f64,
    pub latency_ns: Histogram<u64>,
    pub premature_disconnects: u64,
    pub id_gaps: u64,
    /// (pid, peak VmRSS in KiB while the load ran)
    pub max_rss_kib: Vec<(u32, u64)>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        let q = |quantile| self.latency_ns.value_at_quantile(quantile) as f64 / 1000.0;
        serde_json::json!({
            "connections_ok": self.connections_ok,
            "connections_failed": self.connections_failed,
            "events": self.events,
            "events_per_sec": self.events as f64 / self.seconds,
            "latency_us": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": self.latency_ns.max() as f64 / 1000.0},
            "premature_disconnects": self.premature_disconnects,
            "id_gaps": self.id_gaps,
            "max_rss_kib": self.max_rss_kib.iter().map(|(pid, kib)| serde_json::json!({"pid": pid, "kib": kib})).collect::<Vec<_>>(),
        })
    }
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    events: AtomicU64,
    premature: AtomicU64,
    gaps: AtomicU64,
}

/// Runs the load; returns when `duration` has passed.
pub async fn run(options: LoadOptions) -> Report {
    let started = Instant::now();
    let deadline = started + options.duration;
    let counters = Arc::new(Counters::default());
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3)
            .expect("valid histogram bounds"),
    ));
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        options.target, options.addr
    )
    .into_bytes()
    .into();
    let connecting = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let rss = tokio::spawn(sample_rss(options.pids.clone(), deadline));
    let streams: Vec<_> = (0..options.connections)
        .map(|_| {
            let (counters, histogram, request, connecting) = (
                counters.clone(),
                histogram.clone(),
                request.clone(),
                connecting.clone(),
            );
            tokio::spawn(async move {
                let permit = connecting
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let outcome = tokio::time::timeout_at(
                    deadline,
                    follow(options.addr, &request, permit, &counters, &histogram),
                )
                .await;
                if let Ok(Err(())) = outcome {
                    counters.premature.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for stream in streams {
        let _ = stream.await;
    }
    let max_rss_kib = rss.await.unwrap_or_default();
    let latency_ns = std::mem::replace(&mut *histogram.lock().unwrap(), Histogram::new(1).unwrap());
    Report {
        connections_ok: counters.ok.load(Ordering::Relaxed),
        connections_failed: counters.failed.load(Ordering::Relaxed),
        events: counters.events.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        latency_ns,
        premature_disconnects: counters.premature.load(Ordering::Relaxed),
        id_gaps: counters.gaps.load(Ordering::Relaxed),
        max_rss_kib,
    }
}

/// One stream until it ends; `Err` when it ended (or failed) before the deadline cut it.
async fn follow(
    addr: SocketAddr,
    request: &[u8],
    permit: tokio::sync::OwnedSemaphorePermit,
    counters: &Counters,
    histogram: &Mutex<Histogram<u64>>,
) -> Result<(), ()> {
    let Ok((mut stream, rest, chunked)) = open(addr, request).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    drop(permit);
    counters.ok.fetch_add(1, Ordering::Relaxed);
    let mut decoder = chunked::Decoder::default();
    let mut scanner = EventScanner::default();
    let mut last_id: Option<u64> = None;
    let mut latencies = Vec::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = rest;
    loop {
        let now = monotonic_ns();
        let mut on_event = |event: Stamped| {
            latencies.push(now.saturating_sub(event.stamp_ns));
            if let (Some(id), Some(last)) = (event.id, last_id) {
                counters
                    .gaps
                    .fetch_add(id.saturating_sub(last + 1), Ordering::Relaxed);
            }
            last_id = event.id.or(last_id);
        };
        if chunked {
            decoder
                .decode(&pending, |r| scanner.feed(&pending[r], &mut on_event))
                .map_err(|_| ())?;
        } else {
            scanner.feed(&pending, &mut on_event);
        }
        if !latencies.is_empty() {
            counters
                .events
                .fetch_add(latencies.len() as u64, Ordering::Relaxed);
            let mut histogram = histogram.lock().unwrap();
            for latency in latencies.drain(..) {
                histogram.saturating_record(latency.max(1_000));
            }
        }
        let n = stream.read(&mut buf).await.map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        pending.clear();
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Connects, sends the request and reads the head: the stream, bytes past the head, and
/// whether the body is chunked. Anything but 200 is a failed connection.
async fn open(addr: SocketAddr, request: &[u8]) -> std::io::Result<(TcpStream, Vec<u8>, bool)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") && !text.starts_with("http/1.0 200") {
        return Err(std::io::Error::other(
            text.lines().next().unwrap_or("").to_owned(),
        ));
    }
    let chunked = text.contains("\r\ntransfer-encoding: chunked");
    Ok((stream, head.split_off(end), chunked))
}

/// Peak VmRSS of each pid, sampled every 100 ms until `deadline`.
async fn sample_rss(pids: Vec<u32>, deadline: Instant) -> Vec<(u32, u64)> {
    let mut peaks: Vec<(u32, u64)> = pids.iter().map(|&pid| (pid, 0)).collect();
    while Instant::now() < deadline && !peaks.is_empty() {
        for (pid, peak) in &mut peaks {
            if let Some(kib) = rss_kib(*pid) {
                *peak = (*peak).max(kib);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peaks
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
