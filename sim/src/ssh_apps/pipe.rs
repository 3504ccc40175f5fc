//! The bytes between the client app's SSH session and its TCP connection in the node's
//! core (the server side of this is the core's own: `mesh_core::node::ssh`).
//!
//! Inbound, everything TCP has is read and handed to the session at once: what the peer
//! may send is already bounded by the SSH channel windows (the applications `consume` only
//! what they took), and reading must never stall, or window adjustments and key exchange
//! messages would stall with it. Outbound, the session's packets go to `tcp_send` only as
//! far as the send buffer takes them; the rest of a packet waits here for
//! `TcpEvent::Writable`, and [`Pipe::budget`] tells the applications how much more channel
//! data they may write before the session's queue counts as full.

use bytes::{Buf, BytesMut};
use mesh_core::node::Node as CoreNode;
use mesh_core::ssh::client::ClientSession;
use mesh_core::tcp::ConnId;
use mesh_core::time::Instant;

use crate::ids::NodeId;
use crate::trace::Trace;

/// Session output (queued in the session plus waiting here) above which applications stop
/// writing channel data: the core's mark for its own SSH server.
pub(crate) const HIGH_WATER: usize = mesh_core::node::SSH_HIGH_WATER;

/// What the pipe needs of a session, either role.
pub(crate) trait Session {
    fn handle_input(&mut self, now: Instant, bytes: &[u8]);
    fn poll_transmit(&mut self) -> Option<BytesMut>;
    fn recycle(&mut self, packet: BytesMut);
    fn pending_transmit(&self) -> usize;
    fn is_closed(&self) -> bool;
}

macro_rules! impl_session {
    ($t:ty) => {
        impl Session for $t {
            fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
                <$t>::handle_input(self, now, bytes)
            }
            fn poll_transmit(&mut self) -> Option<BytesMut> {
                <$t>::poll_transmit(self)
            }
            fn recycle(&mut self, packet: BytesMut) {
                <$t>::recycle(self, packet)
            }
            fn pending_transmit(&self) -> usize {
                <$t>::pending_transmit(self)
            }
            fn is_closed(&self) -> bool {
                <$t>::is_closed(self)
            }
        }
    };
}

impl_session!(ClientSession);

/// What a connection's service call may touch besides the connection.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) node: NodeId,
    pub(crate) core: &'a mut CoreNode,
    pub(crate) trace: &'a mut Trace,
    pub(crate) buf: &'a mut [u8],
}

/// One connection's plumbing.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) conn: ConnId,
    /// The TCP connection is established (a client's session waits for it).
    pub(crate) connected: bool,
    /// The rest of a session packet `tcp_send` did not take.
    unsent: Option<BytesMut>,
    /// The peer's FIN was read.
    pub(crate) peer_eof: bool,
    /// We called `tcp_close` (after the session ended and its last bytes were queued).
    pub(crate) closing: bool,
    /// A TCP call failed: the connection is going away (its `Closed` event follows).
    pub(crate) broken: bool,
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

impl Pipe {
    pub(crate) fn new(conn: ConnId, connected: bool) -> Self {
        Self { conn, connected, unsent: None, peer_eof: false, closing: false, broken: false, sent: 0, received: 0 }
    }

    /// Channel data the applications may still write before the output counts as full.
    pub(crate) fn budget(&self, session: &impl Session) -> usize {
        let queued = session.pending_transmit() + self.unsent.as_ref().map_or(0, BytesMut::len);
        HIGH_WATER.saturating_sub(queued)
    }

    /// On `TcpEvent::Readable`: read everything TCP holds into the session; the end of the
    /// stream is the core's word (`tcp_peer_finished`), not an empty read (a `Readable`
    /// queued before an earlier service drained the data reads nothing). Returns whether
    /// bytes moved.
    pub(crate) fn read(
        &mut self,
        core: &mut CoreNode,
        now: Instant,
        session: &mut impl Session,
        buf: &mut [u8],
    ) -> bool {
        if self.peer_eof || self.broken {
            // After the FIN every poll of the core signals `Readable` again; reading once
            // more would only ask it to.
            return false;
        }
        let mut first = true;
        loop {
            match core.tcp_recv(now, self.conn, buf) {
                Ok(0) => {
                    self.peer_eof = core.tcp_peer_finished(self.conn).unwrap_or(true);
                    return !first;
                }
                Ok(n) => {
                    first = false;
                    self.received += n as u64;
                    session.handle_input(now, &buf[..n]);
                }
                Err(_) => {
                    self.broken = true;
                    return !first;
                }
            }
        }
    }

    /// Move session output into TCP until the send buffer is full. Returns whether bytes
    /// moved.
    pub(crate) fn flush(&mut self, core: &mut CoreNode, now: Instant, session: &mut impl Session) -> bool {
        if !self.connected || self.closing || self.broken {
            return false;
        }
        let mut moved = false;
        while let Some(mut packet) = self.unsent.take().or_else(|| session.poll_transmit()) {
            match core.tcp_send(now, self.conn, &packet) {
                Ok(n) => {
                    self.sent += n as u64;
                    moved |= n > 0;
                    if n < packet.len() {
                        packet.advance(n);
                        self.unsent = Some(packet);
                        break;
                    }
                    session.recycle(packet);
                }
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        moved
    }

    /// Once the session has ended and its last bytes (the DISCONNECT) are in TCP's send
    /// buffer, close our direction; the connection ends when the peer closes too.
    pub(crate) fn close_when_done(&mut self, core: &mut CoreNode, now: Instant, session: &impl Session) {
        let drained = self.unsent.is_none() && session.pending_transmit() == 0;
        if self.connected && !self.closing && !self.broken && session.is_closed() && drained {
            self.closing = true;
            if core.tcp_close(now, self.conn).is_err() {
                self.broken = true;
            }
        }
    }
}
