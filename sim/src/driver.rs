//! Driving one node's WireGuard by the sans-IO contract, and carrying its outputs.
//!
//! After every input the world gives a node, [`Driver::drive`] drains `poll_transmit` (each
//! datagram goes onto its link, or is dropped), `poll_received` (application packets are
//! checked and counted per pair) and `poll_event` (counted and traced) until all are empty,
//! then asks `poll_timeout` once and makes sure a timer event is scheduled for the deadline.
//! The driver borrows the parts of the world a node's outputs touch, apart from the node.

use std::time::Duration;

use mesh_core::rng::Rng;
use mesh_core::time::Instant;
use mesh_core::wireguard::{packet_buffer, Event as WgEvent, Received, Transmit};
use tracing::debug;

use crate::error::SimError;
use crate::events::{Event, EventQueue};
use crate::link::{DropCause, Fate};
use crate::network::{self, node_at_mesh, node_at_underlay, Network};
use crate::node::{Node, NodeId};
use crate::stats::{PairMatrix, SimStats};
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
    pub(crate) link_rng: &'a mut Rng,
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

    /// A decrypted packet came out of `node`'s tunnel.
    pub(crate) fn receive(&mut self, node: &mut Node, received: Received) {
        let accepted = AppPacket::decode(&received.packet).ok().and_then(|pkt| {
            let src = node_at_mesh(pkt.src)?;
            // Identity binding: the peer whose key opened the packet must be the node its
            // source address belongs to, and the packet must be for us.
            (node.peer_node(received.peer) == Some(src) && pkt.dst == node.mesh_addr()).then_some((src, pkt))
        });
        let Some((src, pkt)) = accepted else {
            self.stats.app_rejected += 1;
            self.trace.record(self.now, TraceRecord::AppRejected { node: node.id() });
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
    pub(crate) fn event(&mut self, node: &mut Node, event: WgEvent) {
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

    /// Drain `node`'s outputs after an input, then ask for its next deadline once.
    /// `after_timeout` says the input was `handle_timeout(now)`, after which the deadline
    /// must lie in the future.
    pub(crate) fn drive(&mut self, node: &mut Node, after_timeout: bool) {
        let id = node.id();
        loop {
            let Some(wg) = node.wg.as_mut() else { return };
            let mut progressed = false;
            while let Some(transmit) = wg.poll_transmit() {
                progressed = true;
                self.route(id, transmit);
            }
            while let Some(received) = node.wg.as_mut().and_then(|wg| wg.poll_received()) {
                progressed = true;
                self.receive(node, received);
            }
            while let Some(event) = node.wg.as_mut().and_then(|wg| wg.poll_event()) {
                progressed = true;
                self.event(node, event);
            }
            if !progressed {
                break;
            }
        }
        self.poll_timeout(node, after_timeout);
    }

    /// Ask `node` for its next deadline and make sure a timer event is scheduled for it.
    fn poll_timeout(&mut self, node: &mut Node, after_timeout: bool) {
        let Some(deadline) = node.wg.as_ref().and_then(|wg| wg.poll_timeout()) else { return };
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

    /// The traffic application of `node` sends one packet to `to`.
    pub(crate) fn send_app_packet(&mut self, node: &mut Node, to: NodeId) -> Result<(), SimError> {
        let from = node.id();
        let wg = node.wg.as_mut().ok_or(SimError::NodeDown(from))?;
        let pair = self.pairs.get_mut(from, to);
        let seq = pair.sent;
        pair.sent += 1;
        pair.last_sent = Some(self.now);
        let packet = AppPacket { src: network::mesh_addr(from), dst: network::mesh_addr(to), seq, sent_at: self.now };
        let result = wg.handle_packet(self.now, packet_buffer(&packet.encode()));
        node.stats.app_sent += 1;
        self.stats.app_sent += 1;
        self.trace.record(self.now, TraceRecord::AppSent { from, to, seq });
        if let Err(reason) = result {
            node.stats.app_send_failed += 1;
            self.stats.app_send_failed += 1;
            self.pairs.get_mut(from, to).send_failed += 1;
            self.trace.record(self.now, TraceRecord::AppSendFailed { from, to, reason });
        }
        self.drive(node, false);
        Ok(())
    }
}
