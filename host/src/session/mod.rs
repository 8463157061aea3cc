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
//!
//! In a cluster ([`SessionRegistry::in_cluster`]) every session is marked
//! with the node that holds it, a node brings back after a restart only
//! its own, and every resume replaces the token in the shared store in one
//! step ([`SharedSessions::rotate`]), so a token works once on whichever
//! node it is shown. A client whose node is gone resumes on any other
//! ([`SessionRegistry::take_over`]) and gets the frames that were kept for
//! it; the agents' instances start afresh there.

mod stored;

pub use stored::{
    Rotation, SessionRecord, SessionStore, SharedSessions, StoredOutbox, StoredSession,
};

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
    cluster: Option<ClusterSessions>,
}

/// This node's name and the sessions the cluster shares.
struct ClusterSessions {
    node: String,
    shared: Arc<dyn SharedSessions>,
    /// When this node last renewed its sessions' leases.
    renewed: Mutex<Option<Instant>>,
}

/// How often a node of a cluster renews the leases of its sessions.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(30);

/// A session's lease: its timeout, and twice the renewal period besides,
/// so that a live holder always renews in time.
fn lease_seconds(timeout: Duration) -> u64 {
    timeout.as_secs() + 2 * LEASE_RENEWAL.as_secs()
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

    /// Shares the sessions with the other nodes of a cluster, as node
    /// `node`.
    pub fn in_cluster(mut self, node: &str, shared: Arc<dyn SharedSessions>) -> Self {
        self.cluster = Some(ClusterSessions {
            node: node.to_owned(),
            shared,
            renewed: Mutex::new(None),
        });
        self
    }

    /// In a cluster, renews the leases of the sessions held here when
    /// [`LEASE_RENEWAL`] has passed since the last time (see
    /// [`SharedSessions::renew_leases`]); a session whose holder stops
    /// renewing is gone from the store once its lease runs out.
    pub fn renew_leases(&self, now: Instant) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        {
            let mut renewed = cluster.renewed.lock().unwrap_or_else(|e| e.into_inner());
            if renewed.is_some_and(|at| now.duration_since(at) < LEASE_RENEWAL) {
                return;
            }
            *renewed = Some(now);
        }
        let leases: Vec<(String, u64)> = self
            .lock()
            .values()
            .map(|entry| {
                (
                    entry.session.id().as_str().to_owned(),
                    lease_seconds(entry.timeout),
                )
            })
            .collect();
        if let Err(error) = cluster.shared.renew_leases(&leases) {
            tracing::error!(%error, "the leases of this node's sessions could not be renewed");
        }
    }

    fn forget(&self, id: &SessionId) {
        let forgotten = match (&self.cluster, &self.store) {
            (Some(cluster), _) => cluster.shared.forget_if_held(id.as_str(), &cluster.node),
            (None, Some(store)) => store.delete_session(id.as_str()),
            (None, None) => Ok(()),
        };
        if let Err(error) = forgotten {
            tracing::error!(session = %id.as_str(), %error, "an ended session could not be forgotten");
        }
    }

    /// Marks session `id` (of `timeout`) as this node's in the cluster,
    /// with a fresh lease.
    fn hold(&self, id: &SessionId, timeout: Duration) {
        if let Some(cluster) = &self.cluster {
            let held = cluster
                .shared
                .hold(id.as_str(), &cluster.node)
                .and_then(|()| {
                    cluster
                        .shared
                        .renew_leases(&[(id.as_str().to_owned(), lease_seconds(timeout))])
                });
            if let Err(error) = held {
                tracing::error!(session = %id.as_str(), %error, "a session could not be marked as this node's");
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
        let stored = match &self.cluster {
            Some(cluster) => cluster.shared.held_by(&cluster.node)?,
            None => store.load_sessions()?,
        };
        let mut restored = 0;
        for (record, frames) in stored {
            let Some(grants) = grants(&record.user) else {
                self.forget(&SessionId::from_string(&record.id));
                continue;
            };
            self.bring_back(bus, store, record, frames, grants, None, now);
            restored += 1;
        }
        Ok(restored)
    }

    /// Opens stored session `record` on `bus` with its pending `frames`,
    /// journaled from now on, and registers it: attached to `attachment`,
    /// or detached since `now`.
    #[allow(clippy::too_many_arguments)]
    fn bring_back(
        &self,
        bus: &Bus,
        store: &Arc<dyn SessionStore>,
        record: SessionRecord,
        frames: Vec<(u64, String)>,
        grants: Grants,
        attachment: Option<Attachment>,
        now: Instant,
    ) -> Session {
        let session =
            bus.open_session_with_id(SessionId::from_string(&record.id), &record.user, grants);
        session
            .outbox()
            .restore(frames.into_iter().map(|(seq, frame)| (seq, frame.into())));
        session
            .outbox()
            .set_journal(Arc::new(StoredOutbox::new(Arc::clone(store), &record.id)));
        if attachment.is_some() {
            session.outbox().set_journaling(false);
        }
        self.hold(session.id(), Duration::from_secs(record.timeout_secs));
        self.lock().insert(
            session.id().clone(),
            Entry {
                session: session.clone(),
                user: record.user,
                token_hash: record.token_hash,
                timeout: Duration::from_secs(record.timeout_secs),
                detached_since: attachment.is_none().then_some(now),
                attachment,
            },
        );
        session
    }

    /// Resumes, on this node, session `id` that no session here stands
    /// for but the cluster's store keeps (its node is gone, or let it go):
    /// the token is replaced for every node in one step, and the session
    /// comes back with the frames kept for it, attached to the caller.
    /// `grants` says what its user may send now (`None`: the user is gone).
    pub fn take_over(
        &self,
        id: &str,
        token: &str,
        bus: &Bus,
        grants: impl Fn(&str) -> Option<Grants>,
        now: Instant,
    ) -> Result<Attached, ResumeError> {
        let (Some(cluster), Some(store)) = (&self.cluster, &self.store) else {
            return Err(ResumeError::Unknown);
        };
        let fresh = new_token();
        let rotation = cluster
            .shared
            .rotate(id, &hash(token), &hash(&fresh), &cluster.node)
            .map_err(|error| {
                tracing::error!(session = %id, %error, "a session could not be taken over");
                ResumeError::Unknown
            })?;
        match rotation {
            Rotation::Rotated => {}
            Rotation::BadToken => return Err(ResumeError::BadToken),
            Rotation::Unknown => return Err(ResumeError::Unknown),
        }
        let (record, frames) = cluster
            .shared
            .load_session(id)
            .map_err(|error| {
                tracing::error!(session = %id, %error, "a session could not be taken over");
                ResumeError::Unknown
            })?
            .ok_or(ResumeError::Unknown)?;
        let Some(grants) = grants(&record.user) else {
            self.forget(&SessionId::from_string(id));
            return Err(ResumeError::Unknown);
        };
        let user = record.user.clone();
        let attachment = self.attachment();
        let session = self.bring_back(
            bus,
            store,
            record,
            frames,
            grants,
            Some(attachment.clone()),
            now,
        );
        Ok(Attached {
            session,
            user,
            token: fresh,
            attachment,
        })
    }

    /// Lets session `id` go to another node of the cluster that asked for
    /// it: what waits in its outbox is written to the store first, a
    /// socket holding it here is told it was taken over, and its threads
    /// here end. Returns whether it was here.
    pub fn release(&self, id: &str) -> bool {
        let Some(entry) = self.lock().remove(&SessionId::from_string(id)) else {
            return false;
        };
        entry.session.outbox().set_journaling(true);
        if let Some(attachment) = entry.attachment {
            attachment.taken_over.notify_one();
        }
        entry.session.end();
        true
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
        self.hold(session.id(), timeout);
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
        let token_presented = token;
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
        let token = new_token();
        if let Some(cluster) = &self.cluster {
            // Another node may have taken the session over meanwhile: the
            // shared store decides, in one step, whose token is current.
            let rotation = cluster
                .shared
                .rotate(id.as_str(), &hash(token_presented), &hash(&token), &cluster.node)
                .unwrap_or_else(|error| {
                    tracing::error!(session = %id.as_str(), %error, "a resume could not be checked with the cluster");
                    Rotation::Unknown
                });
            if rotation != Rotation::Rotated {
                if let Some(stale) = entries.remove(&id) {
                    if let Some(attachment) = stale.attachment {
                        attachment.taken_over.notify_one();
                    }
                    stale.session.end();
                }
                return Err(match rotation {
                    Rotation::BadToken => ResumeError::BadToken,
                    _ => ResumeError::Unknown,
                });
            }
        }
        if let Some(previous) = entry.attachment.take() {
            previous.taken_over.notify_one();
        }
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
