//! Driving one node by the sans-IO contract, and carrying its outputs.
//!
//! After every input the world gives a node, [`Driver::drive`] drains the core node's
//! `poll_transmit` (each datagram goes onto its link, or is dropped), `poll_tun_packet`
//! (application packets are checked and counted per pair; anything else is counted and
//! captured) and `poll_event` (WireGuard events are counted and traced; TCP and SSH events go
//! to the node's applications, which may call back into the node) until all are empty, then
//! asks `poll_timeout` once and makes sure a timer event is scheduled for the deadline. The
//! driver borrows the parts of the world a node's outputs touch, apart from the node and its
//! applications ([`NodeApps`]), which every entry point is handed together.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::node::NodeEvent;
use mesh_core::rng::Rng;
use mesh_core::tcp::{ConnId, TcpEvent};
use mesh_core::time::Instant;
use mesh_core::wireguard::{packet_buffer, DropCounts, DropReason, Event as WgEvent, PeerId, Transmit};
use tracing::debug;

use crate::addresses::{mesh_addr, node_at_mesh, node_at_mesh_socket, node_at_underlay, underlay_addr};
use crate::apps::{
    AcceptedConn, Client, Sink, Stream, TcpApps, TcpNodeApps, Transfer, TransferError, TransferId, CHUNK, HEADER_LEN,
};
use crate::error::SimError;
use crate::events::{Event, EventQueue};
use crate::ids::{NodeId, SshClientId};
use crate::link::{DropCause, Fate};
use crate::network::Network;
use crate::node::Node;
use crate::node_apps::NodeApps;
use crate::ssh_apps::{ssh_deadline, NodeCtx, SshApps, SshClientConfig};
use crate::stats::{PairMatrix, SimStats, ALL_REASONS};
use crate::trace::{Fingerprint, Trace, TraceRecord};
use crate::traffic::AppPacket;

/// The parts of the world a node's outputs touch, borrowed apart from the node itself.
pub(crate) struct Driver<'a> {
    pub(crate) now: Instant,
    pub(crate) net: &'a mut Network,
    pub(crate) queue: &'a mut EventQueue<Event>,
    pub(crate) trace: &'a mut Trace,
    pub(crate) stats: &'a mut SimStats,
    pub(crate) pairs: &'a mut PairMatrix,
    /// The TCP apps' records and scratch buffers.
    pub(crate) tcp: &'a mut TcpApps,
    /// The SSH apps' servers, records and RNG.
    pub(crate) ssh: &'a mut SshApps,
    pub(crate) link_rng: &'a mut Rng,
}

/// Which drop counters are about inputs from the network (vs. packets going out).
fn is_outbound_reason(reason: DropReason) -> bool {
    matches!(reason, DropReason::NoRoute | DropReason::NoEndpoint | DropReason::TooLarge)
}

/// The first reason whose counter rose between `before` and `after` that `pick` accepts.
fn rose(before: &DropCounts, after: &DropCounts, pick: impl Fn(DropReason) -> bool) -> Option<DropReason> {
    if before.total() == after.total() {
        return None;
    }
    ALL_REASONS.iter().copied().find(|r| pick(*r) && after.get(*r) > before.get(*r))
}

fn drops_of(node: &Node) -> DropCounts {
    node.wireguard().map(|wg| wg.stats().drops.clone()).unwrap_or_default()
}

