//! The hash-chained audit log: every message the bus carries, every refusal
//! it sends and every privileged command, in order, each entry chained to
//! the one before by SHA-256, so that any change to a stored entry (or a
//! missing one) is found by [`AuditStore::verify`].
//!
//! [`AuditLog`] is the bus's [`AuditSink`]. Recording copies the record
//! into a queue, in the order of the calls, and returns: the round trip of
//! a message pays for one copy and one short lock. A writer thread takes
//! the queue a batch at a time, numbers each entry in queue order, writes
//! its canonical form, chains it (one SHA-256) and appends the batch to the
//! store, so the bus never waits on hashing or on the disk. What reaches
//! the store is exactly what numbering and chaining on the caller's thread
//! would give; [`AuditLog::flush`] waits for everything recorded so far to
//! be stored.
//!
//! Secrets never reach it: logins and resume tokens are not messages, and
//! the bus records only canonical payloads and refusals.

mod entry;
mod memory;

pub use entry::{
    canonical_entry, chain, decode_hash, encode_hash, entry_attribute, entry_content, kind_name,
    verify, ChainError, StoredEntry, Verified, GENESIS,
};
pub use memory::MemoryAuditStore;

use crate::bus::{AuditKind, AuditRecord, AuditSink, SessionId, ThreadId};
use crate::commit::{Checkpoint, CheckpointSigner, CHECKPOINT_TAG};
use crate::privileged::StoreError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Entries read from a store at a time when verifying or replaying.
const PAGE: usize = 1_000;
/// How long the writer lets entries gather before storing them.
const WRITE_INTERVAL: Duration = Duration::from_millis(5);
/// Queued entries that wake the writer at once.
const WRITE_BATCH: usize = 512;
/// Entries the log holds unstored at most while its store fails; past it
/// the bus refuses new messages from clients (see
/// [`AuditSink::is_backlogged`]). About 30 MB of typical entries.
pub const MAX_HELD: usize = 100_000;
/// Attempts at storing the last entries when closing, 100 ms apart.
const CLOSING_ATTEMPTS: u64 = 50;

/// Where audit entries are kept.
pub trait AuditStore: Send + Sync {
    /// The first entry kept and the hash before it: `(1, GENESIS)` for a
    /// store that keeps everything.
    fn audit_start(&self) -> Result<(u64, [u8; 32]), StoreError>;

    /// The last entry's number and hash, if any.
    fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;

    /// Appends chained entries, all or none.
    fn append_audit(&self, entries: &[StoredEntry]) -> Result<(), StoreError>;

    /// [`append_audit`](Self::append_audit) for entries the caller gives
    /// up; on failure they come back with the error, for a retry. Stores
    /// that keep the entries themselves take them without copying.
    #[allow(clippy::result_large_err)]
    fn append_audit_owned(
        &self,
        entries: Vec<StoredEntry>,
    ) -> Result<(), (StoreError, Vec<StoredEntry>)> {
        self.append_audit(&entries)
            .map_err(|error| (error, entries))
    }

    /// Up to `limit` entries from number `from` on, in order.
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError>;

    /// Recomputes the chain over every entry kept.
    fn verify(&self) -> Result<Result<Verified, ChainError>, StoreError> {
        let (first, previous) = self.audit_start()?;
        let mut all = Vec::new();
        each_entry(self, first, |entry| {
            all.push(entry);
            Ok::<_, StoreError>(())
        })?;
        Ok(verify(all, previous))
    }

