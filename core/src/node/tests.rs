//! Two nodes wired back to back (zero latency): the composed data plane end to end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use smoltcp::wire::TcpControl;

use super::*;
use crate::ip::build::TcpSegment;
use crate::ip::{FilterRule, PortRange};
use crate::ssh::event::SessionEvent;

const A: usize = 0;
const B: usize = 1;
/// A TCP port both nodes serve in the core for the application.
const SERVICE: u16 = 8022;

fn mesh(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, i as u8 + 1)
}

fn underlay(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i as u8 + 1], 41641))
}

fn key(i: usize) -> PrivateKey {
    PrivateKey::from_bytes([i as u8 + 1; 32])
}

struct Pair {
    now: Instant,
    nodes: Vec<Node>,
    tun: Vec<Vec<BytesMut>>,
    events: Vec<Vec<NodeEvent>>,
}

fn allow(src: usize, dst: usize, ports: PortRange) -> FilterRule {
    FilterRule {
        srcs: vec![IpPrefix::host(IpAddr::V4(mesh(src)))].into(),
        dsts: vec![(IpPrefix::host(IpAddr::V4(mesh(dst))), ports)],
        protos: vec![],
    }
}

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

impl Pair {
    fn new() -> Self {
        Self::with(2, |_, _| {})
    }

    /// `n` nodes, each a peer of every other; `tune` adjusts node i's configuration.
    fn with(n: usize, tune: impl Fn(usize, &mut NodeConfig)) -> Self {
        let now = Instant::from_micros(1_000_000);
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| {
                let mut c = NodeConfig::new(key(i), mesh(i), "tail.mesh");
                c.tcp_services = vec![SERVICE];
                c.tcp.buffer_size = 256 << 10;
                tune(i, &mut c);
                Node::new(
                    c,
                    crate::rng::test_rng(i as u64).gen_bytes(),
                    now,
                    UnixTime(Duration::from_secs(1_700_000_000)),
                )
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            let peers = (0..n)
                .filter(|&o| o != i)
                .map(|o| NetmapPeer {
                    name: NAMES[o].to_string(),
                    public_key: key(o).public_key(),
                    endpoint: Some(underlay(o)),
                    mesh_v4: mesh(o),
                    mesh_v6: None,
                    routes: vec![],
                })
                .collect();
            node.set_netmap(now, peers);
        }
        Pair { now, nodes, tun: vec![Vec::new(); n], events: vec![Vec::new(); n] }
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].poll_transmit() {
                    moved = true;
                    if let Some(to) = (0..self.nodes.len()).find(|&j| underlay(j) == t.dst) {
                        self.nodes[to].handle_datagram(self.now, underlay(i), t.payload);
                    }
                }
                while let Some(p) = self.nodes[i].poll_tun_packet() {
                    self.tun[i].push(p);
                }
                while let Some(e) = self.nodes[i].poll_event() {
                    self.events[i].push(e);
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    for n in &mut self.nodes {
                        n.handle_timeout(self.now);
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn tun_send(&mut self, i: usize, packet: &[u8]) {
        self.nodes[i].handle_tun_packet(self.now, crate::wireguard::packet_buffer(packet));
        self.pump();
    }

    fn accepted(&self, i: usize) -> Vec<(ConnId, Option<PeerId>)> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Tcp(TcpEvent::Accepted { conn, peer, .. }) => Some((*conn, *peer)),
                _ => None,
            })
            .collect()
    }
}

fn tcp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, control: TcpControl, ack: Option<u32>) -> Vec<u8> {
    TcpSegment { control, ack, ..TcpSegment::syn(src, sport, dst, dport) }.to_packet()
}

