//! Structural change under the organism's signature.
//!
//! The owner holds an Ed25519 private key offline; the server holds only the
//! public key ([`OrganismKey`]). Admitting, removing or re-limiting an agent,
//! granting or revoking a user's tag, shutting down and certifying a node
//! key ([`crate::commit`]) are `<privileged-command>`s whose signature covers the exclusive canonical
//! form of their `<payload>` ([`SignedCommand`]). [`Privileged::execute`]
//! checks one, in this order, and answers with a [`Verdict`]:
//!
//! 1. size, well-formedness, shape (`<payload id issued expires>`, one
//!    `<signature>`);
//! 2. the signature, strictly, with the organism's key;
//! 3. the time window (`issued`..`expires`, with [`CLOCK_SKEW`] either side);
//! 4. the id, which may be used once (remembered in the
//!    [`StructureStore`] until it expires, whatever the outcome);
//! 5. the command's own checks, then its effect, all or nothing.
//!
//! Commands are applied one at a time. Every command, applied or refused,
//! is written to the audit sink. Dependencies point inward: this module uses
//! the runtime, the bus, the user directory and the XML core; the server
//! carries commands to it and reacts to its shutdown and grant signals.

mod command;
mod identity;
mod placement;
mod signed;
mod store;
pub mod time;

pub use command::{Command, ComponentSource, LimitChanges, Registration, ShutdownMode};
/// The key types, re-exported so that signing code needs no other crate.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use identity::{
    generate, load_signing_key, new_signing_key, IdentityError, OrganismKey, PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
};
pub(crate) use identity::{private_key_pem, write_private};
pub use placement::{valid_node_name, Placement};
pub use signed::{sign, verify_bytes, SignError, SignedCommand, MAX_ID_CHARS};
pub use store::{
    AdmittedAgent, MemoryStructureStore, SignedKind, SignedRecord, StoreError, StructureStore,
};

use crate::auth::{publish_users, set_allow, Allow, Authenticator, SharedUsers, Users};
use crate::bus::{
    AgentName, AuditKind, AuditRecord, AuditSink, Bus, Listener, ListenerTarget, SessionId,
};
use crate::commit::CertificateRequest;
use crate::runtime::{AgentLimits, ComponentHash, Runtime};
use crate::xml::{escape_attribute, escape_text, Tag};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::sync::watch;

/// How far `issued` and `expires` may be off the server's clock.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The default largest command, bytes (a component travels inline).
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 64 << 20;

/// Why a command was refused. Every reason is safe to send to the carrier.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Over the size limit.
    #[error("the command is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not well-formed, or not shaped as a command.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// Well-formed but wrong: a missing or bad attribute, an unknown command.
    #[error("{0}")]
    Invalid(String),
    /// No signature.
    #[error("the command is not signed")]
    Unsigned,
    /// A signature that does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The id was used before.
    #[error("command id {0:?} was already used")]
    Replayed(String),
    /// Past `expires`.
    #[error("the command expired at {0}")]
    Expired(String),
    /// Before `issued`.
    #[error("the command is issued at {0}, in the future")]
    NotYetValid(String),
    /// The component bytes do not have the signed hash.
    #[error("sha256 mismatch: the component's SHA-256 is {actual}, the command says {expected}")]
    HashMismatch {
        /// The bytes' hash.
        actual: String,
        /// The signed hash.
        expected: String,
    },
    /// The component does not load as an agent.
    #[error("{0}")]
    Component(String),
    /// The change conflicts with what is there: a name or tag taken or
    /// reserved, an agent or user that does not exist.
    #[error("{0}")]
    Conflict(String),
    /// The server has no public key.
    #[error(
        "this server has no organism identity (identity.pub); it accepts no privileged command"
    )]
    NoIdentity,
    /// The store failed; nothing was changed.
    #[error("{0}")]
    Storage(String),
    /// A shutdown is under way.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The command's id, when it could be read.
    pub id: Option<String>,
    /// SHA-256 of the canonical payload, when it could be read.
    pub payload_sha256: Option<String>,
    /// Applied, or why not.
    pub outcome: Result<(), Refused>,
}

