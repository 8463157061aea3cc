//! The secure port: one TLS-only TCP port serving the WebSocket message
//! channel, the web console, `/healthz` and `/metrics`.
//!
//! # Tasks
//!
//! - The accept loop ([`RunningServer`]) takes TCP connections until
//!   shutdown, within the caps of `pressure`; each gets its own task, which
//!   reads a trusted proxy's PROXY header if one comes (`proxy`), does the
//!   TLS handshake (10 s at most for both; a plaintext client gets nothing
//!   but a closed socket) and serves HTTP/1.1 on it.
//! - An upgraded WebSocket gets a task of its own (`connection`), which
//!   owns the socket and the bus session.
//! - Shutdown is a `watch` channel: the accept loop stops, connections close
//!   with 1001, and [`RunningServer::shutdown`] waits (bounded) for them.
//!
//! Dependencies point inward: the server uses auth, the bus, the runtime and
//! the XML core; nothing below knows of sockets.

// First: its macro serves the stream wrappers of the other modules.
#[macro_use]
mod stream;
mod catalog;
mod check;
pub mod config;
mod connection;
mod federated;
mod flood;
mod gate;
mod http;
mod metrics;
mod notify;
mod pressure;
mod proxy;
pub mod tls;

pub use check::check;

pub use config::{AgentConfig, CheckpointPolicy, Config, ConfigError, StorageConfig};
pub use flood::{FloodGuard, FloodLimits};

use crate::audit::AuditLog;
use crate::auth::{AuthConfig, Authenticator, FailureLimiter, Users, UsersError};
use crate::bus::{
    AgentName, AuditSink, Bus, BusConfig, CapabilityAudit, Listener, ListenerTarget, SessionId,
    TableError,
};
use crate::capability::Secrets;
use crate::commit::{Certificate, CheckpointSigner, NodeKey, Purpose, NODE_PUBLIC_KEY_FILE};
use crate::federation::Federation;
use crate::privileged::{
    Carrier, IdentityError, OrganismKey, Privileged, PrivilegedConfig, ShutdownMode, StoreError,
    StructureStore, Verdict,
};
use crate::runtime::{
    ComponentHash, LoadError, Runtime, RuntimeConfig, RuntimeError, RuntimeServices,
};
use crate::session::SessionRegistry;
use crate::store::Stores;
use crate::xml::Tag;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stream::ClientStream;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the port waits before accepting again after `accept` failed
/// (out of file descriptors, typically).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long shutdown waits for connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The user directory is wrong.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The wasm runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A boot agent could not be loaded.
    #[error("agent `{agent}`: {reason}")]
    Agent {
        /// The agent.
        agent: String,
        /// What went wrong.
        reason: String,
    },
    /// The secrets file was refused.
    #[error("secrets: {0}")]
    Secrets(String),
    /// The organism's public key could not be read.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    /// The storage backend could not be opened.
    #[error("storage: {0}")]
    Store(StoreError),
    /// Agents admitted at run time could not be restored.
    #[error("restoring admitted agents: {0}")]
    Restore(String),
    /// The cluster could not be joined.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Counters the server keeps (the bus keeps its own).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) sessions: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) flood_closes: AtomicU64,
    /// Connections refused for their PROXY header (untrusted or malformed).
    pub(crate) proxy_refusals: AtomicU64,
    /// Messages refused because the audit log could not be stored.
    pub(crate) storage_refusals: AtomicU64,
}

