//! Where the organism keeps what must outlive the process: the structure
//! that privileged commands change ([`StructureStore`]: used command ids,
//! agents admitted at run time with their components), the audit log
//! ([`AuditStore`]), sessions with their pending frames
//! ([`SessionStore`]) and agents' key-value buckets ([`KeyValueStore`]).
//! One trait per concern; every persistent backend implements all.
//!
//! [`SessionStore`]: crate::session::SessionStore
//! [`KeyValueStore`]: crate::capability::KeyValueStore
//!
//! - `memory` (the default): nothing on disk; structure is forgotten on
//!   restart and the audit log keeps the newest 100,000 entries.
//! - `sqlite`: one file, [`SQLITE_FILE`], in the data directory.
//! - `redis`: a Redis server, for several processes sharing one store; keys
//!   start with a prefix (default `agentserver`).
//!
//! [`StructureStore`]: crate::privileged::StructureStore
//! [`AuditStore`]: crate::audit::AuditStore

mod redis;
mod redis_kv;
mod sqlite;
mod sqlite_kv;

pub use redis::RedisStore;
pub use sqlite::{SqliteStore, SCHEMA_VERSION};

use crate::audit::{AuditStore, MemoryAuditStore};
use crate::capability::{KeyValueStore, MemoryKeyValueStore};
use crate::privileged::{AdmittedAgent, MemoryStructureStore, StoreError, StructureStore};
use crate::runtime::AgentLimits;
use crate::session::SessionStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The SQLite backend's file name in the data directory.
pub const SQLITE_FILE: &str = "agentserver.sqlite3";

/// Which storage backend to use (`[storage]` in `organism.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// In memory; nothing on disk (the default).
    Memory,
    /// One SQLite file in the data directory.
    Sqlite,
    /// A Redis server.
    Redis {
        /// `redis://host:port`.
        url: String,
        /// What every key starts with. Default `agentserver`.
        prefix: String,
    },
}

/// The opened backend, as each concern sees it.
#[derive(Clone)]
pub struct Stores {
    /// Command ids and admitted agents.
    pub structure: Arc<dyn StructureStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    /// Sessions and their pending frames; `None` in memory, where the
    /// session registry itself is all there is.
    pub sessions: Option<Arc<dyn SessionStore>>,
    /// Agents' key-value buckets.
    pub keyvalue: Arc<dyn KeyValueStore>,
    /// The TOTP time steps used, when the backend shares them between
    /// processes (Redis); `None` keeps them in the process.
    pub steps: Option<Arc<dyn crate::auth::StepMemory>>,
    /// Login failures counted across processes (Redis), besides each
    /// process's own counts; `None` counts in the process only.
    pub failures: Option<Arc<dyn crate::auth::SharedFailures>>,
    /// The user directory's text, where the backend can share it between
    /// the nodes of a cluster (Redis).
    pub users: Option<Arc<dyn crate::auth::SharedUsers>>,
    /// Which node holds each session, and resumes that replace the token
    /// for every node at once, where the backend is shared between the
    /// nodes of a cluster (Redis).
    pub shared_sessions: Option<Arc<dyn crate::session::SharedSessions>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("persistent", &self.structure.is_persistent())
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Fresh in-memory stores.
    pub fn memory() -> Stores {
        Stores {
            structure: Arc::new(MemoryStructureStore::new()),
            audit: Arc::new(MemoryAuditStore::default()),
            sessions: None,
            keyvalue: Arc::new(MemoryKeyValueStore::new()),
            steps: None,
            failures: None,
            users: None,
            shared_sessions: None,
        }
    }

    /// Opens the backend `config` names; files go in `data_dir`.
    pub fn open(config: &StorageConfig, data_dir: &Path) -> Result<Stores, StoreError> {
        match config {
            StorageConfig::Memory => Ok(Stores::memory()),
            StorageConfig::Sqlite => {
                let store = Arc::new(SqliteStore::open(&data_dir.join(SQLITE_FILE))?);
                Ok(Stores {
                    structure: store.clone(),
                    audit: store.clone(),
                    keyvalue: store.clone(),
                    sessions: Some(store),
                    steps: None,
                    failures: None,
                    users: None,
                    shared_sessions: None,
                })
            }
            StorageConfig::Redis { url, prefix } => {
                let store = Arc::new(RedisStore::open(url, prefix)?);
                Ok(Stores {
                    structure: store.clone(),
                    audit: store.clone(),
                    keyvalue: store.clone(),
                    sessions: Some(store.clone()),
                    steps: Some(store.clone()),
                    failures: Some(store.clone()),
                    users: Some(store.clone()),
                    shared_sessions: Some(store),
                })
            }
        }
    }
}

