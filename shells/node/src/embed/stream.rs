//! One TCP connection over the mesh as the application sees it: [`MeshStream`] is
//! `Read + Write` with bounded buffers in both directions ([`super::STREAM_BUFFER`]),
//! shared with the loop under one lock and one condition variable. A writer blocks while
//! its buffer is full; a reader blocks while nothing arrived; both wake when the loop moved
//! bytes or the connection ended. Reads return 0 after the peer's FIN; a reset, a node
//! rebuild or the node stopping is an error for both sides of the stream.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mesh_core::tcp::ConnId;

use super::command::{Command, Commands};
use super::status::PeerIdentity;
use super::STREAM_BUFFER;

/// Why a stream ended badly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Reset by the peer, cut by the filter, or its peer left the netmap.
    Reset,
    /// The connection attempt was answered with a reset or timed out in the stack.
    Refused,
    /// The node was rebuilt on new addresses: its connections are gone.
    NodeReplaced,
    /// The node stopped.
    Stopped,
    /// The stack refused to open it (too many connections, no free port).
    NoResources,
    /// No peer routes to the address.
    NoRoute,
}

impl Failure {
    pub fn io(self) -> io::Error {
        let (kind, text) = match self {
            Failure::Reset => (io::ErrorKind::ConnectionReset, "connection reset"),
            Failure::Refused => (io::ErrorKind::ConnectionRefused, "connection refused"),
            Failure::NodeReplaced => (io::ErrorKind::ConnectionAborted, "the node moved to new addresses"),
            Failure::Stopped => (io::ErrorKind::NotConnected, "the node has stopped"),
            Failure::NoResources => (io::ErrorKind::OutOfMemory, "no room for another connection"),
            Failure::NoRoute => (io::ErrorKind::HostUnreachable, "no peer routes to this address"),
        };
        io::Error::new(kind, text)
    }
}

/// The state shared by a stream's handle and the loop.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    /// Set by the loop once the stack opened the connection.
    pub conn: Option<ConnId>,
    pub local: Option<SocketAddr>,
    /// Received, not yet read by the application.
    pub rx: VecDeque<u8>,
    /// Written by the application, not yet taken by the stack.
    pub tx: VecDeque<u8>,
    /// The peer's FIN arrived and everything before it is in `rx`.
    pub rx_finished: bool,
    /// The loop stopped reading from the stack because `rx` was full.
    pub rx_blocked: bool,
    /// The application is done writing: FIN once `tx` is sent.
    pub tx_shutdown: bool,
    /// The handle is gone: the loop discards what arrives and closes.
    pub dropped: bool,
    /// The application gave up (connect timeout): reset.
    pub abort: bool,
    /// Established (connect completed, or accepted).
    pub connected: bool,
    pub failure: Option<Failure>,
    /// The loop is done with the connection.
    pub ended: bool,
    /// A `Command::Stream` for this stream is queued (at most one at a time).
    pub wake_queued: bool,
}

#[derive(Debug, Default)]
pub(super) struct StreamShared {
    state: Mutex<StreamState>,
    changed: Condvar,
}

impl StreamShared {
    pub fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Wait for a change, until `deadline` if any; `false` once it has passed.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, StreamState>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, StreamState>, bool) {
        match deadline {
            None => (self.changed.wait(state).unwrap_or_else(PoisonError::into_inner), true),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (state, false);
                }
                let (state, _) = self.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner);
                (state, true)
            }
        }
    }

    /// Wait until `connected` or a failure, or `timeout` (then `None`).
    pub fn wait_connected(&self, timeout: Duration) -> Option<Result<Option<SocketAddr>, Failure>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(failure) = state.failure {
                return Some(Err(failure));
            }
            if state.connected {
                return Some(Ok(state.local));
            }
            let (next, more) = self.wait(state, Some(deadline));
            if !more {
                return None;
            }
            state = next;
        }
    }
}

