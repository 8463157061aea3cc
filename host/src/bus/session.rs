//! A session as the bus sees it: who it speaks for, which tags it may send,
//! its threads, and its outbox.

use super::ids::{SessionId, ThreadBitsHasher};
use super::outbox::Outbox;
use super::thread::ThreadState;
use crate::runtime::SessionKey;
use crate::xml::Tag;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// The root tags a session may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// Any tag (`allow = ["*"]`).
    All,
    /// Exactly these tags.
    Tags(HashSet<Tag>),
}

impl Grants {
    /// Whether `tag` may be sent.
    pub fn allows(&self, tag: &Tag) -> bool {
        match self {
            Grants::All => true,
            Grants::Tags(tags) => tags.contains(tag),
        }
    }
}

/// The bus's record of one session.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub(crate) id: SessionId,
    /// The session's key for agent instances.
    pub(crate) key: SessionKey,
    /// `user:NAME`, the `from` of everything the session sends.
    pub(crate) from: Arc<str>,
    grants: RwLock<Arc<Grants>>,
    pub(crate) outbox: Arc<Outbox>,
    /// The session's live threads.
    threads: Mutex<SessionThreads>,
    ended: AtomicBool,
}

impl SessionEntry {
    pub(crate) fn new(id: SessionId, user: &str, grants: Grants, outbox_capacity: usize) -> Self {
        SessionEntry {
            key: SessionKey::from(id.as_str()),
            id,
            from: format!("user:{user}").into(),
            grants: RwLock::new(Arc::new(grants)),
            outbox: Arc::new(Outbox::new(outbox_capacity)),
            threads: Mutex::new(SessionThreads::default()),
            ended: AtomicBool::new(false),
        }
    }

    pub(crate) fn grants(&self) -> Arc<Grants> {
        Arc::clone(&self.grants.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn set_grants(&self, grants: Grants) {
        *self.grants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(grants);
    }

    pub(crate) fn threads(&self) -> MutexGuard<'_, SessionThreads> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn mark_ended(&self) {
        self.ended.store(true, Ordering::Release);
    }
}

/// A session's live threads: each by the 128 bits of its id, and their
/// order of creation (oldest first), for eviction. Each session keeps its
/// own, so a message touches only its own session's table and lock.
#[derive(Debug, Default)]
pub(crate) struct SessionThreads {
    pub(crate) by_bits: HashMap<u128, Arc<ThreadState>, BuildHasherDefault<ThreadBitsHasher>>,
    pub(crate) order: VecDeque<u128>,
}
