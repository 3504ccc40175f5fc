//! Duplicate ACKs that report a hole reach smoltcp with the window of the ACK before them,
//! so that smoltcp counts them and starts fast retransmit.
//!
//! smoltcp 0.14 takes an ACK for a duplicate (RFC 5681's definition) only if it carries no
//! data, the same acknowledgment number as the last, and the same window. Linux's
//! receiver grows its window while a transfer ramps up (`rcv_ssthresh` rises with each
//! segment, out-of-order ones included), so the duplicate ACKs it sends after a loss each
//! advertise a slightly larger window. A capture of a download from the node's SSH server
//! over a lossy link showed exactly that: after each loss the client sent ACKs for the same
//! byte with windows 180, 182, 185, 194, 204 and SACK blocks for the data behind the hole.
//! smoltcp took every one for a window update, never reached three duplicates, and waited
//! for its 1 s retransmission timeout instead, once per lost segment: 0.1 MB/s at 1 %
//! loss.
//!
//! A segment that acknowledges the same byte again, carries no data, and SACKs data
//! beyond that byte is a duplicate ACK whatever its window (RFC 6675 counts exactly
//! those). Such a segment is handed to smoltcp with the window of the previous ACK when
//! its own is larger. The larger window is not lost: the next ACK that moves forward
//! carries it. A window that shrank is passed through unchanged (smoltcp then treats it
//! as the window update it is), so the node never sends beyond what the peer offers.
//!
//! smoltcp also lacks NewReno's partial-ACK rule (RFC 6582): when the retransmission of
//! one hole is acknowledged up to a second hole, it waits for three fresh duplicates,
//! which do not come once everything behind the hole is in flight, and then for the
//! timeout. The same capture showed it: a partial ACK SACKing 35 KB behind the second
//! hole, then 1 s of silence. So an ACK that moves forward to a hole with more than two
//! segments' worth SACKed behind it (lost by RFC 6675's rule) is followed by three
//! identical copies, smoltcp's own trigger for one fast retransmit, once per hole. Its
//! Cubic controller cuts the window only on the first entry into recovery.

use smoltcp::wire::TcpSeqNumber;

use super::ack_seq::{edit_segment, Segment};

/// SACKed bytes above the acknowledged one beyond which the segment at the acknowledgment
/// counts as lost: RFC 6675's IsLost, more than (DupThresh - 1) * SMSS, with the mesh's
/// usual MSS (1220: IPv6 in a 1280-byte tunnel MTU). NewReno would resend on any
/// partial ACK; this asks for proof of the hole.
const LOST_WHEN_SACKED: u32 = 2 * 1220;

/// Extra copies of a partial ACK that make smoltcp retransmit the next hole (three
/// duplicates start its fast retransmit).
const DUPLICATES_TO_RETRANSMIT: usize = 3;

/// The acknowledgment state smoltcp last saw from the peer on one connection.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DupAcks {
    /// The acknowledgment number and window field of the newest ACK handed to smoltcp.
    last: Option<(TcpSeqNumber, u16)>,
    /// The acknowledgment whose hole smoltcp was last made to retransmit.
    repaired: Option<TcpSeqNumber>,
}

/// What to do with one inbound segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Inbound {
    /// Its window was set to the previous ACK's.
    pub(super) rewritten: bool,
    /// Hand smoltcp this many identical copies after it.
    pub(super) copies: usize,
}

