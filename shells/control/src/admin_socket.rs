//! The admin socket, `DIR/admin.sock` (mode 0600): framed JSON requests ([`crate::admin_api`])
//! from local administrators, who act as `admin`. The peer's uid (SO_PEERCRED) must be
//! root's or the server's own; anyone else is disconnected without an answer.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::actor::ActorHandle;
use crate::admin_api::{frame, frame_len, AdminReply, AdminRequest, FrameError};
use crate::admin_dispatch::dispatch;
use crate::storage::StoreHandle;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0} exists and is not a socket")]
    NotASocket(String),
}

/// Binds the socket, replacing a stale one left by a previous run.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let shown = path.display().to_string();
    let io = |source| SocketError::Io { path: shown.clone(), source };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(io)?,
        Ok(_) => return Err(SocketError::NotASocket(shown)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, actor: ActorHandle, store: StoreHandle) {
    let own_uid = rustix::process::geteuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: no peer credentials");
                continue;
            }
        };
        if uid != 0 && uid != own_uid {
            tracing::warn!(uid, "admin socket: refused a connection from another user");
            continue;
        }
        let (actor, store) = (actor.clone(), store.clone());
        tokio::spawn(async move {
            if let Err(e) = session(stream, &actor, &store).await {
                tracing::info!(error = %e, "admin socket: session ended");
            }
        });
    }
}

/// Requests on one connection, answered in order, until the client closes.
async fn session(mut stream: UnixStream, actor: &ActorHandle, store: &StoreHandle) -> Result<(), FrameError> {
    loop {
        let mut prefix = [0u8; 4];
        match stream.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; frame_len(prefix)?];
        stream.read_exact(&mut body).await?;
        let reply = match serde_json::from_slice::<AdminRequest>(&body) {
            Ok(request) => dispatch(actor, store, "admin".into(), request).await,
            Err(e) => AdminReply::Error(format!("not an admin request: {e}")),
        };
        stream.write_all(&frame(&serde_json::to_vec(&reply)?)?).await?;
    }
}
