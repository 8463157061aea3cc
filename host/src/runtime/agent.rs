//! One admitted agent: its component, its limits, and its live instances,
//! one per session.
//!
//! # Calls
//!
//! [`Agent::call`] admits the call (or refuses it as [`CallError::Busy`]),
//! waits its turn behind earlier calls of the same session, waits for one of
//! `max_concurrent` permits, and runs the guest's `handle` in the session's
//! instance, creating the instance first if there is none. Within one
//! session, calls to one agent run one at a time in the order they were
//! admitted (tokio's mutex is fair); across sessions they run concurrently,
//! up to `max_concurrent`.
//!
//! # The spare instance
//!
//! Instantiating a component that links many modules (an interpreter) takes
//! hundreds of microseconds, all of it wasmtime's work, none of it the
//! guest's. An agent whose latest instantiation took longer than 100 µs
//! keeps one spare, instantiated in the background and never called: a new
//! session takes it and a fresh spare is made behind it (after that
//! session's first call), so a new session waits only for its first call.
//! Agents that instantiate quickly (most Rust and C agents, componentize-js
//! ones) keep none. A spare is not counted as a live instance; it holds one
//! slot of the instance pool.
//!
//! # Cancellation
//!
//! Dropping a call's future before it finishes drops the instance it was
//! running in (the store cannot be trusted mid-call); the session's next call
//! gets a fresh instance. Nothing else is left behind: the admission count
//! and the permit are released by guards.

use super::bindings::{AgentWorld, Envelope, Failure};
use super::components::{describe, AgentComponent};
use super::engine::GuestActivity;
use super::error::{CallError, GuestFailure};
use super::limits::AgentLimits;
use super::output::GuestOutput;
use super::state::{CallContext, Capabilities, Emitter, GuestLimit, InstanceState};
use crate::capability::keyvalue::Bucket;
use crate::capability::CallScope;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// Instantiation slower than this makes a spare instance worth keeping.
const SPARE_WORTHWHILE: Duration = Duration::from_micros(100);

/// Failed calls in a row after which an agent is said to be failing.
const FAILING_REPEATEDLY: u64 = 5;

/// The longest failure text kept from a guest; the rest is cut.
const MAX_FAILURE_TEXT: usize = 1024;

/// Whose instance a call runs in: the session that started the thread.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(Arc<str>);

impl SessionKey {
    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SessionKey {
    fn from(key: &str) -> Self {
        SessionKey(key.into())
    }
}

impl From<String> for SessionKey {
    fn from(key: String) -> Self {
        SessionKey(key.into())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.0)
    }
}

/// One message as the agent receives it (the WIT `envelope`), and where
/// what it emits during the call goes.
#[derive(Clone, Copy)]
pub struct Delivery<'a> {
    /// The thread's opaque id.
    pub thread: &'a str,
    /// Who sent it: an agent's name or `user:NAME`.
    pub sender: &'a str,
    /// The payload's root tag, in Clark notation.
    pub tag: &'a str,
    /// The payload, one element in exclusive canonical form.
    pub payload: &'a str,
    /// Where `host.emit` payloads go during the call; without one they are
    /// returned before the call's own payloads.
    pub emitter: Option<&'a Arc<dyn Emitter>>,
}

impl fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("thread", &self.thread)
            .field("sender", &self.sender)
            .field("tag", &self.tag)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

/// A snapshot of an agent's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentStats {
    /// Calls running in the guest right now.
    pub in_flight: usize,
    /// The most calls ever in flight at once.
    pub peak_in_flight: usize,
    /// Calls admitted and waiting (for the session's turn or a permit).
    pub queued: usize,
    /// Live instances (sessions with state).
    pub instances: usize,
    /// Sessions the agent keeps a place for (live instance or not).
    pub sessions: usize,
    /// Calls that ran to completion in the guest, successful or not.
    pub calls: u64,
    /// Whether a spare instance is ready for the next new session.
    pub spare_ready: bool,
}

