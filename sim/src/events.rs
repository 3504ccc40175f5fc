//! The event queue: what happens next in virtual time.
//!
//! The world's clock does not tick; it jumps to the earliest scheduled event. Events are
//! ordered by `(time, sequence number)`, where the sequence number is the order in which they
//! were scheduled. Two events at the same virtual instant therefore always run in the same
//! order, which is what makes a run a pure function of its seed (a `BinaryHeap` alone would
//! break ties arbitrarily).
//!
//! [`Event`] lists what a world schedules: datagram arrivals, node timers, traffic ticks,
//! faults and chaos.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use bytes::BytesMut;
use mesh_core::time::Instant;

use crate::faults::Fault;
use crate::ids::NodeId;

/// An event and the instant it is due.
#[derive(Debug)]
struct Scheduled<E> {
    at: Instant,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    /// Reversed, so that the max-heap pops the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A priority queue of events keyed by virtual time, FIFO among equal times.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), next_seq: 0 }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedule `event` at `at`. Events scheduled for the same instant run in the order they
    /// were scheduled.
    pub fn schedule(&mut self, at: Instant, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Scheduled { at, seq, event });
    }

    /// When the next event is due.
    pub fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|s| s.at)
    }

    /// Remove and return the next event.
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        self.heap.pop().map(|s| (s.at, s.event))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many events were ever scheduled.
    pub fn scheduled_total(&self) -> u64 {
        self.next_seq
    }
}

/// Something scheduled to happen in a world.
#[derive(Debug)]
pub(crate) enum Event {
    /// A datagram arrives at `to`.
    Deliver { from: NodeId, to: NodeId, payload: BytesMut },
    /// A node's WireGuard asked to be woken (`poll_timeout`).
    Timer { node: NodeId, generation: u64 },
    /// The traffic application of a node sends its next packet. Each (re)start of a node's
    /// traffic begins a new chain of ticks; ticks of older chains are stale.
    AppTick { node: NodeId, chain: u64 },
    /// A scheduled fault or repair.
    Fault(Fault),
    /// The chaos schedule injects its next fault (stale unless `chain` is current).
    Chaos { chain: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_fifo_among_ties() {
        let mut q = EventQueue::new();
        q.schedule(Instant::from_micros(30), "c");
        q.schedule(Instant::from_micros(10), "a1");
        q.schedule(Instant::from_micros(20), "b");
        q.schedule(Instant::from_micros(10), "a2");
        q.schedule(Instant::from_micros(10), "a3");
        assert_eq!(q.peek_time(), Some(Instant::from_micros(10)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a1", "a2", "a3", "b", "c"]);
        assert!(q.is_empty());
        assert_eq!(q.scheduled_total(), 5);
    }
}