#[test]
fn a_service_port_in_the_core_accepts_with_the_peer_identity() {
    let mut p = Pair::new();
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::single(SERVICE))]));
    let conn =
        p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), SERVICE)).unwrap_or_else(|e| panic!("{e}"));
    p.pump();
    let accepted = p.accepted(B);
    assert_eq!(accepted.len(), 1);
    let a_as_seen_by_b = p.nodes[B].peer_id(&key(A).public_key());
    assert_eq!(accepted[0].1, a_as_seen_by_b, "tagged with A's PeerId");
    assert!(p.events[A].contains(&NodeEvent::Tcp(TcpEvent::Connected { conn })));
    let now = p.now;
    assert_eq!(p.nodes[A].tcp_send(now, conn, b"hello"), Ok(5));
    p.pump();
    let mut buf = [0u8; 16];
    assert_eq!(p.nodes[B].tcp_recv(now, accepted[0].0, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
}

#[test]
fn default_deny_and_replies_of_outbound_flows() {
    let mut p = Pair::new();
    // Nothing allowed on B: A's connection attempt to B:SERVICE never reaches B's stack.
    let _ = p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), SERVICE));
    p.pump();
    assert!(p.accepted(B).is_empty());
    assert!(p.nodes[B].stats().inbound_filtered >= 1);

    // A -> B:80 allowed: A's SYN reaches B's TUN, B's SYN-ACK gets back to A's TUN (a reply
    // of A's outbound flow, although A's own filter allows nothing).
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::single(80))]));
    p.tun_send(A, &tcp_packet(mesh(A), 40000, mesh(B), 80, TcpControl::Syn, None));
    assert_eq!(p.tun[B].len(), 1, "SYN delivered to B's TUN");
    p.tun_send(B, &tcp_packet(mesh(B), 80, mesh(A), 40000, TcpControl::Syn, Some(1001)));
    assert_eq!(p.tun[A].len(), 1, "SYN-ACK reply delivered to A's TUN");
    // B opening a new connection to A is refused by A's default deny.
    let filtered = p.nodes[A].stats().inbound_filtered;
    p.tun_send(B, &tcp_packet(mesh(B), 40001, mesh(A), 80, TcpControl::Syn, None));
    assert_eq!(p.tun[A].len(), 1);
    assert_eq!(p.nodes[A].stats().inbound_filtered, filtered + 1);
}

#[test]
fn a_filter_update_cuts_an_established_connection() {
    let mut p = Pair::new();
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::single(SERVICE))]));
    let conn =
        p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), SERVICE)).unwrap_or_else(|e| panic!("{e}"));
    p.pump();
    let (server_conn, _) = p.accepted(B)[0];
    p.nodes[B].set_filter(p.now, Filter::deny_all());
    p.pump();
    // Zero-latency wire: "within one RTT" is "before any time passes".
    assert!(p.events[B].iter().any(|e| matches!(e, NodeEvent::FlowCut(_))));
    assert!(p.events[B].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn: server_conn })));
    assert!(p.events[A].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn })), "A got the RST");
}

#[test]
fn magic_dns_over_udp_from_the_tun() {
    let mut p = Pair::new();
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["beta", "tail", "mesh"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let packet = crate::ip::build::udp_v4(mesh(A), 5353, MAGIC_DNS_ADDR, 53, &query);
    p.tun_send(A, &packet);
    assert_eq!(p.tun[A].len(), 1);
    let reply = &p.tun[A][0];
    let info = PacketInfo::parse(reply).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (info.src, info.dst, info.src_port, info.dst_port),
        (IpAddr::V4(MAGIC_DNS_ADDR), IpAddr::V4(mesh(A)), 53, 5353)
    );
    let answer = &reply[28..];
    assert_eq!(&answer[..2], &[0xab, 0xcd]);
    assert!(answer.ends_with(&mesh(B).octets()), "A record of beta");
}

