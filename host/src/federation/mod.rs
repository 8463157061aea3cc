//! Federation: two organisms with two owners, linked so that chosen tags
//! flow between them and nothing else does.
//!
//! Neither owner's key goes online. Each server signs what it sends with
//! its node key ([`crate::commit::NodeKey`]), which its owner certified for
//! `federation` with a signed `node-certificate`; each owner signs a
//! `federation-link` naming the other organism by its owner key, the tags
//! that may go there (`send`) and the tags it takes from there (`accept`).
//!
//! - The **gateway** ([`gateway`]) is a listener like any other: it
//!   listens here to the link's `send` tags, signs each message it gets
//!   ([`wire::Federated`]) and carries it over its own WSS connection to
//!   the peer; the answers come back on that connection and go on the
//!   thread they belong to, from `PEER-FINGERPRINT/sender`.
//! - The **inbound side** ([`Inbound`]) is what a server does with a
//!   connection that opens with a `<federation-hello>`: it checks the
//!   peer's certificate, link and signature, puts each message it accepts
//!   on a session of its own (allowed only the `accept` tags), and signs
//!   the answers back.
//!
//! Both sides check every message: the signature with the peer's certified
//! node key (whose certificate must still be valid, and which its owner
//! must not have revoked), origin and destination, a time window of
//! [`CLOCK_SKEW`] either way, and an id used once. What is refused is
//! audited with the reason and dropped; the connection stays.
//!
//! Each side pushes its owner's node-key revocations ([`revocation`]) to
//! the other on every connection; a revoked key is refused from the moment
//! its revocation arrives, and the connections it authenticated close.

mod gateway;
mod inbound;
mod link;
mod revocation;
pub mod wire;

pub use inbound::{Inbound, Taken};
pub use link::{fingerprint, Link, LinkError, LinkRequest, PeerTls};
pub use revocation::{RevocationFeed, MAX_PEER_REVOCATIONS};

use crate::bus::{
    AgentName, AuditKind, AuditRecord, AuditSink, Bus, Listener, ListenerTarget, SessionId,
};
use crate::commit::{Certificate, NodeKey, Purpose};
use crate::privileged::{
    OrganismKey, SignedKind, SignedRecord, StructureStore, VerifyingKey, CLOCK_SKEW,
};
use crate::xml::{escape_attribute, Tag};
use gateway::Gateway;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use wire::{Federated, Frame, ReadGreeting, Role};

/// Message ids remembered per organism before old ones are pruned.
const SEEN_PRUNE_AT: usize = 65_536;

/// This organism as it speaks on links.
#[derive(Debug, Clone)]
struct Own {
    owner: VerifyingKey,
    fingerprint: String,
    node: NodeKey,
}

/// A link's traffic so far, both directions together.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    /// Messages and answers signed and sent to the peer.
    sent: AtomicU64,
    /// Messages and answers from the peer taken onto the bus.
    received: AtomicU64,
    /// Frames from the peer refused (and audited).
    refused: AtomicU64,
    /// Bytes of frames sent.
    bytes_sent: AtomicU64,
    /// Bytes of frames taken.
    bytes_received: AtomicU64,
}

impl LinkCounters {
    pub(crate) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// One link's figures for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMetrics {
    /// The peer's fingerprint.
    pub peer: String,
    /// Messages and answers sent.
    pub sent: u64,
    /// Messages and answers taken.
    pub received: u64,
    /// Frames refused.
    pub refused: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes taken.
    pub bytes_received: u64,
    /// Messages waiting for the connection.
    pub queued: u64,
    /// Threads waiting for answers over the link.
    pub threads: u64,
}

/// A link in force: what the owner signed, its traffic, and how to stop it.
#[derive(Debug)]
pub(crate) struct LiveLink {
    pub(crate) link: Link,
    pub(crate) peer: String,
    pub(crate) counters: Arc<LinkCounters>,
    listener: Option<AgentName>,
    gateway: Option<Arc<Gateway>>,
    closed: watch::Sender<bool>,
    /// The flood state the link's inbound connections share, so that a
    /// peer cannot multiply its allowance by opening more of them.
    inbound_flood: std::sync::OnceLock<Arc<Mutex<crate::server::FloodGuard>>>,
}

impl LiveLink {
    /// Becomes true when the link is ended.
    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// The flood state of the link's inbound connections, made by `make`
    /// when first asked for.
    pub(crate) fn inbound_flood(
        &self,
        make: impl FnOnce() -> crate::server::FloodGuard,
    ) -> Arc<Mutex<crate::server::FloodGuard>> {
        Arc::clone(
            self.inbound_flood
                .get_or_init(|| Arc::new(Mutex::new(make()))),
        )
    }