/// An admitted agent and its instances.
pub struct Agent {
    name: Arc<str>,
    component: Arc<AgentComponent>,
    limits: AgentLimits,
    engine: Engine,
    /// Told when this agent's guest code runs, so that the epoch ticks.
    activity: Arc<GuestActivity>,
    slots: Mutex<HashMap<SessionKey, Arc<tokio::sync::Mutex<Slot>>>>,
    permits: Semaphore,
    admitted: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    calls: AtomicU64,
    /// Calls that failed since the last one that did not.
    consecutive_failures: AtomicU64,
    live_instances: Arc<AtomicUsize>,
    /// A ready instance no session has used yet.
    spare: Mutex<Option<Live>>,
    /// Whether a spare is being made.
    making_spare: AtomicBool,
    /// Whether the latest instantiation was slow enough to keep a spare.
    keep_spare: AtomicBool,
    /// This agent, for the background task that makes the spare.
    me: Weak<Agent>,
    /// What its instances may use beyond computing.
    capabilities: Arc<Capabilities>,
}

/// The instance of one session, if it has one.
struct Slot {
    live: Option<Live>,
    last_used: Instant,
}

struct Live {
    store: Store<InstanceState>,
    world: AgentWorld,
    /// The agent's count of live instances once a session holds this one,
    /// decremented when it drops; `None` while it is a spare.
    count: Option<Arc<AtomicUsize>>,
}

