//! The message bus: routing by root tag, threads, delegation between agents,
//! and the bounds that keep all of it finite.
//!
//! There is no orchestrator and no caller: a message goes to every listener
//! of its root tag, what listeners emit flows on by the same rule, and what
//! nobody listens to goes back to the session that started the thread.
//!
//! ```text
//! session frame ─► size check ─► repair ─► exclusive C14N ─► access check
//!   ─► thread (new or the session's own) ─► mailbox ─► agents listening
//!   ─► emissions ─► repair ─► C14N ─► mailbox ─► … ─► session outbox
//! ```
//!
//! # Tasks and queues
//!
//! - [`Session::submit`] runs on the caller's task (the connection): it
//!   canonicalizes the frame, checks it and queues it on its thread.
//! - Each thread with queued messages has one worker (see `thread`), which
//!   calls the agents and queues their emissions; the mailbox is bounded by
//!   `max_thread_messages`. [`Session::submit`] spawns the worker a new
//!   message needs as a task of its own; [`Session::submit_and_drive`]
//!   hands it to the caller instead ([`ThreadWorker`]), so that a
//!   connection can run a message's whole round trip on its own task,
//!   with no hand-off between tasks.
//! - Each session has an [`Outbox`], bounded by `outbox_capacity`: when the
//!   client does not keep up, the oldest frames are dropped and the client is
//!   told how many (`frames-dropped`).
//! - Agent calls are bounded per agent by the runtime (`max_concurrent`,
//!   `max_queued`, then `busy`).
//!
//! # Dependencies
//!
//! The bus uses the XML core and the agent runtime and knows nothing of the
//! network: the port turns sockets into [`Session`]s and outboxes into
//! frames.

mod audit;
mod frames;
mod ids;
mod metrics;
mod outbox;
mod session;
mod table;
mod thread;
mod worker_slot;

pub use audit::{
    AuditKind, AuditRecord, AuditSink, CapabilityAudit, MemoryAuditSink, NoAudit, OwnedAuditRecord,
};
pub use frames::Refusal;
pub use ids::{AgentName, BadAgentName, SessionId, ThreadId};
pub use metrics::{BusMetrics, MetricsSnapshot, RefusalKind, LATENCY_BUCKETS_US};
pub use outbox::{Frame, Outbox, OutboxJournal};
pub use session::Grants;
pub use table::{Capability, Listener, ListenerTarget, RoutingTable, TableError};

use session::SessionEntry;
use std::sync::{Arc, RwLock};
pub use table::RemoteTarget;
use thread::{Accepted, Hop, ThreadState};
pub use thread::{RemoteDelivery, ThreadHandle, ThreadWorker};
use tokio::sync::watch;
pub use worker_slot::WorkerSlot;

/// Limits of the bus, each with its default.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Agent deliveries one thread may go deep. Default 64.
    pub max_hops: u32,
    /// Messages one thread may carry in all. Default 1,024.
    pub max_thread_messages: usize,
    /// Frames a session's outbox holds before dropping the oldest. Default 1,000.
    pub outbox_capacity: usize,
    /// Threads one session keeps; past it the oldest idle thread is
    /// forgotten (continuing it gives `unknown-thread`). Default 1,024.
    pub max_threads_per_session: usize,
    /// Limits for parsing and repairing every message.
    pub xml: crate::xml::Limits,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_hops: 64,
            max_thread_messages: 1_024,
            outbox_capacity: 1_000,
            max_threads_per_session: 1_024,
            xml: crate::xml::Limits::default(),
        }
    }
}

/// Who sent a message: a session's user or an agent.
#[derive(Debug, Clone)]
pub(crate) enum Sender {
    /// `user:NAME`.
    User(Arc<str>),
    /// An agent, by name.
    Agent(AgentName),
    /// A sender outside this process (`ORGANISM/agent` over a federation
    /// link).
    Remote(Arc<str>),
}

impl Sender {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Sender::User(from) | Sender::Remote(from) => from,
            Sender::Agent(name) => name.as_str(),
        }
    }
}

/// The bus. Cheap to clone; all clones are the same bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

