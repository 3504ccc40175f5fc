//! The SQLite backend of [`Store`], in `DIR/meshcontrol.db`.
//!
//! Durability: WAL journal with `synchronous=FULL`, so every commit is fsynced before
//! `commit` returns (NORMAL would keep the database consistent but could lose the last
//! commits on a power cut, and a reply may already have gone out). Records are columns;
//! list fields are JSON of the core's types.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mesh_core::control::server::{
    ApiKeyRecord, ApprovalRecord, AuditEntry, AuthKeyRecord, Change, NodeRecord, State, UserId, UserRecord,
};
use mesh_core::policy::NodeId;
use mesh_core::wireguard::PublicKey;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::de::DeserializeOwned;

use super::{migrations, AuditFilter, Store, StoreError};

#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

/// A u64 id as SQLite's i64 (ids are counters: they never get near 2^63).
fn id(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("id {v} does not fit the database")))
}

/// A time in unix seconds, clamped to i64.
fn time(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative value {v}")))
}

fn key32(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    let len = bytes.len();
    bytes.try_into().map_err(|_| StoreError::Corrupt(format!("a 32-byte key has {len} bytes")))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Created 0600 (SQLite gives its -wal and -shm files the database's mode).
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Setup(format!("{}: {e}", path.display())))?;
        let mut conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Setup(format!("the database refused WAL mode (journal_mode={mode})")));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn, now_unix())?;
        Ok(Self { conn })
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, name, groups FROM users ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        rows.map(|row| {
            let (id, name, groups) = row?;
            // Sanitized again: the core keeps its bounds even on a database edited by hand.
            let groups: Vec<String> = from_json(&groups)?;
            let groups = mesh_core::policy::idp_groups(&groups).kept;
            Ok(UserRecord { id: UserId(unsigned(id)?), name, groups })
        })
        .collect()
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, machine_key, node_key, user_id, name, tags, addresses, endpoints, ssh_host_keys, ssh,
                    key_expiry, ephemeral FROM nodes ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(node(r)?);
        }
        Ok(out)
    }

    fn auth_keys(&self) -> Result<Vec<AuthKeyRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, user_id, hash, reusable, ephemeral, tags, expires, used, revoked FROM auth_keys ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(AuthKeyRecord {
                id: unsigned(r.get(0)?)?,
                user: UserId(unsigned(r.get(1)?)?),
                hash: key32(r.get(2)?)?,
                reusable: r.get(3)?,
                ephemeral: r.get(4)?,
                tags: from_json(&r.get::<_, String>(5)?)?,
                expires: unsigned(r.get(6)?)?,
                used: r.get(7)?,
                revoked: r.get(8)?,
            });
        }
        Ok(out)
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, hash, created, expires, revoked FROM api_keys ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(ApiKeyRecord {
                id: unsigned(r.get(0)?)?,
                hash: key32(r.get(1)?)?,
                created: unsigned(r.get(2)?)?,
                expires: unsigned(r.get(3)?)?,
                revoked: r.get(4)?,
            });
        }
        Ok(out)
    }

    fn approvals(&self) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT src, dst, local_user, authenticated, expires, rule FROM approvals ORDER BY src, dst, local_user",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(ApprovalRecord {
                src: NodeId(unsigned(r.get(0)?)?),
                dst: NodeId(unsigned(r.get(1)?)?),
                local_user: r.get(2)?,
                authenticated: unsigned(r.get(3)?)?,
                expires: unsigned(r.get(4)?)?,
                rule: r.get(5)?,
            });
        }
        Ok(out)
    }

    fn policy(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT text FROM policy_history ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
            .optional()?)
    }
}