impl Live {
    /// Counts this instance as a session's.
    fn attach(mut self, count: &Arc<AtomicUsize>) -> Self {
        if self.count.is_none() {
            count.fetch_add(1, Ordering::AcqRel);
            self.count = Some(Arc::clone(count));
        }
        self
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(count) = &self.count {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Agent {
    pub(crate) fn new(
        name: &str,
        component: Arc<AgentComponent>,
        limits: AgentLimits,
        engine: Engine,
        activity: Arc<GuestActivity>,
        me: Weak<Agent>,
        capabilities: Arc<Capabilities>,
    ) -> Self {
        Agent {
            name: name.into(),
            component,
            permits: Semaphore::new(limits.max_concurrent.max(1)),
            limits,
            engine,
            activity,
            slots: Mutex::new(HashMap::new()),
            admitted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            live_instances: Arc::new(AtomicUsize::new(0)),
            spare: Mutex::new(None),
            making_spare: AtomicBool::new(false),
            keep_spare: AtomicBool::new(false),
            me,
            capabilities,
        }
    }

    /// The agent's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component it runs.
    pub fn component(&self) -> &Arc<AgentComponent> {
        &self.component
    }

    /// Its limits.
    pub fn limits(&self) -> &AgentLimits {
        &self.limits
    }

    /// Its counters, now.
    pub fn stats(&self) -> AgentStats {
        let admitted = self.admitted.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        AgentStats {
            in_flight,
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            queued: admitted.saturating_sub(in_flight),
            instances: self.live_instances.load(Ordering::Relaxed),
            sessions: self.lock_slots().len(),
            calls: self.calls.load(Ordering::Relaxed),
            spare_ready: self.lock_spare().is_some(),
        }
    }

    /// Handles one message in `session`'s instance and returns the payloads
    /// the agent emitted.
    pub async fn call(
        &self,
        session: &SessionKey,
        delivery: Delivery<'_>,
    ) -> Result<Vec<String>, CallError> {
        let _admission = self.admit()?;
        let slot = self.slot(session);
        let mut slot = slot.lock().await;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Instantiate("agent is shutting down".into()))?;
        let _flight = InFlight::enter(self);

        let now = Instant::now();
        if now.duration_since(slot.last_used) > self.limits.session_timeout {
            slot.live = None;
        }
        let fresh = slot.live.is_none();
        let mut live = match slot.live.take() {
            Some(live) => live,
            None => {
                let spare = self.lock_spare().take();
                match spare {
                    Some(spare) => spare,
                    None => self.instantiate().await?,
                }
                .attach(&self.live_instances)
            }
        };
        let result = self.run(&mut live, session, delivery).await;
        if fresh {
            // After the call, so that making the next spare does not
            // compete with this session's first call.
            self.make_spare();
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        slot.last_used = Instant::now();
        let result = match result {
            Outcome::Kept(result) => {
                slot.live = Some(live);
                result
            }
            Outcome::Discarded(error) => Err(error),
        };
        self.note_outcome(&result);
        crate::stage_timing::mark(crate::stage_timing::Stage::WasmCall);
        result
    }

    /// Counts consecutive failed calls: the call that makes
    /// [`FAILING_REPEATEDLY`] failures in a row leaves one warning for the
    /// operator, and the first success after it one line saying so. An
    /// agent answering `malformed` or `refused` is judging its input, not
    /// failing: those calls count for neither.
    fn note_outcome(&self, result: &Result<Vec<String>, CallError>) {
        match result {
            Err(CallError::Guest(GuestFailure::Malformed(_) | GuestFailure::Refused(_))) => {}
            Ok(_) => {
                let failed = self.consecutive_failures.swap(0, Ordering::AcqRel);
                if failed >= FAILING_REPEATEDLY {
                    tracing::info!(
                        agent = &*self.name,
                        failed,
                        "agent answering again after failing calls in a row"
                    );
                }
            }
            Err(error) => {
                let failed = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failed == FAILING_REPEATEDLY {
                    tracing::warn!(
                        agent = &*self.name,
                        failed,
                        last_error = %error,
                        "agent failing repeatedly: its calls fail one after another"
                    );
                }
            }
        }
    }

    fn lock_spare(&self) -> MutexGuard<'_, Option<Live>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a spare instance in the background, unless instantiating is
    /// quick anyway, or there is one, or one is being made. A failure is
    /// left for the next session's own instantiation to report.
    fn make_spare(&self) {
        if !self.keep_spare.load(Ordering::Acquire) {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        if self.lock_spare().is_some() || self.making_spare.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            if let Ok(live) = me.instantiate().await {
                *me.lock_spare() = Some(live);
            }
            me.making_spare.store(false, Ordering::Release);
        });
    }

    /// Whether the component may emit during a call (`host.emit`, from
    /// version 0.2.0 of the world): only then is an emitter worth making.
    pub fn can_emit(&self) -> bool {
        self.component.can_emit()
    }

    /// Drops `session`'s instance, if any (a call in flight finishes
    /// first), and the session's `session` bucket.
    pub fn end_session(&self, session: &SessionKey) {
        self.lock_slots().remove(session);
        if let Some(storage) = &self.capabilities.storage {
            if storage.grant.session.is_some() {
                let bucket = Bucket::session(&self.name, session.as_str());
                if let Err(error) = storage.store.clear(&bucket) {
                    tracing::warn!(agent = &*self.name, %error, "could not clear an ended session's bucket");
                }
            }
        }
    }

    /// Forgets the `agent` bucket and every `session` bucket of this agent
    /// (after it was removed).
    pub fn forget_storage(&self) {
        if let Some(storage) = &self.capabilities.storage {
            if let Err(error) = storage.store.remove_agent(&self.name) {
                tracing::warn!(agent = &*self.name, %error, "could not remove a removed agent's storage");
            }
        }
    }

    /// Drops every instance idle for longer than `session_timeout` and
    /// returns how many were dropped. Instances with a call in flight or
    /// waiting are kept.
    pub fn evict_idle(&self) -> usize {
        let now = Instant::now();
        let timeout = self.limits.session_timeout;
        let mut slots = self.lock_slots();
        let before = slots.len();
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(slot) => now.duration_since(slot.last_used) <= timeout,
            Err(_) => true,
        });
        before - slots.len()
    }

