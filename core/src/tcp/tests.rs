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
        stacks[0].listen(22);
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
                    let peer = Some(PeerId(from as u32));
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
    let mut net = Net::new(10, TcpConfig { max_pending: 200, ..small() });
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
            net.stacks[1 - from].handle_packet(net.now, Some(PeerId(from as u32)), &info, packet);
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
