//! The agent runtime: loads agents as sandboxed WebAssembly components and
//! calls them under hard limits.
//!
//! [`Runtime`] owns the one `wasmtime::Engine` (component model, pooling
//! allocator, fuel, epoch interruption), the linker (WASI with nothing
//! granted, plus the agent world's `host` import) and the component store
//! (components by SHA-256, compiled code cached on disk). From a loaded
//! [`AgentComponent`] it makes an [`Agent`], which keeps one instance per
//! session and enforces the agent's [`AgentLimits`] on every call.
//!
//! ```no_run
//! use agentserver::runtime::{AgentLimits, Delivery, Runtime, RuntimeConfig, SessionKey};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let component = runtime.load_component_file("echo.wasm".as_ref())?;
//! let echo = runtime.agent("echo", component, AgentLimits::default())?;
//! let payloads = echo
//!     .call(
//!         &SessionKey::from("session-1"),
//!         Delivery { thread: "t1", sender: "user:alice", tag: "echo", payload: "<echo>hi</echo>", emitter: None },
//!     )
//!     .await?;
//! assert_eq!(payloads, ["<echoed>hi</echoed>"]);
//! # Ok(()) }
//! ```
//!
//! # How calls avoid blocking the reactor
//!
//! Calls use wasmtime's async support: the guest runs on a fiber, polled by
//! whichever tokio task awaits [`Agent::call`]. A ticker thread advances the
//! engine's epoch every [`RuntimeConfig::epoch_tick`] (1 ms); at each tick a
//! running guest yields back to the executor, so a busy agent holds a worker
//! thread for at most one tick at a time, and the call's wall-time limit (a
//! tokio timer around the call) can end it. Once no guest has run for 100
//! ticks the ticker sleeps, and the next guest to start wakes it, so an idle
//! server does not wake a thousand times a second. WASI host calls (a
//! guest's sleep, say) are async too and never block a thread. This costs
//! far less per call than handing each call to a blocking thread pool,
//! which is what keeps a warm call in the low microseconds.
//!
//! # Limits
//!
//! Fuel, memory (a `ResourceLimiter` that traps the guest past
//! `memory_bytes`), wall time, wasm stack depth and output bytes are enforced
//! per call; a call that breaks one ends with its [`CallError`], its instance
//! is discarded, and nothing else is affected. `max_concurrent` and
//! `max_queued` bound the calls of one agent; the pool bounds the instances of
//! all agents together.

mod agent;
mod bindings;
mod components;
mod engine;
mod error;
mod limits;
mod output;
mod state;

pub use agent::{Agent, AgentStats, Delivery, SessionKey};
pub use components::{AgentComponent, BadHash, ComponentHash, ComponentOrigin};
pub use error::{CallError, GuestFailure, LoadError};
pub use limits::{AgentLimits, RuntimeConfig};
pub use output::MAX_LINE_BYTES;
pub use state::{Emitter, KeyValueHandle};

use crate::capability::{
    KeyValueStore, MemoryKeyValueStore, NoUsageAudit, OutboundClient, Secrets, UsageAudit,
};
use components::ComponentStore;
use engine::EpochTicker;
use state::{Capabilities, GrantedStorage, InstanceState};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::Engine;

/// Why the runtime could not start, or an agent could not be made.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The engine rejected its configuration (for example a pool too large
    /// for the address space).
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// The epoch ticker thread could not start.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(std::io::Error),
    /// The component imports a capability its grants do not give it.
    #[error(
        "the component imports `{interface}`, which needs {grant}; the agent is not granted it"
    )]
    NotGranted {
        /// The imported interface.
        interface: String,
        /// The grant it needs.
        grant: &'static str,
    },
    /// The grants cannot be put in force (a secret they name is missing).
    #[error("{0}")]
    Grant(String),
    /// An agent's memory limit is above the pool's largest memory.
    #[error("memory_bytes {requested} is above the runtime's largest memory ({max})")]
    MemoryAbovePool {
        /// The agent's `memory_bytes`.
        requested: usize,
        /// [`RuntimeConfig::max_memory_bytes`].
        max: usize,
    },
}

/// What granted capabilities are served from: the secrets the host holds,
/// the key-value backend, and where uses are audited.
#[derive(Clone)]
pub struct RuntimeServices {
    /// Secrets that HTTP grants name.
    pub secrets: Secrets,
    /// The backend of the `session` and `agent` buckets.
    pub keyvalue: Arc<dyn KeyValueStore>,
    /// Receives every outbound request and storage write.
    pub audit: Arc<dyn UsageAudit>,
}

impl Default for RuntimeServices {
    /// No secrets, storage in memory, nothing audited.
    fn default() -> Self {
        RuntimeServices {
            secrets: Secrets::none(),
            keyvalue: Arc::new(MemoryKeyValueStore::new()),
            audit: Arc::new(NoUsageAudit),
        }
    }
}

