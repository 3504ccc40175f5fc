//! A smoltcp `phy::Device` over two in-memory queues: packets the node hands to the stack,
//! and packets the stack emits for the node to route.

use std::collections::VecDeque;

use bytes::BytesMut;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::wireguard::{DATA_HEADER_LEN, DATA_OVERHEAD};

/// The two queues. `rx` holds at most one packet at a time in practice (the stack is
/// polled after every packet), `tx` is drained by the owner after every poll.
///
/// Emitted packets are laid out for WireGuard (headroom in front, room for padding and tag
/// behind), so the node hands them on without copying.
#[derive(Debug, Default)]
pub struct QueueDevice {
    pub rx: VecDeque<BytesMut>,
    pub tx: VecDeque<BytesMut>,
    pub mtu: usize,
    /// Where emitted packets are carved from (see [`carve`]).
    slab: BytesMut,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> Self {
        Self { mtu, ..Self::default() }
    }
}

/// Bytes per slab: room for about 40 full-size packets per allocation.
const SLAB_LEN: usize = 64 << 10;

/// A buffer for one emitted packet of `len` bytes, [headroom | packet] with room behind it
/// for WireGuard's padding and tag, carved from `slab` so that the data path makes one
/// allocation per slab rather than one per segment. A carved packet owns its range of
/// the slab; the slab's memory is freed when the last packet carved from it is.
fn carve(slab: &mut BytesMut, len: usize) -> BytesMut {
    let room = DATA_HEADER_LEN + len + DATA_OVERHEAD;
    if slab.capacity() < room {
        *slab = BytesMut::with_capacity(SLAB_LEN.max(room));
    }
    slab.resize(room, 0);
    let mut buf = slab.split_to(room);
    buf.truncate(DATA_HEADER_LEN + len);
    buf
}

pub struct RxToken(BytesMut);

pub struct TxToken<'a> {
    queue: &'a mut VecDeque<BytesMut>,
    slab: &'a mut BytesMut,
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = carve(self.slab, len);
        let result = f(&mut buf[DATA_HEADER_LEN..]);
        self.queue.push_back(buf);
        result
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken { queue: &mut self.tx, slab: &mut self.slab }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken { queue: &mut self.tx, slab: &mut self.slab })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carved_packets_share_one_allocation_and_keep_their_tail_room() {
        let mut slab = BytesMut::new();
        let mut packets: Vec<BytesMut> = (0..20).map(|_| carve(&mut slab, 1280)).collect();
        let first = packets[0].as_ptr() as usize;
        // All twenty come from the first slab: consecutive, without a new allocation.
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.len(), DATA_HEADER_LEN + 1280);
            assert!(p.capacity() >= DATA_HEADER_LEN + 1280 + DATA_OVERHEAD, "room for padding and tag");
            assert_eq!(p.as_ptr() as usize, first + i * (DATA_HEADER_LEN + 1280 + DATA_OVERHEAD));
        }
        // Sealing grows a packet within its own room: no copy, no neighbour overwritten.
        let mut grown = packets.remove(3);
        let at = grown.as_ptr();
        grown.extend_from_slice(&[0xee; DATA_OVERHEAD]);
        assert_eq!(grown.as_ptr(), at);
        assert!(packets[3].iter().all(|&b| b == 0), "the next packet is untouched");
    }
}
