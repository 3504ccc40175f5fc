//! The coordination server's public key, fetched with `GET /key` over plain HTTP: for
//! tests and trusted networks only (a node must pin the key: pass it explicitly
//! elsewhere, since an attacker on the path could answer with its own). Shared by
//! `meshctl up` and the embedded node.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use thiserror::Error;

/// An answer longer than this is not a key.
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(Debug, Error)]
pub enum ControlKeyError {
    #[error("{host}: {error}")]
    Io { host: String, error: io::Error },
    #[error("{0}: no address")]
    NoAddress(String),
    #[error("bad HTTP response for /key")]
    BadResponse,
    #[error("GET /key: {0}")]
    Status(String),
    #[error("GET /key: not a key")]
    NotAKey,
}

/// `host:port` of a login server given as `http://host:port/` or bare.
pub fn server_host(login_server: &str) -> &str {
    let host = login_server.trim();
    host.strip_prefix("http://").unwrap_or(host).trim_end_matches('/')
}

/// The login server's first address (the resolver is asked, so this may block).
pub fn resolve(login_server: &str) -> Result<SocketAddr, ControlKeyError> {
    let host = server_host(login_server);
    let io_err = |error| ControlKeyError::Io { host: host.to_string(), error };
    host.to_socket_addrs().map_err(io_err)?.next().ok_or_else(|| ControlKeyError::NoAddress(host.into()))
}

/// The server's key (64 hex digits) from `login_server` (`host:port`, optionally behind
/// `http://`), each step bounded by `timeout`.
pub fn fetch(login_server: &str, timeout: Duration) -> Result<String, ControlKeyError> {
    let host = server_host(login_server);
    let io_err = |error| ControlKeyError::Io { host: host.to_string(), error };
    let addr = resolve(login_server)?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    write!(stream, "GET /key HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(io_err)?;
    let mut body = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut body).map_err(io_err)?;
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or(ControlKeyError::BadResponse)?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(ControlKeyError::Status(head.lines().next().unwrap_or_default().to_string()));
    }
    let key = rest.trim();
    if crate::state_dir::parse_hex(key).is_none() {
        return Err(ControlKeyError::NotAKey);
    }
    Ok(key.to_string())
}