pub(crate) struct BusInner {
    config: BusConfig,
    table: RwLock<Arc<RoutingTable>>,
    changes: watch::Sender<u64>,
    audit: Arc<dyn AuditSink>,
    metrics: BusMetrics,
}

impl Bus {
    /// A bus with no listeners, auditing into `audit`.
    pub fn new(config: BusConfig, audit: Arc<dyn AuditSink>) -> Self {
        Bus {
            inner: Arc::new(BusInner {
                config,
                table: RwLock::new(Arc::new(RoutingTable::default())),
                changes: watch::channel(0).0,
                audit,
                metrics: BusMetrics::default(),
            }),
        }
    }

    /// The bus's limits.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The routing table now.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.inner.table()
    }

    /// Adds a listener. Traffic keeps flowing; messages routed from now on
    /// see it.
    pub fn register(&self, listener: Listener) -> Result<(), TableError> {
        self.inner
            .change_table(|table| table.with(listener).map(|t| (t, ())))
    }

    /// Removes the agent named `name`. Calls already made to it finish;
    /// messages routed from now on do not reach it.
    pub fn remove(&self, name: &AgentName) -> Result<Arc<Listener>, TableError> {
        self.inner.change_table(|table| table.without(name))
    }

    /// Replaces the agent named as `listener` is, in one step: messages
    /// routed from now on reach the replacement; calls already made finish
    /// with the old one.
    pub fn replace(&self, listener: Listener) -> Result<(), TableError> {
        self.inner.change_table(|table| {
            let (without, _) = table.without(&listener.name)?;
            without.with(listener).map(|t| (t, ()))
        })
    }

    /// A receiver that changes whenever listeners come or go (the value is a
    /// version number); the port turns changes into fresh catalogs.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Writes a record to the bus's audit sink, in line with the messages
    /// (for events the bus does not see itself, such as logins).
    pub fn audit(&self, record: AuditRecord<'_>) {
        self.inner.audit.record(record);
    }

    /// The audit sink's unstored entries (see [`AuditSink::held`]).
    pub fn audit_held(&self) -> u64 {
        self.inner.audit.held()
    }

    /// Whether the audit sink can take no more unstored entries (see
    /// [`AuditSink::is_backlogged`]).
    pub fn audit_backlogged(&self) -> bool {
        self.inner.audit.is_backlogged()
    }

    /// The bus's counters.
    pub fn metrics(&self) -> &BusMetrics {
        &self.inner.metrics
    }

    /// Opens a session for `user`, allowed to send `grants`.
    pub fn open_session(&self, user: &str, grants: Grants) -> Session {
        self.open_session_with_id(SessionId::new(), user, grants)
    }

    /// Opens a session with a given id (a resumed or restored one).
    pub fn open_session_with_id(&self, id: SessionId, user: &str, grants: Grants) -> Session {
        let entry = SessionEntry::new(id, user, grants, self.inner.config.outbox_capacity);
        Session {
            entry: Arc::new(entry),
            bus: Arc::clone(&self.inner),
        }
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("config", &self.inner.config)
            .field("agents", &self.inner.table().agents().count())
            .finish_non_exhaustive()
    }
}