/// What every connection shares.
pub(crate) struct State {
    pub(crate) bus: Bus,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) privileged: Arc<Privileged>,
    /// The links to other organisms.
    pub(crate) federation: Arc<Federation>,
    /// Set when a graceful shutdown began: new messages are refused.
    pub(crate) draining: AtomicBool,
    pub(crate) max_command_bytes: usize,
    pub(crate) counters: Counters,
    pub(crate) flood: FloodLimits,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_connections_per_user: usize,
    pub(crate) session_timeout_seconds: u64,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Every live session, attached to a socket or waiting for a resume.
    pub(crate) sessions: Arc<SessionRegistry>,
    /// This node's membership in a cluster, if it is one's.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Failed resumes per peer address (the login path counts its own).
    pub(crate) resume_failures: FailureLimiter,
    /// Reverse proxies allowed to speak for clients.
    pub(crate) proxies: proxy::TrustedProxies,
    /// The caps on open and not-yet-authenticated connections.
    pub(crate) limits: Arc<pressure::ConnectionLimits>,
    /// Each session's flood state, shared by its connections one after
    /// another: a resume goes on with the bucket and the bad messages the
    /// session had, rather than a fresh allowance.
    floods: Mutex<HashMap<SessionId, Arc<Mutex<FloodGuard>>>>,
    per_user: Mutex<HashMap<String, usize>>,
    _runtime: Arc<Runtime>,
}

impl State {
    /// What `user` may send now; `None` when there is no such user.
    pub(crate) fn grants_of(&self, user: &str) -> Option<crate::bus::Grants> {
        self.auth
            .users()
            .get(user)
            .map(|entry| connection::grants(&entry.allow))
    }

    /// Session `id`'s flood state, made when first asked for.
    pub(crate) fn flood_of(&self, id: &SessionId) -> Arc<Mutex<FloodGuard>> {
        let mut floods = self.floods.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            floods
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Mutex::new(FloodGuard::new(self.flood)))),
        )
    }

    /// Forgets the flood state of sessions that are gone.
    fn prune_floods(&self) {
        let mut floods = self.floods.lock().unwrap_or_else(|e| e.into_inner());
        floods.retain(|id, _| self.sessions.contains(id));
    }

    /// Claims one of the user's connection slots; released on drop.
    pub(crate) fn claim_connection(&self, user: &str) -> Option<ConnectionSlot<'_>> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_user.entry(user.to_owned()).or_default();
        if *count >= self.max_connections_per_user {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            state: self,
            user: user.to_owned(),
        })
    }
}

/// One of a user's connection slots.
pub(crate) struct ConnectionSlot<'a> {
    state: &'a State,
    user: String,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut per_user = self
            .state
            .per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_user.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

/// Loads the boot agents of `config` into `runtime` and registers them on `bus`.
fn boot_agents(config: &Config, runtime: &Runtime, bus: &Bus) -> Result<(), ServerError> {
    for agent in &config.agents {
        let (name, loaded) = load_boot_agent(agent, runtime)?;
        bus.register(Listener {
            name,
            listens: agent.listens.iter().map(|t| Tag::new(t)).collect(),
            description: agent.description.clone(),
            target: ListenerTarget::Local(loaded),
        })
        .map_err(|e: TableError| ServerError::Agent {
            agent: agent.name.clone(),
            reason: e.to_string(),
        })?;
        tracing::info!(agent = %agent.name, "agent loaded");
    }
    Ok(())
}

/// Loads one boot agent of the configuration: its name checked, its
/// component read, matched against its configured SHA-256, compiled and
/// checked against its grants.
fn load_boot_agent(
    agent: &config::AgentConfig,
    runtime: &Runtime,
) -> Result<(AgentName, Arc<crate::runtime::Agent>), ServerError> {
    let fail = |reason: String| ServerError::Agent {
        agent: agent.name.clone(),
        reason,
    };
    let name = AgentName::new(&agent.name).map_err(|e| fail(e.to_string()))?;
    let bytes = std::fs::read(&agent.component)
        .map_err(|e| fail(format!("{}: {e}", agent.component.display())))?;
    if let Some(expected) = &agent.sha256 {
        let expected: ComponentHash = expected
            .parse()
            .map_err(|e: crate::runtime::BadHash| fail(e.to_string()))?;
        let actual = ComponentHash::of(&bytes);
        if actual != expected {
            return Err(fail(format!(
                "sha256 is {actual}, not the configured {expected}"
            )));
        }
    }
    let component = runtime
        .load_component(&bytes)
        .map_err(|e: LoadError| fail(e.to_string()))?;
    let loaded = runtime
        .agent(&agent.name, component, agent.limits.clone())
        .map_err(|e| fail(e.to_string()))?;
    Ok((name, loaded))
}

