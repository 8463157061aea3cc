//! What a persistent store keeps of sessions: who each belongs to, its
//! resume token's hash and timeout, and the frames not yet sent to its
//! client (mirrored from the outbox by [`StoredOutbox`]).

use crate::bus::OutboxJournal;
use crate::privileged::StoreError;
use std::sync::Arc;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session id.
    pub id: String,
    /// Whose it is.
    pub user: String,
    /// SHA-256 of the current resume token.
    pub token_hash: [u8; 32],
    /// Seconds it waits for a client.
    pub timeout_secs: u64,
}

/// A stored session with its pending frames, in order.
pub type StoredSession = (SessionRecord, Vec<(u64, String)>);

/// Where sessions are kept across restarts.
pub trait SessionStore: Send + Sync {
    /// Stores (or replaces) a session's record.
    fn save_session(&self, record: &SessionRecord) -> Result<(), StoreError>;
    /// Forgets a session and its frames.
    fn delete_session(&self, id: &str) -> Result<(), StoreError>;
    /// Stores frame `seq` of session `id`.
    fn append_frame(&self, id: &str, seq: u64, frame: &str) -> Result<(), StoreError>;
    /// Forgets the frames of session `id` up to and including `seq`.
    fn remove_frames_through(&self, id: &str, seq: u64) -> Result<(), StoreError>;
    /// Every stored session with its frames.
    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError>;
}

/// Mirrors one session's outbox into a [`SessionStore`].
pub struct StoredOutbox {
    store: Arc<dyn SessionStore>,
    id: String,
}

impl StoredOutbox {
    /// The journal of session `id`.
    pub fn new(store: Arc<dyn SessionStore>, id: &str) -> Self {
        StoredOutbox {
            store,
            id: id.to_owned(),
        }
    }
}

impl OutboxJournal for StoredOutbox {
    fn appended(&self, seq: u64, frame: &str) {
        if let Err(error) = self.store.append_frame(&self.id, seq, frame) {
            tracing::error!(session = %self.id, %error, "a pending frame could not be stored");
        }
    }

    fn removed_through(&self, seq: u64) {
        if let Err(error) = self.store.remove_frames_through(&self.id, seq) {
            tracing::error!(session = %self.id, %error, "sent frames could not be forgotten");
        }
    }
}

/// Whether [`SharedSessions::rotate`] replaced a session's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The token was the current one; the new one replaces it.
    Rotated,
    /// The token is not the session's current one.
    BadToken,
    /// No such session is stored.
    Unknown,
}

/// What the nodes of a cluster share of sessions besides their records:
/// which node holds each one, and a resume that replaces the token in one
/// step for every node, so that a token works once wherever it is shown.
pub trait SharedSessions: Send + Sync {
    /// Marks session `id` as held by `node`.
    fn hold(&self, id: &str, node: &str) -> Result<(), StoreError>;

    /// In one step: if the stored token hash of session `id` is
    /// `presented`, replaces it with `next` and makes `node` the session's
    /// holder.
    fn rotate(
        &self,
        id: &str,
        presented: &[u8; 32],
        next: &[u8; 32],
        node: &str,
    ) -> Result<Rotation, StoreError>;

    /// Stored session `id` with its pending frames, if there is one.
    fn load_session(&self, id: &str) -> Result<Option<StoredSession>, StoreError>;

    /// The sessions `node` holds, and those no node holds.
    fn held_by(&self, node: &str) -> Result<Vec<StoredSession>, StoreError>;

    /// Forgets session `id` and its frames if `node` still holds it (not
    /// when another node took it over).
    fn forget_if_held(&self, id: &str, node: &str) -> Result<(), StoreError>;

    /// Keeps each session of `leases` (id, seconds) in the store for that
    /// many seconds more: the holder renews them while it lives, so the
    /// sessions of a node that is gone for good do not stay forever.
    fn renew_leases(&self, leases: &[(String, u64)]) -> Result<(), StoreError>;
}