impl BusInner {
    fn table(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn change_table<T>(
        &self,
        change: impl FnOnce(&RoutingTable) -> Result<(RoutingTable, T), TableError>,
    ) -> Result<T, TableError> {
        let result = {
            let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
            let (next, value) = change(&table)?;
            *table = Arc::new(next);
            value
        };
        self.changes.send_modify(|version| *version += 1);
        Ok(result)
    }

    /// The ingress of a client frame; see [`Session::submit_and_drive`].
    fn submit(
        self: &Arc<Self>,
        session: &Arc<SessionEntry>,
        frame: &[u8],
    ) -> Result<Submitted, Refusal> {
        if session.is_ended() {
            return Err(frames::malformed("the session has ended"));
        }
        let ingested = crate::xml::ingest(frame, &self.config.xml)
            .map_err(|error| frames::malformed(&error.to_string()))?;
        let mut repairs: Vec<String> = ingested.repairs.iter().map(ToString::to_string).collect();
        let mut payloads = ingested.payloads.into_iter();
        let (Some(payload), None) = (payloads.next(), payloads.next()) else {
            return Err(frames::malformed("a frame must hold exactly one element"));
        };
        let (continued, payload) = if payload.tag().as_str() == "message" {
            let envelope = crate::xml::Envelope::parse(&payload)
                .map_err(|error| frames::malformed(&error.to_string()))?;
            let thread = envelope
                .thread
                .ok_or_else(|| frames::malformed("a <message> needs <meta><thread>"))?;
            repairs.extend(envelope.huh);
            repairs.truncate(thread::MAX_HUH_NOTES);
            (Some(thread), envelope.payload)
        } else {
            (None, payload)
        };
        crate::stage_timing::mark(crate::stage_timing::Stage::Ingest);
        let thread = match &continued {
            Some(id) => self.session_thread(session, id)?,
            None => None,
        };
        let hop = Hop {
            from: Sender::User(Arc::clone(&session.from)),
            payload,
            repairs,
            depth: 0,
        };
        self.take_in(session, thread, hop)
    }

    /// Checks a message coming into the bus from outside — the session's
    /// grants, its listeners — and queues it on `thread`, or on a new
    /// thread of the session.
    fn take_in(
        self: &Arc<Self>,
        session: &Arc<SessionEntry>,
        thread: Option<Arc<ThreadState>>,
        hop: Hop,
    ) -> Result<Submitted, Refusal> {
        let thread_id = thread.as_ref().map(|t| &t.id);
        let tag = hop.payload.tag();
        if tag.is_reserved() || !session.grants().allows(tag) {
            return Err(frames::access_denied(tag.as_str(), thread_id));
        }
        if self.table().listeners(tag).is_empty() {
            return Err(frames::no_listener(tag.as_str(), thread_id));
        }
        crate::stage_timing::mark(crate::stage_timing::Stage::Routing);
        let thread = match thread {
            Some(thread) => thread,
            None => {
                let thread = self.new_thread(session);
                crate::stage_timing::mark(crate::stage_timing::Stage::NewThread);
                thread
            }
        };
        match self.accept(&thread, hop) {
            Accepted::Queued => Ok(Submitted {
                thread: thread.id.clone(),
                worker: None,
            }),
            Accepted::StartWorker => Ok(Submitted {
                thread: thread.id.clone(),
                worker: Some(ThreadWorker::new(Arc::clone(self), thread)),
            }),
            Accepted::Refused => Err(frames::unknown_thread(thread.id.as_str())),
        }
    }

    /// A message from outside this process; see [`Session::submit_remote`].
    fn submit_remote(
        self: &Arc<Self>,
        session: &Arc<SessionEntry>,
        payload: crate::xml::CanonicalXml,
        from: &str,
        depth: u32,
        continued: Option<&str>,
    ) -> Result<Submitted, Refusal> {
        if session.is_ended() {
            return Err(frames::malformed("the session has ended"));
        }
        let thread = match continued {
            Some(id) => self.session_thread(session, id)?,
            None => None,
        };
        let hop = Hop {
            from: Sender::Remote(from.into()),
            payload,
            repairs: Vec::new(),
            depth,
        };
        self.take_in(session, thread, hop)
    }

    /// The session's own live thread `id`, or `unknown-thread`.
    fn session_thread(
        &self,
        session: &SessionEntry,
        id: &str,
    ) -> Result<Option<Arc<ThreadState>>, Refusal> {
        let found =
            ThreadId::bits(id).and_then(|bits| session.threads().by_bits.get(&bits).cloned());
        match found {
            Some(thread) if thread.id.as_str() == id && !thread.is_ended() => Ok(Some(thread)),
            _ => Err(frames::unknown_thread(id)),
        }
    }

    fn new_thread(&self, session: &Arc<SessionEntry>) -> Arc<ThreadState> {
        let (id, bits) = ThreadId::random();
        let thread = Arc::new(ThreadState::new(id, bits, Arc::clone(session)));
        let evicted = {
            let mut owned = session.threads();
            owned.order.push_back(bits);
            owned.by_bits.insert(bits, Arc::clone(&thread));
            if owned.order.len() > self.config.max_threads_per_session {
                owned
                    .order
                    .pop_front()
                    .and_then(|oldest| owned.by_bits.remove(&oldest))
            } else {
                None
            }
        };
        // An evicted thread nobody else holds is simply dropped; one still
        // held (a worker or an emitter has it) is ended, so that it takes
        // nothing more.
        if let Some(old) = evicted {
            if Arc::strong_count(&old) > 1 {
                old.end();
            }
        }
        thread
    }

    fn forget_thread(&self, thread: &ThreadState) {
        thread.session.threads().by_bits.remove(&thread.bits);
    }

    /// Ends `session`: its threads stop, its agent instances are dropped,
    /// its outbox is closed (what is in it can still be read).
    pub(crate) fn end_session(&self, session: &SessionEntry) {
        session.mark_ended();
        let threads = {
            let mut owned = session.threads();
            owned.order.clear();
            std::mem::take(&mut owned.by_bits)
        };
        for thread in threads.into_values() {
            thread.end();
        }
        self.end_session_instances(session);
        session.outbox.close();
    }

    fn end_session_instances(&self, session: &SessionEntry) {
        for listener in self.table().agents() {
            if let Some(agent) = listener.target.local() {
                agent.end_session(&session.key);
            }
        }
    }
}

/// A message taken by [`Session::submit_and_drive`].
#[derive(Debug)]
pub struct Submitted {
    /// Its thread.
    pub thread: ThreadId,
    /// The thread's worker, when the message started one: the caller runs
    /// it ([`ThreadWorker::run`]) or spawns it. `None` when a worker was
    /// already running and will take the message.
    pub worker: Option<ThreadWorker>,
}

/// A session on the bus: what a connection sends through, and the outbox
/// it reads from.
#[derive(Clone)]
pub struct Session {
    entry: Arc<SessionEntry>,
    bus: Arc<BusInner>,
}

impl Session {
    /// The session's id.
    pub fn id(&self) -> &SessionId {
        &self.entry.id
    }