impl Driver<'_> {
    /// Put a datagram `from` a node on the underlay.
    pub(crate) fn route(&mut self, from: NodeId, transmit: Transmit) {
        let Transmit { dst, payload } = transmit;
        self.stats.datagrams_sent += 1;
        let Some(to) = node_at_underlay(dst).filter(|to| self.net.contains(*to) && *to != from) else {
            self.drop_datagram(from, None, DropCause::Unroutable);
            return;
        };
        self.trace.record(
            self.now,
            TraceRecord::Sent { from, to, len: payload.len() as u32, fingerprint: Fingerprint::of(&payload) },
        );
        if self.net.is_blocked(from, to) {
            self.drop_datagram(from, Some(to), DropCause::Partition);
            return;
        }
        match self.net.direction_mut(from, to).transmit(self.now, payload.len(), self.link_rng) {
            Fate::Dropped(cause) => self.drop_datagram(from, Some(to), cause),
            Fate::Deliver { at, duplicate } => {
                if let Some(again) = duplicate {
                    self.stats.datagrams_duplicated += 1;
                    self.trace.record(self.now, TraceRecord::Duplicated { from, to });
                    self.queue.schedule(again, Event::Deliver { from, to, payload: payload.clone() });
                }
                self.queue.schedule(at, Event::Deliver { from, to, payload });
            }
        }
    }

    pub(crate) fn drop_datagram(&mut self, from: NodeId, to: Option<NodeId>, cause: DropCause) {
        self.stats.datagrams_dropped[cause.index()] += 1;
        self.trace.record(self.now, TraceRecord::Dropped { from, to, cause });
    }

    /// A datagram arrives at the running `node`: hand it to the core, note whether
    /// WireGuard refused it (its drop counters rise), drive the node.
    pub(crate) fn deliver(&mut self, node: &mut Node, apps: &mut NodeApps, from: NodeId, payload: BytesMut) {
        let now = self.now;
        let to = node.id();
        let before = drops_of(node);
        let Some(core) = node.core.as_mut() else { return };
        self.stats.datagrams_delivered += 1;
        self.trace.record(now, TraceRecord::Delivered { from, to, len: payload.len() as u32 });
        core.handle_datagram(now, underlay_addr(from), payload);
        if let Some(reason) = rose(&before, &core.wireguard().stats().drops, |r| !is_outbound_reason(r)) {
            node.stats.datagrams_rejected += 1;
            self.stats.datagrams_rejected += 1;
            self.stats.rejected_by_reason[reason.index()] += 1;
            self.trace.record(now, TraceRecord::Rejected { node: to, from, reason });
        }
        self.drive(node, apps, false);
    }

    /// A packet came out of `node`'s TUN side.
    fn tun_packet(&mut self, node: &mut Node, packet: BytesMut) {
        let app = AppPacket::decode(&packet).ok().and_then(|pkt| {
            let src = node_at_mesh(pkt.src)?;
            // The core checked the inner source against the sending peer's allowed IPs; the
            // source must at least be one of our peers, and the packet for us.
            (node.peer_id(src).is_some() && pkt.dst == node.mesh_addr()).then_some((src, pkt))
        });
        node.record_tun(self.now, &packet, app.is_some());
        let Some((src, pkt)) = app else {
            self.stats.tun_other += 1;
            self.trace.record(self.now, TraceRecord::TunPacket { node: node.id(), len: packet.len() as u32 });
            return;
        };
        node.stats.app_received += 1;
        self.stats.app_delivered += 1;
        let latency = self.now.saturating_duration_since(pkt.sent_at);
        let pair = self.pairs.get_mut(src, node.id());
        pair.delivered += 1;
        pair.first_delivery.get_or_insert(self.now);
        pair.last_delivery = Some(self.now);
        pair.latency_total += latency;
        pair.latency_max = pair.latency_max.max(latency);
        self.trace.record(self.now, TraceRecord::AppDelivered { from: src, to: node.id(), seq: pkt.seq });
    }

    /// Something `node`'s WireGuard wants the application to know.
    fn wg_event(&mut self, node: &mut Node, event: WgEvent) {
        let id = node.id();
        let record = match event {
            WgEvent::SessionEstablished { peer, initiator } => {
                node.stats.sessions_established += 1;
                node.stats.sessions_initiated += u64::from(initiator);
                self.stats.sessions_established += 1;
                TraceRecord::SessionEstablished { node: id, peer: node.peer_node(peer), initiator }
            }
            WgEvent::PeerUnreachable { peer } => {
                node.stats.peers_unreachable += 1;
                self.stats.peers_unreachable += 1;
                TraceRecord::PeerUnreachable { node: id, peer: node.peer_node(peer) }
            }
            WgEvent::KeysZeroed { peer } => {
                node.stats.keys_zeroed += 1;
                self.stats.keys_zeroed += 1;
                TraceRecord::KeysZeroed { node: id, peer: node.peer_node(peer) }
            }
        };
        self.trace.record(self.now, record);
    }

    fn node_event(&mut self, node: &mut Node, apps: &mut NodeApps, event: NodeEvent) {
        match event {
            NodeEvent::WireGuard(e) => self.wg_event(node, e),
            NodeEvent::FlowCut(_) => {
                node.stats.flows_cut += 1;
                self.stats.flows_cut += 1;
                self.trace.record(self.now, TraceRecord::FlowCut { node: node.id() });
            }
            NodeEvent::Tcp(e) => self.tcp_event(node, apps, e),
            NodeEvent::Ssh(e) => self.ssh_parts(node, apps, |ssh, cx| ssh.event(cx, e)),
            // The node's netmap is rebuilt from the world's, and PeerIds are mapped back to
            // nodes afresh after every change (`Node::remap`).
            NodeEvent::PeerGone { peer } => {
                let record = TraceRecord::PeerGone { node: node.id(), peer: node.peer_node(peer) };
                self.trace.record(self.now, record);
            }
        }
    }

    /// Drain `node`'s outputs after an input, then ask for its next deadline once.
    /// `after_timeout` says the input was `handle_timeout(now)`, after which the deadline
    /// must lie in the future.
    pub(crate) fn drive(&mut self, node: &mut Node, apps: &mut NodeApps, after_timeout: bool) {
        let id = node.id();
        loop {
            let mut progressed = false;
            while let Some(transmit) = node.core.as_mut().and_then(|c| c.poll_transmit()) {
                progressed = true;
                self.route(id, transmit);
            }
            while let Some(packet) = node.core.as_mut().and_then(|c| c.poll_tun_packet()) {
                progressed = true;
                self.tun_packet(node, packet);
            }
            while let Some(event) = node.core.as_mut().and_then(|c| c.poll_event()) {
                progressed = true;
                self.node_event(node, apps, event);
            }
            if !progressed {
                break;
            }
        }
        self.poll_timeout(node, apps, after_timeout);
    }

    /// Ask `node` for its next deadline and make sure a timer event is scheduled for it.
    fn poll_timeout(&mut self, node: &mut Node, apps: &NodeApps, after_timeout: bool) {
        let core = node.core.as_ref().and_then(|c| c.poll_timeout());
        let ssh = if apps.ssh.is_empty() { None } else { ssh_deadline(&apps.ssh) };
        let Some(deadline) = [core, ssh].into_iter().flatten().min() else { return };
        let mut at = deadline.max(self.now);
        if after_timeout && deadline <= self.now {
            self.stats.timer_stalls += 1;
            debug!(node = %node.id(), "poll_timeout did not move past now after handle_timeout");
            at = self.now + Duration::from_millis(1);
        }
        // An earlier (or equal) wake-up is already scheduled: it will ask again.
        if node.timer_at.is_some_and(|pending| pending <= at) {
            return;
        }
        node.timer_at = Some(at);
        self.queue.schedule(at, Event::Timer { node: node.id(), generation: node.generation() });
    }

    /// Run `node`'s timers (the core's and its SSH sessions'), let its clients retry, drive
    /// it.
    pub(crate) fn timeout(&mut self, node: &mut Node, apps: &mut NodeApps) {
        let Some(core) = node.core.as_mut() else { return };
        core.handle_timeout(self.now);
        self.stats.timers_fired += 1;
        self.trace.record(self.now, TraceRecord::Timer { node: node.id() });
        if !apps.ssh.is_empty() {
            self.ssh_parts(node, apps, SshApps::timeouts);
        }
        if !apps.tcp.clients.is_empty() {
            let waiting: Vec<ConnId> =
                apps.tcp.clients.iter().filter(|(_, c)| c.connected && !c.closing).map(|(id, _)| *id).collect();
            for conn in waiting {
                self.pump(node, &mut apps.tcp, conn);
            }
        }
        self.drive(node, apps, true);
    }

    /// The traffic application of `node` sends one packet to `to` through its TUN side.
    pub(crate) fn send_app_packet(&mut self, node: &mut Node, apps: &mut NodeApps, to: NodeId) -> Result<(), SimError> {
        let from = node.id();
        if !node.is_up() {
            return Err(SimError::NodeDown(from));
        }
        let pair = self.pairs.get_mut(from, to);
        let seq = pair.sent;
        pair.sent += 1;
        pair.last_sent = Some(self.now);
        let packet = AppPacket { src: mesh_addr(from), dst: mesh_addr(to), seq, sent_at: self.now };
        let before = drops_of(node);
        let refused_before = node.core.as_ref().map_or(0, |c| c.stats().outbound_no_route + c.stats().outbound_dropped);
        let Some(core) = node.core.as_mut() else { return Err(SimError::NodeDown(from)) };
        core.handle_tun_packet(self.now, packet_buffer(&packet.encode()));
        let refused = core.stats().outbound_no_route + core.stats().outbound_dropped > refused_before;
        let reason = rose(&before, &core.wireguard().stats().drops, |_| true);
        node.stats.app_sent += 1;
        self.stats.app_sent += 1;
        self.trace.record(self.now, TraceRecord::AppSent { from, to, seq });
        if refused {
            node.stats.app_send_failed += 1;
            self.stats.app_send_failed += 1;
            self.pairs.get_mut(from, to).send_failed += 1;
            let reason = reason.unwrap_or(DropReason::NoRoute);
            self.trace.record(self.now, TraceRecord::AppSendFailed { from, to, reason });
        }
        self.drive(node, apps, false);
        Ok(())
    }

    /// Hand a raw IP packet to `node`'s TUN side.
    pub(crate) fn inject(&mut self, node: &mut Node, apps: &mut NodeApps, packet: &[u8]) -> Result<(), SimError> {
        let id = node.id();
        let core = node.core.as_mut().ok_or(SimError::NodeDown(id))?;
        self.stats.injected += 1;
        self.trace.record(self.now, TraceRecord::Injected { node: id, len: packet.len() as u32 });
        core.handle_tun_packet(self.now, packet_buffer(packet));
        self.drive(node, apps, false);
        Ok(())
    }

    // ----- TCP applications -------------------------------------------------------------

    /// Open a client transfer `node -> to:port` carrying `bytes` payload bytes.
    pub(crate) fn open_tcp(
        &mut self,
        node: &mut Node,
        apps: &mut NodeApps,
        to: NodeId,
        port: u16,
        bytes: u64,
    ) -> Result<TransferId, SimError> {
        let from = node.id();
        let core = node.core.as_mut().ok_or(SimError::NodeDown(from))?;
        let remote = SocketAddr::new(mesh_addr(to).into(), port);
        let conn = core.tcp_connect(self.now, remote).map_err(SimError::Tcp)?;
        let id = TransferId(self.tcp.transfers.len() as u64);
        self.tcp.transfers.push(Transfer {
            id,
            from,
            to,
            port,
            conn,
            bytes,
            opened_at: self.now,
            connected_at: None,
            queued: 0,
            finished_at: None,
            closed_at: None,
            error: None,
        });
        let stream = Stream::new(id, bytes, self.tcp.pattern_seed);
        apps.tcp
            .clients
            .insert(conn, Client { transfer: id, stream, queued: 0, connected: false, closing: false, eof: false });
        self.stats.tcp_opened += 1;
        self.trace.record(self.now, TraceRecord::TcpOpened { from, to, port, transfer: id.0 });
        self.drive(node, apps, false);
        Ok(id)
    }

    /// Open an SSH client app `node -> to:22` running `config.script` (see
    /// [`SshApps::open`]).
    pub(crate) fn open_ssh(
        &mut self,
        node: &mut Node,
        apps: &mut NodeApps,
        to: NodeId,
        config: SshClientConfig,
    ) -> Result<SshClientId, SimError> {
        let id = self.ssh_parts(node, apps, |ssh, cx| ssh.open(cx, to, config))?;
        self.stats.tcp_opened += 1;
        self.drive(node, apps, false);
        Ok(id)
    }

    /// Lend the SSH apps the node they act on, with its SSH connections and the trace.
    fn ssh_parts<T>(
        &mut self,
        node: &mut Node,
        apps: &mut NodeApps,
        f: impl FnOnce(&mut SshApps, &mut NodeCtx<'_>) -> T,
    ) -> T {
        let mut cx = NodeCtx { now: self.now, node, apps: &mut apps.ssh, trace: &mut *self.trace };
        f(self.ssh, &mut cx)
    }

    /// The applications' part of a crash: everything open on the crashed node (`apps`,
    /// taken from it) ends now.
    pub(crate) fn crash_apps(&mut self, apps: NodeApps) {
        self.ssh.crash(self.now, &apps.ssh);
        for client in apps.tcp.clients.values() {
            let t = &mut self.tcp.transfers[client.transfer.0 as usize];
            t.closed_at.get_or_insert(self.now);
            if t.finished_at.is_none() {
                t.error.get_or_insert(TransferError::NodeCrashed);
            }
        }
        for sink in apps.tcp.sinks.values() {
            self.tcp.accepted[sink.record].closed_at.get_or_insert(self.now);
        }
    }

    fn tcp_event(&mut self, node: &mut Node, apps: &mut NodeApps, event: TcpEvent) {
        let now = self.now;
        let id = node.id();
        if let TcpEvent::Closed { conn } = event {
            self.stats.tcp_closed += 1;
            self.trace.record(now, TraceRecord::TcpClosed { node: id, conn: conn.as_u64() });
        }
        if self.ssh_parts(node, apps, |ssh, cx| ssh.tcp_event(cx, event)) {
            return;
        }
        let apps = &mut apps.tcp;
        match event {
            TcpEvent::Accepted { conn, peer, local, remote } => self.accept(node, apps, conn, peer, local, remote),
            TcpEvent::Connected { conn } => {
                let Some(client) = apps.clients.get_mut(&conn) else { return };
                client.connected = true;
                let t = &mut self.tcp.transfers[client.transfer.0 as usize];
                t.connected_at = Some(now);
                self.stats.tcp_connected += 1;
                self.trace.record(now, TraceRecord::TcpConnected { node: id, transfer: client.transfer.0 });
                self.pump(node, apps, conn);
            }
            TcpEvent::Writable { conn } => self.pump(node, apps, conn),
            TcpEvent::Readable { conn } => {
                if apps.sinks.contains_key(&conn) {
                    self.sink_read(node, apps, conn);
                } else if apps.clients.contains_key(&conn) {
                    self.client_read(node, apps, conn);
                }
            }
            TcpEvent::Closed { conn } => {
                if let Some(client) = apps.clients.remove(&conn) {
                    let t = &mut self.tcp.transfers[client.transfer.0 as usize];
                    t.closed_at = Some(now);
                    if !client.closing {
                        t.error.get_or_insert(TransferError::ClosedEarly);
                    }
                } else if let Some(sink) = apps.sinks.remove(&conn) {
                    self.tcp.accepted[sink.record].closed_at = Some(now);
                }
            }
        }
    }

    fn accept(
        &mut self,
        node: &Node,
        apps: &mut TcpNodeApps,
        conn: ConnId,
        peer: Option<PeerId>,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        let id = node.id();
        let peer_node = peer.and_then(|p| node.peer_node(p));
        self.stats.tcp_accepted += 1;
        self.trace.record(
            self.now,
            TraceRecord::TcpAccepted {
                node: id,
                peer: peer_node,
                remote: node_at_mesh_socket(remote),
                port: local.port(),
            },
        );
        self.tcp.accepted.push(AcceptedConn::new(id, conn, (peer, peer_node), local, remote, self.now));
        let record = self.tcp.accepted.len() - 1;
        apps.sinks.insert(conn, Sink { record, header: [0; HEADER_LEN], stream: None, eof: false });
    }

    /// Queue as much of a client's stream as fits; close when all is queued.
    fn pump(&mut self, node: &mut Node, apps: &mut TcpNodeApps, conn: ConnId) {
        let now = self.now;
        let Some(core) = node.core.as_mut() else { return };
        let Some(client) = apps.clients.get_mut(&conn) else { return };
        if !client.connected || client.closing {
            return;
        }
        let total = client.stream.total();
        let mut failed = None;
        while client.queued < total {
            let n = (total - client.queued).min(CHUNK as u64) as usize;
            let buf = &mut self.tcp.io[..n];
            client.stream.fill(client.queued, buf);
            match core.tcp_send(now, conn, buf) {
                Ok(k) => {
                    client.queued += k as u64;
                    if k < n {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(TransferError::Tcp(e));
                    break;
                }
            }
        }
        let t = &mut self.tcp.transfers[client.transfer.0 as usize];
        t.queued = client.queued;
        if failed.is_none() && client.queued == total {
            client.closing = true;
            t.finished_at = Some(now);
            if let Err(e) = core.tcp_close(now, conn) {
                failed = Some(TransferError::Tcp(e));
            }
        }
        if let Some(e) = failed {
            t.error.get_or_insert(e);
            client.closing = true;
        }
    }

    /// The client reads (and discards) whatever the server sends, and notes its FIN.
    fn client_read(&mut self, node: &mut Node, apps: &mut TcpNodeApps, conn: ConnId) {
        let Some(core) = node.core.as_mut() else { return };
        let Some(client) = apps.clients.get_mut(&conn) else { return };
        if client.eof {
            return;
        }
        let mut first = true;
        loop {
            match core.tcp_recv(self.now, conn, &mut self.tcp.io) {
                Ok(0) => {
                    client.eof = first;
                    break;
                }
                Ok(_) => first = false,
                Err(_) => {
                    client.eof = true;
                    break;
                }
            }
        }
    }

    /// The sink reads until `recv` returns 0 and verifies what it got. A `Readable` whose
    /// first read returns 0 is the client's FIN: the sink closes its side.
    fn sink_read(&mut self, node: &mut Node, apps: &mut TcpNodeApps, conn: ConnId) {
        let now = self.now;
        let id = node.id();
        let Some(core) = node.core.as_mut() else { return };
        let Some(sink) = apps.sinks.get_mut(&conn) else { return };
        if sink.eof {
            return;
        }
        let mut first = true;
        loop {
            match core.tcp_recv(now, conn, &mut self.tcp.io) {
                Ok(0) => break,
                Ok(n) => {
                    first = false;
                    let was_complete = self.tcp.accepted[sink.record].completed_at.is_some();
                    self.tcp.absorb(now, sink, n);
                    let r = &self.tcp.accepted[sink.record];
                    if !was_complete && r.completed_at.is_some() {
                        self.stats.tcp_transfers_completed += 1;
                        self.trace.record(
                            now,
                            TraceRecord::TransferCompleted {
                                node: id,
                                transfer: r.transfer.map_or(u64::MAX, |t| t.0),
                                bytes: r.received,
                            },
                        );
                    }
                }
                // The connection is gone (its `Closed` event follows).
                Err(_) => return,
            }
        }
        if first {
            sink.eof = true;
            self.tcp.accepted[sink.record].eof_at = Some(now);
            let _ = core.tcp_close(now, conn);
        }
    }
}