impl Verdict {
    /// Whether the command was applied.
    pub fn applied(&self) -> bool {
        self.outcome.is_ok()
    }

    /// `<privileged-result id="…" status="applied"/>`, or `status="refused"`
    /// with the reason as text; canonical.
    pub fn to_xml(&self) -> String {
        self.element("privileged-result", None)
    }

    /// The audit entry: the verdict with the payload's hash, canonical.
    fn audit_xml(&self) -> String {
        self.element("privileged-audit", self.payload_sha256.as_deref())
    }

    /// `<NAME id payload-sha256 status>reason</NAME>`, attributes in
    /// canonical order.
    fn element(&self, name: &str, payload_sha256: Option<&str>) -> String {
        let mut out = format!("<{name}");
        if let Some(id) = &self.id {
            out.push_str(" id=\"");
            escape_attribute(&mut out, id);
            out.push('"');
        }
        if let Some(hash) = payload_sha256 {
            out.push_str(" payload-sha256=\"");
            out.push_str(hash);
            out.push('"');
        }
        match &self.outcome {
            Ok(()) => out.push_str(" status=\"applied\">"),
            Err(reason) => {
                out.push_str(" status=\"refused\">");
                escape_text(&mut out, &reason.to_string());
            }
        }
        out.push_str(&format!("</{name}>"));
        out
    }
}

/// Who carried a command to the server: for the audit log only, since the
/// signature, not the carrier, grants authority.
#[derive(Debug, Clone)]
pub struct Carrier {
    /// `user:NAME`, or `cli` for a local apply.
    pub from: String,
    /// The carrier's session.
    pub session: SessionId,
}

/// Settings of [`Privileged`].
#[derive(Debug, Clone)]
pub struct PrivilegedConfig {
    /// The organism's public key; without one every command is refused.
    pub key: Option<OrganismKey>,
    /// Largest command accepted, bytes.
    pub max_command_bytes: usize,
    /// The user directory that grants change.
    pub users_path: PathBuf,
    /// Where `<component src="…">` files are looked up.
    pub components_dir: PathBuf,
    /// This node's name, when the server is a node of a cluster.
    pub node: Option<String>,
}

/// A structural change applied here, for the other nodes of a cluster to
/// follow.
#[derive(Debug, Clone)]
pub enum StructureChange {
    /// A signed command was applied: its document, as it came.
    Command(Arc<[u8]>),
    /// The user directory was reloaded from its file.
    Users,
}

/// Whether a command is applied here first, or followed from another node
/// of the cluster that applied it.
#[derive(Debug, Clone, Copy)]
enum Judged {
    Apply,
    Follow,
}

/// How many changes wait for the cluster to send them on.
const PENDING_CHANGES: usize = 256;

/// Checks and applies privileged commands.
pub struct Privileged {
    config: PrivilegedConfig,
    runtime: Arc<Runtime>,
    bus: Bus,
    auth: Arc<Authenticator>,
    store: Arc<dyn StructureStore>,
    audit: Arc<dyn AuditSink>,
    federation: Arc<crate::federation::Federation>,
    one_at_a_time: tokio::sync::Mutex<()>,
    grants: watch::Sender<u64>,
    shutdown: watch::Sender<Option<ShutdownMode>>,
    changes: tokio::sync::broadcast::Sender<StructureChange>,
    shared_users: Option<Arc<dyn SharedUsers>>,
}

impl Privileged {
    /// A processor changing `bus` and `runtime`, remembering in `store`.
    pub fn new(
        config: PrivilegedConfig,
        runtime: Arc<Runtime>,
        bus: Bus,
        auth: Arc<Authenticator>,
        store: Arc<dyn StructureStore>,
        audit: Arc<dyn AuditSink>,
        federation: Arc<crate::federation::Federation>,
    ) -> Self {
        Privileged {
            config,
            runtime,
            bus,
            auth,
            store,
            audit,
            federation,
            one_at_a_time: tokio::sync::Mutex::new(()),
            grants: watch::channel(0).0,
            shutdown: watch::channel(None).0,
            changes: tokio::sync::broadcast::channel(PENDING_CHANGES).0,
            shared_users: None,
        }
    }

