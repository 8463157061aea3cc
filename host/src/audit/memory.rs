//! The in-memory audit store: the newest entries, bounded, gone with the
//! process. The chain stays verifiable over what is kept: the hash before
//! the oldest kept entry is remembered.

use super::entry::{decode_hash, StoredEntry, GENESIS};
use super::AuditStore;
use crate::privileged::StoreError;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// Entries the in-memory store keeps by default.
pub const DEFAULT_KEPT: usize = 100_000;

/// Keeps the newest `capacity` entries in memory.
#[derive(Debug)]
pub struct MemoryAuditStore {
    capacity: usize,
    inner: Mutex<Kept>,
}

#[derive(Debug)]
struct Kept {
    entries: VecDeque<StoredEntry>,
    /// The hash before the oldest kept entry.
    before_first: [u8; 32],
}

impl MemoryAuditStore {
    /// A store keeping the newest `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        MemoryAuditStore {
            capacity: capacity.max(1),
            inner: Mutex::new(Kept {
                entries: VecDeque::new(),
                before_first: GENESIS,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryAuditStore {
    /// Appends `entries` and forgets the oldest past the capacity,
    /// remembering the hash before the oldest kept.
    fn keep(&self, entries: impl IntoIterator<Item = StoredEntry>) -> Result<(), StoreError> {
        let mut kept = self.lock();
        kept.entries.extend(entries);
        let excess = kept.entries.len().saturating_sub(self.capacity);
        if excess > 0 {
            let last_dropped = kept.entries.drain(..excess).next_back();
            if let Some(dropped) = last_dropped {
                kept.before_first = decode_hash(&dropped.hash)?;
            }
        }
        Ok(())
    }
}

impl Default for MemoryAuditStore {
    fn default() -> Self {
        Self::new(DEFAULT_KEPT)
    }
}

impl AuditStore for MemoryAuditStore {
    fn audit_start(&self) -> Result<(u64, [u8; 32]), StoreError> {
        let kept = self.lock();
        Ok((kept.entries.front().map_or(1, |e| e.seq), kept.before_first))
    }

    fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        match self.lock().entries.back() {
            Some(last) => Ok(Some((last.seq, decode_hash(&last.hash)?))),
            None => Ok(None),
        }
    }

    fn append_audit(&self, entries: &[StoredEntry]) -> Result<(), StoreError> {
        self.keep(entries.iter().cloned())
    }

    fn append_audit_owned(
        &self,
        entries: Vec<StoredEntry>,
    ) -> Result<(), (StoreError, Vec<StoredEntry>)> {
        // Nothing here can fail once the entries are taken.
        self.keep(entries).map_err(|error| (error, Vec::new()))
    }

    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError> {
        let kept = self.lock();
        let first = kept.entries.front().map_or(1, |e| e.seq);
        let skip = from.saturating_sub(first) as usize;
        Ok(kept
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::chain;

    #[test]
    fn a_bounded_store_still_verifies_what_it_keeps() {
        let store = MemoryAuditStore::new(3);
        let mut previous = GENESIS;
        for seq in 1..=10u64 {
            let entry = format!("<audit-entry n=\"{seq}\"></audit-entry>");
            previous = chain(&previous, &entry);
            store
                .append_audit(&[StoredEntry {
                    seq,
                    entry,
                    hash: hex::encode(previous),
                }])
                .unwrap();
        }
        assert_eq!(store.audit_start().unwrap().0, 8);
        let verified = store.verify().unwrap().unwrap();
        assert_eq!((verified.count, verified.head), (3, hex::encode(previous)));
        assert_eq!(store.audit_entries(9, 10).unwrap().len(), 2);
    }
}
