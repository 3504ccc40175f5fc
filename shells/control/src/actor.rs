//! The one task that owns the core's `ControlServer`. Connections, the admin API and the
//! login pages talk to it over a channel ([`ActorHandle`]); it feeds their inputs to the
//! core, then drains the core's outputs **in order**: consecutive `Persist` changes are
//! committed in one transaction and awaited before any later output is acted on
//! (write-ahead: no reply goes out before the change it depends on is durable), `Send`
//! is encoded and queued on its connection, `Close` ends it. Admin replies are answered
//! after the drain, so a client told "done" can rely on it surviving a crash.
//!
//! A failed commit stops the server: the core's memory is then ahead of the database, and
//! a restart reloads the last durable state.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::control::messages::{encode, NodeMessage, ServerMessage};
use mesh_core::control::server::{AuditEntry, Change, ConnId, ControlServer, Output};
use mesh_core::wireguard::PublicKey;
use serde_json::Value;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::admin_api::AdminRequest;
use crate::admin_exec;
use crate::clock::{unix_now, Clock};
use crate::metrics::{Gauges, Metrics};
use crate::storage::{StoreError, StoreHandle};

/// Messages a connection's send queue holds before the connection is dropped as too slow.
pub const CONN_QUEUE: usize = 1024;
/// Inputs waiting for the actor.
const INPUT_QUEUE: usize = 1024;
/// The core's wall clock is refreshed (through `handle_timeout`) at least this often, so
/// key expiry is noticed and new keys are stamped with the right time.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum ActorError {
    #[error("committing to the database failed; stopping so a restart reloads the durable state: {0}")]
    Commit(StoreError),
}

/// What the actor sends a connection.
#[derive(Debug)]
pub enum ConnOutput {
    /// An encoded `ServerMessage`.
    Message(Vec<u8>),
    Close(String),
}

/// Which login page asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingKind {
    Login,
    Check,
}

/// A pending login or check as the login page shows it.
#[derive(Clone, Debug)]
pub struct PendingInfo {
    pub description: String,
    /// For a check: the user who owns the source node (only they may approve).
    pub owner: Option<String>,
}

/// Debug names the variant only: inputs carry API-key secrets, password hashes and
/// login tokens.
enum Input {
    Connect {
        conn: ConnId,
        machine_key: PublicKey,
        tx: mpsc::Sender<ConnOutput>,
    },
    Message {
        conn: ConnId,
        message: NodeMessage,
    },
    Disconnect {
        conn: ConnId,
    },
    Admin {
        actor: String,
        request: AdminRequest,
        reply: oneshot::Sender<Result<Value, String>>,
    },
    SetPassword {
        actor: String,
        user: String,
        hash: String,
        reply: oneshot::Sender<Result<Value, String>>,
    },
    VerifyApiKey {
        secret: String,
        reply: oneshot::Sender<Option<u64>>,
    },
    UserId {
        name: String,
        reply: oneshot::Sender<Option<mesh_core::control::server::UserId>>,
    },
    Pending {
        kind: PendingKind,
        token: String,
        reply: oneshot::Sender<Option<PendingInfo>>,
    },
    Approve {
        kind: PendingKind,
        token: String,
        user: String,
        authenticated: Option<u64>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Gauges {
        reply: oneshot::Sender<Gauges>,
    },
    SetUserGroups {
        user: String,
        groups: Vec<String>,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// A shell event for the audit log (console sign-ins), durable before the reply.
    Audit {
        entry: AuditEntry,
        reply: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Input::Connect { .. } => "Input::Connect",
            Input::Message { .. } => "Input::Message",
            Input::Disconnect { .. } => "Input::Disconnect",
            Input::Admin { .. } => "Input::Admin",
            Input::SetPassword { .. } => "Input::SetPassword",
            Input::VerifyApiKey { .. } => "Input::VerifyApiKey",
            Input::UserId { .. } => "Input::UserId",
            Input::Pending { .. } => "Input::Pending",
            Input::Approve { .. } => "Input::Approve",
            Input::Gauges { .. } => "Input::Gauges",
            Input::Audit { .. } => "Input::Audit",
            Input::SetUserGroups { .. } => "Input::SetUserGroups",
        })
    }
}

