//! Waiting before an upstream is tried again: one policy for the three places that retry,
//! a client's relayed stream, a fan-out source's SSE origin and a Kafka hub's first
//! connection to its brokers.
//!
//! The wait is the stream's `retry:` (or `reconnect_delay`), doubled after each failed
//! attempt up to `max_reconnect_delay`, times a random factor in [0.5, 1] so that the
//! clients of a restarted origin do not all return at once. A client's stream also has a
//! budget, `max_reconnects` within `reconnect_window`, after which it ends (the browser
//! reconnects by itself); a shared source is retried for as long as it has clients.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Route;

pub struct Reconnect<'a> {
    config: &'a Route,
    /// Whether `max_reconnects` within `reconnect_window` applies.
    budgeted: bool,
    /// The attempts within the window.
    recent: VecDeque<Instant>,
    failed_in_a_row: u32,
}

/// How a [`Reconnect::wait`] ended.
pub enum Waited<T> {
    /// Time to try again.
    Retry,
    /// The budget is spent.
    OutOfAttempts,
    /// `stop` completed first, with this.
    Stopped(T),
}

impl<'a> Reconnect<'a> {
    /// For one client's stream: at most `max_reconnects` attempts within `reconnect_window`.
    pub fn budgeted(config: &'a Route) -> Self {
        Self {
            config,
            budgeted: true,
            recent: VecDeque::new(),
            failed_in_a_row: 0,
        }
    }

    /// For a shared source, tried for as long as it has clients.
    pub fn unlimited(config: &'a Route) -> Self {
        Self {
            budgeted: false,
            ..Self::budgeted(config)
        }
    }

    /// Sleeps before the next attempt, unless the budget is spent or `stop` completes
    /// first. `retry_ms` is the stream's `retry:`, if it sent one.
    pub async fn wait<T>(
        &mut self,
        retry_ms: Option<u64>,
        stop: impl Future<Output = T>,
    ) -> Waited<T> {
        let Some(delay) = self.next_delay(retry_ms) else {
            return Waited::OutOfAttempts;
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => Waited::Retry,
            stopped = stop => Waited::Stopped(stopped),
        }
    }

    /// An attempt succeeded: the next failure waits the base delay again.
    pub fn connected(&mut self) {
        self.failed_in_a_row = 0;
    }

    fn next_delay(&mut self, retry_ms: Option<u64>) -> Option<Duration> {
        let config = self.config;
        if self.budgeted {
            let now = Instant::now();
            while self
                .recent
                .front()
                .is_some_and(|&t| now.duration_since(t) >= config.reconnect_window)
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= config.max_reconnects {
                return None;
            }
            self.recent.push_back(now);
        }
        let base = retry_ms.map_or(config.reconnect_delay, Duration::from_millis);
        let delay = base
            .saturating_mul(1 << self.failed_in_a_row.min(16))
            .min(config.max_reconnect_delay);
        self.failed_in_a_row += 1;
        Some(delay.mul_f64(0.5 + fastrand::f64() / 2.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(extra: &str) -> Route {
        crate::config::parse(&format!(
            r#"{{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h",
                "reconnect_delay": "100ms", "max_reconnect_delay": "300ms"{extra}}}"#
        ))
        .unwrap()
        .routes
        .remove(0)
    }

    #[test]
    fn the_budget_backs_off_and_runs_out_within_the_window() {
        let config = route(r#", "max_reconnects": 3"#);
        let mut budget = Reconnect::budgeted(&config);
        let delays: Vec<Duration> = (0..3).map(|_| budget.next_delay(None).unwrap()).collect();
        let ceilings = [100, 200, 300].map(Duration::from_millis);
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            assert!(
                *delay <= ceiling && *delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
        }
        assert_eq!(budget.next_delay(None), None, "three within the window");
        budget.connected();
        budget.recent.clear();
        let from_retry = budget.next_delay(Some(40)).unwrap();
        assert!(from_retry <= Duration::from_millis(40), "{from_retry:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_gives_attempts_back_and_a_source_has_no_budget() {
        let config = route(r#", "max_reconnects": 1, "reconnect_window": "1m""#);
        let mut budget = Reconnect::budgeted(&config);
        let never = std::future::pending::<()>;
        assert!(matches!(budget.wait(None, never()).await, Waited::Retry));
        assert!(matches!(
            budget.wait(None, never()).await,
            Waited::OutOfAttempts
        ));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(matches!(budget.wait(None, never()).await, Waited::Retry));
        let mut source = Reconnect::unlimited(&config);
        for _ in 0..10 {
            assert!(matches!(source.wait(None, never()).await, Waited::Retry));
        }
        let started = Instant::now();
        let stopped = source.wait(None, std::future::ready(7)).await;
        assert!(matches!(stopped, Waited::Stopped(7)));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "stop ends the wait at once"
        );
    }
}
