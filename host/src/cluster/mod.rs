//! Several nodes serving one organism, over NATS.
//!
//! Every node announces on `agentserver.nodes`, once a second and whenever
//! its agents change, the tags its own agents serve; every node's routing
//! table is the union. A tag served here is served here. A tag served only
//! elsewhere gets a listener of the [remote](crate::bus::RemoteTarget) kind,
//! named after the agent that serves it: a message for it is published, as
//! its canonical payload with its sender, depth and thread
//! ([`wire::Carried`]), on `agentserver.tag.HEX` (the tag in hex), where
//! the nodes that serve the tag listen in one NATS queue group, so one of
//! them takes it and says so in its reply. That node runs it on a session
//! of its own for the origin node; what comes out goes back on
//! `agentserver.answer.NODE` and onto the thread it belongs to, with the
//! sender named as on one node.
//!
//! A node not heard from for [`NODE_TIMEOUT`] (or that said it is leaving)
//! is dropped from every table, and the threads waiting on it get
//! `agent-failed` ("node lost"). NATS delivers at most once: a message in
//! flight when its node dies is lost, never delivered twice; the thread is
//! told. A node that loses NATS keeps serving its own agents and rejoins by
//! itself (the client reconnects).

pub mod wire;

use crate::bus::{
    AgentName, Bus, Grants, Listener, ListenerTarget, RemoteDelivery, RemoteTarget, Session,
    ThreadHandle,
};
use crate::privileged::{Privileged, StructureChange};
use crate::session::SessionRegistry;
use crate::xml::Tag;
use futures::StreamExt as _;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use wire::{Announce, Carried};

/// How often a node announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from this long is dropped.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a node that serves a tag has to take a message.
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Threads remembered for answers from other nodes before idle ones are
/// forgotten.
pub const MAX_WAITING: usize = 65_536;
/// Threads of one origin node remembered here; past it they are forgotten
/// together.
pub const MAX_ORIGIN_THREADS: usize = 16_384;
/// How long a node stopping tries to tell the others.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node waits for the others to let a session go.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// The queue group of the nodes serving a tag.
const QUEUE_GROUP: &str = "agentserver";

/// `[cluster]` in `organism.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `nats://host:port` (or `tls://host:port`) of the NATS server.
    pub nats_url: String,
    /// This node's name, unique in the organism.
    pub node: String,
    /// How the node proves itself to NATS.
    pub auth: NatsAuth,
    /// TLS to NATS beyond the system's roots.
    pub tls: NatsTls,
}

/// How a node authenticates to NATS. Secrets are read from files, so that
/// `organism.toml` holds none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// Not at all.
    #[default]
    None,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes them.
    Credentials(PathBuf),
    /// A token, read from the file.
    Token(PathBuf),
    /// A user name, and a password read from the file.
    UserPassword {
        /// The user.
        user: String,
        /// The file holding the password.
        password: PathBuf,
    },
}

/// TLS to NATS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatsTls {
    /// Roots (PEM) to trust for the NATS server's certificate; TLS is
    /// required when set (as with a `tls://` URL).
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for servers that verify clients.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// A secret from a file, without the surrounding whitespace.
fn read_secret(path: &std::path::Path) -> Result<String, ClusterError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|e| ClusterError::Nats(format!("{}: {e}", path.display())))
}

/// The NATS connection options `config` asks for.
async fn connect_options(
    config: &ClusterConfig,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("agentserver {}", config.node))
        .retry_on_initial_connect();
    options = match &config.auth {
        NatsAuth::None => options,
        NatsAuth::Credentials(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| ClusterError::Nats(format!("{}: {e}", path.display())))?,
        NatsAuth::Token(path) => options.token(read_secret(path)?),
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), read_secret(password)?)
        }
    };
    if let Some(ca) = &config.tls.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &config.tls.client_certificate {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// Why the cluster could not be joined.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// NATS refused or failed.
    #[error("nats: {0}")]
    Nats(String),
}

