//! A session's outbox: the bounded queue of frames on their way to the
//! client.
//!
//! The bus pushes; the connection's writer pops. The queue never grows past
//! its capacity: when it is full the oldest frame is dropped and counted, and
//! the next frame the writer pops is `<error code="frames-dropped"
//! count="N"/>`, so the client always learns what it missed. The outbox
//! outlives any one socket, which is what lets a session resume after a
//! disconnect.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// One frame for the client: canonical XML text.
pub type Frame = Arc<str>;

/// A bounded, drop-oldest queue of frames for one session.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    frames: VecDeque<Frame>,
    dropped: u64,
    closed: bool,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` frames (at least one).
    pub fn new(capacity: usize) -> Self {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame`, dropping the oldest frame if the outbox is full.
    /// Returns `false` (and queues nothing) once the outbox is closed.
    pub fn push(&self, frame: Frame) -> bool {
        {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            if state.frames.len() == self.capacity {
                state.frames.pop_front();
                state.dropped += 1;
            }
            state.frames.push_back(frame);
        }
        self.ready.notify_one();
        true
    }

    /// The next frame without waiting: a frames-dropped notice first if
    /// frames were dropped since the last pop.
    pub fn try_pop(&self) -> Option<Frame> {
        let mut state = self.lock();
        if state.dropped > 0 {
            let count = std::mem::take(&mut state.dropped);
            return Some(
                format!(r#"<error code="frames-dropped" count="{count}"></error>"#).into(),
            );
        }
        state.frames.pop_front()
    }

    /// Waits for the next frame; `None` once the outbox is closed and empty.
    ///
    /// Cancel-safe: a frame is taken only when this returns it.
    pub async fn pop(&self) -> Option<Frame> {
        loop {
            let notified = self.ready.notified();
            if let Some(frame) = self.try_pop() {
                return Some(frame);
            }
            if self.lock().closed {
                return None;
            }
            notified.await;
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the outbox was closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Closes the outbox: pushes are refused, pops drain what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_order_and_reports_dropped_frames() {
        let outbox = Outbox::new(2);
        for n in 1..=4 {
            assert!(outbox.push(format!("<n>{n}</n>").into()));
        }
        assert_eq!(
            &*outbox.pop().await.unwrap(),
            r#"<error code="frames-dropped" count="2"></error>"#
        );
        assert_eq!(&*outbox.pop().await.unwrap(), "<n>3</n>");
        assert_eq!(&*outbox.pop().await.unwrap(), "<n>4</n>");
        outbox.close();
        assert!(!outbox.push("<late/>".into()));
        assert_eq!(outbox.pop().await, None);
    }

    #[tokio::test]
    async fn a_waiting_pop_wakes_on_push() {
        let outbox = Arc::new(Outbox::new(8));
        let reader = tokio::spawn({
            let outbox = Arc::clone(&outbox);
            async move { outbox.pop().await }
        });
        tokio::task::yield_now().await;
        outbox.push("<hi/>".into());
        assert_eq!(reader.await.unwrap().as_deref(), Some("<hi/>"));
    }
}
