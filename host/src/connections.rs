//! The count of open client connections, whoever serves them: the host while it reads
//! and answers heads, a plugin after a handoff (it holds the connection's [`Slot`] across
//! the ABI for as long as it keeps the connection).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use abi::{ConnectionSlot, FfiConnectionSlot};
use abi_stable::sabi_trait::TD_Opaque;

/// Client connections open now.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
}

impl Connections {
    /// Counts a newly accepted connection until its slot drops.
    pub fn open(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Relaxed);
        Slot(self.clone())
    }

    pub fn count(&self) -> usize {
        self.open.load(Relaxed)
    }
}

/// One open connection's place in the count.
#[derive(Debug)]
pub struct Slot(Arc<Connections>);

impl Slot {
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
        let connections = Arc::new(Connections::default());
        let served = connections.open();
        let handed_over = connections.open().into_ffi();
        assert_eq!(connections.count(), 2);
        drop(handed_over);
        assert_eq!(connections.count(), 1);
        drop(served);
        assert_eq!(connections.count(), 0);
    }
}