    /// The entries of `thread`, in order.
    fn thread_entries(&self, thread: &str) -> Result<Vec<StoredEntry>, StoreError> {
        let (first, _) = self.audit_start()?;
        let mut found = Vec::new();
        each_entry(self, first, |entry| {
            if entry_attribute(&entry.entry, "thread") == Some(thread) {
                found.push(entry);
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(found)
    }
}

/// Calls `each` with every entry of `store` from number `from` on, in
/// order, a page at a time; stops at the first error.
pub fn each_entry<E: From<StoreError>>(
    store: &(impl AuditStore + ?Sized),
    mut from: u64,
    mut each: impl FnMut(StoredEntry) -> Result<(), E>,
) -> Result<(), E> {
    loop {
        let page = store.audit_entries(from, PAGE)?;
        let full = page.len() == PAGE;
        for entry in page {
            from = entry.seq + 1;
            each(entry)?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// Records waiting for the writer.
struct Pending {
    queue: Vec<QueuedRecord>,
    /// Records queued since the log was opened.
    recorded: u64,
    /// Records handed to the store so far (stored or failed).
    written: u64,
    /// Set when the log is being dropped.
    closing: bool,
}

/// An [`AuditRecord`] copied for the writer: its strings in one buffer.
struct QueuedRecord {
    kind: AuditKind,
    depth: u32,
    time_ms: u64,
    thread: Option<ThreadId>,
    session: SessionId,
    /// `from`, then `tag`, then the canonical bytes.
    text: String,
    from_end: usize,
    tag_end: usize,
}

impl QueuedRecord {
    fn new(record: &AuditRecord<'_>, time_ms: u64) -> Self {
        let mut text =
            String::with_capacity(record.from.len() + record.tag.len() + record.canonical.len());
        text.push_str(record.from);
        let from_end = text.len();
        text.push_str(record.tag);
        let tag_end = text.len();
        text.push_str(record.canonical);
        QueuedRecord {
            kind: record.kind,
            depth: record.depth,
            time_ms,
            thread: record.thread.cloned(),
            session: record.session.clone(),
            text,
            from_end,
            tag_end,
        }
    }

    fn as_record(&self) -> AuditRecord<'_> {
        AuditRecord {
            kind: self.kind,
            thread: self.thread.as_ref(),
            session: &self.session,
            from: &self.text[..self.from_end],
            tag: &self.text[self.from_end..self.tag_end],
            depth: self.depth,
            canonical: &self.text[self.tag_end..],
        }
    }
}

/// The end of the chain: the next entry's number and the hash before it,
/// and when the next checkpoint is due.
struct Chain {
    next_seq: u64,
    previous: [u8; 32],
    checkpoints: Option<CheckpointSigner>,
    /// Entries linked since the last checkpoint.
    since_checkpoint: u64,
    /// When the first of them was linked.
    first_unchecked: Option<Instant>,
}

impl Chain {
    /// Numbers, writes and chains `record`.
    fn link(&mut self, record: &QueuedRecord) -> StoredEntry {
        let seq = self.next_seq;
        let entry = canonical_entry(seq, record.time_ms, &record.as_record());
        let hash = chain(&self.previous, &entry);
        self.previous = hash;
        self.next_seq += 1;
        self.since_checkpoint += 1;
        self.first_unchecked.get_or_insert_with(Instant::now);
        StoredEntry {
            seq,
            entry,
            hash: encode_hash(&hash),
        }
    }

    /// When a checkpoint is next due by time, if one is.
    /// The signer, while it may still sign.
    fn signer(&self) -> Option<&CheckpointSigner> {
        self.checkpoints
            .as_ref()
            .filter(|signer| !signer.stopped.load(Ordering::Acquire))
    }

    fn checkpoint_deadline(&self) -> Option<Instant> {
        let signer = self.signer()?;
        if signer.every.is_zero() {
            return None;
        }
        Some(self.first_unchecked? + signer.every)
    }

    /// A checkpoint entry over everything linked so far, when one is due
    /// (or, with `closing`, whenever entries are not yet covered).
    fn checkpoint_if_due(&mut self, closing: bool) -> Option<StoredEntry> {
        let signer = self.signer()?;
        if self.since_checkpoint == 0 {
            return None;
        }
        let by_count = signer.every_entries > 0 && self.since_checkpoint >= signer.every_entries;
        let by_time = self
            .checkpoint_deadline()
            .is_some_and(|deadline| Instant::now() >= deadline);
        if !(closing || by_count || by_time) {
            return None;
        }
        let time_ms = now_ms();
        let checkpoint = Checkpoint {
            count: self.next_seq - 1,
            head: self.previous,
            key_id: signer.key.key_id().to_owned(),
            organism: signer.organism.clone(),
            time_ms,
        };
        let record = QueuedRecord::new(
            &AuditRecord {
                kind: AuditKind::Checkpoint,
                thread: None,
                session: &SessionId::from_string(""),
                from: "server",
                tag: CHECKPOINT_TAG,
                depth: 0,
                canonical: &checkpoint.signed(&signer.key),
            },
            time_ms,
        );
        let entry = self.link(&record);
        self.since_checkpoint = 0;
        self.first_unchecked = None;
        Some(entry)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The audit sink that chains and stores.
pub struct AuditLog {
    shared: Arc<(Mutex<Pending>, Condvar)>,
    /// Set while [`MAX_HELD`] entries wait for a failing store.
    backlogged: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The checkpoint signer's key id and its stop, when there is one.
    signer: Option<(String, Arc<AtomicBool>)>,
}

impl AuditLog {
    /// Continues the chain kept in `store` and starts the writer thread,
    /// which signs checkpoints into the log with `checkpoints` when given.
    pub fn open(
        store: Arc<dyn AuditStore>,
        checkpoints: Option<CheckpointSigner>,
    ) -> Result<AuditLog, StoreError> {
        let (next_seq, previous) = match store.audit_head()? {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS),
        };
        let shared = Arc::new((
            Mutex::new(Pending {
                queue: Vec::new(),
                recorded: 0,
                written: 0,
                closing: false,
            }),
            Condvar::new(),
        ));
        let backlogged = Arc::new(AtomicBool::new(false));
        let signer = checkpoints
            .as_ref()
            .map(|signer| (signer.key.key_id().to_owned(), Arc::clone(&signer.stopped)));
        let writer = {
            let shared = Arc::clone(&shared);
            let backlogged = Arc::clone(&backlogged);
            let chain = Chain {
                next_seq,
                previous,
                checkpoints,
                since_checkpoint: 0,
                first_unchecked: None,
            };
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || write_loop(&shared, &backlogged, store.as_ref(), chain))
                .map_err(|e| StoreError(format!("cannot start the audit writer: {e}")))?
        };
        Ok(AuditLog {
            shared,
            backlogged,
            writer: Mutex::new(Some(writer)),
            signer,
        })
    }

    /// The key id of the node key that signs checkpoints, if one does.
    pub fn checkpoint_key_id(&self) -> Option<&str> {
        self.signer.as_ref().map(|(key_id, _)| key_id.as_str())
    }

    /// Signs no more checkpoints (the node key was revoked); entries are
    /// still written and chained, for a checkpoint by a new key to cover.
    pub fn stop_checkpoints(&self) {
        if let Some((_, stopped)) = &self.signer {
            stopped.store(true, Ordering::Release);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every entry recorded so far has been handed to the
    /// store (at most `limit`); returns whether it got there.
    pub fn flush(&self, limit: Duration) -> bool {
        let target = self.lock().recorded;
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
        let queued = QueuedRecord::new(&record, now_ms());
        let mut pending = self.lock();
        pending.recorded += 1;
        pending.queue.push(queued);
        if pending.queue.len() >= MAX_HELD && !self.backlogged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                held = pending.queue.len(),
                "the audit log holds all the unstored entries it may: refusing new messages until its store takes them"
            );
        }
        // Wake the writer for the first entry of a batch (it then lets the
        // batch gather for a few milliseconds) and when the batch fills —
        // once each, since every wake-up is a system call.
        let wake = pending.queue.len() == 1 || pending.queue.len() == WRITE_BATCH;
        drop(pending);
        if wake {
            self.shared.1.notify_all();
        }
    }

    fn held(&self) -> u64 {
        let pending = self.lock();
        pending.recorded - pending.written
    }

    fn is_backlogged(&self) -> bool {
        self.backlogged.load(Ordering::Relaxed)
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
            .field("recorded", &pending.recorded)
            .field("queued", &pending.queue.len())
            .finish()
    }
}

/// Takes queued records and appends them as chained entries, a batch at a
/// time, until closed and drained, adding a signed checkpoint when one is
/// due (and a last one on closing). A failed append is retried with the
/// same entries, so the stored chain never has a hole; the bus goes on
/// meanwhile.
fn write_loop(
    shared: &(Mutex<Pending>, Condvar),
    backlogged: &AtomicBool,
    store: &dyn AuditStore,
    mut chain: Chain,
) {
    let (lock, ready) = shared;
    let mut records: Vec<QueuedRecord> = Vec::new();
    let mut batch: Vec<StoredEntry> = Vec::new();
    // Records (not checkpoints) in `batch`, for `Pending::written`.
    let mut batch_records: u64 = 0;
    let mut closing = false;
    let mut failed_attempts: u64 = 0;
    loop {
        if batch.is_empty() {
            let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
            while pending.queue.is_empty() && !pending.closing {
                match chain.checkpoint_deadline() {
                    None => pending = ready.wait(pending).unwrap_or_else(|e| e.into_inner()),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        pending = ready
                            .wait_timeout(pending, deadline - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            // Let a batch gather, unless it is full or the log is closing.
            if !pending.queue.is_empty() && pending.queue.len() < WRITE_BATCH && !pending.closing {
                pending = ready
                    .wait_timeout(pending, WRITE_INTERVAL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            closing = pending.queue.is_empty() && pending.closing;
            // Swap rather than take, so both buffers keep their room.
            std::mem::swap(&mut records, &mut pending.queue);
            drop(pending);
            batch_records = records.len() as u64;
            batch.extend(records.drain(..).map(|record| chain.link(&record)));
            batch.extend(chain.checkpoint_if_due(closing));
            if batch.is_empty() {
                if closing {
                    return;
                }
                continue;
            }
        }
        match store.append_audit_owned(std::mem::take(&mut batch)) {
            Ok(()) => {
                if failed_attempts > 0 {
                    tracing::warn!(
                        failed_attempts,
                        "audit store writable again; the entries held meanwhile are stored"
                    );
                    failed_attempts = 0;
                }
                let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
                pending.written += batch_records;
                if pending.queue.len() < MAX_HELD / 2 && backlogged.swap(false, Ordering::Relaxed) {
                    tracing::warn!("the audit log has room again: taking new messages");
                }
                drop(pending);
                ready.notify_all();
                if closing {
                    return;
                }
            }
            Err((error, unstored)) => {
                batch = unstored;
                // One line when storing starts failing, not one per retry.
                if failed_attempts == 0 {
                    tracing::error!(
                        %error,
                        "audit entries could not be stored; holding them and retrying every 100 ms"
                    );
                }
                failed_attempts += 1;
                let shutting = lock.lock().unwrap_or_else(|e| e.into_inner()).closing;
                if shutting && failed_attempts >= CLOSING_ATTEMPTS {
                    tracing::error!(
                        entries = batch.len(),
                        "closing with audit entries the store would not take"
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let log = AuditLog::open(store.clone(), None).unwrap();
            for i in 0..50 {
                record(&log, &format!("<error n=\"{i}\"></error>"));
            }
            assert!(log.flush(Duration::from_secs(5)));
        }
        {
            let log = AuditLog::open(store.clone(), None).unwrap();
            record(&log, "<error></error>");
        }
        let verified = store.verify().unwrap().unwrap();
        assert_eq!(verified.count, 51);
        assert_eq!(store.audit_head().unwrap().unwrap().0, 51);
    }
}
