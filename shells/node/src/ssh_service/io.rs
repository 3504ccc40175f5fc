//! The descriptors a channel host watches: which token stands for what, registering and
//! forgetting them, and the outbound connections of `direct-tcpip`.

use std::io;
use std::net::{Shutdown, ToSocketAddrs as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::time::Duration;

use mesh_core::ssh::channel::ChannelId;
use mio::net::{TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Interest, Token};

/// What a token of one connection stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelTarget {
    ChildIn(ChannelId),
    ChildOut(ChannelId),
    ChildErr(ChannelId),
    Forward(ChannelId),
    /// A port listening for `ssh -R`, by the port it is bound to.
    Listener(u16),
    /// The forwarded agent's socket (`ssh -A`).
    AgentListener,
}

/// The caller's token allocation for one connection.
pub trait Tokens {
    /// A fresh token the caller will map back to `target` of this connection.
    fn token(&mut self, target: ChannelTarget) -> Token;
    /// `token` is no longer in use.
    fn forget(&mut self, token: Token);
}

/// A registered descriptor and what is known of its readiness.
#[derive(Debug)]
pub(super) struct Io {
    pub(super) token: Token,
    pub(super) fd: RawFd,
    pub(super) ready: bool,
    /// Writable, for a descriptor used both ways (a forwarded socket).
    pub(super) writable: bool,
    /// End of output seen (read side).
    pub(super) eof: bool,
}

pub(super) fn register(
    mio: &mio::Registry,
    tokens: &mut dyn Tokens,
    fd: RawFd,
    target: ChannelTarget,
    interest: Interest,
) -> io::Result<Io> {
    let token = tokens.token(target);
    if let Err(error) = mio.register(&mut SourceFd(&fd), token, interest) {
        tokens.forget(token);
        return Err(error);
    }
    Ok(Io { token, fd, ready: true, writable: true, eof: false })
}

pub(super) fn deregister(mio: &mio::Registry, tokens: &mut dyn Tokens, io: &Io) {
    let _ = mio.deregister(&mut SourceFd(&io.fd));
    tokens.forget(io.token);
}

/// What a forwarding channel carries: a TCP connection (`-L`, `-R`) or a connection to the
/// agent socket (`-A`).
#[derive(Debug)]
pub(super) enum ForwardStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl ForwardStream {
    pub(super) fn fd(&self) -> RawFd {
        match self {
            ForwardStream::Tcp(s) => s.as_raw_fd(),
            ForwardStream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub(super) fn shutdown_write(&self) {
        let _ = match self {
            ForwardStream::Tcp(s) => s.shutdown(Shutdown::Write),
            ForwardStream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl io::Read for ForwardStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ForwardStream::Tcp(s) => s.read(buf),
            ForwardStream::Unix(s) => s.read(buf),
        }
    }
}

impl io::Write for ForwardStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ForwardStream::Tcp(s) => s.write(buf),
            ForwardStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `direct-tcpip` connection: a bounded blocking connect (the target is usually local),
/// then non-blocking.
pub(super) fn connect(host: &str, port: u32) -> io::Result<TcpStream> {
    let port = u16::try_from(port).map_err(|_| io::Error::other("port out of range"))?;
    let addr = (host, port).to_socket_addrs()?.next().ok_or_else(|| io::Error::other("no address"))?;
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    Ok(TcpStream::from_std(stream))
}
