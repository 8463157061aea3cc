//! The audit hook: every canonical message that passes the bus, and every
//! refusal it sends, is handed to an [`AuditSink`] with its envelope
//! metadata, in the order the bus handles them within each thread.
//!
//! The persistent, hash-chained log implements this trait in the `audit`
//! module; [`MemoryAuditSink`] keeps records in memory for tests and tools.

use super::ids::{SessionId, ThreadId};
use std::sync::{Mutex, MutexGuard};

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A message entering the bus, from a session or an agent.
    Message,
    /// A refusal or error frame the bus sent to a session.
    Refusal,
    /// A privileged command, applied or refused (the record holds its id,
    /// the payload's SHA-256 and the outcome).
    Privileged,
    /// A login or resume, accepted or refused (never with its code or
    /// token).
    Auth,
    /// An agent's use of a granted capability: an outbound HTTP request or
    /// a storage write (never bodies, values or header values).
    Capability,
    /// A signed audit checkpoint (see [`crate::commit::Checkpoint`]).
    Checkpoint,
}

/// Writes every use of a capability to an [`AuditSink`], attributed to the
/// agent, session and thread of the call that made it.
pub struct CapabilityAudit(pub std::sync::Arc<dyn AuditSink>);

impl crate::capability::UsageAudit for CapabilityAudit {
    fn record(&self, usage: &crate::capability::Usage<'_>) {
        let thread = ThreadId::from_client(usage.thread);
        self.0.record(AuditRecord {
            kind: AuditKind::Capability,
            thread: (!usage.thread.is_empty()).then_some(&thread),
            session: &SessionId::from_string(usage.session),
            from: usage.agent,
            tag: usage.tag,
            depth: 0,
            canonical: usage.canonical,
        });
    }
}

/// One record, borrowed from the bus for the duration of the call.
#[derive(Debug, Clone, Copy)]
pub struct AuditRecord<'a> {
    /// Message or refusal.
    pub kind: AuditKind,
    /// The thread, when there is one.
    pub thread: Option<&'a ThreadId>,
    /// The session the thread belongs to.
    pub session: &'a SessionId,
    /// `user:NAME`, an agent's name, or `server` for refusals.
    pub from: &'a str,
    /// The payload's root tag (Clark notation).
    pub tag: &'a str,
    /// How many agent deliveries deep the message is (0 from a session).
    pub depth: u32,
    /// The canonical bytes.
    pub canonical: &'a str,
}

/// Receives audit records. Called on the bus's hot path: implementations
/// should hand the record off quickly (copy, queue) and never block on I/O.
pub trait AuditSink: Send + Sync {
    /// Records one entry.
    fn record(&self, record: AuditRecord<'_>);

    /// Entries recorded and not yet stored.
    fn held(&self) -> u64 {
        0
    }

    /// Whether the sink holds as many unstored entries as it may (its
    /// store has been failing): new messages from clients are then refused
    /// until it has caught up, rather than carried without a record.
    fn is_backlogged(&self) -> bool {
        false
    }
}

/// An owned copy of an [`AuditRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedAuditRecord {
    /// Message or refusal.
    pub kind: AuditKind,
    /// The thread, when there is one.
    pub thread: Option<ThreadId>,
    /// The session.
    pub session: SessionId,
    /// Who sent it.
    pub from: String,
    /// The root tag.
    pub tag: String,
    /// Delivery depth.
    pub depth: u32,
    /// The canonical bytes.
    pub canonical: String,
}

/// Keeps every record in memory, in order.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    records: Mutex<Vec<OwnedAuditRecord>>,
}

impl MemoryAuditSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<OwnedAuditRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All records so far.
    pub fn records(&self) -> Vec<OwnedAuditRecord> {
        self.lock().clone()
    }

    /// The records of one thread, in order.
    pub fn thread(&self, thread: &ThreadId) -> Vec<OwnedAuditRecord> {
        self.lock()
            .iter()
            .filter(|r| r.thread.as_ref() == Some(thread))
            .cloned()
            .collect()
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, record: AuditRecord<'_>) {
        self.lock().push(OwnedAuditRecord {
            kind: record.kind,
            thread: record.thread.cloned(),
            session: record.session.clone(),
            from: record.from.to_owned(),
            tag: record.tag.to_owned(),
            depth: record.depth,
            canonical: record.canonical.to_owned(),
        });
    }
}

/// Discards every record.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _record: AuditRecord<'_>) {}
}