/// The way to the actor. Calls fail only when the actor has stopped.
#[derive(Clone, Debug)]
pub struct ActorHandle {
    tx: mpsc::Sender<Input>,
}

#[derive(Debug, Error)]
#[error("the control server has stopped")]
pub struct Stopped;

impl ActorHandle {
    async fn ask<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> Input) -> Result<R, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn connect(&self, conn: ConnId, machine_key: PublicKey, tx: mpsc::Sender<ConnOutput>) -> bool {
        self.tx.send(Input::Connect { conn, machine_key, tx }).await.is_ok()
    }

    pub async fn message(&self, conn: ConnId, message: NodeMessage) -> bool {
        self.tx.send(Input::Message { conn, message }).await.is_ok()
    }

    pub async fn disconnect(&self, conn: ConnId) {
        let _ = self.tx.send(Input::Disconnect { conn }).await;
    }

    pub async fn admin(&self, actor: String, request: AdminRequest) -> Result<Result<Value, String>, Stopped> {
        self.ask(|reply| Input::Admin { actor, request, reply }).await
    }

    pub async fn set_password(
        &self,
        actor: String,
        user: String,
        hash: String,
    ) -> Result<Result<Value, String>, Stopped> {
        self.ask(|reply| Input::SetPassword { actor, user, hash, reply }).await
    }

    pub async fn verify_api_key(&self, secret: String) -> Result<Option<u64>, Stopped> {
        self.ask(|reply| Input::VerifyApiKey { secret, reply }).await
    }

    pub async fn user_id(&self, name: String) -> Result<Option<mesh_core::control::server::UserId>, Stopped> {
        self.ask(|reply| Input::UserId { name, reply }).await
    }

    pub async fn pending(&self, kind: PendingKind, token: String) -> Result<Option<PendingInfo>, Stopped> {
        self.ask(|reply| Input::Pending { kind, token, reply }).await
    }

    /// Approves as `user`, who authenticated at `authenticated` (unix seconds; `None`: now).
    pub async fn approve(
        &self,
        kind: PendingKind,
        token: String,
        user: String,
        authenticated: Option<u64>,
    ) -> Result<Result<(), String>, Stopped> {
        self.ask(|reply| Input::Approve { kind, token, user, authenticated, reply }).await
    }

    pub async fn gauges(&self) -> Result<Gauges, Stopped> {
        self.ask(|reply| Input::Gauges { reply }).await
    }

    /// Records `action` by `actor` in the audit log (now), durably.
    pub async fn audit(&self, actor: &str, action: &str, detail: String) -> Result<(), Stopped> {
        let entry =
            AuditEntry { unix: unix_now().0.as_secs(), actor: actor.to_string(), action: action.to_string(), detail };
        self.ask(|reply| Input::Audit { entry, reply }).await
    }

    /// Records the group claim of `user`'s verified single sign-on (the core sanitizes and
    /// bounds it); whether the groups changed. Durable before the reply.
    pub async fn set_user_groups(&self, user: String, groups: Vec<String>) -> Result<Result<bool, String>, Stopped> {
        self.ask(|reply| Input::SetUserGroups { user, groups, reply }).await
    }
}

/// The actor's state: the core, the database, and each connection's send queue.
#[derive(Debug)]
pub struct Actor {
    server: ControlServer,
    store: StoreHandle,
    clock: Clock,
    metrics: Arc<Metrics>,
    conns: BTreeMap<ConnId, mpsc::Sender<ConnOutput>>,
    rx: mpsc::Receiver<Input>,
}

impl Actor {
    pub fn new(server: ControlServer, store: StoreHandle, clock: Clock, metrics: Arc<Metrics>) -> (Self, ActorHandle) {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        (Self { server, store, clock, metrics, conns: BTreeMap::new(), rx }, ActorHandle { tx })
    }

