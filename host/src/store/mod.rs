//! Where the organism keeps what must outlive the process: the structure
//! that privileged commands change ([`StructureStore`]: used command ids,
//! agents admitted at run time with their components) and the audit log
//! ([`AuditStore`]). One trait per concern; every backend implements all.
//!
//! - `memory` (the default): nothing on disk; structure is forgotten on
//!   restart and the audit log keeps the newest 100,000 entries.
//! - `sqlite`: one file, [`SQLITE_FILE`], in the data directory.
//!
//! [`StructureStore`]: crate::privileged::StructureStore
//! [`AuditStore`]: crate::audit::AuditStore

mod sqlite;

pub use sqlite::{SqliteStore, SCHEMA_VERSION};

use crate::audit::{AuditStore, MemoryAuditStore};
use crate::privileged::{MemoryStructureStore, StoreError, StructureStore};
use std::path::Path;
use std::sync::Arc;

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
    },
}

/// The opened backend, as each concern sees it.
#[derive(Clone)]
pub struct Stores {
    /// Command ids and admitted agents.
    pub structure: Arc<dyn StructureStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
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
                    audit: store,
                })
            }
            StorageConfig::Redis { .. } => Err(StoreError(
                "the redis storage backend is not in this build yet; use memory or sqlite".into(),
            )),
        }
    }
}
