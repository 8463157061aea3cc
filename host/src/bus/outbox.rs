//! A session's outbox: the bounded queue of frames on their way to the
//! client.
//!
//! The bus pushes; the connection's writer pops. The queue never grows past
//! its capacity: when it is full the oldest frame is dropped and counted, and
//! the next frame the writer pops is `<error code="frames-dropped"
//! count="N"/>`, so the client always learns what it missed. The outbox
//! outlives any one socket, which is what lets a session resume after a
//! disconnect.
//!
//! With a persistent store, an [`OutboxJournal`] mirrors the queue while no
//! socket takes from it ([`Outbox::set_journaling`]): what is queued then is
//! written first, and a frame is forgotten once the connection confirms it
//! was sent ([`Outbox::confirm_sent`]) or it was dropped past the bound. A
//! restart thus finds every frame produced for a client that was away. While
//! a socket is attached, frames go straight out and nothing is written.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// One frame for the client: canonical XML text.
pub type Frame = Arc<str>;

/// Mirrors an outbox in a store. Failures are the journal's to report:
/// the bus goes on with the frame in memory.
pub trait OutboxJournal: Send + Sync {
    /// Frame number `seq` was queued.
    fn appended(&self, seq: u64, frame: &str);
    /// Every frame up to and including `seq` left the queue.
    fn removed_through(&self, seq: u64);
}

/// A bounded, drop-oldest queue of frames for one session.
pub struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
    capacity: usize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct OutboxState {
    frames: VecDeque<(u64, Frame)>,
    next_seq: u64,
    /// The number of the last frame popped and not yet confirmed sent.
    popped: Option<u64>,
    dropped: u64,
    closed: bool,
    journal: Option<Arc<dyn OutboxJournal>>,
    /// Whether new frames are written to the journal.
    journaling: bool,
    /// The last frame number written to the journal and not yet forgotten.
    journaled_through: Option<u64>,
}

impl OutboxState {
    /// Tells the journal frames through `seq` are gone, if it has any.
    fn forget_through(&mut self, seq: u64) {
        let Some(journaled) = self.journaled_through else {
            return;
        };
        if let Some(journal) = &self.journal {
            journal.removed_through(seq.min(journaled));
        }
        if seq >= journaled {
            self.journaled_through = None;
        }
    }
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

    /// Gives the outbox a journal (not yet writing to it).
    pub fn set_journal(&self, journal: Arc<dyn OutboxJournal>) {
        self.lock().journal = Some(journal);
    }

    /// Starts or stops journaling. Starting writes what is queued now, so
    /// that from then on the journal holds every frame not yet sent.
    pub fn set_journaling(&self, on: bool) {
        let mut state = self.lock();
        state.journaling = on;
        if !on {
            return;
        }
        let Some(journal) = state.journal.clone() else {
            return;
        };
        let from = state.journaled_through.map_or(0, |seq| seq + 1);
        let mut last = state.journaled_through;
        for (seq, frame) in state.frames.iter().filter(|(seq, _)| *seq >= from) {
            journal.appended(*seq, frame);
            last = Some(*seq);
        }
        state.journaled_through = last;
    }

    /// Puts back frames kept by a journal (after a restart), in order,
    /// without writing them again; journaling is on.
    pub fn restore(&self, frames: impl IntoIterator<Item = (u64, Frame)>) {
        let mut state = self.lock();
        state.journaling = true;
        for (seq, frame) in frames {
            state.next_seq = state.next_seq.max(seq + 1);
            state.journaled_through = Some(seq);
            state.frames.push_back((seq, frame));
        }
        while state.frames.len() > self.capacity {
            state.frames.pop_front();
            state.dropped += 1;
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Queues `frame`, dropping the oldest frame if the outbox is full.
    /// Returns `false` (and queues nothing) once the outbox is closed.
    pub fn push(&self, frame: Frame) -> bool {
        {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            if state.journaling {
                if let Some(journal) = &state.journal {
                    journal.appended(seq, &frame);
                    state.journaled_through = Some(seq);
                }
            }
            if state.frames.len() == self.capacity {
                if let Some((dropped, _)) = state.frames.pop_front() {
                    state.forget_through(dropped);
                }
                state.dropped += 1;
            }
            state.frames.push_back((seq, frame));
        }
        self.ready.notify_one();
        true
    }

    /// The last frame popped reached the client's socket: the journal may
    /// forget it (and everything before it).
    pub fn confirm_sent(&self) {
        let mut state = self.lock();
        if let Some(seq) = state.popped.take() {
            state.forget_through(seq);
        }
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
        let (seq, frame) = state.frames.pop_front()?;
        state.popped = Some(seq);
        Some(frame)
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

    /// Records what the outbox tells its journal.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl OutboxJournal for Recorder {
        fn appended(&self, seq: u64, frame: &str) {
            self.0.lock().unwrap().push(format!("+{seq} {frame}"));
        }
        fn removed_through(&self, seq: u64) {
            self.0.lock().unwrap().push(format!("-{seq}"));
        }
    }

    #[test]
    fn the_journal_holds_what_was_queued_while_nobody_read() {
        let outbox = Outbox::new(3);
        let journal = Arc::new(Recorder::default());
        outbox.set_journal(journal.clone());
        // Attached: frames go straight out, nothing is written.
        outbox.push("<a/>".into());
        assert_eq!(&*outbox.try_pop().unwrap(), "<a/>");
        outbox.confirm_sent();
        outbox.push("<b/>".into());
        assert!(journal.0.lock().unwrap().is_empty());
        // Detached: what is queued is written, then every new frame.
        outbox.set_journaling(true);
        outbox.push("<c/>".into());
        outbox.push("<d/>".into());
        outbox.push("<e/>".into()); // drops <b/>
        assert_eq!(
            *journal.0.lock().unwrap(),
            ["+1 <b/>", "+2 <c/>", "+3 <d/>", "+4 <e/>", "-1"]
        );
        // Resumed: sent frames are forgotten, new ones are not written.
        outbox.set_journaling(false);
        journal.0.lock().unwrap().clear();
        let _notice = outbox.try_pop();
        assert_eq!(&*outbox.try_pop().unwrap(), "<c/>");
        outbox.confirm_sent();
        outbox.push("<f/>".into());
        while outbox.try_pop().is_some() {
            outbox.confirm_sent();
        }
        assert_eq!(*journal.0.lock().unwrap(), ["-2", "-3", "-4"]);
    }
}
