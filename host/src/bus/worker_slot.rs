//! A place in a task to run thread workers one after another, in the same
//! memory.
//!
//! A worker's future holds the whole of a delivery — the agent call and
//! wasmtime's call state — so it is a large allocation; a connection that
//! boxed a fresh one for every message paid a large `malloc` and `free`
//! (and the allocator's consolidation that large requests trigger) per
//! round trip. A [`WorkerSlot`] keeps one box and puts each new worker's
//! future into it in place, once the previous one has finished.
//!
//! A worker still running when the slot is dropped is handed to the
//! runtime, so a thread never stops halfway because its slot went away.

use super::thread::ThreadWorker;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// One thread worker at a time, run by whoever polls the slot.
pub struct WorkerSlot(Box<dyn Slot>);

impl WorkerSlot {
    /// An empty slot.
    pub fn new() -> Self {
        WorkerSlot(Box::new(Reused {
            future: None,
            busy: false,
            make: ThreadWorker::run,
        }))
    }

    /// Whether a worker is in the slot, unfinished.
    pub fn is_busy(&self) -> bool {
        self.0.is_busy()
    }

    /// Puts `worker` in the slot; if the slot is busy, the worker runs as a
    /// task of its own instead.
    pub fn start(&mut self, worker: ThreadWorker) {
        if self.0.is_busy() {
            worker.spawn();
        } else {
            self.0.start(worker);
        }
    }

    /// Drives the worker in the slot: `Ready` once the slot is empty (the
    /// worker finished, or there was none).
    pub fn poll_worker(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_worker(cx)
    }
}

impl Default for WorkerSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        if let Some(worker) = self.0.unfinished() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(worker);
            }
        }
    }
}

impl std::fmt::Debug for WorkerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSlot")
            .field("busy", &self.is_busy())
            .finish()
    }
}

/// The slot, with the worker future's type erased.
trait Slot: Send {
    fn is_busy(&self) -> bool;
    fn start(&mut self, worker: ThreadWorker);
    fn poll_worker(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    fn unfinished(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>>;
}

/// One box for futures of type `F`, made by `make`.
struct Reused<F, M> {
    future: Option<Pin<Box<F>>>,
    /// Whether the future in the box is unfinished (a finished one stays
    /// in the box, never polled again, until the next replaces it).
    busy: bool,
    make: M,
}

impl<F, M> Slot for Reused<F, M>
where
    F: Future<Output = ()> + Send + 'static,
    M: Fn(ThreadWorker) -> F + Send,
{
    fn is_busy(&self) -> bool {
        self.busy
    }

    fn start(&mut self, worker: ThreadWorker) {
        let next = (self.make)(worker);
        match &mut self.future {
            Some(future) => future.set(next),
            None => self.future = Some(Box::pin(next)),
        }
        self.busy = true;
    }

    fn poll_worker(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.busy {
            return Poll::Ready(());
        }
        let Some(future) = self.future.as_mut() else {
            self.busy = false;
            return Poll::Ready(());
        };
        let polled = future.as_mut().poll(cx);
        if polled.is_ready() {
            self.busy = false;
        }
        polled
    }

    fn unfinished(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        if !self.busy {
            return None;
        }
        self.busy = false;
        self.future
            .take()
            .map(|future| future as Pin<Box<dyn Future<Output = ()> + Send>>)
    }
}