/// A server that is listening.
pub struct RunningServer {
    address: SocketAddr,
    fingerprint: String,
    certificate: Arc<tls::LiveCertificate>,
    state: Arc<State>,
    audit_log: Option<Arc<AuditLog>>,
    shutdown: watch::Sender<bool>,
    accept_loop: tokio::task::JoinHandle<()>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl RunningServer {
    /// The address it listens on (with the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The SHA-256 fingerprint of its TLS certificate at start.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Its bus (for tools and tests that look at the routing table).
    pub fn bus(&self) -> &Bus {
        &self.state.bus
    }

    /// Reloads the TLS certificate and key files and the users file (what
    /// SIGHUP does). Connections already open go on as they are; a pair or
    /// a users file that does not load is refused with one log line and
    /// what was there stays.
    pub fn reload(&self) {
        reload_certificate(&self.certificate, self.certificate.reload());
        match self.state.privileged.reload_users() {
            Ok(()) => tracing::info!("users file reloaded"),
            Err(error) => tracing::warn!(%error, "users file not reloaded; the previous one stays"),
        }
    }

    /// Waits until a signed `shutdown` command is applied, and says how.
    pub async fn shutdown_requested(&self) -> ShutdownMode {
        let mut requests = self.state.privileged.shutdown_requests();
        loop {
            if let Some(mode) = *requests.borrow_and_update() {
                return mode;
            }
            if requests.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Graceful shutdown: refuses new messages, lets the calls in flight
    /// finish and their answers go out (at most [`SHUTDOWN_GRACE`]), then
    /// stops accepting, closes connections with 1001 and waits for them.
    pub async fn shutdown(self) {
        self.state.draining.store(true, Ordering::Release);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, wait_until_idle(&self.state)).await;
        self.shutdown_now().await;
    }

    /// Immediate shutdown: closes connections with 1001 at once; calls in
    /// flight are abandoned.
    pub async fn shutdown_now(self) {
        self.state.draining.store(true, Ordering::Release);
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
        // Upgraded WebSockets run on tasks of their own: wait for them to
        // send their last frames and close.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.state.counters.connections.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if let Some(log) = &self.audit_log {
            if !log.flush(SHUTDOWN_GRACE) {
                tracing::error!("the audit log could not be written out before shutdown");
            }
        }
    }
}

/// Returns once no agent has a call in flight or queued, three checks in a
/// row (so a delegation between two hops is not taken for idleness).
async fn wait_until_idle(state: &State) {
    let mut idle_checks = 0;
    while idle_checks < 3 {
        let busy = state.bus.table().agents().any(|listener| {
            listener.target.local().is_some_and(|agent| {
                let stats = agent.stats();
                stats.in_flight + stats.queued > 0
            })
        });
        idle_checks = if busy { 0 } else { idle_checks + 1 };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the server described by `config`: TLS identity, users, storage,
/// audit log, runtime, boot and admitted agents, bus, and the listening
/// socket.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    start_inner(config, None).await
}

/// [`start`], writing the audit trail to `audit` instead of the configured
/// store's log.
pub async fn start_with_audit(
    config: Config,
    audit: Arc<dyn AuditSink>,
) -> Result<RunningServer, ServerError> {
    start_inner(config, Some(audit)).await
}

/// The organism's public key, if there is one (see [`Config::identity_required`]).
fn organism_key(config: &Config) -> Result<Option<OrganismKey>, ServerError> {
    if !config.identity_required && !config.identity.exists() {
        tracing::warn!(
            "no organism identity at {}: privileged commands will be refused \
             (make one with `agentserver identity generate`)",
            config.identity.display()
        );
        return Ok(None);
    }
    let key = OrganismKey::load(&config.identity)?;
    tracing::info!(fingerprint = %key.fingerprint(), "organism identity loaded");
    Ok(Some(key))
}

/// The agent runtime's settings that come from the configuration.
fn runtime_config(config: &Config) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: Some(config.compile_cache.clone()),
        max_instances: config.max_instances,
        ..RuntimeConfig::default()
    }
}

