//! The local API's listener on a Unix socket, driven by the runtime's mio loop. Each
//! connection is checked by its peer credentials (root, the daemon's own uid, or a member
//! of the operator group when one is configured) when accepted, then reads newline-terminated JSON requests up to
//! [`MAX_REQUEST`](super::protocol::MAX_REQUEST) bytes; a longer line or bad JSON gets an
//! error response and the connection is closed. Connections are bounded in number.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use thiserror::Error;
use tracing::{debug, warn};

use super::protocol::{Request, Response, MAX_REQUEST};

/// Open API connections at most (further ones are closed at once).
const MAX_CONNECTIONS: usize = 32;
/// Unsent response bytes at most per connection (a client that never reads is cut).
const MAX_PENDING_OUT: usize = 4 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum LocalApiError {
    #[error("local API socket {path}: {error}")]
    Bind { path: PathBuf, error: io::Error },
    #[error("local API: {0}")]
    Poll(io::Error),
}

struct Connection {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once `output` is written.
    closing: bool,
}

/// The listener and its connections; tokens from `first_token` up.
pub struct LocalApi {
    listener: UnixListener,
    path: PathBuf,
    listener_token: Token,
    next_token: usize,
    connections: BTreeMap<Token, Connection>,
    own_uid: u32,
    /// Members of this group may call too (the socket is then 0660 and of this group).
    operator_gid: Option<u32>,
    registry: Registry,
}

impl std::fmt::Debug for LocalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApi").field("path", &self.path).field("connections", &self.connections.len()).finish()
    }
}

impl LocalApi {
    /// Bind `path` (a stale socket file is replaced; the state dir lock makes sure no
    /// other daemon owns it), mode 0600, or 0660 and owned by the operator group.
    pub fn bind(
        path: &Path,
        registry: &Registry,
        listener_token: Token,
        operator_gid: Option<u32>,
    ) -> Result<Self, LocalApiError> {
        let bind_err = |error| LocalApiError::Bind { path: path.to_path_buf(), error };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let mut listener = UnixListener::bind(path).map_err(bind_err)?;
        use std::os::unix::fs::PermissionsExt as _;
        let mode = match operator_gid {
            Some(gid) => {
                std::os::unix::fs::chown(path, None, Some(gid)).map_err(bind_err)?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
        registry.register(&mut listener, listener_token, Interest::READABLE).map_err(LocalApiError::Poll)?;
        let registry = registry.try_clone().map_err(LocalApiError::Poll)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            listener_token,
            next_token: listener_token.0 + 1,
            connections: BTreeMap::new(),
            own_uid: rustix::process::getuid().as_raw(),
            operator_gid,
            registry,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `token` belongs to the API.
    pub fn owns(&self, token: Token) -> bool {
        token == self.listener_token || self.connections.contains_key(&token)
    }

    /// Handle readiness of `token`; requests go to `answer` in order.
    pub fn handle_event(&mut self, token: Token, mut answer: impl FnMut(Request) -> Response) {
        if token == self.listener_token {
            self.accept();
            return;
        }
        let Some(conn) = self.connections.get_mut(&token) else { return };
        let alive = serve(conn, &mut answer);
        if !alive {
            if let Some(mut conn) = self.connections.remove(&token) {
                let _ = self.registry.deregister(&mut conn.stream);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    debug!(%error, "local API accept failed");
                    return;
                }
            };
            let (uid, gid) = match rustix::net::sockopt::socket_peercred(&stream) {
                Ok(cred) => (cred.uid.as_raw(), cred.gid.as_raw()),
                Err(error) => {
                    debug!(%error, "local API: no peer credentials");
                    continue;
                }
            };
            let operator = || self.operator_gid.is_some_and(|op| is_member(uid, gid, op));
            if uid != 0 && uid != self.own_uid && !operator() {
                warn!(uid, "local API: caller refused (not root, the daemon's user or an operator)");
                let mut line = serde_json::to_vec(&Response::error("permission denied")).unwrap_or_default();
                line.push(b'\n');
                let _ = stream.write(&line);
                continue;
            }
            if self.connections.len() >= MAX_CONNECTIONS {
                warn!("local API: too many connections");
                continue;
            }
            let token = Token(self.next_token);
            self.next_token += 1;
            if let Err(error) = self.registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                debug!(%error, "local API: cannot register a connection");
                continue;
            }
            self.connections
                .insert(token, Connection { stream, input: Vec::new(), output: Vec::new(), closing: false });
        }
    }
}

impl Drop for LocalApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Read what there is, answer every complete line, write what can be written; whether
/// the connection stays open.
/// Whether the caller (`uid`, primary `gid`) is in group `group`: its primary group, or a
/// supplementary one by the group database (NSS, so LDAP groups count).
fn is_member(uid: u32, gid: u32, group: u32) -> bool {
    if gid == group {
        return true;
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else { return false };
    let Ok(name) = std::ffi::CString::new(user.name) else { return false };
    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        .is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == group))
}

fn serve(conn: &mut Connection, answer: &mut impl FnMut(Request) -> Response) -> bool {
    let mut buf = [0u8; 4096];
    let mut eof = false;
    while !conn.closing {
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                conn.input.extend_from_slice(buf.get(..n).unwrap_or_default());
                while let Some(end) = conn.input.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = conn.input.drain(..=end).collect();
                    let response = match parse(line.get(..end).unwrap_or_default()) {
                        Ok(request) => answer(request),
                        Err(message) => Response::error(message),
                    };
                    queue(conn, &response);
                }
                if conn.input.len() > MAX_REQUEST {
                    queue(conn, &Response::error(format!("request longer than {MAX_REQUEST} bytes")));
                    conn.input.clear();
                    conn.closing = true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return false,
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if conn.output.len() > MAX_PENDING_OUT {
        return false;
    }
    !(eof || conn.closing) || !conn.output.is_empty()
}

fn parse(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
}

fn queue(conn: &mut Connection, response: &Response) {
    match serde_json::to_vec(response) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            conn.output.extend_from_slice(&bytes);
        }
        Err(error) => debug!(%error, "local API: cannot encode a response"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_garbage_is_an_error() {
        let up = br#"{"cmd":"up","login_server":"10.0.0.1:8080","auth_key":"k","hostname":"a","control_key":"00"}"#;
        assert!(matches!(parse(up), Ok(Request::Up { .. })));
        assert_eq!(parse(br#"{"cmd":"status"}"#), Ok(Request::Status));
        assert!(parse(b"\xff\xfe").is_err());
        assert!(parse(br#"{"cmd":"reboot"}"#).is_err());
        let extra = br#"{"cmd":"up","login_server":"a:1","auth_key":"k","hostname":"a","control_key":"00","x":1}"#;
        assert!(parse(extra).is_err());
        assert!(parse(br#"{"cmd":"up"}"#).is_err());
    }
}
