//! The benchmark streams: stamped events (see `sse::stamp`) at a rate and size, or as fast
//! as the connection takes them, per connection or as one broadcast to every subscriber.
//!
//! `GET /bench/{id}?rate=R&size=S&count=N`: R events/s, fractions allowed (0: as fast as possible, batched
//! into writes of up to 16 KiB), S bytes each (default 100), N events (default endless).
//! `GET /broadcast/{id}`: the events of the origin's one broadcast ticker
//! (`--broadcast-rate`, `--broadcast-size`); a subscriber that lags loses events, which
//! the load tool reports as id gaps.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::{Body, Frame};
use sse::stamp::{monotonic_ns, write_stamped_event};
use tokio::sync::broadcast;
use tokio_stream::{wrappers::BroadcastStream, StreamExt};

use crate::ResponseBody;

/// Writes of a flat-out stream are batched up to this size.
const BATCH_BYTES: usize = 16 * 1024;
/// How many broadcast events a subscriber may fall behind before it loses some.
const BROADCAST_BACKLOG: usize = 4096;

/// Counts the streams open right now; each stream body holds one [`OpenStream`].
#[derive(Clone, Default)]
pub struct OpenStreams(Arc<AtomicUsize>);

impl OpenStreams {
    pub fn open(&self) -> OpenStream {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One open stream; dropping it (the body ends or the client leaves) counts it closed.
pub struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Parameters of a per-connection bench stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchStream {
    /// Events per second; 0 sends as fast as the connection takes them.
    pub rate: f64,
    pub size: usize,
    pub count: Option<u64>,
}

impl BenchStream {
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut stream = Self {
            rate: 0.0,
            size: 100,
            count: None,
        };
        for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key} takes an integer"))
            };
            match key {
                "rate" => {
                    stream.rate = value
                        .parse::<f64>()
                        .ok()
                        .filter(|rate| rate.is_finite() && *rate >= 0.0)
                        .ok_or("rate takes a number of events per second")?;
                }
                "size" => stream.size = number()? as usize,
                "count" => stream.count = Some(number()?),
                _ => {}
            }
        }
        Ok(stream)
    }

    pub fn body(self, open: OpenStream) -> ResponseBody {
        let ticks = (self.rate > 0.0).then(|| {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticks
        });
        crate::boxed(StampedStream {
            params: self,
            next_id: 1,
            ticks,
            _open: open,
        })
    }
}

struct StampedStream {
    params: BenchStream,
    next_id: u64,
    ticks: Option<tokio::time::Interval>,
    _open: OpenStream,
}

impl Body for StampedStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let left = self
            .params
            .count
            .map(|count| count.saturating_sub(self.next_id - 1));
        if left == Some(0) {
            return Poll::Ready(None);
        }
        let batch = match &mut self.ticks {
            Some(ticks) => {
                ready!(ticks.poll_tick(cx));
                1
            }
            None => (BATCH_BYTES / self.params.size.max(1)).max(1) as u64,
        };
        let batch = left.map_or(batch, |left| left.min(batch));
        let mut out = Vec::with_capacity(batch as usize * self.params.size);
        let now = monotonic_ns();
        for _ in 0..batch {
            write_stamped_event(&mut out, self.next_id, now, self.params.size);
            self.next_id += 1;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }
}

/// The one broadcast ticker of an origin.
#[derive(Clone)]
pub struct Broadcast {
    sender: broadcast::Sender<Bytes>,
}

impl Broadcast {
    /// Starts ticking `rate` events/s of `size` bytes, sent only while someone listens.
    pub fn start(rate: u64, size: usize) -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_BACKLOG);
        let ticker = sender.clone();
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut next_id = 1;
            loop {
                ticks.tick().await;
                if ticker.receiver_count() == 0 {
                    continue;
                }
                let mut out = Vec::with_capacity(size);
                write_stamped_event(&mut out, next_id, monotonic_ns(), size);
                next_id += 1;
                let _ = ticker.send(Bytes::from(out));
            }
        });
        Self { sender }
    }

    /// A subscriber's body: every broadcast event from now on.
    pub fn subscribe(&self, open: OpenStream) -> ResponseBody {
        let events = BroadcastStream::new(self.sender.subscribe())
            .filter_map(|event| event.ok())
            .map(move |bytes| {
                let _held = &open;
                Ok(Frame::data(bytes))
            });
        crate::boxed(StreamBody::new(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn reads_the_query() {
        assert_eq!(
            BenchStream::from_query(""),
            Ok(BenchStream {
                rate: 0.0,
                size: 100,
                count: None
            })
        );
        assert_eq!(
            BenchStream::from_query("rate=0.2&size=200&count=5&other=x"),
            Ok(BenchStream {
                rate: 0.2,
                size: 200,
                count: Some(5)
            })
        );
        assert!(BenchStream::from_query("rate=fast").is_err());
        assert!(BenchStream::from_query("rate=-1").is_err());
    }

    #[tokio::test]
    async fn a_flat_out_stream_sends_exactly_count_events() {
        let streams = OpenStreams::default();
        let body = BenchStream {
            rate: 0.0,
            size: 100,
            count: Some(500),
        }
        .body(streams.open());
        assert_eq!(streams.count(), 1);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 500 * 100);
        assert!(bytes.starts_with(b"id: 1\ndata: t="));
        assert!(bytes.windows(9).any(|w| w == b"\nid: 500\n"));
        assert_eq!(streams.count(), 0, "the finished body counts as closed");
    }
}
