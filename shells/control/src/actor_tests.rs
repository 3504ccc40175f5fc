//! The actor's write-ahead rule, in process: a reply that depends on a change is not handed
//! to its connection while that change's commit is still running, and a failed commit stops
//! the actor without sending or answering anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::control::messages::{decode, NodeMessage, Register, RegisterAuth, ServerMessage};
use mesh_core::control::server::{AuditEntry, Change, ConnId, ControlServer, ServerConfig, State, UserId};
use mesh_core::wireguard::PublicKey;
use tokio::sync::mpsc;

use crate::actor::{Actor, ActorHandle, ConnOutput};
use crate::admin_api::{AdminRequest, CreatedKey};
use crate::clock::{unix_now, Clock};
use crate::metrics::Metrics;
use crate::storage::{AuditFilter, Store, StoreError, StoreHandle};

/// A store whose commits wait for the test while `open` is false; `fail` makes them fail.
struct GatedStore {
    open: Arc<AtomicBool>,
    fail: bool,
    gate: std_mpsc::Receiver<()>,
    committed: Arc<Mutex<Vec<Change>>>,
}

impl Store for GatedStore {
    fn load(&self) -> Result<State, StoreError> {
        Ok(State::default())
    }
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if self.fail {
            return Err(StoreError::Setup("disk full".into()));
        }
        if !self.open.load(Ordering::SeqCst) {
            let _ = self.gate.recv_timeout(Duration::from_secs(30));
        }
        self.committed.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(changes);
        Ok(())
    }
    fn audit(&self, _: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(Vec::new())
    }
    fn password_hash(&self, _: UserId) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    fn set_password(&mut self, _: UserId, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

struct Fixture {
    handle: ActorHandle,
    open: Arc<AtomicBool>,
    gate: std_mpsc::Sender<()>,
    committed: Arc<Mutex<Vec<Change>>>,
    task: tokio::task::JoinHandle<Result<(), crate::actor::ActorError>>,
}

fn start(fail: bool) -> Fixture {
    let open = Arc::new(AtomicBool::new(true));
    let committed = Arc::new(Mutex::new(Vec::new()));
    let (gate, rx) = std_mpsc::channel();
    let store = GatedStore { open: open.clone(), fail, gate: rx, committed: committed.clone() };
    let store = StoreHandle::spawn(Box::new(store)).unwrap_or_else(|e| panic!("{e}"));
    let server = ControlServer::new(ServerConfig::default(), [3; 32], State::default(), unix_now())
        .unwrap_or_else(|e| panic!("{e}"));
    let (actor, handle) = Actor::new(server, store, Clock::new(), Arc::new(Metrics::default()));
    let task = tokio::spawn(actor.run());
    Fixture { handle, open, gate, committed, task }
}

fn nodes_committed(f: &Fixture) -> usize {
    f.committed.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|c| matches!(c, Change::Node(_))).count()
}

#[tokio::test]
async fn a_reply_waits_for_the_commit_it_depends_on() {
    let f = start(false);
    let admin = |request| f.handle.admin("admin".into(), request);
    admin(AdminRequest::UsersCreate { name: "alice@example.com".into() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let created = admin(AdminRequest::PreauthkeysCreate {
        user: "alice@example.com".into(),
        reusable: false,
        ephemeral: false,
        tags: vec![],
        expiration_secs: 3600,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    let key: CreatedKey = serde_json::from_value(created).unwrap_or_else(|e| panic!("{e}"));

    // Commits now hang until the test lets one through.
    f.open.store(false, Ordering::SeqCst);
    let (tx, mut rx) = mpsc::channel(16);
    assert!(f.handle.connect(ConnId(1), PublicKey([1; 32]), tx).await);
    let register = NodeMessage::Register(Register {
        node_key: PublicKey([2; 32]),
        hostname: "laptop".into(),
        ssh_host_keys: vec![],
        requested_tags: vec![],
        ssh: false,
        auth: RegisterAuth::AuthKey(key.key),
    });
    assert!(f.handle.message(ConnId(1), register).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "Registered was queued before the node was committed");
    assert_eq!(nodes_committed(&f), 0);

    f.gate.send(()).unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap_or_else(|e| panic!("{e}"));
    let Some(ConnOutput::Message(bytes)) = out else { panic!("{out:?}") };
    let message: ServerMessage = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(message, ServerMessage::Registered(_)), "{message:?}");
    assert_eq!(nodes_committed(&f), 1, "the node was durable before its reply");
    f.task.abort();
}

#[tokio::test]
async fn a_failed_commit_stops_the_actor_without_answering() {
    let f = start(true);
    let reply = f.handle.admin("admin".into(), AdminRequest::UsersCreate { name: "alice@example.com".into() }).await;
    assert!(reply.is_err(), "the client must not hear `done`: {reply:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(10), f.task).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(stopped, Ok(Err(crate::actor::ActorError::Commit(_)))), "{stopped:?}");
}

#[tokio::test]
async fn the_core_clock_ticks_while_requests_keep_coming() {
    let f = start(false);
    // A request every 200 ms for 2.6 s: the tick must still run, so the audit entries the
    // core stamps with its wall clock move on with time.
    for i in 0..13 {
        let request = AdminRequest::UsersCreate { name: format!("user{i}@example.com") };
        f.handle
            .admin("admin".into(), request)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stamps: Vec<u64> = f
        .committed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|c| match c {
            Change::Audit(a) => Some(a.unix),
            _ => None,
        })
        .collect();
    let (first, last) = (stamps.first().copied().unwrap_or(0), stamps.last().copied().unwrap_or(0));
    assert!(last >= first + 2, "the core's clock stood still: {stamps:?}");
    f.task.abort();
}
