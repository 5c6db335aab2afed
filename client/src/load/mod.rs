//! Load mode: N SSE connections at once, every event's delivery latency in an HDR
//! histogram, and what went wrong (failed connects, streams cut early, id gaps).
//!
//! It runs on one thread so that on a small machine it takes one core and leaves the rest
//! to the origin and the proxy under test. That thread reads every stream into one buffer
//! (a stream waits for readiness, then reads without waiting), so 20,000 streams cost 20,000
//! sockets and their small state, not 20,000 buffers. Past the ephemeral ports of one
//! source address (about 28,000 here), several processes connect from addresses of their
//! own (`source`: 127.0.0.2, 127.0.0.3, ... are all loopback) and their histograms merge.

mod scan;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use sse::stamp::monotonic_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
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
    /// The address connections come from; `None`: the kernel's choice.
    pub source: Option<IpAddr>,
    /// Events received before this much of the run has passed are not timed (they are
    /// still checked for gaps): the connect phase of a large run is not its steady state.
    pub warmup: Duration,
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

    /// The latency histogram's recorded values, `[[nanoseconds, count], ...]`, so that the
    /// reports of several load processes can be merged exactly.
    pub fn histogram_json(&self) -> serde_json::Value {
        self.latency_ns
            .iter_recorded()
            .map(|v| serde_json::json!([v.value_iterated_to(), v.count_at_value()]))
            .collect()
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
    let timed_from = started + options.warmup;
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
                let stream = Stream {
                    counters: &counters,
                    histogram: &histogram,
                    timed_from,
                };
                let connect = (options.addr, options.source);
                let outcome =
                    tokio::time::timeout_at(deadline, stream.follow(connect, &request, permit))
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

thread_local! {
    /// What every stream of this thread reads into, between its readiness and its scan.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 64 * 1024].into());
}

/// What a stream reports into.
struct Stream<'a> {
    counters: &'a Counters,
    histogram: &'a Mutex<Histogram<u64>>,
    /// Events before it are counted and checked, not timed.
    timed_from: Instant,
}

/// A stream's place in its body.
#[derive(Default)]
struct Position {
    decoder: chunked::Decoder,
    scanner: EventScanner,
    last_id: Option<u64>,
    latencies: Vec<u64>,
}

impl Stream<'_> {
    /// One stream until it ends; `Err` when it ended (or failed) before the deadline cut it.
    async fn follow(
        &self,
        (addr, source): (SocketAddr, Option<IpAddr>),
        request: &[u8],
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), ()> {
        let Ok((stream, rest, chunked)) = open(addr, source, request).await else {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        drop(permit);
        self.counters.ok.fetch_add(1, Ordering::Relaxed);
        let mut position = Position::default();
        self.scan(&mut position, &rest, chunked)?;
        drop(rest);
        loop {
            stream.readable().await.map_err(|_| ())?;
            READ_BUFFER.with_borrow_mut(|buf| match stream.try_read(buf) {
                Ok(0) => Err(()),
                Ok(n) => self.scan(&mut position, &buf[..n], chunked),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                Err(_) => Err(()),
            })?;
        }
    }

    /// The events `bytes` completes: counted, checked for gaps, and timed.
    fn scan(&self, at: &mut Position, bytes: &[u8], chunked: bool) -> Result<(), ()> {
        let now = monotonic_ns();
        let timed = Instant::now() >= self.timed_from;
        let Position {
            decoder,
            scanner,
            last_id,
            latencies,
        } = at;
        let mut events = 0u64;
        let mut on_event = |event: Stamped| {
            events += 1;
            if timed {
                latencies.push(now.saturating_sub(event.stamp_ns));
            }
            if let (Some(id), Some(last)) = (event.id, *last_id) {
                self.counters
                    .gaps
                    .fetch_add(id.saturating_sub(last + 1), Ordering::Relaxed);
            }
            *last_id = event.id.or(*last_id);
        };
        if chunked {
            decoder
                .decode(bytes, |r| scanner.feed(&bytes[r], &mut on_event))
                .map_err(|_| ())?;
        } else {
            scanner.feed(bytes, &mut on_event);
        }
        self.counters.events.fetch_add(events, Ordering::Relaxed);
        if !latencies.is_empty() {
            let mut histogram = self.histogram.lock().unwrap();
            for latency in latencies.drain(..) {
                histogram.saturating_record(latency.max(1_000));
            }
        }
        Ok(())
    }
}

/// Connects (from `source`, when given), sends the request and reads the head: the
/// stream, bytes past the head, and whether the body is chunked. Anything but 200 is a
/// failed connection.
async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    request: &[u8],
) -> std::io::Result<(TcpStream, Vec<u8>, bool)> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let mut stream = socket.connect(addr).await?;
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