    fn lock_slots(&self) -> MutexGuard<'_, HashMap<SessionKey, Arc<tokio::sync::Mutex<Slot>>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, session: &SessionKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.lock_slots();
        Arc::clone(slots.entry(session.clone()).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(Slot {
                live: None,
                last_used: Instant::now(),
            }))
        }))
    }

    fn admit(&self) -> Result<Admission<'_>, CallError> {
        let capacity = self.limits.max_concurrent.max(1) + self.limits.max_queued;
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map_err(|_| CallError::Busy {
                max_concurrent: self.limits.max_concurrent,
                max_queued: self.limits.max_queued,
            })?;
        Ok(Admission(self))
    }

    async fn instantiate(&self) -> Result<Live, CallError> {
        let output = GuestOutput::new(Arc::clone(&self.name));
        let mut store = Store::new(
            &self.engine,
            InstanceState::new(
                self.limits.memory_bytes,
                Arc::clone(&output),
                Arc::clone(&self.capabilities),
            ),
        );
        store.limiter(|state| state.limiter());
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        self.arm(&mut store, "", "", None);
        let _running = self.activity.running();
        let clock = Instant::now();
        let started = tokio::time::timeout(
            self.limits.timeout(),
            self.component.pre.instantiate_async(&mut store),
        )
        .await;
        output.end_call();
        self.keep_spare
            .store(clock.elapsed() > SPARE_WORTHWHILE, Ordering::Release);
        match started {
            Ok(Ok(world)) => Ok(Live {
                store,
                world,
                count: None,
            }),
            Ok(Err(error)) => Err(match self.classify(&error) {
                CallError::Trap(_) => CallError::Instantiate(describe(&error)),
                limit => limit,
            }),
            Err(_) => Err(self.timeout_error()),
        }
    }

    /// Refuels the store and resets its deadline, output budget and call
    /// context for one call on `thread` of `session`.
    fn arm(
        &self,
        store: &mut Store<InstanceState>,
        session: &str,
        thread: &str,
        emitter: Option<&Arc<dyn Emitter>>,
    ) {
        // Fuel is enabled on the engine, so setting it cannot fail.
        let _ = store.set_fuel(self.limits.fuel);
        store.set_epoch_deadline(1);
        store
            .data()
            .output
            .begin_call(thread, self.limits.max_log_bytes);
        let scope = if store.data().has_capabilities() {
            CallScope::new(session, thread)
        } else {
            Arc::clone(&self.capabilities.idle_scope)
        };
        store.data_mut().begin_call(CallContext {
            scope,
            emitter: emitter.cloned(),
            held: Vec::new(),
            emitted: 0,
            emitted_bytes: 0,
            max_payloads: self.limits.max_emitted_payloads,
            max_bytes: self.limits.max_emitted_bytes,
        });
    }

    async fn run(&self, live: &mut Live, session: &SessionKey, delivery: Delivery<'_>) -> Outcome {
        self.arm(
            &mut live.store,
            session.as_str(),
            delivery.thread,
            delivery.emitter,
        );
        let envelope = Envelope {
            thread: delivery.thread,
            sender: delivery.sender,
            tag: delivery.tag,
            payload: delivery.payload,
        };
        crate::stage_timing::mark(crate::stage_timing::Stage::InstanceLookup);
        let running = self.activity.running();
        let result = within(
            self.limits.timeout(),
            live.world.call_handle(&mut live.store, envelope),
        )
        .await;
        drop(running);
        live.store.data().output.end_call();
        let idle = CallContext::idle(&self.capabilities.idle_scope);
        let call = std::mem::replace(&mut live.store.data_mut().call, idle);
        match result {
            Err(_elapsed) => Outcome::Discarded(self.timeout_error()),
            Ok(Err(trap)) => Outcome::Discarded(self.classify(&trap)),
            Ok(Ok(Err(failure))) => Outcome::Kept(Err(CallError::Guest(failure.into()))),
            Ok(Ok(Ok(payloads))) => Outcome::Kept(self.check_output(call, payloads)),
        }
    }

    /// The call's payloads (those emitted and held first), if the call's
    /// emissions and returns together stay within the output limits.
    fn check_output(
        &self,
        call: CallContext,
        payloads: Vec<String>,
    ) -> Result<Vec<String>, CallError> {
        let count = call.emitted + payloads.len();
        if count > self.limits.max_emitted_payloads {
            return Err(CallError::InvalidOutput(format!(
                "returned {count} payloads; the limit is {} per call",
                self.limits.max_emitted_payloads
            )));
        }
        let bytes = call.emitted_bytes + payloads.iter().map(String::len).sum::<usize>();
        if bytes > self.limits.max_emitted_bytes {
            return Err(CallError::InvalidOutput(format!(
                "returned {bytes} bytes of payloads; the limit is {} per call",
                self.limits.max_emitted_bytes
            )));
        }
        if call.held.is_empty() {
            return Ok(payloads);
        }
        let mut all = call.held;
        all.extend(payloads);
        Ok(all)
    }

    fn timeout_error(&self) -> CallError {
        CallError::Timeout {
            timeout_ms: self.limits.timeout_ms,
        }
    }

    /// Names the way a call trapped.
    fn classify(&self, error: &wasmtime::Error) -> CallError {
        if let Some(limit) = error.downcast_ref::<GuestLimit>() {
            return match limit {
                GuestLimit::Memory => CallError::OutOfMemory {
                    limit_bytes: self.limits.memory_bytes,
                },
                GuestLimit::Output => CallError::OutputLimit {
                    limit_bytes: self.limits.max_log_bytes,
                },
                GuestLimit::EmittedPayloads => CallError::EmitLimit(format!(
                    "more than {} payloads in one call",
                    self.limits.max_emitted_payloads
                )),
                GuestLimit::EmittedBytes => CallError::EmitLimit(format!(
                    "more than {} bytes of payloads in one call",
                    self.limits.max_emitted_bytes
                )),
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => CallError::OutOfFuel {
                fuel: self.limits.fuel,
            },
            Some(Trap::StackOverflow) => CallError::StackOverflow,
            Some(Trap::Interrupt) => self.timeout_error(),
            Some(trap) => {
                let text = trap.to_string();
                CallError::Trap(text.strip_prefix("wasm trap: ").unwrap_or(&text).to_owned())
            }
            None => CallError::Trap(describe(error)),
        }
    }
}