    /// The frames on their way to the client.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.entry.outbox
    }

    /// Replaces the tags the session may send.
    pub fn set_grants(&self, grants: Grants) {
        self.entry.set_grants(grants);
    }

    /// The tags the session may send.
    pub fn grants(&self) -> Arc<Grants> {
        self.entry.grants()
    }

    /// Takes one frame from the client: a bare payload starts a thread, a
    /// `<message>` continues one of the session's threads. Returns the
    /// thread, or the refusal (already queued in the outbox, audited and
    /// counted) so that the caller can count bad messages. A worker the
    /// thread needs runs as a task of its own.
    pub fn submit(&self, frame: &[u8]) -> Result<ThreadId, Refusal> {
        let submitted = self.submit_and_drive(frame)?;
        if let Some(worker) = submitted.worker {
            worker.spawn();
        }
        Ok(submitted.thread)
    }

    /// [`submit`](Self::submit), but a worker the thread needs is the
    /// caller's to drive (or to spawn): the message waits for it.
    pub fn submit_and_drive(&self, frame: &[u8]) -> Result<Submitted, Refusal> {
        self.bus
            .submit(&self.entry, frame)
            .inspect_err(|refusal| self.bus.refuse(&self.entry, None, refusal.clone()))
    }

    /// Takes one message from outside this process (a federation link):
    /// `from` names its sender as this organism sees it, `depth` counts the
    /// agent deliveries behind it (so thread bounds hold across the link),
    /// and `thread` continues one of this session's threads or, `None`,
    /// starts one. Checked against the session's grants and the listeners
    /// like a client's frame; a refusal is returned to the caller only (it
    /// answers the far side itself), and counted.
    pub fn submit_remote(
        &self,
        payload: crate::xml::CanonicalXml,
        from: &str,
        depth: u32,
        thread: Option<&str>,
    ) -> Result<Submitted, Refusal> {
        self.bus
            .submit_remote(&self.entry, payload, from, depth, thread)
            .inspect_err(|refusal| self.bus.metrics.refused(refusal.kind))
    }

    /// Ends the session: its threads stop, its agent instances are dropped,
    /// its outbox is closed (what is in it can still be read).
    pub fn end(&self) {
        self.bus.end_session(&self.entry);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.entry.id)
            .finish_non_exhaustive()
    }
}