    /// Shares the user directory through `shared`: grants and reloads
    /// publish the file there ([`crate::auth::publish_users`]).
    pub fn with_shared_users(mut self, shared: Arc<dyn SharedUsers>) -> Self {
        self.shared_users = Some(shared);
        self
    }

    /// The structural changes applied here from now on.
    pub fn structure_changes(&self) -> tokio::sync::broadcast::Receiver<StructureChange> {
        self.changes.subscribe()
    }

    /// Whether this node runs an agent placed on `nodes`.
    fn runs_here(&self, nodes: &Placement) -> bool {
        nodes.includes(self.config.node.as_deref())
    }

    /// Changes whenever a user's grants changed.
    pub fn grant_changes(&self) -> watch::Receiver<u64> {
        self.grants.subscribe()
    }

    /// Becomes `Some` when a shutdown was commanded.
    pub fn shutdown_requests(&self) -> watch::Receiver<Option<ShutdownMode>> {
        self.shutdown.subscribe()
    }

    /// Registers the agents the store holds (after a restart). Blocking: it
    /// compiles components. Returns how many were restored.
    pub fn restore(&self) -> Result<usize, Refused> {
        let agents = self
            .store
            .admitted_agents()
            .map_err(|e| Refused::Storage(e.to_string()))?;
        let agents: Vec<AdmittedAgent> = agents
            .into_iter()
            .filter(|admitted| self.runs_here(&admitted.nodes))
            .collect();
        for admitted in &agents {
            let component = self
                .runtime
                .load_component(&admitted.component)
                .map_err(|e| Refused::Component(format!("agent `{}`: {e}", admitted.name)))?;
            self.run_admitted(admitted, component)?;
        }
        Ok(agents.len())
    }

    /// Runs admitted agent `admitted` here, on its compiled `component`;
    /// a listener that stood for it on another node of the cluster gives
    /// way.
    fn run_admitted(
        &self,
        admitted: &AdmittedAgent,
        component: Arc<crate::runtime::AgentComponent>,
    ) -> Result<(), Refused> {
        let agent = self
            .runtime
            .agent(&admitted.name, component, admitted.limits.clone())
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        let name = agent_name(&admitted.name)?;
        if self
            .bus
            .table()
            .agent(&name)
            .is_some_and(|listed| served_by_another_node(listed))
        {
            let _ = self.bus.remove(&name);
        }
        self.bus
            .register(listener(
                &admitted.name,
                &admitted.listens,
                &admitted.description,
                agent,
            )?)
            .map_err(|e| Refused::Conflict(format!("agent `{}`: {e}", admitted.name)))
    }

    /// Checks `input` (a `<privileged-command>`) and applies it if it holds.
    pub async fn execute(&self, input: &[u8], carrier: &Carrier) -> Verdict {
        let verdict = self.judge(input, Judged::Apply).await;
        self.record(&verdict, &carrier.session, &carrier.from);
        match &verdict.outcome {
            Ok(()) => {
                tracing::info!(id = ?verdict.id, from = %carrier.from, "privileged command applied");
                if let Some(id) = &verdict.id {
                    if let Err(error) = self.store.mark_applied(id) {
                        tracing::error!(%id, %error, "the command took effect, but the other nodes cannot follow it");
                    }
                }
                // Nobody listening (no cluster) is not an error.
                let _ = self.changes.send(StructureChange::Command(input.into()));
            }
            Err(reason) => {
                tracing::warn!(id = ?verdict.id, from = %carrier.from, %reason, "privileged command refused")
            }
        }
        verdict
    }