/// Everything but the network: the agents, the bus, who may change them,
/// and the links to other organisms.
struct Organism {
    runtime: Arc<Runtime>,
    bus: Bus,
    auth: Arc<Authenticator>,
    privileged: Arc<Privileged>,
    federation: Arc<Federation>,
}

/// Builds the organism of `config` on `stores`, auditing into `audit`:
/// loads the boot agents and restores the admitted ones.
async fn assemble(
    config: &Config,
    stores: &Stores,
    audit: Arc<dyn AuditSink>,
    identity: Option<Identity>,
) -> Result<Organism, ServerError> {
    let (key, node) = match identity {
        Some(Identity { owner, node }) => (Some(owner), Some(node)),
        None => (None, None),
    };
    let federation_audit = Arc::clone(&audit);
    let shared_users = match (&config.cluster, &stores.users) {
        (Some(_), Some(shared)) => Some(Arc::clone(shared)),
        _ => None,
    };
    if let Some(shared) = &shared_users {
        if crate::auth::adopt_shared_users(&config.users, shared.as_ref())? {
            tracing::info!(path = %config.users.display(), "user directory taken from the cluster");
        }
    }
    let users = Users::load(&config.users)?;
    let secrets = match &config.secrets {
        Some(path) => Secrets::load(path).map_err(|e| ServerError::Secrets(e.to_string()))?,
        None => Secrets::none(),
    };
    let runtime = Arc::new(Runtime::with_services(
        runtime_config(config),
        RuntimeServices {
            secrets,
            keyvalue: Arc::clone(&stores.keyvalue),
            audit: Arc::new(CapabilityAudit(Arc::clone(&audit))),
        },
    )?);
    let bus = Bus::new(
        BusConfig {
            outbox_capacity: config.max_pending_frames,
            ..BusConfig::default()
        },
        Arc::clone(&audit),
    );
    let mut authenticator = match &stores.steps {
        Some(steps) => Authenticator::with_steps(users, &AuthConfig::default(), Arc::clone(steps)),
        None => Authenticator::new(users, &AuthConfig::default()),
    };
    if let Some(failures) = &stores.failures {
        authenticator = authenticator.with_shared_failures(Arc::clone(failures));
    }
    let auth = Arc::new(authenticator);
    let federation = Federation::new(
        key.as_ref(),
        node,
        bus.clone(),
        Arc::clone(&stores.structure),
        federation_audit,
    );
    let mut privileged = Privileged::new(
        PrivilegedConfig {
            key,
            max_command_bytes: config.max_command_bytes,
            users_path: config.users.clone(),
            components_dir: config.components_dir.clone(),
            node: config.cluster.as_ref().map(|cluster| cluster.node.clone()),
        },
        Arc::clone(&runtime),
        bus.clone(),
        Arc::clone(&auth),
        Arc::clone(&stores.structure),
        audit,
        Arc::clone(&federation),
    );
    if let Some(shared) = shared_users {
        privileged = privileged.with_shared_users(shared);
    }
    let privileged = Arc::new(privileged);
    {
        let runtime = Arc::clone(&runtime);
        let config = config.clone();
        let bus = bus.clone();
        let privileged = Arc::clone(&privileged);
        tokio::task::spawn_blocking(move || {
            boot_agents(&config, &runtime, &bus)?;
            privileged
                .restore()
                .map_err(|e| ServerError::Restore(e.to_string()))
        })
        .await
        .map_err(|e| ServerError::Agent {
            agent: "*".into(),
            reason: e.to_string(),
        })??;
    }
    federation.restore().map_err(ServerError::Restore)?;
    Ok(Organism {
        runtime,
        bus,
        auth,
        privileged,
        federation,
    })
}

