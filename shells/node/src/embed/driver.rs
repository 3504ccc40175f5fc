//! The embedded node on the loop's side: a [`LoopHook`] that carries out the
//! application's commands on the node and routes the node's TCP events to the streams
//! and listeners they belong to. Bytes move between a stream's buffers and the stack as
//! room appears on either side (`Readable`/`Writable` from the stack, wake-ups from the
//! application); nothing here blocks, and nothing is buffered beyond the streams' bounds.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use mesh_core::node::Node;
use mesh_core::tcp::{ConnId, TcpError, TcpEvent};
use mesh_core::time::Instant;
use tracing::{debug, trace};

use super::command::{Command, Commands};
use super::error::EmbedError;
use super::listener::ListenerShared;
use super::status::{PeerIdentity, Status};
use super::stream::{Failure, MeshStream, StreamShared, StreamState};
use super::{ACCEPT_BACKLOG, STREAM_BUFFER};
use crate::runtime::control::LinkState;
use crate::runtime::{HookContext, LoopHook};

/// Bytes moved from the stack per `tcp_recv`.
const CHUNK: usize = 64 * 1024;

/// A connection the loop drives for a stream.
struct Conn {
    shared: Arc<StreamShared>,
    /// Our FIN was asked for (`tcp_close`).
    fin_sent: bool,
}

pub(super) struct Driver {
    commands: Receiver<Command>,
    /// To hand accepted streams a way back to the loop.
    sender: Commands,
    status: Arc<Status>,
    conns: BTreeMap<ConnId, Conn>,
    listeners: BTreeMap<u16, Arc<ListenerShared>>,
    scratch: Vec<u8>,
}

impl Driver {
    pub fn new(commands: Receiver<Command>, sender: Commands, status: Arc<Status>) -> Self {
        Self { commands, sender, status, conns: BTreeMap::new(), listeners: BTreeMap::new(), scratch: vec![0; CHUNK] }
    }

    fn command(&mut self, cx: &mut HookContext<'_>, command: Command) {
        match command {
            Command::Listen { port, reply } => {
                let answer = match self.listeners.entry(port) {
                    Entry::Occupied(_) => Err(EmbedError::PortInUse(port)),
                    Entry::Vacant(slot) => match cx.node.tcp_listen(port) {
                        Ok(()) => {
                            debug!(port, "listening");
                            Ok(slot.insert(Arc::new(ListenerShared::default())).clone())
                        }
                        Err(_) => Err(EmbedError::PortReserved(port)),
                    },
                };
                // The caller waits for the answer; if it is gone, so is its listener.
                if let Err(std::sync::mpsc::SendError(Ok(_))) = reply.send(answer) {
                    self.unlisten(cx.node, port);
                }
            }
            Command::Unlisten { port } => self.unlisten(cx.node, port),
            Command::Connect { remote, stream } => self.connect(cx, remote, stream),
            Command::Stream(shared) => {
                let conn = {
                    let mut state = shared.lock();
                    state.wake_queued = false;
                    state.conn
                };
                if let Some(conn) = conn.filter(|c| self.conns.contains_key(c)) {
                    self.service(cx, conn);
                }
            }
        }
    }

    fn unlisten(&mut self, node: &mut Node, port: u16) {
        if self.listeners.remove(&port).is_some() {
            node.tcp_unlisten(port);
            debug!(port, "no longer listening");
        }
    }

    fn connect(&mut self, cx: &mut HookContext<'_>, remote: std::net::SocketAddr, shared: Arc<StreamShared>) {
        let mut state = shared.lock();
        if state.abort {
            return;
        }
        let failure = if cx.node.wireguard().route(remote.ip()).is_none() {
            // Fails at once rather than after the stack's SYN retries.
            Some(Failure::NoRoute)
        } else {
            match cx.node.tcp_connect(cx.now, remote) {
                Ok(conn) => {
                    state.conn = Some(conn);
                    state.local = cx.node.tcp_endpoints(conn).map(|(local, _)| local);
                    drop(state);
                    self.conns.insert(conn, Conn { shared, fin_sent: false });
                    trace!(conn = conn.as_u64(), %remote, "connecting");
                    return;
                }
                Err(error) => {
                    debug!(%error, %remote, "connect refused by the stack");
                    Some(Failure::NoResources)
                }
            }
        };
        state.failure = failure;
        state.ended = true;
        drop(state);
        shared.notify();
    }