    /// Reads `input` and applies or follows the command in it.
    async fn judge(&self, input: &[u8], how: Judged) -> Verdict {
        match SignedCommand::read(input, self.config.max_command_bytes) {
            Err((id, reason)) => Verdict {
                id,
                payload_sha256: None,
                outcome: Err(reason),
            },
            Ok(signed) => Verdict {
                id: Some(signed.id.clone()),
                payload_sha256: Some(signed.payload_sha256()),
                outcome: match how {
                    Judged::Apply => self.check_and_apply(&signed, SystemTime::now()).await,
                    Judged::Follow => self.check_and_follow(&signed).await,
                },
            },
        }
    }

    /// Writes `verdict` to the audit sink, as carried by `from`.
    fn record(&self, verdict: &Verdict, session: &SessionId, from: &str) {
        self.audit.record(AuditRecord {
            kind: AuditKind::Privileged,
            thread: None,
            session,
            from,
            tag: "privileged-command",
            depth: 0,
            canonical: &verdict.audit_xml(),
        });
    }

    async fn check_and_apply(
        &self,
        signed: &SignedCommand,
        now: SystemTime,
    ) -> Result<(), Refused> {
        let key = self.config.key.as_ref().ok_or(Refused::NoIdentity)?;
        signed.verify(key.verifying_key())?;
        let now = time::unix_seconds(now);
        let skew = CLOCK_SKEW.as_secs();
        if signed.issued > now + skew {
            return Err(Refused::NotYetValid(time::format_instant(signed.issued)));
        }
        if now > signed.expires + skew {
            return Err(Refused::Expired(time::format_instant(signed.expires)));
        }
        let command = Command::read(&signed.payload_tree)?;
        let _turn = self.one_at_a_time.lock().await;
        if self.shutdown.borrow().is_some() {
            return Err(Refused::ShuttingDown);
        }
        let fresh = self
            .store
            .claim_command_id(&signed.id, signed.expires + skew, now)
            .map_err(|e| Refused::Storage(e.to_string()))?;
        if !fresh {
            return Err(Refused::Replayed(signed.id.clone()));
        }
        match command {
            Command::Register(registration) => self.register(registration).await,
            Command::Remove { name } => self.remove(&name),
            Command::Limits { name, changes } => self.change_limits(&name, &changes),
            Command::Grant { user, tag } => self.change_grant(&user, &tag, true),
            Command::Revoke { user, tag } => self.change_grant(&user, &tag, false),
            Command::Shutdown(mode) => {
                self.shutdown.send_replace(Some(mode));
                Ok(())
            }
            Command::NodeCertificate(request) => self.certify(signed, &request, now),
            Command::NodeRevoke(_) | Command::Link(_) | Command::Unlink { .. } => {
                self.change_federation(&command, signed)
            }
        }
    }

    /// The effect of a revocation, a link or an unlink, which every node
    /// makes alike: on the federation's state, kept in the store.
    fn change_federation(&self, command: &Command, signed: &SignedCommand) -> Result<(), Refused> {
        match command {
            Command::NodeRevoke(_) => self
                .federation
                .apply_revocation(signed_record(signed)?)
                .map_err(Refused::Conflict),
            Command::Link(_) => self
                .federation
                .apply_link(signed_record(signed)?)
                .map_err(Refused::Conflict),
            Command::Unlink { peer } => self.federation.unlink(peer).map_err(Refused::Conflict),
            _ => Ok(()),
        }
    }

    /// Keeps a node certificate: the signed payload and its signature, for
    /// anyone to check later with the owner's public key.
    fn certify(
        &self,
        signed: &SignedCommand,
        request: &CertificateRequest,
        now: u64,
    ) -> Result<(), Refused> {
        if request.not_after <= now {
            return Err(Refused::Invalid(format!(
                "the certificate's `not-after` ({}) has passed",
                time::format_instant(request.not_after)
            )));
        }
        if let Some(reason) = self.federation.revoked_key(&request.key_id) {
            return Err(Refused::Conflict(format!(
                "key {} cannot be certified: {reason}",
                request.key_id
            )));
        }
        self.store
            .save_certificate(&signed_record(signed)?)
            .map_err(|e| Refused::Storage(e.to_string()))?;
        tracing::info!(
            key_id = request.key_id,
            until = %time::format_instant(request.not_after),
            "node key certified"
        );
        Ok(())
    }

