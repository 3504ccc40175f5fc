//! Versioned schema migrations. `schema_version` holds one row per applied migration; each
//! migration runs in its own transaction together with its row, so a crash leaves either
//! the old or the new schema. Add a migration by appending to [`MIGRATIONS`]; never edit
//! one that has shipped.

use rusqlite::Connection;

use super::StoreError;

/// (version, SQL), in order.
pub const MIGRATIONS: &[(u32, &str)] =
    &[(1, include_str!("migrations/001_initial.sql")), (2, include_str!("migrations/002_user_groups.sql"))];

/// The newest schema this build knows.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Brings the database to [`latest`]; refuses a database from a newer build.
pub fn migrate(conn: &mut Connection, unix: u64) -> Result<u32, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
    )?;
    let current: u32 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(StoreError::TooNew { found: current, known: latest() });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied) VALUES (?1, ?2)",
            rusqlite::params![version, i64::try_from(unix).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
    }
    Ok(latest())
}
