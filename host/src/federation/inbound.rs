//! The receiving side of a link: a connection that opened with a
//! `<federation-hello>`. Each message the peer sends is checked, then put
//! on a bus session of the link's own — allowed only the link's `accept`
//! tags, its sender named `PEER-FINGERPRINT/sender` — on the local thread
//! that stands for the peer's. What comes out of that session (answers,
//! refusals) goes back signed, on the peer's thread. The peer's owner's
//! revocations are taken too; once the key that authenticated the
//! connection is revoked, the connection closes.

use super::wire::{Frame, Greeting, Role};
use super::{now_ms, Federation, LiveLink, PeerKey, RevocationFeed};
use crate::bus::{Grants, Session, ThreadWorker};
use crate::xml::{ingest, CanonicalXml, Envelope, Limits};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Peer threads remembered per connection (the oldest are forgotten).
const MAX_THREADS: usize = 1_024;

/// The local thread that stands for one of the peer's.
#[derive(Debug, Clone)]
struct Mapped {
    peer_thread: String,
    /// The hops of the last message on it, for the answers' count.
    hops: u32,
}

#[derive(Debug, Default)]
struct Threads {
    by_peer: HashMap<String, String>,
    by_local: HashMap<String, Mapped>,
    order: VecDeque<String>,
}

/// An accepted federation connection.
pub struct Inbound {
    federation: Arc<Federation>,
    live: Arc<LiveLink>,
    peer_key: PeerKey,
    session: Session,
    welcome: String,
    threads: Mutex<Threads>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("peer", &self.live.peer)
            .finish_non_exhaustive()
    }
}

/// What became of one frame from the peer.
#[derive(Debug)]
pub enum Taken {
    /// On the bus; run or spawn the worker if there is one.
    Accepted(Option<ThreadWorker>),
    /// Refused by the bus: send this signed answer back.
    Answer(String),
    /// Dropped (and audited) for this reason.
    Dropped(String),
    /// Refused (and audited) for its tag: send this signed
    /// `<access-denied>` back on the sender's thread, and count it as a
    /// refused frame.
    Denied(String),
    /// The peer owner's revocations, taken; nothing to answer.
    Noted,
    /// The key that authenticated the connection is revoked (audited):
    /// close the connection.
    Revoked(String),
    /// The peer's certificate has run out: close the connection, so that
    /// the peer connects again with a renewed one.
    Close(String),
}

impl Federation {
    /// Checks the first frame of a connection, a `<federation-hello>`, and
    /// returns the connection's side of the link, or why not (audited).
    pub fn accept_hello(self: &Arc<Self>, frame: &str) -> Result<Inbound, String> {
        let result = self.accept_hello_inner(frame);
        if let Err((peer, reason)) = &result {
            // Audited when it names an organism this one links to; anyone
            // else's hellos are only logged, so that strangers cannot grow
            // the audit log by knocking.
            if self.link(peer).is_some() {
                self.audit_refusal(peer, &format!("hello refused: {reason}"));
            } else {
                tracing::info!(%peer, %reason, "federation hello from an organism with no link refused");
            }
        }
        result.map_err(|(_, reason)| reason)
    }

    fn accept_hello_inner(self: &Arc<Self>, frame: &str) -> Result<Inbound, (String, String)> {
        let read = Greeting::read(frame).map_err(|e| (String::new(), e.to_string()))?;
        let peer = read.greeting.origin.clone();
        let fail = |reason: String| (peer.clone(), reason);
        let live = self
            .link(&peer)
            .ok_or_else(|| fail("this organism has no link to the sender".into()))?;
        let peer_key = self
            .check_greeting(&read, Role::Hello, &live, None)
            .map_err(fail)?;
        let window = crate::privileged::CLOCK_SKEW.as_millis() as u64 * 2;
        if !self.first_sight(
            &format!("{peer}/hello/{}", read.greeting.nonce),
            now_ms() + window,
        ) {
            return Err(fail("the hello was already used".into()));
        }
        let (own, certificate) = self.credentials().map_err(fail)?;
        let welcome = Greeting {
            role: Role::Welcome,
            origin: own.fingerprint.clone(),
            destination: peer.clone(),
            key_id: own.node.key_id().to_owned(),
            nonce: read.greeting.nonce.clone(),
            time_ms: now_ms(),
        }
        .frame(own.node.signing_key(), &certificate, &live.link.record);
        let grants = Grants::Tags(
            live.link
                .request
                .accept
                .iter()
                .map(|t| crate::xml::Tag::new(t))
                .collect(),
        );
        let session = self
            .bus
            .open_session(&format!("link-{}", &peer[..16]), grants);
        tracing::info!(%peer, "federation link accepted");
        Ok(Inbound {
            federation: Arc::clone(self),
            live,
            peer_key,
            session,
            welcome,
            threads: Mutex::new(Threads::default()),
        })
    }
}

impl Inbound {
    /// The peer's fingerprint.
    pub fn peer(&self) -> &str {
        &self.live.peer
    }

    /// The signed welcome to send first.
    pub fn welcome(&self) -> &str {
        &self.welcome
    }

    /// The link's session, whose outbox holds what goes back.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Becomes true when the link is ended.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.live.closed()
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Threads> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The flood state shared by the link's inbound connections, made by
    /// `make` when first asked for.
    pub fn flood(
        &self,
        make: impl FnOnce() -> crate::server::FloodGuard,
    ) -> Arc<Mutex<crate::server::FloodGuard>> {
        self.live.inbound_flood(make)
    }

    /// A feed of this owner's revocations for the connection to push.
    pub fn revocation_feed(&self) -> RevocationFeed {
        self.federation.revocation_feed()
    }