    /// Whether the link lets the peer start threads with `tag` here.
    pub(crate) fn accepts(&self, tag: &Tag) -> bool {
        self.link.request.accept.iter().any(|t| t == tag.as_str())
    }
}

/// The peer's node key as its certificate vouches for it.
#[derive(Debug, Clone)]
pub(crate) struct PeerKey {
    key: VerifyingKey,
    certificate: Certificate,
}

impl PeerKey {
    /// Whether the certificate shown at the handshake still lets the key
    /// speak on links; once it does not, the connection is dropped, so
    /// that the next handshake shows a renewed one.
    pub(crate) fn is_current(&self) -> bool {
        self.certificate
            .covers(now_ms() / 1_000, Purpose::Federation)
    }

    /// The key's id.
    pub(crate) fn key_id(&self) -> &str {
        &self.certificate.request.key_id
    }
}

/// The organism's links and what checks their traffic.
pub struct Federation {
    own: Option<Own>,
    bus: Bus,
    store: Arc<dyn StructureStore>,
    audit: Arc<dyn AuditSink>,
    links: Mutex<HashMap<String, Arc<LiveLink>>>,
    /// Message and hello ids seen, with when they may be forgotten (ms).
    seen: Mutex<HashMap<String, u64>>,
    /// Node keys revoked, this owner's and linked peers' owners'.
    revoked: Mutex<revocation::Revoked>,
    /// Bumped whenever a revocation is applied or learned.
    revocation_changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("own", &self.own.as_ref().map(|o| &o.fingerprint))
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Federation {
    /// The federation of an organism owned by `owner` (none: it can have
    /// no links), signing with `node`.
    pub fn new(
        owner: Option<&OrganismKey>,
        node: Option<NodeKey>,
        bus: Bus,
        store: Arc<dyn StructureStore>,
        audit: Arc<dyn AuditSink>,
    ) -> Arc<Federation> {
        let own = match (owner, node) {
            (Some(owner), Some(node)) => Some(Own {
                owner: *owner.verifying_key(),
                fingerprint: owner.fingerprint(),
                node,
            }),
            _ => None,
        };
        Arc::new(Federation {
            own,
            bus,
            store,
            audit,
            links: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            revoked: Mutex::new(revocation::Revoked::default()),
            revocation_changes: watch::channel(0).0,
        })
    }

    fn links(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveLink>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn own(&self) -> Result<&Own, String> {
        self.own
            .as_ref()
            .ok_or_else(|| "this organism has no identity, so it has no links".to_owned())
    }

    /// Loads the revocations and starts every link the store holds (after
    /// a restart).
    pub fn restore(self: &Arc<Self>) -> Result<usize, String> {
        let Ok(own) = self.own() else { return Ok(0) };
        self.load_own_revocations()?;
        let records = self
            .store
            .signed_records(SignedKind::FederationLink)
            .map_err(|e| e.to_string())?;
        let mut started = 0;
        for record in records {
            let link = Link::verify(&record, &own.owner).map_err(|e| e.to_string())?;
            self.start(link)?;
            started += 1;
        }
        Ok(started)
    }

    /// Applies a signed `federation-link`: keeps it and starts it (ending
    /// any earlier link to the same organism).
    pub fn apply_link(self: &Arc<Self>, record: SignedRecord) -> Result<(), String> {
        let own = self.own()?;
        let link = Link::verify(&record, &own.owner).map_err(|e| e.to_string())?;
        let peer = link.request.peer();
        if peer == own.fingerprint {
            return Err("an organism cannot link to itself".into());
        }
        self.check_tags_free(&link, &peer)?;
        self.store
            .save_signed(SignedKind::FederationLink, &peer, &record)
            .map_err(|e| e.to_string())?;
        self.start(link)
    }

    /// Applies a signed `federation-unlink`: forgets the link and stops its
    /// traffic at once, both ways.
    pub fn unlink(&self, peer: &str) -> Result<(), String> {
        let known = self.links().contains_key(peer);
        if !known {
            return Err(format!("there is no link to organism {peer}"));
        }
        self.store
            .forget_signed(SignedKind::FederationLink, peer)
            .map_err(|e| e.to_string())?;
        self.stop(peer);
        tracing::info!(%peer, "federation link ended");
        Ok(())
    }

    /// Refuses a link whose `send` tags another listener here holds.
    fn check_tags_free(&self, link: &Link, peer: &str) -> Result<(), String> {
        let replaced = self.links().get(peer).and_then(|l| l.listener.clone());
        let table = self.bus.table();
        for text in &link.request.send {
            let tag = Tag::new(text);
            if let Some(holder) = table
                .listeners(&tag)
                .iter()
                .find(|l| Some(&l.name) != replaced.as_ref())
            {
                return Err(format!(
                    "the tag `{text}` is already listened to by `{}`",
                    holder.name
                ));
            }
        }
        Ok(())
    }

    fn start(self: &Arc<Self>, link: Link) -> Result<(), String> {
        let peer = link.request.peer();
        self.stop(&peer);
        self.load_peer_revocations(&link)?;
        let (closed, _) = watch::channel(false);
        let counters = Arc::new(LinkCounters::default());
        let (listener, gateway) = if link.request.send.is_empty() {
            (None, None)
        } else {
            let name =
                AgentName::new(&format!("link-{}", &peer[..16])).map_err(|e| e.to_string())?;
            let gateway = Gateway::start(
                Arc::clone(self),
                link.clone(),
                Arc::clone(&counters),
                closed.subscribe(),
            );
            self.bus
                .register(Listener {
                    name: name.clone(),
                    listens: link.request.send.iter().map(|t| Tag::new(t)).collect(),
                    description: format!("Organism {} over a federation link.", &peer[..16]),
                    target: ListenerTarget::Remote(gateway.clone()),
                })
                .map_err(|e| e.to_string())?;
            (Some(name), Some(gateway))
        };
        tracing::info!(%peer, send = ?link.request.send, accept = ?link.request.accept, "federation link in force");
        self.links().insert(
            peer.clone(),
            Arc::new(LiveLink {
                link,
                peer,
                counters,
                listener,
                gateway,
                closed,
                inbound_flood: std::sync::OnceLock::new(),
            }),
        );
        Ok(())
    }

    fn stop(&self, peer: &str) {
        let Some(live) = self.links().remove(peer) else {
            return;
        };
        if let Some(name) = &live.listener {
            let _ = self.bus.remove(name);
        }
        live.closed.send_replace(true);
    }

    /// Each link's traffic, by peer.
    pub fn metrics(&self) -> Vec<LinkMetrics> {
        let mut all: Vec<LinkMetrics> = self
            .links()
            .values()
            .map(|live| {
                let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                let (queued, threads) = live
                    .gateway
                    .as_ref()
                    .map_or((0, 0), |gateway| gateway.backlog());
                LinkMetrics {
                    peer: live.peer.clone(),
                    sent: count(&live.counters.sent),
                    received: count(&live.counters.received),
                    refused: count(&live.counters.refused),
                    bytes_sent: count(&live.counters.bytes_sent),
                    bytes_received: count(&live.counters.bytes_received),
                    queued,
                    threads,
                }
            })
            .collect();
        all.sort_by(|a, b| a.peer.cmp(&b.peer));
        all
    }

    /// The link to `peer`, if it is in force.
    pub(crate) fn link(&self, peer: &str) -> Option<Arc<LiveLink>> {
        self.links().get(peer).cloned()
    }

    /// This node's key and the certificate that lets it speak for the
    /// organism on links now.
    fn credentials(&self) -> Result<(&Own, SignedRecord), String> {
        let own = self.own()?;
        if let Some(reason) = self.own_key_revoked() {
            return Err(format!("this node cannot sign: {reason}"));
        }
        let now = now_ms() / 1_000;
        let records = self.store.certificates().map_err(|e| e.to_string())?;
        records
            .into_iter()
            .filter_map(|record| {
                let certificate = Certificate::verify(&record, &own.owner).ok()?;
                (certificate.request.key_id == own.node.key_id()
                    && certificate.covers(now, Purpose::Federation))
                .then_some((certificate.request.not_after, record))
            })
            .max_by_key(|(until, _)| *until)
            .map(|(_, record)| (own, record))
            .ok_or_else(|| {
                format!(
                    "no node certificate lets this node's key ({}) sign for `federation` now; \
                     sign one with `agentserver command node-certificate --purpose audit,federation`",
                    own.node.key_id()
                )
            })
    }

    /// Checks a greeting from `link`'s peer: its time, names, certificate,
    /// signature and the peer owner's own link naming this organism.
    fn check_greeting(
        &self,
        read: &ReadGreeting,
        role: Role,
        live: &LiveLink,
        nonce: Option<&str>,
    ) -> Result<PeerKey, String> {
        let own = self.own()?;
        let greeting = &read.greeting;
        let peer_owner = &live.link.request.peer_key;
        if greeting.role != role {
            return Err("the handshake is out of order".into());
        }
        if greeting.origin != live.peer || greeting.destination != own.fingerprint {
            return Err("the handshake names other organisms".into());
        }
        let now = now_ms();
        if greeting.time_ms.abs_diff(now) > CLOCK_SKEW.as_millis() as u64 {
            return Err("the handshake's time is outside the allowed window".into());
        }
        if nonce.is_some_and(|nonce| nonce != greeting.nonce) {
            return Err("the welcome answers another hello".into());
        }
        let certificate = Certificate::verify(&read.certificate, peer_owner)
            .map_err(|e| format!("the peer's certificate: {e}"))?;
        if certificate.request.key_id != greeting.key_id {
            return Err("the handshake is signed by a key its certificate does not name".into());
        }
        if let Some(reason) = self.peer_key_revoked(&live.peer, &greeting.key_id) {
            return Err(reason);
        }
        if !certificate.covers(now / 1_000, Purpose::Federation) {
            return Err(format!(
                "the peer's certificate {} does not cover `federation` now",
                certificate.id
            ));
        }
        let key = certificate.request.public_key;
        if !wire::signed_by(&key, greeting.statement().as_bytes(), &read.signature) {
            return Err("the handshake's signature does not verify".into());
        }
        let their_link =
            Link::verify(&read.link, peer_owner).map_err(|e| format!("the peer's link: {e}"))?;
        if their_link.request.peer() != own.fingerprint {
            return Err("the peer's owner has not linked to this organism".into());
        }
        Ok(PeerKey { key, certificate })
    }

    /// Reads one frame from a peer after the handshake: a message or
    /// revocations, nothing checked yet.
    fn read_frame(&self, frame: &[u8]) -> Result<Frame, String> {
        let limits = crate::xml::Limits {
            max_input_bytes: self.bus.config().xml.max_input_bytes + 4_096,
            ..self.bus.config().xml
        };
        Frame::read(frame, &limits).map_err(|e| e.to_string())
    }

    /// Checks one message from `peer` (key `peer_key`): signature, key not
    /// revoked, certificate still valid, names, time and a fresh id.
    fn check_message(
        &self,
        peer: &str,
        peer_key: &PeerKey,
        (message, signature, signed): (Box<Federated>, ed25519_dalek::Signature, String),
    ) -> Result<Federated, String> {
        let own = self.own()?;
        let message = *message;
        if message.key_id != peer_key.certificate.request.key_id
            || !wire::signed_by(&peer_key.key, signed.as_bytes(), &signature)
        {
            return Err("the signature does not verify with the peer's certified key".into());
        }
        if let Some(reason) = self.peer_key_revoked(peer, peer_key.key_id()) {
            return Err(reason);
        }
        let now = now_ms();
        if !peer_key
            .certificate
            .covers(now / 1_000, Purpose::Federation)
        {
            return Err(format!(
                "the peer's certificate {} no longer covers `federation`",
                peer_key.certificate.id
            ));
        }
        if message.origin != peer || message.destination != own.fingerprint {
            return Err(format!(
                "addressed from {} to {}, not over this link",
                message.origin, message.destination
            ));
        }
        let window = CLOCK_SKEW.as_millis() as u64;
        if message.time_ms.abs_diff(now) > window {
            return Err("its time is outside the allowed window".into());
        }
        if !self.first_sight(&format!("{peer}/{}", message.id), now + 2 * window) {
            return Err(format!("message {} was already received", message.id));
        }
        Ok(message)
    }

    /// Records `id` until `until` (ms); false when it was seen before.
    fn first_sight(&self, id: &str, until: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= SEEN_PRUNE_AT {
            let now = now_ms();
            seen.retain(|_, expires| *expires > now);
        }
        seen.insert(id.to_owned(), until).is_none()
    }

    /// A signed message from this organism to `peer`.
    fn sign(
        &self,
        peer: &str,
        thread: &str,
        sender: &str,
        hops: u32,
        payload: crate::xml::CanonicalXml,
    ) -> Result<String, String> {
        let own = self.own()?;
        if let Some(reason) = self.own_key_revoked() {
            return Err(format!("this node cannot sign: {reason}"));
        }
        Federated {
            origin: own.fingerprint.clone(),
            destination: peer.to_owned(),
            key_id: own.node.key_id().to_owned(),
            id: SessionId::new().as_str().to_owned(),
            time_ms: now_ms(),
            thread: thread.to_owned(),
            sender: sender.to_owned(),
            hops,
            payload,
        }
        .frame(own.node.signing_key())
        .map_err(|e| e.to_string())
    }

    /// Audits a refusal at a gateway: who, and why.
    fn audit_refusal(&self, peer: &str, reason: &str) {
        tracing::info!(%peer, %reason, "federation: refused");
        if let Some(live) = self.link(peer) {
            live.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        let mut canonical = String::from("<federation-refused peer=\"");
        escape_attribute(&mut canonical, peer);
        canonical.push_str("\" reason=\"");
        escape_attribute(&mut canonical, reason);
        canonical.push_str("\"></federation-refused>");
        self.audit.record(AuditRecord {
            kind: AuditKind::Refusal,
            thread: None,
            session: &SessionId::from_string(""),
            from: "server",
            tag: "federation-refused",
            depth: 0,
            canonical: &canonical,
        });
    }
}