    /// Runs until every handle is gone, or a commit fails.
    pub async fn run(mut self) -> Result<(), ActorError> {
        // Outputs of construction (none today), then the loop.
        self.drain().await?;
        // The tick's deadline is kept across inputs: were it `now + TICK` afresh each time,
        // a server that hears from some node more often than once a second would never
        // refresh the core's wall clock (audit times, key expiry, pending logins).
        let mut next_tick = self.clock.now() + TICK;
        loop {
            let due = self.server.poll_timeout().map_or(next_tick, |at| at.min(next_tick));
            let input = tokio::select! {
                input = self.rx.recv() => input,
                () = tokio::time::sleep_until(self.clock.deadline(due)) => {
                    let now = self.clock.now();
                    if now >= next_tick {
                        next_tick = now + TICK;
                    }
                    self.core(|s| s.handle_timeout(now, unix_now()));
                    self.drain().await?;
                    continue;
                }
            };
            let Some(input) = input else { return Ok(()) };
            self.handle(input).await?;
        }
    }

    /// A timed call into the core.
    fn core<R>(&mut self, f: impl FnOnce(&mut ControlServer) -> R) -> R {
        let start = std::time::Instant::now();
        let r = f(&mut self.server);
        self.metrics.core_call(start.elapsed());
        r
    }

    async fn handle(&mut self, input: Input) -> Result<(), ActorError> {
        let now = self.clock.now();
        match input {
            Input::Connect { conn, machine_key, tx } => {
                self.conns.insert(conn, tx);
                self.core(|s| s.handle_connect(now, conn, machine_key));
            }
            Input::Message { conn, message } => {
                if self.conns.contains_key(&conn) {
                    self.core(|s| s.handle_message(now, conn, message));
                }
            }
            Input::Disconnect { conn } => {
                self.conns.remove(&conn);
                self.core(|s| s.handle_disconnect(now, conn));
            }
            Input::Admin { actor, request, reply } => {
                let unix = unix_now().0.as_secs();
                let op = request.op();
                let result = self.core(|s| admin_exec::apply(s, now, unix, &actor, request));
                self.drain().await?;
                self.note_admin(&actor, &op, &result);
                let _ = reply.send(result);
                return Ok(());
            }
            Input::SetPassword { actor, user, hash, reply } => {
                let result = self.set_password(&actor, user, hash).await?;
                self.note_admin(&actor, "users/passwd", &result);
                let _ = reply.send(result);
                return Ok(());
            }
            Input::VerifyApiKey { secret, reply } => {
                let _ = reply.send(self.server.verify_api_key(&secret));
            }
            Input::UserId { name, reply } => {
                let _ = reply.send(self.server.user_id(&name));
            }
            Input::Pending { kind, token, reply } => {
                let _ = reply.send(self.pending(kind, &token));
            }
            Input::Approve { kind, token, user, authenticated, reply } => {
                let result = self.core(|s| approve(s, now, kind, &token, &user, authenticated));
                self.drain().await?;
                let _ = reply.send(result);
                return Ok(());
            }
            Input::Audit { entry, reply } => {
                self.commit(vec![Change::Audit(entry)]).await?;
                let _ = reply.send(());
                return Ok(());
            }
            Input::SetUserGroups { user, groups, reply } => {
                let result = self.core(|s| s.set_user_groups(now, "oidc", &user, &groups)).map_err(|e| e.to_string());
                self.drain().await?;
                let _ = reply.send(result);
                return Ok(());
            }
            Input::Gauges { reply } => {
                let s = &self.server;
                let _ = reply.send(Gauges {
                    nodes: s.nodes().count() as u64,
                    online: s.nodes().filter(|n| s.is_online(n.id)).count() as u64,
                    users: s.users().count() as u64,
                    compiles: s.compile_count(),
                    pending_logins: s.pending_logins().count() as u64,
                    pending_checks: s.pending_checks().count() as u64,
                });
            }
        }
        self.drain().await
    }

    fn note_admin(&self, actor: &str, op: &str, result: &Result<Value, String>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.admin_requests.fetch_add(1, Relaxed);
        match result {
            Ok(_) if op.ends_with("/list") || op.ends_with("/get") || op == "audit" => {
                tracing::debug!(actor, op, "admin request done")
            }
            Ok(_) => tracing::info!(actor, op, "admin request done"),
            Err(why) => {
                self.metrics.admin_refused.fetch_add(1, Relaxed);
                tracing::info!(actor, op, %why, "admin request refused");
            }
        }
    }