impl std::fmt::Debug for RuntimeServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeServices")
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// The wasm engine, its linker and component store: the entry point of the
/// runtime. Cheap to share behind an `Arc`; dropping it stops its ticker.
pub struct Runtime {
    engine: Engine,
    components: ComponentStore,
    config: RuntimeConfig,
    services: RuntimeServices,
    ticker: EpochTicker,
}

impl Runtime {
    /// Starts a runtime with `config`, with no secrets, storage in memory
    /// and nothing audited.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        Self::with_services(config, RuntimeServices::default())
    }

    /// Starts a runtime with `config`, serving granted capabilities from
    /// `services`.
    pub fn with_services(
        config: RuntimeConfig,
        services: RuntimeServices,
    ) -> Result<Self, RuntimeError> {
        let engine = engine::build_engine(&config)
            .map_err(|e| RuntimeError::Engine(components::describe(&e)))?;
        let mut linker = Linker::<InstanceState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| {
                bindings::AgentWorld::add_to_linker::<_, HasSelf<InstanceState>>(
                    &mut linker,
                    |state| state,
                )
            })
            .and_then(|()| {
                bindings::v1::Agent::add_to_linker::<_, HasSelf<InstanceState>>(
                    &mut linker,
                    |state| state,
                )
            })
            .map_err(|e| RuntimeError::Engine(components::describe(&e)))?;
        let ticker =
            EpochTicker::start(engine.clone(), config.epoch_tick).map_err(RuntimeError::Ticker)?;
        Ok(Runtime {
            components: ComponentStore::new(engine.clone(), linker, config.cache_dir.clone()),
            engine,
            config,
            services,
            ticker,
        })
    }

    /// The configuration the runtime was started with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Validates and compiles a component (or loads its compiled code from
    /// the cache). CPU-bound, up to seconds for a large component: from async
    /// code, call it through `tokio::task::spawn_blocking`.
    pub fn load_component(&self, bytes: &[u8]) -> Result<Arc<AgentComponent>, LoadError> {
        self.components.load(bytes)
    }

    /// [`Runtime::load_component`] for a file.
    pub fn load_component_file(&self, path: &Path) -> Result<Arc<AgentComponent>, LoadError> {
        self.components.load_file(path)
    }

    /// Forgets a loaded component (after its agent is removed, say); agents
    /// still running it keep it alive. Returns whether it was loaded.
    pub fn forget_component(&self, hash: &ComponentHash) -> bool {
        self.components.forget(hash)
    }

    /// The services granted capabilities are served from.
    pub fn services(&self) -> &RuntimeServices {
        &self.services
    }

    /// Makes an agent named `name` that runs `component` under `limits`,
    /// with the capabilities `limits.grants` gives it. A component that
    /// imports a capability it is not granted is refused, naming it.
    pub fn agent(
        &self,
        name: &str,
        component: Arc<AgentComponent>,
        limits: AgentLimits,
    ) -> Result<Arc<Agent>, RuntimeError> {
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(RuntimeError::MemoryAbovePool {
                requested: limits.memory_bytes,
                max: self.config.max_memory_bytes,
            });
        }
        check_grants(&component, &limits)?;
        let grants = &limits.grants;
        let http = match &grants.http {
            None => None,
            Some(grant) => Some(Arc::new(
                OutboundClient::new(
                    name,
                    grant,
                    &self.services.secrets,
                    Arc::clone(&self.services.audit),
                )
                .map_err(|e| RuntimeError::Grant(format!("agent `{name}`: {e}")))?,
            )),
        };
        let capabilities = Arc::new(Capabilities {
            agent: name.into(),
            idle_scope: crate::capability::CallScope::new("", ""),
            http,
            storage: grants.storage.clone().map(|grant| GrantedStorage {
                grant,
                store: Arc::clone(&self.services.keyvalue),
            }),
            audit: Arc::clone(&self.services.audit),
        });
        Ok(Arc::new_cyclic(|me| {
            Agent::new(
                name,
                component,
                limits,
                self.engine.clone(),
                Arc::clone(self.ticker.activity()),
                me.clone(),
                capabilities,
            )
        }))
    }
}

/// Refuses a component that imports a capability `limits.grants` does not
/// give, naming the import and the grant it needs.
fn check_grants(component: &AgentComponent, limits: &AgentLimits) -> Result<(), RuntimeError> {
    for interface in component.imports() {
        let needs = if interface.starts_with("wasi:http/outgoing-handler@") {
            limits
                .grants
                .http
                .is_none()
                .then_some("an HTTP grant (<http> with <allow host>)")
        } else if interface.starts_with("wasi:keyvalue/") {
            limits
                .grants
                .storage
                .is_none()
                .then_some("a storage grant (<storage> with a <bucket>)")
        } else {
            None
        };
        if let Some(grant) = needs {
            return Err(RuntimeError::NotGranted {
                interface: interface.clone(),
                grant,
            });
        }
    }
    Ok(())
}