/// `future`, ended after `limit` as `tokio::time::timeout` would, but
/// without a timer for a future that is ready at its first poll — which is
/// most agent calls: a guest computing runs to its end in one poll, unless
/// it runs past an epoch tick (then it yields, and the timer is armed for
/// what is left of the limit) or waits on the host.
async fn within<F: std::future::Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut future = std::pin::pin!(future);
    if let std::task::Poll::Ready(output) = futures::poll!(future.as_mut()) {
        return Ok(output);
    }
    tokio::time::timeout_at(deadline, future).await
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("component", &self.component.hash())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// How a call ended, and whether its instance may be used again.
enum Outcome {
    /// The guest returned; its instance is intact.
    Kept(Result<Vec<String>, CallError>),
    /// The guest trapped or ran out of time; its instance is gone.
    Discarded(CallError),
}

/// One admitted call; released on drop.
struct Admission<'a>(&'a Agent);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One call running in the guest; released on drop.
struct InFlight<'a>(&'a Agent);

impl<'a> InFlight<'a> {
    fn enter(agent: &'a Agent) -> Self {
        let now = agent.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        agent.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(agent)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl From<Failure> for GuestFailure {
    fn from(failure: Failure) -> Self {
        let cut = |mut text: String| {
            if text.len() > MAX_FAILURE_TEXT {
                let mut end = MAX_FAILURE_TEXT;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            text
        };
        match failure {
            Failure::Malformed(text) => GuestFailure::Malformed(cut(text)),
            Failure::Refused(text) => GuestFailure::Refused(cut(text)),
            Failure::Internal(text) => GuestFailure::Internal(cut(text)),
        }
    }
}
