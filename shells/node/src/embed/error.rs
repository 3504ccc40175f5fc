//! What can go wrong for an embedded node, by cause.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::control_key::ControlKeyError;
use crate::prefs::PrefsError;
use crate::runtime::RuntimeError;
use crate::state_dir::StateDirError;

#[derive(Debug, Error)]
pub enum EmbedError {
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error(transparent)]
    Prefs(#[from] PrefsError),
    #[error("control key: {0}")]
    ControlKey(#[from] ControlKeyError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("up: {0}")]
    Up(String),
    #[error("cannot start the node's thread: {0}")]
    Thread(io::Error),
    #[error("the control server refused this node: {0}")]
    Rejected(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("the node has stopped")]
    Stopped,
    #[error("the node has no mesh address yet")]
    NotRunning,
    #[error("port {0} is already listened on")]
    PortInUse(u16),
    #[error("port {0} cannot be listened on (reserved by the node)")]
    PortReserved(u16),
    #[error("{0}: no peer routes to this address")]
    NoRoute(SocketAddr),
    #[error("{0}: connection refused")]
    Refused(SocketAddr),
    #[error("{addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
}

impl From<EmbedError> for io::Error {
    fn from(error: EmbedError) -> Self {
        let kind = match &error {
            EmbedError::Timeout(..) => io::ErrorKind::TimedOut,
            EmbedError::Refused(_) => io::ErrorKind::ConnectionRefused,
            EmbedError::NoRoute(_) => io::ErrorKind::HostUnreachable,
            EmbedError::PortInUse(_) => io::ErrorKind::AddrInUse,
            EmbedError::Stopped | EmbedError::NotRunning => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}