    /// Why this node may no longer sign, if its own key is revoked.
    pub fn own_key_revoked(&self) -> Option<String> {
        self.federation.own_key_revoked()
    }

    /// Why the connection must close, if the peer's owner revoked the key
    /// that authenticated it (audited).
    pub fn revoked(&self) -> Option<String> {
        let reason = self
            .federation
            .peer_key_revoked(&self.live.peer, self.peer_key.key_id())?;
        self.federation.audit_refusal(
            &self.live.peer,
            &format!("{reason}; the connection it authenticated is closed"),
        );
        Some(reason)
    }

    /// Checks one frame from the peer and puts it on the bus.
    pub fn take(&self, frame: &[u8]) -> Taken {
        let peer = &self.live.peer;
        if let Some(reason) = self.revoked() {
            return Taken::Revoked(reason);
        }
        if !self.peer_key.is_current() {
            let reason = format!(
                "the peer's certificate {} no longer covers `federation`; closing so that it \
                 connects again with a renewed one",
                self.peer_key.certificate.id
            );
            self.federation.audit_refusal(peer, &reason);
            return Taken::Close(reason);
        }
        let read = match self.federation.read_frame(frame) {
            Ok(Frame::Message(message, signature, signed)) => (message, signature, signed),
            Ok(Frame::Revocations(records)) => {
                let taken = self.federation.take_revocations(
                    peer,
                    &self.live.link.request.peer_key,
                    records,
                );
                if let Some(reason) = self.revoked() {
                    return Taken::Revoked(reason);
                }
                return match taken {
                    Ok(_) => Taken::Noted,
                    Err(reason) => Taken::Dropped(reason),
                };
            }
            Err(reason) => {
                self.federation.audit_refusal(peer, &reason);
                return Taken::Dropped(reason);
            }
        };
        let message = match self.federation.check_message(peer, &self.peer_key, read) {
            Ok(message) => message,
            Err(reason) => {
                self.federation.audit_refusal(peer, &reason);
                return Taken::Dropped(reason);
            }
        };
        if !self.live.accepts(message.payload.tag()) {
            let tag = message.payload.tag().as_str().to_owned();
            let reason = format!("<{tag}> is not among the tags the link accepts");
            self.federation.audit_refusal(peer, &reason);
            // The sender's thread is told, as a user would be.
            let mut denied = String::from("<access-denied tag=\"");
            crate::xml::escape_attribute(&mut denied, &tag);
            denied.push_str("\"></access-denied>");
            let answer = crate::xml::canonicalize(denied.as_bytes(), &Limits::default(), &[])
                .map_err(|e| e.to_string())
                .and_then(|payload| {
                    self.federation
                        .sign(peer, &message.thread, "server", message.hops + 1, payload)
                });
            return match answer {
                Ok(answer) => {
                    self.live.counters.sent(answer.len());
                    Taken::Denied(answer)
                }
                Err(_) => Taken::Dropped(reason),
            };
        }
        let local = self.threads().by_peer.get(&message.thread).cloned();
        let from = format!("{peer}/{}", message.sender);
        match self
            .session
            .submit_remote(message.payload, &from, message.hops, local.as_deref())
        {
            Ok(submitted) => {
                let mut threads = self.threads();
                let local = submitted.thread.as_str().to_owned();
                if !threads.by_peer.contains_key(&message.thread) {
                    threads
                        .by_peer
                        .insert(message.thread.clone(), local.clone());
                    threads.order.push_back(message.thread.clone());
                    while threads.order.len() > MAX_THREADS {
                        if let Some(oldest) = threads.order.pop_front() {
                            if let Some(local) = threads.by_peer.remove(&oldest) {
                                threads.by_local.remove(&local);
                            }
                        }
                    }
                }
                threads.by_local.insert(
                    local,
                    Mapped {
                        peer_thread: message.thread,
                        hops: message.hops,
                    },
                );
                self.live.counters.received(frame.len());
                Taken::Accepted(submitted.worker)
            }
            Err(refusal) => {
                let payload = ingest(refusal.frame.as_bytes(), &Limits::default())
                    .ok()
                    .and_then(|mut ingested| ingested.payloads.pop());
                match payload.and_then(|payload| {
                    self.federation
                        .sign(peer, &message.thread, "server", message.hops + 1, payload)
                        .ok()
                }) {
                    Some(answer) => {
                        self.live.counters.sent(answer.len());
                        Taken::Answer(answer)
                    }
                    None => Taken::Dropped("a refusal could not be signed".into()),
                }
            }
        }
    }

    /// The signed answer for one frame of the link's outbox, or `None`
    /// for a frame that belongs to no peer thread.
    pub fn answer(&self, frame: &str) -> Option<String> {
        let payload = ingest(frame.as_bytes(), &Limits::default())
            .ok()?
            .payloads
            .pop()?;
        let (sender, local, payload): (String, String, CanonicalXml) =
            if payload.tag().as_str() == "message" {
                let envelope = Envelope::parse(&payload).ok()?;
                (
                    envelope.from.unwrap_or_else(|| "server".into()),
                    envelope.thread?,
                    envelope.payload,
                )
            } else {
                let thread = payload.root_attribute("thread")?;
                ("server".into(), thread, payload)
            };
        let mapped = self.threads().by_local.get(&local).cloned()?;
        let answer = self
            .federation
            .sign(
                &self.live.peer,
                &mapped.peer_thread,
                &sender,
                mapped.hops + 1,
                payload,
            )
            .ok()?;
        self.live.counters.sent(answer.len());
        Some(answer)
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        self.session.end();
    }
}
