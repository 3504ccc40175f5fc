//! Reused packet buffers: the data path takes a `BytesMut` from the pool for each packet
//! read and puts it back once the packet is written, so no packet allocates once the pool
//! is warm (buffers the core hands back are the ones it was given, sealed or opened in
//! place; `reserve` on a unique `BytesMut` reclaims its whole allocation).

use bytes::BytesMut;

/// A free list of buffers of one capacity.
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<BytesMut>,
    capacity: usize,
    max_free: usize,
    /// Buffers allocated because the free list was empty or a returned one was too small.
    pub allocations: u64,
}

impl BufferPool {
    /// A pool of buffers of `capacity` bytes, keeping at most `max_free` spare.
    pub fn new(capacity: usize, max_free: usize) -> Self {
        let free = (0..max_free.min(256)).map(|_| BytesMut::with_capacity(capacity)).collect();
        Self { free, capacity, max_free, allocations: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// An empty buffer with at least the pool's capacity.
    pub fn take(&mut self) -> BytesMut {
        match self.free.pop() {
            Some(mut buf) => {
                buf.reserve(self.capacity);
                buf
            }
            None => {
                self.allocations += 1;
                BytesMut::with_capacity(self.capacity)
            }
        }
    }

    /// Return a buffer (emptied here).
    pub fn give(&mut self, mut buf: BytesMut) {
        if self.free.len() < self.max_free {
            buf.clear();
            self.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn a_split_buffer_comes_back_whole() {
        let mut pool = BufferPool::new(2048, 4);
        let mut buf = pool.take();
        buf.resize(2048, 7);
        let ptr = buf.as_ptr();
        let tail = buf.split_off(16);
        drop(buf);
        pool.give(tail);
        let again = pool.take();
        assert!(again.capacity() >= 2048);
        assert_eq!(again.as_ptr(), ptr, "the same allocation, reclaimed from its start");
    }
}
