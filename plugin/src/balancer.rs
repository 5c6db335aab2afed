//! Which backend host a stream dials, in which order, and passive health.
//!
//! Round robin starts each stream one host further along. Sticky routes rank hosts by
//! rendezvous hashing (highest `hash(key, host)` first): every key has its own stable
//! order, and adding or removing a host moves only the keys whose top host it is. A host
//! that fails `eject_after` times in a row is ejected for `eject_for`: it goes to the end
//! of every order, tried only when no healthy host answers.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use serde_json::{json, Value};

use crate::config::Backend;

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

pub struct Balancer {
    hosts: Vec<Host>,
    next: AtomicUsize,
    eject_after: u32,
    eject_for: Duration,
}

struct Host {
    base: String,
    hash: u64,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    failures: AtomicU64,
    ejections: AtomicU64,
}

impl Balancer {
    pub fn new(backends: &[Backend], eject_after: u32, eject_for: Duration) -> Self {
        let hosts = backends
            .iter()
            .map(|b| Host {
                base: b.base.clone(),
                hash: fnv1a(b.base.as_bytes()),
                consecutive_failures: AtomicU32::new(0),
                ejected_until_ms: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                ejections: AtomicU64::new(0),
            })
            .collect();
        Self {
            hosts,
            next: AtomicUsize::new(0),
            eject_after,
            eject_for,
        }
    }

    /// The hosts to try, best first: by the sticky key's ranking when there is a key,
    /// round robin otherwise; ejected hosts last.
    pub fn order(&self, sticky_key: Option<&[u8]>) -> Vec<usize> {
        let n = self.hosts.len();
        let mut order: Vec<usize> = match sticky_key {
            Some(key) => {
                let key = fnv1a(key);
                let mut ranked: Vec<usize> = (0..n).collect();
                ranked.sort_by_key(|&i| std::cmp::Reverse(mix(key ^ self.hosts[i].hash)));
                ranked
            }
            None => {
                let start = self.next.fetch_add(1, Relaxed);
                (0..n).map(|i| (start + i) % n).collect()
            }
        };
        let now = now_ms();
        // A stable sort keeps each group in its preference order.
        order.sort_by_key(|&i| self.hosts[i].ejected_until_ms.load(Relaxed) > now);
        order
    }

    pub fn failed(&self, i: usize) {
        let host = &self.hosts[i];
        host.failures.fetch_add(1, Relaxed);
        if host.consecutive_failures.fetch_add(1, Relaxed) + 1 >= self.eject_after {
            host.consecutive_failures.store(0, Relaxed);
            host.ejected_until_ms
                .store(now_ms() + self.eject_for.as_millis() as u64, Relaxed);
            host.ejections.fetch_add(1, Relaxed);
        }
    }

    pub fn succeeded(&self, i: usize) {
        let host = &self.hosts[i];
        host.consecutive_failures.store(0, Relaxed);
        host.ejected_until_ms.store(0, Relaxed);
    }

    pub fn to_json(&self) -> Value {
        let now = now_ms();
        self.hosts
            .iter()
            .map(|h| {
                json!({
                    "host": h.base,
                    "ejected": h.ejected_until_ms.load(Relaxed) > now,
                    "failures": h.failures.load(Relaxed),
                    "ejections": h.ejections.load(Relaxed),
                })
            })
            .collect()
    }
}

/// FNV-1a: stable across builds and runs, so a key keeps its host across restarts.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finalizer, so that `key ^ host` scores are well spread.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(n: usize) -> Balancer {
        let backends: Vec<Backend> = (0..n)
            .map(|i| Backend {
                base: format!("http://h{i}:80"),
                authority: format!("h{i}:80"),
                addr: format!("h{i}:80"),
                tls_name: None,
            })
            .collect();
        Balancer::new(&backends, 2, Duration::from_secs(60))
    }

    #[test]
    fn round_robin_rotates_the_first_host() {
        let b = balancer(3);
        let firsts: Vec<usize> = (0..6).map(|_| b.order(None)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        assert_eq!(b.order(None), [0, 1, 2]);
    }

    #[test]
    fn sticky_keys_keep_their_host_and_removing_one_moves_only_its_keys() {
        let (five, four) = (balancer(5), balancer(4));
        let mut moved = 0;
        for user in 0..1000 {
            let key = format!("user-{user}");
            let first = five.order(Some(key.as_bytes()))[0];
            assert_eq!(five.order(Some(key.as_bytes()))[0], first, "stable");
            // h4 is gone in `four`: only its keys may land elsewhere.
            let now = four.order(Some(key.as_bytes()))[0];
            if first != 4 {
                assert_eq!(now, first, "{key} moved though its host stayed");
            } else {
                moved += 1;
            }
        }
        assert!((100..300).contains(&moved), "h4 had {moved} of 1000 keys");
    }

    #[test]
    fn a_failing_host_is_ejected_to_the_end_until_it_succeeds() {
        let b = balancer(3);
        let key = Some(&b"k"[..]);
        let top = b.order(key)[0];
        b.failed(top);
        assert_eq!(b.order(key)[0], top, "one failure is not enough");
        b.failed(top);
        assert_eq!(*b.order(key).last().unwrap(), top);
        assert_eq!(b.to_json()[top]["ejections"], 1);
        b.succeeded(top);
        assert_eq!(b.order(key)[0], top);
    }
}
