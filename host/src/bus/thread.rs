//! Threads and their delivery loop.
//!
//! Each thread has a mailbox of hops (a canonical payload, who sent it, how
//! deep it is). While the mailbox is not empty one worker — a
//! [`ThreadWorker`], run by whoever started it — takes hops in order and
//! delivers each: to every agent listening to its tag (concurrently when
//! there are several), or, when no agent listens, back to the session as a
//! `<message>`. What the agents emit is repaired, canonicalized and
//! appended to the same mailbox, and the same worker goes on with it, so a
//! delegation's hops never change hands. The worker ends when the mailbox
//! is empty; the next message starts a new one.
//!
//! # Ordering
//!
//! Within a thread, hops are delivered one after another in mailbox order,
//! so the messages of one thread reach each agent in the order they were
//! sent, and the session sees the thread's answers in the order they were
//! produced. Different threads run independently, on their own tasks: there
//! is no order between them, even within one session.
//!
//! # Bounds
//!
//! A hop deeper than `max_hops` agent deliveries, or a thread past
//! `max_thread_messages` messages, ends the thread with `thread-limit`; the
//! mailbox is dropped with it, so an emission storm costs at most that many
//! messages. Agent calls are bounded by the runtime's limits.

use super::frames::{self, Refusal};
use super::ids::{AgentName, ThreadId};
use super::session::SessionEntry;
use super::table::{Listener, ListenerTarget};
use super::{BusInner, Sender};
use crate::runtime::{CallError, Delivery, Emitter};
use crate::stage_timing::{mark, Stage};
use crate::xml::{write_envelope, CanonicalXml};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Repair notes one message carries at most; the rest are dropped.
pub(crate) const MAX_HUH_NOTES: usize = 16;

/// One message on its way through a thread.
#[derive(Debug)]
pub(crate) struct Hop {
    pub(crate) from: Sender,
    pub(crate) payload: CanonicalXml,
    pub(crate) repairs: Vec<String>,
    /// Agent deliveries that led to this message (0: sent by the session).
    pub(crate) depth: u32,
}

/// A thread: its id, its session and its mailbox.
#[derive(Debug)]
pub(crate) struct ThreadState {
    pub(crate) id: ThreadId,
    /// The id's 128 bits: the thread's key in the bus's table.
    pub(crate) bits: u128,
    pub(crate) session: Arc<SessionEntry>,
    inner: Mutex<ThreadInner>,
}

#[derive(Debug, Default)]
struct ThreadInner {
    mailbox: VecDeque<Hop>,
    /// Whether a worker is running (and will take what is queued).
    running: bool,
    /// Messages the thread has carried.
    messages: usize,
    /// Ended by a limit or with its session: takes nothing more.
    ended: bool,
}

impl ThreadInner {
    /// Counts one more message, unless the thread has ended or this one
    /// takes it past `max_messages` (which ends it).
    fn charge(&mut self, max_messages: usize) -> Result<(), Enqueued> {
        if self.ended {
            return Err(Enqueued::Ended);
        }
        self.messages += 1;
        if self.messages > max_messages {
            self.ended = true;
            self.mailbox.clear();
            return Err(Enqueued::OverLimit);
        }
        Ok(())
    }
}

/// What [`BusInner::accept`] did with a hop.
pub(crate) enum Accepted {
    /// Queued for the running worker.
    Queued,
    /// Queued; a worker must be started for it.
    StartWorker,
    /// Not queued: the thread has ended (or has just ended over its limit).
    Refused,
}

/// The worker of one thread with messages waiting and nobody delivering
/// them. Running it ([`run`](Self::run)) delivers every message of the
/// thread until its mailbox is empty; [`spawn`](Self::spawn) does that on
/// a task of its own. One that is dropped unrun is spawned, so a thread
/// never waits for a worker nobody runs.
#[must_use = "the thread's messages wait until its worker runs"]
pub struct ThreadWorker(Option<(Arc<BusInner>, Arc<ThreadState>)>);

