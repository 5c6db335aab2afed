//! Load mode: N SSE connections at once, every event's delivery latency in an HDR
//! histogram, and what went wrong: failed connects, streams cut early, and ids that do not
//! follow one another (gaps, duplicates, ids going back), also across reconnections with
//! `Last-Event-ID` when asked to reconnect as `EventSource` does.
//!
//! It runs on one thread so that on a small machine it takes one core and leaves the rest
//! to the origin and the proxy under test.

mod scan;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use sse::stamp::monotonic_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, Semaphore};

pub use scan::{EventScanner, IdCheck, Order, Received};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub addr: SocketAddr,
    /// Path and query of the stream, e.g. `/bench/x?rate=20&size=100`.
    pub target: String,
    pub connections: usize,
    pub duration: Duration,
    /// Count `duration` from the moment every stream's first connection attempt has ended
    /// (connected or failed), not from the start: a run of many clients on a loaded
    /// machine then holds them all connected for `duration`, however long connecting took.
    pub after_connect: bool,
    /// Connection attempts in flight at once, so the listen backlog is not the test.
    pub connect_concurrency: usize,
    /// Processes whose peak resident memory to report.
    pub pids: Vec<u32>,
    /// Reconnect a stream cut before the end, with `Last-Event-ID`, after its `retry:`
    /// (1 s without one), as `EventSource` does.
    pub reconnect: bool,
    /// Count the streams that received nothing in this last stretch of the run.
    pub expect_every: Option<Duration>,
}

/// What a load run measured.
#[derive(Debug)]
pub struct Report {
    pub connections_ok: u64,
    pub connections_failed: u64,
    pub events: u64,
    pub seconds: f64,
    pub latency_ns: Histogram<u64>,
    /// Streams cut before the end (each cut, when they reconnect).
    pub premature_disconnects: u64,
    /// Reconnections that got a stream again.
    pub reconnects: u64,
    /// Ids that never came between two that did.
    pub id_gaps: u64,
    /// Events whose id was the stream's highest so far: delivered twice.
    pub id_duplicates: u64,
    /// Events whose id was below the stream's highest so far.
    pub id_backwards: u64,
    /// Streams without an event in the last `expect_every` of the run.
    pub silent_streams: Option<u64>,
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
            "reconnects": self.reconnects,
            "id_gaps": self.id_gaps,
            "id_duplicates": self.id_duplicates,
            "id_backwards": self.id_backwards,
            "silent_streams": self.silent_streams,
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
    reconnects: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    backwards: AtomicU64,
}

/// What every stream of a run shares.
struct Shared {
    options: LoadOptions,
    counters: Counters,
    histogram: Mutex<Histogram<u64>>,
    /// Per stream, when it last received an event (CLOCK_MONOTONIC ns; 0: never).
    last_event_ns: Vec<AtomicU64>,
    /// Streams whose first connection attempt has ended; the last one wakes `all_tried`.
    tried: AtomicUsize,
    all_tried: Notify,
}

/// Runs the load; returns when `duration` has passed (from the start, or with
/// `after_connect` from the end of the connecting).
pub async fn run(options: LoadOptions) -> Report {
    let started = std::time::Instant::now();
    let connecting = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        last_event_ns: (0..options.connections)
            .map(|_| AtomicU64::new(0))
            .collect(),
        options,
        counters: Counters::default(),
        histogram: Mutex::new(
            Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3)
                .expect("valid histogram bounds"),
        ),
        tried: AtomicUsize::new(0),
        all_tried: Notify::new(),
    });
    let rss = tokio::spawn(sample_rss(shared.options.pids.clone(), stopped.clone()));
    let streams: Vec<_> = (0..shared.options.connections)
        .map(|index| {
            let (shared, connecting) = (shared.clone(), connecting.clone());
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let permit = connecting
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                tokio::select! {
                    () = follow(&shared, index, permit) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
            })
        })
        .collect();
    if shared.options.after_connect && shared.options.connections > 0 {
        shared.all_tried.notified().await;
    }
    tokio::time::sleep(shared.options.duration).await;
    let _ = stop.send(true);
    for stream in streams {
        let _ = stream.await;
    }
    let ended_ns = monotonic_ns();
    let max_rss_kib = rss.await.unwrap_or_default();
    let latency_ns = std::mem::replace(
        &mut *shared.histogram.lock().unwrap(),
        Histogram::new(1).unwrap(),
    );
    let counter = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = &shared.counters;
    Report {
        connections_ok: counter(&c.ok),
        connections_failed: counter(&c.failed),
        events: counter(&c.events),
        seconds: started.elapsed().as_secs_f64(),
        latency_ns,
        premature_disconnects: counter(&c.premature),
        reconnects: counter(&c.reconnects),
        id_gaps: counter(&c.gaps),
        id_duplicates: counter(&c.duplicates),
        id_backwards: counter(&c.backwards),
        silent_streams: shared.options.expect_every.map(|every| {
            let since = ended_ns.saturating_sub(every.as_nanos() as u64);
            shared
                .last_event_ns
                .iter()
                .filter(|t| counter(t) < since)
                .count() as u64
        }),
        max_rss_kib,
    }
}

