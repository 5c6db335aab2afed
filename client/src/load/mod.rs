//! Load mode: N SSE streams at once, every event's delivery latency in an HDR histogram,
//! and what went wrong: failed connects, streams cut early, and ids that do not follow one
//! another (gaps, duplicates, ids going back), also across reconnections with
//! `Last-Event-ID` when asked to reconnect as `EventSource` does.
//!
//! The streams travel over the run's [`Transport`]: each on its own connection over
//! HTTP/1.1 (cleartext, or TLS for `https://`), or multiplexed over HTTP/2 connections
//! (ALPN `h2`, or h2c); events are read and counted the same way over all of them.
//!
//! It runs on one thread so that on a small machine it takes one core and leaves the rest
//! to the origin and the proxy under test. Past one source address's ephemeral ports
//! (about 28,000 here), several processes connect each from an address of its own
//! (the transport's `source`: all of 127.0.0.0/8 is loopback) and merge their histograms.

mod h2;
mod scan;
#[cfg(test)]
mod tests;
mod tls;
mod transport;
mod url;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use sse::stamp::monotonic_ns;
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

pub use scan::{EventScanner, IdCheck, Order, Received};
pub use tls::{client_config, TlsError, Trust};
pub use transport::{Http2, Protocol, Transport, TransportError};
pub use url::{StreamUrl, UrlError};

use transport::{dial, Body};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to dial (`url`'s host, resolved).
    pub addr: SocketAddr,
    /// The stream, e.g. `https://localhost:8443/bench/x?rate=20&size=100`.
    pub url: StreamUrl,
    pub transport: Transport,
    /// Concurrent streams.
    pub streams: usize,
    pub duration: Duration,
    /// Count `duration` from the moment every stream's first connection attempt has ended
    /// (connected or failed), not from the start: a run of many clients on a loaded
    /// machine then holds them all connected for `duration`, however long connecting took.
    /// Only the events received from then on are timed (all are counted and checked): the
    /// connecting is not the steady state.
    pub after_connect: bool,
    /// With `after_connect`: once every stream was tried, wait for a line on stdin before
    /// `duration` (and the timing) starts, so that a driver of several load processes
    /// starts them together once all of them are in, and none ends while another connects.
    pub start_on_stdin: bool,
    /// Connection attempts (with their TLS and HTTP/2 handshakes, and over HTTP/1.1 the
    /// response head) in flight at once, so the listen backlog is not the test.
    pub connect_concurrency: usize,
    /// Processes whose peak resident memory to report.
    pub pids: Vec<u32>,
    /// Reconnect a stream cut before the end, with `Last-Event-ID`, after its `retry:`
    /// (1 s without one), as `EventSource` does.
    pub reconnect: bool,
    /// Count the streams that received nothing in this last stretch of the run.
    pub expect_every: Option<Duration>,
}

/// What a load run measured. `connections_ok` and `connections_failed` count streams
/// (over HTTP/1.1 each is a connection), `transport_connections` the connections made
/// (dialed, with their TLS and HTTP/2 handshakes).
#[derive(Debug)]
pub struct Report {
    pub connections_ok: u64,
    pub connections_failed: u64,
    pub transport_connections: u64,
    /// Why the first stream that failed to open failed.
    pub first_error: Option<String>,
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
    /// Over HTTP/1.1, per connection: from the start of its dial to its request head
    /// written. A server closes a connection that sent nothing within its header timeout,
    /// so a loaded load process, late to write, shows here rather than as the server's.
    pub head_written_ns: Histogram<u64>,
}

/// How late a head may be written before the report counts it: half of a common
/// header timeout (10 s).
pub const LATE_HEAD: Duration = Duration::from_secs(5);

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        let q = |quantile| self.latency_ns.value_at_quantile(quantile) as f64 / 1000.0;
        serde_json::json!({
            "connections_ok": self.connections_ok,
            "connections_failed": self.connections_failed,
            "transport_connections": self.transport_connections,
            "first_error": self.first_error,
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
            "head_written_after_dial_ms": {
                "p99": self.head_written_ns.value_at_quantile(0.99) as f64 / 1e6,
                "max": self.head_written_ns.max() as f64 / 1e6,
            },
            "heads_written_late": {
                "after_ms": LATE_HEAD.as_millis() as u64,
                "count": late_count(&self.head_written_ns, LATE_HEAD),
            },
        })
    }

    /// The latency histogram's recorded values, `[[nanoseconds, count], ...]`, so that the
    /// reports of several load processes merge exactly.
    pub fn histogram_json(&self) -> serde_json::Value {
        self.latency_ns
            .iter_recorded()
            .map(|v| serde_json::json!([v.value_iterated_to(), v.count_at_value()]))
            .collect()
    }
}

