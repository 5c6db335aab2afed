//! The count of open client connections, whoever serves them: the host while it reads
//! and answers heads, a plugin after a handoff (it holds the connection's [`Slot`] across
//! the ABI for as long as it keeps the connection), and the limit on it
//! (`max_connections`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use abi::{ConnectionSlot, FfiConnectionSlot};
use abi_stable::sabi_trait::TD_Opaque;

/// Client connections open now, and how many more may open.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    limit: usize,
    /// Connections closed at the accept because `limit` were open.
    refused: AtomicU64,
    /// Connections closed because they sent no byte within `read_header_timeout` of
    /// their accept (see [`Slot::closed_silent`]).
    silent: AtomicU64,
}

/// Descriptors the default limit keeps back from client connections, at least.
const RESERVE_MIN: u64 = 64;

impl Connections {
    pub fn new(limit: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            limit,
            refused: AtomicU64::new(0),
            silent: AtomicU64::new(0),
        }
    }

    /// Counts a newly accepted connection until its slot drops, or refuses it (and
    /// counts the refusal) when `limit` connections are open.
    pub fn try_open(self: &Arc<Self>) -> Option<Slot> {
        let opened = self.open.fetch_update(Relaxed, Relaxed, |open| {
            (open < self.limit).then_some(open + 1)
        });
        match opened {
            Ok(_) => Some(Slot(self.clone())),
            Err(_) => {
                self.refused.fetch_add(1, Relaxed);
                None
            }
        }
    }

    pub fn count(&self) -> usize {
        self.open.load(Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    pub fn silent(&self) -> u64 {
        self.silent.load(Relaxed)
    }

    /// `max_connections` when the config does not set it: from the process's descriptor
    /// limit (`RLIMIT_NOFILE`, the soft one), see [`limit_for_descriptors`].
    pub fn default_limit() -> usize {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        limit_for_descriptors(limit.current.unwrap_or(u64::MAX))
    }
}

/// Client connections allowed under a limit of `descriptors`: three quarters of them
/// (keeping back at least [`RESERVE_MIN`]). The quarter kept back is for upstream dials
/// (fan-out streams and backends share theirs), the metrics listener, the log, plugin
/// libraries and the runtime's own. A fan-out client holds one descriptor, so 20,000
/// descriptors take 15,000 of them. A relay stream holds two: halving the limit would
/// suit a relay-only gateway but refuse fan-out clients the gateway can serve; relay
/// streams are bounded by the plugin's `max_streams` instead (10,000 by default, which
/// wants 20,000 descriptors).
pub fn limit_for_descriptors(descriptors: u64) -> usize {
    let reserve = (descriptors / 4).max(RESERVE_MIN);
    let limit = descriptors.saturating_sub(reserve).max(1);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// One open connection's place in the count.
#[derive(Debug)]
pub struct Slot(Arc<Connections>);

impl Slot {
    /// Counts this connection as closed silent: accepted, but no byte came within
    /// `read_header_timeout`. A slowloris client, or clients (or a gateway) too slow
    /// for the load: an operator sees the count rise either way.
    pub fn closed_silent(&self) {
        self.0.silent.fetch_add(1, Relaxed);
    }

    /// The slot as it crosses the ABI with a handed-over connection.
    pub fn into_ffi(self) -> ConnectionSlot {
        ConnectionSlot::from_value(self, TD_Opaque)
    }
}

impl FfiConnectionSlot for Slot {}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_counts_until_it_drops_on_either_side_of_the_abi() {
        let connections = Arc::new(Connections::new(10));
        let served = connections.try_open().unwrap();
        let handed_over = connections.try_open().unwrap().into_ffi();
        assert_eq!(connections.count(), 2);
        drop(handed_over);
        assert_eq!(connections.count(), 1);
        drop(served);
        assert_eq!(connections.count(), 0);
    }

    #[test]
    fn over_the_limit_a_connection_is_refused_and_counted_until_one_closes() {
        let connections = Arc::new(Connections::new(2));
        let first = connections.try_open().unwrap();
        let _second = connections.try_open().unwrap().into_ffi();
        assert!(connections.try_open().is_none());
        assert!(connections.try_open().is_none());
        assert_eq!((connections.count(), connections.refused()), (2, 2));
        drop(first);
        assert!(connections.try_open().is_some());
        assert_eq!(connections.refused(), 2);
        assert_eq!(connections.silent(), 0);
    }

    #[test]
    fn a_silent_close_is_counted_apart_from_refusals() {
        let connections = Arc::new(Connections::new(2));
        let slot = connections.try_open().unwrap();
        slot.closed_silent();
        drop(slot);
        assert_eq!(
            (
                connections.count(),
                connections.refused(),
                connections.silent()
            ),
            (0, 0, 1)
        );
    }

    #[test]
    fn the_default_limit_keeps_a_quarter_of_the_descriptors_back() {
        // `make test`'s limit: its 10,000 fan-out clients of one stream fit.
        assert_eq!(limit_for_descriptors(20_000), 15_000);
        assert_eq!(limit_for_descriptors(1024), 768);
        // Small limits keep the minimum reserve, and never refuse everything.
        assert_eq!(limit_for_descriptors(200), 136);
        assert_eq!(limit_for_descriptors(64), 1);
    }
}
