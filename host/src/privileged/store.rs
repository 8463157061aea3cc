//! What structural change must remember: the privileged-command ids used
//! (until they expire), the agents admitted at run time, with their
//! components, the node certificates and revocations the owner signed, and
//! the revocations linked peers' owners signed. Behind one trait so that
//! persistent backends plug in; the in-memory one forgets everything with
//! the process.

use crate::runtime::AgentLimits;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use thiserror::Error;

/// An agent admitted by a signed command, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedAgent {
    /// Its name.
    pub name: String,
    /// The tags it listens to.
    pub listens: Vec<String>,
    /// One line for the catalog.
    pub description: String,
    /// Its limits.
    pub limits: AgentLimits,
    /// The component's bytes.
    pub component: Vec<u8>,
    /// The nodes of a cluster that run it.
    pub nodes: super::Placement,
}

/// A payload the owner signed, as kept: its exact canonical bytes and the
/// signature over them, so that anyone with the owner's public key can
/// check it later without canonicalising anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The command's id.
    pub id: String,
    /// The `<payload>` in exclusive canonical form.
    pub payload: String,
    /// The owner's Ed25519 signature over `payload`, base64.
    pub signature: String,
}

/// What a kept [`SignedRecord`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignedKind {
    /// A `node-certificate`, kept by command id and never deleted.
    NodeCertificate,
    /// A `federation-link`, kept by the peer's fingerprint until unlinked.
    FederationLink,
    /// A `node-revoke` this organism's owner signed, kept by the revoked
    /// key's id and never deleted.
    NodeRevocation,
    /// A `node-revoke` a linked peer's owner signed, learned over the link,
    /// kept by `PEER-FINGERPRINT/KEY-ID` and never deleted.
    PeerRevocation,
}

impl SignedKind {
    /// Its name in stores.
    pub fn name(self) -> &'static str {
        match self {
            SignedKind::NodeCertificate => "node-certificate",
            SignedKind::FederationLink => "federation-link",
            SignedKind::NodeRevocation => "node-revocation",
            SignedKind::PeerRevocation => "peer-revocation",
        }
    }
}

/// A storage backend failed.
#[derive(Debug, Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

/// Where structure is kept.
pub trait StructureStore: Send + Sync {
    /// Records command `id` as used until `expires` (Unix seconds) and
    /// returns true, or returns false when it is already recorded. Ids
    /// expired before `now` may be forgotten.
    fn claim_command_id(&self, id: &str, expires: u64, now: u64) -> Result<bool, StoreError>;

    /// Records that the command of claimed id `id` took effect (for as
    /// long as the id is kept), so that the other nodes of a cluster follow
    /// it; a claimed id whose command was refused is not marked.
    fn mark_applied(&self, id: &str) -> Result<(), StoreError>;

    /// Whether [`StructureStore::mark_applied`] recorded `id`.
    fn was_applied(&self, id: &str) -> Result<bool, StoreError>;

    /// Every admitted agent, by name.
    fn admitted_agents(&self) -> Result<Vec<AdmittedAgent>, StoreError>;

    /// Stores (or replaces) an admitted agent.
    fn save_agent(&self, agent: &AdmittedAgent) -> Result<(), StoreError>;

    /// Forgets the admitted agent `name`; nothing happens if there is none.
    fn forget_agent(&self, name: &str) -> Result<(), StoreError>;

    /// Keeps a record the owner signed, as `kind` under `key`, replacing
    /// the one there.
    fn save_signed(
        &self,
        kind: SignedKind,
        key: &str,
        record: &SignedRecord,
    ) -> Result<(), StoreError>;

    /// Every record of `kind`, in key order.
    fn signed_records(&self, kind: SignedKind) -> Result<Vec<SignedRecord>, StoreError>;

    /// Forgets the record of `kind` under `key`, if there is one.
    fn forget_signed(&self, kind: SignedKind, key: &str) -> Result<(), StoreError>;