    fn accepted(&mut self, cx: &mut HookContext<'_>, event: TcpEvent) {
        let TcpEvent::Accepted { conn, peer, local, remote } = event else { return };
        let Some(listener) = self.listeners.get(&local.port()) else {
            // Accepted by the stack just before the listener went.
            let _ = cx.node.tcp_abort(cx.now, conn);
            return;
        };
        let mut queue = listener.lock();
        if queue.queue.len() >= ACCEPT_BACKLOG {
            debug!(%remote, port = local.port(), "accept backlog full; connection reset");
            let _ = cx.node.tcp_abort(cx.now, conn);
            return;
        }
        let key = peer.and_then(|id| cx.node.netmap_peer(id)).map(|p| p.public_key);
        let identity = key
            .and_then(|key| cx.netmap?.peers.values().find(|p| p.node_key == key).map(|p| PeerIdentity::from_peer(p)));
        let shared = Arc::new(StreamShared::default());
        {
            let mut state = shared.lock();
            state.conn = Some(conn);
            state.local = Some(local);
            state.connected = true;
        }
        queue.queue.push_back(MeshStream::new(shared.clone(), self.sender.clone(), Some(local), remote, identity));
        drop(queue);
        listener.notify();
        trace!(conn = conn.as_u64(), %remote, "accepted");
        self.conns.insert(conn, Conn { shared, fin_sent: false });
    }

    /// Move bytes both ways for one connection, as far as the stack and the buffers let.
    fn service(&mut self, cx: &mut HookContext<'_>, id: ConnId) {
        let Self { conns, scratch, .. } = self;
        let Some(c) = conns.get_mut(&id) else { return };
        let shared = c.shared.clone();
        let mut state = shared.lock();
        let (node, now) = (&mut *cx.node, cx.now);
        if state.abort || (state.dropped && !state.rx.is_empty()) {
            // Given up, or closed with data unread: reset (the stack reports `Closed`).
            state.rx.clear();
            state.tx.clear();
            let _ = node.tcp_abort(now, id);
            return;
        }
        let mut moved = send(node, now, id, &mut state);
        if state.tx.is_empty() && state.tx_shutdown && !c.fin_sent {
            c.fin_sent = true;
            let _ = node.tcp_close(now, id);
        }
        moved |= receive(node, now, id, &mut state, scratch);
        trace!(conn = id.as_u64(), tx = state.tx.len(), rx = state.rx.len(), moved, "serviced");
        drop(state);
        if moved {
            shared.notify();
        }
    }

    fn closed(&mut self, node: &Node, id: ConnId) {
        let Some(c) = self.conns.remove(&id) else { return };
        let mut state = c.shared.lock();
        if !state.connected {
            state.failure.get_or_insert(Failure::Refused);
        } else {
            // A connection lingering in TIME-WAIT ended after both FINs.
            if matches!(node.tcp_peer_finished(id), Ok(true)) {
                state.rx_finished = true;
            }
            let clean = state.rx_finished && c.fin_sent && state.tx.is_empty();
            if !clean {
                state.failure.get_or_insert(Failure::Reset);
            }
        }
        state.ended = true;
        trace!(conn = id.as_u64(), failure = ?state.failure, "closed");
        drop(state);
        c.shared.notify();
    }

    /// End every connection with `failure` (their node is gone).
    fn fail_all(&mut self, failure: Failure) {
        for (_, c) in std::mem::take(&mut self.conns) {
            let mut state = c.shared.lock();
            state.failure.get_or_insert(failure);
            state.ended = true;
            drop(state);
            c.shared.notify();
        }
    }

    fn update_status(&self, cx: &HookContext<'_>) {
        let mut status = self.status.lock();
        let mut changed = false;
        if let Some((state, error)) = cx.control {
            let rejected = (state == LinkState::Rejected).then(|| error.unwrap_or("rejected").to_string());
            changed |= status.rejected != rejected;
            status.rejected = rejected;
            status.last_error = error.map(str::to_string);
        }
        if let Some(netmap) = cx.netmap {
            let ours = &netmap.node.addresses;
            let on_them = !ours.is_empty() && ours.iter().all(|a| cx.node.addrs().contains(a));
            if on_them && status.addresses != cx.node.addrs() {
                status.addresses = cx.node.addrs().to_vec();
                status.name = netmap.node.name.clone();
                changed = true;
            }
            if status.netmap_version != Some(netmap.version) {
                status.netmap_version = Some(netmap.version);
                status.peers = netmap.peers.values().map(|p| PeerIdentity::from_peer(p)).collect();
                changed = true;
            }
        }
        drop(status);
        if changed {
            self.status.notify();
        }
    }
}

