//! Pure ACKs leave the stack with the highest sequence number sent (SND.MAX), not the one
//! smoltcp rewound to on a retransmission timeout.
//!
//! On a retransmission timeout smoltcp 0.14 goes back to the oldest unacknowledged byte and
//! rewinds its "last sequence number sent" to it, and every segment it sends carries that
//! number, pure ACKs included. If the peer had in fact received data beyond that point
//! (only its ACKs were lost), our ACKs now carry a SEG.SEQ below its RCV.NXT: unacceptable
//! by RFC 9293 (3.10.7.4), so the peer drops them, acknowledgment field and all. Alone that
//! costs a round trip or two (the peer's own ACK of our retransmission moves us forward).
//! But when both sides are there at once (bidirectional traffic that lost ACKs both ways,
//! as an SSH `cat` on a lossy link does), each retransmits data the other already holds,
//! each answers with an ACK the other discards, and the connection makes no progress until
//! its timeout kills it. RFC 9293 answers with `<SEQ=SND.NXT>` and Linux with `snd_nxt`,
//! which neither rewinds: this puts the highest sequence number sent back into pure ACKs.
//!
//! Data sent while the peer advertises a zero window is a zero-window probe, which smoltcp
//! does not count as sent (the peer discards it), so it does not raise SND.MAX here either:
//! an ACK claiming the probe's byte would itself be unacceptable to a closed window.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use smoltcp::wire::{IpAddress, IpProtocol, TcpOption, TcpPacket, TcpSeqNumber};

use crate::ip::packet::IpHeader;

/// What this module needs of one TCP segment.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    seq: TcpSeqNumber,
    /// The acknowledgment number, if the ACK flag is set.
    pub(super) ack: Option<TcpSeqNumber>,
    /// The window field as sent (unscaled).
    pub(super) window: u16,
    pub(super) payload_len: usize,
    pub(super) syn: bool,
    pub(super) fin: bool,
    pub(super) rst: bool,
    /// The SACK blocks (RFC 2018) of the segment: data its sender holds beyond a hole.
    pub(super) sack: [Option<(u32, u32)>; 3],
}

impl Segment {
    /// The segment in an IP packet (IPv4, or IPv6 without extension headers, as the stack
    /// emits and the node admits them); `None` for anything else.
    pub(super) fn parse(packet: &[u8]) -> Option<Self> {
        let (src, dst, range) = ip_parts(packet)?;
        let tcp = TcpPacket::new_checked(packet.get(range)?).ok()?;
        Some(Self {
            src: SocketAddr::new(src, tcp.src_port()),
            dst: SocketAddr::new(dst, tcp.dst_port()),
            seq: tcp.seq_number(),
            ack: tcp.ack().then(|| tcp.ack_number()),
            window: tcp.window_len(),
            payload_len: tcp.payload().len(),
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            sack: sack_blocks(tcp.options()),
        })
    }

    /// SEG.LEN: the sequence space the segment occupies.
    fn seg_len(&self) -> usize {
        self.payload_len + usize::from(self.syn) + usize::from(self.fin)
    }
}

/// The SACK blocks in TCP `options`; stops at the first malformed option.
fn sack_blocks(mut options: &[u8]) -> [Option<(u32, u32)>; 3] {
    while !options.is_empty() {
        match TcpOption::parse(options) {
            Ok((_, TcpOption::SackRange(blocks))) => return blocks,
            Ok((_, TcpOption::EndOfList)) | Err(_) => break,
            Ok((rest, _)) => options = rest,
        }
    }
    [None; 3]
}

/// The addresses of an IP packet carrying TCP, and where its TCP segment lies.
fn ip_parts(packet: &[u8]) -> Option<(IpAddr, IpAddr, Range<usize>)> {
    let ip = IpHeader::parse(packet).ok().filter(|ip| ip.next_header == IpProtocol::Tcp)?;
    Some((ip.src, ip.dst, ip.payload()))
}

/// Change the TCP segment of `packet` with `edit` and recompute its checksum; `false` if
/// the packet holds no TCP segment.
pub(super) fn edit_segment(packet: &mut [u8], edit: impl FnOnce(&mut TcpPacket<&mut [u8]>)) -> bool {
    let Some((src, dst, range)) = ip_parts(packet) else { return false };
    let Some(Ok(mut tcp)) = packet.get_mut(range).map(TcpPacket::new_checked) else { return false };
    edit(&mut tcp);
    tcp.fill_checksum(&IpAddress::from(src), &IpAddress::from(dst));
    true
}

/// One connection's view of its send sequence space, from the segments it exchanged.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SendEdge {
    /// SND.MAX: the end of the furthest segment sent (SYN and FIN included).
    snd_max: Option<TcpSeqNumber>,
    /// The newest acknowledgment number the peer sent (its window field goes with it).
    peer_ack: Option<TcpSeqNumber>,
    /// The peer's newest segment advertised a zero window.
    peer_window_closed: bool,
}

impl SendEdge {
    /// A segment from the peer, before the stack processes it.
    pub(super) fn inbound(&mut self, segment: &Segment) {
        let Some(ack) = segment.ack.filter(|_| !segment.rst) else { return };
        // A reordered older segment does not speak for the window (RFC 9293's SND.WL2).
        if self.peer_ack.is_some_and(|newest| ack < newest) {
            return;
        }
        self.peer_ack = Some(ack);
        self.peer_window_closed = segment.window == 0;
    }

