//! Durable state behind one narrow interface, [`Store`]: load the core's [`State`] at
//! start, commit the core's [`Change`]s (write-ahead: the actor awaits each commit before it
//! acts on later outputs), read the audit log, and keep the shell's local passwords.
//!
//! SQLite is the backend today ([`sqlite`]); a PostgreSQL backend implements the same
//! trait. Stores are synchronous: [`StoreHandle`] runs one on a dedicated thread and gives
//! the async shell an `await`able call.

pub mod migrations;
pub mod sqlite;

use std::sync::mpsc as std_mpsc;

use mesh_core::control::server::{AuditEntry, Change, State, UserId};
use thiserror::Error;
use tokio::sync::oneshot;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: a stored record is malformed: {0}")]
    Corrupt(String),
    #[error("database schema version {found} is newer than this meshcontrol knows ({known})")]
    TooNew { found: u32, known: u32 },
    #[error("database: {0}")]
    Setup(String),
    #[error("the storage thread has stopped")]
    Gone,
}

/// Which audit entries to read: the newest `limit` that pass every filter set.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// The most recent entries kept, at most this many.
    pub limit: usize,
    /// Exactly this actor.
    pub actor: Option<String>,
    /// Actions starting with this.
    pub action: Option<String>,
    /// Details containing this.
    pub contains: Option<String>,
}

/// Everything meshcontrol keeps. A commit is atomic: all of `changes` or none.
pub trait Store: Send {
    /// The core's state, for `ControlServer::new`.
    fn load(&self) -> Result<State, StoreError>;
    /// Makes `changes` durable, in order, in one transaction.
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError>;
    /// Audit entries, oldest first.
    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
    /// The argon2 hash (PHC string) of a user's local password.
    fn password_hash(&self, user: UserId) -> Result<Option<String>, StoreError>;
    fn set_password(&mut self, user: UserId, hash: &str) -> Result<(), StoreError>;
}

type Job = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// A store on its own thread. Cloning shares the thread; it ends when the last handle goes.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    jobs: std_mpsc::Sender<Job>,
}

impl StoreHandle {
    pub fn spawn(mut store: Box<dyn Store>) -> Result<Self, StoreError> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("meshcontrol-store".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(store.as_mut());
                }
            })
            .map_err(|e| StoreError::Setup(format!("cannot start the storage thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the storage thread and waits for its result.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        self.jobs.send(job).map_err(|_| StoreError::Gone)?;
        rx.await.map_err(|_| StoreError::Gone)?
    }
}