fn subject_of(tag: &Tag) -> String {
    format!("agentserver.tag.{}", hex::encode(tag.as_str()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Another node as last heard.
#[derive(Debug, Clone)]
struct Peer {
    serves: wire::Serves,
    seen: Instant,
}

/// What the cluster keeps.
#[derive(Default)]
struct Shared {
    peers: BTreeMap<String, Peer>,
    /// Remote listeners this node installed: agent name to its tags.
    installed: BTreeMap<String, Vec<String>>,
    /// Tags served here, each with its subscription task.
    served: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Threads sent to another node, by id.
    waiting: HashMap<String, Waiting>,
    /// The session standing for each origin node here, with its threads.
    origins: HashMap<String, Arc<Origin>>,
}

/// A thread that sent messages to another node.
struct Waiting {
    thread: ThreadHandle,
    /// The node that took the latest of them.
    node: Option<String>,
    /// Messages of the thread that node said it took.
    taken: u64,
    /// Of those, how many it has said it ran.
    done: u64,
}

impl Waiting {
    /// Whether a call of the thread may be running on `node`.
    fn busy_on(&self, node: &str) -> bool {
        self.node.as_deref() == Some(node) && self.taken > self.done
    }
}

/// The session that runs another node's messages here.
struct Origin {
    session: Session,
    threads: Mutex<OriginThreads>,
}

/// How the origin node's threads map onto the session's here.
#[derive(Default)]
struct OriginThreads {
    /// Local thread to (origin thread, depth).
    by_local: HashMap<String, (String, u32)>,
    /// Origin thread to local thread.
    by_origin: HashMap<String, String>,
    /// Messages taken per origin thread.
    taken: HashMap<String, u64>,
}

/// This node's membership in the organism's cluster.
pub struct Cluster {
    node: String,
    client: async_nats::Client,
    bus: Bus,
    privileged: Arc<Privileged>,
    sessions: Arc<SessionRegistry>,
    shared: Mutex<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A remote listener: an agent served by other nodes.
#[derive(Debug)]
struct Elsewhere {
    cluster: Weak<Cluster>,
}

impl RemoteTarget for Elsewhere {
    fn forward(&self, delivery: RemoteDelivery) -> Result<(), String> {
        let cluster = self
            .cluster
            .upgrade()
            .ok_or_else(|| "the node is leaving the cluster".to_owned())?;
        cluster.send(delivery);
        Ok(())
    }

    fn is_same_organism(&self) -> bool {
        true
    }
}

impl Cluster {
    /// Joins the cluster: connects to NATS (retrying in the background
    /// when it is not there yet), announces this node, and keeps the
    /// routing table in step with the other nodes until the process ends.
    pub async fn join(
        config: &ClusterConfig,
        bus: Bus,
        privileged: Arc<Privileged>,
        sessions: Arc<SessionRegistry>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client = connect_options(config)
            .await?
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let cluster = Arc::new(Cluster {
            node: config.node.clone(),
            client,
            bus,
            privileged,
            sessions,
            shared: Mutex::new(Shared::default()),
        });
        let nodes = cluster
            .client
            .subscribe("agentserver.nodes")
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let answers = cluster
            .client
            .subscribe(format!("agentserver.answer.{}", config.node))
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let structure = cluster
            .client
            .subscribe("agentserver.structure.>")
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        tokio::spawn(follow_structure(Arc::downgrade(&cluster), structure));
        let releases = cluster
            .client
            .subscribe(format!("agentserver.session.release.{}", config.node))
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        tokio::spawn(release_sessions(Arc::downgrade(&cluster), releases));
        tokio::spawn(share_structure(
            Arc::downgrade(&cluster),
            cluster.privileged.structure_changes(),
        ));
        tokio::spawn(listen_to_nodes(Arc::downgrade(&cluster), nodes));
        tokio::spawn(take_answers(Arc::downgrade(&cluster), answers));
        tokio::spawn(heartbeat(Arc::downgrade(&cluster)));
        cluster.serve_local_tags().await;
        cluster.announce(false).await;
        tracing::info!(node = %config.node, nats = %config.nats_url, "joined the cluster");
        Ok(cluster)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What this node's own agents serve.
    fn local_serves(&self) -> wire::Serves {
        let table = self.bus.table();
        let mut serves = Vec::new();
        for listener in table.agents() {
            if listener.target.local().is_some() {
                for tag in &listener.listens {
                    serves.push((
                        listener.name.to_string(),
                        tag.as_str().to_owned(),
                        listener.description.clone(),
                    ));
                }
            }
        }
        serves
    }

    async fn announce(&self, leaving: bool) {
        let announce = Announce {
            node: self.node.clone(),
            leaving,
            serves: if leaving {
                Vec::new()
            } else {
                self.local_serves()
            },
        };
        let _ = self
            .client
            .publish("agentserver.nodes", announce.to_xml(now_ms()).into())
            .await;
    }

    /// Asks every other live node to let session `id` go if it holds it
    /// (see [`SessionRegistry::release`]), and waits for their answers, at
    /// most [`RELEASE_TIMEOUT`]. A node that is gone cannot answer, and
    /// need not.
    pub async fn release_elsewhere(&self, id: &str) {
        let peers: Vec<String> = self.shared().peers.keys().cloned().collect();
        let asks = peers.into_iter().map(|node| {
            let client = self.client.clone();
            let id = id.to_owned();
            async move {
                let subject = format!("agentserver.session.release.{node}");
                let _ =
                    tokio::time::timeout(RELEASE_TIMEOUT, client.request(subject, id.into())).await;
            }
        });
        futures::future::join_all(asks).await;
    }

    /// Says this node is leaving, so that the others drop it at once.
    /// Waits at most [`LEAVE_TIMEOUT`]: with NATS unreachable the others
    /// drop this node by its missed heartbeats instead.
    pub async fn leave(&self) {
        let said = tokio::time::timeout(LEAVE_TIMEOUT, async {
            self.announce(true).await;
            let _ = self.client.flush().await;
        })
        .await;
        if said.is_err() {
            tracing::warn!("could not tell the cluster this node is leaving: NATS is unreachable");
        }
    }

    /// Subscribes to the tags served here (and drops the subscriptions of
    /// tags no longer served), each in the tag's queue group.
    async fn serve_local_tags(self: &Arc<Self>) {
        let wanted: Vec<String> = self
            .local_serves()
            .into_iter()
            .map(|(_, tag, _)| tag)
            .collect();
        let new: Vec<String> = {
            let mut shared = self.shared();
            shared.served.retain(|tag, task| {
                let keep = wanted.contains(tag);
                if !keep {
                    task.abort();
                }
                keep
            });
            wanted
                .into_iter()
                .filter(|tag| !shared.served.contains_key(tag))
                .collect()
        };
        for tag in new {
            let subject = subject_of(&Tag::new(&tag));
            match self
                .client
                .queue_subscribe(subject, QUEUE_GROUP.to_owned())
                .await
            {
                Ok(subscriber) => {
                    let task = tokio::spawn(take_messages(Arc::downgrade(self), subscriber));
                    self.shared().served.insert(tag, task);
                }
                Err(error) => tracing::warn!(%tag, %error, "cannot serve a tag to the cluster"),
            }
        }
    }

    /// Brings the remote listeners in line with what the live peers serve
    /// and this node does not.
    fn install_remote_listeners(self: &Arc<Self>) {
        let table = self.bus.table();
        let served_here = |tag: &str| {
            table
                .listeners(&Tag::new(tag))
                .iter()
                .any(|l| l.target.local().is_some())
        };
        let mut wanted: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
        let mut shared = self.shared();
        for peer in shared.peers.values() {
            for (agent, tag, description) in &peer.serves {
                if served_here(tag) {
                    continue;
                }
                let entry = wanted
                    .entry(agent.clone())
                    .or_insert_with(|| (Vec::new(), description.clone()));
                if !entry.0.contains(tag) {
                    entry.0.push(tag.clone());
                    entry.0.sort();
                }
            }
        }
        let installed = std::mem::take(&mut shared.installed);
        for (agent, tags) in &installed {
            if wanted.get(agent).map(|(t, _)| t) != Some(tags) {
                if let Ok(name) = AgentName::new(agent) {
                    // Only the listener standing for the remote agent: an
                    // agent of the same name may have started here since.
                    let remote = table
                        .agent(&name)
                        .is_some_and(|listener| listener.target.local().is_none());
                    if remote {
                        let _ = self.bus.remove(&name);
                    }
                }
            }
        }
        for (agent, (tags, description)) in wanted {
            if installed.get(&agent) == Some(&tags) {
                shared.installed.insert(agent, tags);
                continue;
            }
            let Ok(name) = AgentName::new(&agent) else {
                continue;
            };
            let listener = Listener {
                name,
                listens: tags.iter().map(|t| Tag::new(t)).collect(),
                description,
                target: ListenerTarget::Remote(Arc::new(Elsewhere {
                    cluster: Arc::downgrade(self),
                })),
            };
            match self.bus.register(listener) {
                Ok(()) => {
                    shared.installed.insert(agent, tags);
                }
                Err(error) => {
                    tracing::warn!(%agent, %error, "an agent of another node cannot be listed here")
                }
            }
        }
    }

    /// Takes in a peer's announcement.
    fn heard(self: &Arc<Self>, announce: Announce) {
        if announce.node == self.node {
            return;
        }
        let changed = {
            let mut shared = self.shared();
            if announce.leaving {
                shared.peers.remove(&announce.node).is_some()
            } else {
                let before = shared.peers.get(&announce.node).map(|p| p.serves.clone());
                shared.peers.insert(
                    announce.node.clone(),
                    Peer {
                        serves: announce.serves.clone(),
                        seen: Instant::now(),
                    },
                );
                before.as_ref() != Some(&announce.serves)
            }
        };
        if announce.leaving {
            tracing::info!(node = %announce.node, "node left the cluster");
            self.fail_waiting_on(&announce.node);
        }
        if changed {
            self.install_remote_listeners();
        }
    }

    /// Drops the peers not heard from for [`NODE_TIMEOUT`].
    fn drop_silent_peers(self: &Arc<Self>) {
        let lost: Vec<String> = {
            let mut shared = self.shared();
            let lost: Vec<String> = shared
                .peers
                .iter()
                .filter(|(_, peer)| peer.seen.elapsed() > NODE_TIMEOUT)
                .map(|(name, _)| name.clone())
                .collect();
            for name in &lost {
                shared.peers.remove(name);
            }
            lost
        };
        for node in &lost {
            tracing::warn!(%node, "node lost: no heartbeat for {} s", NODE_TIMEOUT.as_secs());
            self.fail_waiting_on(node);
        }
        if !lost.is_empty() {
            self.install_remote_listeners();
        }
    }

    /// Tells the threads waiting on `node` that it is gone.
    fn fail_waiting_on(&self, node: &str) {
        let lost: Vec<ThreadHandle> = {
            let mut shared = self.shared();
            let ids: Vec<String> = shared
                .waiting
                .iter()
                .filter(|(_, waiting)| waiting.busy_on(node))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| shared.waiting.remove(id).map(|waiting| waiting.thread))
                .collect()
        };
        for thread in lost {
            thread.fail(
                &format!("node {node}"),
                "node lost: the node running the call left the cluster",
            );
        }
    }

    /// Publishes a message for a tag served elsewhere and waits (on a task
    /// of its own) for the node that takes it.
    fn send(self: &Arc<Self>, delivery: RemoteDelivery) {
        let carried = Carried {
            node: self.node.clone(),
            from: delivery.sender.clone(),
            depth: delivery.depth,
            thread: delivery.thread.id().as_str().to_owned(),
            payload: delivery.payload.clone(),
        };
        let subject = subject_of(delivery.payload.tag());
        let thread = delivery.thread;
        self.shared()
            .waiting
            .entry(thread.id().as_str().to_owned())
            .or_insert_with(|| Waiting {
                thread: thread.clone(),
                node: None,
                taken: 0,
                done: 0,
            });
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let request = cluster
                .client
                .request(subject, carried.to_xml(false).into());
            let reply = tokio::time::timeout(TAKE_TIMEOUT, request).await;
            let taken_by = match reply {
                Ok(Ok(message)) => wire::read_taken(&message.payload),
                Ok(Err(error)) => {
                    thread.fail("cluster", &format!("no node took the message: {error}"));
                    None
                }
                Err(_) => {
                    thread.fail(
                        "cluster",
                        &format!(
                            "no node took the message within {} s",
                            TAKE_TIMEOUT.as_secs()
                        ),
                    );
                    None
                }
            };
            let mut shared = cluster.shared();
            match taken_by {
                Some(node) if shared.peers.contains_key(&node) => {
                    if let Some(waiting) = shared.waiting.get_mut(thread.id().as_str()) {
                        // Counts are per node: a thread that moves to
                        // another node starts its counts afresh.
                        if waiting.node.as_ref().is_some_and(|before| *before != node) {
                            waiting.taken = 0;
                            waiting.done = 0;
                        }
                        waiting.node = Some(node);
                        waiting.taken += 1;
                    }
                }
                Some(node) => {
                    // Taken by a node that is already gone.
                    shared.waiting.remove(thread.id().as_str());
                    drop(shared);
                    thread.fail(
                        &format!("node {node}"),
                        "node lost: the node running the call left the cluster",
                    );
                }
                None => {
                    shared.waiting.remove(thread.id().as_str());
                }
            }
        });
    }

    /// Runs a message from another node here.
    fn take(self: &Arc<Self>, carried: Carried) {
        let origin = {
            let mut shared = self.shared();
            Arc::clone(
                shared
                    .origins
                    .entry(carried.node.clone())
                    .or_insert_with(|| {
                        let session = self
                            .bus
                            .open_session(&format!("node-{}", carried.node), Grants::All);
                        let origin = Arc::new(Origin {
                            session,
                            threads: Mutex::new(OriginThreads::default()),
                        });
                        tokio::spawn(return_answers(
                            Arc::downgrade(self),
                            carried.node.clone(),
                            Arc::clone(&origin),
                        ));
                        origin
                    }),
            )
        };
        let local = {
            let mut threads = origin.threads.lock().unwrap_or_else(|e| e.into_inner());
            if threads.by_origin.len() >= MAX_ORIGIN_THREADS
                && !threads.by_origin.contains_key(&carried.thread)
            {
                // Forget the origin's old threads all at once: a message
                // continuing one of them starts a fresh thread here.
                *threads = OriginThreads::default();
            }
            *threads.taken.entry(carried.thread.clone()).or_insert(0) += 1;
            threads.by_origin.get(&carried.thread).cloned()
        };
        match origin.session.submit_remote(
            carried.payload.clone(),
            &carried.from,
            carried.depth,
            local.as_deref(),
        ) {
            Ok(submitted) => {
                let mut threads = origin.threads.lock().unwrap_or_else(|e| e.into_inner());
                let local = submitted.thread.as_str().to_owned();
                threads
                    .by_local
                    .insert(local.clone(), (carried.thread.clone(), carried.depth));
                threads.by_origin.insert(carried.thread.clone(), local);
                drop(threads);
                if let Some(worker) = submitted.worker {
                    // Once the thread's messages are all run, the origin
                    // stops counting it as waiting on this node.
                    let client = self.client.clone();
                    let subject = format!("agentserver.answer.{}", carried.node);
                    let thread = carried.thread.clone();
                    let origin = Arc::clone(&origin);
                    tokio::spawn(async move {
                        worker.run().await;
                        let taken = origin
                            .threads
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .taken
                            .get(&thread)
                            .copied()
                            .unwrap_or(0);
                        let _ = client
                            .publish(subject, wire::done(&thread, taken).into())
                            .await;
                    });
                }
            }
            Err(refusal) => {
                if let Ok(mut ingested) =
                    crate::xml::ingest(refusal.frame.as_bytes(), &crate::xml::Limits::default())
                {
                    if let Some(payload) = ingested.payloads.pop() {
                        let answer = Carried {
                            node: String::new(),
                            from: "server".into(),
                            depth: carried.depth + 1,
                            thread: carried.thread,
                            payload,
                        };
                        let client = self.client.clone();
                        let subject = format!("agentserver.answer.{}", carried.node);
                        tokio::spawn(async move {
                            let _ = client.publish(subject, answer.to_xml(true).into()).await;
                        });
                    }
                }
            }
        }
    }

    /// The node running a thread has run `taken` of its messages. Past
    /// [`MAX_WAITING`] threads, ended and idle ones are forgotten.
    fn ran(&self, thread: &str, taken: u64) {
        let mut shared = self.shared();
        if let Some(waiting) = shared.waiting.get_mut(thread) {
            waiting.done = waiting.done.max(taken);
        }
        if shared.waiting.len() > MAX_WAITING {
            shared
                .waiting
                .retain(|_, waiting| waiting.taken > waiting.done && !waiting.thread.is_ended());
        }
    }

    /// Puts an answer from another node on its thread here.
    fn answered(&self, carried: Carried) {
        let thread = self
            .shared()
            .waiting
            .get(&carried.thread)
            .map(|waiting| waiting.thread.clone());
        match thread {
            Some(thread) if !thread.is_ended() => {
                thread.answer(&carried.from, carried.payload, carried.depth);
            }
            Some(_) => {
                self.shared().waiting.remove(&carried.thread);
            }
            None => {}
        }
    }
}

/// Publishes the structural changes applied here, for the other nodes:
/// on `agentserver.structure.command.NODE` the signed command as it came,
/// on `agentserver.structure.users.NODE` that the user directory changed.
async fn share_structure(
    cluster: Weak<Cluster>,
    mut changes: tokio::sync::broadcast::Receiver<StructureChange>,
) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::error!(
                    missed,
                    "structural changes were not passed on to the cluster"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let (kind, payload) = match change {
            StructureChange::Command(document) => ("command", document.to_vec()),
            StructureChange::Users => ("users", Vec::new()),
        };
        let subject = format!("agentserver.structure.{kind}.{}", cluster.node);
        if let Err(error) = cluster.client.publish(subject, payload.into()).await {
            tracing::error!(%error, "a structural change could not be passed on to the cluster");
        }
    }
}

/// Follows, one after another, the structural changes other nodes applied.
async fn follow_structure(cluster: Weak<Cluster>, mut changes: async_nats::Subscriber) {
    while let Some(message) = changes.next().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let mut parts = message.subject.as_str().splitn(4, '.').skip(2);
        let (Some(kind), Some(node)) = (parts.next(), parts.next()) else {
            continue;
        };
        if node == cluster.node {
            continue;
        }
        match kind {
            "command" => {
                cluster.privileged.follow(&message.payload, node).await;
            }
            "users" => {
                if let Err(error) = cluster.privileged.adopt_users() {
                    tracing::error!(%node, %error, "the user directory another node published was not taken");
                }
            }
            _ => {}
        }
    }
}