/// The opened stores, the audit sink to use, and the audit log when it is
/// the stores' own.
type OpenedStores = (Stores, Arc<dyn AuditSink>, Option<Arc<AuditLog>>);

/// Opens the configured stores and, unless `audit` overrides it, the audit
/// log on them, signing checkpoints with the node key when the organism
/// has an identity to certify it.
fn open_stores(
    config: &Config,
    audit: Option<Arc<dyn AuditSink>>,
    identity: Option<&Identity>,
) -> Result<OpenedStores, ServerError> {
    let stores = Stores::open(&config.storage, &config.data_dir).map_err(ServerError::Store)?;
    Ok(match audit {
        Some(audit) => (stores, audit, None),
        None => {
            let signer = match identity {
                Some(identity) if config.checkpoints.is_enabled() => {
                    checkpoint_signer(config, identity, stores.structure.as_ref())?
                }
                _ => None,
            };
            let log = Arc::new(
                AuditLog::open(Arc::clone(&stores.audit), signer).map_err(ServerError::Store)?,
            );
            (stores, log.clone(), Some(log))
        }
    })
}

/// The organism's public key and this node's own key.
struct Identity {
    owner: OrganismKey,
    node: NodeKey,
}

/// The organism's identity, if it has one, with the node key (made at the
/// first start).
fn load_identity(config: &Config) -> Result<Option<Identity>, ServerError> {
    let Some(owner) = organism_key(config)? else {
        return Ok(None);
    };
    let (node, made) = NodeKey::load_or_create(&config.data_dir)?;
    if made {
        let public = config.data_dir.join(NODE_PUBLIC_KEY_FILE);
        tracing::info!(key_id = node.key_id(), path = %public.display(), "node key made");
    }
    Ok(Some(Identity { owner, node }))
}

/// When to sign checkpoints with the node key; says in the log whether a
/// stored certificate vouches for the key now. None (no checkpoints, and
/// a warning) when the owner revoked the key: it vouches for nothing.
fn checkpoint_signer(
    config: &Config,
    identity: &Identity,
    structure: &dyn StructureStore,
) -> Result<Option<CheckpointSigner>, ServerError> {
    let (owner, key) = (&identity.owner, identity.node.clone());
    let public = config.data_dir.join(NODE_PUBLIC_KEY_FILE);
    let now = crate::privileged::time::unix_seconds(std::time::SystemTime::now());
    let revoked = structure
        .signed_records(crate::privileged::SignedKind::NodeRevocation)
        .map_err(ServerError::Store)?
        .iter()
        .filter_map(|record| crate::commit::Revocation::verify(record, owner.verifying_key()).ok())
        .find(|revocation| revocation.request.key_id == key.key_id());
    if let Some(revocation) = revoked {
        tracing::warn!(
            key_id = key.key_id(),
            revoked = %crate::privileged::time::format_instant(revocation.issued),
            command = revocation.id,
            "the owner revoked this node's key: audit checkpoints are not signed; give the \
             server a new node key (move {} away and restart) and certify that one",
            config.data_dir.join(crate::commit::NODE_KEY_FILE).display()
        );
        return Ok(None);
    }
    let certified = structure
        .certificates()
        .map_err(ServerError::Store)?
        .iter()
        .filter_map(|record| Certificate::verify(record, owner.verifying_key()).ok())
        .filter(|c| c.request.key_id == key.key_id() && c.covers(now, Purpose::Audit))
        .map(|c| c.request.not_after)
        .max();
    match certified {
        Some(until) => tracing::info!(
            key_id = key.key_id(),
            until = %crate::privileged::time::format_instant(until),
            "audit checkpoints are signed with the certified node key"
        ),
        None => tracing::warn!(
            key_id = key.key_id(),
            "no node certificate vouches for this node's key: its audit checkpoints cannot be \
             checked until the owner signs one (agentserver command node-certificate --node-key {})",
            public.display()
        ),
    }
    Ok(Some(CheckpointSigner {
        key,
        organism: owner.fingerprint(),
        every_entries: config.checkpoints.every_entries,
        every: Duration::from_secs(config.checkpoints.every_seconds),
        stopped: Default::default(),
    }))
}

