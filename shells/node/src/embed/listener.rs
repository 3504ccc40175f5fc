//! A port served on the node's mesh addresses: the loop queues accepted connections
//! (at most [`super::ACCEPT_BACKLOG`]) and [`Listener::accept`] takes them. Dropping the
//! listener stops serving the port; connections it accepted stay.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::command::{Command, Commands};
use super::stream::{Failure, MeshStream};

#[derive(Debug, Default)]
pub(super) struct ListenerState {
    pub queue: VecDeque<MeshStream>,
    /// The listener ended on the loop's side (the node stopped).
    pub closed: Option<Failure>,
}

#[derive(Debug, Default)]
pub(super) struct ListenerShared {
    state: Mutex<ListenerState>,
    changed: Condvar,
}

impl ListenerShared {
    pub fn lock(&self) -> MutexGuard<'_, ListenerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }
}

/// Accepts TCP connections to one port of the node's mesh addresses.
#[derive(Debug)]
pub struct Listener {
    shared: Arc<ListenerShared>,
    commands: Commands,
    port: u16,
}

impl Listener {
    pub(super) fn new(shared: Arc<ListenerShared>, commands: Commands, port: u16) -> Self {
        Self { shared, commands, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next connection and where it came from; waits for one.
    pub fn accept(&self) -> io::Result<(MeshStream, SocketAddr)> {
        self.accept_until(None)
    }

    /// As [`Self::accept`], giving up after `timeout` (`ErrorKind::TimedOut`).
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<(MeshStream, SocketAddr)> {
        self.accept_until(Some(Instant::now() + timeout))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> io::Result<(MeshStream, SocketAddr)> {
        let mut state = self.shared.lock();
        loop {
            if let Some(stream) = state.queue.pop_front() {
                let remote = stream.peer_addr();
                return Ok((stream, remote));
            }
            if let Some(failure) = state.closed {
                return Err(failure.io());
            }
            state = match deadline {
                None => self.shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "accept timed out"));
                    }
                    self.shared.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Nothing to do if the loop has ended: its listeners ended with it.
        let _ = self.commands.send(Command::Unlisten { port: self.port });
    }
}