/// `key=value` lines for a set of limits, with the grants as one line of
/// XML (`grants=<grants>…</grants>`) when there are any.
pub(crate) fn write_limits(limits: &AgentLimits) -> String {
    let mut text = format!(
        "fuel={}\nmemory_bytes={}\ntimeout_ms={}\nmax_concurrent={}\nmax_queued={}\n\
         session_timeout={}\nmax_emitted_payloads={}\nmax_emitted_bytes={}\nmax_log_bytes={}\n",
        limits.fuel,
        limits.memory_bytes,
        limits.timeout_ms,
        limits.max_concurrent,
        limits.max_queued,
        limits.session_timeout.as_secs(),
        limits.max_emitted_payloads,
        limits.max_emitted_bytes,
        limits.max_log_bytes
    );
    if !limits.grants.is_empty() {
        text.push_str("grants=");
        text.push_str(&limits.grants.to_xml());
        text.push('\n');
    }
    text
}

/// Reads [`write_limits`]' text; unknown keys are ignored and missing ones
/// take their defaults.
pub(crate) fn read_limits(text: &str) -> AgentLimits {
    let mut limits = AgentLimits::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key == "grants" {
            limits.grants = read_grants(value);
            continue;
        }
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        let size = usize::try_from(value).unwrap_or(usize::MAX);
        match key.trim() {
            "fuel" => limits.fuel = value,
            "memory_bytes" => limits.memory_bytes = size,
            "timeout_ms" => limits.timeout_ms = value,
            "max_concurrent" => limits.max_concurrent = size,
            "max_queued" => limits.max_queued = size,
            "session_timeout" => limits.session_timeout = Duration::from_secs(value),
            "max_emitted_payloads" => limits.max_emitted_payloads = size,
            "max_emitted_bytes" => limits.max_emitted_bytes = size,
            "max_log_bytes" => limits.max_log_bytes = size,
            _ => {}
        }
    }
    limits
}

/// Grants as [`write_limits`] wrote them. They were checked when admitted,
/// so text that no longer reads (edited by hand) grants nothing, loudly.
fn read_grants(xml: &str) -> crate::capability::AgentGrants {
    let read = crate::xml::canonicalize(xml.as_bytes(), &crate::xml::Limits::default(), &[])
        .ok()
        .and_then(|canonical| crate::xml::Element::parse(&canonical).ok())
        .map(|element| crate::capability::AgentGrants::read(&element));
    match read {
        Some(Ok(grants)) => grants,
        _ => {
            tracing::error!("stored grants do not read back; the agent keeps no grants");
            crate::capability::AgentGrants::default()
        }
    }
}

/// An admitted agent as read back from a store, its component checked
/// against the SHA-256 it was admitted with.
pub(crate) fn admitted_from_stored(
    name: String,
    listens: &str,
    description: String,
    limits: &str,
    sha256: &str,
    component: Vec<u8>,
    nodes: Option<&str>,
) -> Result<AdmittedAgent, StoreError> {
    let actual = crate::runtime::ComponentHash::of(&component).to_string();
    if actual != sha256 {
        return Err(StoreError(format!(
            "the stored component of agent `{name}` has SHA-256 {actual}, not its admitted {sha256}"
        )));
    }
    let nodes = match nodes {
        Some(text) => crate::privileged::Placement::parse(text)
            .map_err(|e| StoreError(format!("the stored nodes of agent `{name}`: {e}")))?,
        None => crate::privileged::Placement::All,
    };
    Ok(AdmittedAgent {
        name,
        listens: listens.lines().map(str::to_owned).collect(),
        description,
        limits: read_limits(limits),
        component,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip() {
        let limits = AgentLimits {
            fuel: 7,
            memory_bytes: 1 << 20,
            session_timeout: Duration::from_secs(9),
            ..AgentLimits::default()
        };
        assert_eq!(read_limits(&write_limits(&limits)), limits);
        assert_eq!(read_limits("nonsense\nfuel=x\n"), AgentLimits::default());
    }
}