impl ThreadWorker {
    pub(crate) fn new(bus: Arc<BusInner>, thread: Arc<ThreadState>) -> Self {
        ThreadWorker(Some((bus, thread)))
    }

    /// Delivers the thread's messages until its mailbox is empty.
    ///
    /// The future must be run to its end: dropped halfway, it drops the
    /// call it was in (and the instance the call ran in) and what remains
    /// of the thread's mailbox waits for no one. Hand an unfinished one to
    /// the runtime instead.
    pub async fn run(mut self) {
        if let Some((bus, thread)) = self.0.take() {
            bus.run_thread(thread).await;
        }
    }

    /// Runs the worker as a task of its own.
    pub fn spawn(self) {
        tokio::spawn(self.run());
    }
}

impl Drop for ThreadWorker {
    fn drop(&mut self) {
        if let Some((bus, thread)) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(bus.run_thread(thread));
            }
        }
    }
}

impl std::fmt::Debug for ThreadWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let thread = self.0.as_ref().map(|(_, thread)| &thread.id);
        f.debug_tuple("ThreadWorker").field(&thread).finish()
    }
}

/// What [`ThreadState::enqueue`] did.
pub(crate) enum Enqueued {
    /// Queued; a worker must be started.
    StartWorker,
    /// Queued for the running worker.
    Queued,
    /// The thread went past `max_thread_messages`; it is now ended.
    OverLimit,
    /// The thread had already ended.
    Ended,
}