/// One stream until the run stops it: connected, read, and with `reconnect` opened
/// again with `Last-Event-ID` each time it ends early.
async fn follow(shared: &Shared, index: usize, permit: tokio::sync::OwnedSemaphorePermit) {
    let (options, counters) = (&shared.options, &shared.counters);
    let mut permit = Some(permit);
    let mut scanner = EventScanner::default();
    let mut ids = IdCheck::default();
    let mut connected_before = false;
    loop {
        let opened = open(options, scanner.last_event_id()).await;
        if permit.take().is_some()
            && shared.tried.fetch_add(1, Ordering::Relaxed) + 1 == options.connections
        {
            // A stored permit: `run` may not be waiting yet.
            shared.all_tried.notify_one();
        }
        match opened {
            Err(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            Ok((stream, rest, chunked)) => {
                match std::mem::replace(&mut connected_before, true) {
                    false => &counters.ok,
                    true => &counters.reconnects,
                }
                .fetch_add(1, Ordering::Relaxed);
                read(shared, index, stream, rest, chunked, &mut scanner, &mut ids).await;
                counters.premature.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !options.reconnect {
            return;
        }
        let delay = scanner.retry_ms().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        scanner.restart();
    }
}

/// Reads one connection's stream until it ends or breaks, counting its events and
/// checking their ids.
async fn read(
    shared: &Shared,
    index: usize,
    mut stream: TcpStream,
    mut pending: Vec<u8>,
    chunked: bool,
    scanner: &mut EventScanner,
    ids: &mut IdCheck,
) {
    let counters = &shared.counters;
    let mut decoder = chunked::Decoder::default();
    let mut latencies = Vec::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = monotonic_ns();
        let mut events = 0;
        let mut on_event = |event: Received| {
            events += 1;
            if let Some(stamp_ns) = event.stamp_ns {
                latencies.push(now.saturating_sub(stamp_ns));
            }
            if let Some(id) = event.id {
                let (counter, n) = match ids.see(id) {
                    Order::InOrder => return,
                    Order::Gap(n) => (&counters.gaps, n),
                    Order::Duplicate => (&counters.duplicates, 1),
                    Order::Backwards => (&counters.backwards, 1),
                };
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        let decoded = match chunked {
            true => decoder
                .decode(&pending, |r| scanner.feed(&pending[r], &mut on_event))
                .is_ok(),
            false => {
                scanner.feed(&pending, &mut on_event);
                true
            }
        };
        if events > 0 {
            counters.events.fetch_add(events, Ordering::Relaxed);
            shared.last_event_ns[index].store(now, Ordering::Relaxed);
        }
        if !latencies.is_empty() {
            let mut histogram = shared.histogram.lock().unwrap();
            for latency in latencies.drain(..) {
                histogram.saturating_record(latency.max(1_000));
            }
        }
        if !decoded {
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                pending.clear();
                pending.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// Connects, sends the request and reads the head: the stream, bytes past the head, and
/// whether the body is chunked. Anything but 200 is a failed connection.
async fn open(
    options: &LoadOptions,
    last_event_id: &str,
) -> std::io::Result<(TcpStream, Vec<u8>, bool)> {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        options.target, options.addr
    );
    if !last_event_id.is_empty() {
        request.push_str(&format!("Last-Event-ID: {last_event_id}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(options.addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes()).await?;
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

/// Peak VmRSS of each pid, sampled every 100 ms until the run stops.
async fn sample_rss(pids: Vec<u32>, stopped: watch::Receiver<bool>) -> Vec<(u32, u64)> {
    let mut peaks: Vec<(u32, u64)> = pids.iter().map(|&pid| (pid, 0)).collect();
    while !*stopped.borrow() && !peaks.is_empty() {
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
