//! The stack against itself: handshakes, data, PeerId tagging, many concurrent accepts and
//! a SYN flood, with two or more stacks wired back to back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::ip::PacketInfo;
use crate::time::Instant;
use crate::wireguard::PeerId;

const SERVER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 100);

fn client_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 1, i as u8 + 1)
}

fn small() -> TcpConfig {
    TcpConfig { buffer_size: 64 << 10, ..TcpConfig::default() }
}

/// Stack 0 is the server; stack i > 0 is a client whose packets arrive as PeerId(i).
struct Net {
    now: Instant,
    stacks: Vec<TcpStack>,
    events: Vec<Vec<TcpEvent>>,
}

impl Net {
    fn new(clients: usize, server_config: TcpConfig) -> Self {
        let now = Instant::from_micros(1_000_000);
        let mut stacks = vec![TcpStack::new(server_config, &[IpAddr::V4(SERVER)], 1, now)];
        for i in 0..clients {
            stacks.push(TcpStack::new(small(), &[IpAddr::V4(client_addr(i))], 100 + i as u64, now));
        }
        stacks[0].listen(IpAddr::V4(SERVER), 22);
        let events = vec![Vec::new(); clients + 1];
        Self { now, stacks, events }
    }

    /// Move packets until quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for from in 0..self.stacks.len() {
                while let Some(mut packet) = self.stacks[from].poll_transmit() {
                    moved = true;
                    let packet = packet.split_off(crate::wireguard::DATA_HEADER_LEN);
                    let info = PacketInfo::parse(&packet).unwrap_or_else(|e| panic!("stack emitted junk: {e}"));
                    let to = if info.dst == IpAddr::V4(SERVER) {
                        Some(0)
                    } else {
                        (1..self.stacks.len()).find(|&i| info.dst == IpAddr::V4(client_addr(i - 1)))
                    };
                    // Packets to addresses no stack owns (a flooder's) are lost.
                    let Some(to) = to else { continue };
                    let peer = Some(PeerId(from as u64));
                    self.stacks[to].handle_packet(self.now, peer, &info, packet);
                }
            }
            for (i, s) in self.stacks.iter_mut().enumerate() {
                while let Some(e) = s.poll_event() {
                    self.events[i].push(e);
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for s in &mut self.stacks {
            s.handle_timeout(self.now);
        }
        self.pump();
    }

    fn accepted(&self) -> Vec<(ConnId, Option<PeerId>, SocketAddr)> {
        self.events[0]
            .iter()
            .filter_map(|e| match e {
                TcpEvent::Accepted { conn, peer, remote, .. } => Some((*conn, *peer, *remote)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn connect_accept_exchange_and_close() {
    let mut net = Net::new(1, small());
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    let conn = net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    assert!(net.events[1].contains(&TcpEvent::Connected { conn }));
    let accepted = net.accepted();
    assert_eq!(accepted.len(), 1);
    let (server_conn, peer, from) = accepted[0];
    assert_eq!(peer, Some(PeerId(1)), "tagged with the peer that carried the SYN");
    assert_eq!(from.ip(), IpAddr::V4(client_addr(0)));
    assert_eq!(net.stacks[0].peer_of(server_conn), Some(PeerId(1)));

    assert_eq!(net.stacks[1].send(conn, b"SSH-2.0-test\r\n"), Ok(14));
    net.stacks[1].flush(net.now);
    net.pump();
    assert!(net.events[0].contains(&TcpEvent::Readable { conn: server_conn }));
    let mut buf = [0u8; 64];
    assert_eq!(net.stacks[0].recv(server_conn, &mut buf), Ok(14));
    assert_eq!(&buf[..14], b"SSH-2.0-test\r\n");

    assert_eq!(net.stacks[1].close(net.now, conn), Ok(()));
    net.pump();
    assert_eq!(net.stacks[0].close(net.now, server_conn), Ok(()));
    net.pump();
    net.advance(Duration::from_secs(1));
    assert!(net.events[0].contains(&TcpEvent::Closed { conn: server_conn }));
    assert_eq!(net.stacks[0].connection_count(), 0, "closed connections are freed");
}

#[test]
fn a_hundred_concurrent_connections_are_accepted_and_tagged() {
    let mut net = Net::new(10, TcpConfig { max_pending: 200, max_pending_per_peer: 10, ..small() });
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    for round in 0..10 {
        for client in 1..=10 {
            let _ = round;
            net.stacks[client].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    net.pump();
    let accepted = net.accepted();
    assert_eq!(accepted.len(), 100);
    for (conn, peer, remote) in accepted {
        let client = peer.map_or(0, |p| p.0 as usize);
        assert_eq!(remote.ip(), IpAddr::V4(client_addr(client - 1)), "{conn:?} tagged {peer:?}");
    }
}

fn syn(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    crate::ip::build::TcpSegment::syn(src, sport, SERVER, 22).to_packet()
}

#[test]
fn a_syn_flood_is_bounded() {
    let mut net = Net::new(1, TcpConfig { max_pending: 16, ..small() });
    let attacker = Ipv4Addr::new(100, 64, 9, 9);
    for port in 0..2000u16 {
        let packet = syn(attacker, 10_000 + port);
        let info = PacketInfo::parse(&packet).unwrap_or_else(|e| panic!("{e}"));
        net.stacks[0].handle_packet(net.now, Some(PeerId(99)), &info, bytes::BytesMut::from(&packet[..]));
        net.pump();
    }
    let count = net.stacks[0].connection_count();
    assert!(count <= 16 + 4, "half-open connections bounded: {count}");
    assert!(net.accepted().is_empty());
    // A legitimate client gets in once the half-open connections time out.
    net.advance(Duration::from_secs(200));
    assert_eq!(net.stacks[0].connection_count(), 0);
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    assert_eq!(net.accepted().len(), 1, "served again after the flood");
}

/// Both directions carry data, each side receives the other's segments, and every ACK
/// of them is lost. Both time out, go back to their oldest unacknowledged byte and
/// retransmit what the other already holds; the other answers with an ACK that must be
/// acceptable (its sequence number not behind the receiver's RCV.NXT), or each side
/// discards the other's ACKs and the connection stalls until its timeout.
#[test]
fn bidirectional_data_recovers_when_the_acks_of_both_sides_are_lost() {
    let mut net = Net::new(1, small());
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    let client = net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    let (server, _, _) = net.accepted()[0];
    let ends = [(0, server), (1, client)];
    let chunk: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();

    // Both send at once: neither's segments carry an ACK of the other's.
    for &(s, conn) in &ends {
        assert_eq!(net.stacks[s].send(conn, &chunk), Ok(chunk.len()));
        net.stacks[s].flush(net.now);
    }
    let in_flight: Vec<Vec<bytes::BytesMut>> =
        (0..2).map(|s| std::iter::from_fn(|| net.stacks[s].poll_transmit()).collect()).collect();
    assert!(in_flight.iter().all(|p| !p.is_empty()), "both sides sent data");
    // Each side receives the other's data; every answer (the ACKs) is lost.
    for (from, packets) in in_flight.into_iter().enumerate() {
        for mut packet in packets {
            let packet = packet.split_off(crate::wireguard::DATA_HEADER_LEN);
            let info = PacketInfo::parse(&packet).unwrap_or_else(|e| panic!("{e}"));
            net.stacks[1 - from].handle_packet(net.now, Some(PeerId(from as u64)), &info, packet);
        }
    }
    for s in &mut net.stacks {
        while s.poll_transmit().is_some() {}
    }

    // Then the link is clean. More data follows; both streams must complete well before
    // the connection's 120 s timeout (a few retransmission timeouts at most).
    for &(s, conn) in &ends {
        assert_eq!(net.stacks[s].send(conn, &chunk), Ok(chunk.len()));
        net.stacks[s].flush(net.now);
    }
    let mut received = [0usize; 2];
    let mut buf = vec![0u8; 16 << 10];
    for _ in 0..200 {
        net.advance(Duration::from_millis(100));
        for &(s, conn) in &ends {
            while let Ok(n @ 1..) = net.stacks[s].recv(conn, &mut buf) {
                received[s] += n;
            }
        }
        if received == [2 * chunk.len(); 2] {
            return;
        }
    }
    panic!("stalled: received {received:?} of {} each way after 20 s", 2 * chunk.len());
}

/// Hand the server a segment as if `peer` had delivered it; returns what it sent back.
fn deliver(net: &mut Net, peer: u64, packet: &[u8]) -> Vec<bytes::BytesMut> {
    let info = PacketInfo::parse(packet).unwrap_or_else(|e| panic!("{e}"));
    net.stacks[0].handle_packet(net.now, Some(PeerId(peer)), &info, bytes::BytesMut::from(packet));
    std::iter::from_fn(|| net.stacks[0].poll_transmit())
        .map(|mut p| p.split_off(crate::wireguard::DATA_HEADER_LEN))
        .collect()
}

/// The first SYN's answer was slow (the tunnel's handshake needed a retry), so the client's
/// SYN and both its retransmissions arrive together. Every copy must reach the one
/// half-open connection the first made, never a second listening socket: two SYN-ACKs
/// with different sequence numbers and a reset connection are what a real `ssh` saw.
#[test]
fn retransmitted_syns_reach_their_half_open_connection_not_a_new_listener() {
    let mut net = Net::new(1, small());
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    let client = net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    let mut first = net.stacks[1].poll_transmit().unwrap_or_else(|| panic!("no SYN"));
    let syn = first.split_off(crate::wireguard::DATA_HEADER_LEN);
    // Three copies arrive; the server's answers all go back to the client.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.extend(deliver(&mut net, 1, &syn));
    }
    assert_eq!(net.stacks[0].connection_count(), 1, "one connection for one 4-tuple");
    let seqs: std::collections::BTreeSet<u32> = answers
        .iter()
        .filter_map(|p| {
            let info = PacketInfo::parse(p).ok()?;
            let tcp = smoltcp::wire::TcpPacket::new_checked(p.get(20..info.total_len)?).ok()?;
            (tcp.syn() && tcp.ack()).then(|| tcp.seq_number().0 as u32)
        })
        .collect();
    assert_eq!(seqs.len(), 1, "every SYN-ACK carries the same sequence number: {seqs:?}");
    for answer in answers {
        let info = PacketInfo::parse(&answer).unwrap_or_else(|e| panic!("{e}"));
        net.stacks[1].handle_packet(net.now, Some(PeerId(0)), &info, answer);
    }
    net.pump();
    assert!(net.events[1].contains(&TcpEvent::Connected { conn: client }));
    assert_eq!(net.accepted().len(), 1);
    assert_eq!(net.stacks[1].send(client, b"hello"), Ok(5));
    net.stacks[1].flush(net.now);
    net.pump();
    net.advance(Duration::from_secs(1));
    let (server, _, _) = net.accepted()[0];
    let mut buf = [0u8; 16];
    assert_eq!(net.stacks[0].recv(server, &mut buf), Ok(5), "the connection carries data, not a reset");
    assert!(!net.events[1].contains(&TcpEvent::Closed { conn: client }));
}

#[test]
fn segments_of_a_connection_from_another_peer_are_dropped_and_counted() {
    let mut net = Net::new(1, small());
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    let client = net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    let (server, peer, _) = net.accepted()[0];
    assert_eq!(peer, Some(PeerId(1)));
    // The same bytes the client would send, but delivered by peer 7 (a peer that took over
    // the address, or any other): the connection never sees them.
    assert_eq!(net.stacks[1].send(client, b"forged"), Ok(6));
    net.stacks[1].flush(net.now);
    let packets: Vec<_> = std::iter::from_fn(|| net.stacks[1].poll_transmit()).collect();
    assert!(!packets.is_empty());
    for mut packet in packets {
        let packet = packet.split_off(crate::wireguard::DATA_HEADER_LEN);
        let answers = deliver(&mut net, 7, &packet);
        assert!(answers.is_empty(), "no answer to a foreign segment");
    }
    let mut buf = [0u8; 16];
    assert_eq!(net.stacks[0].recv(server, &mut buf), Ok(0));
    assert!(net.stacks[0].stats().foreign_segments >= 1);
    // The rightful peer's retransmission still gets through.
    net.advance(Duration::from_secs(2));
    assert_eq!(net.stacks[0].recv(server, &mut buf), Ok(6));
}

#[test]
fn one_peer_holding_its_whole_share_does_not_lock_another_out() {
    let config = TcpConfig { max_pending: 64, max_pending_per_peer: 8, max_connections_per_peer: 16, ..small() };
    let mut net = Net::new(1, config);
    let attacker = Ipv4Addr::new(100, 64, 9, 9);
    // Half-open connections that never complete, from every source port.
    for port in 0..1000u16 {
        deliver(&mut net, 9, &syn(attacker, 10_000 + port));
    }
    assert_eq!(net.stacks[0].connection_count(), 8, "the attacker holds its half-open share");
    assert!(net.stacks[0].stats().syns_over_peer_share >= 992);
    // Another peer connects at once, within the attacker's grace period.
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    let conn = net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    assert!(net.events[1].contains(&TcpEvent::Connected { conn }), "the other peer gets in");
    assert_eq!(net.accepted().len(), 1);
}

#[test]
fn established_connections_per_peer_are_bounded() {
    let config = TcpConfig { max_connections_per_peer: 5, max_pending_per_peer: 5, ..small() };
    let mut net = Net::new(2, config);
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    for _ in 0..8 {
        net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    }
    net.pump();
    net.advance(Duration::from_secs(5));
    assert_eq!(net.accepted().len(), 5, "peer 1 holds its five");
    let conn = net.stacks[2].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    assert!(net.events[2].contains(&TcpEvent::Connected { conn }));
}

#[test]
fn time_wait_answers_a_retransmitted_fin_and_keeps_the_4_tuple() {
    let mut net = Net::new(1, small());
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    let client = net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    let (server, _, _) = net.accepted()[0];
    // The server closes first, so it is the side that ends in TIME-WAIT.
    assert_eq!(net.stacks[0].close(net.now, server), Ok(()));
    net.pump();
    assert_eq!(net.stacks[1].close(net.now, client), Ok(()));
    // Catch the client's FIN on its way, deliver it, then deliver it again (as if the
    // server's last ACK had been lost).
    let fins: Vec<_> = std::iter::from_fn(|| net.stacks[1].poll_transmit()).collect();
    let fin = fins.last().cloned().unwrap_or_else(|| panic!("no FIN")).split_off(crate::wireguard::DATA_HEADER_LEN);
    for f in fins {
        let f = f.clone().split_off(crate::wireguard::DATA_HEADER_LEN);
        deliver(&mut net, 1, &f);
    }
    net.pump();
    assert!(net.events[0].contains(&TcpEvent::Closed { conn: server }), "closed for the layer above");
    assert_eq!(net.stacks[0].connection_count(), 1, "the socket lingers in TIME-WAIT");
    let answers = deliver(&mut net, 1, &fin);
    let rst = answers.iter().any(|p| smoltcp::wire::TcpPacket::new_checked(&p[20..]).is_ok_and(|t| t.rst()));
    assert!(!rst, "a retransmitted FIN in TIME-WAIT is acknowledged, not reset");
    assert!(!answers.is_empty(), "and answered");
    assert_eq!(net.stacks[0].recv(server, &mut [0u8; 4]), Err(TcpError::NoSuchConnection));
    // After TIME-WAIT the socket is freed.
    net.advance(Duration::from_secs(11));
    assert_eq!(net.stacks[0].connection_count(), 0);
}

#[test]
fn serves_only_its_own_connections_by_exact_4_tuple() {
    let mut net = Net::new(1, small());
    // The server opens a connection out; its local port is in the kernel's ephemeral range.
    let out = SocketAddr::new(IpAddr::V4(client_addr(0)), 8080);
    net.stacks[0].connect(net.now, out).unwrap_or_else(|e| panic!("{e}"));
    let mut syn = net.stacks[0].poll_transmit().unwrap_or_else(|| panic!("no SYN"));
    let syn = syn.split_off(crate::wireguard::DATA_HEADER_LEN);
    let info = PacketInfo::parse(&syn).unwrap_or_else(|e| panic!("{e}"));
    let port = info.src_port;
    let ours = crate::ip::build::TcpSegment {
        control: smoltcp::wire::TcpControl::None,
        ack: Some(1),
        ..crate::ip::build::TcpSegment::syn(client_addr(0), 8080, SERVER, port)
    };
    let theirs = crate::ip::build::TcpSegment { src_port: 9090, ..ours };
    let parse = |p: &[u8]| PacketInfo::parse(p).unwrap_or_else(|e| panic!("{e}"));
    assert!(net.stacks[0].serves(&parse(&ours.to_packet())));
    assert!(!net.stacks[0].serves(&parse(&theirs.to_packet())), "same port, another remote: the kernel's");
}

/// An IPv4 ACK from `from` to the server's port 22, with `sack` as its one SACK block.
fn client_ack(from: SocketAddr, seq: u32, ack: u32, window: u16, sack: Option<(u32, u32)>) -> Vec<u8> {
    let SocketAddr::V4(from) = from else { panic!("IPv4 only") };
    let to = std::net::SocketAddrV4::new(SERVER, 22);
    super::dup_ack::tests::ipv4_ack(from, to, seq, ack, window, sack, &[], smoltcp::wire::TcpControl::None)
}

/// (seq, payload length, ack) of the TCP segment in an IPv4 packet the stack sent.
fn data_of(packet: &[u8]) -> (u32, usize, u32) {
    let tcp = smoltcp::wire::TcpPacket::new_checked(&packet[20..]).unwrap_or_else(|e| panic!("{e}"));
    (tcp.seq_number().0 as u32, tcp.payload().len(), tcp.ack_number().0 as u32)
}

/// A Linux receiver's window grows while a transfer ramps up, so after a loss each of its
/// duplicate ACKs (same acknowledgment, SACK blocks for the data behind the hole)
/// advertises a slightly larger window, as a capture of a lossy SSH download showed.
/// The third of them must retransmit the hole at once, not after the 1 s timeout.
#[test]
fn three_sacked_duplicate_acks_with_growing_windows_retransmit_the_hole_at_once() {
    let mut net = Net::new(1, small());
    let remote = SocketAddr::new(IpAddr::V4(SERVER), 22);
    let client = net.stacks[1].connect(net.now, remote).unwrap_or_else(|e| panic!("{e}"));
    net.pump();
    let (server, _, from) = net.accepted()[0];
    let _ = client;
    // Everything the server sends is lost on the way to the client stack; we answer as
    // the client's kernel would. Acknowledge whole flights until the congestion window
    // lets at least four segments out at once.
    let data = |packets: Vec<bytes::BytesMut>| -> Vec<(u32, usize, u32)> {
        packets.iter().map(|p| data_of(p)).filter(|&(_, len, _)| len > 0).collect()
    };
    assert_eq!(net.stacks[0].send(server, &[7u8; 60000]), Ok(60000));
    net.stacks[0].flush(net.now);
    let mut sent = data(
        std::iter::from_fn(|| net.stacks[0].poll_transmit())
            .map(|mut p| p.split_off(crate::wireguard::DATA_HEADER_LEN))
            .collect(),
    );
    for _ in 0..10 {
        if sent.len() >= 5 {
            break;
        }
        let Some(&(seq, len, client_seq)) = sent.last() else { panic!("nothing sent") };
        sent = data(deliver(&mut net, 1, &client_ack(from, client_seq, seq + len as u32, 30000, None)));
    }
    assert!(sent.len() >= 5, "the server sent {} data segments", sent.len());
    let (hole, _, client_seq) = sent[0];
    let resent = |replies: &[bytes::BytesMut], seq: u32| {
        replies.iter().map(|p| data_of(p)).any(|(s, len, _)| s == seq && len > 0)
    };
    // The ACK that released this flight acknowledged everything before it, window 30000.
    // The first two segments were lost; the next three arrived, each answered by a
    // duplicate ACK with a larger window.
    let mut retransmitted = false;
    for (i, &(seq, len, _)) in sent.iter().enumerate().skip(2).take(3) {
        let sack = Some((sent[2].0, seq + len as u32));
        let replies = deliver(&mut net, 1, &client_ack(from, client_seq, hole, 30000 + 2 * i as u16, sack));
        retransmitted |= resent(&replies, hole);
        assert_eq!(retransmitted, i == 4, "retransmitted after duplicate {}", i - 1);
    }
    // The retransmission arrives: the ACK moves to the second hole, everything behind it
    // SACKed. Nothing else is in flight to draw duplicates, so it is resent at once.
    let (second, _, _) = sent[1];
    let (last, len, _) = sent[4];
    let sacked = (last + len as u32) - sent[2].0;
    assert!(sacked > 2 * 1220, "{sacked} bytes SACKed");
    let replies =
        deliver(&mut net, 1, &client_ack(from, client_seq, second, 30010, Some((sent[2].0, last + len as u32))));
    assert!(resent(&replies, second), "the second hole waits for the retransmission timeout");
}