impl DupAcks {
    /// A segment from the peer, before smoltcp sees it: give a duplicate ACK with a grown
    /// window the previous window, and ask for copies of a partial ACK that leaves a hole
    /// the SACK blocks prove lost.
    pub(super) fn inbound(&mut self, segment: &Segment, packet: &mut [u8]) -> Inbound {
        let mut out = Inbound::default();
        let Some(ack) = segment.ack.filter(|_| !segment.rst) else { return out };
        let pure = segment.payload_len == 0 && !segment.syn && !segment.fin;
        match self.last {
            // A reordered older segment: smoltcp does not take its window either.
            Some((last_ack, _)) if ack < last_ack => return out,
            Some((last_ack, last_window)) if ack == last_ack => {
                if pure && segment.sack[0].is_some() && segment.window > last_window {
                    out.rewritten = edit_segment(packet, |tcp| tcp.set_window_len(last_window));
                } else {
                    self.last = Some((ack, segment.window));
                }
            }
            // The acknowledgment moved. If it stops at another hole with plenty SACKed
            // behind it (a second loss in the same window), smoltcp would wait for three
            // new duplicates that may never come, and then for its 1 s timeout.
            _ => {
                self.last = Some((ack, segment.window));
                if pure && sacked_above(segment, ack) > LOST_WHEN_SACKED && self.repaired != Some(ack) {
                    self.repaired = Some(ack);
                    out.copies = DUPLICATES_TO_RETRANSMIT;
                }
            }
        }
        out
    }
}

