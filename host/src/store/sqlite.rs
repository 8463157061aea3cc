//! The SQLite backend: one file in the data directory, WAL with
//! `synchronous = NORMAL` (a committed write survives the process being
//! killed; a power cut may lose the last few), and a versioned schema
//! migrated on open.

use super::{admitted_from_stored, write_limits};
use crate::audit::{decode_hash, AuditStore, StoredEntry, GENESIS};
use crate::privileged::{AdmittedAgent, SignedKind, SignedRecord, StoreError, StructureStore};
use crate::runtime::ComponentHash;
use crate::session::{SessionRecord, SessionStore, StoredSession};
use rusqlite::{params, Connection, OptionalExtension as _};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The schema this build writes; older files are migrated step by step.
pub const SCHEMA_VERSION: i64 = 5;

/// Each step takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: structure and the audit log.
    "CREATE TABLE command_ids (id TEXT PRIMARY KEY, expires INTEGER NOT NULL);
     CREATE TABLE agents (
         name TEXT PRIMARY KEY,
         listens TEXT NOT NULL,
         description TEXT NOT NULL,
         limits TEXT NOT NULL,
         sha256 TEXT NOT NULL,
         component BLOB NOT NULL
     );
     CREATE TABLE audit (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL, hash TEXT NOT NULL);",
    // 1 -> 2: sessions and their pending frames.
    "CREATE TABLE sessions (
         id TEXT PRIMARY KEY,
         user TEXT NOT NULL,
         token_hash BLOB NOT NULL,
         timeout INTEGER NOT NULL
     );
     CREATE TABLE frames (
         session TEXT NOT NULL,
         seq INTEGER NOT NULL,
         frame TEXT NOT NULL,
         PRIMARY KEY (session, seq)
     );",
    // 2 -> 3: agents' key-value buckets (session '' is the agent bucket).
    "CREATE TABLE kv (
         agent TEXT NOT NULL,
         session TEXT NOT NULL,
         key TEXT NOT NULL,
         value BLOB NOT NULL,
         PRIMARY KEY (agent, session, key)
     );",
    // 3 -> 4: payloads the owner signed that outlive their command (node
    // certificates, federation links): exact bytes and signature.
    "CREATE TABLE signed (
         kind TEXT NOT NULL,
         key TEXT NOT NULL,
         id TEXT NOT NULL,
         payload TEXT NOT NULL,
         signature TEXT NOT NULL,
         PRIMARY KEY (kind, key)
     );",
    // 4 -> 5: the nodes of a cluster that run each admitted agent, and
    // which used command ids took effect.
    "ALTER TABLE agents ADD COLUMN nodes TEXT NOT NULL DEFAULT '*';
     ALTER TABLE command_ids ADD COLUMN applied INTEGER NOT NULL DEFAULT 0;",
];

/// A store in one SQLite file.
pub struct SqliteStore {
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn failed(error: rusqlite::Error) -> StoreError {
    StoreError(format!("sqlite: {error}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        let mut connection = Connection::open(path).map_err(failed)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(failed)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(failed)?;
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(failed)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(format!(
                "{} has schema version {version}; this build knows up to {SCHEMA_VERSION}",
                path.display()
            )));
        }
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let transaction = connection.transaction().map_err(failed)?;
            transaction.execute_batch(sql).map_err(failed)?;
            transaction
                .pragma_update(None, "user_version", step as i64 + 1)
                .map_err(failed)?;
            transaction.commit().map_err(failed)?;
        }
        Ok(SqliteStore {
            connection: Mutex::new(connection),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StructureStore for SqliteStore {
    fn claim_command_id(&self, id: &str, expires: u64, now: u64) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(failed)?;
        transaction
            .execute(
                "DELETE FROM command_ids WHERE expires < ?1",
                params![now as i64],
            )
            .map_err(failed)?;
        let inserted = transaction
            .execute(
                "INSERT OR IGNORE INTO command_ids (id, expires) VALUES (?1, ?2)",
                params![id, expires as i64],
            )
            .map_err(failed)?;
        transaction.commit().map_err(failed)?;
        Ok(inserted == 1)
    }

    fn mark_applied(&self, id: &str) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE command_ids SET applied = 1 WHERE id = ?1",
                params![id],
            )
            .map_err(failed)?;
        Ok(())
    }