/// The values of `histogram` over `bound`.
fn late_count(histogram: &Histogram<u64>, bound: Duration) -> u64 {
    let bound = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    histogram.len() - histogram.count_between(0, bound)
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    transports: AtomicU64,
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
    first_error: Mutex<Option<String>>,
    histogram: Mutex<Histogram<u64>>,
    /// [`Report::head_written_ns`].
    head_written_ns: Mutex<Histogram<u64>>,
    /// Per stream, when it last received an event (CLOCK_MONOTONIC ns; 0: never).
    last_event_ns: Vec<AtomicU64>,
    /// Streams whose first connection attempt has ended; the last one wakes `all_tried`.
    tried: AtomicUsize,
    all_tried: Notify,
    /// Whether received events are timed: from the start, or once `duration` starts.
    timing: AtomicBool,
    /// Connection attempts in flight.
    connecting: Semaphore,
    /// Over HTTP/2, each group of `streams_per_connection` streams' connection (stream
    /// `i` is in group `i / streams_per_connection`); empty over HTTP/1.1.
    h2_connections: Vec<h2::Connection>,
}

impl Shared {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream that could not open, and why.
    fn failed(&self, why: String) {
        Self::count(&self.counters.failed);
        self.first_error.lock().unwrap().get_or_insert(why);
    }

    /// A stream's first connection attempt has ended: the last one wakes `run` when it
    /// waits for all of them (`after_connect`).
    fn tried(&self) {
        if self.tried.fetch_add(1, Ordering::Relaxed) + 1 == self.options.streams {
            // A stored permit: `run` may not be waiting yet.
            self.all_tried.notify_one();
        }
    }
}