/// Bytes the segment's SACK blocks cover above `ack`.
fn sacked_above(segment: &Segment, ack: TcpSeqNumber) -> u32 {
    let ack = ack.0 as u32;
    segment
        .sack
        .iter()
        .flatten()
        .filter(|&&(left, right)| (left.wrapping_sub(ack) as i32) >= 0 && (right.wrapping_sub(left) as i32) > 0)
        .fold(0u32, |sum, &(left, right)| sum.saturating_add(right.wrapping_sub(left)))
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, IPV4_HEADER_LEN};

    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

    /// An IPv4 segment `src` -> `dst` with the ACK flag, `sack` as its one SACK block.
    /// (Also the stack tests' client, `tcp::tests`.)
    #[allow(clippy::too_many_arguments)]
    pub(in crate::tcp) fn ipv4_ack(
        src: SocketAddrV4,
        dst: SocketAddrV4,
        seq: u32,
        ack: u32,
        window: u16,
        sack: Option<(u32, u32)>,
        payload: &[u8],
        control: TcpControl,
    ) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(ack as i32)),
            window_len: window,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [sack, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: *src.ip(),
            dst_addr: *dst.ip(),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut packet = vec![0u8; IPV4_HEADER_LEN + tcp.buffer_len()];
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet), &ChecksumCapabilities::default());
        let mut seg = TcpPacket::new_unchecked(&mut packet[IPV4_HEADER_LEN..]);
        tcp.emit(&mut seg, &(*src.ip()).into(), &(*dst.ip()).into(), &ChecksumCapabilities::default());
        packet
    }

    /// An IPv4 ACK A:40000 -> B:22 acknowledging `ack`, SACKing `sack` if given.
    fn ack(ack: u32, window: u16, sack: Option<(u32, u32)>, payload: &[u8], control: TcpControl) -> Vec<u8> {
        let (src, dst) = (SocketAddrV4::new(A, 40000), SocketAddrV4::new(B, 22));
        ipv4_ack(src, dst, 7, ack, window, sack, payload, control)
    }

    /// Pass `packet` through `dup`; the window it leaves with.
    fn pass(dup: &mut DupAcks, packet: Vec<u8>) -> u16 {
        pass_counting(dup, packet).0
    }

    /// [`pass`], and the copies asked for.
    fn pass_counting(dup: &mut DupAcks, mut packet: Vec<u8>) -> (u16, usize) {
        let segment = Segment::parse(&packet).unwrap_or_else(|| panic!("unparsable"));
        let copies = dup.inbound(&segment, &mut packet).copies;
        let tcp = TcpPacket::new_checked(&packet[IPV4_HEADER_LEN..]).unwrap_or_else(|e| panic!("{e}"));
        assert!(tcp.verify_checksum(&A.into(), &B.into()), "checksum");
        (tcp.window_len(), copies)
    }

    #[test]
    fn a_partial_ack_to_a_hole_with_much_sacked_behind_it_is_repeated_once() {
        let mut dup = DupAcks::default();
        assert_eq!(pass_counting(&mut dup, ack(1000, 177, None, &[], TcpControl::None)), (177, 0));
        // Up to the second hole at 5000, 35 KB SACKed behind it: three copies, once.
        let partial = ack(5000, 180, Some((6240, 41240)), &[], TcpControl::None);
        assert_eq!(pass_counting(&mut dup, partial.clone()), (180, 3));
        assert_eq!(pass_counting(&mut dup, partial), (180, 0), "once per hole");
        // A forward ACK with little SACKed, or none: smoltcp's own counting will do.
        assert_eq!(pass_counting(&mut dup, ack(7000, 190, Some((8240, 9480)), &[], TcpControl::None)), (190, 0));
        assert_eq!(pass_counting(&mut dup, ack(9000, 190, None, &[], TcpControl::None)), (190, 0));
        // Data carrying an ACK is not a duplicate, however much it SACKs.
        assert_eq!(pass_counting(&mut dup, ack(10000, 190, Some((11240, 50000)), b"x", TcpControl::None)), (190, 0));
        // SACK blocks below the acknowledgment (stale, or wrapped) count for nothing.
        assert_eq!(pass_counting(&mut dup, ack(60000, 190, Some((1000, 50000)), &[], TcpControl::None)), (190, 0));
        // Sequence numbers wrap.
        let mut dup = DupAcks::default();
        let near_wrap = u32::MAX - 100;
        assert_eq!(pass_counting(&mut dup, ack(near_wrap, 190, None, &[], TcpControl::None)), (190, 0));
        let wrapped =
            ack(near_wrap.wrapping_add(2000), 190, Some((near_wrap.wrapping_add(3240), 20000)), &[], TcpControl::None);
        assert_eq!(pass_counting(&mut dup, wrapped), (190, 3));
    }

    #[test]
    fn duplicate_acks_with_sack_keep_the_window_they_follow() {
        let mut dup = DupAcks::default();
        assert_eq!(pass(&mut dup, ack(1000, 177, None, &[], TcpControl::None)), 177);
        // The hole at 1000: the next three ACKs repeat it, SACK what follows, and grow.
        for (window, right) in [(180, 1500), (182, 2000), (185, 2500)] {
            let out = pass(&mut dup, ack(1000, window, Some((1240, right)), &[], TcpControl::None));
            assert_eq!(out, 177, "a duplicate ACK reaches smoltcp with the window before it");
        }
        // The retransmission fills the hole: the ACK that moves forward brings the window.
        assert_eq!(pass(&mut dup, ack(2500, 206, None, &[], TcpControl::None)), 206);
    }

    #[test]
    fn other_segments_pass_unchanged() {
        let mut dup = DupAcks::default();
        assert_eq!(pass(&mut dup, ack(1000, 177, None, &[], TcpControl::None)), 177);
        // No SACK: the same acknowledgment with a larger window is a window update.
        assert_eq!(pass(&mut dup, ack(1000, 300, None, &[], TcpControl::None)), 300);
        // Data, a FIN, a RST: never duplicates.
        assert_eq!(pass(&mut dup, ack(1000, 310, Some((1240, 1500)), b"x", TcpControl::None)), 310);
        assert_eq!(pass(&mut dup, ack(1000, 320, Some((1240, 1500)), &[], TcpControl::Fin)), 320);
        assert_eq!(pass(&mut dup, ack(1000, 330, Some((1240, 1500)), &[], TcpControl::Rst)), 330);
        // A window that shrank stays shrunk, so nothing is sent beyond it.
        assert_eq!(pass(&mut dup, ack(1000, 100, Some((1240, 1500)), &[], TcpControl::None)), 100);
        // A reordered older ACK is left to smoltcp, which ignores its window.
        assert_eq!(pass(&mut dup, ack(900, 500, Some((1240, 1500)), &[], TcpControl::None)), 500);
        assert_eq!(pass(&mut dup, ack(1000, 150, Some((1240, 1600)), &[], TcpControl::None)), 100);
    }
}
