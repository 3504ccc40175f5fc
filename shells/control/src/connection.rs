//! One control connection after the HTTP upgrade: bytes in and out of the socket, through
//! the core's `ChannelServer` (Noise IK), to and from the actor. No decisions here: the
//! machine key goes to the actor as `handle_connect`, each decoded message as
//! `handle_message`, the end as `handle_disconnect`. A message that does not decode
//! closes this connection only.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::control::messages::{decode, NodeMessage};
use mesh_core::control::server::ConnId;
use mesh_core::control::{ChannelConfig, ChannelServer};
use mesh_core::rng::Rng;
use mesh_core::wireguard::PrivateKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::actor::{ActorHandle, ConnOutput, CONN_QUEUE};
use crate::metrics::Metrics;
use crate::os_random;

/// A node must finish the handshake this soon after the upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUF: usize = 16 * 1024;

/// Why a connection ended (for the log).
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("closed by the node")]
    PeerClosed,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Channel(mesh_core::control::ChannelError),
    #[error("{0}")]
    Decode(mesh_core::control::messages::MessageError),
    #[error("no handshake within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("{0}")]
    Closed(String),
    #[error("dropped by the server (stopping, or the node did not read its messages)")]
    Dropped,
    #[error("cannot set up the channel: {0}")]
    Setup(String),
}

/// Serves one upgraded connection until it ends.
pub async fn serve<IO>(io: IO, conn: ConnId, key: PrivateKey, actor: ActorHandle, metrics: Arc<Metrics>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    metrics.connections_total.fetch_add(1, Relaxed);
    metrics.connections_open.fetch_add(1, Relaxed);
    let mut connected = false;
    let end = run(io, conn, key, &actor, &metrics, &mut connected).await;
    metrics.connections_open.fetch_sub(1, Relaxed);
    match &end {
        End::PeerClosed => tracing::debug!(conn = conn.0, "control connection closed by the node"),
        End::Channel(e) => {
            if !connected {
                metrics.handshake_failures.fetch_add(1, Relaxed);
            }
            tracing::info!(conn = conn.0, error = %e, "control connection failed")
        }
        End::Decode(e) => {
            metrics.decode_errors.fetch_add(1, Relaxed);
            tracing::warn!(conn = conn.0, error = %e, "closing a control connection: malformed message")
        }
        End::Closed(reason) => tracing::info!(conn = conn.0, %reason, "control connection closed by the server"),
        other => tracing::info!(conn = conn.0, reason = %other, "control connection ended"),
    }
    if connected {
        actor.disconnect(conn).await;
    }
}

async fn write_out<IO: AsyncWrite + Unpin>(io: &mut IO, channel: &mut ChannelServer) -> Result<(), End> {
    let mut wrote = false;
    while let Some(bytes) = channel.poll_transmit() {
        io.write_all(&bytes).await.map_err(End::Io)?;
        wrote = true;
    }
    if wrote {
        io.flush().await.map_err(End::Io)?;
    }
    Ok(())
}

async fn run<IO>(
    mut io: IO,
    conn: ConnId,
    key: PrivateKey,
    actor: &ActorHandle,
    metrics: &Metrics,
    connected: &mut bool,
) -> End
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let seed = match os_random::bytes::<32>() {
        Ok(seed) => seed,
        Err(e) => return End::Setup(e.to_string()),
    };
    let mut channel = match ChannelServer::new(key, &mut Rng::new(seed), ChannelConfig::default()) {
        Ok(c) => c,
        Err(e) => return End::Setup(e.to_string()),
    };
    let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
    let mut tx = Some(tx);
    let handshake_deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut buf = vec![0u8; READ_BUF];
    loop {
        tokio::select! {
            read = io.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return End::PeerClosed,
                    Ok(n) => n,
                    Err(e) => return End::Io(e),
                };
                let input = channel.handle_input(buf.get(..n).unwrap_or_default());
                // Message 2 (or anything else the channel owes) goes out even when the input
                // also failed: the channel sends nothing after a fatal error.
                if let Err(end) = write_out(&mut io, &mut channel).await {
                    return end;
                }
                if let Err(e) = input {
                    return End::Channel(e);
                }
                if !*connected && channel.is_established() {
                    if let (Some(machine_key), Some(tx)) = (channel.remote_static(), tx.take()) {
                        if !actor.connect(conn, machine_key, tx).await {
                            return End::Dropped;
                        }
                        *connected = true;
                    }
                }
                while let Some(bytes) = channel.poll_message() {
                    metrics.messages_received.fetch_add(1, Relaxed);
                    let message: NodeMessage = match decode(&bytes) {
                        Ok(m) => m,
                        Err(e) => return End::Decode(e),
                    };
                    if !actor.message(conn, message).await {
                        return End::Dropped;
                    }
                }
            }
            out = rx.recv(), if *connected => match out {
                Some(ConnOutput::Message(bytes)) => {
                    if let Err(e) = channel.send_message(&bytes) {
                        return End::Channel(e);
                    }
                    if let Err(end) = write_out(&mut io, &mut channel).await {
                        return end;
                    }
                }
                Some(ConnOutput::Close(reason)) => {
                    let _ = io.shutdown().await;
                    return End::Closed(reason);
                }
                None => return End::Dropped,
            },
            () = tokio::time::sleep_until(handshake_deadline), if !*connected => return End::HandshakeTimeout,
        }
    }
}
