//! The hash-chained audit log: every message the bus carries, every refusal
//! it sends and every privileged command, in order, each entry chained to
//! the one before by SHA-256, so that any change to a stored entry (or a
//! missing one) is found by [`AuditStore::verify`].
//!
//! [`AuditLog`] is the bus's [`AuditSink`]. It numbers and chains each
//! record at once, on the caller's thread (one SHA-256 of the entry), and
//! hands the entries to a writer thread that appends them to the store in
//! batches, so the bus never waits on the disk. [`AuditLog::flush`] waits
//! for everything recorded so far to be stored.
//!
//! Secrets never reach it: logins and resume tokens are not messages, and
//! the bus records only canonical payloads and refusals.

mod entry;
mod memory;

pub use entry::{
    canonical_entry, chain, decode_hash, entry_attribute, entry_content, kind_name, verify,
    ChainError, StoredEntry, Verified, GENESIS,
};
pub use memory::MemoryAuditStore;

use crate::bus::{AuditRecord, AuditSink};
use crate::privileged::StoreError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Entries read from a store at a time when verifying or replaying.
const PAGE: usize = 1_000;
/// How long the writer lets entries gather before storing them.
const WRITE_INTERVAL: Duration = Duration::from_millis(5);
/// Queued entries that wake the writer at once.
const WRITE_BATCH: usize = 512;

/// Where audit entries are kept.
pub trait AuditStore: Send + Sync {
    /// The first entry kept and the hash before it: `(1, GENESIS)` for a
    /// store that keeps everything.
    fn audit_start(&self) -> Result<(u64, [u8; 32]), StoreError>;

    /// The last entry's number and hash, if any.
    fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;

    /// Appends chained entries, all or none.
    fn append_audit(&self, entries: &[StoredEntry]) -> Result<(), StoreError>;

    /// Up to `limit` entries from number `from` on, in order.
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError>;

    /// Recomputes the chain over every entry kept.
    fn verify(&self) -> Result<Result<Verified, ChainError>, StoreError> {
        let (first, previous) = self.audit_start()?;
        let mut all = Vec::new();
        let mut from = first;
        loop {
            let page = self.audit_entries(from, PAGE)?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            let full = page.len() == PAGE;
            all.extend(page);
            if !full {
                break;
            }
        }
        Ok(verify(all, previous))
    }

    /// The entries of `thread`, in order.
    fn thread_entries(&self, thread: &str) -> Result<Vec<StoredEntry>, StoreError> {
        let (mut from, _) = self.audit_start()?;
        let mut found = Vec::new();
        loop {
            let page = self.audit_entries(from, PAGE)?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            let full = page.len() == PAGE;
            found.extend(
                page.into_iter()
                    .filter(|e| entry_attribute(&e.entry, "thread") == Some(thread)),
            );
            if !full {
                break;
            }
        }
        Ok(found)
    }
}

/// The chain's tip and the entries not yet stored.
struct Pending {
    next_seq: u64,
    previous: [u8; 32],
    queue: Vec<StoredEntry>,
    /// Entries handed to the store so far (stored or failed).
    written: u64,
    /// Set when the log is being dropped.
    closing: bool,
}

/// The audit sink that chains and stores.
pub struct AuditLog {
    shared: Arc<(Mutex<Pending>, Condvar)>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// Continues the chain kept in `store` and starts the writer thread.
    pub fn open(store: Arc<dyn AuditStore>) -> Result<AuditLog, StoreError> {
        let (next_seq, previous) = match store.audit_head()? {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS),
        };
        let shared = Arc::new((
            Mutex::new(Pending {
                next_seq,
                previous,
                queue: Vec::new(),
                written: next_seq - 1,
                closing: false,
            }),
            Condvar::new(),
        ));
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || write_loop(&shared, store.as_ref()))
                .map_err(|e| StoreError(format!("cannot start the audit writer: {e}")))?
        };
        Ok(AuditLog {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every entry recorded so far has been handed to the
    /// store (at most `limit`); returns whether it got there.
    pub fn flush(&self, limit: Duration) -> bool {
        let target = self.lock().next_seq - 1;
        let (lock, ready) = &*self.shared;
        ready.notify_all();
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = ready
            .wait_timeout_while(guard, limit, |p| p.written < target)
            .unwrap_or_else(|e| e.into_inner());
        guard.written >= target
    }
}

impl AuditSink for AuditLog {
    fn record(&self, record: AuditRecord<'_>) {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut pending = self.lock();
        let seq = pending.next_seq;
        let entry = canonical_entry(seq, time_ms, &record);
        let hash = chain(&pending.previous, &entry);
        pending.previous = hash;
        pending.next_seq += 1;
        pending.queue.push(StoredEntry {
            seq,
            entry,
            hash: hex::encode(hash),
        });
        // Wake the writer for the first entry of a batch (it then lets the
        // batch gather for a few milliseconds) and for a full batch.
        let wake = pending.queue.len() == 1 || pending.queue.len() >= WRITE_BATCH;
        drop(pending);
        if wake {
            self.shared.1.notify_all();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.lock().closing = true;
        self.shared.1.notify_all();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.lock();
        f.debug_struct("AuditLog")
            .field("next_seq", &pending.next_seq)
            .field("queued", &pending.queue.len())
            .finish()
    }
}

/// Takes queued entries and appends them, a batch at a time, until closed
/// and drained. A failed append is retried with the same batch, so the
/// stored chain never has a hole; the bus goes on meanwhile.
fn write_loop(shared: &(Mutex<Pending>, Condvar), store: &dyn AuditStore) {
    let (lock, ready) = shared;
    let mut batch: Vec<StoredEntry> = Vec::new();
    loop {
        {
            let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
            while batch.is_empty() && pending.queue.is_empty() && !pending.closing {
                pending = ready.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            // Let a batch gather, unless it is full or the log is closing.
            if batch.is_empty() && pending.queue.len() < WRITE_BATCH && !pending.closing {
                pending = ready
                    .wait_timeout(pending, WRITE_INTERVAL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if batch.is_empty() {
                if pending.queue.is_empty() && pending.closing {
                    return;
                }
                batch = std::mem::take(&mut pending.queue);
            }
        }
        match store.append_audit(&batch) {
            Ok(()) => {
                let last = batch.last().map_or(0, |e| e.seq);
                batch.clear();
                let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
                pending.written = last;
                drop(pending);
                ready.notify_all();
            }
            Err(error) => {
                tracing::error!(%error, "audit entries could not be stored; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{AuditKind, SessionId};

    fn record(log: &AuditLog, canonical: &str) {
        let session = SessionId::from_string("s");
        log.record(AuditRecord {
            kind: AuditKind::Refusal,
            thread: None,
            session: &session,
            from: "server",
            tag: "malformed",
            depth: 0,
            canonical,
        });
    }

    #[test]
    fn the_log_chains_stores_and_continues_after_reopening() {
        let store = Arc::new(MemoryAuditStore::new(1_000));
        {
            let log = AuditLog::open(store.clone()).unwrap();
            for i in 0..50 {
                record(&log, &format!("<error n=\"{i}\"></error>"));
            }
            assert!(log.flush(Duration::from_secs(5)));
        }
        {
            let log = AuditLog::open(store.clone()).unwrap();
            record(&log, "<error></error>");
        }
        let verified = store.verify().unwrap().unwrap();
        assert_eq!(verified.count, 51);
        assert_eq!(store.audit_head().unwrap().unwrap().0, 51);
    }
}
