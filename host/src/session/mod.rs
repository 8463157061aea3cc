//! Sessions that outlive sockets.
//!
//! A session is created at login and lives in the [`SessionRegistry`] until
//! it ends (`<end-session/>` from either side) or stays detached from every
//! socket for longer than its timeout. While detached, the bus keeps
//! delivering into its outbox (bounded: past it the oldest frames are
//! dropped and counted), and its agent instances keep their state.
//!
//! With a persistent [`SessionStore`], every session's record and the
//! frames not yet sent to its client are stored as they change, and
//! [`SessionRegistry::restore`] brings them back after a restart, detached
//! and waiting for their clients.
//!
//! A client resumes with the session id and its resume token: 256 random
//! bits, given out in the catalog, kept only as a SHA-256 hash, and replaced
//! by a new one at every resume (the old one stops working). A resume while
//! another socket still holds the session takes it over: the old socket is
//! told to close.

mod stored;

pub use stored::{SessionRecord, SessionStore, StoredOutbox, StoredSession};

use crate::bus::{Bus, Grants, Session, SessionId};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::Notify;

/// Why a session could not be resumed (never told to the client, who only
/// learns that authentication failed).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ResumeError {
    /// No such session (never was, ended, or expired).
    #[error("no such session")]
    Unknown,
    /// The token is not the session's current one.
    #[error("wrong resume token")]
    BadToken,
    /// The session outlived its timeout while detached.
    #[error("the session expired")]
    Expired,
}

/// A socket's hold on a session; the registry signals `taken_over` when
/// another socket resumes it.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Which attachment this is (a session's latest is the live one).
    pub id: u64,
    /// Notified when another socket resumed the session.
    pub taken_over: Arc<Notify>,
}

/// A session as the registry keeps it.
struct Entry {
    session: Session,
    user: String,
    token_hash: [u8; 32],
    timeout: Duration,
    attachment: Option<Attachment>,
    detached_since: Option<Instant>,
}

/// What a successful login or resume hands the connection.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The bus session.
    pub session: Session,
    /// Whose it is.
    pub user: String,
    /// The resume token to give the client (the only copy in clear).
    pub token: String,
    /// The socket's hold on it.
    pub attachment: Attachment,
}

/// Every live session, attached or not.
#[derive(Default)]
pub struct SessionRegistry {
    entries: Mutex<HashMap<SessionId, Entry>>,
    next_attachment: AtomicU64,
    store: Option<Arc<dyn SessionStore>>,
}

impl std::fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("sessions", &self.lock().len())
            .finish_non_exhaustive()
    }
}