#[test]
fn no_route_answers_icmp_unreachable() {
    let mut p = Pair::new();
    p.tun_send(A, &tcp_packet(mesh(A), 40000, Ipv4Addr::new(100, 64, 9, 9), 80, TcpControl::Syn, None));
    assert_eq!(p.nodes[A].stats().outbound_no_route, 1);
    let info = PacketInfo::parse(&p.tun[A][0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.proto, Proto::Icmp);
    assert_eq!(info.icmp, Some(IcmpKind::Error));
    p.advance(Duration::from_secs(1));
}

/// A DNS query (A record) for `name`, with message id `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// `message` behind its 2-byte length, as DNS over TCP carries it.
fn tcp_framed(message: &[u8]) -> Vec<u8> {
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}

/// The operating system's TCP stack on A's TUN side, played by a second TcpStack: connect
/// to 100.100.100.100:53, write `stream` as fast as the connection takes it, and return
/// every byte that came back.
fn dns_over_tcp(p: &mut Pair, stream: &[u8]) -> Vec<u8> {
    let mut os =
        TcpStack::new(TcpConfig { buffer_size: 64 << 10, ..TcpConfig::default() }, &[IpAddr::V4(mesh(A))], 99, p.now);
    let conn = os.connect(p.now, SocketAddr::new(IpAddr::V4(MAGIC_DNS_ADDR), 53)).unwrap_or_else(|e| panic!("{e}"));
    let mut written = None;
    let mut answer = Vec::new();
    for _ in 0..200 {
        while let Some(packet) = os.poll_transmit() {
            p.nodes[A].handle_tun_packet(p.now, packet);
        }
        p.pump();
        for packet in std::mem::take(&mut p.tun[A]) {
            let info = PacketInfo::parse(&packet).unwrap_or_else(|e| panic!("{e}"));
            os.handle_packet(p.now, None, &info, packet);
        }
        while let Some(event) = os.poll_event() {
            if event == (TcpEvent::Connected { conn }) {
                written = Some(0);
            }
        }
        if let Some(at) = written.as_mut().filter(|at| **at < stream.len()) {
            *at += os.send(conn, &stream[*at..]).unwrap_or_else(|e| panic!("{e}"));
            os.flush(p.now);
        }
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = os.recv(conn, &mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        p.advance(Duration::from_millis(5));
        if os.poll_timeout().is_some_and(|at| at <= p.now) {
            os.handle_timeout(p.now);
        }
    }
    assert_eq!(written, Some(stream.len()), "connected to 100.100.100.100:53 and wrote every query");
    answer
}

/// The messages of a DNS-over-TCP stream.
fn tcp_messages(mut stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = stream {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        assert!(rest.len() >= len, "a whole message");
        out.push(&rest[..len]);
        stream = &rest[len..];
    }
    out
}

#[test]
fn magic_dns_over_tcp_from_the_tun() {
    let mut p = Pair::new();
    let answer = dns_over_tcp(&mut p, &tcp_framed(&dns_query(0x4321, "beta.tail.mesh")));
    let messages = tcp_messages(&answer);
    assert_eq!(messages.len(), 1);
    assert_eq!(&messages[0][..2], &[0x43, 0x21]);
    assert!(messages[0].ends_with(&mesh(B).octets()), "A record of beta");
    assert_eq!(p.nodes[A].stats().dns_queries, 1);
}

/// Pipelined queries whose answers overflow a small send buffer: the answers that did not
/// fit wait for the connection to drain, none is lost, and they come back in order.
#[test]
fn magic_dns_over_tcp_keeps_answers_a_short_send_left() {
    let mut p = Pair::with(2, |i, c| {
        if i == A {
            c.tcp.buffer_size = 1024;
        }
    });
    let stream: Vec<u8> = (0..100u16).flat_map(|id| tcp_framed(&dns_query(id, "beta.tail.mesh"))).collect();
    let answer = dns_over_tcp(&mut p, &stream);
    assert!(answer.len() > 4 * 1024, "the answers exceed the send buffer several times over");
    let messages = tcp_messages(&answer);
    let ids: Vec<u16> = messages.iter().map(|m| u16::from_be_bytes([m[0], m[1]])).collect();
    assert_eq!(ids, (0..100).collect::<Vec<u16>>());
    assert!(messages.iter().all(|m| m.ends_with(&mesh(B).octets())));
    assert_eq!(p.nodes[A].stats().dns_queries, 100);
}

/// A UDP answer over 512 bytes to a query without EDNS comes back truncated with TC set,
/// so the client asks again over TCP (where the whole answer comes).
#[test]
fn magic_dns_over_udp_truncates_long_answers() {
    let domain = ["a", "b", "c", "d"].map(|c| c.repeat(60)).join(".");
    let mut p = Pair::with(2, |_, c| c.dns_domain = domain.clone());
    let name = format!("beta.{domain}");
    p.tun_send(A, &crate::ip::build::udp_v4(mesh(A), 5353, MAGIC_DNS_ADDR, 53, &dns_query(7, &name)));
    let reply = p.tun[A].pop().unwrap_or_else(|| panic!("an answer"));
    let payload = &reply[28..];
    assert!(payload.len() <= crate::dns::UDP_RESPONSE_LIMIT, "{} bytes", payload.len());
    let flags = u16::from_be_bytes([payload[2], payload[3]]);
    assert_ne!(flags & 0x0200, 0, "TC set");
    assert_eq!(&payload[6..8], &[0, 0], "no answers");
    let full = dns_over_tcp(&mut p, &tcp_framed(&dns_query(8, &name)));
    let messages = tcp_messages(&full);
    assert!(messages[0].len() > crate::dns::UDP_RESPONSE_LIMIT);
    assert!(messages[0].ends_with(&mesh(B).octets()), "A record of beta over TCP");
}

/// B's netmap entry for A, with A's key, address and routes as given.
fn peer_a(key_of_a: &PrivateKey, addr: Ipv4Addr) -> NetmapPeer {
    NetmapPeer {
        name: "alpha".into(),
        public_key: key_of_a.public_key(),
        endpoint: Some(underlay(A)),
        mesh_v4: addr,
        mesh_v6: None,
        routes: vec![],
    }
}

/// A connects to B's service port; returns B's accepted connection and A's PeerId on B.
fn ssh_connection(p: &mut Pair) -> (ConnId, PeerId) {
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::single(SERVICE))]));
    p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), SERVICE)).unwrap_or_else(|e| panic!("{e}"));
    p.pump();
    let (conn, peer) = p.accepted(B)[0];
    (conn, peer.unwrap_or_else(|| panic!("no peer")))
}