    fn was_applied(&self, id: &str) -> Result<bool, StoreError> {
        let applied: Option<i64> = self
            .lock()
            .query_row(
                "SELECT applied FROM command_ids WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed)?;
        Ok(applied == Some(1))
    }

    fn admitted_agents(&self) -> Result<Vec<AdmittedAgent>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "SELECT name, listens, description, limits, sha256, component, nodes FROM agents \
                 ORDER BY name",
            )
            .map_err(failed)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, Vec<u8>>(5)?,
                    row.get::<_, String>(6)?,
                ))
            })
            .map_err(failed)?;
        let mut agents = Vec::new();
        for row in rows {
            let (name, listens, description, limits, sha256, component, nodes) =
                row.map_err(failed)?;
            agents.push(admitted_from_stored(
                name,
                &listens,
                description,
                &limits,
                &sha256,
                component,
                Some(&nodes),
            )?);
        }
        Ok(agents)
    }

    fn save_agent(&self, agent: &AdmittedAgent) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO agents
                 (name, listens, description, limits, sha256, component, nodes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    agent.name,
                    agent.listens.join("\n"),
                    agent.description,
                    write_limits(&agent.limits),
                    ComponentHash::of(&agent.component).to_string(),
                    agent.component,
                    agent.nodes.to_string()
                ],
            )
            .map_err(failed)?;
        Ok(())
    }

    fn forget_agent(&self, name: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM agents WHERE name = ?1", params![name])
            .map_err(failed)?;
        Ok(())
    }

    fn save_signed(
        &self,
        kind: SignedKind,
        key: &str,
        record: &SignedRecord,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO signed (kind, key, id, payload, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    kind.name(),
                    key,
                    record.id,
                    record.payload,
                    record.signature
                ],
            )
            .map_err(failed)?;
        Ok(())
    }

    fn signed_records(&self, kind: SignedKind) -> Result<Vec<SignedRecord>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT id, payload, signature FROM signed WHERE kind = ?1 ORDER BY key")
            .map_err(failed)?;
        let rows = statement
            .query_map(params![kind.name()], |row| {
                Ok(SignedRecord {
                    id: row.get(0)?,
                    payload: row.get(1)?,
                    signature: row.get(2)?,
                })
            })
            .map_err(failed)?;
        rows.collect::<Result<_, _>>().map_err(failed)
    }

    fn forget_signed(&self, kind: SignedKind, key: &str) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "DELETE FROM signed WHERE kind = ?1 AND key = ?2",
                params![kind.name(), key],
            )
            .map_err(failed)?;
        Ok(())
    }

    fn is_persistent(&self) -> bool {
        true
    }
}

impl AuditStore for SqliteStore {
    fn audit_start(&self) -> Result<(u64, [u8; 32]), StoreError> {
        Ok((1, GENESIS))
    }

    fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let head: Option<(i64, String)> = self
            .lock()
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(failed)?;
        match head {
            Some((seq, hash)) => Ok(Some((seq as u64, decode_hash(&hash)?))),
            None => Ok(None),
        }
    }

    fn append_audit(&self, entries: &[StoredEntry]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(failed)?;
        {
            let mut insert = transaction
                .prepare_cached("INSERT INTO audit (seq, entry, hash) VALUES (?1, ?2, ?3)")
                .map_err(failed)?;
            for entry in entries {
                insert
                    .execute(params![entry.seq as i64, entry.entry, entry.hash])
                    .map_err(failed)?;
            }
        }
        transaction.commit().map_err(failed)
    }

    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT seq, entry, hash FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(failed)?;
        let rows = statement
            .query_map(params![from as i64, limit as i64], |row| {
                Ok(StoredEntry {
                    seq: row.get::<_, i64>(0)? as u64,
                    entry: row.get(1)?,
                    hash: row.get(2)?,
                })
            })
            .map_err(failed)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(failed)
    }
}

impl SessionStore for SqliteStore {
    fn save_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO sessions (id, user, token_hash, timeout) VALUES (?1, ?2, ?3, ?4)",
                params![
                    record.id,
                    record.user,
                    record.token_hash.as_slice(),
                    record.timeout_secs as i64
                ],
            )
            .map_err(failed)?;
        Ok(())
    }

    fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(failed)?;
        transaction
            .execute("DELETE FROM frames WHERE session = ?1", params![id])
            .map_err(failed)?;
        transaction
            .execute("DELETE FROM sessions WHERE id = ?1", params![id])
            .map_err(failed)?;
        transaction.commit().map_err(failed)
    }

    fn append_frame(&self, id: &str, seq: u64, frame: &str) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached(
                "INSERT OR REPLACE INTO frames (session, seq, frame) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut insert| insert.execute(params![id, seq as i64, frame]))
            .map_err(failed)?;
        Ok(())
    }

    fn remove_frames_through(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached("DELETE FROM frames WHERE session = ?1 AND seq <= ?2")
            .and_then(|mut delete| delete.execute(params![id, seq as i64]))
            .map_err(failed)?;
        Ok(())
    }

    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        let connection = self.lock();
        let mut sessions = connection
            .prepare("SELECT id, user, token_hash, timeout FROM sessions ORDER BY id")
            .map_err(failed)?;
        let records = sessions
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(failed)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        let mut frames = connection
            .prepare("SELECT seq, frame FROM frames WHERE session = ?1 ORDER BY seq")
            .map_err(failed)?;
        let mut loaded = Vec::with_capacity(records.len());
        for (id, user, token_hash, timeout) in records {
            let token_hash: [u8; 32] = token_hash.try_into().map_err(|_| {
                StoreError(format!(
                    "session {id}: the stored token hash is not 32 bytes"
                ))
            })?;
            let pending = frames
                .query_map(params![id], |row| {
                    Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?))
                })
                .map_err(failed)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            loaded.push((
                SessionRecord {
                    id,
                    user,
                    token_hash,
                    timeout_secs: timeout as u64,
                },
                pending,
            ));
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let error = SqliteStore::open(&path).unwrap_err();
        assert!(error.to_string().contains("schema version"), "{error}");
    }

    #[test]
    fn a_tampered_component_is_caught_on_restore() {
        use crate::runtime::AgentLimits;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        store
            .save_agent(&AdmittedAgent {
                name: "a".into(),
                listens: vec!["t".into()],
                description: String::new(),
                limits: AgentLimits::default(),
                component: vec![1, 2, 3],
                nodes: crate::privileged::Placement::All,
            })
            .unwrap();
        store
            .lock()
            .execute("UPDATE agents SET component = x'010204'", [])
            .unwrap();
        assert!(store
            .admitted_agents()
            .unwrap_err()
            .to_string()
            .contains("SHA-256"));
    }
}