/// Runs the load; returns when `duration` has passed (from the start, or with
/// `after_connect` from the end of the connecting), or once every stream has ended for
/// good (none reconnects).
pub async fn run(options: LoadOptions) -> Report {
    let started = std::time::Instant::now();
    let (stop, stopped) = watch::channel(false);
    let h2_connections = match options.transport.protocol {
        Protocol::Http1 => Vec::new(),
        Protocol::Http2 {
            streams_per_connection,
        } => (0..options.streams.div_ceil(streams_per_connection.get()))
            .map(|_| h2::Connection::default())
            .collect(),
    };
    let options_after_connect = options.after_connect;
    let shared = Arc::new(Shared {
        last_event_ns: (0..options.streams).map(|_| AtomicU64::new(0)).collect(),
        connecting: Semaphore::new(options.connect_concurrency.max(1)),
        h2_connections,
        options,
        counters: Counters::default(),
        first_error: Mutex::new(None),
        histogram: Mutex::new(nanoseconds()),
        head_written_ns: Mutex::new(nanoseconds()),
        tried: AtomicUsize::new(0),
        all_tried: Notify::new(),
        timing: AtomicBool::new(!options_after_connect),
    });
    let rss = tokio::spawn(sample_rss(shared.options.pids.clone(), stopped.clone()));
    let mut streams: JoinSet<()> = (0..shared.options.streams)
        .map(|index| {
            let shared = shared.clone();
            let mut stopped = stopped.clone();
            async move {
                tokio::select! {
                    () = follow(&shared, index) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
            }
        })
        .collect();
    let duration = async {
        if shared.options.after_connect && shared.options.streams > 0 {
            shared.all_tried.notified().await;
            // For whoever runs several load processes: when this one's clients are in.
            let c = &shared.counters;
            eprintln!(
                "sse-load: every stream tried after {:.1} s: {} open, {} failed",
                started.elapsed().as_secs_f64(),
                c.ok.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed)
            );
            if shared.options.start_on_stdin {
                // EOF starts it too: a driver that died must not leave this one waiting.
                let _ =
                    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
                        .await;
            }
            shared.timing.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(shared.options.duration).await;
    };
    tokio::select! {
        () = duration => {}
        () = async { while streams.join_next().await.is_some() {} } => {}
    }
    let _ = stop.send(true);
    while streams.join_next().await.is_some() {}
    let ended_ns = monotonic_ns();
    let max_rss_kib = rss.await.unwrap_or_default();
    let take = |histogram: &Mutex<Histogram<u64>>| {
        std::mem::replace(&mut *histogram.lock().unwrap(), Histogram::new(1).unwrap())
    };
    let latency_ns = take(&shared.histogram);
    let head_written_ns = take(&shared.head_written_ns);
    let first_error = shared.first_error.lock().unwrap().take();
    let counter = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = &shared.counters;
    Report {
        connections_ok: counter(&c.ok),
        connections_failed: counter(&c.failed),
        transport_connections: counter(&c.transports),
        first_error,
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
        head_written_ns,
    }
}

/// A histogram of 1 µs to 10 minutes, in nanoseconds, at 3 significant digits.
fn nanoseconds() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// One stream until the run stops it: opened, read, and with `reconnect` opened
/// again with `Last-Event-ID` each time it ends early.
async fn follow(shared: &Shared, index: usize) {
    let (options, counters) = (&shared.options, &shared.counters);
    let mut scanner = EventScanner::default();
    let mut ids = IdCheck::default();
    let (mut first_attempt, mut connected_before) = (true, false);
    loop {
        let opened = open(shared, index, scanner.last_event_id()).await;
        if std::mem::take(&mut first_attempt) {
            shared.tried();
        }
        match opened {
            Err(why) => shared.failed(why),
            Ok(opened) => {
                Shared::count(match std::mem::replace(&mut connected_before, true) {
                    false => &counters.ok,
                    true => &counters.reconnects,
                });
                read(shared, index, opened, &mut scanner, &mut ids).await;
                Shared::count(&counters.premature);
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

/// A stream whose head said 200: its body, and over HTTP/1.1 the body bytes read with the
/// head and whether the body is chunked.
struct Opened {
    body: Body,
    rest: Vec<u8>,
    chunked: bool,
}

/// Opens stream `index` over the run's transport; `Err` says why it did not open.
async fn open(shared: &Shared, index: usize, last_event_id: &str) -> Result<Opened, String> {
    match shared.options.transport.protocol {
        Protocol::Http1 => {
            let _permit = shared
                .connecting
                .acquire()
                .await
                .expect("the semaphore is never closed");
            open_http1(shared, last_event_id)
                .await
                .map_err(|e| e.to_string())
        }
        Protocol::Http2 {
            streams_per_connection,
        } => {
            let connection = &shared.h2_connections[index / streams_per_connection.get()];
            let body = connection.open(shared, last_event_id).await?;
            Ok(Opened {
                body,
                rest: Vec::new(),
                chunked: false,
            })
        }
    }
}

/// Reads one stream until it ends or breaks, counting its events and checking their ids.
async fn read(
    shared: &Shared,
    index: usize,
    opened: Opened,
    scanner: &mut EventScanner,
    ids: &mut IdCheck,
) {
    let counters = &shared.counters;
    let Opened {
        mut body,
        rest,
        chunked,
    } = opened;
    let mut decoder = chunked.then(chunked::Decoder::default);
    let mut latencies = Vec::with_capacity(256);
    // Everything in `bytes` arrived together: one receive time for its events. `false`
    // when the chunked framing is broken.
    let mut scan = |bytes: &[u8]| {
        let now = monotonic_ns();
        let timed = shared.timing.load(Ordering::Relaxed);
        let mut events = 0;
        let mut on_event = |event: Received| {
            events += 1;
            if let (Some(stamp_ns), true) = (event.stamp_ns, timed) {
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
        let decoded = match &mut decoder {
            Some(decoder) => decoder
                .decode(bytes, |r| scanner.feed(&bytes[r], &mut on_event))
                .is_ok(),
            None => {
                scanner.feed(bytes, &mut on_event);
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
        decoded
    };
    if !scan(&rest) {
        return;
    }
    while let Some(bytes) = body.next().await {
        if !scan(bytes) {
            return;
        }
    }
}

/// Dials a connection of its own for one HTTP/1.1 stream, sends the request and reads the
/// head. Anything but 200 is a failed stream.
async fn open_http1(shared: &Shared, last_event_id: &str) -> std::io::Result<Opened> {
    let options = &shared.options;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        options.url.target, options.url.authority
    );
    if !last_event_id.is_empty() {
        request.push_str(&format!("Last-Event-ID: {last_event_id}\r\n"));
    }
    request.push_str("\r\n");
    let dialing = std::time::Instant::now();
    let mut socket = dial(
        options.addr,
        &options.url,
        &options.transport,
        request.as_bytes(),
    )
    .await?;
    Shared::count(&shared.counters.transports);
    let took = u64::try_from(dialing.elapsed().as_nanos()).unwrap_or(u64::MAX);
    (shared.head_written_ns.lock().unwrap()).saturating_record(took.max(1_000));
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = socket.read(&mut buf).await?;
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
    Ok(Opened {
        rest: head.split_off(end),
        body: Body::http1(socket),
        chunked,
    })
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