#[test]
fn an_address_handed_to_another_key_ends_everything_of_the_old_peer() {
    let mut p = Pair::new();
    let (conn, old) = ssh_connection(&mut p);
    assert!(p.nodes[B].flow_count() > 0);
    // A's address now belongs to another node (another key).
    let newcomer = PrivateKey::from_bytes([77; 32]);
    let now = p.now;
    p.nodes[B].set_netmap(now, vec![peer_a(&newcomer, mesh(A))]);
    p.pump();
    assert!(p.events[B].contains(&NodeEvent::PeerGone { peer: old }));
    assert!(p.events[B].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn })), "the old peer's connection ended");
    assert_eq!(p.nodes[B].flow_count(), 0, "its flows purged");
    let new = p.nodes[B].peer_id(&newcomer.public_key());
    assert!(new.is_some() && new != Some(old), "the newcomer has its own PeerId");
    let mut buf = [0u8; 8];
    assert_eq!(p.nodes[B].tcp_recv(now, conn, &mut buf), Err(TcpError::NoSuchConnection));
}

#[test]
fn a_peer_whose_addresses_change_comes_back_under_a_new_peer_id() {
    let mut p = Pair::new();
    let (conn, old) = ssh_connection(&mut p);
    let now = p.now;
    // Same key, another address: connections and flows tied to the old one must end.
    p.nodes[B].set_netmap(now, vec![peer_a(&key(A), Ipv4Addr::new(100, 64, 0, 50))]);
    p.pump();
    assert!(p.events[B].contains(&NodeEvent::PeerGone { peer: old }));
    assert!(p.events[B].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn })));
    let new = p.nodes[B].peer_id(&key(A).public_key());
    assert!(new.is_some() && new != Some(old));
    // An endpoint change alone keeps the PeerId and the connection.
    let mut p = Pair::new();
    let (conn, old) = ssh_connection(&mut p);
    let mut moved = peer_a(&key(A), mesh(A));
    moved.endpoint = Some(SocketAddr::from(([192, 0, 2, 99], 41641)));
    let now = p.now;
    p.nodes[B].set_netmap(now, vec![moved]);
    p.pump();
    assert_eq!(p.nodes[B].peer_id(&key(A).public_key()), Some(old));
    assert!(!p.events[B].iter().any(|e| matches!(e, NodeEvent::PeerGone { .. })));
    assert!(!p.events[B].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn })));
}

#[test]
fn magic_dns_over_tcp_is_not_served_to_the_mesh() {
    let mut p = Pair::new();
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::single(53))]));
    // To B's mesh address, port 53: not the core's (it goes to B's TUN, where no resolver
    // of ours listens); B's stack holds no connection.
    p.tun_send(A, &tcp_packet(mesh(A), 40000, mesh(B), 53, TcpControl::Syn, None));
    assert_eq!(p.tun[B].len(), 1, "to B's TUN");
    assert_eq!(p.nodes[B].stats().inbound_to_stack, 0);
}

#[test]
fn icmp_errors_open_no_flows() {
    let mut p = Pair::new();
    // A no-route answer is an ICMP error; sending one into the mesh opens nothing.
    p.tun_send(A, &tcp_packet(mesh(A), 40000, Ipv4Addr::new(100, 64, 9, 9), 80, TcpControl::Syn, None));
    let mut error = p.tun[A].remove(0).to_vec();
    // Readdress it from A to B (checksums are not checked by the parser's flow logic).
    error[12..16].copy_from_slice(&mesh(A).octets());
    error[16..20].copy_from_slice(&mesh(B).octets());
    let info = PacketInfo::parse(&error).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.icmp, Some(IcmpKind::Error));
    let before = p.nodes[A].flow_count();
    p.tun_send(A, &error);
    assert_eq!(p.nodes[A].flow_count(), before, "no flow for an ICMP error");
}

