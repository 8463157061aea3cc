//! The knobs: limits for one agent ([`AgentLimits`]) and for the whole
//! runtime ([`RuntimeConfig`]), each with its default documented where it is
//! defined.

use crate::capability::AgentGrants;
use std::path::PathBuf;
use std::time::Duration;

/// Limits that apply to one agent, each call and each of its instances,
/// and the capabilities it is granted.
///
/// Every field has a default suited to small agents; the organism's
/// configuration (`[[agent]]`) or a signed `agent-limits` command overrides
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLimits {
    /// Fuel (roughly, wasm instructions) one call may burn. Default 50,000,000.
    pub fuel: u64,
    /// Bytes of linear memory one instance may hold. Default 16 MiB.
    pub memory_bytes: usize,
    /// Wall time one call may take, in milliseconds. Default 1,000.
    pub timeout_ms: u64,
    /// Calls of this agent in flight at once, across all sessions. Default 8.
    pub max_concurrent: usize,
    /// Calls that may wait for a free slot beyond `max_concurrent`; past that
    /// a call is refused as busy at once. Default 64.
    pub max_queued: usize,
    /// An instance idle this long is dropped, and the session's next call
    /// gets a fresh one. Default 1,800 s.
    pub session_timeout: Duration,
    /// Payloads one call may return. Default 256.
    pub max_emitted_payloads: usize,
    /// Bytes all payloads of one call may add up to. Default 1 MiB.
    pub max_emitted_bytes: usize,
    /// Bytes one call may write to stdout, stderr and the host log together.
    /// Default 64 KiB; past it the call traps.
    pub max_log_bytes: usize,
    /// What the agent may use beyond computing (outbound HTTP, storage).
    /// Default: nothing.
    pub grants: AgentGrants,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            fuel: 50_000_000,
            memory_bytes: 16 << 20,
            timeout_ms: 1_000,
            max_concurrent: 8,
            max_queued: 64,
            session_timeout: Duration::from_secs(1_800),
            max_emitted_payloads: 256,
            max_emitted_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            grants: AgentGrants::default(),
        }
    }
}

impl AgentLimits {
    /// The wall-time limit as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Settings of the runtime as a whole: the engine, the instance pool and the
/// compiled-code cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Where compiled components are cached, by hash. `None` compiles every
    /// component at every start. Default `None`; the server sets
    /// `DATA_DIR/compiled`.
    pub cache_dir: Option<PathBuf>,
    /// Live agent instances the pool holds at once, across all agents and
    /// sessions. Default 1,000.
    pub max_instances: u32,
    /// Core wasm instances per component instance, on average, that the pool
    /// reserves room for. A Rust or C agent has a handful; an interpreter
    /// built as a component links many modules (a componentize-py agent has
    /// 14), and the default leaves room for 1,000 of those. Default 16.
    pub core_instances_per_instance: u32,
    /// The largest linear memory any instance may have; an agent's
    /// `memory_bytes` cannot go past it. Default 256 MiB.
    pub max_memory_bytes: usize,
    /// Wasm stack one call may use. Default 512 KiB.
    pub max_wasm_stack_bytes: usize,
    /// How often the epoch ticks: calls yield to the async executor at every
    /// tick, and wall-time limits are checked then. Default 1 ms.
    pub epoch_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: 1_000,
            core_instances_per_instance: 16,
            max_memory_bytes: 256 << 20,
            max_wasm_stack_bytes: 512 << 10,
            epoch_tick: Duration::from_millis(1),
        }
    }
}