    async fn register(&self, registration: Registration) -> Result<(), Refused> {
        let name = agent_name(&registration.name)?;
        if self.config.node.is_none() && registration.nodes != Placement::All {
            return Err(Refused::Invalid(
                "`node` places an agent on nodes of a cluster, and this server is not in one \
                 (its configuration has no [cluster])"
                    .into(),
            ));
        }
        let table = self.bus.table();
        if table.agent(&name).is_some() {
            return Err(Refused::Conflict(format!(
                "an agent named `{name}` is already registered"
            )));
        }
        let mut listens: Vec<String> = Vec::new();
        for text in &registration.listens {
            let tag = tag(text)?;
            if let Some(holder) = table.listeners(&tag).first() {
                return Err(Refused::Conflict(format!(
                    "the tag `{text}` is already listened to by agent `{}`",
                    holder.name
                )));
            }
            if !listens.contains(text) {
                listens.push(text.clone());
            }
        }
        let bytes = match &registration.component {
            ComponentSource::Inline(bytes) => bytes.clone(),
            ComponentSource::File(file) => read_component_file(&self.config.components_dir, file)?,
        };
        let actual = ComponentHash::of(&bytes);
        if actual != registration.sha256 {
            return Err(Refused::HashMismatch {
                actual: actual.to_string(),
                expected: registration.sha256.to_string(),
            });
        }
        let limits =
            self.checked_limits(registration.limits.applied_to(&AgentLimits::default()))?;
        let runtime = Arc::clone(&self.runtime);
        let (component, bytes) = tokio::task::spawn_blocking(move || {
            let loaded = runtime.load_component(&bytes);
            (loaded, bytes)
        })
        .await
        .map_err(|_| Refused::Component("compiling the component failed".into()))?;
        let component = component.map_err(|e| Refused::Component(e.to_string()))?;
        let agent = self
            .runtime
            .agent(name.as_str(), component, limits.clone())
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        let admitted = AdmittedAgent {
            name: name.to_string(),
            listens,
            description: registration.description,
            limits,
            component: bytes,
            nodes: registration.nodes,
        };
        self.store
            .save_agent(&admitted)
            .map_err(|e| Refused::Storage(e.to_string()))?;
        if !self.runs_here(&admitted.nodes) {
            tracing::info!(agent = %name, nodes = %admitted.nodes, "agent admitted to run on other nodes");
            return Ok(());
        }
        let listener = listener(
            &admitted.name,
            &admitted.listens,
            &admitted.description,
            agent,
        )?;
        if let Err(error) = self.bus.register(listener) {
            let _ = self.store.forget_agent(&admitted.name);
            return Err(Refused::Conflict(error.to_string()));
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), Refused> {
        let name = agent_name(name)?;
        let table = self.bus.table();
        let listed = table.agent(&name);
        let stored = self.is_stored(&name)?;
        if listed.is_none() && !stored {
            return Err(Refused::Conflict(format!(
                "no agent named `{name}` is registered"
            )));
        }
        let local = listed.and_then(|l| l.target.local().cloned());
        if local.is_none() && !stored && !listed.is_some_and(|l| served_by_another_node(l)) {
            return Err(not_an_agent(&name));
        }
        if stored {
            self.store
                .forget_agent(name.as_str())
                .map_err(|e| Refused::Storage(e.to_string()))?;
        }
        match local {
            Some(agent) => self.remove_local(&name, &agent),
            None => Ok(()),
        }
    }

    /// Whether the store holds an admitted agent named `name`.
    fn is_stored(&self, name: &AgentName) -> Result<bool, Refused> {
        Ok(self
            .store
            .admitted_agents()
            .map_err(|e| Refused::Storage(e.to_string()))?
            .iter()
            .any(|admitted| admitted.name == name.as_str()))
    }

    /// Takes `agent` off this node: out of the routing table, its storage
    /// forgotten, its compiled component too unless another agent uses it.
    fn remove_local(
        &self,
        name: &AgentName,
        agent: &Arc<crate::runtime::Agent>,
    ) -> Result<(), Refused> {
        self.bus
            .remove(name)
            .map_err(|e| Refused::Conflict(e.to_string()))?;
        agent.forget_storage();
        let hash = agent.component().hash();
        let still_used = self.bus.table().agents().any(|other| {
            other
                .target
                .local()
                .is_some_and(|agent| agent.component().hash() == hash)
        });
        if !still_used {
            self.runtime.forget_component(&hash);
        }
        Ok(())
    }

    fn change_limits(&self, name: &str, changes: &LimitChanges) -> Result<(), Refused> {
        let name = agent_name(name)?;
        let table = self.bus.table();
        let listed = table.agent(&name);
        let stored = self
            .store
            .admitted_agents()
            .map_err(|e| Refused::Storage(e.to_string()))?
            .into_iter()
            .find(|admitted| admitted.name == name.as_str());
        if listed.is_none() && stored.is_none() {
            return Err(Refused::Conflict(format!(
                "no agent named `{name}` is registered"
            )));
        }
        let local = listed.and_then(|l| l.target.local().cloned());
        if local.is_none() && stored.is_none() && !listed.is_some_and(|l| served_by_another_node(l))
        {
            return Err(not_an_agent(&name));
        }
        if let Some(admitted) = stored {
            let base = local
                .as_ref()
                .map_or(&admitted.limits, |agent| agent.limits());
            let limits = self.checked_limits(changes.applied_to(base))?;
            self.store
                .save_agent(&AdmittedAgent { limits, ..admitted })
                .map_err(|e| Refused::Storage(e.to_string()))?;
        }
        match local {
            Some(_) => self.relimit_local(&name, changes),
            None => Ok(()),
        }
    }

    /// Gives this node's agent `name` its limits changed by `changes`.
    fn relimit_local(&self, name: &AgentName, changes: &LimitChanges) -> Result<(), Refused> {
        let table = self.bus.table();
        let Some(current) = table.agent(name) else {
            return Ok(());
        };
        let Some(agent) = current.target.local() else {
            return Ok(());
        };
        let limits = self.checked_limits(changes.applied_to(agent.limits()))?;
        let replacement = self
            .runtime
            .agent(name.as_str(), Arc::clone(agent.component()), limits)
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        self.bus
            .replace(Listener {
                name: current.name.clone(),
                listens: current.listens.clone(),
                description: current.description.clone(),
                target: ListenerTarget::Local(replacement),
            })
            .map_err(|e| Refused::Conflict(e.to_string()))
    }

    fn change_grant(&self, user: &str, text: &str, grant: bool) -> Result<(), Refused> {
        let tag = tag(text)?;
        let users = self.auth.users();
        let Some(entry) = users.get(user) else {
            return Err(Refused::Conflict(format!("no user named `{user}`")));
        };
        let allow = match (&entry.allow, grant) {
            (Allow::All, true) => {
                return Err(Refused::Conflict(format!(
                    "`{user}` may already send every tag (`*`)"
                )))
            }
            (Allow::All, false) => {
                return Err(Refused::Conflict(format!(
                    "`{user}` may send every tag (`*`); list their tags in the user directory \
                     before revoking one"
                )))
            }
            (Allow::Tags(tags), true) => {
                if tags.iter().any(|t| t == tag.as_str()) {
                    return Err(Refused::Conflict(format!(
                        "`{user}` is already granted `{text}`"
                    )));
                }
                let mut tags = tags.clone();
                tags.push(text.to_owned());
                tags
            }
            (Allow::Tags(tags), false) => {
                if !tags.iter().any(|t| t == tag.as_str()) {
                    return Err(Refused::Conflict(format!(
                        "`{user}` is not granted `{text}`"
                    )));
                }
                tags.iter()
                    .filter(|t| *t != tag.as_str())
                    .cloned()
                    .collect()
            }
        };
        set_allow(&self.config.users_path, user, &allow).map_err(|e| {
            Refused::Storage(format!("the user directory could not be written: {e}"))
        })?;
        let reloaded = Users::load(&self.config.users_path)
            .map_err(|e| Refused::Storage(format!("the user directory could not be read: {e}")))?;
        self.auth.set_users(reloaded);
        self.grants.send_modify(|version| *version += 1);
        if let Some(shared) = &self.shared_users {
            publish_users(&self.config.users_path, shared.as_ref()).map_err(|e| {
                Refused::Storage(format!(
                    "granted here, but the other nodes were not told: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// Reads the users file again (after an operator edited it) and has
    /// every connection take its user's grants afresh.
    pub fn reload_users(&self) -> Result<(), crate::auth::UsersError> {
        let reloaded = Users::load(&self.config.users_path)?;
        self.auth.set_users(reloaded);
        self.grants.send_modify(|version| *version += 1);
        if let Some(shared) = &self.shared_users {
            publish_users(&self.config.users_path, shared.as_ref())?;
            let _ = self.changes.send(StructureChange::Users);
        }
        Ok(())
    }

    /// Takes the user directory another node of the cluster published.
    pub fn adopt_users(&self) -> Result<(), crate::auth::UsersError> {
        let Some(shared) = &self.shared_users else {
            return Ok(());
        };
        crate::auth::adopt_shared_users(&self.config.users_path, shared.as_ref())?;
        let reloaded = Users::load(&self.config.users_path)?;
        self.auth.set_users(reloaded);
        self.grants.send_modify(|version| *version += 1);
        Ok(())
    }

    /// Follows a command that node `node` of the cluster applied: checks
    /// its signature with the organism's key and that its id was used,
    /// then makes its effect on this node (an admitted agent starts here
    /// if it is placed here; a removed or re-limited one changes here;
    /// grants take the shared user directory; a shutdown shuts down). The
    /// outcome is audited here too.
    pub async fn follow(&self, input: &[u8], node: &str) -> Verdict {
        let verdict = self.judge(input, Judged::Follow).await;
        self.record(&verdict, &SessionId::new(), &format!("node {node}"));
        match &verdict.outcome {
            Ok(()) => tracing::info!(id = ?verdict.id, %node, "privileged command followed"),
            Err(reason) => {
                tracing::warn!(id = ?verdict.id, %node, %reason, "privileged command not followed")
            }
        }
        verdict
    }

    async fn check_and_follow(&self, signed: &SignedCommand) -> Result<(), Refused> {
        let key = self.config.key.as_ref().ok_or(Refused::NoIdentity)?;
        signed.verify(key.verifying_key())?;
        let command = Command::read(&signed.payload_tree)?;
        let _turn = self.one_at_a_time.lock().await;
        // The node that applied it marked its id so in the shared store;
        // a command refused there, or never carried to a node, is not.
        let applied = self
            .store
            .was_applied(&signed.id)
            .map_err(|e| Refused::Storage(e.to_string()))?;
        if !applied {
            return Err(Refused::Invalid(
                "no node of the organism applied this command".into(),
            ));
        }
        match command {
            Command::Register(registration) => self.start_admitted(&registration).await,
            Command::Remove { name } => {
                let name = agent_name(&name)?;
                let local = self
                    .bus
                    .table()
                    .agent(&name)
                    .and_then(|l| l.target.local().cloned());
                match local {
                    Some(agent) => self.remove_local(&name, &agent),
                    None => Ok(()),
                }
            }
            Command::Limits { name, changes } => self.relimit_local(&agent_name(&name)?, &changes),
            Command::Grant { .. } | Command::Revoke { .. } => self
                .adopt_users()
                .map_err(|e| Refused::Storage(e.to_string())),
            Command::Shutdown(mode) => {
                self.shutdown.send_replace(Some(mode));
                Ok(())
            }
            // A revoked key stops at once on every node, and every node is
            // a gateway of the organism's links.
            Command::NodeRevoke(_) | Command::Link(_) | Command::Unlink { .. } => {
                self.change_federation(&command, signed)
            }
            // Kept in the shared store, which every node reads.
            Command::NodeCertificate(_) => Ok(()),
        }
    }

    /// Starts here, from the shared store, an agent another node admitted,
    /// if it is placed here and not running here yet; the listener that
    /// stood for it on another node gives way.
    async fn start_admitted(&self, registration: &Registration) -> Result<(), Refused> {
        if !self.runs_here(&registration.nodes) {
            return Ok(());
        }
        let name = agent_name(&registration.name)?;
        if let Some(listed) = self.bus.table().agent(&name) {
            if listed.target.local().is_some() {
                return Ok(());
            }
        }
        let admitted = self
            .store
            .admitted_agents()
            .map_err(|e| Refused::Storage(e.to_string()))?
            .into_iter()
            .find(|admitted| admitted.name == name.as_str())
            .ok_or_else(|| {
                Refused::Storage(format!("agent `{name}` is not in the shared store"))
            })?;
        let runtime = Arc::clone(&self.runtime);
        let bytes = admitted.component.clone();
        let component = tokio::task::spawn_blocking(move || runtime.load_component(&bytes))
            .await
            .map_err(|_| Refused::Component("compiling the component failed".into()))?
            .map_err(|e| Refused::Component(e.to_string()))?;
        self.run_admitted(&admitted, component)
    }

    fn checked_limits(&self, limits: AgentLimits) -> Result<AgentLimits, Refused> {
        let max_memory = self.runtime.config().max_memory_bytes;
        if limits.memory_bytes > max_memory {
            return Err(Refused::Invalid(format!(
                "memory-bytes {} is above the server's per-instance maximum of {max_memory}",
                limits.memory_bytes
            )));
        }
        Ok(limits)
    }
}

impl std::fmt::Debug for Privileged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privileged")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A checked command as kept: its canonical payload and signature.
fn signed_record(signed: &SignedCommand) -> Result<SignedRecord, Refused> {
    signed.to_record().ok_or(Refused::Unsigned)
}

/// Whether `listener` stands for an agent another node of the cluster runs.
fn served_by_another_node(listener: &Listener) -> bool {
    matches!(&listener.target, ListenerTarget::Remote(remote) if remote.is_same_organism())
}

/// The refusal for an agent command naming a federation link's listener.
fn not_an_agent(name: &AgentName) -> Refused {
    Refused::Conflict(format!(
        "`{name}` is a federation link, not an agent: end it with federation-unlink"
    ))
}

fn agent_name(name: &str) -> Result<AgentName, Refused> {
    AgentName::new(name).map_err(|e| Refused::Invalid(e.to_string()))
}

fn tag(text: &str) -> Result<Tag, Refused> {
    let tag = Tag::parse(text).ok_or_else(|| {
        Refused::Invalid(format!(
            "`{text}` is not a tag: give an XML name, optionally as {{namespace}}name"
        ))
    })?;
    if tag.is_reserved() {
        return Err(Refused::Conflict(format!(
            "`{text}` is a reserved tag of the protocol"
        )));
    }
    Ok(tag)
}

fn listener(
    name: &str,
    listens: &[String],
    description: &str,
    agent: Arc<crate::runtime::Agent>,
) -> Result<Listener, Refused> {
    Ok(Listener {
        name: agent_name(name)?,
        listens: listens.iter().map(|t| Tag::new(t)).collect(),
        description: description.to_owned(),
        target: ListenerTarget::Local(agent),
    })
}

/// Reads `file` from the components directory; `file` must be a plain file
/// name (no directories), so a command cannot reach outside it.
fn read_component_file(dir: &Path, file: &str) -> Result<Vec<u8>, Refused> {
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && !file.contains(['/', '\\', '\0'])
        && Path::new(file).file_name().is_some_and(|name| name == file);
    if !plain {
        return Err(Refused::Invalid(format!(
            "`src` must be a file name in the components directory, not {file:?}"
        )));
    }
    std::fs::read(dir.join(file)).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => Refused::Invalid(format!(
            "there is no `{file}` in the server's components directory"
        )),
        _ => Refused::Invalid(format!(
            "`{file}` in the components directory cannot be read"
        )),
    })
}
