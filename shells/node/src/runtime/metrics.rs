//! The event loop's counters, for `meshctl debug metrics` (plain integers, updated on the
//! loop's thread; the loop hands out a copy).

/// System-call batch sizes in power-of-two buckets: 1, 2-3, 4-7, ..., 128 and more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchSizes {
    pub buckets: [u64; 8],
}

impl BatchSizes {
    pub fn record(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let bucket = (usize::BITS - 1 - n.leading_zeros()) as usize;
        self.buckets[bucket.min(7)] += 1;
    }
}

/// Traffic through one side of the loop, in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Direction {
    pub packets: u64,
    pub bytes: u64,
    /// System calls that moved at least one packet.
    pub syscalls: u64,
    /// Packets per system call.
    pub batches: BatchSizes,
}

impl Direction {
    pub fn batch(&mut self, packets: usize, bytes: usize) {
        self.packets += packets as u64;
        self.bytes += bytes as u64;
        self.syscalls += 1;
        self.batches.record(packets);
    }
}

/// What the loop dropped, by reason (the core counts its own drops in `NodeStats` and
/// WireGuard's `DropCounts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drops {
    /// A datagram longer than any WireGuard message for this MTU.
    pub udp_oversized: u64,
    /// Datagrams for a family the node has no socket for.
    pub udp_no_socket: u64,
    /// The send queue was full while the socket would block.
    pub udp_send_backlog: u64,
    /// A UDP send failed (no route, message too long, ...).
    pub udp_send_error: u64,
    /// The TUN device refused a write (queue full).
    pub tun_write_full: u64,
    /// The TUN device failed a write otherwise.
    pub tun_write_error: u64,
    /// A TUN read failed with an error other than "would block".
    pub tun_read_error: u64,
    /// A UDP receive failed with an error other than "would block".
    pub udp_recv_error: u64,
}

/// Every counter of the event loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    pub udp_rx: Direction,
    pub udp_tx: Direction,
    pub tun_rx: Direction,
    pub tun_tx: Direction,
    /// Returns from `epoll_wait`.
    pub wakeups: u64,
    /// Calls of the node's `handle_timeout`.
    pub timers: u64,
    /// Times input was paused because the socket's send buffer was full.
    pub backpressure: u64,
    /// Packet buffers allocated because the pool was empty (flat once the pool is warm:
    /// the data path allocates nothing per packet).
    pub buffer_allocations: u64,
    pub drops: Drops,
}

#[cfg(test)]
mod tests {
    use super::BatchSizes;

    #[test]
    fn batch_sizes_fall_into_power_of_two_buckets() {
        let mut b = BatchSizes::default();
        for n in [0, 1, 2, 3, 4, 64, 127, 128, 5000] {
            b.record(n);
        }
        assert_eq!(b.buckets, [1, 2, 1, 0, 0, 0, 2, 2]);
    }
}
