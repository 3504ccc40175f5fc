//! The loop: wait in `epoll` until a socket, the TUN, a signal or the node's next timer;
//! then read in batches until every source would block, handing each packet to the node
//! and draining its outputs after every input (the sans-IO contract). The outputs wait in
//! `pending_*` and leave together at the end of each batch: UDP in GSO batches, the TUN
//! one write per packet. While the UDP socket is backed up, input pauses until it drains
//! (the kernel's send buffer is the queue; nothing grows without bound).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_core::node::NodeEvent;
use mesh_core::wireguard::DATA_HEADER_LEN;
use mio::Events;
use tracing::{debug, info, trace};

use super::{Runtime, RuntimeError, SIGNALS, TUN, UDP4, UDP6, WAKER};

/// TUN reads per round before the sockets get their turn.
const TUN_BATCH: usize = 64;
/// Rounds of reading before timers and events are looked at again.
const MAX_ROUNDS: usize = 16;
/// UDP receive errors in a row after which a socket waits for its next event.
const MAX_ERRORS_IN_ROW: u8 = 8;
/// Extra room when reading the TUN, so an oversized packet shows as one, not truncated.
const TUN_READ_SLACK: usize = 32;

impl Runtime {
    /// Run until stopped (a signal after [`Runtime::stop_on_signals`], or a [`super::Stopper`]).
    pub fn run(&mut self) -> Result<(), RuntimeError> {
        let mut events = Events::with_capacity(64);
        // Edge-triggered: a source stays "ready" until a read would block.
        let mut ready = [true, true, true];
        loop {
            if self.stop.load(Ordering::Acquire) {
                info!("stopped");
                return Ok(());
            }
            self.run_timers();
            let mut rounds = 0;
            while ready.iter().any(|&r| r) && !self.backed_up() && rounds < MAX_ROUNDS {
                rounds += 1;
                for (family, flag) in ready.iter_mut().take(2).enumerate() {
                    if *flag {
                        *flag = self.read_udp(family);
                    }
                }
                if ready[2] {
                    ready[2] = self.read_tun();
                }
                self.flush();
                self.run_timers();
            }
            self.flush();
            let busy = ready.iter().any(|&r| r) && !self.backed_up();
            let next = [self.node.poll_timeout(), self.daemon_timeout(), self.ssh.poll_timeout(self.clock.now())]
                .into_iter()
                .flatten()
                .min();
            let timeout = if busy { Some(Duration::ZERO) } else { next.map(|at| self.clock.until(at)) };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RuntimeError::Poll(e)),
            }
            self.metrics.wakeups += 1;
            for event in events.iter() {
                match event.token() {
                    UDP4 | UDP6 => {
                        let family = usize::from(event.token() == UDP6);
                        if event.is_readable() {
                            ready[family] = true;
                        }
                        if event.is_writable() {
                            self.flush();
                        }
                    }
                    TUN => ready[2] = true,
                    SIGNALS => {
                        let pending: Vec<i32> =
                            self.signals.as_mut().map(|s| s.pending().collect()).unwrap_or_default();
                        let mut child = false;
                        for signal in pending {
                            if signal == signal_hook::consts::SIGCHLD {
                                child = true;
                            } else {
                                info!(signal, "signal received, shutting down");
                                return Ok(());
                            }
                        }
                        if child {
                            self.ssh_timers();
                        }
                    }
                    token if token.0 >= super::ssh::SSH_TOKENS => {
                        self.ssh_ready(token, event.is_readable() || event.is_read_closed(), event.is_writable());
                    }
                    WAKER => {
                        self.with_hook(|hook, cx| hook.woken(cx));
                        self.drain_node();
                    }
                    token => {
                        self.daemon_event(token);
                    }
                }
            }
        }
    }

    fn backed_up(&self) -> bool {
        self.udp.iter().flatten().any(|u| u.backed_up())
    }

    fn run_timers(&mut self) {
        self.daemon_timers();
        let now = self.clock.now();
        if self.ssh.poll_timeout(now).is_some_and(|at| at <= now) {
            self.ssh_timers();
        }
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.metrics.timers += 1;
            self.node.handle_timeout(now);
            self.drain_node();
        }
    }

    /// Move the node's outputs to the pending queues (TCP events to the hook, the rest
    /// logged), until what the hook did in answer produced nothing more.
    pub(super) fn drain_node(&mut self) {
        loop {
            while let Some(transmit) = self.node.poll_transmit() {
                self.pending_udp.push(transmit);
            }
            while let Some(packet) = self.node.poll_tun_packet() {
                self.pending_tun.push(packet);
            }
            let Some(event) = self.node.poll_event() else { return };
            match event {
                NodeEvent::Tcp(event) if self.has_hook() => self.with_hook(|hook, cx| hook.tcp_event(cx, event)),
                NodeEvent::WireGuard(event) => debug!(?event, "wireguard"),
                // Acting on a session makes more output (and maybe events): drained above.
                NodeEvent::Ssh(event) => self.handle_ssh_event(event),
                other => trace!(?other, "node event"),
            }
        }
    }

    /// One `recvmmsg` on a socket; `false` once it would block (or the socket is missing).
    fn read_udp(&mut self, family: usize) -> bool {
        let Self {
            udp, node, pool, clock, pending_udp, pending_tun, metrics, udp_errors_in_row: errors_in_row, ..
        } = self;
        let Some(socket) = udp.get_mut(family).and_then(Option::as_mut) else { return false };
        let now = clock.now();
        let mut oversized = 0;
        let result = socket.recv_batch(|from: SocketAddr, datagram: &[u8]| {
            if datagram.len() > pool.capacity() {
                oversized += 1;
                return;
            }
            let mut buf = pool.take();
            buf.extend_from_slice(datagram);
            node.handle_datagram(now, from, buf);
            // Drain after every input (events are logged on the next drain_node).
            while let Some(transmit) = node.poll_transmit() {
                pending_udp.push(transmit);
            }
            while let Some(packet) = node.poll_tun_packet() {
                pending_tun.push(packet);
            }
        });
        metrics.drops.udp_oversized += oversized;
        let result_ok = result.is_ok();
        let more = match result {
            Ok(Some((packets, bytes))) => {
                metrics.udp_rx.batch(packets, bytes);
                true
            }
            Ok(None) => false,
            Err(error) => {
                metrics.drops.udp_recv_error += 1;
                debug!(%error, "UDP receive failed");
                // ICMP errors surface here once each (ECONNREFUSED) and the socket stays
                // usable: read on, unless errors repeat (then wait for the next event
                // rather than spin).
                errors_in_row[family] = errors_in_row[family].saturating_add(1);
                errors_in_row[family] < MAX_ERRORS_IN_ROW
            }
        };
        if result_ok {
            errors_in_row[family] = 0;
        }
        self.drain_node();
        more
    }

    /// Up to [`TUN_BATCH`] packets from the TUN; `false` once it would block.
    fn read_tun(&mut self) -> bool {
        match &self.tun {
            None => return false,
            Some(tun) if tun.offload() => return self.read_tun_offload(),
            Some(_) => {}
        }
        for _ in 0..TUN_BATCH {
            let Some(tun) = &self.tun else { return false };
            let mut buf = self.pool.take();
            buf.resize(DATA_HEADER_LEN + self.mtu + TUN_READ_SLACK, 0);
            let read = tun.recv(buf.get_mut(DATA_HEADER_LEN..).unwrap_or_default());
            match read {
                Ok(n) => {
                    self.metrics.tun_rx.batch(1, n);
                    buf.truncate(DATA_HEADER_LEN + n);
                    let now = self.clock.now();
                    self.node.handle_tun_packet(now, buf);
                    self.drain_node();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pool.give(buf);
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.pool.give(buf),
                Err(error) => {
                    self.pool.give(buf);
                    self.metrics.drops.tun_read_error += 1;
                    debug!(%error, "TUN read failed");
                    return false;
                }
            }
        }
        true
    }

    /// One offload read: a train split into packets, each handed to the node in the
    /// buffer it was split into (replaced from the pool).
    fn read_tun_offload(&mut self) -> bool {
        let Some(tun) = &self.tun else { return false };
        let read = tun.recv_multiple(&mut self.tun_raw, &mut self.tun_segments, &mut self.tun_sizes, DATA_HEADER_LEN);
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(error) => {
                // Not retried until the next readable event: a failing device must not
                // make the loop spin.
                self.metrics.drops.tun_read_error += 1;
                debug!(%error, "TUN read failed");
                return false;
            }
        };
        let bytes: usize = self.tun_sizes.iter().take(n).sum();
        self.metrics.tun_rx.batch(n, bytes);
        let now = self.clock.now();
        let full = DATA_HEADER_LEN + self.mtu + TUN_READ_SLACK;
        for i in 0..n {
            let (Some(slot), Some(&size)) = (self.tun_segments.get_mut(i), self.tun_sizes.get(i)) else { break };
            let mut fresh = self.pool.take();
            fresh.resize(full, 0);
            let mut buf = std::mem::replace(slot, fresh);
            buf.truncate(DATA_HEADER_LEN + size);
            self.node.handle_tun_packet(now, buf);
            self.drain_node();
        }
        true
    }

    /// Offload write: packets copied behind room for the virtio header, written in
    /// batches that tun-rs coalesces.
    fn flush_tun_offload(&mut self) {
        let Self { tun, pool, pending_tun, tun_out, gro, metrics, .. } = self;
        let Some(tun) = tun else { return };
        let header = tun_rs::VIRTIO_NET_HDR_LEN;
        let mut packets = pending_tun.drain(..).peekable();
        while packets.peek().is_some() {
            let mut count = 0;
            for (slot, packet) in tun_out.iter_mut().zip(packets.by_ref()) {
                slot.clear();
                slot.resize(header, 0);
                slot.extend_from_slice(&packet);
                pool.give(packet);
                count += 1;
            }
            let Some(batch) = tun_out.get_mut(..count) else { break };
            match tun.send_multiple(gro, batch, header) {
                Ok(bytes) => metrics.tun_tx.batch(count, bytes),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => metrics.drops.tun_write_full += 1,
                Err(error) => {
                    metrics.drops.tun_write_error += 1;
                    trace!(%error, "TUN write failed");
                }
            }
        }
    }

    /// Write what the node produced: datagrams into GSO batches (then sent), packets to
    /// the TUN. Every buffer goes back to the pool.
    pub(super) fn flush(&mut self) {
        let Self { udp, tun, pool, pending_udp, pending_tun, metrics, daemon, clock, .. } = self;
        if let Some(pinger) = daemon.as_mut().map(|d| &mut d.pinger).filter(|p| p.waiting()) {
            pinger.observe(clock.now(), pending_tun);
        }
        for transmit in pending_udp.drain(..) {
            let family = usize::from(transmit.dst.is_ipv6());
            match udp.get_mut(family).and_then(Option::as_mut) {
                Some(socket) => {
                    socket.push(transmit.dst, &transmit.payload, metrics);
                }
                None => metrics.drops.udp_no_socket += 1,
            }
            pool.give(transmit.payload);
        }
        for socket in udp.iter_mut().flatten() {
            if !socket.flush(metrics) {
                metrics.backpressure += 1;
            }
        }
        if tun.as_ref().is_some_and(|t| t.offload()) {
            return self.flush_tun_offload();
        }
        for packet in pending_tun.drain(..) {
            if let Some(tun) = tun {
                match tun.send(&packet) {
                    Ok(n) => metrics.tun_tx.batch(1, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => metrics.drops.tun_write_full += 1,
                    Err(error) => {
                        metrics.drops.tun_write_error += 1;
                        trace!(%error, "TUN write failed");
                    }
                }
            }
            pool.give(packet);
        }
    }
}