/// Lets sessions go when another node takes them over, and says whether
/// they were here.
async fn release_sessions(cluster: Weak<Cluster>, mut asks: async_nats::Subscriber) {
    while let Some(message) = asks.next().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Ok(id) = std::str::from_utf8(&message.payload) else {
            continue;
        };
        let released = cluster.sessions.release(id);
        if released {
            tracing::info!(session = %id, "session moved to another node");
        }
        if let Some(reply) = message.reply {
            let answer: &'static [u8] = if released { b"released" } else { b"absent" };
            let _ = cluster.client.publish(reply, answer.into()).await;
        }
    }
}

async fn listen_to_nodes(cluster: Weak<Cluster>, mut nodes: async_nats::Subscriber) {
    while let Some(message) = nodes.next().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if let Some(announce) = Announce::read(&message.payload) {
            cluster.heard(announce);
        }
    }
}

async fn take_answers(cluster: Weak<Cluster>, mut answers: async_nats::Subscriber) {
    while let Some(message) = answers.next().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if let Some(carried) = Carried::read(&message.payload, true) {
            cluster.answered(carried);
        } else if let Some((thread, taken)) = wire::read_done(&message.payload) {
            cluster.ran(&thread, taken);
        }
    }
}

async fn take_messages(cluster: Weak<Cluster>, mut messages: async_nats::Subscriber) {
    while let Some(message) = messages.next().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(carried) = Carried::read(&message.payload, false) else {
            continue;
        };
        if let Some(reply) = message.reply {
            let _ = cluster
                .client
                .publish(reply, wire::taken(&cluster.node).into())
                .await;
        }
        cluster.take(carried);
    }
}