fn node(r: &Row<'_>) -> Result<NodeRecord, StoreError> {
    let key_expiry: Option<i64> = r.get(10)?;
    Ok(NodeRecord {
        id: NodeId(unsigned(r.get(0)?)?),
        machine_key: PublicKey(key32(r.get(1)?)?),
        node_key: PublicKey(key32(r.get(2)?)?),
        user: UserId(unsigned(r.get(3)?)?),
        name: r.get(4)?,
        tags: from_json(&r.get::<_, String>(5)?)?,
        addresses: from_json(&r.get::<_, String>(6)?)?,
        endpoints: from_json(&r.get::<_, String>(7)?)?,
        ssh_host_keys: from_json(&r.get::<_, String>(8)?)?,
        ssh: r.get(9)?,
        key_expiry: key_expiry.map(unsigned).transpose()?,
        ephemeral: r.get(11)?,
    })
}

fn apply(tx: &rusqlite::Transaction<'_>, change: &Change, unix: u64) -> Result<(), StoreError> {
    match change {
        Change::User(u) => {
            tx.execute(
                "INSERT INTO users (id, name, groups) VALUES (?1, ?2, ?3)
                    ON CONFLICT (id) DO UPDATE SET name = excluded.name, groups = excluded.groups",
                params![id(u.id.0)?, u.name, json(&u.groups)?],
            )?;
        }
        Change::UserRemoved(user) => {
            tx.execute("DELETE FROM users WHERE id = ?1", params![id(user.0)?])?;
            tx.execute("DELETE FROM passwords WHERE user_id = ?1", params![id(user.0)?])?;
        }
        Change::Node(n) => {
            tx.execute(
                "INSERT OR REPLACE INTO nodes (id, machine_key, node_key, user_id, name, tags, addresses, endpoints,
                    ssh_host_keys, ssh, key_expiry, ephemeral) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    id(n.id.0)?,
                    &n.machine_key.0[..],
                    &n.node_key.0[..],
                    id(n.user.0)?,
                    n.name,
                    json(&n.tags)?,
                    json(&n.addresses)?,
                    json(&n.endpoints)?,
                    json(&n.ssh_host_keys)?,
                    n.ssh,
                    n.key_expiry.map(time),
                    n.ephemeral
                ],
            )?;
        }
        Change::NodeRemoved(node) => {
            tx.execute("DELETE FROM nodes WHERE id = ?1", params![id(node.0)?])?;
        }
        Change::AuthKey(k) => {
            tx.execute(
                "INSERT OR REPLACE INTO auth_keys (id, user_id, hash, reusable, ephemeral, tags, expires, used, revoked)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id(k.id)?,
                    id(k.user.0)?,
                    &k.hash[..],
                    k.reusable,
                    k.ephemeral,
                    json(&k.tags)?,
                    time(k.expires),
                    k.used,
                    k.revoked
                ],
            )?;
        }
        Change::ApiKey(k) => {
            tx.execute(
                "INSERT OR REPLACE INTO api_keys (id, hash, created, expires, revoked) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id(k.id)?, &k.hash[..], time(k.created), time(k.expires), k.revoked],
            )?;
        }
        Change::Policy(text) => {
            tx.execute("INSERT INTO policy_history (unix, text) VALUES (?1, ?2)", params![time(unix), text])?;
        }
        Change::Approval(a) => {
            tx.execute(
                "INSERT OR REPLACE INTO approvals (src, dst, local_user, authenticated, expires, rule)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id(a.src.0)?, id(a.dst.0)?, a.local_user, time(a.authenticated), time(a.expires), a.rule],
            )?;
        }
        Change::ApprovalRemoved { src, dst, local_user } => {
            tx.execute(
                "DELETE FROM approvals WHERE src = ?1 AND dst = ?2 AND local_user = ?3",
                params![id(src.0)?, id(dst.0)?, local_user],
            )?;
        }
        Change::Audit(e) => {
            tx.execute(
                "INSERT INTO audit (unix, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![time(e.unix), e.actor, e.action, e.detail],
            )?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load(&self) -> Result<State, StoreError> {
        Ok(State {
            users: self.users()?,
            nodes: self.nodes()?,
            auth_keys: self.auth_keys()?,
            api_keys: self.api_keys()?,
            approvals: self.approvals()?,
            policy: self.policy()?,
        })
    }

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let unix = now_unix();
        let tx = self.conn.transaction()?;
        for change in changes {
            apply(&tx, change, unix)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(
            "SELECT unix, actor, action, detail FROM
                (SELECT id, unix, actor, action, detail FROM audit
                 WHERE (?1 IS NULL OR actor = ?1)
                   AND (?3 IS NULL OR substr(action, 1, length(?3)) = ?3)
                   AND (?4 IS NULL OR instr(detail, ?4) > 0)
                 ORDER BY id DESC LIMIT ?2)
             ORDER BY id",
        )?;
        let mut rows = stmt.query(params![filter.actor, limit, filter.action, filter.contains])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(AuditEntry { unix: unsigned(r.get(0)?)?, actor: r.get(1)?, action: r.get(2)?, detail: r.get(3)? });
        }
        Ok(out)
    }

    fn password_hash(&self, user: UserId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT hash FROM passwords WHERE user_id = ?1", params![id(user.0)?], |r| r.get(0))
            .optional()?)
    }

    fn set_password(&mut self, user: UserId, hash: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO passwords (user_id, hash) VALUES (?1, ?2)
                ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash",
            params![id(user.0)?, hash],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::control::server::{ApiKeyRecord, ApprovalRecord, AuthKeyRecord};

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("meshcontrol-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    fn node(id: u64, user: u64) -> NodeRecord {
        NodeRecord {
            id: NodeId(id),
            machine_key: PublicKey([id as u8; 32]),
            node_key: PublicKey([id as u8 + 100; 32]),
            user: UserId(user),
            name: format!("n{id}"),
            tags: vec!["tag:web".into()],
            addresses: vec!["100.64.0.1".parse().unwrap_or_else(|e| panic!("{e}"))],
            endpoints: vec!["192.0.2.1:41641".parse().unwrap_or_else(|e| panic!("{e}"))],
            ssh_host_keys: vec!["ssh-ed25519 AAAA host".into()],
            ssh: true,
            key_expiry: None,
            ephemeral: false,
        }
    }

    #[test]
    fn every_change_round_trips_through_a_reopen() {
        let dir = temp("roundtrip");
        let path = dir.join("db");
        let alice = UserRecord { id: UserId(1), name: "alice@example.com".into(), groups: vec!["eng".into()] };
        let alice_before = UserRecord { groups: vec!["eng".into(), "ops".into()], ..alice.clone() };
        let bob = UserRecord { id: UserId(2), name: "bob@example.com".into(), groups: vec![] };
        let key = AuthKeyRecord {
            id: 1,
            user: UserId(1),
            hash: [7; 32],
            reusable: true,
            ephemeral: false,
            tags: vec![],
            expires: u64::MAX,
            used: false,
            revoked: false,
        };
        let api = ApiKeyRecord { id: 3, hash: [9; 32], created: 10, expires: 20, revoked: false };
        let approval = |local_user: &str| ApprovalRecord {
            src: NodeId(1),
            dst: NodeId(2),
            local_user: local_user.into(),
            authenticated: 5,
            expires: 6,
            rule: "r".into(),
        };
        {
            let mut store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let changes = vec![
                Change::User(alice_before),
                Change::User(bob.clone()),
                // A later sign-on: the groups are replaced, not merged.
                Change::User(alice.clone()),
                Change::Node(node(1, 1)),
                Change::Node(node(2, 2)),
                Change::NodeRemoved(NodeId(2)),
                Change::AuthKey(key.clone()),
                Change::ApiKey(api.clone()),
                Change::Policy("{}".into()),
                Change::Policy(r#"{"acls": []}"#.into()),
                Change::Approval(approval("root")),
                Change::Approval(approval("alice")),
                Change::ApprovalRemoved { src: NodeId(1), dst: NodeId(2), local_user: "root".into() },
                Change::UserRemoved(UserId(2)),
                Change::Audit(AuditEntry {
                    unix: 1,
                    actor: "admin".into(),
                    action: "node-expire".into(),
                    detail: "alpha (3)".into(),
                }),
            ];
            store.commit(&changes).unwrap_or_else(|e| panic!("{e}"));
            store.set_password(UserId(1), "$argon2id$x").unwrap_or_else(|e| panic!("{e}"));
        }
        let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let state = store.load().unwrap_or_else(|e| panic!("{e}"));
        let mut expired_key = key;
        expired_key.expires = i64::MAX as u64;
        assert_eq!(
            state,
            State {
                users: vec![alice],
                nodes: vec![node(1, 1)],
                auth_keys: vec![expired_key],
                api_keys: vec![api],
                approvals: vec![approval("alice")],
                policy: Some(r#"{"acls": []}"#.into()),
            }
        );
        assert_eq!(store.password_hash(UserId(1)).unwrap_or_else(|e| panic!("{e}")).as_deref(), Some("$argon2id$x"));
        assert_eq!(store.password_hash(UserId(2)).unwrap_or_else(|e| panic!("{e}")), None);
        let all = AuditFilter { limit: 10, ..AuditFilter::default() };
        let audit = store.audit(&all).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(audit.len(), 1);
        let entry = &audit[0];
        let found = |filter: AuditFilter| store.audit(&filter).unwrap_or_else(|e| panic!("{e}")).len();
        assert_eq!(found(AuditFilter { actor: Some("x".into()), ..all.clone() }), 0);
        assert_eq!(found(AuditFilter { actor: Some(entry.actor.clone()), ..all.clone() }), 1);
        let prefix: String = entry.action.chars().take(3).collect();
        assert_eq!(found(AuditFilter { action: Some(prefix), ..all.clone() }), 1);
        assert_eq!(found(AuditFilter { action: Some("zz".into()), ..all.clone() }), 0);
        let middle: String = entry.detail.chars().skip(1).take(2).collect();
        assert_eq!(found(AuditFilter { contains: Some(middle), ..all.clone() }), 1);
        assert_eq!(found(AuditFilter { contains: Some("%".into()), ..all.clone() }), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_commit_changes_nothing() {
        let dir = temp("atomic");
        let mut store = SqliteStore::open(&dir.join("db")).unwrap_or_else(|e| panic!("{e}"));
        let a = UserRecord { id: UserId(1), name: "a@x".into(), groups: vec![] };
        let clash = UserRecord { id: UserId(2), name: "a@x".into(), groups: vec![] };
        assert!(store.commit(&[Change::User(a), Change::User(clash)]).is_err(), "names are unique");
        assert!(store.load().unwrap_or_else(|e| panic!("{e}")).users.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database from before migration 2 keeps its users, with no IdP groups; groups
    /// that a hand edit put out of bounds are sanitized on load.
    #[test]
    fn migration_2_adds_user_groups_to_an_older_database() {
        let dir = temp("migrate2");
        let path = dir.join("db");
        {
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(migrations::MIGRATIONS[0].1).unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL);
                 INSERT INTO schema_version (version, applied) VALUES (1, 0);
                 INSERT INTO users (id, name) VALUES (1, 'alice@example.com');",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let state = store.load().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state.users, vec![UserRecord { id: UserId(1), name: "alice@example.com".into(), groups: vec![] }]);
        let edited = r#"["b", "a b", "a", "a"]"#;
        store.conn.execute("UPDATE users SET groups = ?1", params![edited]).unwrap_or_else(|e| panic!("{e}"));
        let state = store.load().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state.users[0].groups, ["a", "b"]);
        store.conn.execute("UPDATE users SET groups = 'not json'", []).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let dir = temp("newer");
        let path = dir.join("db");
        drop(SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}")));
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        conn.execute("INSERT INTO schema_version (version, applied) VALUES (99, 0)", [])
            .unwrap_or_else(|e| panic!("{e}"));
        drop(conn);
        assert!(matches!(SqliteStore::open(&path), Err(StoreError::TooNew { found: 99, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