#[test]
fn packets_not_for_this_node_open_no_flows() {
    let mut p = Pair::new();
    // A routes 10.0.0.0/8 through B, and B's filter would allow it: B still drops it
    // (not one of its addresses) and tracks nothing for it.
    let mut b_for_a = peer_a(&key(B), mesh(B));
    b_for_a.name = "beta".into();
    b_for_a.endpoint = Some(underlay(B));
    b_for_a.routes = vec![IpPrefix::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8).unwrap_or_else(|e| panic!("{e}"))];
    let now = p.now;
    p.nodes[A].set_netmap(now, vec![b_for_a]);
    let everything = IpPrefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap_or_else(|e| panic!("{e}"));
    let rule = FilterRule { srcs: vec![everything].into(), dsts: vec![(everything, PortRange::ALL)], protos: vec![] };
    p.nodes[B].set_filter(now, Filter::new(vec![rule]));
    for port in 0..100 {
        p.tun_send(A, &crate::ip::build::udp_v4(mesh(A), 1000 + port, Ipv4Addr::new(10, 1, 2, 3), 53, b"x"));
    }
    assert_eq!(p.nodes[B].stats().inbound_not_for_us, 100);
    assert_eq!(p.nodes[B].flow_count(), 0);
}

const HOST_KEY: [u8; 32] = [42; 32];

/// Node i serves SSH (with these limits) when `ssh(i)`.
fn ssh_mesh(n: usize, ssh: impl Fn(usize) -> bool) -> Pair {
    let mut p = Pair::with(n, |i, c| {
        if ssh(i) {
            let mut config = SshServerConfig::new(ed25519_dalek::SigningKey::from_bytes(&HOST_KEY));
            config.max_unauthenticated_per_peer = 4;
            c.ssh = Some(config);
        }
    });
    for i in 0..n {
        let everyone = IpPrefix::new(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)), 10).unwrap_or_else(|e| panic!("{e}"));
        let rule = FilterRule {
            srcs: vec![everyone].into(),
            dsts: vec![(IpPrefix::host(IpAddr::V4(mesh(i))), PortRange::single(SSH_PORT))],
            protos: vec![],
        };
        let now = p.now;
        p.nodes[i].set_filter(now, Filter::new(vec![rule]));
    }
    p
}

/// Our SSH client on node `from`'s TCP, pinned to the test host key.
struct Client {
    from: usize,
    conn: ConnId,
    session: crate::ssh::client::ClientSession,
    events: Vec<SessionEvent>,
}

impl Client {
    fn open(p: &mut Pair, from: usize, to: usize) -> Self {
        let conn = p.nodes[from]
            .tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(to)), SSH_PORT))
            .unwrap_or_else(|e| panic!("{e}"));
        let host = ed25519_dalek::SigningKey::from_bytes(&HOST_KEY).verifying_key().to_bytes();
        let config =
            crate::ssh::client::ClientConfig { user: "alice".into(), host_key: Some(host), ..Default::default() };
        let session = crate::ssh::client::ClientSession::new(config, crate::rng::test_rng(from as u64 + 50), p.now);
        Client { from, conn, session, events: Vec::new() }
    }

    /// Move bytes between the client session and its TCP connection.
    fn shuttle(&mut self, p: &mut Pair) {
        let now = p.now;
        let mut buf = [0u8; 16 << 10];
        while let Ok(n @ 1..) = p.nodes[self.from].tcp_recv(now, self.conn, &mut buf) {
            self.session.handle_input(now, &buf[..n]);
        }
        while let Some(packet) = self.session.poll_transmit() {
            let _ = p.nodes[self.from].tcp_send(now, self.conn, &packet);
        }
        while let Some(event) = self.session.poll_event() {
            self.events.push(event);
        }
    }
}