/// Announces this node every [`HEARTBEAT`] and at once when its agents
/// change; drops silent peers.
async fn heartbeat(cluster: Weak<Cluster>) {
    let Some(mut changes) = cluster.upgrade().map(|c| c.bus.changes()) else {
        return;
    };
    let mut tick = tokio::time::interval(HEARTBEAT / 2);
    let mut beats = 0u64;
    loop {
        let changed = tokio::select! {
            _ = tick.tick() => false,
            result = changes.changed() => {
                if result.is_err() {
                    return;
                }
                true
            }
        };
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.drop_silent_peers();
        if changed {
            cluster.serve_local_tags().await;
            cluster.install_remote_listeners();
        }
        beats += 1;
        if changed || beats.is_multiple_of(2) {
            cluster.announce(false).await;
        }
    }
}

/// Sends what another node's session here produces back to that node.
async fn return_answers(cluster: Weak<Cluster>, node: String, origin: Arc<Origin>) {
    let outbox = Arc::clone(origin.session.outbox());
    while let Some(frame) = outbox.pop().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(payload) = crate::xml::ingest(frame.as_bytes(), &crate::xml::Limits::default())
            .ok()
            .and_then(|mut ingested| ingested.payloads.pop())
        else {
            continue;
        };
        let (from, local, payload) = if payload.tag().as_str() == "message" {
            let Ok(envelope) = crate::xml::Envelope::parse(&payload) else {
                continue;
            };
            let Some(thread) = envelope.thread else {
                continue;
            };
            (
                envelope.from.unwrap_or_else(|| "server".into()),
                thread,
                envelope.payload,
            )
        } else {
            let Some(thread) = payload.root_attribute("thread") else {
                continue;
            };
            ("server".to_owned(), thread, payload)
        };
        let mapped = origin
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_local
            .get(&local)
            .cloned();
        let Some((thread, depth)) = mapped else {
            continue;
        };
        let answer = Carried {
            node: String::new(),
            from,
            depth: depth + 1,
            thread,
            payload,
        };
        let _ = cluster
            .client
            .publish(
                format!("agentserver.answer.{node}"),
                answer.to_xml(true).into(),
            )
            .await;
    }
}