/// Ask the loop to look at the stream again, unless a wake-up is queued already.
pub(super) fn wake(shared: &Arc<StreamShared>, state: &mut StreamState, commands: &Commands) {
    if state.wake_queued || state.ended {
        return;
    }
    state.wake_queued = true;
    if commands.send(Command::Stream(shared.clone())).is_err() {
        state.failure.get_or_insert(Failure::Stopped);
        state.ended = true;
    }
}

/// A TCP connection over the mesh. `Read` and `Write` are implemented for `&MeshStream`
/// too, so one thread may read while another writes.
#[derive(Debug)]
pub struct MeshStream {
    shared: Arc<StreamShared>,
    commands: Commands,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    peer: Option<PeerIdentity>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl MeshStream {
    pub(super) fn new(
        shared: Arc<StreamShared>,
        commands: Commands,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        peer: Option<PeerIdentity>,
    ) -> Self {
        Self { shared, commands, local, remote, peer, read_timeout: None, write_timeout: None }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.remote
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Who is on the other end, from the netmap (`None` if the peer was not in it).
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// Bound every read (`None`: wait as long as it takes); a read that times out is
    /// `ErrorKind::TimedOut`.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Send FIN once everything written is sent; reading goes on.
    pub fn shutdown_write(&self) {
        let mut state = self.shared.lock();
        if !state.tx_shutdown {
            state.tx_shutdown = true;
            wake(&self.shared, &mut state, &self.commands);
        }
    }

    fn read_bytes(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        let mut state = self.shared.lock();
        loop {
            if !state.rx.is_empty() {
                let n = buf.len().min(state.rx.len());
                for (slot, byte) in buf.iter_mut().zip(state.rx.drain(..n)) {
                    *slot = byte;
                }
                if state.rx_blocked {
                    state.rx_blocked = false;
                    wake(&self.shared, &mut state, &self.commands);
                }
                return Ok(n);
            }
            if state.rx_finished {
                return Ok(0);
            }
            if let Some(failure) = state.failure {
                return Err(failure.io());
            }
            if state.ended {
                return Ok(0);
            }
            let (next, more) = self.shared.wait(state, deadline);
            if !more {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"));
            }
            state = next;
        }
    }

    fn write_bytes(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        let mut state = self.shared.lock();
        loop {
            if let Some(failure) = state.failure {
                return Err(failure.io());
            }
            if state.tx_shutdown || state.ended {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream shut down for writing"));
            }
            let room = STREAM_BUFFER.saturating_sub(state.tx.len());
            if room > 0 {
                let n = room.min(data.len());
                let was_empty = state.tx.is_empty();
                state.tx.extend(data.iter().take(n));
                // With bytes already waiting the loop is due to come back for more (the
                // stack's `Writable`); only a first byte needs a wake-up.
                if was_empty {
                    wake(&self.shared, &mut state, &self.commands);
                }
                return Ok(n);
            }
            let (next, more) = self.shared.wait(state, deadline);
            if !more {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
            }
            state = next;
        }
    }

    /// Wait until everything written was taken by the TCP stack.
    fn flush_bytes(&self) -> io::Result<()> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        let mut state = self.shared.lock();
        loop {
            if state.tx.is_empty() {
                return Ok(());
            }
            if let Some(failure) = state.failure {
                return Err(failure.io());
            }
            let (next, more) = self.shared.wait(state, deadline);
            if !more {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "flush timed out"));
            }
            state = next;
        }
    }
}

impl io::Read for &MeshStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_bytes(buf)
    }
}

impl io::Write for &MeshStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_bytes(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_bytes()
    }
}

impl io::Read for MeshStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_bytes(buf)
    }
}

impl io::Write for MeshStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_bytes(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_bytes()
    }
}

/// Closing: what was written is still sent, then FIN; what arrives from now on is
/// discarded (unread data resets the connection, as a kernel does).
impl Drop for MeshStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.dropped = true;
        state.tx_shutdown = true;
        wake(&self.shared, &mut state, &self.commands);
    }
}