/// Run the clients and node `server`'s SSH app (which decides with `decide`) until quiet.
fn run_ssh(p: &mut Pair, clients: &mut [Client], server: usize, decide: impl Fn(PeerId) -> bool) {
    for _ in 0..50 {
        p.pump();
        for c in clients.iter_mut() {
            c.shuttle(p);
        }
        p.pump();
        let events = std::mem::take(&mut p.events[server]);
        for event in &events {
            if let NodeEvent::Ssh(SshEvent::Session { session, peer, event: SessionEvent::AuthRequest { .. } }) = event
            {
                let accept = decide(*peer);
                let now = p.now;
                p.nodes[server].ssh_session(now, *session, |s| {
                    if accept {
                        s.accept_auth(now);
                    } else {
                        s.deny_auth(now, Some("no"));
                    }
                });
            }
        }
        p.events[server].extend(events);
    }
}

fn ssh_events(p: &Pair, node: usize) -> Vec<SshEvent> {
    p.events[node]
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Ssh(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn ssh_sessions_are_bound_to_the_peer_and_decided_by_it() {
    let mut p = ssh_mesh(3, |i| i == B);
    let c_id = p.nodes[B].peer_id(&key(2).public_key()).unwrap_or_else(|| panic!("no peer"));
    let mut clients = vec![Client::open(&mut p, A, B), Client::open(&mut p, 2, B)];
    run_ssh(&mut p, &mut clients, B, |peer| peer == c_id);
    assert!(clients[1].session.is_authenticated(), "{:?}", clients[1].events);
    assert!(clients[0].events.contains(&SessionEvent::AuthFailed), "{:?}", clients[0].events);
    let opened: Vec<PeerId> = ssh_events(&p, B)
        .iter()
        .filter_map(|e| match e {
            SshEvent::Opened { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 2);
    assert!(opened.contains(&c_id) && opened.contains(&p.nodes[B].peer_id(&key(A).public_key()).unwrap_or(c_id)));
    // The application never saw the connections.
    assert!(p.accepted(B).is_empty());
}

#[test]
fn one_peer_holding_its_login_share_does_not_lock_another_out() {
    let mut p = ssh_mesh(3, |i| i == B);
    // A opens ten connections and never logs in (as a client stuck before its ident, or
    // a held check-mode login would).
    for _ in 0..10 {
        p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), SSH_PORT)).unwrap_or_else(|e| panic!("{e}"));
    }
    p.pump();
    // (TCP lets a peer have 8 half-open connections at once; the rest come with the SYN
    // retransmission.)
    p.advance(Duration::from_secs(2));
    let stats = p.nodes[B].ssh_stats().cloned().unwrap_or_default();
    assert_eq!(stats.sessions, 4, "A holds its share of unauthenticated sessions");
    assert_eq!(stats.refused_over_share, 6);
    // Within A's grace period, C logs in.
    let mut clients = vec![Client::open(&mut p, 2, B)];
    run_ssh(&mut p, &mut clients, B, |_| true);
    assert!(clients[0].session.is_authenticated(), "{:?}", clients[0].events);
}

#[test]
fn a_peer_leaving_the_netmap_ends_its_ssh_sessions() {
    let mut p = ssh_mesh(2, |i| i == B);
    let mut clients = vec![Client::open(&mut p, A, B)];
    run_ssh(&mut p, &mut clients, B, |_| true);
    assert!(clients[0].session.is_authenticated());
    let a_id = p.nodes[B].peer_id(&key(A).public_key()).unwrap_or_else(|| panic!("no peer"));
    let now = p.now;
    p.nodes[B].set_netmap(now, vec![]);
    p.pump();
    let events = ssh_events(&p, B);
    assert!(events.iter().any(|e| matches!(e, SshEvent::Closed { peer, .. } if *peer == a_id)), "{events:?}");
    assert!(p.events[B].contains(&NodeEvent::PeerGone { peer: a_id }));
}

#[test]
fn a_filter_that_no_longer_allows_the_peer_ends_its_ssh_session() {
    let mut p = ssh_mesh(2, |i| i == B);
    let mut clients = vec![Client::open(&mut p, A, B)];
    run_ssh(&mut p, &mut clients, B, |_| true);
    assert!(clients[0].session.is_authenticated());
    let now = p.now;
    p.nodes[B].set_filter(now, Filter::deny_all());
    p.pump();
    assert!(ssh_events(&p, B).iter().any(|e| matches!(e, SshEvent::Closed { .. })));
}

#[test]
fn a_login_that_timed_out_frees_its_share_even_if_the_peer_keeps_its_tcp_side_open() {
    let mut p = ssh_mesh(2, |i| i == B);
    let connect = |p: &mut Pair| {
        let now = p.now;
        p.nodes[A].tcp_connect(now, SocketAddr::new(IpAddr::V4(mesh(B)), SSH_PORT)).unwrap_or_else(|e| panic!("{e}"));
    };
    for _ in 0..4 {
        connect(&mut p);
    }
    p.pump();
    assert_eq!(p.nodes[B].ssh_stats().map(|s| s.sessions), Some(4));
    // The login grace time passes; A never speaks and never closes.
    p.advance(Duration::from_secs(125));
    for _ in 0..4 {
        connect(&mut p);
    }
    p.pump();
    let stats = p.nodes[B].ssh_stats().cloned().unwrap_or_default();
    assert_eq!((stats.sessions, stats.refused_over_share), (8, 0), "the timed-out logins gave their share back");
}

/// Ping-shaped UDP from A's TUN to B: whether it reached B's TUN.
fn a_reaches_b(p: &mut Pair) -> bool {
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::ALL)]));
    let before = p.tun[B].len();
    p.tun_send(A, &build::udp_v4(mesh(A), 4000, mesh(B), 4001, b"hello"));
    p.tun[B].len() > before
}

