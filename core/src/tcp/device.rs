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
}

pub struct RxToken(BytesMut);

pub struct TxToken<'a>(&'a mut VecDeque<BytesMut>);

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
        let mut buf = BytesMut::with_capacity(len + DATA_OVERHEAD);
        buf.resize(DATA_HEADER_LEN + len, 0);
        let result = f(&mut buf[DATA_HEADER_LEN..]);
        self.0.push_back(buf);
        result
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}