/// Applies a signed command to a stopped server's persistent state, as the
/// server would on start: the boot and admitted agents are loaded, the
/// command is checked and applied, and the audit log records it.
pub async fn apply_offline(config: Config, command: &[u8]) -> Result<Verdict, ServerError> {
    let identity = load_identity(&config)?;
    let (stores, audit, log) = open_stores(&config, None, identity.as_ref())?;
    if !stores.structure.is_persistent() {
        return Err(ServerError::Store(StoreError(
            "storage is `memory`, so a stopped server keeps no structure to change; \
             start it and apply with --url"
                .into(),
        )));
    }
    let organism = assemble(&config, &stores, audit, identity).await?;
    let verdict = organism
        .privileged
        .execute(
            command,
            &Carrier {
                from: "cli".into(),
                session: SessionId::new(),
            },
        )
        .await;
    if let Some(log) = log {
        log.flush(SHUTDOWN_GRACE);
    }
    Ok(verdict)
}

async fn start_inner(
    config: Config,
    audit: Option<Arc<dyn AuditSink>>,
) -> Result<RunningServer, ServerError> {
    let (identity, source) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (tls::Identity::load(cert, key)?, (cert.clone(), key.clone())),
        _ => {
            let dir = config.data_dir.join("tls");
            let (identity, made) = tls::Identity::development(&dir)?;
            if made {
                tracing::info!("made a development TLS certificate");
            }
            (identity, (dir.join("cert.pem"), dir.join("key.pem")))
        }
    };
    let fingerprint = identity.fingerprint();
    let (tls_config, certificate) = identity.live_config(source)?;
    let tls = tokio_rustls::TlsAcceptor::from(tls_config);
    let organism_identity = load_identity(&config)?;
    let (stores, audit, audit_log) = open_stores(&config, audit, organism_identity.as_ref())?;
    let Organism {
        runtime,
        bus,
        auth,
        privileged,
        federation,
    } = assemble(&config, &stores, audit, organism_identity).await?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                address: config.listen,
                source,
            })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: config.listen,
            source,
        })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let session_timeout_seconds = config.session_timeout.unwrap_or_else(|| {
        config
            .agents
            .iter()
            .map(|a| a.limits.session_timeout.as_secs())
            .max()
            .unwrap_or(1_800)
    });
    let mut sessions = match &stores.sessions {
        Some(store) => SessionRegistry::persistent(Arc::clone(store)),
        None => SessionRegistry::new(),
    };
    if let (Some(cluster), Some(shared)) = (&config.cluster, &stores.shared_sessions) {
        sessions = sessions.in_cluster(&cluster.node, Arc::clone(shared));
    }
    let sessions = Arc::new(sessions);
    let cluster = match &config.cluster {
        Some(cluster) => Some(
            crate::cluster::Cluster::join(
                cluster,
                bus.clone(),
                Arc::clone(&privileged),
                Arc::clone(&sessions),
            )
            .await?,
        ),
        None => None,
    };
    let state = Arc::new(State {
        bus,
        auth,
        privileged,
        federation,
        draining: AtomicBool::new(false),
        max_command_bytes: config.max_command_bytes,
        counters: Counters::default(),
        flood: FloodLimits {
            messages_per_second: f64::from(config.messages_per_second),
            burst: f64::from(config.message_burst),
            ..FloodLimits::default()
        },
        max_message_bytes: config.max_message_bytes,
        max_connections_per_user: config.max_connections_per_user,
        session_timeout_seconds,
        shutdown: shutdown_rx.clone(),
        sessions,
        cluster: cluster.clone(),
        resume_failures: {
            let limits = AuthConfig::default();
            FailureLimiter::new(limits.max_failures, limits.failure_window)
        },
        proxies: config.proxies.clone(),
        limits: pressure::ConnectionLimits::new(
            config.max_connections,
            config.max_unauthenticated_per_address,
        ),
        floods: Mutex::new(HashMap::new()),
        per_user: Mutex::new(HashMap::new()),
        _runtime: Arc::clone(&runtime),
    });
    let restored = state
        .sessions
        .restore(
            &state.bus,
            |user| state.grants_of(user),
            std::time::Instant::now(),
        )
        .map_err(ServerError::Store)?;
    if restored > 0 {
        tracing::info!(
            sessions = restored,
            "sessions restored, waiting for their clients"
        );
    }
    spawn_sweeper(&state, shutdown_rx.clone());
    spawn_certificate_watch(&certificate, shutdown_rx.clone());
    if let Some(log) = &audit_log {
        spawn_revocation_watch(log, &state.federation, shutdown_rx.clone());
    }
    let accept_loop = tokio::spawn(accept(listener, tls, Arc::clone(&state), shutdown_rx));
    Ok(RunningServer {
        address,
        fingerprint,
        certificate,
        state,
        audit_log,
        shutdown: shutdown_tx,
        accept_loop,
        cluster,
    })
}