/// What the application wrote, into the stack; whether anything moved.
fn send(node: &mut Node, now: Instant, id: ConnId, state: &mut StreamState) -> bool {
    let mut moved = false;
    while !state.tx.is_empty() {
        let front = state.tx.as_slices().0;
        let len = front.len();
        match node.tcp_send(now, id, front) {
            Ok(0) => break,
            Ok(n) => {
                state.tx.drain(..n);
                moved = true;
                if n < len {
                    // The stack reports `Writable` when it has room again.
                    break;
                }
            }
            Err(error) => {
                trace!(conn = id.as_u64(), %error, "send refused");
                state.tx.clear();
                state.failure.get_or_insert(Failure::Reset);
                moved = true;
                break;
            }
        }
    }
    moved
}

/// What arrived, out of the stack while the stream has room (all of it, discarded, if
/// the handle is gone); whether anything moved.
fn receive(node: &mut Node, now: Instant, id: ConnId, state: &mut StreamState, scratch: &mut [u8]) -> bool {
    let mut moved = false;
    // After the FIN the stack signals `Readable` again at every read: read no more.
    if state.rx_finished {
        return moved;
    }
    loop {
        let room = STREAM_BUFFER.saturating_sub(state.rx.len()).min(scratch.len());
        if room == 0 {
            state.rx_blocked = true;
            return moved;
        }
        let Some(buf) = scratch.get_mut(..room) else { return moved };
        match node.tcp_recv(now, id, buf) {
            Ok(0) | Err(TcpError::NoSuchConnection) => {
                if !state.rx_finished && matches!(node.tcp_peer_finished(id), Ok(true)) {
                    state.rx_finished = true;
                    moved = true;
                }
                return moved;
            }
            Ok(n) if state.dropped => {
                trace!(conn = id.as_u64(), n, "data for a closed stream; reset");
                let _ = node.tcp_abort(now, id);
                return moved;
            }
            Ok(n) => {
                state.rx.extend(buf.iter().take(n));
                moved = true;
            }
            Err(_) => return moved,
        }
    }
}

impl LoopHook for Driver {
    fn woken(&mut self, cx: &mut HookContext<'_>) {
        while let Ok(command) = self.commands.try_recv() {
            self.command(cx, command);
        }
    }

    fn tcp_event(&mut self, cx: &mut HookContext<'_>, event: TcpEvent) {
        match event {
            TcpEvent::Accepted { .. } => self.accepted(cx, event),
            TcpEvent::Connected { conn } => {
                if let Some(c) = self.conns.get(&conn) {
                    c.shared.lock().connected = true;
                    c.shared.notify();
                    self.service(cx, conn);
                }
            }
            TcpEvent::Readable { conn } | TcpEvent::Writable { conn } => self.service(cx, conn),
            TcpEvent::Closed { conn } => self.closed(cx.node, conn),
        }
    }

    fn node_replaced(&mut self, cx: &mut HookContext<'_>) {
        if !self.conns.is_empty() {
            debug!(connections = self.conns.len(), "node rebuilt; its connections are gone");
        }
        self.fail_all(Failure::NodeReplaced);
        for &port in self.listeners.keys() {
            if let Err(error) = cx.node.tcp_listen(port) {
                debug!(port, %error, "listener not carried over to the rebuilt node");
            }
        }
        self.update_status(cx);
    }

    fn control_changed(&mut self, cx: &mut HookContext<'_>) {
        self.update_status(cx);
    }
}

/// The loop ended: every handle learns it, nothing waits forever.
impl Drop for Driver {
    fn drop(&mut self) {
        self.fail_all(Failure::Stopped);
        for (_, listener) in std::mem::take(&mut self.listeners) {
            let mut state = listener.lock();
            state.closed = Some(Failure::Stopped);
            let queued = std::mem::take(&mut state.queue);
            drop(state);
            listener.notify();
            drop(queued);
        }
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Listen { reply, .. } => {
                    let _ = reply.send(Err(EmbedError::Stopped));
                }
                Command::Connect { stream, .. } => {
                    let mut state = stream.lock();
                    state.failure.get_or_insert(Failure::Stopped);
                    state.ended = true;
                    drop(state);
                    stream.notify();
                }
                Command::Unlisten { .. } | Command::Stream(_) => {}
            }
        }
        let mut status = self.status.lock();
        status.stopped = true;
        drop(status);
        self.status.notify();
    }
}