    /// Keeps a node certificate (by its command id; never deleted, so
    /// that what a key signed stays checkable after it expires).
    fn save_certificate(&self, certificate: &SignedRecord) -> Result<(), StoreError> {
        self.save_signed(SignedKind::NodeCertificate, &certificate.id, certificate)
    }

    /// Every node certificate kept, by command id.
    fn certificates(&self) -> Result<Vec<SignedRecord>, StoreError> {
        self.signed_records(SignedKind::NodeCertificate)
    }

    /// Whether what is stored outlives the process.
    fn is_persistent(&self) -> bool;
}

/// Keeps structure in memory.
#[derive(Debug, Default)]
pub struct MemoryStructureStore {
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    ids: HashMap<String, u64>,
    applied: std::collections::HashSet<String>,
    agents: BTreeMap<String, AdmittedAgent>,
    signed: BTreeMap<(SignedKind, String), SignedRecord>,
}

impl MemoryStructureStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StructureStore for MemoryStructureStore {
    fn claim_command_id(&self, id: &str, expires: u64, now: u64) -> Result<bool, StoreError> {
        let mut memory = self.lock();
        memory.ids.retain(|_, until| *until >= now);
        let Memory { ids, applied, .. } = &mut *memory;
        applied.retain(|id| ids.contains_key(id));
        if memory.ids.contains_key(id) {
            return Ok(false);
        }
        memory.ids.insert(id.to_owned(), expires);
        Ok(true)
    }

    fn mark_applied(&self, id: &str) -> Result<(), StoreError> {
        let mut memory = self.lock();
        if memory.ids.contains_key(id) {
            memory.applied.insert(id.to_owned());
        }
        Ok(())
    }

    fn was_applied(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().applied.contains(id))
    }

    fn admitted_agents(&self) -> Result<Vec<AdmittedAgent>, StoreError> {
        Ok(self.lock().agents.values().cloned().collect())
    }

    fn save_agent(&self, agent: &AdmittedAgent) -> Result<(), StoreError> {
        self.lock().agents.insert(agent.name.clone(), agent.clone());
        Ok(())
    }

    fn forget_agent(&self, name: &str) -> Result<(), StoreError> {
        self.lock().agents.remove(name);
        Ok(())
    }

    fn save_signed(
        &self,
        kind: SignedKind,
        key: &str,
        record: &SignedRecord,
    ) -> Result<(), StoreError> {
        self.lock()
            .signed
            .insert((kind, key.to_owned()), record.clone());
        Ok(())
    }

    fn signed_records(&self, kind: SignedKind) -> Result<Vec<SignedRecord>, StoreError> {
        Ok(self
            .lock()
            .signed
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, record)| record.clone())
            .collect())
    }

    fn forget_signed(&self, kind: SignedKind, key: &str) -> Result<(), StoreError> {
        self.lock().signed.remove(&(kind, key.to_owned()));
        Ok(())
    }

    fn is_persistent(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_use_until_they_expire() {
        let store = MemoryStructureStore::new();
        assert!(store.claim_command_id("a", 100, 10).unwrap());
        assert!(!store.claim_command_id("a", 100, 50).unwrap());
        assert!(store.claim_command_id("b", 100, 50).unwrap());
        // Once expired it may be forgotten; the time window refuses it anyway.
        assert!(store.claim_command_id("a", 300, 200).unwrap());
    }

    #[test]
    fn agents_are_saved_replaced_and_forgotten() {
        let store = MemoryStructureStore::new();
        let agent = AdmittedAgent {
            name: "echo2".into(),
            listens: vec!["echo2".into()],
            description: "Echoes.".into(),
            limits: AgentLimits::default(),
            component: vec![1, 2, 3],
            nodes: crate::privileged::Placement::All,
        };
        store.save_agent(&agent).unwrap();
        store
            .save_agent(&AdmittedAgent {
                description: "Echoes again.".into(),
                ..agent.clone()
            })
            .unwrap();
        let stored = store.admitted_agents().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].description, "Echoes again.");
        store.forget_agent("echo2").unwrap();
        assert!(store.admitted_agents().unwrap().is_empty());
    }
}