/// Stops the audit log's checkpoints as soon as the node key that signs
/// them is revoked (applied here, or on another node of the cluster).
fn spawn_revocation_watch(
    log: &Arc<AuditLog>,
    federation: &Arc<Federation>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(key_id) = log.checkpoint_key_id().map(str::to_owned) else {
        return;
    };
    let (log, federation) = (Arc::clone(log), Arc::clone(federation));
    tokio::spawn(async move {
        let mut revocations = federation.revocation_feed();
        loop {
            if let Some(reason) = federation.revoked_key(&key_id) {
                log.stop_checkpoints();
                tracing::warn!(%key_id, %reason, "audit checkpoints stopped: this node's key is revoked");
                return;
            }
            tokio::select! {
                _ = revocations.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// How often the certificate files are checked for a change.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(5);

/// Every [`CERTIFICATE_CHECK`]: reloads the TLS certificate if its files
/// changed (a renewal by an ACME client, say).
fn spawn_certificate_watch(
    certificate: &Arc<tls::LiveCertificate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let certificate = Arc::clone(certificate);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CERTIFICATE_CHECK);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(outcome) = certificate.reload_if_changed() {
                        reload_certificate(&certificate, outcome);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Says how a certificate reload went, in one line.
fn reload_certificate(certificate: &tls::LiveCertificate, outcome: Result<String, tls::TlsError>) {
    match outcome {
        Ok(fingerprint) => tracing::info!(%fingerprint, "tls certificate reloaded"),
        Err(error) => tracing::warn!(
            %error,
            fingerprint = %certificate.fingerprint(),
            "tls certificate not reloaded; the current one stays"
        ),
    }
}

/// Once a second: ends sessions detached for longer than their timeout
/// and drops idle agent instances.
fn spawn_sweeper(state: &Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    state.sessions.sweep(std::time::Instant::now());
                    state.sessions.renew_leases(std::time::Instant::now());
                    state.prune_floods();
                    for listener in state.bus.table().agents() {
                        if let Some(agent) = listener.target.local() {
                            agent.evict_idle();
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    });
}

async fn accept(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors (or another resource):
                        // retrying at once would spin; wait, and say so
                        // once per streak.
                        if failing_since.is_none() {
                            tracing::warn!(%error, "cannot accept connections; retrying every 100 ms");
                            failing_since = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if let Some(since) = failing_since.take() {
                    tracing::warn!(
                        after_ms = since.elapsed().as_millis() as u64,
                        "accepting connections again"
                    );
                }
                // Past the total cap the socket is closed at once: cheaper
                // than anything a handshake would cost.
                let Ok(open) = state.limits.try_open() else {
                    continue;
                };
                // Counted against its address from the first moment, idle
                // or not; a trusted proxy's own address carries many
                // clients, which count once its header or requests name
                // them.
                let from_proxy = state.proxies.contains(peer.ip());
                let pending = if from_proxy {
                    None
                } else {
                    match state.limits.try_pending(peer.ip()) {
                        Ok(slot) => Some(slot),
                        Err(_) => continue,
                    }
                };
                let _ = tcp.set_nodelay(true);
                let tls = tls.clone();
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let mut tcp = tcp;
                    let handshake = async {
                        let (client, read) = match proxy::read_client_address(&mut tcp, peer, &state.proxies).await {
                            Ok(read) => read,
                            Err(error @ (proxy::ProxyHeaderError::Untrusted(_) | proxy::ProxyHeaderError::Malformed(_))) => {
                                state.counters.proxy_refusals.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%peer, %error, "connection refused");
                                return None;
                            }
                            Err(proxy::ProxyHeaderError::Io(_)) => return None,
                        };
                        let pending = match pending {
                            Some(slot) => Some(slot),
                            None if from_proxy && client != peer => {
                                Some(state.limits.try_pending(client.ip()).ok()?)
                            }
                            None => None,
                        };
                        let stream = tls.accept(ClientStream::new(tcp, read, open)).await.ok()?;
                        Some((client, stream, pending))
                    };
                    let Ok(Some((client, stream, pending))) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await else {
                        return;
                    };
                    // Until a request upgrades it, the connection counts
                    // as not logged in; the upgrade takes the slot over.
                    let pending = Arc::new(Mutex::new(pending));
                    let unauthenticated = Arc::clone(&pending);
                    let service = service_fn(move |request| {
                        http::handle(Arc::clone(&state), request, client, Arc::clone(&unauthenticated))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    drop(pending);
                });
            }
            _ = shutdown.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Runs the server until Ctrl-C, SIGTERM or a signed `shutdown` command,
/// then shuts down (gracefully, unless the command said `immediate`).
pub async fn run(config: Config) -> Result<(), ServerError> {
    let mut signals = StopSignals::install();
    let server = start(config).await?;
    println!("listening on wss://{}/", server.address());
    println!("tls certificate sha256 {}", server.fingerprint());
    notify::notify(&format!(
        "READY=1\nSTATUS=listening on wss://{}/",
        server.address()
    ));
    let mode = loop {
        tokio::select! {
            stop = signals.next() => {
                if stop {
                    break ShutdownMode::Graceful;
                }
                server.reload();
            }
            mode = server.shutdown_requested() => break mode,
        }
    };
    notify::notify("STOPPING=1");
    tracing::info!(?mode, "shutting down");
    match mode {
        ShutdownMode::Graceful => server.shutdown().await,
        ShutdownMode::Immediate => server.shutdown_now().await,
    }
    Ok(())
}

/// Ctrl-C and SIGTERM (stop) and SIGHUP (reload), registered when made (so a signal that comes right
/// after start-up is not lost to the default action).
struct StopSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    /// SIGHUP: reload the certificate and the users file.
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            StopSignals {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
                hangup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the next signal: `true` to stop, `false` to reload.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.terminate) => true,
                () = next(&mut self.interrupt) => true,
                () = next(&mut self.hangup) => false,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            true
        }
    }
}
