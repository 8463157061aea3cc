//! The gateway: this organism's side of a link that sends. It listens here
//! to the link's `send` tags, and keeps one WSS connection to the peer,
//! over which it signs and sends each message and receives the answers.
//! That connection takes only the TLS certificate the link pins
//! ([`super::PeerTls`]): the one with its fingerprint, or one its CA issued
//! for the address's host, checked against that CA alone.
//!
//! The connection is made when the link comes into force and made again
//! (after 1 s, doubling to 30 s) whenever it drops. A message waits for
//! the connection at most [`QUEUE_WAIT`]; past it, or when
//! [`QUEUE_CAPACITY`] messages already wait (queued or held while the link
//! is down), its thread gets `agent-failed` with the reason. Answers are
//! taken only for threads that sent over this link (the newest
//! [`MAX_THREADS`] of them). Right after the handshake, and whenever the
//! owner revokes a node key, the connection carries this owner's
//! revocations to the peer; the peer's come back on it too, and once the
//! peer's key is revoked the connection closes.

use super::wire::{Frame, Greeting, Role};
use super::{now_ms, Federation, Link, LinkCounters, PeerKey, RevocationFeed};
use crate::bus::{RemoteDelivery, RemoteTarget, ThreadHandle};
use crate::client::{Client, Received};
use crate::xml::Tag;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Messages queued for the peer at most.
pub const QUEUE_CAPACITY: usize = 256;
/// How long a message waits for a connection.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Threads whose answers the gateway keeps waiting for, per link.
pub const MAX_THREADS: usize = 1_024;
/// How long the peer has to answer the hello.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Threads that sent over the link, newest last.
#[derive(Default)]
struct Waiting {
    threads: HashMap<String, ThreadHandle>,
    order: VecDeque<String>,
}

/// The listener side of a sending link.
pub(crate) struct Gateway {
    peer: String,
    queue: mpsc::Sender<(Instant, RemoteDelivery)>,
    waiting: Mutex<Waiting>,
    counters: Arc<LinkCounters>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway for `link`, with its connection task running until
    /// `closed` turns true.
    pub(crate) fn start(
        federation: Arc<Federation>,
        link: Link,
        counters: Arc<LinkCounters>,
        closed: watch::Receiver<bool>,
    ) -> Arc<Gateway> {
        let (queue, outgoing) = mpsc::channel(QUEUE_CAPACITY);
        let gateway = Arc::new(Gateway {
            peer: link.request.peer(),
            queue,
            waiting: Mutex::new(Waiting::default()),
            counters,
        });
        tokio::spawn(run(
            federation,
            link,
            Arc::clone(&gateway),
            outgoing,
            closed,
        ));
        gateway
    }

    /// Messages queued for the connection (not those it holds while
    /// down) and threads waiting for answers.
    pub(crate) fn backlog(&self) -> (u64, u64) {
        let queued = QUEUE_CAPACITY - self.queue.capacity();
        (queued as u64, self.waiting().threads.len() as u64)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, thread: &ThreadHandle) {
        let mut waiting = self.waiting();
        let id = thread.id().as_str().to_owned();
        if waiting.threads.insert(id.clone(), thread.clone()).is_none() {
            waiting.order.push_back(id);
            while waiting.order.len() > MAX_THREADS {
                if let Some(oldest) = waiting.order.pop_front() {
                    waiting.threads.remove(&oldest);
                }
            }
        }
    }

    fn thread(&self, id: &str) -> Option<ThreadHandle> {
        let mut waiting = self.waiting();
        match waiting.threads.get(id) {
            Some(thread) if thread.is_ended() => {
                waiting.threads.remove(id);
                None
            }
            found => found.cloned(),
        }
    }
}

impl RemoteTarget for Gateway {
    fn forward(&self, delivery: RemoteDelivery) -> Result<(), String> {
        self.remember(&delivery.thread);
        self.queue
            .try_send((Instant::now(), delivery))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => format!(
                    "the link to organism {} has {QUEUE_CAPACITY} messages waiting",
                    &self.peer[..16]
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    format!("the link to organism {} has ended", &self.peer[..16])
                }
            })
    }
}