#[test]
fn peer_options_set_the_preshared_key_on_both_sides() {
    let psk = || PeerOptions { preshared_key: Some(PresharedKey::from_bytes([7; 32])), persistent_keepalive: None };
    let mut p = Pair::new();
    let now = p.now;
    p.nodes[A].set_peer_options(now, key(B).public_key(), psk());
    p.nodes[B].set_peer_options(now, key(A).public_key(), psk());
    assert!(a_reaches_b(&mut p), "same PSK on both sides: the handshake completes");

    // Only one side has a PSK: the handshake cannot complete.
    let mut p = Pair::new();
    let now = p.now;
    p.nodes[A].set_peer_options(now, key(B).public_key(), psk());
    assert!(!a_reaches_b(&mut p));
}

#[test]
fn peer_options_persistent_keepalive_survives_a_new_netmap() {
    let mut p = Pair::new();
    let now = p.now;
    let options = PeerOptions { preshared_key: None, persistent_keepalive: Some(Duration::from_secs(5)) };
    p.nodes[A].set_peer_options(now, key(B).public_key(), options);
    let peers = vec![NetmapPeer {
        name: NAMES[B].to_string(),
        public_key: key(B).public_key(),
        endpoint: Some(underlay(B)),
        mesh_v4: mesh(B),
        mesh_v6: None,
        routes: vec![],
    }];
    p.nodes[A].set_netmap(now, peers);
    let sent =
        |p: &Pair| p.nodes[A].wireguard().stats().initiations_sent + p.nodes[A].wireguard().stats().keepalives_sent;
    let before = sent(&p);
    p.advance(Duration::from_secs(6));
    assert!(sent(&p) > before, "the keepalive starts a handshake with nothing else to send");
}

#[test]
fn listeners_opened_and_closed_while_running() {
    let mut p = Pair::new();
    const LATE: u16 = 9000;
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::single(LATE))]));
    let to_b = SocketAddr::new(IpAddr::V4(mesh(B)), LATE);
    // Not served yet: the SYN goes to B's TUN side, the core accepts nothing.
    let _ = p.nodes[A].tcp_connect(p.now, to_b);
    p.pump();
    assert!(p.accepted(B).is_empty());
    assert!(!p.nodes[B].tcp_listening(LATE));
    assert_eq!(p.nodes[B].tcp_listen(0), Err(TcpError::PortReserved));

    assert_eq!(p.nodes[B].tcp_listen(LATE), Ok(()));
    assert_eq!(p.nodes[B].tcp_listen(LATE), Ok(()), "idempotent");
    assert!(p.nodes[B].tcp_listening(LATE));
    let conn = p.nodes[A].tcp_connect(p.now, to_b).unwrap_or_else(|e| panic!("{e}"));
    p.pump();
    let accepted = p.accepted(B);
    assert_eq!(accepted.len(), 1, "served once listened");
    assert_eq!(accepted[0].1, p.nodes[B].peer_id(&key(A).public_key()));

    // Closing the listener keeps the accepted connection and refuses new ones.
    p.nodes[B].tcp_unlisten(LATE);
    assert!(!p.nodes[B].tcp_listening(LATE));
    let now = p.now;
    assert_eq!(p.nodes[A].tcp_send(now, conn, b"still"), Ok(5));
    p.pump();
    let mut buf = [0u8; 8];
    assert_eq!(p.nodes[B].tcp_recv(now, accepted[0].0, &mut buf), Ok(5));
    let _ = p.nodes[A].tcp_connect(p.now, to_b);
    p.pump();
    assert_eq!(p.accepted(B).len(), 1, "no new connection after unlisten");
}

