//! Read buffers shared by the streams of one plugin instance.
//!
//! A stream holds a buffer only from an upstream read until the client has taken the
//! bytes, so thousands of mostly idle streams cost no buffer memory, and a busy stream
//! reuses pooled buffers instead of allocating per event.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

pub struct BufferPool {
    buffer_bytes: usize,
    /// Free buffers kept for reuse; beyond this they are freed.
    max_idle: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, max_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            buffer_bytes,
            max_idle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A buffer of `buffer_bytes`, returned to the pool when dropped.
    pub fn take(self: &Arc<Self>) -> Buffer {
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Buffer {
            bytes: reused.unwrap_or_else(|| vec![0; self.buffer_bytes]),
            pool: self.clone(),
        }
    }

    fn give_back(&self, bytes: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(bytes);
        }
    }
}

/// A pooled buffer; derefs to its bytes.
pub struct Buffer {
    bytes: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_idle_limit() {
        let pool = BufferPool::new(16, 1);
        let mut first = pool.take();
        first[0] = 7;
        let address = first.as_ptr();
        drop(first);
        let again = pool.take();
        assert_eq!(
            (again.as_ptr(), again.len()),
            (address, 16),
            "the freed buffer is reused"
        );
        let (a, b) = (pool.take(), pool.take());
        drop((a, b, again));
        assert_eq!(
            pool.idle.lock().unwrap().len(),
            1,
            "no more than max_idle are kept"
        );
    }
}