/// Keeps the connection to the peer and carries messages both ways until
/// the link ends. While there is no connection, messages are held, and
/// each fails once it has waited [`QUEUE_WAIT`].
async fn run(
    federation: Arc<Federation>,
    link: Link,
    gateway: Arc<Gateway>,
    mut outgoing: mpsc::Receiver<(Instant, RemoteDelivery)>,
    mut closed: watch::Receiver<bool>,
) {
    let peer = gateway.peer.clone();
    let agent = format!("link-{}", &peer[..16]);
    let mut held: VecDeque<(Instant, RemoteDelivery)> = VecDeque::new();
    let mut backoff = Duration::from_secs(1);
    let mut next_attempt = Instant::now();
    let mut down_because: Option<String> = None;
    while !*closed.borrow() {
        if Instant::now() >= next_attempt {
            match connect(&federation, &link).await {
                Ok((client, peer_key)) => {
                    tracing::info!(%peer, "federation link connected");
                    down_because = None;
                    backoff = Duration::from_secs(1);
                    let connection = Connection {
                        federation: &federation,
                        link: &link,
                        gateway: &gateway,
                        peer_key: &peer_key,
                    };
                    connection
                        .carry(client, &mut held, &mut outgoing, &mut closed)
                        .await;
                    next_attempt = Instant::now() + backoff;
                    continue;
                }
                Err(reason) => {
                    if down_because.is_none() {
                        tracing::warn!(%peer, %reason, "federation link cannot connect; retrying");
                    }
                    down_because = Some(reason);
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        // Held messages count against the queue: past it, the channel
        // fills and new ones are refused at once.
        while held.len() < QUEUE_CAPACITY {
            let Ok(item) = outgoing.try_recv() else { break };
            held.push_back(item);
        }
        let reason = down_because.as_deref().unwrap_or("not connected yet");
        while held
            .front()
            .is_some_and(|(queued, _)| queued.elapsed() >= QUEUE_WAIT)
        {
            if let Some((_, delivery)) = held.pop_front() {
                delivery.thread.fail(
                    &agent,
                    &format!("the link to organism {} is down: {reason}", &peer[..16]),
                );
            }
        }
        let wake = held.front().map_or(next_attempt, |(queued, _)| {
            (*queued + QUEUE_WAIT).min(next_attempt)
        });
        let room = held.len() < QUEUE_CAPACITY;
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            item = outgoing.recv(), if room => held.extend(item),
            _ = closed.changed() => {}
        }
    }
    // The link ended: whatever still waits fails.
    outgoing.close();
    while let Ok(item) = outgoing.try_recv() {
        held.push_back(item);
    }
    for (_, delivery) in held {
        delivery.thread.fail(
            &agent,
            &format!("the link to organism {} has ended", &peer[..16]),
        );
    }
}

/// Connects to the peer and completes the handshake.
async fn connect(federation: &Federation, link: &Link) -> Result<(Client, PeerKey), String> {
    let (own, certificate) = federation.credentials()?;
    let trust = link.request.tls.trust();
    let mut client = Client::connect(&link.request.address, &trust)
        .await
        .map_err(|e| e.to_string())?;
    let nonce = crate::bus::SessionId::new().as_str().to_owned();
    let hello = Greeting {
        role: Role::Hello,
        origin: own.fingerprint.clone(),
        destination: link.request.peer(),
        key_id: own.node.key_id().to_owned(),
        nonce: nonce.clone(),
        time_ms: now_ms(),
    };
    client
        .send(&hello.frame(own.node.signing_key(), &certificate, &link.record))
        .await
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(HANDSHAKE_WAIT, client.receive())
        .await
        .map_err(|_| "the peer did not answer the hello".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = match answer {
        Received::Text(text) => text,
        Received::Closed(code, reason) => {
            return Err(format!("the peer refused the hello: {code} {reason}"))
        }
    };
    let read = Greeting::read(&text).map_err(|e| format!("the welcome: {e}"))?;
    let live = federation
        .link(&link.request.peer())
        .ok_or_else(|| "the link has ended".to_owned())?;
    let peer_key = federation.check_greeting(&read, Role::Welcome, &live, Some(&nonce))?;
    Ok((client, peer_key))
}

/// One connection to the peer, after the handshake.
struct Connection<'a> {
    federation: &'a Arc<Federation>,
    link: &'a Link,
    gateway: &'a Gateway,
    peer_key: &'a PeerKey,
}

impl Connection<'_> {
    /// Sends what is held and what comes, and takes answers, until the
    /// connection drops or the link ends.
    async fn carry(
        &self,
        mut client: Client,
        held: &mut VecDeque<(Instant, RemoteDelivery)>,
        outgoing: &mut mpsc::Receiver<(Instant, RemoteDelivery)>,
        closed: &mut watch::Receiver<bool>,
    ) {
        let peer = &self.gateway.peer;
        let mut feed = self.federation.revocation_feed();
        if !self.push_revocations(&mut client, &mut feed).await {
            return;
        }
        while let Some((_, delivery)) = held.pop_front() {
            if !self.send(&mut client, delivery).await {
                return;
            }
        }
        loop {
            tokio::select! {
                next = outgoing.recv() => {
                    let Some(item) = next else { return };
                    if !self.peer_key.is_current() {
                        // Connect again: the next handshake shows the
                        // peer's renewed certificate, if there is one.
                        held.push_front(item);
                        let _ = client.close().await;
                        return;
                    }
                    if !self.send(&mut client, item.1).await {
                        return;
                    }
                }
                received = client.receive() => {
                    match received {
                        Ok(Received::Text(text)) => {
                            if !answer(self.federation, self.link, self.gateway, self.peer_key, text.as_bytes()) {
                                let _ = client.close().await;
                                return;
                            }
                        }
                        Ok(Received::Closed(code, reason)) => {
                            tracing::warn!(%peer, code, %reason, "federation link closed by the peer");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(%peer, %error, "federation link dropped");
                            return;
                        }
                    }
                }
                () = feed.changed() => {
                    if !self.push_revocations(&mut client, &mut feed).await {
                        return;
                    }
                    if let Some(reason) = self.federation.peer_key_revoked(peer, self.peer_key.key_id()) {
                        self.federation.audit_refusal(peer, &format!("{reason}; the connection it authenticated is closed"));
                        let _ = client.close().await;
                        return;
                    }
                }
                _ = closed.changed() => {
                    let _ = client.close().await;
                    return;
                }
            }
        }
    }

    /// Sends this owner's revocations the peer has not had on this
    /// connection; false (the connection closed) when sending failed or
    /// this node's own key is revoked, which ends what it may sign.
    async fn push_revocations(&self, client: &mut Client, feed: &mut RevocationFeed) -> bool {
        if let Some(frame) = feed.pending() {
            if client.send(&frame).await.is_err() {
                return false;
            }
        }
        if let Some(reason) = self.federation.own_key_revoked() {
            tracing::warn!(peer = %self.gateway.peer, %reason, "federation link closed: this node's key is revoked");
            let _ = client.close().await;
            return false;
        }
        true
    }

    /// Signs and sends one message; false when the connection dropped (the
    /// message's thread is told).
    async fn send(&self, client: &mut Client, delivery: RemoteDelivery) -> bool {
        let peer = &self.gateway.peer;
        let agent = format!("link-{}", &peer[..16]);
        let frame = self.federation.sign(
            peer,
            delivery.thread.id().as_str(),
            &delivery.sender,
            delivery.depth,
            delivery.payload.clone(),
        );
        match frame {
            Ok(frame) => match client.send(&frame).await {
                Ok(()) => {
                    self.gateway.counters.sent(frame.len());
                    true
                }
                Err(error) => {
                    delivery.thread.fail(
                        &agent,
                        &format!("the link to organism {} dropped: {error}", &peer[..16]),
                    );
                    false
                }
            },
            Err(reason) => {
                delivery.thread.fail(&agent, &reason);
                true
            }
        }
    }
}

/// Takes one frame from the peer: an answer onto the thread it belongs
/// to, or the peer owner's revocations. False when the connection must
/// close: the peer's key is revoked.
fn answer(
    federation: &Federation,
    link: &Link,
    gateway: &Gateway,
    peer_key: &PeerKey,
    frame: &[u8],
) -> bool {
    let peer = &gateway.peer;
    let read = match federation.read_frame(frame) {
        Ok(Frame::Message(message, signature, signed)) => (message, signature, signed),
        Ok(Frame::Revocations(records)) => {
            // Refusals are audited one by one; the connection stays.
            let _ = federation.take_revocations(peer, &link.request.peer_key, records);
            return match federation.peer_key_revoked(peer, peer_key.key_id()) {
                Some(reason) => {
                    federation.audit_refusal(
                        peer,
                        &format!("{reason}; the connection it authenticated is closed"),
                    );
                    false
                }
                None => true,
            };
        }
        Err(reason) => {
            federation.audit_refusal(peer, &reason);
            return true;
        }
    };
    let message = match federation.check_message(peer, peer_key, read) {
        Ok(message) => message,
        Err(reason) => {
            federation.audit_refusal(peer, &reason);
            return true;
        }
    };
    let Some(thread) = gateway.thread(&message.thread) else {
        federation.audit_refusal(
            peer,
            &format!(
                "an answer on thread {}, which sent nothing over this link",
                message.thread
            ),
        );
        return true;
    };
    let tag: &Tag = message.payload.tag();
    let listened = !federation.bus.table().listeners(tag).is_empty();
    if listened && !link.request.accept.iter().any(|t| t == tag.as_str()) {
        federation.audit_refusal(
            peer,
            &format!("an answer <{tag}> that agents here listen to, outside the link's `accept`"),
        );
        return true;
    }
    let from = format!("{peer}/{}", message.sender);
    gateway.counters.received(frame.len());
    thread.answer(&from, message.payload, message.hops);
    true
}