#[test]
fn data_before_the_peers_fin_stays_readable_after_a_graceful_end() {
    let mut p = Pair::new();
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::single(SERVICE))]));
    let conn =
        p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), SERVICE)).unwrap_or_else(|e| panic!("{e}"));
    p.pump();
    let (server, _) = p.accepted(B)[0];
    // A closes its direction first; B then sends and closes: A ends in TIME-WAIT with
    // everything B sent still unread.
    let now = p.now;
    assert_eq!(p.nodes[A].tcp_close(now, conn), Ok(()));
    p.pump();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        sent += p.nodes[B].tcp_send(p.now, server, &data[sent..]).unwrap_or_else(|e| panic!("{e}"));
        p.pump();
        p.advance(Duration::from_millis(10));
    }
    assert_eq!(p.nodes[B].tcp_close(p.now, server), Ok(()));
    p.pump();
    p.advance(Duration::from_millis(100));
    assert!(!p.events[A].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn })), "not ended before it is read");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match p.nodes[A].tcp_recv(p.now, conn, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    p.pump();
    assert_eq!(got, data, "every byte before the FIN");
    assert_eq!(p.nodes[A].tcp_peer_finished(conn), Ok(true));
    assert!(p.events[A].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn })), "ended once read");
}

#[test]
fn without_a_tun_side_a_syn_to_an_unserved_port_is_refused() {
    let mut p = Pair::with(2, |i, c| c.refuse_unserved_tcp = i == B);
    p.nodes[B].set_filter(p.now, Filter::new(vec![allow(A, B, PortRange::ALL)]));
    let conn =
        p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), 7999)).unwrap_or_else(|e| panic!("{e}"));
    p.pump();
    assert_eq!(p.nodes[B].stats().inbound_refused, 1);
    assert!(p.tun[B].is_empty(), "nothing for a TUN side");
    assert!(p.events[A].contains(&NodeEvent::Tcp(TcpEvent::Closed { conn })), "A's connect is refused at once");
    // A served port still works.
    let _ = p.nodes[A].tcp_connect(p.now, SocketAddr::new(IpAddr::V4(mesh(B)), SERVICE));
    p.pump();
    assert_eq!(p.accepted(B).len(), 1);
}

#[test]
fn a_dns_over_tcp_client_that_closes_gets_its_answer_and_a_close_not_a_spinning_node() {
    let mut p = Pair::new();
    let mut os =
        TcpStack::new(TcpConfig { buffer_size: 64 << 10, ..TcpConfig::default() }, &[IpAddr::V4(mesh(A))], 99, p.now);
    let conn = os.connect(p.now, SocketAddr::new(IpAddr::V4(MAGIC_DNS_ADDR), 53)).unwrap_or_else(|e| panic!("{e}"));
    let query = tcp_framed(&dns_query(7, "beta.tail.mesh."));
    let (mut sent, mut answer, mut finished) = (false, Vec::new(), false);
    for _ in 0..100 {
        while let Some(packet) = os.poll_transmit() {
            // Before the fix the node never returned from this call.
            p.nodes[A].handle_tun_packet(p.now, packet);
        }
        p.pump();
        for packet in std::mem::take(&mut p.tun[A]) {
            let info = PacketInfo::parse(&packet).unwrap_or_else(|e| panic!("{e}"));
            os.handle_packet(p.now, None, &info, packet);
        }
        while let Some(event) = os.poll_event() {
            match event {
                TcpEvent::Connected { .. } if !sent => {
                    // The query and the FIN together, as a one-shot client sends them.
                    assert_eq!(os.send(conn, &query), Ok(query.len()));
                    assert_eq!(os.close(p.now, conn), Ok(()));
                    sent = true;
                }
                _ => {}
            }
        }
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = os.recv(conn, &mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        finished |= os.peer_finished(conn) == Ok(true);
        p.advance(Duration::from_millis(5));
        if os.poll_timeout().is_some_and(|at| at <= p.now) {
            os.handle_timeout(p.now);
        }
    }
    assert!(sent);
    assert_eq!(tcp_messages(&answer).len(), 1, "the query sent with the FIN is answered");
    assert!(finished, "and the node closes its side");
}