impl ThreadState {
    pub(crate) fn new(id: ThreadId, bits: u128, session: Arc<SessionEntry>) -> Self {
        ThreadState {
            id,
            bits,
            session,
            inner: Mutex::new(ThreadInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ThreadInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `hop` to the mailbox, counting it against the thread's limit.
    pub(crate) fn enqueue(&self, hop: Hop, max_messages: usize) -> Enqueued {
        let mut inner = self.lock();
        if let Err(refused) = inner.charge(max_messages) {
            return refused;
        }
        inner.mailbox.push_back(hop);
        if inner.running {
            Enqueued::Queued
        } else {
            inner.running = true;
            Enqueued::StartWorker
        }
    }

    /// Counts one message that bypasses the mailbox (an emission delivered
    /// at once) against the thread's limit.
    fn count(&self, max_messages: usize) -> Enqueued {
        match self.lock().charge(max_messages) {
            Ok(()) => Enqueued::Queued,
            Err(refused) => refused,
        }
    }

    /// Ends the thread: nothing more is queued or delivered.
    pub(crate) fn end(&self) {
        let mut inner = self.lock();
        inner.ended = true;
        inner.mailbox.clear();
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// The next hop, or `None` (and the worker is marked stopped).
    fn next(&self) -> Option<Hop> {
        let mut inner = self.lock();
        let hop = if inner.ended {
            None
        } else {
            inner.mailbox.pop_front()
        };
        if hop.is_none() {
            inner.running = false;
            // Most threads carry one round trip: give the mailbox's room
            // back now, while it is warm, rather than when the thread is
            // evicted a thousand threads later.
            inner.mailbox = VecDeque::new();
        }
        hop
    }
}

impl BusInner {
    /// The worker loop of one thread: delivers hops until the mailbox is empty.
    pub(crate) async fn run_thread(self: Arc<Self>, thread: Arc<ThreadState>) {
        // Should this future be dropped before the mailbox is empty (the
        // call in flight is then lost with its instance), a fresh worker
        // takes over the rest, so the thread does not stall: a worker
        // dropped unrun is spawned.
        let mut rest = ThreadWorker::new(Arc::clone(&self), Arc::clone(&thread));
        while let Some(hop) = thread.next() {
            if thread.session.is_ended() {
                thread.end();
                break;
            }
            self.deliver(&thread, hop).await;
        }
        rest.0 = None;
    }

    /// Delivers one hop: to its listeners, or back to the session.
    async fn deliver(self: &Arc<Self>, thread: &Arc<ThreadState>, hop: Hop) {
        mark(if hop.depth == 0 {
            Stage::WorkerStart
        } else {
            Stage::EnqueueOut
        });
        let table = self.table();
        let listeners = table.listeners(hop.payload.tag());
        if listeners.is_empty() {
            self.to_session(thread, &hop);
            return;
        }
        if hop.depth >= self.config.max_hops {
            let reason = format!(
                "the thread went {} agent deliveries deep; the limit is {}",
                hop.depth + 1,
                self.config.max_hops
            );
            self.end_thread(thread, frames::thread_limit(&thread.id, &reason));
            return;
        }
        if let [listener] = listeners {
            let result = self.call(thread, &hop, listener).await;
            self.handle_result(thread, &hop, &listener.name, result);
        } else {
            let calls = listeners.iter().map(|l| self.call(thread, &hop, l));
            let results = futures::future::join_all(calls).await;
            for (listener, result) in listeners.iter().zip(results) {
                self.handle_result(thread, &hop, &listener.name, result);
            }
        }
        if thread.session.is_ended() {
            self.end_session_instances(&thread.session);
        }
    }

    async fn call(
        self: &Arc<Self>,
        thread: &Arc<ThreadState>,
        hop: &Hop,
        listener: &Listener,
    ) -> Result<Vec<String>, CallError> {
        let agent = match &listener.target {
            ListenerTarget::Local(agent) => agent,
            ListenerTarget::Remote(remote) => {
                let delivery = RemoteDelivery {
                    thread: ThreadHandle {
                        bus: Arc::clone(self),
                        thread: Arc::clone(thread),
                    },
                    sender: hop.from.as_str().to_owned(),
                    depth: hop.depth + 1,
                    payload: hop.payload.clone(),
                };
                return remote
                    .forward(delivery)
                    .map(|()| Vec::new())
                    .map_err(CallError::Remote);
            }
        };
        let emitter = agent.can_emit().then(|| {
            Arc::new(ThreadEmitter {
                bus: Arc::clone(self),
                thread: Arc::clone(thread),
                agent: listener.name.clone(),
                repairs: hop.repairs.clone(),
                depth: hop.depth + 1,
            }) as Arc<dyn Emitter>
        });
        let delivery = Delivery {
            thread: thread.id.as_str(),
            sender: hop.from.as_str(),
            tag: hop.payload.tag().as_str(),
            payload: hop.payload.as_str(),
            emitter: emitter.as_ref(),
        };
        let started = Instant::now();
        let result = agent.call(&thread.session.key, delivery).await;
        self.metrics.agent_call(started.elapsed());
        result
    }

    fn handle_result(
        self: &Arc<Self>,
        thread: &Arc<ThreadState>,
        hop: &Hop,
        agent: &AgentName,
        result: Result<Vec<String>, CallError>,
    ) {
        match result {
            Ok(emitted) => {
                for raw in emitted {
                    if !self.emit(thread, agent, raw, &hop.repairs, hop.depth + 1, false) {
                        break;
                    }
                }
            }
            Err(CallError::Busy { .. }) => {
                self.refuse(
                    &thread.session,
                    Some(&thread.id),
                    frames::busy(agent.as_str(), &thread.id),
                );
            }
            Err(error) => {
                let refusal = frames::agent_failed(agent.as_str(), &thread.id, &error.to_string());
                self.refuse(&thread.session, Some(&thread.id), refusal);
            }
        }
    }

    /// Takes one payload an agent emitted, in answer to a message that
    /// carried `cause_repairs`, into the thread at `depth`. Returns `false`
    /// when the thread has ended and the agent's other payloads are moot.
    ///
    /// The emission's repair notes are its cause's followed by its own, so
    /// that whoever finally receives an answer learns what was repaired on
    /// the way (a client whose input was repaired sees it on the answer).
    ///
    /// With `now` (a `host.emit` during the call), a payload nobody listens
    /// to goes to the session at once rather than through the mailbox,
    /// which only moves on when the call returns; one with listeners is
    /// queued as usual.
    fn emit(
        self: &Arc<Self>,
        thread: &Arc<ThreadState>,
        agent: &AgentName,
        raw: String,
        cause_repairs: &[String],
        depth: u32,
        now: bool,
    ) -> bool {
        let ingested = match crate::xml::ingest_owned(raw, &self.config.xml) {
            Ok(ingested) => ingested,
            Err(error) => {
                let reason = format!("emitted XML that cannot be repaired: {error}");
                let refusal = frames::agent_failed(agent.as_str(), &thread.id, &reason);
                self.refuse(&thread.session, Some(&thread.id), refusal);
                return true;
            }
        };
        mark(Stage::EmissionIngest);
        let mut repairs = cause_repairs.to_vec();
        repairs.extend(ingested.repairs.iter().map(ToString::to_string));
        repairs.truncate(MAX_HUH_NOTES);
        for payload in ingested.payloads {
            let hop = Hop {
                from: Sender::Agent(agent.clone()),
                payload,
                repairs: repairs.clone(),
                depth,
            };
            let accepted = if now && self.table().listeners(hop.payload.tag()).is_empty() {
                self.to_session_now(thread, hop)
            } else {
                match self.accept(thread, hop) {
                    Accepted::Queued => true,
                    // Emissions come from a running worker, which takes
                    // them; should one ever start a thread, spawn it.
                    Accepted::StartWorker => {
                        ThreadWorker::new(Arc::clone(self), Arc::clone(thread)).spawn();
                        true
                    }
                    Accepted::Refused => false,
                }
            };
            if !accepted {
                return false;
            }
        }
        true
    }

    /// Audits `hop`, counts it on `thread` and sends it to the session
    /// at once. Returns `false` if the thread has ended.
    fn to_session_now(&self, thread: &Arc<ThreadState>, hop: Hop) -> bool {
        self.audit_message(thread, &hop);
        match thread.count(self.config.max_thread_messages) {
            Enqueued::Queued | Enqueued::StartWorker => {
                self.metrics.routed();
                self.to_session(thread, &hop);
                true
            }
            Enqueued::OverLimit => self.end_over_message_limit(thread),
            Enqueued::Ended => false,
        }
    }

    /// Ends `thread`, which went past `max_thread_messages`; returns `false`
    /// (it takes nothing more).
    fn end_over_message_limit(&self, thread: &ThreadState) -> bool {
        let reason = format!(
            "the thread carried more than {} messages",
            self.config.max_thread_messages
        );
        self.end_thread(thread, frames::thread_limit(&thread.id, &reason));
        false
    }

    /// Audits `hop` and queues it on `thread`; says whether a worker must
    /// be started for it.
    pub(crate) fn accept(&self, thread: &ThreadState, hop: Hop) -> Accepted {
        self.audit_message(thread, &hop);
        let from_session = hop.depth == 0;
        mark(if from_session {
            Stage::AuditIn
        } else {
            Stage::AuditOut
        });
        let enqueued = thread.enqueue(hop, self.config.max_thread_messages);
        if from_session {
            mark(Stage::EnqueueIn);
        }
        match enqueued {
            Enqueued::Queued => {
                self.metrics.routed();
                Accepted::Queued
            }
            Enqueued::StartWorker => {
                self.metrics.routed();
                Accepted::StartWorker
            }
            Enqueued::OverLimit => {
                self.end_over_message_limit(thread);
                Accepted::Refused
            }
            Enqueued::Ended => Accepted::Refused,
        }
    }

    /// Sends `hop` to the session that owns the thread, in its envelope.
    fn to_session(&self, thread: &ThreadState, hop: &Hop) {
        let frame = write_envelope(
            Some(hop.from.as_str()),
            None,
            Some(thread.id.as_str()),
            &hop.repairs,
            &hop.payload,
        );
        mark(Stage::Envelope);
        if thread.session.outbox.push(frame.into()) {
            self.metrics.delivered_to_session();
        }
        mark(Stage::OutboxPush);
        // An agent may end the session: the client gets the `<end-session/>`
        // first, then the session ends as if the client had sent it.
        if matches!(hop.from, Sender::Agent(_)) && hop.payload.tag().as_str() == "end-session" {
            self.end_session(&thread.session);
        }
    }

    /// Ends `thread` with `refusal` sent to its session.
    pub(crate) fn end_thread(&self, thread: &ThreadState, refusal: Refusal) {
        thread.end();
        self.forget_thread(thread);
        self.refuse(&thread.session, Some(&thread.id), refusal);
    }

    /// Sends a refusal frame to a session, audited and counted.
    pub(crate) fn refuse(
        &self,
        session: &SessionEntry,
        thread: Option<&ThreadId>,
        refusal: Refusal,
    ) {
        self.metrics.refused(refusal.kind);
        self.audit.record(super::AuditRecord {
            kind: super::AuditKind::Refusal,
            thread,
            session: &session.id,
            from: "server",
            tag: refusal.kind.code(),
            depth: 0,
            canonical: &refusal.frame,
        });
        if session.outbox.push(refusal.frame) {
            self.metrics.delivered_to_session();
        }
    }

    fn audit_message(&self, thread: &ThreadState, hop: &Hop) {
        self.audit.record(super::AuditRecord {
            kind: super::AuditKind::Message,
            thread: Some(&thread.id),
            session: &thread.session.id,
            from: hop.from.as_str(),
            tag: hop.payload.tag().as_str(),
            depth: hop.depth,
            canonical: hop.payload.as_str(),
        });
    }
}

/// A message for a [`RemoteTarget`](super::RemoteTarget): the payload, who
/// sent it, the depth it arrives at, and the thread its answers belong to.
#[derive(Debug)]
pub struct RemoteDelivery {
    /// The thread, to answer on.
    pub thread: ThreadHandle,
    /// `user:NAME`, an agent's name, or a remote sender.
    pub sender: String,
    /// Agent deliveries that led here, this one included.
    pub depth: u32,
    /// The canonical payload.
    pub payload: CanonicalXml,
}

/// A thread held by a listener outside this process, to put its answers on
/// when they come.
#[derive(Clone)]
pub struct ThreadHandle {
    bus: Arc<BusInner>,
    thread: Arc<ThreadState>,
}

impl ThreadHandle {
    /// The thread's id.
    pub fn id(&self) -> &ThreadId {
        &self.thread.id
    }

    /// Whether the thread has ended (answers to it are dropped).
    pub fn is_ended(&self) -> bool {
        self.thread.is_ended() || self.thread.session.is_ended()
    }

    /// Puts an answer from `from` on the thread at `depth`, routed like any
    /// emission: to the agents listening to its tag, or to the session.
    /// Returns `false` when the thread has ended.
    pub fn answer(&self, from: &str, payload: CanonicalXml, depth: u32) -> bool {
        let hop = Hop {
            from: Sender::Remote(from.into()),
            payload,
            repairs: Vec::new(),
            depth,
        };
        match self.bus.accept(&self.thread, hop) {
            Accepted::Queued => true,
            Accepted::StartWorker => {
                ThreadWorker::new(Arc::clone(&self.bus), Arc::clone(&self.thread)).spawn();
                true
            }
            Accepted::Refused => false,
        }
    }

    /// Tells the thread's session that `agent` failed it, for `reason`.
    pub fn fail(&self, agent: &str, reason: &str) {
        let refusal = frames::agent_failed(agent, &self.thread.id, reason);
        self.bus
            .refuse(&self.thread.session, Some(&self.thread.id), refusal);
    }
}

impl std::fmt::Debug for ThreadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ThreadHandle")
            .field(&self.thread.id)
            .finish()
    }
}

/// Routes what an agent emits with `host.emit` during a call on a thread.
struct ThreadEmitter {
    bus: Arc<BusInner>,
    thread: Arc<ThreadState>,
    agent: AgentName,
    /// The repair notes of the message being handled.
    repairs: Vec<String>,
    /// The depth of what the call emits.
    depth: u32,
}

impl Emitter for ThreadEmitter {
    fn emit(&self, payload: String) {
        self.bus.emit(
            &self.thread,
            &self.agent,
            payload,
            &self.repairs,
            self.depth,
            true,
        );
    }
}