    /// Stores a password hash (shell state) and its audit entry, both durable before the reply.
    async fn set_password(
        &mut self,
        actor: &str,
        user: String,
        hash: String,
    ) -> Result<Result<Value, String>, ActorError> {
        let Some(id) = self.server.user_id(&user) else { return Ok(Err(format!("no user {user}"))) };
        let entry = AuditEntry {
            unix: unix_now().0.as_secs(),
            actor: actor.to_string(),
            action: "user-passwd".into(),
            detail: user,
        };
        let started = std::time::Instant::now();
        self.store
            .run(move |store| {
                store.set_password(id, &hash)?;
                store.commit(&[Change::Audit(entry)])
            })
            .await
            .map_err(ActorError::Commit)?;
        self.metrics.commit(1, started.elapsed());
        Ok(Ok(Value::Null))
    }

    fn pending(&self, kind: PendingKind, token: &str) -> Option<PendingInfo> {
        let s = &self.server;
        match kind {
            PendingKind::Login => s.pending_logins().find(|(t, _)| *t == token).map(|(_, hostname)| PendingInfo {
                description: format!("Register the node {hostname:?}"),
                owner: None,
            }),
            PendingKind::Check => s.pending_checks().find(|(t, ..)| *t == token).map(|(_, src, dst, user)| {
                let name = |id: u64| s.nodes().find(|n| n.id.0 == id).map(|n| n.name.clone()).unwrap_or_default();
                let owner = s.nodes().find(|n| n.id.0 == src).map(|n| admin_exec::user_name(s, n.user));
                PendingInfo { description: format!("SSH from {} to {} as {user}", name(src), name(dst)), owner }
            }),
        }
    }

    /// Drains the core's outputs in order (see the module doc).
    async fn drain(&mut self) -> Result<(), ActorError> {
        let mut batch = Vec::new();
        loop {
            match self.server.poll_output() {
                Some(Output::Persist(change)) => batch.push(change),
                other => {
                    if !batch.is_empty() {
                        self.commit(std::mem::take(&mut batch)).await?;
                    }
                    match other {
                        None => return Ok(()),
                        Some(Output::Send { conn, message }) => self.send(conn, &message),
                        Some(Output::Close { conn, reason }) => self.close(conn, reason),
                        Some(Output::Persist(_)) => {}
                    }
                }
            }
        }
    }

    async fn commit(&mut self, changes: Vec<Change>) -> Result<(), ActorError> {
        let started = std::time::Instant::now();
        let n = changes.len();
        self.store.run(move |store| store.commit(&changes)).await.map_err(ActorError::Commit)?;
        self.metrics.commit(n, started.elapsed());
        Ok(())
    }

    fn send(&mut self, conn: ConnId, message: &ServerMessage) {
        let Some(tx) = self.conns.get(&conn) else { return };
        self.metrics.count_sent(message);
        match tx.try_send(ConnOutput::Message(encode(message))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.send_queue_overflows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(conn = conn.0, "dropping a control connection that does not read its messages");
                // Dropping the sender ends the connection; it then reports its disconnect.
                self.conns.remove(&conn);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.conns.remove(&conn);
            }
        }
    }

    fn close(&mut self, conn: ConnId, reason: String) {
        if let Some(tx) = self.conns.remove(&conn) {
            let _ = tx.try_send(ConnOutput::Close(reason));
        }
    }
}

/// The login page's approval as `user`: a login registers the node for `user`; a check
/// may only be approved by the user who owns the source node.
fn approve(
    s: &mut ControlServer,
    now: mesh_core::time::Instant,
    kind: PendingKind,
    token: &str,
    user: &str,
    authenticated: Option<u64>,
) -> Result<(), String> {
    match kind {
        PendingKind::Login => s.approve_login(now, user, token, user).map(|_| ()).map_err(|e| e.to_string()),
        PendingKind::Check => {
            let src = s.pending_checks().find(|(t, ..)| *t == token).map(|(_, src, ..)| src);
            let Some(src) = src else { return Err("this check is no longer pending".into()) };
            let owner = s.nodes().find(|n| n.id.0 == src).map(|n| admin_exec::user_name(s, n.user));
            if owner.as_deref() != Some(user) {
                return Err("only the user who owns the connecting node may approve this login".into());
            }
            match authenticated {
                Some(at) => s.approve_check_authenticated(now, user, token, at),
                None => s.approve_check(now, user, token),
            }
            .map_err(|e| e.to_string())
        }
    }
}