    /// A segment the stack emitted: account for what it sends; for a pure ACK, the
    /// sequence number it must carry instead of its own (`None`: keep it).
    fn outbound(&mut self, segment: &Segment) -> Option<TcpSeqNumber> {
        if segment.rst {
            return None;
        }
        if segment.seg_len() > 0 {
            let probe = segment.payload_len > 0 && self.peer_window_closed;
            let end = segment.seq + segment.seg_len();
            if !probe && self.snd_max.is_none_or(|max| end > max) {
                self.snd_max = Some(end);
            }
            return None;
        }
        segment.ack?;
        self.snd_max.filter(|&max| max > segment.seq)
    }
}

/// Let `edge` see the segment in `packet` that its connection emitted, and raise the
/// sequence number of a pure ACK to SND.MAX. Returns whether the packet was rewritten.
pub(super) fn outbound(edge: &mut SendEdge, segment: &Segment, packet: &mut [u8]) -> bool {
    match edge.outbound(segment) {
        Some(seq) => edit_segment(packet, |tcp| tcp.set_seq_number(seq)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Ipv6Packet, Ipv6Repr, TcpControl, TcpRepr, IPV6_HEADER_LEN};

    use super::*;

    const A: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1);
    const B: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2);

    /// An IPv6 segment A:1000 -> B:22 (an ACK unless `ack` is `None`).
    fn segment(seq: i32, ack: Option<i32>, window: u16, payload: &[u8], control: TcpControl) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 1000,
            dst_port: 22,
            control,
            seq_number: TcpSeqNumber(seq),
            ack_number: ack.map(TcpSeqNumber),
            window_len: window,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let ip = Ipv6Repr {
            src_addr: A,
            dst_addr: B,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut packet = vec![0u8; IPV6_HEADER_LEN + tcp.buffer_len()];
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut packet));
        let mut seg = TcpPacket::new_unchecked(&mut packet[IPV6_HEADER_LEN..]);
        tcp.emit(&mut seg, &A.into(), &B.into(), &ChecksumCapabilities::default());
        packet
    }

    /// Run `packet` out through `edge`; the sequence number it leaves with.
    fn send(edge: &mut SendEdge, mut packet: Vec<u8>) -> i32 {
        let seg = Segment::parse(&packet).unwrap_or_else(|| panic!("unparsable"));
        outbound(edge, &seg, &mut packet);
        let tcp = TcpPacket::new_checked(&packet[IPV6_HEADER_LEN..]).unwrap_or_else(|e| panic!("{e}"));
        assert!(tcp.verify_checksum(&A.into(), &B.into()), "checksum");
        tcp.seq_number().0
    }

    #[test]
    fn a_pure_ack_from_a_rewound_position_carries_the_highest_sequence_sent() {
        let mut edge = SendEdge::default();
        assert_eq!(send(&mut edge, segment(100, None, 1000, &[], TcpControl::Syn)), 100);
        assert_eq!(send(&mut edge, segment(101, Some(7), 1000, &[0; 500], TcpControl::None)), 101);
        // The retransmission timeout rewound smoltcp to 101: the data goes out as it is...
        assert_eq!(send(&mut edge, segment(101, Some(7), 1000, &[0; 100], TcpControl::Psh)), 101);
        // ... but an ACK says 601, not 201.
        assert_eq!(send(&mut edge, segment(201, Some(9), 1000, &[], TcpControl::None)), 601);
        // An ACK already at or past it, and a RST, are left alone.
        assert_eq!(send(&mut edge, segment(601, Some(9), 1000, &[], TcpControl::None)), 601);
        assert_eq!(send(&mut edge, segment(201, Some(9), 1000, &[], TcpControl::Rst)), 201);
    }

    #[test]
    fn zero_window_probes_do_not_count_as_sent() {
        let mut edge = SendEdge::default();
        assert_eq!(send(&mut edge, segment(100, Some(7), 1000, &[0; 50], TcpControl::None)), 100);
        let closed = segment(7, Some(150), 0, &[], TcpControl::None);
        edge.inbound(&Segment::parse(&closed).unwrap_or_else(|| panic!("unparsable")));
        // The probe's byte is beyond the closed window: ACKs must not claim it.
        assert_eq!(send(&mut edge, segment(150, Some(7), 1000, &[0], TcpControl::None)), 150);
        assert_eq!(send(&mut edge, segment(150, Some(7), 1000, &[], TcpControl::None)), 150);
        // A reordered older segment with an open window does not reopen it.
        let old = segment(7, Some(120), 1000, &[], TcpControl::None);
        edge.inbound(&Segment::parse(&old).unwrap_or_else(|| panic!("unparsable")));
        assert_eq!(send(&mut edge, segment(150, Some(7), 1000, &[0], TcpControl::None)), 150);
        assert_eq!(send(&mut edge, segment(140, Some(7), 1000, &[], TcpControl::None)), 150);
        // Once it opens, data counts again.
        let open = segment(7, Some(150), 1000, &[], TcpControl::None);
        edge.inbound(&Segment::parse(&open).unwrap_or_else(|| panic!("unparsable")));
        assert_eq!(send(&mut edge, segment(150, Some(7), 1000, &[0; 10], TcpControl::None)), 150);
        assert_eq!(send(&mut edge, segment(150, Some(7), 1000, &[], TcpControl::None)), 160);
    }
}