/// A fresh 256-bit token, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness the token would be guessable; the system source
    // failing is not something to carry on through.
    if getrandom::fill(&mut bytes).is_err() {
        let fallback = Sha256::digest(format!(
            "{:?}{:?}",
            Instant::now(),
            std::thread::current().id()
        ));
        bytes.copy_from_slice(&fallback);
    }
    hex::encode(bytes)
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SessionRegistry {
    /// An empty registry that keeps sessions in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry that also keeps sessions in `store`.
    pub fn persistent(store: Arc<dyn SessionStore>) -> Self {
        SessionRegistry {
            store: Some(store),
            ..Self::default()
        }
    }

    fn save(&self, session: &Session, user: &str, token_hash: [u8; 32], timeout: Duration) {
        if let Some(store) = &self.store {
            let record = SessionRecord {
                id: session.id().as_str().to_owned(),
                user: user.to_owned(),
                token_hash,
                timeout_secs: timeout.as_secs(),
            };
            if let Err(error) = store.save_session(&record) {
                tracing::error!(session = %record.id, %error, "a session could not be stored");
            }
        }
    }

    fn forget(&self, id: &SessionId) {
        if let Some(store) = &self.store {
            if let Err(error) = store.delete_session(id.as_str()) {
                tracing::error!(session = %id.as_str(), %error, "an ended session could not be forgotten");
            }
        }
    }

    /// Brings back the sessions `store` kept, detached from now on, on
    /// `bus`; `grants` says what each user may send now (`None`: the user
    /// is gone, and so is the session). Returns how many came back.
    pub fn restore(
        &self,
        bus: &Bus,
        grants: impl Fn(&str) -> Option<Grants>,
        now: Instant,
    ) -> Result<usize, crate::privileged::StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let mut restored = 0;
        for (record, frames) in store.load_sessions()? {
            let Some(grants) = grants(&record.user) else {
                store.delete_session(&record.id)?;
                continue;
            };
            let session =
                bus.open_session_with_id(SessionId::from_string(&record.id), &record.user, grants);
            session
                .outbox()
                .restore(frames.into_iter().map(|(seq, frame)| (seq, frame.into())));
            session
                .outbox()
                .set_journal(Arc::new(StoredOutbox::new(Arc::clone(store), &record.id)));
            self.lock().insert(
                session.id().clone(),
                Entry {
                    session,
                    user: record.user,
                    token_hash: record.token_hash,
                    timeout: Duration::from_secs(record.timeout_secs),
                    attachment: None,
                    detached_since: Some(now),
                },
            );
            restored += 1;
        }
        Ok(restored)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attachment(&self) -> Attachment {
        Attachment {
            id: self.next_attachment.fetch_add(1, Ordering::Relaxed),
            taken_over: Arc::new(Notify::new()),
        }
    }

    /// Registers a new session of `user`, attached to the calling socket.
    pub fn create(&self, session: Session, user: &str, timeout: Duration) -> Attached {
        let token = new_token();
        let attachment = self.attachment();
        if let Some(store) = &self.store {
            self.save(&session, user, hash(&token), timeout);
            session.outbox().set_journal(Arc::new(StoredOutbox::new(
                Arc::clone(store),
                session.id().as_str(),
            )));
        }
        self.lock().insert(
            session.id().clone(),
            Entry {
                session: session.clone(),
                user: user.to_owned(),
                token_hash: hash(&token),
                timeout,
                attachment: Some(attachment.clone()),
                detached_since: None,
            },
        );
        Attached {
            session,
            user: user.to_owned(),
            token,
            attachment,
        }
    }

    /// Resumes session `id` with `token` at `now`: a new token replaces the
    /// old, and a socket still attached is told it was taken over.
    pub fn resume(&self, id: &str, token: &str, now: Instant) -> Result<Attached, ResumeError> {
        let id = SessionId::from_string(id);
        let mut entries = self.lock();
        let entry = entries.get_mut(&id).ok_or(ResumeError::Unknown)?;
        if !same(&entry.token_hash, &hash(token)) {
            return Err(ResumeError::BadToken);
        }
        if entry
            .detached_since
            .is_some_and(|since| now.duration_since(since) > entry.timeout)
        {
            let expired = entries.remove(&id);
            drop(entries);
            if let Some(expired) = expired {
                expired.session.end();
                self.forget(&id);
            }
            return Err(ResumeError::Expired);
        }
        if let Some(previous) = entry.attachment.take() {
            previous.taken_over.notify_one();
        }
        let token = new_token();
        let attachment = self.attachment();
        entry.token_hash = hash(&token);
        entry.attachment = Some(attachment.clone());
        entry.detached_since = None;
        entry.session.outbox().set_journaling(false);
        self.save(&entry.session, &entry.user, entry.token_hash, entry.timeout);
        Ok(Attached {
            session: entry.session.clone(),
            user: entry.user.clone(),
            token,
            attachment,
        })
    }

    /// The socket holding `attachment` is gone; the session waits for a
    /// resume. Nothing happens if another socket took it over meanwhile.
    pub fn detach(&self, id: &SessionId, attachment: &Attachment, now: Instant) {
        if let Some(entry) = self.lock().get_mut(id) {
            if entry
                .attachment
                .as_ref()
                .is_some_and(|a| a.id == attachment.id)
            {
                entry.attachment = None;
                entry.detached_since = Some(now);
                // From now on what arrives must outlive the process.
                entry.session.outbox().set_journaling(true);
            }
        }
    }

    /// Ends session `id`: its threads stop, its instances are dropped.
    pub fn end(&self, id: &SessionId) {
        let removed = self.lock().remove(id);
        if let Some(entry) = removed {
            entry.session.end();
            self.forget(id);
        }
    }

    /// Ends every session detached for longer than its timeout; returns
    /// how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let expired: Vec<Entry> = {
            let mut entries = self.lock();
            let ids: Vec<SessionId> = entries
                .iter()
                .filter(|(_, e)| {
                    e.detached_since
                        .is_some_and(|since| now.duration_since(since) > e.timeout)
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| entries.remove(id)).collect()
        };
        for entry in &expired {
            entry.session.end();
            self.forget(entry.session.id());
        }
        expired.len()
    }

    /// Whether session `id` is registered, attached or not.
    pub fn contains(&self, id: &SessionId) -> bool {
        self.lock().contains_key(id)
    }

    /// Sessions registered, attached or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, BusConfig, Grants, NoAudit};

    fn session() -> Session {
        Bus::new(BusConfig::default(), Arc::new(NoAudit)).open_session("alice", Grants::All)
    }

    #[tokio::test]
    async fn tokens_rotate_and_the_old_socket_is_taken_over() {
        let registry = SessionRegistry::new();
        let first = registry.create(session(), "alice", Duration::from_secs(60));
        let id = first.session.id().as_str().to_owned();
        let now = Instant::now();
        assert_eq!(
            registry.resume(&id, "0000", now).unwrap_err(),
            ResumeError::BadToken
        );
        let second = registry.resume(&id, &first.token, now).unwrap();
        assert_ne!(second.token, first.token);
        // The first socket was told; its late detach changes nothing.
        tokio::time::timeout(
            Duration::from_secs(1),
            first.attachment.taken_over.notified(),
        )
        .await
        .unwrap();
        registry.detach(first.session.id(), &first.attachment, now);
        assert_eq!(
            registry.resume(&id, &first.token, now).unwrap_err(),
            ResumeError::BadToken,
            "the old token stops working"
        );
        let third = registry.resume(&id, &second.token, now).unwrap();
        assert_eq!(third.user, "alice");
        assert_eq!(
            registry.resume("nope", &third.token, now).unwrap_err(),
            ResumeError::Unknown
        );
    }

    #[test]
    fn detached_sessions_expire() {
        let registry = SessionRegistry::new();
        let attached = registry.create(session(), "alice", Duration::from_secs(60));
        let id = attached.session.id().clone();
        let start = Instant::now();
        registry.detach(&id, &attached.attachment, start);
        assert_eq!(registry.sweep(start + Duration::from_secs(30)), 0);
        assert_eq!(
            registry
                .resume(
                    id.as_str(),
                    &attached.token,
                    start + Duration::from_secs(61)
                )
                .unwrap_err(),
            ResumeError::Expired
        );
        assert!(registry.is_empty());
        assert!(attached.session.outbox().is_closed());

        let other = registry.create(session(), "bob", Duration::from_secs(1));
        registry.detach(other.session.id(), &other.attachment, start);
        assert_eq!(registry.sweep(start + Duration::from_secs(2)), 1);
        assert!(registry.is_empty());
    }
}
