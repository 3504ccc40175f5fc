//! How application threads reach the loop: a channel of commands plus the runtime's mio
//! waker, so the loop wakes from `epoll` at once. The channel stays bounded by design:
//! listen and connect are blocking calls (one command per calling thread), and a stream
//! has at most one wake-up queued at a time (its `wake_queued` flag).

use std::net::SocketAddr;
use std::sync::mpsc::{Sender, SyncSender};
use std::sync::Arc;

use mio::Waker;

use super::error::EmbedError;
use super::listener::ListenerShared;
use super::stream::StreamShared;

pub(super) enum Command {
    Listen {
        port: u16,
        reply: SyncSender<Result<Arc<ListenerShared>, EmbedError>>,
    },
    Unlisten {
        port: u16,
    },
    Connect {
        remote: SocketAddr,
        stream: Arc<StreamShared>,
    },
    /// The stream changed on the application's side (data written, room made by a read,
    /// shutdown, dropped, given up): the loop looks at it again.
    Stream(Arc<StreamShared>),
}

/// The sending side, cloned into every handle.
#[derive(Clone)]
pub(super) struct Commands {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

impl Commands {
    pub fn new(tx: Sender<Command>, waker: Arc<Waker>) -> Self {
        Self { tx, waker }
    }

    /// Queue a command and wake the loop; `Stopped` once the loop has ended.
    pub fn send(&self, command: Command) -> Result<(), EmbedError> {
        self.tx.send(command).map_err(|_| EmbedError::Stopped)?;
        self.waker.wake().map_err(|_| EmbedError::Stopped)
    }
}
